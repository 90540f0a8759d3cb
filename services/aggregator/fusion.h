/* fusion.h - LION's vision aggregator: the "AGGREGATOR" branch of the aggregator stage.
 *
 * FusionAdapter: `blocks` HF BertLayers on the hidden ViT layer, block i cross-attending to
 * ViT layer cross_layers[i] (28 then 18 for LION-XL): self-attention, cross-attention, FFN
 * (exact GELU), all post-norm. Then ln_adapter and adapter_proj = Linear(width, proj_hidden)
 * -> GELU -> Linear(proj_hidden, d_model): one visual token of d_model per ViT token.
 *
 * Keys: fusion_adapter.blocks.N.{attention,crossattention,intermediate,output}.*,
 * ln_adapter.*, adapter_proj.0.*, adapter_proj.2.*.
 *
 * Precision: the blocks' matrices and adapter_proj's two are linears (linear.h) in the
 * precision fusion_load is given; biases and LayerNorms stay f32. */
#ifndef LION_FUSION_H
#define LION_FUSION_H

#include "arena.h"
#include "bert_layer.h"
#include "linear.h"
#include "model_config.h"
#include "precision.h"
#include "status.h"
#include "weights.h"

typedef struct fusion_block {
    bert_attention self_attn, cross_attn;
    bert_ffn ffn;
} fusion_block;

typedef struct fusion_model {
    fusion_config cfg;
    int width, proj_hidden, d_model;
    fusion_block *blocks;
    const float *ln_w, *ln_b;         /* ln_adapter: [width] */
    linear proj1, proj2;              /* adapter_proj.0 [proj_hidden, width], .2 [d_model, proj_hidden] */
    const float *proj1_b, *proj2_b;
} fusion_model;

/* Binds every weight from w (opened without a prefix) and checks its shape; the matrices in
 * precision p (f32 or bf16). On failure m holds nothing to free. */
int fusion_load(fusion_model *m, const fusion_config *cfg, int width, int proj_hidden, int d_model, weights *w,
                lion_precision p, lion_status *st);
void fusion_free(fusion_model *m);
/* The bytes its matrices take in their form (linear_bytes). */
size_t fusion_matrix_bytes(const fusion_model *m);

/* hidden: [batch, tokens, width] (ViT layer cfg.hidden_layer); cross[i]: [batch, tokens,
 * width] (ViT layer cfg.cross_layers[i]), one per block. out: [batch, tokens, d_model].
 * -1 when scratch memory runs out or a bf16 product fails. */
int fusion_forward(const fusion_model *m, const float *hidden, const float *const *cross, int batch, int tokens,
                   float *out, arena *scratch, lion_status *st);

#endif
