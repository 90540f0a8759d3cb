/* tagging_head.h - RAM's Query2Label head: BERT layers with cross-attention only.
 *
 * Upstream deletes the self-attention and the embeddings of these BertLayers, so a layer
 * is: x = LN(x + dense(MHA(query(x), key(image), value(image)))), then the post-norm FFN
 * x = LN(x + output.dense(gelu(intermediate.dense(x)))). The queries are the label
 * embeddings, the keys and values every image token (the pooled one included, no mask).
 * Weights keep the HF names: prefix + "encoder.layer.N.crossattention.self.query.weight". */
#ifndef LION_TAGGING_HEAD_H
#define LION_TAGGING_HEAD_H

#include "arena.h"
#include "bert_layer.h"
#include "status.h"
#include "weights.h"

typedef struct tagging_layer {
    bert_attention cross; /* crossattention.*: queries from the labels, keys/values from the image */
    bert_ffn ffn;         /* intermediate.* + output.* */
} tagging_layer;

typedef struct tagging_head {
    int hidden, heads, layers, intermediate, kv_width;
    float ln_eps;
    tagging_layer *layer;
} tagging_head;

/* Binds prefix + "encoder.layer.N.*" for N < layers; kv_width is the image embedding width.
 * The matrices in precision p (f32 or bf16). */
int tagging_head_load(tagging_head *t, weights *w, const char *prefix, int hidden, int heads, int layers,
                      int intermediate, int kv_width, float ln_eps, lion_precision p, lion_status *st);
void tagging_head_free(tagging_head *t);
/* The bytes its matrices take in their form (linear_bytes). */
size_t tagging_head_matrix_bytes(const tagging_head *t);

/* One image. x: [q_len, hidden] queries, updated in place to the head's output.
 * image: [k_len, kv_width]. first_query: layer 0's query projection of x when the caller
 * has it already (it does not depend on the image), or NULL. -1 when scratch runs out or a
 * bf16 product fails. */
int tagging_head_forward(const tagging_head *t, float *x, int q_len, const float *image, int k_len,
                         const float *first_query, arena *a, lion_status *st);

#endif
