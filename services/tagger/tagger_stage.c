#include "tagger_stage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "protocol.h"
#include "stage_io.h"

int tagger_stage_open(tagger_stage *s, const char *model_dir, int max_batch, size_t cache_bytes, lion_precision p,
                      lion_status *st) {
    memset(s, 0, sizeof *s);
    if (model_config_load(&s->cfg, model_dir, st)) return -1;
    const tagger_config *t = &s->cfg.tagger;
    ram_config rc;
    ram_config_from_model(&rc, t);
    /* the stage file holds RAM's own key names (visual_encoder., tagging_head., ...) */
    if (weights_open(&s->w, t->file, "", st) || ram_load(&s->ram, &rc, &s->w, p, st)) {
        tagger_stage_close(s);
        return -1;
    }
    s->max_batch = max_batch > 0 ? max_batch : 1;
    s->limits = image_limits_default();
    size_t img = (size_t)3 * t->image_size * t->image_size;
    s->pixels = malloc(sizeof(float) * img * s->max_batch);
    s->logits = malloc(sizeof(float) * (size_t)t->num_tags * s->max_batch);
    s->rows = malloc(sizeof *s->rows * (size_t)s->max_batch);
    s->row_of = malloc(sizeof *s->row_of * (size_t)s->max_batch);
    s->top_k = malloc(sizeof *s->top_k * (size_t)s->max_batch);
    s->keys = malloc(sizeof *s->keys * (size_t)s->max_batch);
    if (cache_bytes) s->cache = feature_cache_new(cache_bytes);
    arena_init(&s->scratch, 0);
    if (!s->pixels || !s->logits || !s->rows || !s->row_of || !s->top_k || !s->keys || (cache_bytes && !s->cache)) {
        tagger_stage_close(s);
        return lion_fail(st, LION_ENOMEM, "tagger: out of memory for batch %d", s->max_batch);
    }
    char cache[96] = "off";
    size_t per_image = sizeof(float) * (size_t)t->num_tags;
    if (cache_bytes)
        snprintf(cache, sizeof cache, "%zu MB (%zu bytes per image: %zu images)", cache_bytes >> 20, per_image,
                 cache_bytes / per_image);
    /* bytes_f32 counts what weights_get handed out in f32: in bf16 the biases, LayerNorms,
     * tables and label embeddings; the matrices are counted apart, in their form */
    log_info("tagger: %s, Swin %dx%d/%d embed %d, %d stages, %d tags, matrices %s %.1f MB (%s), other weights "
             "%.1f MB f32, tag cache %s",
             s->cfg.name, t->image_size, t->image_size, t->patch_size, t->embed_dim, t->n_stages, t->num_tags,
             precision_name(p), ram_matrix_bytes(&s->ram) / 1e6, linear_form(swin_first_matrix(&s->ram.swin)),
             (double)(s->w.bytes_f32 - (p == PRECISION_F32 ? ram_matrix_bytes(&s->ram) : 0)) / 1e6, cache);
    return 0;
}

void tagger_stage_close(tagger_stage *s) {
    ram_free(&s->ram);
    weights_close(&s->w);
    feature_cache_free(s->cache);
    arena_free(&s->scratch);
    free(s->pixels);
    free(s->logits);
    free(s->rows);
    free(s->row_of);
    free(s->top_k);
    free(s->keys);
    model_config_free(&s->cfg);
    memset(s, 0, sizeof *s);
}

void tagger_stage_cache_stats(void *ctx, uint64_t *hits, uint64_t *misses) {
    tagger_stage *s = ctx;
    *hits = s->cache_hits;
    *misses = s->cache_misses;
}

/* The job's top-k request, checked before any work is done for it: over LION_MAX_TOP_TAGS is
 * refused, over the model's tag count gives every tag (the gateway cannot know the count). */
static int job_top_k(const tagger_stage *s, const worker_job *job, int *top_k, lion_status *st) {
    *top_k = 0;
    if (!job->task->has_debug_tags_top_k) return 0;
    uint32_t k = job->task->debug_tags_top_k;
    if (k > LION_MAX_TOP_TAGS)
        return lion_fail(st, LION_EINVAL, "tagger: debug_tags_top_k %u is over the limit of %d", k,
                         LION_MAX_TOP_TAGS);
    *top_k = k < (uint32_t)s->ram.cfg.num_tags ? (int)k : s->ram.cfg.num_tags;
    return 0;
}

static int add_result(const tagger_stage *s, worker_job *job, const ram_result *r, lion_status *st) {
    for (int i = 0; i < r->n_tags; i++)
        if (envelope_add_tag(job->reply, s->ram.tags[r->tags[i].index], r->tags[i].score, st)) return -1;
    for (int i = 0; i < r->n_top; i++)
        if (envelope_add_top_tag(job->reply, s->ram.tags[r->top[i].index], r->top[i].score, st)) return -1;
    if (!envelope_add_sequence(job->reply, r->prompt, NULL, 0, 0.0f, st)) return -1;
    return 0;
}

/* The job's tags from its image's logits [num_tags]: the same code on a hit and a miss. */
static void answer(const tagger_stage *s, worker_job *job, const float *logits, int top_k) {
    ram_result r;
    lion_status js;
    if (ram_select(&s->ram, logits, top_k, &r, &js) || add_result(s, job, &r, &js))
        worker_job_fail(job, js.code, "%s", js.msg);
    ram_result_free(&r);
}

/* An earlier job of this batch with the same image that is waiting for its forward: its
 * pixel row, or -1. */
static int pending_row(const tagger_stage *s, int i) {
    for (int p = 0; p < i; p++)
        if (s->row_of[p] >= 0 && !memcmp(s->keys[p].bytes, s->keys[i].bytes, FEATURE_KEY_SIZE)) return s->row_of[p];
    return -1;
}

int tagger_stage_process(void *ctx, worker_job *jobs, int n, lion_status *st) {
    tagger_stage *s = ctx;
    const tagger_config *t = &s->cfg.tagger;
    const size_t img = (size_t)3 * t->image_size * t->image_size;
    const size_t n_tags = (size_t)t->num_tags;
    const image_filter filter = t->resize == RESIZE_BICUBIC ? IMAGE_FILTER_BICUBIC : IMAGE_FILTER_BILINEAR;
    int *rows = s->rows, *row_of = s->row_of, *top_k = s->top_k;
    /* the worker gives at most the max_batch the stage was opened with */
    if (n > s->max_batch) return lion_fail(st, LION_EINTERNAL, "tagger: batch of %d over %d", n, s->max_batch);

    /* fail the bad jobs and answer the cache hits now, before any decoding; preprocess the
     * misses into one pixel batch (row_of[i]: job i's row, -1 once it is answered) */
    int m = 0;
    uint64_t hits = 0, misses = 0;
    for (int i = 0; i < n; i++) {
        lion_status js;
        const uint8_t *bytes;
        size_t len;
        row_of[i] = -1;
        if (job_top_k(s, &jobs[i], &top_k[i], &js) || stage_image_bytes(&jobs[i], &bytes, &len, &js)) {
            worker_job_fail(&jobs[i], js.code, "%s", js.msg);
            continue;
        }
        if (s->cache) {
            size_t cached_len;
            s->keys[i] = feature_key_of(bytes, len);
            const float *cached = feature_cache_get(s->cache, &s->keys[i], &cached_len);
            if (cached && cached_len == sizeof(float) * n_tags) {
                envelope_set_cache_hit(jobs[i].reply, 1, &js);
                answer(s, &jobs[i], cached, top_k[i]);
                hits++;
                continue;
            }
            /* the same new image twice in one batch: decoded and run once */
            if ((row_of[i] = pending_row(s, i)) >= 0) {
                envelope_set_cache_hit(jobs[i].reply, 1, &js);
                hits++;
                continue;
            }
        }
        envelope_set_cache_hit(jobs[i].reply, 0, &js);
        misses++;
        if (image_preprocess(bytes, len, t->image_size, filter, t->mean, t->std, s->pixels + m * img, &s->limits,
                             &js)) {
            worker_job_fail(&jobs[i], js.code, "image: %s", js.msg);
            continue;
        }
        rows[m] = i;
        row_of[i] = m++;
    }
    s->cache_hits += hits;
    s->cache_misses += misses;
    if (m == 0) return 0;

    /* One forward per image, not one over the batch, as the vision stage does: an image's
     * logits then do not depend on what it was batched with (OpenBLAS sums tile-edge rows in
     * another order when a GEMM's row count changes, and a batched forward moved the last
     * bits of the scores), so a cache hit gives exactly what a miss would give in any batch,
     * and `lion-tap replay` is exact. RAM's head already ran one image at a time; on the
     * Swin-L test fixture (depths 2,2,2,1, 4585 classes, 1 thread, 4 images, the shared
     * 2-core VM) batched and one-by-one forwards were within the noise of each other
     * (3.9-5.9 s against 3.7-5.6 s per image). */
    int64_t shape[] = {1, 3, t->image_size, t->image_size};
    for (int j = 0; j < m; j++) {
        tensor pixels = tensor_view(DTYPE_F32, s->pixels + j * img, 4, shape);
        int rc = ram_logits(&s->ram, &pixels, s->logits + (size_t)j * n_tags, &s->scratch, st);
        arena_reset(&s->scratch);
        if (rc) return -1;
    }

    if (s->cache)
        for (int j = 0; j < m; j++)
            if (feature_cache_put(s->cache, &s->keys[rows[j]], s->logits + (size_t)j * n_tags, sizeof(float) * n_tags))
                log_warn("tagger: tag cache out of memory; not cached");
    for (int i = 0; i < n; i++)
        if (row_of[i] >= 0) answer(s, &jobs[i], s->logits + (size_t)row_of[i] * n_tags, top_k[i]);
    return 0;
}
