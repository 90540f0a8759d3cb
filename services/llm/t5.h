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
 * and beam search reorders the cache rows.
 *
 * Precision (common/nn/precision.h). Every matrix is a `linear` (common/nn/linear.h) in the
 * precision the model is loaded with; the embeddings, norms, relative position biases, adapters
 * (bottleneck 64) and router ratios stay f32 in both. f32: every matrix f32, products on
 * OpenBLAS (and, in the decoder step, matvec_f32 for 2..T5_MATVEC_MAX_ROWS rows). bf16: every
 * matrix held in bf16 only (converted once at load, no f32 copy kept: a bf16 file is used in
 * place, the f32 pages of an f32 file are released after conversion, an f16 file's are never
 * widened to f32), in two kinds:
 *   - the matrices of the decoder step (self-attention q/k/v/o, cross-attention q/o, FF
 *     wi_0/wi_1/wo, an untied lm_head) are LINEAR_STEP: plain bf16 on every CPU, every step's
 *     product through matvec_bf16 with all rows of the step (all beams of all requests) in one
 *     pass over W, each row's result independent of the rows beside it;
 *   - the encoder's matrices and the cross-attention key/value projections (run once per
 *     request over all its encoder positions) are multiplied in the form linear.h picks for
 *     many rows: oneDNN's packed bf16 on CPUs with native bf16, else panels of W widened to f32
 *     and sgemm (about f32's speed, half its memory).
 * A tied lm_head is the f32 embedding table in both precisions.
 *
 * In both precisions, a tensor stored f16 or bf16 that is widened to an f32 copy has its mapped
 * file pages released after the copy: the worker then holds each weight once, not twice. */
#ifndef LION_T5_H
#define LION_T5_H

#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "linear.h"
#include "model_config.h"
#include "precision.h"
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
    const float *norm;
    linear q, k, v, o; /* [inner, d_model] but o [d_model, inner] */
} t5_attention;

typedef struct t5_ff {
    const float *norm;
    linear wi_0, wi_1, wo;
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
    const float *shared; /* [vocab, d_model] */
    linear lm_head;      /* [vocab, d_model], LINEAR_STEP; tied: an f32 view of shared */
    t5_stack encoder, decoder;
    lion_precision precision; /* of the encoder's matrices and the cross-attention k/v */
    int step_bf16;            /* the decoder step's matrices are bf16 (t5_load_with, t5_decoder_to_bf16) */
    size_t tensors_released;  /* file pages of f16/bf16 tensors other than the matrices, given back
                                 after weights_get widened them (the matrices count their own) */
    /* f32 decoder step: products of 2..T5_MATVEC_MAX_ROWS rows on matvec_f32 instead of
     * OpenBLAS (1 row stays on sgemv). Set by t5_load*; benchmarks may change it. */
    int step_matvec_f32;
} t5_model;

/* The bytes of the model's matrices in the forms they are held in (linear_bytes): for logs,
 * benchmarks and tests. */
typedef struct t5_weight_bytes {
    size_t encoder;  /* the encoder's matrices */
    size_t cross_kv; /* the cross-attention key/value projections */
    size_t step;     /* the decoder step's: self q/k/v/o, cross q/o, FF, an untied lm_head */
    size_t owned;    /* of those three, copies made at load (converted to bf16, or packed for
                        oneDNN); the others are views of the file or of the caller's arrays */
    size_t released; /* file pages given back after a conversion, every tensor's */
} t5_weight_bytes;
void t5_weight_bytes_of(const t5_model *m, t5_weight_bytes *out);

/* The most rows (beams x requests) a decoder-step product sends to matvec_f32. bf16
 * step matrices go to matvec_bf16 with any number of rows (there is no f32 copy). */
#define T5_MATVEC_MAX_ROWS 16

/* The T5 dimensions of model.json's llm section. */
void t5_config_from_llm(t5_config *out, const llm_config *l);

/* Binds every weight by its upstream name under w's prefix (normally "t5_model.":
 * shared.weight, encoder.block.N.layer.M..., lm_head.weight) and checks every shape. */
int t5_load(t5_model *m, const t5_config *cfg, weights *w, lion_status *st);
/* The same with a precision (PRECISION_F32 or PRECISION_BF16; AUTO is refused: resolve it
 * first). bf16 binds every matrix as bf16 without ever making f32 copies of them (see the top
 * of this file). */
int t5_load_with(t5_model *m, const t5_config *cfg, weights *w, lion_precision precision, lion_status *st);
/* For a model built in memory (benchmarks, tests), whose matrices are f32 linears over the
 * caller's arrays (linear_from_f32): replaces them by owned bf16 copies (the caller still owns,
 * and may free, the f32 arrays; t5_free frees the copies). t5_decoder_to_bf16 converts the
 * decoder step's matrices only (LINEAR_STEP); t5_to_bf16 every matrix, as t5_load_with holds
 * them in bf16. A tied lm_head stays f32. Matrices already bf16 are left as they are. */
int t5_decoder_to_bf16(t5_model *m, lion_status *st);
int t5_to_bf16(t5_model *m, lion_status *st);
/* Frees the layer tables and every linear's own copy (never the caller's f32 arrays). */
void t5_free(t5_model *m);

/* T5's bucket of relative_position = key_pos - query_pos (HF/Mesh-TF maths, including its
 * f32 logarithm so that boundary cases agree with the reference). */
int t5_relative_bucket(int relative_position, int bidirectional, int num_buckets, int max_distance);

/* Encoder. x: inputs_embeds [batch, len, d_model]; key_mask [batch, len] (nonzero = real
 * token; NULL = all real; every row needs at least one); router_idx 0 or 1.
 * out: [batch, len, d_model] after the final norm. Scratch from a. */
int t5_encode(const t5_model *m, const float *x, const uint8_t *key_mask, int batch, int len, int router_idx,
              float *out, arena *a, lion_status *st);

/* The decoder works on sequences (t5_seq): each has its own self-attention cache and its
 * own position, and reads the encoder output of its request (t5_cross). One step multiplies
 * the rows of every sequence given to it (all beams of all requests, whatever their
 * positions, encoder lengths and adapter routes) by each weight once; attention is per
 * sequence. This is what lets requests join and leave a running batch between steps
 * (decode_batch.h). */

/* One request's encoder side: the cross-attention keys/values of every decoder layer,
 * projected once from its encoder output, and its adapter route. */
typedef struct t5_cross {
    int layers, enc_len, inner, router_idx;
    uint8_t *mask; /* [enc_len], 1 = real token */
    float *k, *v;  /* [layers, enc_len, inner] */
} t5_cross;

/* enc [enc_len, d_model] (mask [enc_len] as for t5_encode, NULL = all real). */
int t5_cross_init(t5_cross *x, const t5_model *m, const float *enc, const uint8_t *mask, int enc_len, int router_idx,
                  lion_status *st);
void t5_cross_free(t5_cross *x);
/* The bytes t5_cross_init allocates for enc_len encoder positions. */
size_t t5_cross_bytes(const t5_model *m, int enc_len);

/* One decoder sequence: a greedy or sampled request's, or one beam. */
typedef struct t5_seq {
    const t5_cross *cross; /* not owned */
    int layers, inner;
    int len, capacity;     /* positions cached / that fit */
    float *k, *v;          /* [layers, capacity, inner] */
} t5_seq;

int t5_seq_init(t5_seq *s, const t5_model *m, const t5_cross *cross, int capacity, lion_status *st);
void t5_seq_free(t5_seq *s);
/* The bytes t5_seq_init allocates for capacity positions. */
size_t t5_seq_bytes(const t5_model *m, int capacity);

/* One position for n sequences: tokens [n] are their current inputs, logits [n, vocab] the
 * next-token logits; each sequence's cache grows by one. Sequences of the same cross next
 * to each other share its attention call. Scratch from a. */
int t5_step(const t5_model *m, t5_seq *const *seqs, int n, const int32_t *tokens, float *logits, arena *a,
            lion_status *st);

/* Beam search's reorder of the sequences seqs[0..n): afterwards seqs[r] holds what
 * seqs[src[r]] held. A sequence continued once is moved (a pointer swap, no copy); only
 * one continued by several rows is copied, into the cache of one continued by none.
 * Scratch (n pointers and flags) from a. */
int t5_seqs_reorder(t5_seq **seqs, int n, const int *src, arena *a, lion_status *st);

/* A fixed batch of requests with the same number of beams, stepping together: rows =
 * batch * beams sequences, row r belongs to batch element r / beams. For callers that run
 * one batch from start to end (tests, benchmarks). */
typedef struct t5_decoder {
    int batch, beams, rows;
    int len;          /* positions decoded */
    t5_cross *cross;  /* [batch] */
    t5_seq *store;    /* [rows]: the caches */
    t5_seq **seq;     /* [rows]: row r's sequence (reorders permute these) */
} t5_decoder;

/* Projects the cross-attention keys/values of enc [batch, enc_len, d_model] (enc_mask as
 * for t5_encode) and sizes every row's cache for max_steps decoder positions. */
int t5_decoder_init(t5_decoder *dec, const t5_model *m, const float *enc, const uint8_t *enc_mask, int batch,
                    int enc_len, int beams, int max_steps, int router_idx, lion_status *st);
void t5_decoder_free(t5_decoder *dec);

/* One position for every row (t5_step). */
int t5_decoder_step(const t5_model *m, t5_decoder *dec, const int32_t *tokens, float *logits, arena *a,
                    lion_status *st);

/* Beam search: row r becomes the former row src[r] (src[r] in the same batch element's
 * beams); t5_seqs_reorder. */
int t5_decoder_reorder(t5_decoder *dec, const int *src, arena *a, lion_status *st);

#endif
