/* qformer.h - InstructBLIP's Q-Former as LION uses it: the "QFORMER" branch of the
 * aggregator stage, from the last ViT layer to num_query_tokens visual tokens of d_model.
 *
 * ln_vision on the image embeddings; embeddings = [query_tokens; word + position(0..T-1) of
 * the instruction text], LayerNorm on the concatenation; then `layers` BERT layers:
 * self-attention over [queries; text] (text padding masked), in layers i % freq == 0 the
 * query rows cross-attend to the image, then the query rows take the intermediate_query /
 * output_query FFN and the text rows the intermediate / output FFN (all post-norm). The
 * query rows of the last layer go through t5_proj.
 *
 * Keys (upstream, whole-file names): query_tokens, ln_vision.*, Qformer.bert.embeddings.*,
 * Qformer.bert.encoder.layer.N.*, t5_proj.*.
 *
 * Precision: the layers' matrices and t5_proj are linears (linear.h) in the precision
 * qformer_load is given; the query tokens, the embedding tables (looked up, not multiplied),
 * biases and LayerNorms stay f32. */
#ifndef LION_QFORMER_H
#define LION_QFORMER_H

#include <stdint.h>

#include "arena.h"
#include "bert_layer.h"
#include "linear.h"
#include "model_config.h"
#include "precision.h"
#include "status.h"
#include "weights.h"

typedef struct qformer_layer {
    bert_attention self_attn;
    int has_cross;
    bert_attention cross_attn; /* queries -> image, only when has_cross */
    bert_ffn ffn_text, ffn_query;
} qformer_layer;

typedef struct qformer_model {
    qformer_config cfg;      /* cfg.vocab (a path) is not kept: the tokenizer owns it */
    int vision_width, d_model;
    const float *query_tokens;            /* [num_query_tokens, hidden] */
    const float *ln_vision_w, *ln_vision_b; /* [vision_width] */
    const float *word_emb, *pos_emb;      /* [vocab_size, hidden], [max_position, hidden] */
    const float *emb_ln_w, *emb_ln_b;
    linear proj;                          /* t5_proj: [d_model, hidden] */
    const float *proj_b;                  /* [d_model] */
    qformer_layer *layers;
} qformer_model;

/* Binds every weight from w (opened without a prefix: the keys are the whole-file names)
 * and checks its shape; the matrices in precision p (f32 or bf16). On failure m holds
 * nothing to free. */
int qformer_load(qformer_model *m, const qformer_config *cfg, int vision_width, int d_model, weights *w,
                 lion_precision p, lion_status *st);
void qformer_free(qformer_model *m);
/* The bytes its matrices take in their form (linear_bytes). */
size_t qformer_matrix_bytes(const qformer_model *m);

/* image: [batch, tokens, vision_width], the ViT layer the Q-Former reads (before ln_vision).
 * ids: [batch, text_len] WordPiece ids, right-padded; mask: [batch, text_len], 1 for a real
 * token, 0 for padding (NULL = no padding). text_len may be 0 (queries alone).
 * out: [batch, num_query_tokens, d_model]. Errors: an id outside the vocabulary, a text
 * longer than max_position, out of scratch memory, a failed bf16 product. */
int qformer_forward(const qformer_model *m, const float *image, int batch, int tokens, const int32_t *ids,
                    const uint8_t *mask, int text_len, float *out, arena *scratch, lion_status *st);

#endif
