/* vit.h - EVA ViT (LION's vision tower), forward only.
 *
 * Patch embedding (conv k = s), CLS token, absolute position embedding, `depth` pre-norm
 * blocks: x += proj(attn(LN1 x)) with a bias-less qkv plus q_bias/v_bias (k bias zero),
 * x += fc2(gelu(fc1(LN2 x))). No final norm. The stage returns the outputs of chosen
 * blocks (18, 28, 38 for LION-XL), which the aggregator consumes. */
#ifndef LION_VIT_H
#define LION_VIT_H

#include "arena.h"
#include "model_config.h"
#include "status.h"
#include "weights.h"

typedef struct vit_config {
    int image_size, patch_size, dim, depth, heads, mlp_hidden;
    float ln_eps;
} vit_config;

typedef struct vit_block {
    const float *norm1_w, *norm1_b, *qkv_w, *proj_w, *proj_b, *norm2_w, *norm2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
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

/* Binds the weights (upstream EVA key names under w's prefix) and checks every shape. */
int vit_load(vit_model *m, const vit_config *cfg, weights *w, lion_status *st);
void vit_free(vit_model *m);

/* pixels: [batch, 3, image_size, image_size], normalised. For each k < n_out, the output of
 * block layers[k] (0-based) is written to outs[k] as [batch, tokens, dim]. Only the blocks
 * up to the largest requested one run. Scratch comes from a; nothing else is allocated. */
int vit_forward(const vit_model *m, const float *pixels, int batch, const int *layers, int n_out, float **outs,
                arena *a, lion_status *st);

#endif
