#include "vision_stage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pink_clip_config.h"
#include "protocol.h"
#include "stage_io.h"

void vision_output_name(char *buf, size_t len, int layer) {
    snprintf(buf, len, LION_TENSOR_VIT_LAYER_PREFIX "%d", layer);
}

/* The EVA ViT of a LION model; its outputs are n_intermediate blocks of [tokens, dim]. */
static int open_lion(vision_stage *s, lion_status *st) {
    const vision_config *v = &s->cfg.vision;
    vit_config vc;
    vit_config_from_model(&vc, v);
    if (weights_open(&s->w, v->file, "visual_encoder.", st) || vit_load_with(&s->vit, &vc, &s->w, s->precision, st))
        return -1;
    s->image_size = v->image_size;
    s->filter = v->resize == RESIZE_BILINEAR ? IMAGE_FILTER_BILINEAR : IMAGE_FILTER_BICUBIC;
    s->mean = v->mean, s->std = v->std;
    s->per_image = (size_t)s->vit.tokens * v->dim * v->n_intermediate;
    return 0;
}

/* Pink's CLIP with adapters and mm_projector; its output is [patches, llm dim]. */
static int open_pink(vision_stage *s, lion_status *st) {
    const pink_vision_config *v = &s->cfg.pink.vision;
    clip_config cc;
    pink_clip_config(v, &cc);
    if (weights_open(&s->w, v->file, "", st) || clip_load_with(&s->clip, &cc, &s->w, s->precision, st)) return -1;
    s->image_size = v->image_size;
    s->filter = v->resize == RESIZE_BILINEAR ? IMAGE_FILTER_BILINEAR : IMAGE_FILTER_BICUBIC;
    s->mean = v->mean, s->std = v->std;
    s->per_image = (size_t)s->clip.patches * v->proj_dim;
    return 0;
}

int vision_stage_open(vision_stage *s, const char *model_dir, int max_batch, size_t cache_bytes, lion_status *st) {
    return vision_stage_open_with(s, model_dir, max_batch, cache_bytes, PRECISION_F32, st);
}

int vision_stage_open_with(vision_stage *s, const char *model_dir, int max_batch, size_t cache_bytes,
                           lion_precision precision, lion_status *st) {
    memset(s, 0, sizeof *s);
    s->precision = precision;
    if (model_config_load(&s->cfg, model_dir, st)) return -1;
    const int pink = s->cfg.family == MODEL_FAMILY_PINK;
    if (pink ? open_pink(s, st) : open_lion(s, st)) {
        vision_stage_close(s);
        return -1;
    }
    s->max_batch = max_batch > 0 ? max_batch : 1;
    s->limits = image_limits_default();
    s->cache = feature_cache_new(cache_bytes);
    size_t img = (size_t)3 * s->image_size * s->image_size;
    s->pixels = malloc(sizeof(float) * img * s->max_batch);
    s->outs = malloc(sizeof(float) * s->per_image * s->max_batch);
    s->keys = malloc(sizeof *s->keys * (size_t)s->max_batch);
    s->miss = malloc(sizeof *s->miss * (size_t)s->max_batch);
    arena_init(&s->scratch, 0);
    if (!s->cache || !s->pixels || !s->outs || !s->keys || !s->miss) {
        vision_stage_close(s);
        return lion_fail(st, LION_ENOMEM, "vision: out of memory for batch %d", s->max_batch);
    }
    /* which form the matrices took (one stands for all: they are bound alike) and what they
     * hold; bytes_f32 counts the f32 rest plus, in f32, the matrices themselves */
    const linear *one = pink ? (s->clip.run ? &s->clip.layer[0].fc1 : &s->clip.proj)
                             : (s->vit.cfg.depth ? &s->vit.blocks[0].fc1 : NULL);
    const size_t matrix_bytes = pink ? clip_matrix_bytes(&s->clip) : vit_matrix_bytes(&s->vit);
    if (pink) {
        const pink_vision_config *v = &s->cfg.pink.vision;
        log_info("vision: %s (Pink), CLIP %dx%d/%d dim %d, %d of %d layers run, %d tokens of %d, %.1f MB f32 "
                 "weights, cache %zu MB",
                 s->cfg.name, v->image_size, v->image_size, v->patch_size, v->dim, s->clip.run, v->layers,
                 s->clip.patches, v->proj_dim, s->w.bytes_f32 / 1e6, cache_bytes >> 20);
    } else {
        const vision_config *v = &s->cfg.vision;
        log_info("vision: %s, ViT %dx%d/%d dim %d depth %d, returns %d layers, %.1f MB f32 weights, cache %zu MB",
                 s->cfg.name, v->image_size, v->image_size, v->patch_size, v->dim, v->depth, v->n_intermediate,
                 s->w.bytes_f32 / 1e6, cache_bytes >> 20);
    }
    log_info("vision: matrices %s, %s, %.1f MB", precision_name(precision), one ? linear_form(one) : "none",
             matrix_bytes / 1e6);
    return 0;
}

void vision_stage_close(vision_stage *s) {
    vit_free(&s->vit);
    clip_free(&s->clip);
    weights_close(&s->w);
    feature_cache_free(s->cache);
    arena_free(&s->scratch);
    free(s->pixels);
    free(s->outs);
    free(s->keys);
    free(s->miss);
    model_config_free(&s->cfg);
    memset(s, 0, sizeof *s);
}

/* Adds the job's outputs from one image's blob: LION's [n_layers][tokens][dim] f32 blocks,
 * or Pink's [patches][llm dim] visual tokens. */
static int add_outputs(vision_stage *s, worker_job *job, const float *blob, lion_status *st) {
    dtype dt;
    if (stage_output_dtype(job, &dt, st)) return -1;
    if (s->cfg.family == MODEL_FAMILY_PINK) {
        int64_t shape[] = {s->clip.patches, s->cfg.pink.vision.proj_dim};
        return stage_add_output_f32(job, LION_TENSOR_VISUAL_TOKENS, blob, 2, shape, dt, st);
    }
    const vision_config *v = &s->cfg.vision;
    const size_t per = (size_t)s->vit.tokens * v->dim;
    int64_t shape[] = {s->vit.tokens, v->dim};
    for (int k = 0; k < v->n_intermediate; k++) {
        char name[32];
        vision_output_name(name, sizeof name, v->intermediate_layers[k]);
        if (stage_add_output_f32(job, name, blob + k * per, 2, shape, dt, st)) return -1;
    }
    return 0;
}

/* One image's forward into its blob (add_outputs' layout). */
static int forward_one(vision_stage *s, const float *pixels, float *blob, lion_status *st) {
    if (s->cfg.family == MODEL_FAMILY_PINK) return clip_forward(&s->clip, pixels, 1, NULL, blob, &s->scratch, st);
    const vision_config *v = &s->cfg.vision;
    const size_t per = (size_t)s->vit.tokens * v->dim;
    float *outs[MODEL_MAX_INTERMEDIATE];
    for (int k = 0; k < v->n_intermediate; k++) outs[k] = blob + (size_t)k * per;
    return vit_forward(&s->vit, pixels, 1, v->intermediate_layers, v->n_intermediate, outs, &s->scratch, st);
}

void vision_stage_cache_stats(void *ctx, uint64_t *hits, uint64_t *misses) {
    vision_stage *s = ctx;
    *hits = s->cache_hits;
    *misses = s->cache_misses;
}

static void publish_cache_stats(vision_stage *s) {
    feature_cache_stats cs = feature_cache_get_stats(s->cache);
    s->cache_hits = cs.hits;
    s->cache_misses = cs.misses;
}

int vision_stage_process(void *ctx, worker_job *jobs, int n, lion_status *st) {
    vision_stage *s = ctx;
    const size_t img = (size_t)3 * s->image_size * s->image_size;
    const size_t per = s->per_image;
    int *miss = s->miss;
    feature_key *keys = s->keys;
    /* the worker gives at most the max_batch the stage was opened with */
    if (n > s->max_batch) return lion_fail(st, LION_EINTERNAL, "vision: batch of %d over %d", n, s->max_batch);

    /* answer hits and bad images now; preprocess the misses into one pixel batch */
    int m = 0;
    for (int i = 0; i < n; i++) {
        lion_status js;
        const uint8_t *bytes;
        size_t len, blob_len;
        if (stage_image_bytes(&jobs[i], &bytes, &len, &js)) {
            worker_job_fail(&jobs[i], js.code, "%s", js.msg);
            continue;
        }
        keys[i] = feature_key_of(bytes, len);
        const float *blob = feature_cache_get(s->cache, &keys[i], &blob_len);
        const int hit = blob && blob_len == sizeof(float) * per;
        if (envelope_set_cache_hit(jobs[i].reply, hit, &js)) {
            worker_job_fail(&jobs[i], js.code, "%s", js.msg);
            continue;
        }
        if (hit) {
            if (add_outputs(s, &jobs[i], blob, &js)) worker_job_fail(&jobs[i], js.code, "%s", js.msg);
            continue;
        }
        if (image_preprocess(bytes, len, s->image_size, s->filter, s->mean, s->std, s->pixels + m * img, &s->limits,
                             &js)) {
            worker_job_fail(&jobs[i], js.code, "image: %s", js.msg);
            continue;
        }
        miss[m++] = i;
    }
    publish_cache_stats(s);
    if (m == 0) return 0;

    /* One forward per image, not one over the batch: an image's features then do not depend
     * on what it was batched with (OpenBLAS sums tile-edge rows in another order when the
     * row count changes, which moved the last bits and broke byte-exact replays), so the
     * cache and `lion-tap replay` hold exactly. At 257 rows per image the GEMMs are already
     * large: one forward over 4 images was about 8% faster per image (bench_vit, 1 thread,
     * 4 blocks: 0.63 s against 0.69 s), the price of exact replays. */
    for (int j = 0; j < m; j++) {
        float *blob = s->outs + (size_t)j * per;
        if (forward_one(s, s->pixels + j * img, blob, st)) return -1;
        worker_job *job = &jobs[miss[j]];
        if (feature_cache_put(s->cache, &keys[miss[j]], blob, per * sizeof(float)))
            log_warn("vision: feature cache out of memory; not cached");
        lion_status js;
        if (add_outputs(s, job, blob, &js)) worker_job_fail(job, js.code, "%s", js.msg);
    }
    arena_reset(&s->scratch);
    return 0;
}
