#include "tagging_head.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

int tagging_head_load(tagging_head *t, weights *w, const char *prefix, int hidden, int heads, int layers,
                      int intermediate, int kv_width, float ln_eps, lion_status *st) {
    memset(t, 0, sizeof *t);
    if (hidden <= 0 || heads <= 0 || hidden % heads || layers <= 0 || intermediate <= 0 || kv_width <= 0)
        return lion_fail(st, LION_EINVAL,
                         "tagging head: hidden %d, heads %d, layers %d, intermediate %d, kv_width %d do not fit",
                         hidden, heads, layers, intermediate, kv_width);
    *t = (tagging_head){.hidden = hidden, .heads = heads, .layers = layers, .intermediate = intermediate,
                        .kv_width = kv_width, .ln_eps = ln_eps};
    t->layer = calloc((size_t)layers, sizeof *t->layer);
    if (!t->layer) return lion_fail(st, LION_ENOMEM, "tagging head: out of memory");
    const int64_t h = hidden, kv = kv_width, in = intermediate;
    int64_t s_sq[] = {h, h}, s_kv[] = {h, kv}, s_vec[] = {h}, s_in[] = {in, h}, s_inb[] = {in}, s_out[] = {h, in};
    for (int i = 0; i < layers; i++) {
        tagging_layer *l = &t->layer[i];
        const char *p = prefix;
        if (!(l->query_w = weights_get(w, st, 2, s_sq, "%sencoder.layer.%d.crossattention.self.query.weight", p, i)) ||
            !(l->query_b = weights_get(w, st, 1, s_vec, "%sencoder.layer.%d.crossattention.self.query.bias", p, i)) ||
            !(l->key_w = weights_get(w, st, 2, s_kv, "%sencoder.layer.%d.crossattention.self.key.weight", p, i)) ||
            !(l->key_b = weights_get(w, st, 1, s_vec, "%sencoder.layer.%d.crossattention.self.key.bias", p, i)) ||
            !(l->value_w = weights_get(w, st, 2, s_kv, "%sencoder.layer.%d.crossattention.self.value.weight", p, i)) ||
            !(l->value_b = weights_get(w, st, 1, s_vec, "%sencoder.layer.%d.crossattention.self.value.bias", p, i)) ||
            !(l->attn_dense_w =
                  weights_get(w, st, 2, s_sq, "%sencoder.layer.%d.crossattention.output.dense.weight", p, i)) ||
            !(l->attn_dense_b =
                  weights_get(w, st, 1, s_vec, "%sencoder.layer.%d.crossattention.output.dense.bias", p, i)) ||
            !(l->attn_ln_w =
                  weights_get(w, st, 1, s_vec, "%sencoder.layer.%d.crossattention.output.LayerNorm.weight", p, i)) ||
            !(l->attn_ln_b =
                  weights_get(w, st, 1, s_vec, "%sencoder.layer.%d.crossattention.output.LayerNorm.bias", p, i)) ||
            !(l->inter_w = weights_get(w, st, 2, s_in, "%sencoder.layer.%d.intermediate.dense.weight", p, i)) ||
            !(l->inter_b = weights_get(w, st, 1, s_inb, "%sencoder.layer.%d.intermediate.dense.bias", p, i)) ||
            !(l->out_w = weights_get(w, st, 2, s_out, "%sencoder.layer.%d.output.dense.weight", p, i)) ||
            !(l->out_b = weights_get(w, st, 1, s_vec, "%sencoder.layer.%d.output.dense.bias", p, i)) ||
            !(l->out_ln_w = weights_get(w, st, 1, s_vec, "%sencoder.layer.%d.output.LayerNorm.weight", p, i)) ||
            !(l->out_ln_b = weights_get(w, st, 1, s_vec, "%sencoder.layer.%d.output.LayerNorm.bias", p, i))) {
            tagging_head_free(t);
            return -1;
        }
    }
    return 0;
}

void tagging_head_free(tagging_head *t) {
    free(t->layer);
    memset(t, 0, sizeof *t);
}

int tagging_head_forward(const tagging_head *t, float *x, int q_len, const float *image, int k_len,
                         const float *first_query, arena *a, lion_status *st) {
    const int h = t->hidden, hd = h / t->heads;
    arena_mark mark = arena_save(a);
    float *q = arena_floats(a, (size_t)q_len * h), *ctx = arena_floats(a, (size_t)q_len * h);
    float *k = arena_floats(a, (size_t)k_len * h), *v = arena_floats(a, (size_t)k_len * h);
    float *ff = arena_floats(a, (size_t)q_len * t->intermediate);
    if (!q || !ctx || !k || !v || !ff) goto oom;
    for (int i = 0; i < t->layers; i++) {
        const tagging_layer *l = &t->layer[i];
        const float *qi = q;
        if (i == 0 && first_query) qi = first_query;
        else linear_forward(q, x, l->query_w, l->query_b, q_len, h, h);
        linear_forward(k, image, l->key_w, l->key_b, k_len, t->kv_width, h);
        linear_forward(v, image, l->value_w, l->value_b, k_len, t->kv_width, h);
        attention_args at = {.batch = 1, .heads = t->heads, .head_dim = hd, .q_len = q_len, .k_len = k_len,
                             .q = qi, .k = k, .v = v, .out = ctx,
                             .q_stride = h, .k_stride = h, .v_stride = h, .out_stride = h,
                             .scale = 1.0f / sqrtf((float)hd)};
        if (attention_forward(&at, a)) goto oom;
        linear_forward(q, ctx, l->attn_dense_w, l->attn_dense_b, q_len, h, h); /* q reused as scratch */
        add_forward(x, q, (size_t)q_len * h);
        layernorm_forward(x, x, l->attn_ln_w, l->attn_ln_b, q_len, h, t->ln_eps);
        linear_forward(ff, x, l->inter_w, l->inter_b, q_len, h, t->intermediate);
        gelu_forward(ff, (size_t)q_len * t->intermediate);
        linear_forward(q, ff, l->out_w, l->out_b, q_len, t->intermediate, h);
        add_forward(x, q, (size_t)q_len * h);
        layernorm_forward(x, x, l->out_ln_w, l->out_ln_b, q_len, h, t->ln_eps);
    }
    arena_restore(a, mark);
    return 0;
oom:
    arena_restore(a, mark);
    return lion_fail(st, LION_ENOMEM, "tagging head: out of scratch memory for %d queries", q_len);
}
