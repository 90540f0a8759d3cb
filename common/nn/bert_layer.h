/* bert_layer.h - the two post-norm sub-layers of an HF BertLayer, as the Q-Former, the
 * vision aggregator (FusionAdapter) and RAM's tagging head all use them.
 *
 * Attention: x = LayerNorm(x + dense(MHA(query(x), key(src), value(src)))), where src is x
 * itself (self-attention) or another sequence (cross-attention, possibly of another width).
 * FFN: x = LayerNorm(x + output.dense(gelu(intermediate.dense(x)))), exact erf GELU.
 * Weights keep the HF names under a prefix ("Qformer.bert.encoder.layer.0.attention").
 * The matrices are linears (linear.h) in the precision they are loaded with; biases and the
 * LayerNorms stay f32. */
#ifndef LION_BERT_LAYER_H
#define LION_BERT_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "linear.h"
#include "precision.h"
#include "status.h"
#include "weights.h"

typedef struct bert_attention {
    int hidden, heads, kv_width;
    float ln_eps;
    linear query, key, value, dense; /* key, value: [hidden, kv_width]; the others [hidden, hidden] */
    const float *query_b, *key_b, *value_b, *dense_b, *ln_w, *ln_b;
} bert_attention;

typedef struct bert_ffn {
    int hidden, intermediate;
    float ln_eps;
    linear in, out; /* intermediate.dense [intermediate, hidden], output.dense [hidden, intermediate] */
    const float *in_b, *out_b, *ln_w, *ln_b;
} bert_ffn;

/* Binds prefix.self.{query,key,value}.* and prefix.output.{dense,LayerNorm}.*; key and value
 * read kv_width-wide inputs (hidden for self-attention). The matrices in precision p (f32 or
 * bf16). On failure a holds nothing to free. */
int bert_attention_load(bert_attention *a, weights *w, const char *prefix, int hidden, int heads, int kv_width,
                        float ln_eps, lion_precision p, lion_status *st);
void bert_attention_free(bert_attention *a);
/* The bytes its matrices take in their form (linear_bytes). */
size_t bert_attention_bytes(const bert_attention *a);

/* x: [batch * q_len, hidden], updated in place. query: query(x) when the caller already has
 * it (RAM's label queries do not depend on the image), or NULL to compute it. kv:
 * [batch * k_len, kv_width], or NULL for self-attention (then k_len must equal q_len).
 * key_mask: [batch, k_len], nonzero = may be attended, NULL = all. -1 when scratch memory
 * runs out or a bf16 product fails. */
int bert_attention_forward(const bert_attention *a, float *x, const float *query, int batch, int q_len,
                           const float *kv, int k_len, const uint8_t *key_mask, arena *scratch, lion_status *st);

/* Binds intermediate_prefix.dense.* and output_prefix.{dense,LayerNorm}.* (the Q-Former has
 * two FFNs per layer: "intermediate"/"output" for text, "intermediate_query"/"output_query"). */
int bert_ffn_load(bert_ffn *f, weights *w, const char *intermediate_prefix, const char *output_prefix, int hidden,
                  int intermediate, float ln_eps, lion_precision p, lion_status *st);
void bert_ffn_free(bert_ffn *f);
size_t bert_ffn_bytes(const bert_ffn *f);

/* x: [rows, hidden], updated in place. -1 when scratch memory runs out or a product fails. */
int bert_ffn_forward(const bert_ffn *f, float *x, int rows, arena *scratch, lion_status *st);

#endif
