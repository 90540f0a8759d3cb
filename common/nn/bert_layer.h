/* bert_layer.h - the two post-norm sub-layers of an HF BertLayer, as the Q-Former, the
 * vision aggregator (FusionAdapter) and RAM's tagging head all use them.
 *
 * Attention: x = LayerNorm(x + dense(MHA(query(x), key(src), value(src)))), where src is x
 * itself (self-attention) or another sequence (cross-attention, possibly of another width).
 * FFN: x = LayerNorm(x + output.dense(gelu(intermediate.dense(x)))), exact erf GELU.
 * Weights keep the HF names under a prefix ("Qformer.bert.encoder.layer.0.attention"). */
#ifndef LION_BERT_LAYER_H
#define LION_BERT_LAYER_H

#include <stdint.h>

#include "arena.h"
#include "status.h"
#include "weights.h"

typedef struct bert_attention {
    int hidden, heads, kv_width;
    float ln_eps;
    const float *query_w, *query_b, *key_w, *key_b, *value_w, *value_b;
    const float *dense_w, *dense_b, *ln_w, *ln_b;
} bert_attention;

typedef struct bert_ffn {
    int hidden, intermediate;
    float ln_eps;
    const float *in_w, *in_b, *out_w, *out_b, *ln_w, *ln_b;
} bert_ffn;

/* Binds prefix.self.{query,key,value}.* and prefix.output.{dense,LayerNorm}.*; key and value
 * read kv_width-wide inputs (hidden for self-attention). */
int bert_attention_load(bert_attention *a, weights *w, const char *prefix, int hidden, int heads, int kv_width,
                        float ln_eps, lion_status *st);

/* x: [batch * q_len, hidden], updated in place. query: query(x) when the caller already has
 * it (RAM's label queries do not depend on the image), or NULL to compute it. kv:
 * [batch * k_len, kv_width], or NULL for self-attention (then k_len must equal q_len).
 * key_mask: [batch, k_len], nonzero = may be attended, NULL = all. -1 only when scratch
 * memory runs out. */
int bert_attention_forward(const bert_attention *a, float *x, const float *query, int batch, int q_len,
                           const float *kv, int k_len, const uint8_t *key_mask, arena *scratch, lion_status *st);

/* Binds intermediate_prefix.dense.* and output_prefix.{dense,LayerNorm}.* (the Q-Former has
 * two FFNs per layer: "intermediate"/"output" for text, "intermediate_query"/"output_query"). */
int bert_ffn_load(bert_ffn *f, weights *w, const char *intermediate_prefix, const char *output_prefix, int hidden,
                  int intermediate, float ln_eps, lion_status *st);

/* x: [rows, hidden], updated in place. -1 only when scratch memory runs out. */
int bert_ffn_forward(const bert_ffn *f, float *x, int rows, arena *scratch, lion_status *st);

#endif
