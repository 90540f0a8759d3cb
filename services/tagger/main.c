/* lion-tagger: the tagger worker. Connects to the gateway's tagger endpoint and answers
 * jobs with RAM's tags and LION's tag prompt string (services/tagger/tagger_stage.h).
 *
 *   lion-tagger --gateway tcp://127.0.0.1:5552 [--model models/tiny-lion] [--threads N]
 *               [--precision auto|f32|bf16] [--cache-mb 64] [worker options, see --help]
 *
 * --precision bf16 holds RAM's matrices (Swin-L, image_proj, the tagging head) in bf16
 * (services/tagger/ram.h); auto does so only on CPUs with native bf16. */
#include <stdlib.h>

#include "log.h"
#include "tagger_stage.h"
#include "worker_main.h"

/* This service's own options, next to the shared worker options. */
typedef struct tagger_options {
    size_t cache_mb;
} tagger_options;

/* The bound keeps the size in bytes (MB << 20) far from overflowing: 1 TiB. */
#define TAGGER_MAX_CACHE_MB ((size_t)1 << 20)

/* A cached image is its RAM logits, one float per class: 18.3 KB for upstream's 4585
 * classes, so 64 MB hold about 3,600 distinct images, small beside the stage's weights
 * (0.84 GB in f32). The vision cache's 512 MB holds about 118 images (a ViT-g image is
 * 3 x 257 x 1408 floats, 4.3 MB): 64 MB of tags cover those 30 times over, so a repeat that
 * the vision stage still answers from its cache finds its tags here too. (The cache counts
 * the values' bytes only: with the tiny model's 9 classes, 36 bytes an image, its per-entry
 * bookkeeping would outweigh the values long before 64 MB were reached.) */
static tagger_options options = {.cache_mb = 64};

static const args_option tagger_args[] = {
    {.name = "--cache-mb", .env = "LION_CACHE_MB", .metavar = "MB", .kind = ARG_SIZE, ARGS_AT(tagger_options, cache_mb),
     .min = 0, .max = TAGGER_MAX_CACHE_MB, .help = "tag cache size (RAM logits by image hash), 0 disables",
     /* spelled out: --help is printed after parsing, when options holds the parsed value */
     .deflt = "64"},
};

static void *tagger_open(const worker_config *cfg, lion_status *st) {
    tagger_stage *s = malloc(sizeof *s);
    if (!s) lion_fail(st, LION_ENOMEM, "tagger: out of memory");
    else if (tagger_stage_open(s, cfg->model_dir, cfg->max_batch, options.cache_mb << 20, cfg->precision, st)) s = (free(s), NULL);
    return s;
}

static void tagger_close(void *ctx) {
    tagger_stage *s = ctx;
    feature_cache_stats cs = {0};
    if (s->cache) cs = feature_cache_get_stats(s->cache);
    log_info("tagger: tag cache %llu hits, %llu misses, %llu evictions, %zu images held",
             (unsigned long long)s->cache_hits, (unsigned long long)s->cache_misses, (unsigned long long)cs.evictions,
             cs.entries);
    tagger_stage_close(s);
    free(s);
}

int main(int argc, char **argv) {
    const worker_service svc = {.name = "tagger", .stage = LION__STAGE__TAGGER, .open = tagger_open,
                                .close = tagger_close, .process = tagger_stage_process,
                                .cache_stats = tagger_stage_cache_stats,
                                .options = ARGS_TABLE(tagger_args, &options),
                                .precisions = PRECISION_BIT(PRECISION_BF16)};
    return worker_main(&svc, argc, argv);
}
