/* t5.h - FlanT5 encoder-decoder with LION's mixture of adapters, forward only.
 *
 * As tools/reference/lion_ref/t5.py (HF T5 v1.1 semantics): RMSNorm, attention without the
 * 1/sqrt(d) scale, relative position bias from layer 0 of each stack shared by all its
 * layers (bidirectional buckets in the encoder, causal in the decoder, none in
 * cross-attention), gated FF wo(act(wi_0 x) * wi_1 x), and in every FF sub-layer
 *     out = h + FF(RMSNorm(h)) + router(h)
 * where the AdapterRouter mixes bottleneck adapters up(relu(down h)) * scale per channel by
 * router_ratio1[idx] and router_ratio2[idx] (idx 0 = region-level task, 1 = image-level).
 *
 * The decoder runs one position at a time on a KV cache: cross-attention keys/values are
 * projected from the encoder output once, self-attention keys/values are appended per step,
 * and beam search reorders the cache rows. */
#ifndef LION_T5_H
#define LION_T5_H

#include <stdint.h>

#include "arena.h"
#include "model_config.h"
#include "status.h"
#include "weights.h"

typedef struct t5_config {
    int d_model, d_ff, d_kv, heads;
    int encoder_layers, decoder_layers;
    int vocab_size;
    int rel_buckets, rel_max_distance; /* 32, 128 */
    float ln_eps;                      /* 1e-6 */
    activation ff_act;      /* of the gated FF: ACT_GELU is LION's dense_act_fn "gelu" */
    int adapters;           /* 0 (plain T5), 1 or 2 adapters per FF sub-layer */
    int adapter_bottleneck; /* 64 */
    /* 0 for FlanT5 (untied lm_head.weight); 1: lm_head is shared.weight and the decoder
     * output is scaled by d_model^-0.5 first (HF's tied T5) */
    int tie_word_embeddings;
} t5_config;

typedef struct t5_adapter {
    const float *scale, *down_w, *down_b, *up_w, *up_b;
} t5_adapter;

typedef struct t5_attention {
    const float *norm, *q, *k, *v, *o;
} t5_attention;

typedef struct t5_ff {
    const float *norm, *wi_0, *wi_1, *wo;
    t5_adapter adapters[2];
    const float *router_ratio1, *router_ratio2; /* [2, d_model] each, with 2 adapters */
} t5_ff;

typedef struct t5_layer {
    t5_attention self, cross; /* cross only in the decoder */
    t5_ff ff;
} t5_layer;

typedef struct t5_stack {
    int n_layers;
    t5_layer *layers;
    const float *rel_bias; /* [rel_buckets, heads], layer 0's relative_attention_bias */
    const float *final_norm;
} t5_stack;

typedef struct t5_model {
    t5_config cfg;
    const float *shared;  /* [vocab, d_model] */
    const float *lm_head; /* [vocab, d_model]; == shared when tied */
    t5_stack encoder, decoder;
} t5_model;

/* The T5 dimensions of model.json's llm section. */
void t5_config_from_llm(t5_config *out, const llm_config *l);

/* Binds every weight by its upstream name under w's prefix (normally "t5_model.":
 * shared.weight, encoder.block.N.layer.M..., lm_head.weight) and checks every shape. */
int t5_load(t5_model *m, const t5_config *cfg, weights *w, lion_status *st);
void t5_free(t5_model *m);

/* T5's bucket of relative_position = key_pos - query_pos (HF/Mesh-TF maths, including its
 * f32 logarithm so that boundary cases agree with the reference). */
int t5_relative_bucket(int relative_position, int bidirectional, int num_buckets, int max_distance);

/* Encoder. x: inputs_embeds [batch, len, d_model]; key_mask [batch, len] (nonzero = real
 * token; NULL = all real; every row needs at least one); router_idx 0 or 1.
 * out: [batch, len, d_model] after the final norm. Scratch from a. */
int t5_encode(const t5_model *m, const float *x, const uint8_t *key_mask, int batch, int len, int router_idx,
              float *out, arena *a, lion_status *st);

/* Decoding state for rows = batch * beams sequences; row r belongs to encoder batch
 * element r / beams. Caches are malloc'ed (they live across steps); t5_decoder_free. */
typedef struct t5_decoder {
    int layers, batch, beams, rows;
    int enc_len, capacity, len; /* self-attention cache holds len of capacity positions */
    int router_idx;
    int inner;                  /* heads * d_kv */
    uint8_t *enc_mask;          /* [batch, enc_len] copy */
    float *cross_k, *cross_v;   /* per layer [batch, enc_len, inner] */
    float *self_k, *self_v;     /* per layer [rows, capacity, inner] */
} t5_decoder;

/* Projects the cross-attention keys/values of enc [batch, enc_len, d_model] (enc_mask as
 * for t5_encode) and sizes the self-attention cache for max_steps decoder positions. */
int t5_decoder_init(t5_decoder *dec, const t5_model *m, const float *enc, const uint8_t *enc_mask, int batch,
                    int enc_len, int beams, int max_steps, int router_idx, lion_status *st);
void t5_decoder_free(t5_decoder *dec);

/* One position for every row: tokens [rows] are the current decoder inputs; logits
 * [rows, vocab] are the next-token logits. Appends to the cache. */
int t5_decoder_step(const t5_model *m, t5_decoder *dec, const int32_t *tokens, float *logits, arena *a,
                    lion_status *st);

/* Beam search: row r's cache becomes the former row src[r] (src[r] in the same batch
 * element's beams). Staging scratch from a. */
int t5_decoder_reorder(t5_decoder *dec, const int *src, arena *a, lion_status *st);

/* Drops the batch elements b whose keep[b] is 0 (with all their beams), in place: the kept
 * ones move down in their order (element k of the new batch is the k-th kept one), so that
 * later steps compute only them. Returns the new batch size (0 when nothing is kept). */
int t5_decoder_keep(t5_decoder *dec, const uint8_t *keep);

#endif
