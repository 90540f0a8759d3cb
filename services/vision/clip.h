/* clip.h - Pink's image encoder: the CLIP ViT vision tower (HF CLIPVisionModel, e.g.
 * openai/clip-vit-large-patch14) with Pink's bottleneck adapters, and Pink's mm_projector.
 * Forward only; the reference is tools/reference/pink_ref/clip.py.
 *
 * Patch embedding (conv k = s, no bias), the class embedding in front, position embeddings,
 * pre_layrnorm, then pre-norm layers:
 *     h = LN1 x;  h += up(down h)  (adapter_attn);  x += out_proj(attn(h))
 *     h = LN2 x;  h += up(down h)  (adapter_mlp);   x += fc2(act(fc1 h))
 * with biased q/k/v/out projections and act = quick_gelu (x sigmoid(1.702 x)). Pink's CLIP
 * adapters are always linear: upstream's visual_adapter forces non_linear off.
 *
 * Pink reads hidden_states[clip_select_layer] (-2: the output of the next-to-last layer), drops
 * the class token and projects each patch to the LLM width with mm_projector. So only the
 * layers up to the selected one run, and only they are bound: a file may omit the rest (Pink
 * deletes their adapters; their CLIP weights are never read). post_layernorm (pooled output
 * only) is not used.
 *
 * Precision (common/nn/precision.h): every matrix of the layers that run (q/k/v/out, fc1,
 * fc2, the adapters' down and up) and mm_projector is a linear.h Linear bound in the precision
 * given at load; in bf16 they are held in bf16 only. The patch embedding (a 4-D conv weight,
 * under 1% of the FLOPs), biases, LayerNorms, quick_gelu and attention stay f32. In f32 the
 * forward is the plain OpenBLAS one, bit for bit. */
#ifndef LION_CLIP_H
#define LION_CLIP_H

#include "arena.h"
#include "linear.h"
#include "precision.h"
#include "status.h"
#include "weights.h"

typedef struct clip_config {
    int image_size, patch_size, dim, layers, heads, mlp_hidden; /* layers: num_hidden_layers */
    float ln_eps;       /* layer_norm_eps, 1e-5 */
    int quick_gelu;     /* 1: hidden_act "quick_gelu" (OpenAI CLIP); 0: exact erf "gelu" */
    int select_layer;   /* clip_select_layer: an index of HF's hidden_states (0 = embeddings
                           after pre_layrnorm, k = output of layer k-1; negative from the end) */
    int adapter_dim;    /* adapter_vision_dim; 0 = no adapters (adapter_vision_enable false) */
    int adapter_attn, adapter_mlp;
    int proj_dim;       /* mm_projector's output (the LLM's hidden_size); 0 = no projector */
} clip_config;

/* Pink's AdapterLayer: tune_adapter_a (down) and tune_adapter_b (up), both with bias. NULL
 * down_b: no adapter here. */
typedef struct clip_adapter {
    linear down, up; /* [adapter_dim, dim], [dim, adapter_dim] */
    const float *down_b, *up_b;
} clip_adapter;

typedef struct clip_layer {
    const float *ln1_w, *ln1_b, *q_b, *k_b, *v_b, *o_b;
    const float *ln2_w, *ln2_b, *fc1_b, *fc2_b;
    linear q, k, v, o, fc1, fc2; /* [dim, dim] x 4, [mlp, dim], [dim, mlp] */
    clip_adapter adapter_attn, adapter_mlp;
} clip_layer;

typedef struct clip_model {
    clip_config cfg;
    int tokens;  /* 1 + (image_size / patch_size)^2 */
    int patches; /* tokens - 1: the rows Pink keeps */
    int run;     /* layers the selected hidden state needs */
    const float *class_emb, *patch_w, *pos_emb, *pre_ln_w, *pre_ln_b;
    linear proj;          /* mm_projector [proj_dim, dim] */
    const float *proj_b;  /* its bias; NULL when proj_dim is 0 (no projector) */
    clip_layer *layer;    /* run of them */
} clip_model;

/* The encoder layers hidden_states[select_layer] needs (HF tuple indexing over layers + 1
 * states), or -1 when select_layer is out of range. */
int clip_layers_run(int layers, int select_layer);

/* Binds the weights by Pink's names under w's prefix (normally none):
 * vision_model.vision_model.{embeddings,pre_layrnorm,encoder.layers.N}.*,
 * ...layers.N.adapter_{attn,mlp}.tune_adapter_{a,b}.*, mm_projector.*; checks every shape.
 * The matrices in f32. */
int clip_load(clip_model *m, const clip_config *cfg, weights *w, lion_status *st);
/* The same in a precision (PRECISION_F32 or PRECISION_BF16; resolve auto first). */
int clip_load_with(clip_model *m, const clip_config *cfg, weights *w, lion_precision precision, lion_status *st);
/* Frees what the model owns (bf16 matrices, layers; not w). */
void clip_free(clip_model *m);

/* The bytes the matrices take in their form (linear_bytes summed, mm_projector included). */
size_t clip_matrix_bytes(const clip_model *m);

/* pixels [batch, 3, image_size, image_size], normalised. features (may be NULL) gets the
 * selected hidden state without the class token, [batch, patches, dim]; tokens (may be NULL;
 * needs a projector) gets mm_projector of it, [batch, patches, proj_dim]. Scratch from a. */
int clip_forward(const clip_model *m, const float *pixels, int batch, float *features, float *tokens, arena *a,
                 lion_status *st);

#endif
