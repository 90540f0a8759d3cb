#include "clip.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

#define TOWER "vision_model.vision_model."

int clip_layers_run(int layers, int select_layer) {
    if (select_layer > layers || select_layer < -(layers + 1)) return -1;
    return select_layer >= 0 ? select_layer : layers + 1 + select_layer;
}

/* An AdapterLayer of layer i: "adapter_attn" or "adapter_mlp". */
static int load_adapter(clip_adapter *ad, weights *w, lion_status *st, int i, const char *which, int64_t d,
                        int64_t bn) {
    int64_t s_down[] = {bn, d}, s_bn[] = {bn}, s_up[] = {d, bn}, s_d[] = {d};
    if (!(ad->down_w = weights_get(w, st, 2, s_down, TOWER "encoder.layers.%d.%s.tune_adapter_a.weight", i, which)) ||
        !(ad->down_b = weights_get(w, st, 1, s_bn, TOWER "encoder.layers.%d.%s.tune_adapter_a.bias", i, which)) ||
        !(ad->up_w = weights_get(w, st, 2, s_up, TOWER "encoder.layers.%d.%s.tune_adapter_b.weight", i, which)) ||
        !(ad->up_b = weights_get(w, st, 1, s_d, TOWER "encoder.layers.%d.%s.tune_adapter_b.bias", i, which)))
        return -1;
    return 0;
}

static int load_layer(clip_layer *l, const clip_config *c, weights *w, lion_status *st, int i) {
    const int64_t d = c->dim, f = c->mlp_hidden;
    int64_t s_d[] = {d}, s_dd[] = {d, d}, s_fc1[] = {f, d}, s_f[] = {f}, s_fc2[] = {d, f};
#define GET(field, nd, shape, name) \
    if (!(l->field = weights_get(w, st, nd, shape, TOWER "encoder.layers.%d." name, i))) return -1
    GET(ln1_w, 1, s_d, "layer_norm1.weight");
    GET(ln1_b, 1, s_d, "layer_norm1.bias");
    GET(q_w, 2, s_dd, "self_attn.q_proj.weight");
    GET(q_b, 1, s_d, "self_attn.q_proj.bias");
    GET(k_w, 2, s_dd, "self_attn.k_proj.weight");
    GET(k_b, 1, s_d, "self_attn.k_proj.bias");
    GET(v_w, 2, s_dd, "self_attn.v_proj.weight");
    GET(v_b, 1, s_d, "self_attn.v_proj.bias");
    GET(o_w, 2, s_dd, "self_attn.out_proj.weight");
    GET(o_b, 1, s_d, "self_attn.out_proj.bias");
    GET(ln2_w, 1, s_d, "layer_norm2.weight");
    GET(ln2_b, 1, s_d, "layer_norm2.bias");
    GET(fc1_w, 2, s_fc1, "mlp.fc1.weight");
    GET(fc1_b, 1, s_f, "mlp.fc1.bias");
    GET(fc2_w, 2, s_fc2, "mlp.fc2.weight");
    GET(fc2_b, 1, s_d, "mlp.fc2.bias");
#undef GET
    /* upstream keeps the adapters of every layer up to the selected one: all layers that run */
    if (c->adapter_dim > 0) {
        if (c->adapter_attn && load_adapter(&l->adapter_attn, w, st, i, "adapter_attn", d, c->adapter_dim)) return -1;
        if (c->adapter_mlp && load_adapter(&l->adapter_mlp, w, st, i, "adapter_mlp", d, c->adapter_dim)) return -1;
    }
    return 0;
}

int clip_load(clip_model *m, const clip_config *c, weights *w, lion_status *st) {
    memset(m, 0, sizeof *m);
    if (c->patch_size <= 0 || c->image_size <= 0 || c->image_size % c->patch_size || c->heads <= 0 || c->dim <= 0 ||
        c->dim % c->heads || c->mlp_hidden <= 0 || c->layers < 0 || c->adapter_dim < 0 || c->proj_dim < 0)
        return lion_fail(st, LION_EINVAL,
                         "clip: image_size %d / patch_size %d / dim %d / heads %d / mlp %d / layers %d do not fit",
                         c->image_size, c->patch_size, c->dim, c->heads, c->mlp_hidden, c->layers);
    const int run = clip_layers_run(c->layers, c->select_layer);
    if (run < 0)
        return lion_fail(st, LION_EINVAL, "clip: select_layer %d is outside the %d hidden states of %d layers",
                         c->select_layer, c->layers + 1, c->layers);
    m->cfg = *c;
    m->run = run;
    const int64_t d = c->dim, g = c->image_size / c->patch_size, p = c->patch_size;
    m->tokens = (int)(1 + g * g);
    m->patches = m->tokens - 1;
    int64_t s_d[] = {d}, s_patch[] = {d, 3, p, p}, s_pos[] = {m->tokens, d};
    if (!(m->class_emb = weights_get(w, st, 1, s_d, TOWER "embeddings.class_embedding")) ||
        !(m->patch_w = weights_get(w, st, 4, s_patch, TOWER "embeddings.patch_embedding.weight")) ||
        !(m->pos_emb = weights_get(w, st, 2, s_pos, TOWER "embeddings.position_embedding.weight")) ||
        !(m->pre_ln_w = weights_get(w, st, 1, s_d, TOWER "pre_layrnorm.weight")) ||
        !(m->pre_ln_b = weights_get(w, st, 1, s_d, TOWER "pre_layrnorm.bias")))
        return -1;
    if (c->proj_dim > 0) {
        int64_t s_proj[] = {c->proj_dim, d}, s_pb[] = {c->proj_dim};
        if (!(m->proj_w = weights_get(w, st, 2, s_proj, "mm_projector.weight")) ||
            !(m->proj_b = weights_get(w, st, 1, s_pb, "mm_projector.bias")))
            return -1;
    }
    m->layer = calloc(run > 0 ? (size_t)run : 1, sizeof *m->layer);
    if (!m->layer) return lion_fail(st, LION_ENOMEM, "clip: out of memory");
    for (int i = 0; i < run; i++)
        if (load_layer(&m->layer[i], c, w, st, i)) {
            clip_free(m);
            return -1;
        }
    return 0;
}

void clip_free(clip_model *m) {
    free(m->layer);
    memset(m, 0, sizeof *m);
}

int clip_forward(const clip_model *m, const float *pixels, int batch, float *features, float *tokens, arena *a,
                 lion_status *st) {
    const clip_config *c = &m->cfg;
    if (batch <= 0) return lion_fail(st, LION_EINVAL, "clip: batch %d must be positive", batch);
    if (tokens && !m->proj_w) return lion_fail(st, LION_EINVAL, "clip: tokens asked of a model without mm_projector");
    const int d = c->dim, n = m->tokens, rows = batch * n, hd = d / c->heads, f = c->mlp_hidden;
    const size_t nd = (size_t)rows * d;
    arena_mark mark = arena_save(a);
    float *x = arena_floats(a, nd), *h = arena_floats(a, nd), *q = arena_floats(a, nd), *k = arena_floats(a, nd);
    float *v = arena_floats(a, nd), *ff = arena_floats(a, (size_t)rows * f);
    if (!x || !h || !q || !k || !v || !ff) goto oom;

    /* embeddings: [class, patches] + positions, then pre_layrnorm (hidden_states[0]) */
    const size_t img = (size_t)3 * c->image_size * c->image_size;
    for (int b = 0; b < batch; b++) {
        float *xb = x + (size_t)b * n * d;
        memcpy(xb, m->class_emb, (size_t)d * sizeof(float));
        if (patch_embed_forward(xb + d, pixels + b * img, m->patch_w, NULL, 3, c->image_size, c->image_size,
                                c->patch_size, d, a))
            goto oom;
        add_forward(xb, m->pos_emb, (size_t)n * d);
    }
    layernorm_forward(x, x, m->pre_ln_w, m->pre_ln_b, rows, d, c->ln_eps);

    for (int i = 0; i < m->run; i++) {
        const clip_layer *l = &m->layer[i];
        layernorm_forward(h, x, l->ln1_w, l->ln1_b, rows, d, c->ln_eps);
        const clip_adapter *ad = &l->adapter_attn;
        if (ad->down_w && adapter_forward(h, rows, d, c->adapter_dim, ad->down_w, ad->down_b, ad->up_w, ad->up_b, 0, a))
            goto oom;
        linear_forward(q, h, l->q_w, l->q_b, rows, d, d);
        linear_forward(k, h, l->k_w, l->k_b, rows, d, d);
        linear_forward(v, h, l->v_w, l->v_b, rows, d, d);
        /* HF scales q (bias included) by head_dim^-0.5; scaling the scores is the same product */
        attention_args at = {.batch = batch, .heads = c->heads, .head_dim = hd, .q_len = n, .k_len = n,
                             .q = q, .k = k, .v = v, .out = h, .q_stride = d, .k_stride = d, .v_stride = d,
                             .out_stride = d, .scale = 1.0f / sqrtf((float)hd)};
        if (attention_forward(&at, a)) goto oom;
        linear_forward(q, h, l->o_w, l->o_b, rows, d, d); /* q reused as scratch */
        add_forward(x, q, nd);

        layernorm_forward(h, x, l->ln2_w, l->ln2_b, rows, d, c->ln_eps);
        ad = &l->adapter_mlp;
        if (ad->down_w && adapter_forward(h, rows, d, c->adapter_dim, ad->down_w, ad->down_b, ad->up_w, ad->up_b, 0, a))
            goto oom;
        linear_forward(ff, h, l->fc1_w, l->fc1_b, rows, d, f);
        if (c->quick_gelu) quick_gelu_forward(ff, (size_t)rows * f);
        else gelu_forward(ff, (size_t)rows * f);
        linear_forward(h, ff, l->fc2_w, l->fc2_b, rows, f, d);
        add_forward(x, h, nd);
    }

    /* Pink drops the class token: rows 1..n-1 of every image, contiguous in x */
    for (int b = 0; b < batch; b++) {
        const float *src = x + ((size_t)b * n + 1) * d;
        if (features) memcpy(features + (size_t)b * m->patches * d, src, (size_t)m->patches * d * sizeof(float));
        if (tokens)
            linear_forward(tokens + (size_t)b * m->patches * c->proj_dim, src, m->proj_w, m->proj_b, m->patches, d,
                           c->proj_dim);
    }
    arena_restore(a, mark);
    return 0;
oom:
    arena_restore(a, mark);
    return lion_fail(st, LION_ENOMEM, "clip: out of scratch memory for batch %d", batch);
}
