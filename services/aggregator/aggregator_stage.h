/* aggregator_stage.h - the aggregator service's stage: ViT layer outputs and the
 * instruction in, the LLM's visual tokens out.
 *
 * A job carries every LION_TENSOR_VIT_LAYER_PREFIX "<index>" tensor the vision stage returned
 * ([tokens, dim], F32/F16/BF16) and task.instruction. The stage tokenizes the instruction for
 * the Q-Former (BERT WordPiece, left truncation at model.json's max_text_len), checks each job
 * alone so that a bad one fails without its batch, runs the good ones in one forward, and
 * returns LION_TENSOR_VISUAL_TOKENS [num_visual, d_model] in the job's output dtype. */
#ifndef LION_AGGREGATOR_STAGE_H
#define LION_AGGREGATOR_STAGE_H

#include "aggregate.h"
#include "arena.h"
#include "model_config.h"
#include "precision.h"
#include "weights.h"
#include "wordpiece.h"
#include "worker.h"

typedef struct aggregator_stage {
    model_config cfg;
    weights w;
    aggregate_model model;
    wordpiece_tokenizer *tok; /* NULL when the Q-Former is off (visual_input AGGREGATOR) */
    arena scratch;
    int max_batch; /* jobs one process call takes (the worker's --max-batch) */
    int max_text;  /* ids per instruction: qformer.max_text_len */
    int32_t *ids;  /* [max_batch, max_text] */
    float *out;    /* [max_batch, num_visual, d_model] */
    aggregate_request *reqs; /* [max_batch]: the jobs that passed their checks */
    int *good;               /* [max_batch]: the job of each request */
} aggregator_stage;

/* Sizes the batch buffers for max_batch jobs per process call (<= 0: 1). The matrices in
 * precision p (f32 or bf16, resolved: worker_main's cfg->precision); the log line says their
 * form and bytes. */
int aggregator_stage_open(aggregator_stage *s, const char *model_dir, int max_batch, lion_precision p,
                          lion_status *st);
void aggregator_stage_close(aggregator_stage *s);

/* worker_process_fn: ctx is the aggregator_stage. */
int aggregator_stage_process(void *ctx, worker_job *jobs, int n, lion_status *st);

#endif
