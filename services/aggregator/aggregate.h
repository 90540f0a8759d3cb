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
#include "linear.h"
#include "model_config.h"
#include "precision.h"
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

/* One request as the aggregator's job brings it. The ViT outputs come as the vision stage
 * sends them: the block index of each and a tensor [vision_tokens, vision_width] stored F32,
 * F16 or BF16; any order, extra layers ignored. The instruction is text_ids[0..text_len)
 * (WordPiece ids, [CLS] ... [SEP], as wordpiece.h encodes them); unused (may be NULL) under
 * AGGREGATOR. */
typedef struct aggregate_request {
    int n_layers;
    const int *layers;
    const tensor *vit_outs;
    const int32_t *text_ids;
    int text_len;
} aggregate_request;

/* Binds the branches cfg->visual_input uses from the aggregator stage file (w opened without
 * a prefix), with the dimensions of cfg (aggregator, vision image/patch size, llm.d_model);
 * their matrices in precision p (f32 or bf16). On failure m holds nothing to free. */
int aggregate_load(aggregate_model *m, const model_config *cfg, weights *w, lion_precision p, lion_status *st);
void aggregate_free(aggregate_model *m);
/* The bytes the branches' matrices take in their form (linear_bytes), and one of them (the
 * Q-Former's first query, else the fusion's) to name the form in logs. */
size_t aggregate_matrix_bytes(const aggregate_model *m);
const linear *aggregate_first_matrix(const aggregate_model *m);

/* Checks one request against the model: every ViT layer the branches read present, with the
 * shape [vision_tokens, vision_width] and a floating dtype; the instruction present (Q-Former
 * only), no longer than the position table (ETOOBIG), its ids inside the vocabulary. Errors
 * (EINVAL) name what was wrong: "ViT layer 28 missing from the request (it has layers [18, 38])".
 * A service checks each job with this first, so one bad job does not fail its batch. */
int aggregate_request_check(const aggregate_model *m, const aggregate_request *req, lion_status *st);

/* The visual tokens of `batch` requests in one forward (each request checked as above; the
 * message then starts with "request <b>: "). out: [batch, num_visual, d_model].
 * ENOMEM when scratch runs out. */
int aggregate_forward(const aggregate_model *m, const aggregate_request *reqs, int batch, float *out,
                      arena *scratch, lion_status *st);

#endif
