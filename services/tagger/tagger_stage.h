/* tagger_stage.h - the tagger service's stage: encoded image in, RAM tags out.
 *
 * A job carries the encoded image (LION_TENSOR_IMAGE, U8) and may ask for
 * task.debug_tags_top_k (up to LION_MAX_TOP_TAGS; more than the model's classes gives them
 * all, since the gateway cannot know how many the model has). The
 * stage decodes and preprocesses every image of the batch as RAM does (PIL bilinear resize
 * to tagger.image_size, ImageNet normalisation, both from model.json), runs one RAM forward
 * for the whole batch, and answers each job with result.tags (over threshold, RAM's order,
 * with scores), result.top_tags when asked, and result.sequences[0].text = the prompt string
 * LION uses ("dog, man, pet"). A job with a bad image or top-k fails alone. */
#ifndef LION_TAGGER_STAGE_H
#define LION_TAGGER_STAGE_H

#include "arena.h"
#include "image.h"
#include "model_config.h"
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
    int *rows;     /* [max_batch]: the job of each pixel row */
    int *top_k;    /* [max_batch]: each row's top-k request */
} tagger_stage;

/* Sizes the batch buffers for max_batch jobs per process call (<= 0: 1). */
int tagger_stage_open(tagger_stage *s, const char *model_dir, int max_batch, lion_status *st);
void tagger_stage_close(tagger_stage *s);

/* worker_process_fn: ctx is the tagger_stage. */
int tagger_stage_process(void *ctx, worker_job *jobs, int n, lion_status *st);

#endif
