/* aggregate.h - the aggregator stage's whole computation: ViT layer outputs of a batch of
 * images, plus each request's tokenized instruction, to the LLM's visual tokens.
 *
 * Per request: [num_query_tokens Q-Former tokens; vision tokens aggregator tokens] x d_model
 * (32 + 257 for LION-XL), or one branch alone as model.json's visual_input says
 * (QFORMER / AGGREGATOR), exactly as upstream's encode_img concatenates them. */
#ifndef LION_AGGREGATE_H
#define LION_AGGREGATE_H

#include <stdint.h>

#include "arena.h"
#include "fusion.h"
#include "model_config.h"
#include "qformer.h"
#include "status.h"
#include "tensor.h"
#include "weights.h"

typedef struct aggregate_model {
    visual_input visual_input;
    int use_qformer, use_fusion;
    int vision_width, vision_tokens, d_model;
    int hidden_layer;            /* ViT layer both branches read */
    int num_visual;              /* visual tokens per request */
    qformer_model qformer;       /* when use_qformer */
    fusion_model fusion;         /* when use_fusion */
} aggregate_model;

/* What one forward consumes. The ViT outputs come as the vision stage sends them: the block
 * index of each and an F32 tensor [batch, vision_tokens, vision_width]; any order, extra
 * layers ignored. The instruction of request b is text_ids[b][0..text_lens[b]) (WordPiece ids,
 * [CLS] ... [SEP], as wordpiece.h encodes them); unused (may be NULL) under AGGREGATOR. */
typedef struct aggregate_input {
    int batch;
    int n_layers;
    const int *layers;
    const tensor *vit_outs;
    const int32_t *const *text_ids;
    const int *text_lens;
} aggregate_input;

/* Binds the branches cfg->visual_input uses from the aggregator stage file (w opened without
 * a prefix), with the dimensions of cfg (aggregator, vision image/patch size, llm.d_model).
 * On failure m holds nothing to free. */
int aggregate_load(aggregate_model *m, const model_config *cfg, weights *w, lion_status *st);
void aggregate_free(aggregate_model *m);

/* out: [batch, num_visual, d_model]. Errors (EINVAL) name what was wrong: a missing ViT layer,
 * a tensor of the wrong dtype or shape, a missing or out-of-vocabulary instruction; ETOOBIG for
 * an instruction longer than the Q-Former's position table; ENOMEM when scratch runs out. */
int aggregate_forward(const aggregate_model *m, const aggregate_input *in, float *out, arena *scratch,
                      lion_status *st);

#endif
