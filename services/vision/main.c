/* lion-vision: the vision worker. Connects to the gateway's vision endpoint and answers
 * jobs with EVA ViT block outputs (services/vision/vision_stage.h).
 *
 *   lion-vision --gateway tcp://127.0.0.1:5551 [--model models/tiny-lion] [--threads N]
 *               [--cache-mb 512] [worker options, see --help] */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "vision_stage.h"
#include "worker_main.h"

static long cache_mb = 512;

static void *vision_open(const worker_config *cfg, lion_status *st) {
    vision_stage *s = malloc(sizeof *s);
    if (!s) lion_fail(st, LION_ENOMEM, "vision: out of memory");
    else if (vision_stage_open(s, cfg->model_dir, cfg->max_batch, (size_t)(cache_mb > 0 ? cache_mb : 0) << 20, st))
        s = (free(s), NULL);
    return s;
}

static void vision_close(void *ctx) {
    vision_stage *s = ctx;
    feature_cache_stats cs = feature_cache_get_stats(s->cache);
    log_info("vision: feature cache %llu hits, %llu misses, %llu evictions", (unsigned long long)cs.hits,
             (unsigned long long)cs.misses, (unsigned long long)cs.evictions);
    vision_stage_close(s);
    free(s);
}

int main(int argc, char **argv) {
    /* --cache-mb is this service's own option; the rest go to the shared worker parser */
    if (getenv("LION_CACHE_MB")) cache_mb = atol(getenv("LION_CACHE_MB"));
    int wargc = 0;
    char **wargv = calloc((size_t)argc + 1, sizeof *wargv);
    if (!wargv) return 1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--cache-mb") && i + 1 < argc) cache_mb = atol(argv[++i]);
        else if (!strncmp(argv[i], "--cache-mb=", 11)) cache_mb = atol(argv[i] + 11);
        else wargv[wargc++] = argv[i];
    }
    const worker_service svc = {"vision", LION__STAGE__VISION, vision_open, vision_close, vision_stage_process,
                                vision_stage_cache_stats, "  --cache-mb MB        feature cache size, 0 disables (default 512) [LION_CACHE_MB]\n"};
    int rc = worker_main(&svc, wargc, wargv);
    free(wargv);
    return rc;
}
