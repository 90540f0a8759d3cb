/* vision_stage.h - the vision service's stage: encoded image in, image features out.
 *
 * A job carries the encoded image (LION_TENSOR_IMAGE, U8). The stage decodes and
 * preprocesses it as upstream does (PIL bicubic resize to the model's image size, CLIP
 * normalisation), runs the image encoder on every cache miss of the batch (one forward per
 * image), and returns, in the job's output dtype:
 *   LION (model.json family "lion"): the EVA ViT; one tensor per configured block,
 *     LION_TENSOR_VIT_LAYER_PREFIX "<index>" [tokens, dim], for the aggregator;
 *   Pink (family "pink"): the CLIP ViT with Pink's adapters and mm_projector (clip.h);
 *     LION_TENSOR_VISUAL_TOKENS [patches, llm dim], for the llm directly.
 * The same image bytes again are answered from the feature cache without running it.
 *
 * Precision (common/nn/precision.h): in bf16 the encoder's matrices are held in bf16 only
 * (vit.h, clip.h); the rest of the stage is f32 in both. */
#ifndef LION_VISION_STAGE_H
#define LION_VISION_STAGE_H

#include "arena.h"
#include "clip.h"
#include "feature_cache.h"
#include "image.h"
#include "model_config.h"
#include "vit.h"
#include "worker.h"

typedef struct vision_stage {
    model_config cfg;
    lion_precision precision; /* what the encoder's matrices were bound in */
    weights w;
    vit_model vit;   /* family lion */
    clip_model clip; /* family pink */
    /* what one image takes and gives, by family */
    int image_size;
    image_filter filter;
    const float *mean, *std;
    size_t per_image; /* floats of one image's outputs (the cache value) */
    feature_cache *cache;
    image_limits limits;
    arena scratch;
    int max_batch;  /* jobs one process call takes (the worker's --max-batch) */
    float *pixels;  /* [max_batch, 3, S, S] */
    float *outs;    /* [max_batch, n_layers, tokens, dim] */
    feature_key *keys; /* [max_batch]: each job's image hash */
    int *miss;         /* [max_batch]: the jobs the ViT runs for */
    _Atomic uint64_t cache_hits, cache_misses; /* copies the heartbeat thread may read */
} vision_stage;

/* Sizes the batch buffers for max_batch jobs per process call (<= 0: 1). f32. */
int vision_stage_open(vision_stage *s, const char *model_dir, int max_batch, size_t cache_bytes, lion_status *st);
/* The same in a precision (PRECISION_F32 or PRECISION_BF16; resolve auto first). */
int vision_stage_open_with(vision_stage *s, const char *model_dir, int max_batch, size_t cache_bytes,
                           lion_precision precision, lion_status *st);
void vision_stage_close(vision_stage *s);

/* worker_process_fn: ctx is the vision_stage. */
int vision_stage_process(void *ctx, worker_job *jobs, int n, lion_status *st);

/* The feature cache's hit and miss counts (safe from another thread). */
void vision_stage_cache_stats(void *ctx, uint64_t *hits, uint64_t *misses);

/* LION_TENSOR_VIT_LAYER_PREFIX "<index>" ("vit_layer_<index>") */
void vision_output_name(char *buf, size_t len, int layer);

#endif
