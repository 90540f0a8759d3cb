/* ops.h - the numeric building blocks of every model here, on contiguous f32 rows.
 *
 * Shapes are passed explicitly (llama2.c style): a "row" is one token's vector.
 * Weights are laid out as the checkpoints hold them: Linear W is [out, in]. Matrix
 * products go to OpenBLAS; the per-element loops run on OpenMP threads (threads.h). */
#ifndef LION_OPS_H
#define LION_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "model_config.h" /* enum activation */

/* y[n, out] = x[n, in] W[out, in]^T + b[out]   (b may be NULL). y must not alias x. */
void linear_forward(float *y, const float *x, const float *w, const float *b, int n, int in, int out);

/* y = LayerNorm(x) over rows of d, with weight w and bias b (either may be NULL). y may be x. */
void layernorm_forward(float *y, const float *x, const float *w, const float *b, int n, int d, float eps);

/* T5's RMSNorm: y = x / sqrt(mean(x^2) + eps) * w  (no mean subtraction, no bias). y may be x. */
void rmsnorm_forward(float *y, const float *x, const float *w, int n, int d, float eps);

/* In place. GELU is the exact erf form (torch's default, nn.GELU()); gelu_tanh_forward is
 * the tanh approximation (HF's "gelu_new"). */
void gelu_forward(float *x, size_t n);
void gelu_tanh_forward(float *x, size_t n);
void relu_forward(float *x, size_t n);
/* In place: x * sigmoid(x) (SiLU: LLaMA's gated MLP, Pink's non-linear adapters), computed
 * as torch does, x / (1 + exp(-x)). */
void silu_forward(float *x, size_t n);
/* In place: x * sigmoid(1.702 x), OpenAI CLIP's "quick_gelu". */
void quick_gelu_forward(float *x, size_t n);
/* In place: one of the above, as model.json names it. */
void activation_forward(float *x, size_t n, activation act);
float sigmoidf_stable(float x);

/* y[i] += x[i] */
void add_forward(float *y, const float *x, size_t n);
/* y[i] = a[i] * b[i] */
void mul_forward(float *y, const float *a, const float *b, size_t n);

/* In place, row-wise, max-subtracted. A row whose entries are all -inf becomes all zeros
 * (a fully masked query attends to nothing rather than producing NaN). */
void softmax_forward(float *x, int rows, int cols);

/* Rows of an embedding table: y[i] = table[ids[i]]; ids must be in [0, vocab). */
void embedding_forward(float *y, const float *table, const int32_t *ids, int n, int d);

/* Rotary position embedding in place, as HF's LlamaRotaryEmbedding with rotate_half: row r
 * (x + r*stride) holds heads vectors of head_dim (even); in each, element i < head_dim/2 pairs
 * with i + head_dim/2 (halves, not interleaved pairs) and the pair turns by the angle
 * pos[r] * theta^(-2i/head_dim), computed in f32 as the reference does. */
void rope_forward(float *x, int rows, int stride, int heads, int head_dim, const int *pos, float theta);

/* A residual bottleneck adapter in place on rows of d (Pink's AdapterLayer):
 *     x += up_w (act(down_w x + down_b)) + up_b,   act = SiLU when silu, else identity.
 * down_w [bottleneck, d], up_w [d, bottleneck]. Returns 0, or -1 when scratch cannot grow. */
int adapter_forward(float *x, int rows, int d, int bottleneck, const float *down_w, const float *down_b,
                    const float *up_w, const float *up_b, int silu, arena *scratch);

/* Multi-head scaled dot-product attention over packed rows.
 * Row t of batch b of q is q + (b*q_len + t)*q_stride; head h occupies columns
 * [h*head_dim, (h+1)*head_dim). Likewise for k, v (k_len rows per batch) and out.
 * The strides let q, k, v be column slices of one fused qkv buffer. */
typedef struct attention_args {
    int batch, heads, head_dim, q_len, k_len;
    const float *q, *k, *v;
    float *out;
    int q_stride, k_stride, v_stride, out_stride;
    float scale;               /* 1/sqrt(head_dim); T5 uses 1 */
    const uint8_t *key_mask;   /* [batch, k_len], nonzero = may attend; NULL = all */
    int causal;                /* query i sees keys j <= i + (k_len - q_len) */
    const float *bias;         /* additive [heads, q_len, k_len] per batch (T5 positions, Swin table) */
    int64_t bias_batch_stride; /* floats between batches of bias; 0 = shared by all batches */
    const float *window_mask;  /* additive [window_count, q_len, k_len]: batch b uses b % window_count (Swin shifts) */
    int window_count;
} attention_args;

/* Returns 0, or -1 when the scratch arena cannot grow (out of memory). */
int attention_forward(const attention_args *a, arena *scratch);

/* One query's attention, by plain loops: q and out [heads * head_dim]; k_len keys and values
 * k, v (rows of `stride` floats, head h at h * head_dim); bias (NULL: none) additive, head h
 * at bias + h * bias_head_stride; key_mask [k_len] (NULL: all); scores: k_len floats of
 * scratch. For decoder steps, where a GEMM per head of one query costs more to call than
 * its work; and a row's result never depends on the rows beside it. */
void attention_query(float *out, const float *q, const float *k, const float *v, int k_len, int stride, int heads,
                     int head_dim, float scale, const float *bias, size_t bias_head_stride, const uint8_t *key_mask,
                     float *scores);

/* Convolution with kernel == stride (ViT/Swin patch embedding) as im2col + one GEMM.
 * img [channels, height, width] CHW; w [dim, channels, patch, patch]; b [dim];
 * out [(height/patch)*(width/patch), dim], patches in row-major order. 0, or -1 out of memory. */
int patch_embed_forward(float *out, const float *img, const float *w, const float *b, int channels,
                         int height, int width, int patch, int dim, arena *scratch);

#endif
