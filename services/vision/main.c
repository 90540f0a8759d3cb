/* lion-vision: the vision worker. Connects to the gateway's vision endpoint and answers
 * jobs with EVA ViT block outputs (services/vision/vision_stage.h).
 *
 *   lion-vision --gateway tcp://127.0.0.1:5551 [--model models/tiny-lion] [--threads N]
 *               [--cache-mb 512] [worker options, see --help] */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "threads.h"
#include "vision_stage.h"
#include "worker.h"

int main(int argc, char **argv) {
    /* --cache-mb is this service's own option; the rest go to the shared worker parser */
    long cache_mb = getenv("LION_CACHE_MB") ? atol(getenv("LION_CACHE_MB")) : 512;
    int wargc = 0;
    char **wargv = calloc((size_t)argc + 1, sizeof *wargv);
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--cache-mb") && i + 1 < argc) cache_mb = atol(argv[++i]);
        else if (!strncmp(argv[i], "--cache-mb=", 11)) cache_mb = atol(argv[i] + 11);
        else wargv[wargc++] = argv[i];
    }
    worker_config cfg;
    lion_status st;
    log_init("vision", LOG_INFO);
    if (worker_config_parse(&cfg, "vision", wargc, wargv, &st)) {
        log_error("%s", st.msg);
        return 2;
    }
    if (cfg.help) {
        worker_usage(stdout, "lion-vision");
        printf("  %-20s %s [%s]\n", "--cache-mb MB", "feature cache size, 0 disables (default 512)", "LION_CACHE_MB");
        return 0;
    }
    log_init(cfg.replica_id, LOG_INFO);
    threads_init(cfg.threads);
    vision_stage stage;
    const char *model = cfg.model_dir ? cfg.model_dir : "models/tiny-lion";
    if (vision_stage_open(&stage, model, cfg.max_batch, (size_t)(cache_mb > 0 ? cache_mb : 0) << 20, &st)) {
        log_error("%s", st.msg);
        return 1;
    }
    worker_stage ws = {.stage = LION__STAGE__VISION, .process = vision_stage_process, .ctx = &stage};
    int rc = worker_run(&cfg, &ws, &st);
    if (rc) log_error("%s", st.msg);
    feature_cache_stats cs = feature_cache_get_stats(stage.cache);
    log_info("vision: feature cache %llu hits, %llu misses, %llu evictions", (unsigned long long)cs.hits,
             (unsigned long long)cs.misses, (unsigned long long)cs.evictions);
    vision_stage_close(&stage);
    free(wargv);
    return rc ? 1 : 0;
}
