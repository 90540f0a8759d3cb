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
static int load_adapter(clip_adapter *ad, weights *w, lion_precision p, lion_status *st, int i, const char *which,
                        int d, int bn) {
    int64_t s_bn[] = {bn}, s_d[] = {d};
    if (linear_bind(&ad->down, w, p, 0, bn, d, st, TOWER "encoder.layers.%d.%s.tune_adapter_a.weight", i, which) ||
        !(ad->down_b = weights_get(w, st, 1, s_bn, TOWER "encoder.layers.%d.%s.tune_adapter_a.bias", i, which)) ||
        linear_bind(&ad->up, w, p, 0, d, bn, st, TOWER "encoder.layers.%d.%s.tune_adapter_b.weight", i, which) ||
        !(ad->up_b = weights_get(w, st, 1, s_d, TOWER "encoder.layers.%d.%s.tune_adapter_b.bias", i, which)))
        return -1;
    return 0;
}

static int load_layer(clip_layer *l, const clip_config *c, weights *w, lion_precision p, lion_status *st, int i) {
    const int d = c->dim, f = c->mlp_hidden;
    int64_t s_d[] = {d}, s_f[] = {f};
#define GET(field, nd, shape, name) \
    if (!(l->field = weights_get(w, st, nd, shape, TOWER "encoder.layers.%d." name, i))) return -1
#define BIND(field, out, in, name) \
    if (linear_bind(&l->field, w, p, 0, out, in, st, TOWER "encoder.layers.%d." name, i)) return -1
    GET(ln1_w, 1, s_d, "layer_norm1.weight");
    GET(ln1_b, 1, s_d, "layer_norm1.bias");
    BIND(q, d, d, "self_attn.q_proj.weight");
    GET(q_b, 1, s_d, "self_attn.q_proj.bias");
    BIND(k, d, d, "self_attn.k_proj.weight");
    GET(k_b, 1, s_d, "self_attn.k_proj.bias");
    BIND(v, d, d, "self_attn.v_proj.weight");
    GET(v_b, 1, s_d, "self_attn.v_proj.bias");
    BIND(o, d, d, "self_attn.out_proj.weight");
    GET(o_b, 1, s_d, "self_attn.out_proj.bias");
    GET(ln2_w, 1, s_d, "layer_norm2.weight");
    GET(ln2_b, 1, s_d, "layer_norm2.bias");
    BIND(fc1, f, d, "mlp.fc1.weight");
    GET(fc1_b, 1, s_f, "mlp.fc1.bias");
    BIND(fc2, d, f, "mlp.fc2.weight");
    GET(fc2_b, 1, s_d, "mlp.fc2.bias");
#undef BIND
#undef GET
    /* upstream keeps the adapters of every layer up to the selected one: all layers that run */
    if (c->adapter_dim > 0) {
        if (c->adapter_attn && load_adapter(&l->adapter_attn, w, p, st, i, "adapter_attn", d, c->adapter_dim))
            return -1;
        if (c->adapter_mlp && load_adapter(&l->adapter_mlp, w, p, st, i, "adapter_mlp", d, c->adapter_dim)) return -1;
    }
    return 0;
}

int clip_load(clip_model *m, const clip_config *c, weights *w, lion_status *st) {
    return clip_load_with(m, c, w, PRECISION_F32, st);
}

int clip_load_with(clip_model *m, const clip_config *c, weights *w, lion_precision precision, lion_status *st) {
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
    m->layer = calloc(run > 0 ? (size_t)run : 1, sizeof *m->layer);
    if (!m->layer) return lion_fail(st, LION_ENOMEM, "clip: out of memory");
    if (c->proj_dim > 0) {
        int64_t s_pb[] = {c->proj_dim};
        if (linear_bind(&m->proj, w, precision, 0, c->proj_dim, c->dim, st, "mm_projector.weight") ||
            !(m->proj_b = weights_get(w, st, 1, s_pb, "mm_projector.bias"))) {
            clip_free(m);
            return -1;
        }
    }
    for (int i = 0; i < run; i++)
        if (load_layer(&m->layer[i], c, w, precision, st, i)) {
            clip_free(m);
            return -1;
        }
    return 0;
}

static void free_adapter(clip_adapter *ad) {
    linear_free(&ad->down);
    linear_free(&ad->up);
}

void clip_free(clip_model *m) {
    for (int i = 0; m->layer && i < m->run; i++) {
        clip_layer *l = &m->layer[i];
        linear_free(&l->q), linear_free(&l->k), linear_free(&l->v), linear_free(&l->o);
        linear_free(&l->fc1), linear_free(&l->fc2);
        free_adapter(&l->adapter_attn), free_adapter(&l->adapter_mlp);
    }
    free(m->layer);
    linear_free(&m->proj);
    memset(m, 0, sizeof *m);
}

static size_t adapter_bytes(const clip_adapter *ad) { return linear_bytes(&ad->down) + linear_bytes(&ad->up); }

size_t clip_matrix_bytes(const clip_model *m) {
    size_t n = linear_bytes(&m->proj);
    for (int i = 0; m->layer && i < m->run; i++) {
        const clip_layer *l = &m->layer[i];
        n += linear_bytes(&l->q) + linear_bytes(&l->k) + linear_bytes(&l->v) + linear_bytes(&l->o) +
             linear_bytes(&l->fc1) + linear_bytes(&l->fc2) + adapter_bytes(&l->adapter_attn) +
             adapter_bytes(&l->adapter_mlp);
    }
    return n;
}

/* Pink's AdapterLayer in place on h (always linear in CLIP): h += up(down h + down_b) + up_b,
 * the up product added into h as a post-op (in f32 the same product and add as ops.h's
 * adapter_forward). No adapter here: nothing. */
static int adapter(const clip_adapter *ad, float *h, int rows, int bn, arena *a, lion_status *st) {
    if (!ad->down_b) return 0;
    arena_mark mark = arena_save(a);
    float *down = arena_floats(a, (size_t)rows * bn);
    const linear_post residual = {.accumulate = 1};
    int rc = -1;
    if (!down) lion_fail(st, LION_ENOMEM, "clip: out of scratch memory for an adapter");
    else if (!linear_apply(&ad->down, down, h, ad->down_b, rows, a, st))
        rc = linear_forward_post(&ad->up, h, down, ad->up_b, rows, &residual, a, st);
    arena_restore(a, mark);
    return rc;
}

int clip_forward(const clip_model *m, const float *pixels, int batch, float *features, float *tokens, arena *a,
                 lion_status *st) {
    const clip_config *c = &m->cfg;
    if (batch <= 0) return lion_fail(st, LION_EINVAL, "clip: batch %d must be positive", batch);
    if (tokens && !m->proj_b) return lion_fail(st, LION_EINVAL, "clip: tokens asked of a model without mm_projector");
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

    /* out_proj and fc2 add into the residual stream x as a post-op (in f32 linear.c runs the
     * same product and add as separate calls would); quick_gelu has no post-op */
    const linear_post residual = {.accumulate = 1}, gelu = {.act = c->quick_gelu ? 0 : LINEAR_ACT(ACT_GELU)};
    for (int i = 0; i < m->run; i++) {
        const clip_layer *l = &m->layer[i];
        layernorm_forward(h, x, l->ln1_w, l->ln1_b, rows, d, c->ln_eps);
        if (adapter(&l->adapter_attn, h, rows, c->adapter_dim, a, st) ||
            linear_apply(&l->q, q, h, l->q_b, rows, a, st) || linear_apply(&l->k, k, h, l->k_b, rows, a, st) ||
            linear_apply(&l->v, v, h, l->v_b, rows, a, st))
            goto fail;
        /* HF scales q (bias included) by head_dim^-0.5; scaling the scores is the same product */
        attention_args at = {.batch = batch, .heads = c->heads, .head_dim = hd, .q_len = n, .k_len = n,
                             .q = q, .k = k, .v = v, .out = h, .q_stride = d, .k_stride = d, .v_stride = d,
                             .out_stride = d, .scale = 1.0f / sqrtf((float)hd)};
        if (attention_forward(&at, a)) goto oom;
        if (linear_forward_post(&l->o, x, h, l->o_b, rows, &residual, a, st)) goto fail;

        layernorm_forward(h, x, l->ln2_w, l->ln2_b, rows, d, c->ln_eps);
        if (adapter(&l->adapter_mlp, h, rows, c->adapter_dim, a, st) ||
            linear_forward_post(&l->fc1, ff, h, l->fc1_b, rows, &gelu, a, st))
            goto fail;
        if (c->quick_gelu) quick_gelu_forward(ff, (size_t)rows * f);
        if (linear_forward_post(&l->fc2, x, ff, l->fc2_b, rows, &residual, a, st)) goto fail;
    }

    /* Pink drops the class token: rows 1..n-1 of every image, contiguous in x */
    for (int b = 0; b < batch; b++) {
        const float *src = x + ((size_t)b * n + 1) * d;
        if (features) memcpy(features + (size_t)b * m->patches * d, src, (size_t)m->patches * d * sizeof(float));
        if (tokens && linear_apply(&m->proj, tokens + (size_t)b * m->patches * c->proj_dim, src, m->proj_b,
                                   m->patches, a, st))
            goto fail;
    }
    arena_restore(a, mark);
    return 0;
fail:
    arena_restore(a, mark);
    return -1;
oom:
    arena_restore(a, mark);
    return lion_fail(st, LION_ENOMEM, "clip: out of scratch memory for batch %d", batch);
}
