#include "t5.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "matvec_bf16.h"
#include "ops.h"

/* ------------------------------------------------------------------ loading */

void t5_config_from_llm(t5_config *out, const llm_config *l) {
    memset(out, 0, sizeof *out);
    out->d_model = l->d_model;
    out->d_ff = l->d_ff;
    out->d_kv = l->d_kv;
    out->heads = l->heads;
    out->encoder_layers = l->encoder_layers;
    out->decoder_layers = l->decoder_layers;
    out->vocab_size = l->vocab_size;
    out->rel_buckets = l->rel_buckets;
    out->rel_max_distance = l->rel_max_distance;
    out->ln_eps = l->ln_eps;
    out->ff_act = l->ff_act;
    out->adapters = l->adapters_num;
    out->adapter_bottleneck = l->adapters_bottleneck;
    out->tie_word_embeddings = l->tie_word_embeddings;
}

/* Binds the weights of one model in its precision. */
typedef struct loader {
    t5_model *m;
    weights *w;
    lion_precision precision;
} loader;

/* After weights_get made an f32 copy of a tensor stored f16 or bf16, the file pages it read
 * are not needed any more (an f32 tensor is used in place: its pages stay). The matrices are
 * linears, which do the same for themselves. */
static void release_converted(loader *ld, const char *name) {
    ld->m->tensors_released += weights_release_converted(ld->w, name);
}

/* In the decoder, the step reads q and o of both attentions and k, v of the self-attention
 * (LINEAR_STEP); the cross-attention's k and v are projected once per request, over all its
 * encoder positions, as the encoder's matrices are (t5_cross_init). */
static int load_attention(loader *ld, t5_attention *at, lion_status *st, const char *stack, int i, int sub,
                          const char *kind, int d, int inner, int decoder) {
    const int self = sub == 0, qo = decoder ? LINEAR_STEP : 0, kv = decoder && self ? LINEAR_STEP : 0;
    int64_t s_vec[] = {d};
    if (!(at->norm = weights_get(ld->w, st, 1, s_vec, "%s.block.%d.layer.%d.layer_norm.weight", stack, i, sub)) ||
        linear_bind(&at->q, ld->w, ld->precision, qo, inner, d, st, "%s.block.%d.layer.%d.%s.q.weight", stack, i, sub,
                    kind) ||
        linear_bind(&at->k, ld->w, ld->precision, kv, inner, d, st, "%s.block.%d.layer.%d.%s.k.weight", stack, i, sub,
                    kind) ||
        linear_bind(&at->v, ld->w, ld->precision, kv, inner, d, st, "%s.block.%d.layer.%d.%s.v.weight", stack, i, sub,
                    kind) ||
        linear_bind(&at->o, ld->w, ld->precision, qo, d, inner, st, "%s.block.%d.layer.%d.%s.o.weight", stack, i, sub,
                    kind))
        return -1;
    return 0;
}

static int load_ff(loader *ld, t5_ff *ff, const t5_config *c, lion_status *st, const char *stack, int i, int sub,
                   int decoder) {
    weights *w = ld->w;
    const int d = c->d_model, f = c->d_ff, flags = decoder ? LINEAR_STEP : 0;
    const int64_t bn = c->adapter_bottleneck;
    int64_t s_vec[] = {d};
    if (!(ff->norm = weights_get(w, st, 1, s_vec, "%s.block.%d.layer.%d.layer_norm.weight", stack, i, sub)) ||
        linear_bind(&ff->wi_0, w, ld->precision, flags, f, d, st, "%s.block.%d.layer.%d.DenseReluDense.wi_0.weight",
                    stack, i, sub) ||
        linear_bind(&ff->wi_1, w, ld->precision, flags, f, d, st, "%s.block.%d.layer.%d.DenseReluDense.wi_1.weight",
                    stack, i, sub) ||
        linear_bind(&ff->wo, w, ld->precision, flags, d, f, st, "%s.block.%d.layer.%d.DenseReluDense.wo.weight", stack,
                    i, sub))
        return -1;
    int64_t s_one[] = {1}, s_down[] = {bn, d}, s_bn[] = {bn}, s_up[] = {d, bn}, s_ratio[] = {2, d};
    for (int k = 0; k < c->adapters; k++) {
        t5_adapter *ad = &ff->adapters[k];
        if (!(ad->scale = weights_get(w, st, 1, s_one, "%s.block.%d.layer.%d.adapter.adapters.%d.scale", stack, i,
                                      sub, k)) ||
            !(ad->down_w = weights_get(w, st, 2, s_down, "%s.block.%d.layer.%d.adapter.adapters.%d.down_proj.weight",
                                       stack, i, sub, k)) ||
            !(ad->down_b = weights_get(w, st, 1, s_bn, "%s.block.%d.layer.%d.adapter.adapters.%d.down_proj.bias",
                                       stack, i, sub, k)) ||
            !(ad->up_w = weights_get(w, st, 2, s_up, "%s.block.%d.layer.%d.adapter.adapters.%d.up_proj.weight", stack,
                                     i, sub, k)) ||
            !(ad->up_b = weights_get(w, st, 1, s_vec, "%s.block.%d.layer.%d.adapter.adapters.%d.up_proj.bias", stack,
                                     i, sub, k)))
            return -1;
    }
    if (c->adapters == 2 &&
        (!(ff->router_ratio1 =
               weights_get(w, st, 2, s_ratio, "%s.block.%d.layer.%d.adapter.router_ratio1", stack, i, sub)) ||
         !(ff->router_ratio2 =
               weights_get(w, st, 2, s_ratio, "%s.block.%d.layer.%d.adapter.router_ratio2", stack, i, sub))))
        return -1;
    return 0;
}

static int load_stack(loader *ld, t5_stack *s, const t5_config *c, lion_status *st, int is_decoder) {
    weights *w = ld->w;
    const char *name = is_decoder ? "decoder" : "encoder";
    const int d = c->d_model, inner = c->heads * c->d_kv;
    s->n_layers = is_decoder ? c->decoder_layers : c->encoder_layers;
    s->layers = calloc((size_t)s->n_layers, sizeof *s->layers);
    if (!s->layers) return lion_fail(st, LION_ENOMEM, "t5: out of memory");
    int64_t s_bias[] = {c->rel_buckets, c->heads}, s_vec[] = {d};
    if (!(s->rel_bias = weights_get(w, st, 2, s_bias, "%s.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                                    name)) ||
        !(s->final_norm = weights_get(w, st, 1, s_vec, "%s.final_layer_norm.weight", name)))
        return -1;
    for (int i = 0; i < s->n_layers; i++) {
        t5_layer *l = &s->layers[i];
        if (load_attention(ld, &l->self, st, name, i, 0, "SelfAttention", d, inner, is_decoder)) return -1;
        if (is_decoder && load_attention(ld, &l->cross, st, name, i, 1, "EncDecAttention", d, inner, 1)) return -1;
        if (load_ff(ld, &l->ff, c, st, name, i, is_decoder ? 2 : 1, is_decoder)) return -1;
    }
    return 0;
}

int t5_load(t5_model *m, const t5_config *c, weights *w, lion_status *st) {
    return t5_load_with(m, c, w, PRECISION_F32, st);
}

int t5_load_with(t5_model *m, const t5_config *c, weights *w, lion_precision precision, lion_status *st) {
    memset(m, 0, sizeof *m);
    if (precision != PRECISION_F32 && precision != PRECISION_BF16)
        return lion_fail(st, LION_EINVAL, "t5: precision %s: load with f32 or bf16", precision_name(precision));
    if (c->d_model <= 0 || c->d_ff <= 0 || c->d_kv <= 0 || c->heads <= 0 || c->vocab_size <= 0 ||
        c->encoder_layers <= 0 || c->decoder_layers <= 0)
        return lion_fail(st, LION_EINVAL, "t5: dimensions must be positive (d_model %d, d_ff %d, d_kv %d, heads %d, "
                         "vocab %d, layers %d/%d)", c->d_model, c->d_ff, c->d_kv, c->heads, c->vocab_size,
                         c->encoder_layers, c->decoder_layers);
    if (c->rel_buckets < 4 || c->rel_max_distance <= c->rel_buckets / 4)
        return lion_fail(st, LION_EINVAL, "t5: rel_buckets %d / rel_max_distance %d do not fit", c->rel_buckets,
                         c->rel_max_distance);
    if (c->adapters < 0 || c->adapters > 2 || (c->adapters > 0 && c->adapter_bottleneck <= 0))
        return lion_fail(st, LION_EINVAL, "t5: adapters must be 0, 1 or 2 with a positive bottleneck (got %d, %d)",
                         c->adapters, c->adapter_bottleneck);
    if (c->ff_act != ACT_GELU && c->ff_act != ACT_GELU_TANH && c->ff_act != ACT_RELU)
        return lion_fail(st, LION_EINVAL, "t5: unknown ff activation %d", (int)c->ff_act);
    m->cfg = *c;
    m->precision = precision;
    m->step_bf16 = precision == PRECISION_BF16;
    m->step_matvec_f32 = 1;
    loader ld = {m, w, precision};
    int64_t s_emb[] = {c->vocab_size, c->d_model};
    if (!(m->shared = weights_get(w, st, 2, s_emb, "shared.weight"))) return -1;
    release_converted(&ld, "shared.weight");
    int rc;
    /* a tied lm_head is the f32 embedding table, in any precision */
    if (c->tie_word_embeddings)
        rc = linear_from_f32(&m->lm_head, m->shared, c->vocab_size, c->d_model, PRECISION_F32, LINEAR_STEP, st);
    else
        rc = linear_bind(&m->lm_head, w, precision, LINEAR_STEP, c->vocab_size, c->d_model, st, "lm_head.weight");
    if (rc || load_stack(&ld, &m->encoder, c, st, 0) || load_stack(&ld, &m->decoder, c, st, 1)) {
        t5_free(m);
        return -1;
    }
    return 0;
}

/* Calls fn on every matrix of the model with what kind it is: STEP_MATRIX, a matrix of the
 * decoder step; ENCODER_MATRIX, of the encoder; CROSS_KV, a cross-attention key/value
 * projection. A tied lm_head (a view of the embedding table) is not one. */
enum { STEP_MATRIX, ENCODER_MATRIX, CROSS_KV };
typedef int (*matrix_fn)(linear *l, int kind, void *arg, lion_status *st);

static int each_matrix(t5_model *m, matrix_fn fn, void *arg, lion_status *st) {
    for (int s = 0; s < 2; s++) {
        const t5_stack *stack = s ? &m->decoder : &m->encoder;
        const int kind = s ? STEP_MATRIX : ENCODER_MATRIX;
        for (int i = 0; stack->layers && i < stack->n_layers; i++) {
            t5_layer *l = &stack->layers[i];
            if (fn(&l->self.q, kind, arg, st) || fn(&l->self.k, kind, arg, st) || fn(&l->self.v, kind, arg, st) ||
                fn(&l->self.o, kind, arg, st) || fn(&l->ff.wi_0, kind, arg, st) || fn(&l->ff.wi_1, kind, arg, st) ||
                fn(&l->ff.wo, kind, arg, st))
                return -1;
            if (s && (fn(&l->cross.q, kind, arg, st) || fn(&l->cross.o, kind, arg, st) ||
                      fn(&l->cross.k, CROSS_KV, arg, st) || fn(&l->cross.v, CROSS_KV, arg, st)))
                return -1;
        }
    }
    if (!m->cfg.tie_word_embeddings && fn(&m->lm_head, STEP_MATRIX, arg, st)) return -1;
    return 0;
}

static int count_bytes(linear *l, int kind, void *arg, lion_status *st) {
    t5_weight_bytes *b = arg;
    const size_t n = linear_bytes(l);
    *(kind == STEP_MATRIX ? &b->step : kind == ENCODER_MATRIX ? &b->encoder : &b->cross_kv) += n;
    if (l->w16_owned || l->packed) b->owned += n;
    b->released += l->released_bytes;
    return 0;
}

void t5_weight_bytes_of(const t5_model *m, t5_weight_bytes *out) {
    memset(out, 0, sizeof *out);
    out->released = m->tensors_released;
    each_matrix((t5_model *)m, count_bytes, out, NULL); /* count_bytes changes nothing */
}

/* The bf16 form of an f32 linear (one already bf16 stays): what linear_bind makes of it. */
static int to_bf16(linear *l, int kind, void *arg, lion_status *st) {
    const int step_only = *(const int *)arg;
    if (l->precision != PRECISION_F32 || (step_only && kind != STEP_MATRIX)) return 0;
    linear b;
    if (linear_from_f32(&b, l->w, l->out, l->in, PRECISION_BF16, kind == STEP_MATRIX ? LINEAR_STEP : 0, st))
        return -1;
    linear_free(l); /* an f32 linear owns nothing: this only clears it */
    *l = b;
    return 0;
}

int t5_decoder_to_bf16(t5_model *m, lion_status *st) {
    const int step_only = 1;
    if (each_matrix(m, to_bf16, (void *)&step_only, st)) return -1;
    m->step_bf16 = 1;
    return 0;
}

int t5_to_bf16(t5_model *m, lion_status *st) {
    const int step_only = 0;
    if (each_matrix(m, to_bf16, (void *)&step_only, st)) return -1;
    m->step_bf16 = 1;
    m->precision = PRECISION_BF16;
    return 0;
}

static int free_matrix(linear *l, int kind, void *arg, lion_status *st) {
    linear_free(l);
    return 0;
}

void t5_free(t5_model *m) {
    each_matrix(m, free_matrix, NULL, NULL);
    free(m->encoder.layers);
    free(m->decoder.layers);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------------ positions */

int t5_relative_bucket(int rel, int bidirectional, int num_buckets, int max_distance) {
    int bucket = 0, n;
    if (bidirectional) {
        num_buckets /= 2;
        if (rel > 0) bucket = num_buckets;
        n = rel < 0 ? -rel : rel;
    } else {
        n = rel < 0 ? -rel : 0;
    }
    const int max_exact = num_buckets / 2;
    if (n < max_exact) return bucket + n;
    /* the reference computes this in f32 (torch.log of a float tensor, then f32 arithmetic
     * with the scalars); doing the same keeps the boundary cases identical */
    float ratio = logf((float)n / (float)max_exact) / (float)log((double)max_distance / max_exact);
    int large = max_exact + (int)(ratio * (float)(num_buckets - max_exact));
    if (large > num_buckets - 1) large = num_buckets - 1;
    return bucket + large;
}

/* bias[h, i, j] = table[bucket(j + k_offset - (i + q_offset)), h] for q_len x k_len */
static void position_bias(float *bias, const float *table, const t5_config *c, int bidirectional, int q_len,
                          int q_offset, int k_len) {
    const size_t plane = (size_t)q_len * k_len;
    for (int i = 0; i < q_len; i++)
        for (int j = 0; j < k_len; j++) {
            int b = t5_relative_bucket(j - (i + q_offset), bidirectional, c->rel_buckets, c->rel_max_distance);
            for (int h = 0; h < c->heads; h++) bias[h * plane + (size_t)i * k_len + j] = table[b * c->heads + h];
        }
}

/* ------------------------------------------------------------------ sub-layers */

/* y = x W^T. An f32 matrix of the decoder step (LINEAR_STEP) with 2..T5_MATVEC_MAX_ROWS rows
 * goes to matvec_f32 when the model says so (one pass over W for all rows; linear.h's f32 form
 * has only OpenBLAS); everything else is linear_apply's: f32 on OpenBLAS (sgemv for one row),
 * bf16 step matrices on matvec_bf16 with every row at once, the encoder's bf16 matrices in
 * the form linear.h chose for many rows. Scratch from a; 0, or -1 with st filled. */
static int product(const t5_model *m, const linear *l, float *y, const float *x, int rows, arena *a,
                   lion_status *st) {
    if (l->precision == PRECISION_F32 && (l->flags & LINEAR_STEP) && m->step_matvec_f32 && rows >= 2 &&
        rows <= T5_MATVEC_MAX_ROWS) {
        matvec_f32(y, x, l->w, NULL, rows, l->in, l->out);
        return 0;
    }
    return linear_apply(l, y, x, NULL, rows, a, st);
}

/* h += FF(RMSNorm(h)) + router(h), for rows of h. Row r takes route routes[r], or router_idx
 * for every row when routes is NULL. 0, or -1 with st filled. */
static int ff_forward(const t5_model *m, const t5_ff *ff, float *h, int rows, int router_idx, const int *routes,
                      arena *a, lion_status *st) {
    const t5_config *c = &m->cfg;
    const int d = c->d_model, f = c->d_ff, bn = c->adapter_bottleneck;
    const size_t nd = (size_t)rows * d;
    arena_mark mark = arena_save(a);
    float *x = arena_floats(a, nd), *g = arena_floats(a, (size_t)rows * f), *u = arena_floats(a, (size_t)rows * f);
    float *route = c->adapters ? arena_floats(a, nd) : NULL;
    float *one = c->adapters ? arena_floats(a, nd) : NULL;
    float *down = c->adapters ? arena_floats(a, (size_t)rows * bn) : NULL;
    if (!x || !g || !u || (c->adapters && (!route || !one || !down))) {
        arena_restore(a, mark);
        return lion_fail(st, LION_ENOMEM, "t5: out of scratch memory for the FF of %d rows", rows);
    }
    /* the router reads the un-normalised h, so it runs before h changes */
    for (int k = 0; k < c->adapters; k++) {
        const t5_adapter *ad = &ff->adapters[k];
        linear_forward(down, h, ad->down_w, ad->down_b, rows, d, bn);
        relu_forward(down, (size_t)rows * bn);
        linear_forward(one, down, ad->up_w, ad->up_b, rows, bn, d);
        const float scale = ad->scale[0];
        const float *ratios = c->adapters == 1 ? NULL : k == 0 ? ff->router_ratio1 : ff->router_ratio2;
        for (int r = 0; r < rows; r++) {
            float *o = one + (size_t)r * d, *dst = route + (size_t)r * d;
            const float *ratio = ratios ? ratios + (size_t)(routes ? routes[r] : router_idx) * d : NULL;
            for (int j = 0; j < d; j++) {
                float v = o[j] * scale;
                if (ratio) v *= ratio[j];
                dst[j] = k == 0 ? v : dst[j] + v;
            }
        }
    }
    rmsnorm_forward(x, h, ff->norm, rows, d, c->ln_eps);
    int rc = product(m, &ff->wi_0, g, x, rows, a, st);
    if (!rc) {
        activation_forward(g, (size_t)rows * f, c->ff_act);
        rc = product(m, &ff->wi_1, u, x, rows, a, st);
    }
    if (!rc) {
        mul_forward(g, g, u, (size_t)rows * f);
        rc = product(m, &ff->wo, x, g, rows, a, st);
    }
    if (!rc) {
        add_forward(h, x, nd);
        if (route) add_forward(h, route, nd);
    }
    arena_restore(a, mark);
    return rc;
}

/* ------------------------------------------------------------------ encoder */

int t5_encode(const t5_model *m, const float *in, const uint8_t *key_mask, int batch, int len, int router_idx,
              float *out, arena *a, lion_status *st) {
    const t5_config *c = &m->cfg;
    if (batch <= 0 || len <= 0)
        return lion_fail(st, LION_EINVAL, "t5_encode: empty input (batch %d, length %d)", batch, len);
    if (c->adapters == 2 && router_idx != 0 && router_idx != 1)
        return lion_fail(st, LION_EINVAL, "t5_encode: router index %d is not 0 or 1", router_idx);
    if (key_mask)
        for (int b = 0; b < batch; b++) {
            int any = 0;
            for (int j = 0; j < len; j++) any |= key_mask[(size_t)b * len + j] != 0;
            if (!any) return lion_fail(st, LION_EINVAL, "t5_encode: batch row %d has no unmasked token", b);
        }
    const int d = c->d_model, inner = c->heads * c->d_kv, rows = batch * len;
    arena_mark mark = arena_save(a);
    float *x = arena_floats(a, (size_t)rows * d);
    float *q = arena_floats(a, (size_t)rows * inner), *k = arena_floats(a, (size_t)rows * inner);
    float *v = arena_floats(a, (size_t)rows * inner), *att = arena_floats(a, (size_t)rows * inner);
    float *bias = arena_floats(a, (size_t)c->heads * len * len);
    if (!x || !q || !k || !v || !att || !bias) goto oom;
    position_bias(bias, m->encoder.rel_bias, c, 1, len, 0, len);
    float *h = out;
    memcpy(h, in, (size_t)rows * d * sizeof(float));
    for (int i = 0; i < m->encoder.n_layers; i++) {
        const t5_layer *l = &m->encoder.layers[i];
        rmsnorm_forward(x, h, l->self.norm, rows, d, c->ln_eps);
        if (product(m, &l->self.q, q, x, rows, a, st) || product(m, &l->self.k, k, x, rows, a, st) ||
            product(m, &l->self.v, v, x, rows, a, st))
            goto fail;
        attention_args at = {.batch = batch, .heads = c->heads, .head_dim = c->d_kv, .q_len = len, .k_len = len,
                             .q = q, .k = k, .v = v, .out = att, .q_stride = inner, .k_stride = inner,
                             .v_stride = inner, .out_stride = inner, .scale = 1.0f, .key_mask = key_mask,
                             .bias = bias, .bias_batch_stride = 0};
        if (attention_forward(&at, a)) goto oom;
        if (product(m, &l->self.o, x, att, rows, a, st)) goto fail;
        add_forward(h, x, (size_t)rows * d);
        if (ff_forward(m, &l->ff, h, rows, router_idx, NULL, a, st)) goto fail;
    }
    rmsnorm_forward(out, h, m->encoder.final_norm, rows, d, c->ln_eps);
    arena_restore(a, mark);
    return 0;
oom:
    lion_fail(st, LION_ENOMEM, "t5_encode: out of scratch memory for batch %d x %d tokens", batch, len);
fail:
    arena_restore(a, mark);
    return -1;
}

/* ------------------------------------------------------------------ decoder */

static int route_ok(const t5_model *m, int router_idx) {
    return m->cfg.adapters != 2 || router_idx == 0 || router_idx == 1;
}

size_t t5_cross_bytes(const t5_model *m, int enc_len) {
    const size_t inner = (size_t)m->cfg.heads * m->cfg.d_kv;
    return (size_t)enc_len + 2 * (size_t)m->decoder.n_layers * enc_len * inner * sizeof(float);
}

void t5_cross_free(t5_cross *x) {
    free(x->mask);
    free(x->k);
    free(x->v);
    memset(x, 0, sizeof *x);
}

int t5_cross_init(t5_cross *x, const t5_model *m, const float *enc, const uint8_t *mask, int enc_len, int router_idx,
                  lion_status *st) {
    const t5_config *c = &m->cfg;
    memset(x, 0, sizeof *x);
    if (enc_len <= 0) return lion_fail(st, LION_EINVAL, "t5_decoder: encoder length %d must be positive", enc_len);
    if (!route_ok(m, router_idx))
        return lion_fail(st, LION_EINVAL, "t5_decoder: router index %d is not 0 or 1", router_idx);
    int any = 0;
    for (int j = 0; j < enc_len; j++) any |= !mask || mask[j];
    if (!any) return lion_fail(st, LION_EINVAL, "t5_decoder: no unmasked encoder token");
    const int layers = m->decoder.n_layers, inner = c->heads * c->d_kv;
    *x = (t5_cross){.layers = layers, .enc_len = enc_len, .inner = inner, .router_idx = router_idx};
    const size_t per = (size_t)enc_len * inner;
    x->mask = malloc((size_t)enc_len);
    x->k = malloc((size_t)layers * per * sizeof(float));
    x->v = malloc((size_t)layers * per * sizeof(float));
    if (!x->mask || !x->k || !x->v) {
        t5_cross_free(x);
        return lion_fail(st, LION_ENOMEM, "t5_decoder: out of memory for %d encoder positions", enc_len);
    }
    for (int j = 0; j < enc_len; j++) x->mask[j] = !mask || mask[j];
    /* scratch of bf16 products (widened panels, rounded x): this entry point has no arena of
     * its caller's, and one panel per request is nothing next to the products; f32 takes none */
    arena a;
    arena_init(&a, 0);
    int rc = 0;
    for (int i = 0; i < layers && !rc; i++) {
        const t5_attention *at = &m->decoder.layers[i].cross;
        rc = product(m, &at->k, x->k + i * per, enc, enc_len, &a, st) ||
             product(m, &at->v, x->v + i * per, enc, enc_len, &a, st);
    }
    arena_free(&a);
    if (rc) t5_cross_free(x);
    return rc ? -1 : 0;
}

size_t t5_seq_bytes(const t5_model *m, int capacity) {
    return 2 * (size_t)m->decoder.n_layers * capacity * m->cfg.heads * m->cfg.d_kv * sizeof(float);
}

void t5_seq_free(t5_seq *s) {
    free(s->k);
    free(s->v);
    memset(s, 0, sizeof *s);
}

int t5_seq_init(t5_seq *s, const t5_model *m, const t5_cross *cross, int capacity, lion_status *st) {
    memset(s, 0, sizeof *s);
    if (capacity <= 0) return lion_fail(st, LION_EINVAL, "t5_decoder: %d steps must be positive", capacity);
    const int layers = m->decoder.n_layers, inner = m->cfg.heads * m->cfg.d_kv;
    *s = (t5_seq){.cross = cross, .layers = layers, .inner = inner, .capacity = capacity};
    const size_t n = (size_t)layers * capacity * inner;
    s->k = malloc(n * sizeof(float));
    s->v = malloc(n * sizeof(float));
    if (!s->k || !s->v) {
        t5_seq_free(s);
        return lion_fail(st, LION_ENOMEM, "t5_decoder: out of memory for a cache of %d steps", capacity);
    }
    return 0;
}

/* dst's cache becomes src's (its len positions; both have the same capacity) */
static void seq_copy(t5_seq *dst, const t5_seq *src) {
    const size_t layer = (size_t)src->capacity * src->inner, used = (size_t)src->len * src->inner;
    for (int i = 0; i < src->layers; i++) {
        memcpy(dst->k + i * layer, src->k + i * layer, used * sizeof(float));
        memcpy(dst->v + i * layer, src->v + i * layer, used * sizeof(float));
    }
    dst->cross = src->cross;
    dst->len = src->len;
}

int t5_seqs_reorder(t5_seq **seqs, int n, const int *src, arena *a, lion_status *st) {
    if (n <= 0) return 0;
    for (int r = 0; r < n; r++)
        if (src[r] < 0 || src[r] >= n || seqs[src[r]]->cross != seqs[r]->cross ||
            seqs[src[r]]->capacity != seqs[r]->capacity)
            return lion_fail(st, LION_EINVAL, "t5_decoder: reorder source %d for row %d is not a beam of its request",
                             src[r], r);
    arena_mark mark = arena_save(a);
    t5_seq **old = arena_alloc(a, (size_t)n * sizeof *old);
    uint8_t *taken = arena_alloc(a, (size_t)n);
    if (!old || !taken) {
        arena_restore(a, mark);
        return lion_fail(st, LION_ENOMEM, "t5_decoder: out of scratch memory to reorder %d rows", n);
    }
    memcpy(old, seqs, (size_t)n * sizeof *old);
    memset(taken, 0, (size_t)n);
    /* first, each source keeps its cache for the first row that continues it */
    for (int r = 0; r < n; r++) {
        if (taken[src[r]]) {
            seqs[r] = NULL;
            continue;
        }
        taken[src[r]] = 1;
        seqs[r] = old[src[r]];
    }
    /* then the other rows copy their source into a cache nobody continues */
    int spare = 0;
    for (int r = 0; r < n; r++) {
        if (seqs[r]) continue;
        while (taken[spare]) spare++;
        taken[spare] = 1;
        seq_copy(old[spare], old[src[r]]);
        seqs[r] = old[spare];
    }
    arena_restore(a, mark);
    return 0;
}

/* A step's attention runs its rows on the OpenMP team only above this many floats of keys
 * (rows x keys x inner): waking the team costs more than it saves below, on these 2-core VMs
 * tens of microseconds, against ~1 us of attention per 1000 keys' floats. */
#define T5_ATTENTION_PARALLEL_MIN ((size_t)1 << 20)

int t5_step(const t5_model *m, t5_seq *const *seqs, int n, const int32_t *tokens, float *logits, arena *a,
            lion_status *st) {
    const t5_config *c = &m->cfg;
    const int d = c->d_model, inner = c->heads * c->d_kv, H = c->heads;
    if (n <= 0) return lion_fail(st, LION_EINVAL, "t5_decoder: a step of %d rows", n);
    int max_k = 0, max_enc = 0;
    for (int r = 0; r < n; r++)
        if (tokens[r] < 0 || tokens[r] >= c->vocab_size)
            return lion_fail(st, LION_EINVAL, "t5_decoder: token %d of row %d is outside the vocabulary of %d",
                             (int)tokens[r], r, c->vocab_size);
    for (int r = 0; r < n; r++) {
        if (seqs[r]->len >= seqs[r]->capacity)
            return lion_fail(st, LION_ETOOBIG, "t5_decoder: cache full at %d positions", seqs[r]->capacity);
        if (seqs[r]->len + 1 > max_k) max_k = seqs[r]->len + 1;
        if (seqs[r]->cross->enc_len > max_enc) max_enc = seqs[r]->cross->enc_len;
    }
    const int max_scores = max_k > max_enc ? max_k : max_enc;
    arena_mark mark = arena_save(a);
    float *h = arena_floats(a, (size_t)n * d), *x = arena_floats(a, (size_t)n * d);
    float *q = arena_floats(a, (size_t)n * inner), *kv = arena_floats(a, (size_t)n * inner * 2);
    float *att = arena_floats(a, (size_t)n * inner), *bias = arena_floats(a, (size_t)n * H * max_k);
    float *scores = arena_floats(a, (size_t)n * max_scores);
    int *routes = arena_alloc(a, (size_t)n * sizeof *routes);
    if (!h || !x || !q || !kv || !att || !bias || !scores || !routes) goto oom;
    embedding_forward(h, m->shared, tokens, n, d);
    /* each row's causal buckets of its one new query against its cached keys, shared by all
     * layers; rows at the same position (the beams of a request) share the previous row's */
    for (int r = 0; r < n; r++) {
        routes[r] = seqs[r]->cross->router_idx;
        const int pos = seqs[r]->len;
        float *b = bias + (size_t)r * H * max_k;
        if (r > 0 && seqs[r - 1]->len == pos) memcpy(b, b - (size_t)H * max_k, (size_t)H * (pos + 1) * sizeof(float));
        else position_bias(b, m->decoder.rel_bias, c, 0, 1, pos, pos + 1);
    }
    for (int i = 0; i < m->decoder.n_layers; i++) {
        const t5_layer *l = &m->decoder.layers[i];
        rmsnorm_forward(x, h, l->self.norm, n, d, c->ln_eps);
        if (product(m, &l->self.q, q, x, n, a, st) || product(m, &l->self.k, kv, x, n, a, st) ||
            product(m, &l->self.v, kv + (size_t)n * inner, x, n, a, st))
            goto fail;
        for (int r = 0; r < n; r++) {
            t5_seq *s = seqs[r];
            const size_t at = ((size_t)i * s->capacity + s->len) * inner;
            memcpy(s->k + at, kv + (size_t)r * inner, inner * sizeof(float));
            memcpy(s->v + at, kv + ((size_t)n + r) * inner, inner * sizeof(float));
        }
        /* each row attends to its own cache (rows in parallel when there is work enough) */
#pragma omp parallel for schedule(static) if ((size_t)n * max_k * inner > T5_ATTENTION_PARALLEL_MIN)
        for (int r = 0; r < n; r++) {
            const t5_seq *sq = seqs[r];
            const size_t layer = (size_t)i * sq->capacity * inner;
            attention_query(att + (size_t)r * inner, q + (size_t)r * inner, sq->k + layer, sq->v + layer, sq->len + 1,
                            inner, H, c->d_kv, 1.0f, bias + (size_t)r * H * max_k, (size_t)sq->len + 1, NULL,
                            scores + (size_t)r * max_scores);
        }
        if (product(m, &l->self.o, x, att, n, a, st)) goto fail;
        add_forward(h, x, (size_t)n * d);

        /* cross-attention: each row to its request's encoder output */
        rmsnorm_forward(x, h, l->cross.norm, n, d, c->ln_eps);
        if (product(m, &l->cross.q, q, x, n, a, st)) goto fail;
#pragma omp parallel for schedule(static) if ((size_t)n * max_enc * inner > T5_ATTENTION_PARALLEL_MIN)
        for (int r = 0; r < n; r++) {
            const t5_cross *xc = seqs[r]->cross;
            const size_t layer = (size_t)i * xc->enc_len * inner;
            attention_query(att + (size_t)r * inner, q + (size_t)r * inner, xc->k + layer, xc->v + layer, xc->enc_len,
                            inner, H, c->d_kv, 1.0f, NULL, 0, xc->mask, scores + (size_t)r * max_scores);
        }
        if (product(m, &l->cross.o, x, att, n, a, st)) goto fail;
        add_forward(h, x, (size_t)n * d);

        if (ff_forward(m, &l->ff, h, n, 0, routes, a, st)) goto fail;
    }
    rmsnorm_forward(x, h, m->decoder.final_norm, n, d, c->ln_eps);
    if (c->tie_word_embeddings) {
        const float s = 1.0f / sqrtf((float)d);
        for (size_t j = 0; j < (size_t)n * d; j++) x[j] *= s;
    }
    if (product(m, &m->lm_head, logits, x, n, a, st)) goto fail;
    for (int r = 0; r < n; r++) seqs[r]->len++;
    arena_restore(a, mark);
    return 0;
oom:
    lion_fail(st, LION_ENOMEM, "t5_decoder: out of scratch memory for %d rows", n);
fail:
    arena_restore(a, mark);
    return -1;
}

/* ------------------------------------------------------------------ a fixed batch */

void t5_decoder_free(t5_decoder *dec) {
    for (int b = 0; dec->cross && b < dec->batch; b++) t5_cross_free(&dec->cross[b]);
    for (int r = 0; dec->store && r < dec->rows; r++) t5_seq_free(&dec->store[r]);
    free(dec->cross);
    free(dec->store);
    free(dec->seq);
    memset(dec, 0, sizeof *dec);
}

int t5_decoder_init(t5_decoder *dec, const t5_model *m, const float *enc, const uint8_t *enc_mask, int batch,
                    int enc_len, int beams, int max_steps, int router_idx, lion_status *st) {
    memset(dec, 0, sizeof *dec);
    if (batch <= 0 || enc_len <= 0 || beams <= 0 || max_steps <= 0)
        return lion_fail(st, LION_EINVAL, "t5_decoder: batch %d, encoder length %d, beams %d, steps %d must be positive",
                         batch, enc_len, beams, max_steps);
    if (!route_ok(m, router_idx))
        return lion_fail(st, LION_EINVAL, "t5_decoder: router index %d is not 0 or 1", router_idx);
    const int rows = batch * beams, d = m->cfg.d_model;
    dec->cross = calloc((size_t)batch, sizeof *dec->cross);
    dec->store = calloc((size_t)rows, sizeof *dec->store);
    dec->seq = calloc((size_t)rows, sizeof *dec->seq);
    if (!dec->cross || !dec->store || !dec->seq) {
        t5_decoder_free(dec);
        return lion_fail(st, LION_ENOMEM, "t5_decoder: out of memory for %d rows", rows);
    }
    dec->beams = beams;
    for (int b = 0; b < batch; b++, dec->batch++)
        if (t5_cross_init(&dec->cross[b], m, enc + (size_t)b * enc_len * d, enc_mask ? enc_mask + (size_t)b * enc_len : NULL,
                          enc_len, router_idx, st)) {
            lion_fail_prefix(st, "batch row %d: ", b);
            t5_decoder_free(dec);
            return -1;
        }
    for (int r = 0; r < rows; r++, dec->rows++) {
        if (t5_seq_init(&dec->store[r], m, &dec->cross[r / beams], max_steps, st)) {
            t5_decoder_free(dec);
            return -1;
        }
        dec->seq[r] = &dec->store[r];
    }
    return 0;
}

int t5_decoder_step(const t5_model *m, t5_decoder *dec, const int32_t *tokens, float *logits, arena *a,
                    lion_status *st) {
    if (t5_step(m, dec->seq, dec->rows, tokens, logits, a, st)) return -1;
    dec->len++;
    return 0;
}

int t5_decoder_reorder(t5_decoder *dec, const int *src, arena *a, lion_status *st) {
    return t5_seqs_reorder(dec->seq, dec->rows, src, a, st);
}
