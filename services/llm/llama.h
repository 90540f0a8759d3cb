/* llama.h - the LLaMA decoder (HF LlamaForCausalLM, Llama-2) with Pink's bottleneck adapters,
 * forward only, on a KV cache. The reference is tools/reference/pink_ref/llama.py.
 *
 * Each layer, for the rows of the new positions:
 *     h = RMSNorm(x);  h += up(act(down h))  (adapter_attn; act SiLU with adapter_non_linear)
 *     x += o_proj(attention(rotary(q_proj h), rotary(k_proj h), v_proj h))
 *     h = RMSNorm(x);  h += up(down h)       (adapter_mlp; always linear, as upstream)
 *     x += down_proj(silu(gate_proj h) * up_proj h)
 * then a final RMSNorm and the untied lm_head. No biases outside the adapters; rotary positions
 * as HF's LlamaRotaryEmbedding (halves, not interleaved); grouped-query attention when kv_heads
 * < heads (key/value head j serves query heads j*heads/kv_heads ..); causal.
 *
 * One entry point does prefill and decode: llama_forward appends any number of positions to
 * each of several sequences at once. Their rows go through every weight together (one product
 * per weight per call, as t5.c's decoder step does for its beams), each sequence attends only
 * to its own cache. A prompt is a call with its n rows (chunks work too: a later call continues
 * at the cached length); a decode step is a call with one row per sequence (llama_step). Only
 * the last new position of each sequence goes through lm_head: the logits that pick its next
 * token.
 *
 * Precision (common/nn/precision.h): every matrix (q/k/v/o, gate/up/down, lm_head) is a
 * `linear` (common/nn/linear.h) in the precision the model is loaded with; the embedding, the
 * norms and the adapters stay f32 in both.
 *   f32   products on OpenBLAS, those of 2..LLAMA_MATVEC_MAX_ROWS rows on matvec_f32, which
 *         reads W once for all rows.
 *   bf16  every matrix held in bf16 only (converted once at load, the f32 file pages released;
 *         a bf16 file used in place). Unlike T5, whose encoder and decoder have weights of their
 *         own, prefill and decode read the same matrices, and a matrix is held in one form
 *         only: all are LINEAR_STEP, plain bf16 on every CPU (never oneDNN's packed form). The
 *         decode step is the bandwidth-bound hot path, and there a row's result must not depend
 *         on the rows beside it: a step's products (llama_step, or any llama_forward appending
 *         one position per sequence) go through matvec_bf16 with all rows at once. A prefill's
 *         products of more than LLAMA_MATVEC_MAX_ROWS rows go through panels of W widened to
 *         f32 and sgemm (linear.h's many-row bf16 path, on every CPU): about f32's speed, half
 *         its memory. */
#ifndef LION_LLAMA_H
#define LION_LLAMA_H

#include <stdint.h>

#include "arena.h"
#include "linear.h"
#include "precision.h"
#include "status.h"
#include "weights.h"

typedef struct llama_config {
    int dim;        /* hidden_size */
    int hidden;     /* intermediate_size */
    int layers;     /* num_hidden_layers */
    int heads;      /* num_attention_heads */
    int kv_heads;   /* num_key_value_heads (== heads without GQA) */
    int vocab_size;
    float rms_eps;  /* rms_norm_eps */
    float rope_theta;
    int adapter_dim;   /* adapter_llm_dim; 0 = no adapters (adapter_llm_enable false) */
    int adapter_attn, adapter_mlp;
    int adapter_silu;  /* adapter_non_linear: SiLU in the attention adapters only */
} llama_config;

/* Pink's AdapterLayer (tune_adapter_a = down, tune_adapter_b = up, both with bias); NULL down_w:
 * none. */
typedef struct llama_adapter {
    const float *down_w, *down_b, *up_w, *up_b;
} llama_adapter;

typedef struct llama_layer {
    const float *attn_norm, *ffn_norm;
    linear wq, wk, wv, wo;      /* [q_dim, dim], [kv_dim, dim] x 2, [dim, q_dim] */
    linear w_gate, w_up, w_down; /* [hidden, dim] x 2, [dim, hidden] */
    llama_adapter adapter_attn, adapter_mlp;
} llama_layer;

typedef struct llama_model {
    llama_config cfg;
    int head_dim, q_dim, kv_dim; /* dim/heads, heads*head_dim, kv_heads*head_dim */
    const float *embed;          /* [vocab, dim] */
    const float *norm;           /* [dim] */
    linear lm_head;              /* [vocab, dim] */
    llama_layer *layer;
    lion_precision precision;    /* of every matrix */
} llama_model;

/* Products of 2..this many rows go to matvec_f32 (one pass over W for all rows); 1 row stays on
 * sgemv, more on sgemm. */
#define LLAMA_MATVEC_MAX_ROWS 16

/* Binds the weights by their HF names under w's prefix (normally none): model.embed_tokens.weight,
 * model.layers.N.{input_layernorm,self_attn.{q,k,v,o}_proj,post_attention_layernorm,
 * mlp.{gate,up,down}_proj}.weight, model.layers.N.adapter_{attn,mlp}.tune_adapter_{a,b}.*,
 * model.norm.weight, lm_head.weight; checks every shape. In f32. */
int llama_load(llama_model *m, const llama_config *cfg, weights *w, lion_status *st);
/* The same in a precision (PRECISION_F32 or PRECISION_BF16; AUTO is refused: resolve it first). */
int llama_load_with(llama_model *m, const llama_config *cfg, weights *w, lion_precision precision, lion_status *st);
/* For a model built in memory (benchmarks, tests) whose matrices are f32 linears over the
 * caller's arrays (linear_from_f32): replaces every one by an owned bf16 copy, as
 * llama_load_with holds them (the caller still owns, and may free, the f32 arrays). */
int llama_to_bf16(llama_model *m, lion_status *st);
/* The bytes of every matrix in its form (linear_bytes), and of the file pages released after
 * conversions (either may be NULL). */
size_t llama_matrix_bytes(const llama_model *m, size_t *released);
/* Frees the layer table and every linear's own copy (never the caller's f32 arrays). */
void llama_free(llama_model *m);

/* The KV cache of `slots` sequences of up to `capacity` positions each. Keys are stored after
 * the rotary turn. A slot holds one sequence: llama_cache_reset empties it for the next. */
typedef struct llama_cache {
    int layers, slots, capacity, kv_dim;
    int *len;   /* positions held, per slot */
    float *k, *v; /* [layers][slots][capacity][kv_dim] */
} llama_cache;

int llama_cache_init(llama_cache *c, const llama_model *m, int slots, int capacity, lion_status *st);
void llama_cache_free(llama_cache *c);
void llama_cache_reset(llama_cache *c, int slot);
/* Slot dst becomes a copy of slot src (a beam that forks). */
int llama_cache_copy(llama_cache *c, int dst, int src, lion_status *st);

/* Embedding rows of token ids: out [n, dim]. Fails on an id outside the vocabulary. */
int llama_embed(const llama_model *m, const int32_t *ids, int n, float *out, lion_status *st);

/* Appends n[i] positions to the sequence in slot slots[i], for i < seqs (distinct slots). x holds
 * their input embeddings, sequence after sequence: sum(n) rows of dim. logits [seqs, vocab] gets,
 * per sequence, the next-token logits after its last new position. Scratch from a. */
int llama_forward(const llama_model *m, llama_cache *c, int seqs, const int *slots, const int *n, const float *x,
                  float *logits, arena *a, lion_status *st);

/* A decode step: one token for each of seqs sequences (embedded, then llama_forward with n = 1). */
int llama_step(const llama_model *m, llama_cache *c, int seqs, const int *slots, const int32_t *tokens, float *logits,
               arena *a, lion_status *st);

#endif
