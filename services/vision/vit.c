#include "vit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

void vit_config_from_model(vit_config *out, const vision_config *v) {
    memset(out, 0, sizeof *out);
    out->image_size = v->image_size;
    out->patch_size = v->patch_size;
    out->dim = v->dim;
    out->depth = v->depth;
    out->heads = v->heads;
    out->mlp_hidden = v->mlp_hidden;
    out->ln_eps = v->ln_eps;
}

int vit_load(vit_model *m, const vit_config *c, weights *w, lion_status *st) {
    return vit_load_with(m, c, w, PRECISION_F32, st);
}

int vit_load_with(vit_model *m, const vit_config *c, weights *w, lion_precision precision, lion_status *st) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    if (c->patch_size <= 0 || c->image_size % c->patch_size || c->heads <= 0 || c->dim % c->heads)
        return lion_fail(st, LION_EINVAL, "vit: image_size %d / patch_size %d / dim %d / heads %d do not fit",
                         c->image_size, c->patch_size, c->dim, c->heads);
    const int64_t d = c->dim, g = c->image_size / c->patch_size, p = c->patch_size;
    m->tokens = (int)(1 + g * g);
    int64_t s_patch[] = {d, 3, p, p}, s_vec[] = {d}, s_cls[] = {1, 1, d}, s_pos[] = {1, m->tokens, d};
    if (!(m->patch_w = weights_get(w, st, 4, s_patch, "patch_embed.proj.weight"))) return -1;
    if (!(m->patch_b = weights_get(w, st, 1, s_vec, "patch_embed.proj.bias"))) return -1;
    if (!(m->cls_token = weights_get(w, st, 3, s_cls, "cls_token"))) return -1;
    if (!(m->pos_embed = weights_get(w, st, 3, s_pos, "pos_embed"))) return -1;
    m->blocks = calloc((size_t)c->depth, sizeof *m->blocks);
    if (!m->blocks) return lion_fail(st, LION_ENOMEM, "vit: out of memory");
    const int dim = c->dim, hidden = c->mlp_hidden;
    int64_t s_h[] = {hidden};
    for (int i = 0; i < c->depth; i++) {
        vit_block *b = &m->blocks[i];
        const float *q_bias, *v_bias;
        if (!(b->norm1_w = weights_get(w, st, 1, s_vec, "blocks.%d.norm1.weight", i)) ||
            !(b->norm1_b = weights_get(w, st, 1, s_vec, "blocks.%d.norm1.bias", i)) ||
            linear_bind(&b->qkv, w, precision, 0, 3 * dim, dim, st, "blocks.%d.attn.qkv.weight", i) ||
            !(q_bias = weights_get(w, st, 1, s_vec, "blocks.%d.attn.q_bias", i)) ||
            !(v_bias = weights_get(w, st, 1, s_vec, "blocks.%d.attn.v_bias", i)) ||
            linear_bind(&b->proj, w, precision, 0, dim, dim, st, "blocks.%d.attn.proj.weight", i) ||
            !(b->proj_b = weights_get(w, st, 1, s_vec, "blocks.%d.attn.proj.bias", i)) ||
            !(b->norm2_w = weights_get(w, st, 1, s_vec, "blocks.%d.norm2.weight", i)) ||
            !(b->norm2_b = weights_get(w, st, 1, s_vec, "blocks.%d.norm2.bias", i)) ||
            linear_bind(&b->fc1, w, precision, 0, hidden, dim, st, "blocks.%d.mlp.fc1.weight", i) ||
            !(b->fc1_b = weights_get(w, st, 1, s_h, "blocks.%d.mlp.fc1.bias", i)) ||
            linear_bind(&b->fc2, w, precision, 0, dim, hidden, st, "blocks.%d.mlp.fc2.weight", i) ||
            !(b->fc2_b = weights_get(w, st, 1, s_vec, "blocks.%d.mlp.fc2.bias", i))) {
            vit_free(m);
            return -1;
        }
        b->qkv_b = calloc((size_t)(3 * d), sizeof(float));
        if (!b->qkv_b) {
            vit_free(m);
            return lion_fail(st, LION_ENOMEM, "vit: out of memory");
        }
        memcpy(b->qkv_b, q_bias, (size_t)d * sizeof(float));
        memcpy(b->qkv_b + 2 * d, v_bias, (size_t)d * sizeof(float));
    }
    return 0;
}

void vit_free(vit_model *m) {
    if (m->blocks)
        for (int i = 0; i < m->cfg.depth; i++) {
            vit_block *b = &m->blocks[i];
            linear_free(&b->qkv), linear_free(&b->proj), linear_free(&b->fc1), linear_free(&b->fc2);
            free(b->qkv_b);
        }
    free(m->blocks);
    memset(m, 0, sizeof *m);
}

size_t vit_matrix_bytes(const vit_model *m) {
    size_t n = 0;
    for (int i = 0; m->blocks && i < m->cfg.depth; i++) {
        const vit_block *b = &m->blocks[i];
        n += linear_bytes(&b->qkv) + linear_bytes(&b->proj) + linear_bytes(&b->fc1) + linear_bytes(&b->fc2);
    }
    return n;
}

int vit_forward(const vit_model *m, const float *pixels, int batch, const int *layers, int n_out, float **outs,
                arena *a, lion_status *st) {
    const vit_config *c = &m->cfg;
    const int d = c->dim, n = m->tokens, rows = batch * n, hd = c->dim / c->heads;
    int last = -1;
    for (int k = 0; k < n_out; k++) {
        if (layers[k] < 0 || layers[k] >= c->depth)
            return lion_fail(st, LION_EINVAL, "vit: requested block %d, the model has %d", layers[k], c->depth);
        if (layers[k] > last) last = layers[k];
    }
    arena_mark mark = arena_save(a);
    float *x = arena_floats(a, (size_t)rows * d);
    float *h = arena_floats(a, (size_t)rows * d);
    float *qkv = arena_floats(a, (size_t)rows * 3 * d);
    float *ff = arena_floats(a, (size_t)rows * c->mlp_hidden);
    if (!x || !h || !qkv || !ff) goto oom;

    const size_t img = (size_t)3 * c->image_size * c->image_size;
    for (int b = 0; b < batch; b++) {
        float *xb = x + (size_t)b * n * d;
        memcpy(xb, m->cls_token, (size_t)d * sizeof(float));
        if (patch_embed_forward(xb + d, pixels + b * img, m->patch_w, m->patch_b, 3, c->image_size, c->image_size,
                                c->patch_size, d, a))
            goto oom;
        add_forward(xb, m->pos_embed, (size_t)n * d);
    }

    /* proj and fc2 add into the residual stream x as a post-op, fc1 applies GELU as one: in
     * f32 linear.c runs the same product, activation and add as separate calls would */
    const linear_post gelu = {.act = LINEAR_ACT(ACT_GELU)}, residual = {.accumulate = 1};
    for (int i = 0; i <= last; i++) {
        const vit_block *bl = &m->blocks[i];
        layernorm_forward(h, x, bl->norm1_w, bl->norm1_b, rows, d, c->ln_eps);
        if (linear_apply(&bl->qkv, qkv, h, bl->qkv_b, rows, a, st)) goto fail;
        attention_args at = {.batch = batch, .heads = c->heads, .head_dim = hd, .q_len = n, .k_len = n,
                             .q = qkv, .k = qkv + d, .v = qkv + 2 * d, .out = h,
                             .q_stride = 3 * d, .k_stride = 3 * d, .v_stride = 3 * d, .out_stride = d,
                             .scale = 1.0f / sqrtf((float)hd)};
        if (attention_forward(&at, a)) goto oom;
        if (linear_forward_post(&bl->proj, x, h, bl->proj_b, rows, &residual, a, st)) goto fail;
        layernorm_forward(h, x, bl->norm2_w, bl->norm2_b, rows, d, c->ln_eps);
        if (linear_forward_post(&bl->fc1, ff, h, bl->fc1_b, rows, &gelu, a, st) ||
            linear_forward_post(&bl->fc2, x, ff, bl->fc2_b, rows, &residual, a, st))
            goto fail;
        for (int k = 0; k < n_out; k++)
            if (layers[k] == i) memcpy(outs[k], x, (size_t)rows * d * sizeof(float));
    }
    arena_restore(a, mark);
    return 0;
fail:
    arena_restore(a, mark);
    return -1;
oom:
    arena_restore(a, mark);
    return lion_fail(st, LION_ENOMEM, "vit: out of scratch memory for batch %d", batch);
}
