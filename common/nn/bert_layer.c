#include "bert_layer.h"

#include <math.h>
#include <string.h>

#include "ops.h"

int bert_attention_load(bert_attention *a, weights *w, const char *prefix, int hidden, int heads, int kv_width,
                        float ln_eps, lion_precision p, lion_status *st) {
    memset(a, 0, sizeof *a);
    if (heads <= 0 || hidden % heads)
        return lion_fail(st, LION_EINVAL, "%s: %d heads do not divide width %d", prefix, heads, hidden);
    a->hidden = hidden;
    a->heads = heads;
    a->kv_width = kv_width;
    a->ln_eps = ln_eps;
    const int64_t h = hidden, s_vec[] = {h};
    if (linear_bind(&a->query, w, p, 0, hidden, hidden, st, "%s.self.query.weight", prefix) ||
        !(a->query_b = weights_get(w, st, 1, s_vec, "%s.self.query.bias", prefix)) ||
        linear_bind(&a->key, w, p, 0, hidden, kv_width, st, "%s.self.key.weight", prefix) ||
        !(a->key_b = weights_get(w, st, 1, s_vec, "%s.self.key.bias", prefix)) ||
        linear_bind(&a->value, w, p, 0, hidden, kv_width, st, "%s.self.value.weight", prefix) ||
        !(a->value_b = weights_get(w, st, 1, s_vec, "%s.self.value.bias", prefix)) ||
        linear_bind(&a->dense, w, p, 0, hidden, hidden, st, "%s.output.dense.weight", prefix) ||
        !(a->dense_b = weights_get(w, st, 1, s_vec, "%s.output.dense.bias", prefix)) ||
        !(a->ln_w = weights_get(w, st, 1, s_vec, "%s.output.LayerNorm.weight", prefix)) ||
        !(a->ln_b = weights_get(w, st, 1, s_vec, "%s.output.LayerNorm.bias", prefix))) {
        bert_attention_free(a);
        return -1;
    }
    return 0;
}

void bert_attention_free(bert_attention *a) {
    linear_free(&a->query);
    linear_free(&a->key);
    linear_free(&a->value);
    linear_free(&a->dense);
    memset(a, 0, sizeof *a);
}

size_t bert_attention_bytes(const bert_attention *a) {
    return linear_bytes(&a->query) + linear_bytes(&a->key) + linear_bytes(&a->value) + linear_bytes(&a->dense);
}

int bert_attention_forward(const bert_attention *a, float *x, const float *query, int batch, int q_len,
                           const float *kv, int k_len, const uint8_t *key_mask, arena *scratch, lion_status *st) {
    const int h = a->hidden, hd = a->hidden / a->heads;
    const size_t q_rows = (size_t)batch * q_len, k_rows = (size_t)batch * k_len;
    const float *src = kv ? kv : x;
    arena_mark mark = arena_save(scratch);
    float *q = arena_floats(scratch, q_rows * h);
    float *k = arena_floats(scratch, k_rows * h);
    float *v = arena_floats(scratch, k_rows * h);
    float *ctx = arena_floats(scratch, q_rows * h);
    if (!q || !k || !v || !ctx) goto oom;
    if (query) memcpy(q, query, q_rows * h * sizeof(float));
    else if (linear_apply(&a->query, q, x, a->query_b, (int)q_rows, scratch, st)) goto fail;
    /* self-attention reads x (hidden wide) through key/value bound as [hidden, kv_width]:
     * the two widths are equal there (bert_attention_load is called with kv_width = hidden) */
    if (linear_apply(&a->key, k, src, a->key_b, (int)k_rows, scratch, st) ||
        linear_apply(&a->value, v, src, a->value_b, (int)k_rows, scratch, st))
        goto fail;
    attention_args at = {.batch = batch, .heads = a->heads, .head_dim = hd, .q_len = q_len, .k_len = k_len,
                         .q = q, .k = k, .v = v, .out = ctx,
                         .q_stride = h, .k_stride = h, .v_stride = h, .out_stride = h,
                         .scale = 1.0f / sqrtf((float)hd), .key_mask = key_mask};
    if (attention_forward(&at, scratch)) goto oom;
    /* q reused: no longer needed */
    if (linear_apply(&a->dense, q, ctx, a->dense_b, (int)q_rows, scratch, st)) goto fail;
    add_forward(q, x, q_rows * h);
    layernorm_forward(x, q, a->ln_w, a->ln_b, (int)q_rows, h, a->ln_eps);
    arena_restore(scratch, mark);
    return 0;
oom:
    lion_fail(st, LION_ENOMEM, "bert attention: out of scratch memory for %zu x %zu rows", q_rows, k_rows);
fail:
    arena_restore(scratch, mark);
    return -1;
}

int bert_ffn_load(bert_ffn *f, weights *w, const char *intermediate_prefix, const char *output_prefix, int hidden,
                  int intermediate, float ln_eps, lion_precision p, lion_status *st) {
    memset(f, 0, sizeof *f);
    f->hidden = hidden;
    f->intermediate = intermediate;
    f->ln_eps = ln_eps;
    const int64_t s_mid[] = {intermediate}, s_vec[] = {hidden};
    if (linear_bind(&f->in, w, p, 0, intermediate, hidden, st, "%s.dense.weight", intermediate_prefix) ||
        !(f->in_b = weights_get(w, st, 1, s_mid, "%s.dense.bias", intermediate_prefix)) ||
        linear_bind(&f->out, w, p, 0, hidden, intermediate, st, "%s.dense.weight", output_prefix) ||
        !(f->out_b = weights_get(w, st, 1, s_vec, "%s.dense.bias", output_prefix)) ||
        !(f->ln_w = weights_get(w, st, 1, s_vec, "%s.LayerNorm.weight", output_prefix)) ||
        !(f->ln_b = weights_get(w, st, 1, s_vec, "%s.LayerNorm.bias", output_prefix))) {
        bert_ffn_free(f);
        return -1;
    }
    return 0;
}

void bert_ffn_free(bert_ffn *f) {
    linear_free(&f->in);
    linear_free(&f->out);
    memset(f, 0, sizeof *f);
}

size_t bert_ffn_bytes(const bert_ffn *f) { return linear_bytes(&f->in) + linear_bytes(&f->out); }

int bert_ffn_forward(const bert_ffn *f, float *x, int rows, arena *scratch, lion_status *st) {
    const int h = f->hidden, mid = f->intermediate;
    arena_mark mark = arena_save(scratch);
    float *inner = arena_floats(scratch, (size_t)rows * mid);
    float *y = arena_floats(scratch, (size_t)rows * h);
    if (!inner || !y) {
        arena_restore(scratch, mark);
        return lion_fail(st, LION_ENOMEM, "bert ffn: out of scratch memory for %d rows", rows);
    }
    /* GELU as a post-op: in f32 the same linear_forward + gelu_forward as before, to the bit */
    const linear_post gelu = {.act = LINEAR_ACT(ACT_GELU)};
    int rc = linear_forward_post(&f->in, inner, x, f->in_b, rows, &gelu, scratch, st) ||
             linear_apply(&f->out, y, inner, f->out_b, rows, scratch, st);
    if (!rc) {
        add_forward(y, x, (size_t)rows * h);
        layernorm_forward(x, y, f->ln_w, f->ln_b, rows, h, f->ln_eps);
    }
    arena_restore(scratch, mark);
    return rc ? -1 : 0;
}
