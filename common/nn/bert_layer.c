#include "bert_layer.h"

#include <math.h>
#include <string.h>

#include "ops.h"

int bert_attention_load(bert_attention *a, weights *w, const char *prefix, int hidden, int heads, int kv_width,
                        float ln_eps, lion_status *st) {
    memset(a, 0, sizeof *a);
    if (heads <= 0 || hidden % heads)
        return lion_fail(st, LION_EINVAL, "%s: %d heads do not divide width %d", prefix, heads, hidden);
    a->hidden = hidden;
    a->heads = heads;
    a->kv_width = kv_width;
    a->ln_eps = ln_eps;
    const int64_t h = hidden, s_q[] = {h, h}, s_kv[] = {h, kv_width}, s_vec[] = {h};
    if (!(a->query_w = weights_get(w, st, 2, s_q, "%s.self.query.weight", prefix)) ||
        !(a->query_b = weights_get(w, st, 1, s_vec, "%s.self.query.bias", prefix)) ||
        !(a->key_w = weights_get(w, st, 2, s_kv, "%s.self.key.weight", prefix)) ||
        !(a->key_b = weights_get(w, st, 1, s_vec, "%s.self.key.bias", prefix)) ||
        !(a->value_w = weights_get(w, st, 2, s_kv, "%s.self.value.weight", prefix)) ||
        !(a->value_b = weights_get(w, st, 1, s_vec, "%s.self.value.bias", prefix)) ||
        !(a->dense_w = weights_get(w, st, 2, s_q, "%s.output.dense.weight", prefix)) ||
        !(a->dense_b = weights_get(w, st, 1, s_vec, "%s.output.dense.bias", prefix)) ||
        !(a->ln_w = weights_get(w, st, 1, s_vec, "%s.output.LayerNorm.weight", prefix)) ||
        !(a->ln_b = weights_get(w, st, 1, s_vec, "%s.output.LayerNorm.bias", prefix)))
        return -1;
    return 0;
}

int bert_attention_forward(const bert_attention *a, float *x, const float *query, int batch, int q_len,
                           const float *kv, int k_len, const uint8_t *key_mask, arena *scratch, lion_status *st) {
    const int h = a->hidden, hd = a->hidden / a->heads;
    const size_t q_rows = (size_t)batch * q_len, k_rows = (size_t)batch * k_len;
    const float *src = kv ? kv : x;
    const int src_width = kv ? a->kv_width : h;
    arena_mark mark = arena_save(scratch);
    float *q = arena_floats(scratch, q_rows * h);
    float *k = arena_floats(scratch, k_rows * h);
    float *v = arena_floats(scratch, k_rows * h);
    float *ctx = arena_floats(scratch, q_rows * h);
    if (!q || !k || !v || !ctx) goto oom;
    if (query) memcpy(q, query, q_rows * h * sizeof(float));
    else linear_forward(q, x, a->query_w, a->query_b, (int)q_rows, h, h);
    linear_forward(k, src, a->key_w, a->key_b, (int)k_rows, src_width, h);
    linear_forward(v, src, a->value_w, a->value_b, (int)k_rows, src_width, h);
    attention_args at = {.batch = batch, .heads = a->heads, .head_dim = hd, .q_len = q_len, .k_len = k_len,
                         .q = q, .k = k, .v = v, .out = ctx,
                         .q_stride = h, .k_stride = h, .v_stride = h, .out_stride = h,
                         .scale = 1.0f / sqrtf((float)hd), .key_mask = key_mask};
    if (attention_forward(&at, scratch)) goto oom;
    linear_forward(q, ctx, a->dense_w, a->dense_b, (int)q_rows, h, h); /* q reused: no longer needed */
    add_forward(q, x, q_rows * h);
    layernorm_forward(x, q, a->ln_w, a->ln_b, (int)q_rows, h, a->ln_eps);
    arena_restore(scratch, mark);
    return 0;
oom:
    arena_restore(scratch, mark);
    return lion_fail(st, LION_ENOMEM, "bert attention: out of scratch memory for %zu x %zu rows", q_rows, k_rows);
}

int bert_ffn_load(bert_ffn *f, weights *w, const char *intermediate_prefix, const char *output_prefix, int hidden,
                  int intermediate, float ln_eps, lion_status *st) {
    memset(f, 0, sizeof *f);
    f->hidden = hidden;
    f->intermediate = intermediate;
    f->ln_eps = ln_eps;
    const int64_t s_in[] = {intermediate, hidden}, s_mid[] = {intermediate}, s_out[] = {hidden, intermediate},
                  s_vec[] = {hidden};
    if (!(f->in_w = weights_get(w, st, 2, s_in, "%s.dense.weight", intermediate_prefix)) ||
        !(f->in_b = weights_get(w, st, 1, s_mid, "%s.dense.bias", intermediate_prefix)) ||
        !(f->out_w = weights_get(w, st, 2, s_out, "%s.dense.weight", output_prefix)) ||
        !(f->out_b = weights_get(w, st, 1, s_vec, "%s.dense.bias", output_prefix)) ||
        !(f->ln_w = weights_get(w, st, 1, s_vec, "%s.LayerNorm.weight", output_prefix)) ||
        !(f->ln_b = weights_get(w, st, 1, s_vec, "%s.LayerNorm.bias", output_prefix)))
        return -1;
    return 0;
}

int bert_ffn_forward(const bert_ffn *f, float *x, int rows, arena *scratch, lion_status *st) {
    const int h = f->hidden, mid = f->intermediate;
    arena_mark mark = arena_save(scratch);
    float *inner = arena_floats(scratch, (size_t)rows * mid);
    float *y = arena_floats(scratch, (size_t)rows * h);
    if (!inner || !y) {
        arena_restore(scratch, mark);
        return lion_fail(st, LION_ENOMEM, "bert ffn: out of scratch memory for %d rows", rows);
    }
    linear_forward(inner, x, f->in_w, f->in_b, rows, h, mid);
    gelu_forward(inner, (size_t)rows * mid);
    linear_forward(y, inner, f->out_w, f->out_b, rows, mid, h);
    add_forward(y, x, (size_t)rows * h);
    layernorm_forward(x, y, f->ln_w, f->ln_b, rows, h, f->ln_eps);
    arena_restore(scratch, mark);
    return 0;
}
