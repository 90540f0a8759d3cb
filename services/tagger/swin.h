/* swin.h - the Swin Transformer as RAM uses it (ape off, patch norm on), forward only.
 *
 * Patch embedding (conv k = s = patch) + LayerNorm; stages of pre-norm blocks with window
 * attention (qkv with bias, relative position bias table), every odd block shifted by half a
 * window with Swin's region mask; patch merging (2x2 concat, LayerNorm, Linear without bias)
 * after every stage but the last; final LayerNorm. The output is what RAM's visual encoder
 * returns: the average of the final tokens in front of them, [1 + L, C] per image.
 *
 * When a stage's grid is not larger than the window, the window shrinks to the grid and the
 * shift is dropped (upstream does the same, and RAM's checkpoints are sized for it: at 384
 * the last stage is one unshifted 12x12 window).
 *
 * Precision: the Linear matrices (qkv, proj, fc1, fc2, the merges' reductions) are linears
 * (linear.h) in the precision swin_load is given; the patch embedding (a [C, 3, p, p] conv,
 * 48 inputs wide, a sliver of the work), biases, LayerNorms, the position bias tables and the
 * attention itself stay f32. */
#ifndef LION_SWIN_H
#define LION_SWIN_H

#include "arena.h"
#include "linear.h"
#include "precision.h"
#include "status.h"
#include "weights.h"

#define SWIN_MAX_STAGES 8

typedef struct swin_config {
    int image_size, patch_size, embed_dim;
    int n_stages;
    int depths[SWIN_MAX_STAGES], heads[SWIN_MAX_STAGES];
    int window;
    float mlp_ratio, ln_eps;
} swin_config;

typedef struct swin_block {
    linear qkv, proj, fc1, fc2;
    const float *norm1_w, *norm1_b, *qkv_b, *proj_b;
    const float *norm2_w, *norm2_b, *fc1_b, *fc2_b;
    int shift;            /* 0 or window/2 */
    float *position_bias; /* owned [heads, N, N]: the table gathered by the relative index */
} swin_block;

typedef struct swin_stage {
    int dim, heads, depth, grid, window, windows, mlp_hidden;
    swin_block *blocks;
    /* Window order of the grid, per image: row t of the windowed sequence (window-major,
     * row-major inside a window) is grid cell order[t]. One for unshifted blocks and one
     * for shifted blocks (the cyclic roll folded in); the roll back is the same map. */
    int *order_plain, *order_shifted;
    float *shift_mask; /* owned [windows, N, N] additive 0 / -100, NULL when no block shifts */
    int has_merge; /* 0 on the last stage */
    const float *merge_norm_w, *merge_norm_b;
    linear merge; /* downsample.reduction [2 dim, 4 dim], no bias */
} swin_stage;

typedef struct swin_model {
    swin_config cfg;
    int tokens, width; /* of the output: 1 + final grid^2, final channels */
    const float *patch_w, *patch_b, *patch_norm_w, *patch_norm_b, *norm_w, *norm_b;
    swin_stage *stages;
} swin_model;

/* Binds the weights named prefix + upstream key ("visual_encoder." + "layers.0.blocks.1.attn.qkv.weight"),
 * checks every shape, and precomputes the position biases and the shift masks. The matrices
 * in precision p (f32 or bf16). */
int swin_load(swin_model *m, const swin_config *cfg, weights *w, const char *prefix, lion_precision p,
              lion_status *st);
void swin_free(swin_model *m);
/* The bytes the linears take in their form (linear_bytes), and one of them (the first qkv) to
 * name the form in logs. */
size_t swin_matrix_bytes(const swin_model *m);
const linear *swin_first_matrix(const swin_model *m);

/* pixels: [batch, 3, image_size, image_size], normalised. out: [batch, tokens, width].
 * Scratch comes from a; nothing else is allocated. -1 when scratch runs out or a bf16 product
 * fails. */
int swin_forward(const swin_model *m, const float *pixels, int batch, float *out, arena *a, lion_status *st);

#endif
