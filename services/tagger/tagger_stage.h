/* tagger_stage.h - the tagger service's stage: encoded image in, RAM tags out.
 *
 * A job carries the encoded image (LION_TENSOR_IMAGE, U8) and may ask for
 * task.debug_tags_top_k (up to LION_MAX_TOP_TAGS; more than the model's classes gives them
 * all, since the gateway cannot know how many the model has). The stage decodes and
 * preprocesses every image of the batch as RAM does (PIL bilinear resize to
 * tagger.image_size, ImageNet normalisation, both from model.json), runs RAM on each, one
 * forward per image (so that an answer does not depend, to the last bit, on the batch it
 * ran in), and answers each job with result.tags (over threshold, RAM's order, with
 * scores), result.top_tags when asked, and result.sequences[0].text = the prompt string
 * LION uses ("dog, man, pet"). A job with a bad image or top-k fails alone.
 *
 * Tag cache: the stage keys a feature_cache (common/worker/feature_cache.h) by the SHA-256 of
 * the encoded image bytes, looked up before decoding, and stores the image's RAM logits
 * [num_tags] f32. A repeat skips decode, resize and the forward; the thresholds, the prompt
 * and any top-k are applied to the cached logits by the same ram_select a miss runs, so a
 * hit's answer is byte-identical to a miss's, in whatever batch either ran. A batch runs
 * RAM on its misses only; the same new image twice in one batch is decoded and run once.
 * With cache_bytes 0 nothing is hashed or kept. */
#ifndef LION_TAGGER_STAGE_H
#define LION_TAGGER_STAGE_H

#include <stdatomic.h>
#include <stdint.h>

#include "arena.h"
#include "feature_cache.h"
#include "image.h"
#include "model_config.h"
#include "precision.h"
#include "ram.h"
#include "weights.h"
#include "worker.h"

typedef struct tagger_stage {
    model_config cfg;
    weights w;
    ram_model ram;
    image_limits limits;
    arena scratch;
    int max_batch; /* jobs one process call takes (the worker's --max-batch) */
    float *pixels; /* [max_batch, 3, S, S] */
    float *logits; /* [max_batch, num_tags] */
    int *rows;     /* [max_batch]: the job of each pixel row (the first, for an image sent twice) */
    int *row_of;   /* [max_batch]: each job's pixel row, -1 when it needs none */
    int *top_k;    /* [max_batch]: each job's top-k request */
    feature_cache *cache; /* NULL when opened with cache_bytes 0 */
    feature_key *keys;    /* [max_batch]: each job's image hash */
    _Atomic uint64_t cache_hits, cache_misses; /* image jobs answered without / with RAM; the
                                                  heartbeat thread reads them */
} tagger_stage;

/* Sizes the batch buffers for max_batch jobs per process call (<= 0: 1) and the tag cache
 * for cache_bytes of logits (0: no cache). RAM's matrices in precision p (f32 or bf16,
 * resolved: worker_main's cfg->precision); the log line says their form and bytes. */
int tagger_stage_open(tagger_stage *s, const char *model_dir, int max_batch, size_t cache_bytes, lion_precision p,
                      lion_status *st);
void tagger_stage_close(tagger_stage *s);

/* worker_process_fn: ctx is the tagger_stage. */
int tagger_stage_process(void *ctx, worker_job *jobs, int n, lion_status *st);

/* The tag cache's hit and miss counts (safe from another thread): a hit is an image job
 * answered without decoding it or running RAM, a miss one that was decoded. */
void tagger_stage_cache_stats(void *ctx, uint64_t *hits, uint64_t *misses);

#endif
