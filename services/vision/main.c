/* lion-vision: the vision worker. Connects to the gateway's vision endpoint and answers
 * jobs with EVA ViT block outputs (services/vision/vision_stage.h).
 *
 *   lion-vision --gateway tcp://127.0.0.1:5551 [--model models/tiny-lion] [--threads N]
 *               [--precision auto|f32|bf16] [--cache-mb 512] [worker options, see --help]
 *
 * --precision bf16 holds the image encoder's matrices in bf16 (vit.h, clip.h); auto does so
 * only on CPUs with native bf16. */
#include <stdlib.h>

#include "log.h"
#include "vision_stage.h"
#include "worker_main.h"

/* This service's own options, next to the shared worker options. */
typedef struct vision_options {
    size_t cache_mb;
} vision_options;

/* The bound keeps the size in bytes (MB << 20) far from overflowing: 1 TiB. */
#define VISION_MAX_CACHE_MB ((size_t)1 << 20)

static vision_options options = {.cache_mb = 512};

static const args_option vision_args[] = {
    {.name = "--cache-mb", .env = "LION_CACHE_MB", .metavar = "MB", .kind = ARG_SIZE, ARGS_AT(vision_options, cache_mb),
     .min = 0, .max = VISION_MAX_CACHE_MB, .help = "feature cache size, 0 disables",
     /* spelled out: --help is printed after parsing, when options holds the parsed value */
     .deflt = "512"},
};

static void *vision_open(const worker_config *cfg, lion_status *st) {
    vision_stage *s = malloc(sizeof *s);
    if (!s) lion_fail(st, LION_ENOMEM, "vision: out of memory");
    else if (vision_stage_open_with(s, cfg->model_dir, cfg->max_batch, options.cache_mb << 20, cfg->precision, st))
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
    const worker_service svc = {.name = "vision", .stage = LION__STAGE__VISION, .open = vision_open,
                                .close = vision_close, .process = vision_stage_process,
                                .cache_stats = vision_stage_cache_stats,
                                .options = ARGS_TABLE(vision_args, &options),
                                .precisions = PRECISION_BIT(PRECISION_BF16)};
    return worker_main(&svc, argc, argv);
}
