#include "t5.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

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

/* Binds weights for one model: f32 through weights_get, or the decoder step's matrices as
 * bf16 when bf16 is set. */
typedef struct loader {
    t5_model *m;
    weights *w;
    int bf16;
} loader;

/* Keeps a converted bf16 matrix for t5_free. */
static int own_bf16(t5_model *m, uint16_t *p, size_t n, lion_status *st) {
    uint16_t **grown = realloc(m->bf16_owned, (size_t)(m->n_bf16_owned + 1) * sizeof *grown);
    if (!grown) {
        free(p);
        return lion_fail(st, LION_ENOMEM, "t5: out of memory");
    }
    m->bf16_owned = grown;
    m->bf16_owned[m->n_bf16_owned++] = p;
    m->bf16_owned_bytes += n * sizeof *p;
    return 0;
}

/* Gives the whole pages inside [p, p + bytes) of a read-only file mapping back to the kernel:
 * they leave the process's RSS and are read from the file again should anyone touch them
 * (nothing here does). Returns the bytes released. */
static size_t release_mapped(const void *p, size_t bytes) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1), e = ((uintptr_t)p + bytes) & ~(page - 1);
    if (e <= a || madvise((void *)a, e - a, MADV_DONTNEED) != 0) return 0;
    return e - a;
}

static void f32_to_bf16_array(uint16_t *dst, const float *src, size_t n) {
#pragma omp parallel for schedule(static) if (n >= ((size_t)1 << 20))
    for (size_t i = 0; i < n; i++) dst[i] = f32_to_bf16(src[i]);
}

/* After weights_get made an f32 copy of a tensor stored f16 or bf16, the file pages it read
 * are not needed any more (an f32 tensor is used in place: its pages stay). */
static void release_converted(loader *ld, const char *name) {
    char full[sizeof ld->w->prefix + 512];
    snprintf(full, sizeof full, "%s%s", ld->w->prefix, name);
    tensor view;
    lion_status ignored;
    if (safetensors_get(ld->w->file, full, &view, &ignored) == 0 && view.dtype != DTYPE_F32)
        ld->m->released_bytes += release_mapped(view.data, tensor_nbytes(&view));
}

/* One matrix [rows, cols] of the decoder step as bf16: a view of a bf16 tensor of the file, or
 * a conversion of its f32 / f16 tensor (whose mapped pages are then released). */
static int bind_bf16(loader *ld, const uint16_t **out, int64_t rows, int64_t cols, const char *name,
                     lion_status *st) {
    char full[sizeof ld->w->prefix + 512];
    snprintf(full, sizeof full, "%s%s", ld->w->prefix, name);
    int64_t shape[] = {rows, cols};
    tensor view;
    if (safetensors_get_checked(ld->w->file, full, SAFETENSORS_ANY_DTYPE, 2, shape, &view, st)) return -1;
    const size_t n = (size_t)rows * (size_t)cols;
    ld->m->step_bf16_bytes += n * sizeof(uint16_t);
    if (view.dtype == DTYPE_BF16) {
        *out = view.data;
        return 0;
    }
    if (view.dtype != DTYPE_F32 && view.dtype != DTYPE_F16)
        return lion_fail(st, LION_EFORMAT, "%s: tensor '%s': dtype %s, expected F32, F16 or BF16",
                         safetensors_path(ld->w->file), full, dtype_name(view.dtype));
    uint16_t *b = malloc(n * sizeof *b);
    if (!b) return lion_fail(st, LION_ENOMEM, "t5: out of memory converting '%s' to bf16", full);
    if (view.dtype == DTYPE_F32) {
        f32_to_bf16_array(b, view.data, n);
    } else {
        const uint16_t *h = view.data;
#pragma omp parallel for schedule(static) if (n >= ((size_t)1 << 20))
        for (size_t i = 0; i < n; i++) b[i] = f32_to_bf16(f16_to_f32(h[i]));
    }
    ld->m->released_bytes += release_mapped(view.data, tensor_nbytes(&view));
    if (own_bf16(ld->m, b, n, st)) return -1;
    *out = b;
    return 0;
}

/* A matrix of the model: as bf16 into *b16 when the loader binds the decoder step in bf16 and
 * step says this is one of its matrices, else f32 into *f32. */
static int get_matrix(loader *ld, int step, const float **f32, const uint16_t **b16, int64_t rows, int64_t cols,
                      lion_status *st, const char *fmt, ...) __attribute__((format(printf, 8, 9)));
static int get_matrix(loader *ld, int step, const float **f32, const uint16_t **b16, int64_t rows, int64_t cols,
                      lion_status *st, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (step && ld->bf16) return bind_bf16(ld, b16, rows, cols, name, st);
    int64_t shape[] = {rows, cols};
    if (!(*f32 = weights_get(ld->w, st, 2, shape, "%s", name))) return -1;
    release_converted(ld, name);
    return 0;
}

/* In the decoder, the step reads q and o of both attentions and k, v of the self-attention;
 * the cross-attention's k and v are projected once per request (t5_decoder_init). */
static int load_attention(loader *ld, t5_attention *at, lion_status *st, const char *stack, int i, int sub,
                          const char *kind, int64_t d, int64_t inner, int decoder) {
    weights *w = ld->w;
    const int self = sub == 0;
    int64_t s_vec[] = {d};
    if (!(at->norm = weights_get(w, st, 1, s_vec, "%s.block.%d.layer.%d.layer_norm.weight", stack, i, sub)) ||
        get_matrix(ld, decoder, &at->q, &at->q16, inner, d, st, "%s.block.%d.layer.%d.%s.q.weight", stack, i, sub,
                   kind) ||
        get_matrix(ld, decoder && self, &at->k, &at->k16, inner, d, st, "%s.block.%d.layer.%d.%s.k.weight", stack, i,
                   sub, kind) ||
        get_matrix(ld, decoder && self, &at->v, &at->v16, inner, d, st, "%s.block.%d.layer.%d.%s.v.weight", stack, i,
                   sub, kind) ||
        get_matrix(ld, decoder, &at->o, &at->o16, d, inner, st, "%s.block.%d.layer.%d.%s.o.weight", stack, i, sub,
                   kind))
        return -1;
    return 0;
}

static int load_ff(loader *ld, t5_ff *ff, const t5_config *c, lion_status *st, const char *stack, int i, int sub,
                   int decoder) {
    weights *w = ld->w;
    const int64_t d = c->d_model, f = c->d_ff, bn = c->adapter_bottleneck;
    int64_t s_vec[] = {d};
    if (!(ff->norm = weights_get(w, st, 1, s_vec, "%s.block.%d.layer.%d.layer_norm.weight", stack, i, sub)) ||
        get_matrix(ld, decoder, &ff->wi_0, &ff->wi_0_16, f, d, st, "%s.block.%d.layer.%d.DenseReluDense.wi_0.weight",
                   stack, i, sub) ||
        get_matrix(ld, decoder, &ff->wi_1, &ff->wi_1_16, f, d, st, "%s.block.%d.layer.%d.DenseReluDense.wi_1.weight",
                   stack, i, sub) ||
        get_matrix(ld, decoder, &ff->wo, &ff->wo_16, d, f, st, "%s.block.%d.layer.%d.DenseReluDense.wo.weight", stack,
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
    const int64_t d = c->d_model, inner = (int64_t)c->heads * c->d_kv;
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
    m->step_bf16 = precision == PRECISION_BF16;
    m->step_matvec_f32 = 1;
    loader ld = {m, w, m->step_bf16};
    int64_t s_emb[] = {c->vocab_size, c->d_model};
    if (!(m->shared = weights_get(w, st, 2, s_emb, "shared.weight"))) return -1;
    release_converted(&ld, "shared.weight");
    int rc = 0;
    if (c->tie_word_embeddings) m->lm_head = m->shared; /* the f32 embedding table, in any precision */
    else rc = get_matrix(&ld, 1, &m->lm_head, &m->lm_head16, c->vocab_size, c->d_model, st, "lm_head.weight");
    if (rc || load_stack(&ld, &m->encoder, c, st, 0) || load_stack(&ld, &m->decoder, c, st, 1)) {
        t5_free(m);
        return -1;
    }
    return 0;
}

/* Replaces *f32 by an owned bf16 copy in *b16. */
static int to_bf16(t5_model *m, const float **f32, const uint16_t **b16, size_t n, lion_status *st) {
    if (!*f32) return 0; /* already bf16 */
    uint16_t *b = malloc(n * sizeof *b);
    if (!b) return lion_fail(st, LION_ENOMEM, "t5: out of memory converting the decoder to bf16");
    f32_to_bf16_array(b, *f32, n);
    if (own_bf16(m, b, n, st)) return -1;
    m->step_bf16_bytes += n * sizeof *b;
    *b16 = b;
    *f32 = NULL;
    return 0;
}

int t5_decoder_to_bf16(t5_model *m, lion_status *st) {
    const t5_config *c = &m->cfg;
    const size_t d = (size_t)c->d_model, inner = (size_t)c->heads * c->d_kv, f = (size_t)c->d_ff;
    for (int i = 0; i < m->decoder.n_layers; i++) {
        t5_layer *l = &m->decoder.layers[i];
        if (to_bf16(m, &l->self.q, &l->self.q16, inner * d, st) || to_bf16(m, &l->self.k, &l->self.k16, inner * d, st) ||
            to_bf16(m, &l->self.v, &l->self.v16, inner * d, st) || to_bf16(m, &l->self.o, &l->self.o16, d * inner, st) ||
            to_bf16(m, &l->cross.q, &l->cross.q16, inner * d, st) ||
            to_bf16(m, &l->cross.o, &l->cross.o16, d * inner, st) ||
            to_bf16(m, &l->ff.wi_0, &l->ff.wi_0_16, f * d, st) || to_bf16(m, &l->ff.wi_1, &l->ff.wi_1_16, f * d, st) ||
            to_bf16(m, &l->ff.wo, &l->ff.wo_16, d * f, st))
            return -1;
    }
    if (m->lm_head != m->shared && to_bf16(m, &m->lm_head, &m->lm_head16, (size_t)c->vocab_size * d, st)) return -1;
    m->step_bf16 = 1;
    return 0;
}

void t5_free(t5_model *m) {
    free(m->encoder.layers);
    free(m->decoder.layers);
    for (int i = 0; i < m->n_bf16_owned; i++) free(m->bf16_owned[i]);
    free(m->bf16_owned);
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

/* y = x W^T for a product of the decoder step (step set) or of the encoder: W is f32 (w) or
 * bf16 (w16). bf16 goes to matvec_bf16 with every row at once; f32 to OpenBLAS, or in the
 * step with 2..T5_MATVEC_MAX_ROWS rows to matvec_f32 when the model says so. */
static void product(const t5_model *m, int step, float *y, const float *x, const float *w, const uint16_t *w16,
                    int rows, int in, int out) {
    if (w16) matvec_bf16(y, x, w16, NULL, rows, in, out);
    else if (step && m->step_matvec_f32 && rows >= 2 && rows <= T5_MATVEC_MAX_ROWS)
        matvec_f32(y, x, w, NULL, rows, in, out);
    else linear_forward(y, x, w, NULL, rows, in, out);
}

/* h += FF(RMSNorm(h)) + router(h), for rows of h (step: the decoder step's). */
static int ff_forward(const t5_model *m, const t5_ff *ff, float *h, int rows, int router_idx, int step, arena *a) {
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
        return -1;
    }
    /* the router reads the un-normalised h, so it runs before h changes */
    for (int k = 0; k < c->adapters; k++) {
        const t5_adapter *ad = &ff->adapters[k];
        linear_forward(down, h, ad->down_w, ad->down_b, rows, d, bn);
        relu_forward(down, (size_t)rows * bn);
        linear_forward(one, down, ad->up_w, ad->up_b, rows, bn, d);
        const float scale = ad->scale[0];
        const float *ratio = c->adapters == 1 ? NULL : (k == 0 ? ff->router_ratio1 : ff->router_ratio2) + (size_t)router_idx * d;
        for (int r = 0; r < rows; r++) {
            float *o = one + (size_t)r * d, *dst = route + (size_t)r * d;
            for (int j = 0; j < d; j++) {
                float v = o[j] * scale;
                if (ratio) v *= ratio[j];
                dst[j] = k == 0 ? v : dst[j] + v;
            }
        }
    }
    rmsnorm_forward(x, h, ff->norm, rows, d, c->ln_eps);
    product(m, step, g, x, ff->wi_0, ff->wi_0_16, rows, d, f);
    activation_forward(g, (size_t)rows * f, c->ff_act);
    product(m, step, u, x, ff->wi_1, ff->wi_1_16, rows, d, f);
    mul_forward(g, g, u, (size_t)rows * f);
    product(m, step, x, g, ff->wo, ff->wo_16, rows, f, d);
    add_forward(h, x, nd);
    if (route) add_forward(h, route, nd);
    arena_restore(a, mark);
    return 0;
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
        linear_forward(q, x, l->self.q, NULL, rows, d, inner);
        linear_forward(k, x, l->self.k, NULL, rows, d, inner);
        linear_forward(v, x, l->self.v, NULL, rows, d, inner);
        attention_args at = {.batch = batch, .heads = c->heads, .head_dim = c->d_kv, .q_len = len, .k_len = len,
                             .q = q, .k = k, .v = v, .out = att, .q_stride = inner, .k_stride = inner,
                             .v_stride = inner, .out_stride = inner, .scale = 1.0f, .key_mask = key_mask,
                             .bias = bias, .bias_batch_stride = 0};
        if (attention_forward(&at, a)) goto oom;
        linear_forward(x, att, l->self.o, NULL, rows, inner, d);
        add_forward(h, x, (size_t)rows * d);
        if (ff_forward(m, &l->ff, h, rows, router_idx, 0, a)) goto oom;
    }
    rmsnorm_forward(out, h, m->encoder.final_norm, rows, d, c->ln_eps);
    arena_restore(a, mark);
    return 0;
oom:
    arena_restore(a, mark);
    return lion_fail(st, LION_ENOMEM, "t5_encode: out of scratch memory for batch %d x %d tokens", batch, len);
}

/* ------------------------------------------------------------------ decoder */

void t5_decoder_free(t5_decoder *dec) {
    free(dec->enc_mask);
    free(dec->cross_k);
    free(dec->cross_v);
    free(dec->self_k);
    free(dec->self_v);
    memset(dec, 0, sizeof *dec);
}

int t5_decoder_init(t5_decoder *dec, const t5_model *m, const float *enc, const uint8_t *enc_mask, int batch,
                    int enc_len, int beams, int max_steps, int router_idx, lion_status *st) {
    const t5_config *c = &m->cfg;
    memset(dec, 0, sizeof *dec);
    if (batch <= 0 || enc_len <= 0 || beams <= 0 || max_steps <= 0)
        return lion_fail(st, LION_EINVAL, "t5_decoder: batch %d, encoder length %d, beams %d, steps %d must be positive",
                         batch, enc_len, beams, max_steps);
    if (c->adapters == 2 && router_idx != 0 && router_idx != 1)
        return lion_fail(st, LION_EINVAL, "t5_decoder: router index %d is not 0 or 1", router_idx);
    const int layers = m->decoder.n_layers, d = c->d_model;
    dec->layers = layers, dec->batch = batch, dec->beams = beams, dec->rows = batch * beams;
    dec->enc_len = enc_len, dec->capacity = max_steps, dec->router_idx = router_idx;
    dec->inner = c->heads * c->d_kv;
    const size_t cross = (size_t)layers * batch * enc_len * dec->inner;
    const size_t self = (size_t)layers * dec->rows * max_steps * dec->inner;
    dec->enc_mask = malloc((size_t)batch * enc_len);
    dec->cross_k = malloc(cross * sizeof(float));
    dec->cross_v = malloc(cross * sizeof(float));
    dec->self_k = malloc(self * sizeof(float));
    dec->self_v = malloc(self * sizeof(float));
    if (!dec->enc_mask || !dec->cross_k || !dec->cross_v || !dec->self_k || !dec->self_v) {
        t5_decoder_free(dec);
        return lion_fail(st, LION_ENOMEM, "t5_decoder: out of memory for %d rows x %d steps", batch * beams,
                         max_steps);
    }
    for (int b = 0; b < batch; b++) {
        int any = 0;
        for (int j = 0; j < enc_len; j++) {
            uint8_t v = enc_mask ? enc_mask[(size_t)b * enc_len + j] != 0 : 1;
            dec->enc_mask[(size_t)b * enc_len + j] = v;
            any |= v;
        }
        if (!any) {
            t5_decoder_free(dec);
            return lion_fail(st, LION_EINVAL, "t5_decoder: batch row %d has no unmasked encoder token", b);
        }
    }
    const size_t per = (size_t)batch * enc_len * dec->inner;
    for (int i = 0; i < layers; i++) {
        const t5_attention *x = &m->decoder.layers[i].cross;
        linear_forward(dec->cross_k + i * per, enc, x->k, NULL, batch * enc_len, d, dec->inner);
        linear_forward(dec->cross_v + i * per, enc, x->v, NULL, batch * enc_len, d, dec->inner);
    }
    return 0;
}

int t5_decoder_step(const t5_model *m, t5_decoder *dec, const int32_t *tokens, float *logits, arena *a,
                    lion_status *st) {
    const t5_config *c = &m->cfg;
    const int rows = dec->rows, d = c->d_model, inner = dec->inner, pos = dec->len, k_len = pos + 1;
    for (int r = 0; r < rows; r++)
        if (tokens[r] < 0 || tokens[r] >= c->vocab_size)
            return lion_fail(st, LION_EINVAL, "t5_decoder: token %d of row %d is outside the vocabulary of %d",
                             (int)tokens[r], r, c->vocab_size);
    if (pos >= dec->capacity)
        return lion_fail(st, LION_ETOOBIG, "t5_decoder: cache full at %d positions", dec->capacity);
    arena_mark mark = arena_save(a);
    float *h = arena_floats(a, (size_t)rows * d), *x = arena_floats(a, (size_t)rows * d);
    float *q = arena_floats(a, (size_t)rows * inner), *kv = arena_floats(a, (size_t)rows * inner * 2);
    float *att = arena_floats(a, (size_t)rows * inner), *bias = arena_floats(a, (size_t)c->heads * k_len);
    if (!h || !x || !q || !kv || !att || !bias) goto oom;
    embedding_forward(h, m->shared, tokens, rows, d);
    /* causal buckets of the one new query against every cached key, shared by all layers */
    position_bias(bias, m->decoder.rel_bias, c, 0, 1, pos, k_len);
    const size_t self_layer = (size_t)rows * dec->capacity * inner, row_stride = (size_t)dec->capacity * inner;
    const size_t cross_layer = (size_t)dec->batch * dec->enc_len * inner;
    for (int i = 0; i < m->decoder.n_layers; i++) {
        const t5_layer *l = &m->decoder.layers[i];
        float *ck = dec->self_k + i * self_layer, *cv = dec->self_v + i * self_layer;
        rmsnorm_forward(x, h, l->self.norm, rows, d, c->ln_eps);
        product(m, 1, q, x, l->self.q, l->self.q16, rows, d, inner);
        product(m, 1, kv, x, l->self.k, l->self.k16, rows, d, inner);
        product(m, 1, kv + (size_t)rows * inner, x, l->self.v, l->self.v16, rows, d, inner);
        for (int r = 0; r < rows; r++) {
            memcpy(ck + r * row_stride + (size_t)pos * inner, kv + (size_t)r * inner, inner * sizeof(float));
            memcpy(cv + r * row_stride + (size_t)pos * inner, kv + ((size_t)rows + r) * inner, inner * sizeof(float));
        }
        /* each row's cache is its own batch of k_len keys, so one call per row */
        for (int r = 0; r < rows; r++) {
            attention_args at = {.batch = 1, .heads = c->heads, .head_dim = c->d_kv, .q_len = 1, .k_len = k_len,
                                 .q = q + (size_t)r * inner, .k = ck + r * row_stride, .v = cv + r * row_stride,
                                 .out = att + (size_t)r * inner, .q_stride = inner, .k_stride = inner,
                                 .v_stride = inner, .out_stride = inner, .scale = 1.0f, .bias = bias};
            if (attention_forward(&at, a)) goto oom;
        }
        product(m, 1, x, att, l->self.o, l->self.o16, rows, inner, d);
        add_forward(h, x, (size_t)rows * d);

        /* cross-attention: the beams of one batch element are that element's queries */
        rmsnorm_forward(x, h, l->cross.norm, rows, d, c->ln_eps);
        product(m, 1, q, x, l->cross.q, l->cross.q16, rows, d, inner);
        attention_args xa = {.batch = dec->batch, .heads = c->heads, .head_dim = c->d_kv, .q_len = dec->beams,
                             .k_len = dec->enc_len, .q = q, .k = dec->cross_k + i * cross_layer,
                             .v = dec->cross_v + i * cross_layer, .out = att, .q_stride = inner, .k_stride = inner,
                             .v_stride = inner, .out_stride = inner, .scale = 1.0f, .key_mask = dec->enc_mask};
        if (attention_forward(&xa, a)) goto oom;
        product(m, 1, x, att, l->cross.o, l->cross.o16, rows, inner, d);
        add_forward(h, x, (size_t)rows * d);

        if (ff_forward(m, &l->ff, h, rows, dec->router_idx, 1, a)) goto oom;
    }
    rmsnorm_forward(x, h, m->decoder.final_norm, rows, d, c->ln_eps);
    if (c->tie_word_embeddings) {
        const float s = 1.0f / sqrtf((float)d);
        for (size_t j = 0; j < (size_t)rows * d; j++) x[j] *= s;
    }
    product(m, 1, logits, x, m->lm_head, m->lm_head16, rows, d, c->vocab_size);
    dec->len++;
    arena_restore(a, mark);
    return 0;
oom:
    arena_restore(a, mark);
    return lion_fail(st, LION_ENOMEM, "t5_decoder: out of scratch memory for %d rows", rows);
}

int t5_decoder_reorder(t5_decoder *dec, const int *src, arena *a, lion_status *st) {
    const int rows = dec->rows, beams = dec->beams;
    int moved = 0;
    for (int r = 0; r < rows; r++) {
        if (src[r] < 0 || src[r] >= rows || src[r] / beams != r / beams)
            return lion_fail(st, LION_EINVAL,
                             "t5_decoder: reorder source %d for row %d is not a beam of its batch element", src[r], r);
        moved |= src[r] != r;
    }
    if (!moved) return 0;
    /* a permutation cannot be gathered in place row by row: stage the used part of a layer's
     * rows, then write back the rows that change */
    const size_t row = (size_t)dec->capacity * dec->inner, used = (size_t)dec->len * dec->inner;
    arena_mark mark = arena_save(a);
    float *stage = arena_floats(a, (size_t)rows * used);
    if (!stage) return lion_fail(st, LION_ENOMEM, "t5_decoder: out of scratch memory to reorder %d rows", rows);
    for (size_t i = 0; i < (size_t)dec->layers * 2; i++) {
        float *cache = (i % 2 ? dec->self_v : dec->self_k) + (i / 2) * rows * row;
        for (int r = 0; r < rows; r++) memcpy(stage + r * used, cache + r * row, used * sizeof(float));
        for (int r = 0; r < rows; r++)
            if (src[r] != r) memcpy(cache + r * row, stage + (size_t)src[r] * used, used * sizeof(float));
    }
    arena_restore(a, mark);
    return 0;
}

/* Moves the kept items of an array of layers x items x item_size floats down in place, only
 * the first used floats of each item (the rest of a cache row is unwritten). Destinations
 * never pass their sources (the new layout is no larger and keeps the order), so walking
 * forward with memmove never overwrites an item not yet moved. */
static void keep_items(float *base, int layers, int items, int new_items, size_t item_size, size_t used,
                       const uint8_t *keep, int per_keep) {
    for (int i = 0; i < layers; i++) {
        int k = 0;
        for (int r = 0; r < items; r++) {
            if (!keep[r / per_keep]) continue;
            float *src = base + ((size_t)i * items + r) * item_size, *dst = base + ((size_t)i * new_items + k) * item_size;
            if (dst != src) memmove(dst, src, used * sizeof(float));
            k++;
        }
    }
}

int t5_decoder_keep(t5_decoder *dec, const uint8_t *keep) {
    int kept = 0;
    for (int b = 0; b < dec->batch; b++) kept += keep[b] != 0;
    if (kept == dec->batch) return kept;
    const int new_rows = kept * dec->beams;
    const size_t row = (size_t)dec->capacity * dec->inner, used = (size_t)dec->len * dec->inner;
    const size_t cross = (size_t)dec->enc_len * dec->inner;
    keep_items(dec->self_k, dec->layers, dec->rows, new_rows, row, used, keep, dec->beams);
    keep_items(dec->self_v, dec->layers, dec->rows, new_rows, row, used, keep, dec->beams);
    keep_items(dec->cross_k, dec->layers, dec->batch, kept, cross, cross, keep, 1);
    keep_items(dec->cross_v, dec->layers, dec->batch, kept, cross, cross, keep, 1);
    for (int b = 0, k = 0; b < dec->batch; b++)
        if (keep[b]) memmove(dec->enc_mask + (size_t)k++ * dec->enc_len, dec->enc_mask + (size_t)b * dec->enc_len,
                             (size_t)dec->enc_len);
    dec->batch = kept;
    dec->rows = new_rows;
    return kept;
}
