/* pink_clip_config.h - model.json's pink.vision section as clip.h's clip_config, for the vision
 * stage loading a Pink model directory. Header-only: a field-for-field copy of what
 * model_config_load already checked. */
#ifndef LION_PINK_CLIP_CONFIG_H
#define LION_PINK_CLIP_CONFIG_H

#include <string.h>

#include "clip.h"
#include "model_config.h"

static inline void pink_clip_config(const pink_vision_config *v, clip_config *out) {
    memset(out, 0, sizeof *out);
    out->image_size = v->image_size;
    out->patch_size = v->patch_size;
    out->dim = v->dim;
    out->layers = v->layers;
    out->heads = v->heads;
    out->mlp_hidden = v->mlp_hidden;
    out->ln_eps = v->ln_eps;
    out->quick_gelu = v->quick_gelu;
    out->select_layer = v->select_layer;
    out->adapter_dim = v->adapter_dim;
    out->adapter_attn = v->adapter_dim ? v->adapter_attn : 0;
    out->adapter_mlp = v->adapter_dim ? v->adapter_mlp : 0;
    out->proj_dim = v->proj_dim;
}

#endif
