/* vit.h - EVA ViT (LION's vision tower), forward only.
 *
 * Patch embedding (conv k = s), CLS token, absolute position embedding, `depth` pre-norm
 * blocks: x += proj(attn(LN1 x)) with a bias-less qkv plus q_bias/v_bias (k bias zero),
 * x += fc2(gelu(fc1(LN2 x))). No final norm. The stage returns the outputs of chosen
 * blocks (18, 28, 38 for LION-XL), which the aggregator consumes.
 *
 * Precision (common/nn/precision.h): the blocks' matrices (qkv, proj, fc1, fc2) are linear.h
 * Linears bound in the precision given at load; in bf16 they are held in bf16 only. The patch
 * embedding (a 4-D conv weight, under 1% of the FLOPs), biases, LayerNorms and attention stay
 * f32. In f32 the forward is the plain OpenBLAS one, bit for bit. */
#ifndef LION_VIT_H
#define LION_VIT_H

#include "arena.h"
#include "linear.h"
#include "model_config.h"
#include "precision.h"
#include "status.h"
#include "weights.h"

typedef struct vit_config {
    int image_size, patch_size, dim, depth, heads, mlp_hidden;
    float ln_eps;
} vit_config;

typedef struct vit_block {
    const float *norm1_w, *norm1_b, *proj_b, *norm2_w, *norm2_b, *fc1_b, *fc2_b;
    linear qkv, proj, fc1, fc2; /* [3 dim, dim], [dim, dim], [mlp, dim], [dim, mlp] */
    float *qkv_b; /* [q_bias, 0, v_bias]: owned, so the fused qkv Linear takes one bias */
} vit_block;

typedef struct vit_model {
    vit_config cfg;
    int tokens; /* 1 + (image_size/patch_size)^2 */
    const float *patch_w, *patch_b, *cls_token, *pos_embed;
    vit_block *blocks;
} vit_model;

/* The vision section of model.json as a vit_config. */
void vit_config_from_model(vit_config *out, const vision_config *v);

/* Binds the weights (upstream EVA key names under w's prefix) and checks every shape, the
 * matrices in f32. */
int vit_load(vit_model *m, const vit_config *cfg, weights *w, lion_status *st);
/* The same in a precision (PRECISION_F32 or PRECISION_BF16; resolve auto first). */
int vit_load_with(vit_model *m, const vit_config *cfg, weights *w, lion_precision precision, lion_status *st);
/* Frees what the model owns (bf16 matrices, qkv biases, blocks; not w). */
void vit_free(vit_model *m);

/* The bytes the blocks' matrices take in their form (linear_bytes summed). */
size_t vit_matrix_bytes(const vit_model *m);

/* pixels: [batch, 3, image_size, image_size], normalised. For each k < n_out, the output of
 * block layers[k] (0-based) is written to outs[k] as [batch, tokens, dim]. Only the blocks
 * up to the largest requested one run. Scratch comes from a; nothing else is allocated. */
int vit_forward(const vit_model *m, const float *pixels, int batch, const int *layers, int n_out, float **outs,
                arena *a, lion_status *st);

#endif
