#include "llama.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "matvec_bf16.h"
#include "ops.h"

/* ------------------------------------------------------------------ loading */

static int load_adapter(llama_adapter *ad, weights *w, lion_status *st, int i, const char *which, int64_t d,
                        int64_t bn) {
    int64_t s_down[] = {bn, d}, s_bn[] = {bn}, s_up[] = {d, bn}, s_d[] = {d};
    if (!(ad->down_w = weights_get(w, st, 2, s_down, "model.layers.%d.%s.tune_adapter_a.weight", i, which)) ||
        !(ad->down_b = weights_get(w, st, 1, s_bn, "model.layers.%d.%s.tune_adapter_a.bias", i, which)) ||
        !(ad->up_w = weights_get(w, st, 2, s_up, "model.layers.%d.%s.tune_adapter_b.weight", i, which)) ||
        !(ad->up_b = weights_get(w, st, 1, s_d, "model.layers.%d.%s.tune_adapter_b.bias", i, which)))
        return -1;
    return 0;
}

/* Every matrix is LINEAR_STEP: held once, read by prefill and step alike (llama.h). */
static int load_layer(llama_layer *l, const llama_model *m, weights *w, lion_status *st, int i) {
    const llama_config *c = &m->cfg;
    const lion_precision p = m->precision;
    const int d = c->dim, f = c->hidden, qd = m->q_dim, kvd = m->kv_dim;
    int64_t s_d[] = {d};
    if (!(l->attn_norm = weights_get(w, st, 1, s_d, "model.layers.%d.input_layernorm.weight", i)) ||
        linear_bind(&l->wq, w, p, LINEAR_STEP, qd, d, st, "model.layers.%d.self_attn.q_proj.weight", i) ||
        linear_bind(&l->wk, w, p, LINEAR_STEP, kvd, d, st, "model.layers.%d.self_attn.k_proj.weight", i) ||
        linear_bind(&l->wv, w, p, LINEAR_STEP, kvd, d, st, "model.layers.%d.self_attn.v_proj.weight", i) ||
        linear_bind(&l->wo, w, p, LINEAR_STEP, d, qd, st, "model.layers.%d.self_attn.o_proj.weight", i) ||
        !(l->ffn_norm = weights_get(w, st, 1, s_d, "model.layers.%d.post_attention_layernorm.weight", i)) ||
        linear_bind(&l->w_gate, w, p, LINEAR_STEP, f, d, st, "model.layers.%d.mlp.gate_proj.weight", i) ||
        linear_bind(&l->w_up, w, p, LINEAR_STEP, f, d, st, "model.layers.%d.mlp.up_proj.weight", i) ||
        linear_bind(&l->w_down, w, p, LINEAR_STEP, d, f, st, "model.layers.%d.mlp.down_proj.weight", i))
        return -1;
    if (c->adapter_dim > 0) {
        if (c->adapter_attn && load_adapter(&l->adapter_attn, w, st, i, "adapter_attn", d, c->adapter_dim)) return -1;
        if (c->adapter_mlp && load_adapter(&l->adapter_mlp, w, st, i, "adapter_mlp", d, c->adapter_dim)) return -1;
    }
    return 0;
}

int llama_load(llama_model *m, const llama_config *c, weights *w, lion_status *st) {
    return llama_load_with(m, c, w, PRECISION_F32, st);
}

int llama_load_with(llama_model *m, const llama_config *c, weights *w, lion_precision precision, lion_status *st) {
    memset(m, 0, sizeof *m);
    if (precision != PRECISION_F32 && precision != PRECISION_BF16)
        return lion_fail(st, LION_EINVAL, "llama: precision %s: load with f32 or bf16", precision_name(precision));
    if (c->dim <= 0 || c->hidden <= 0 || c->layers <= 0 || c->heads <= 0 || c->kv_heads <= 0 || c->vocab_size <= 0)
        return lion_fail(st, LION_EINVAL, "llama: dimensions must be positive (dim %d, hidden %d, layers %d, heads %d, "
                         "kv_heads %d, vocab %d)", c->dim, c->hidden, c->layers, c->heads, c->kv_heads, c->vocab_size);
    if (c->dim % c->heads || c->heads % c->kv_heads || (c->dim / c->heads) % 2)
        return lion_fail(st, LION_EINVAL, "llama: heads %d must divide dim %d into even head widths and kv_heads %d "
                         "divide heads", c->heads, c->dim, c->kv_heads);
    if (c->adapter_dim < 0 || !(c->rope_theta > 0) || !(c->rms_eps >= 0))
        return lion_fail(st, LION_EINVAL, "llama: adapter_dim %d, rope_theta %g, rms_eps %g out of range",
                         c->adapter_dim, c->rope_theta, c->rms_eps);
    m->cfg = *c;
    m->precision = precision;
    m->head_dim = c->dim / c->heads;
    m->q_dim = c->heads * m->head_dim;
    m->kv_dim = c->kv_heads * m->head_dim;
    int64_t s_emb[] = {c->vocab_size, c->dim}, s_d[] = {c->dim};
    if (!(m->embed = weights_get(w, st, 2, s_emb, "model.embed_tokens.weight")) ||
        !(m->norm = weights_get(w, st, 1, s_d, "model.norm.weight")) ||
        linear_bind(&m->lm_head, w, precision, LINEAR_STEP, c->vocab_size, c->dim, st, "lm_head.weight"))
        return -1;
    m->layer = calloc((size_t)c->layers, sizeof *m->layer);
    if (!m->layer) {
        llama_free(m);
        return lion_fail(st, LION_ENOMEM, "llama: out of memory");
    }
    for (int i = 0; i < c->layers; i++)
        if (load_layer(&m->layer[i], m, w, st, i)) {
            llama_free(m);
            return -1;
        }
    return 0;
}

/* Every matrix of the model, for the loops below: the layers' seven, then lm_head. */
static int n_matrices(const llama_model *m) {
    return m->layer ? 7 * m->cfg.layers + 1 : 1;
}

static linear *matrix(llama_model *m, int k) {
    if (k == 7 * m->cfg.layers || !m->layer) return &m->lm_head;
    llama_layer *l = &m->layer[k / 7];
    linear *all[] = {&l->wq, &l->wk, &l->wv, &l->wo, &l->w_gate, &l->w_up, &l->w_down};
    return all[k % 7];
}

int llama_to_bf16(llama_model *m, lion_status *st) {
    for (int k = 0; k < n_matrices(m); k++) {
        linear *l = matrix(m, k), b;
        if (l->precision != PRECISION_F32) continue;
        if (linear_from_f32(&b, l->w, l->out, l->in, PRECISION_BF16, LINEAR_STEP, st)) return -1;
        linear_free(l); /* an f32 linear owns nothing: this only clears it */
        *l = b;
    }
    m->precision = PRECISION_BF16;
    return 0;
}

size_t llama_matrix_bytes(const llama_model *m, size_t *released) {
    size_t bytes = 0, given = 0;
    for (int k = 0; k < n_matrices(m); k++) {
        const linear *l = matrix((llama_model *)m, k);
        bytes += linear_bytes(l);
        given += l->released_bytes;
    }
    if (released) *released = given;
    return bytes;
}

void llama_free(llama_model *m) {
    for (int k = 0; k < n_matrices(m); k++) linear_free(matrix(m, k));
    free(m->layer);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------------ cache */

int llama_cache_init(llama_cache *c, const llama_model *m, int slots, int capacity, lion_status *st) {
    memset(c, 0, sizeof *c);
    if (slots <= 0 || capacity <= 0)
        return lion_fail(st, LION_EINVAL, "llama_cache: slots %d and capacity %d must be positive", slots, capacity);
    c->layers = m->cfg.layers, c->slots = slots, c->capacity = capacity, c->kv_dim = m->kv_dim;
    const size_t n = (size_t)c->layers * slots * capacity * c->kv_dim;
    c->len = calloc((size_t)slots, sizeof *c->len);
    c->k = malloc(n * sizeof(float));
    c->v = malloc(n * sizeof(float));
    if (!c->len || !c->k || !c->v) {
        llama_cache_free(c);
        return lion_fail(st, LION_ENOMEM, "llama_cache: out of memory for %d slots x %d positions", slots, capacity);
    }
    return 0;
}

void llama_cache_free(llama_cache *c) {
    free(c->len);
    free(c->k);
    free(c->v);
    memset(c, 0, sizeof *c);
}

void llama_cache_reset(llama_cache *c, int slot) {
    if (slot >= 0 && slot < c->slots) c->len[slot] = 0;
}

/* Start of slot's positions in layer's keys (or values). */
static float *cache_at(const llama_cache *c, float *base, int layer, int slot) {
    return base + ((size_t)layer * c->slots + slot) * c->capacity * c->kv_dim;
}

int llama_cache_copy(llama_cache *c, int dst, int src, lion_status *st) {
    if (dst < 0 || dst >= c->slots || src < 0 || src >= c->slots)
        return lion_fail(st, LION_EINVAL, "llama_cache: copy %d -> %d outside %d slots", src, dst, c->slots);
    if (dst == src) return 0;
    const size_t used = (size_t)c->len[src] * c->kv_dim * sizeof(float);
    for (int l = 0; l < c->layers; l++) {
        memcpy(cache_at(c, c->k, l, dst), cache_at(c, c->k, l, src), used);
        memcpy(cache_at(c, c->v, l, dst), cache_at(c, c->v, l, src), used);
    }
    c->len[dst] = c->len[src];
    return 0;
}

/* ------------------------------------------------------------------ forward */

int llama_embed(const llama_model *m, const int32_t *ids, int n, float *out, lion_status *st) {
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
            return lion_fail(st, LION_EINVAL, "llama: token %d at %d is outside the vocabulary of %d", (int)ids[i], i,
                             m->cfg.vocab_size);
    embedding_forward(out, m->embed, ids, n, m->cfg.dim);
    return 0;
}

/* y = x W^T. f32: a few rows (decode steps) read W once for all of them through matvec_f32;
 * one row is sgemv's, many rows (a prompt) sgemm's (linear_forward picks). bf16: a step's rows
 * (step set) all go through matvec_bf16 (the matrices are LINEAR_STEP, so linear.c does that
 * with any number of rows); a prefill's products are marked so (linear_post.prefill):
 * matvec_bf16 up to its row limit, panels widened to f32 and sgemm beyond (llama.h). 0, or -1
 * with st filled (scratch). */
static int product(const linear *l, float *y, const float *x, int rows, int step, arena *a, lion_status *st) {
    if (l->precision == PRECISION_F32) {
        if (rows >= 2 && rows <= LLAMA_MATVEC_MAX_ROWS) matvec_f32(y, x, l->w, NULL, rows, l->in, l->out);
        else linear_forward(y, x, l->w, NULL, rows, l->in, l->out);
        return 0;
    }
    const linear_post prefill = {.prefill = !step};
    return linear_forward_post(l, y, x, NULL, rows, &prefill, a, st);
}

static int adapter(const llama_adapter *ad, float *h, int rows, const llama_config *c, int silu, arena *a) {
    if (!ad->down_w) return 0;
    return adapter_forward(h, rows, c->dim, c->adapter_dim, ad->down_w, ad->down_b, ad->up_w, ad->up_b, silu, a);
}

int llama_forward(const llama_model *m, llama_cache *c, int seqs, const int *slots, const int *n, const float *x,
                  float *logits, arena *a, lion_status *st) {
    const llama_config *cfg = &m->cfg;
    if (seqs <= 0) return lion_fail(st, LION_EINVAL, "llama: %d sequences", seqs);
    int rows = 0;
    for (int s = 0; s < seqs; s++) {
        if (slots[s] < 0 || slots[s] >= c->slots)
            return lion_fail(st, LION_EINVAL, "llama: slot %d outside the cache's %d", slots[s], c->slots);
        for (int t = 0; t < s; t++)
            if (slots[t] == slots[s]) return lion_fail(st, LION_EINVAL, "llama: slot %d given twice", slots[s]);
        if (n[s] <= 0) return lion_fail(st, LION_EINVAL, "llama: sequence %d appends %d positions", s, n[s]);
        if (c->len[slots[s]] + n[s] > c->capacity)
            return lion_fail(st, LION_ETOOBIG, "llama: cache full: slot %d holds %d of %d positions, %d more asked",
                             slots[s], c->len[slots[s]], c->capacity, n[s]);
        rows += n[s];
    }
    /* one new position per sequence: a decode step (product) */
    int step = 1;
    for (int s = 0; s < seqs; s++) step &= n[s] == 1;
    const int d = cfg->dim, f = cfg->hidden, hd = m->head_dim, qd = m->q_dim, kvd = m->kv_dim;
    const int rep = cfg->heads / cfg->kv_heads;
    arena_mark mark = arena_save(a);
    float *h = arena_floats(a, (size_t)rows * d), *xn = arena_floats(a, (size_t)rows * d);
    float *q = arena_floats(a, (size_t)rows * qd), *att = arena_floats(a, (size_t)rows * qd);
    float *k = arena_floats(a, (size_t)rows * kvd), *v = arena_floats(a, (size_t)rows * kvd);
    float *g = arena_floats(a, (size_t)rows * f), *u = arena_floats(a, (size_t)rows * f);
    int *pos = arena_alloc(a, (size_t)rows * sizeof(int));
    if (!h || !xn || !q || !att || !k || !v || !g || !u || !pos) goto oom;
    memcpy(h, x, (size_t)rows * d * sizeof(float));
    /* each row's position: its sequence continues at the cached length */
    for (int s = 0, r = 0; s < seqs; s++)
        for (int t = 0; t < n[s]; t++) pos[r++] = c->len[slots[s]] + t;

    for (int i = 0; i < cfg->layers; i++) {
        const llama_layer *l = &m->layer[i];
        rmsnorm_forward(xn, h, l->attn_norm, rows, d, cfg->rms_eps);
        if (adapter(&l->adapter_attn, xn, rows, cfg, cfg->adapter_silu, a)) goto oom;
        if (product(&l->wq, q, xn, rows, step, a, st) || product(&l->wk, k, xn, rows, step, a, st) ||
            product(&l->wv, v, xn, rows, step, a, st))
            goto fail;
        rope_forward(q, rows, qd, cfg->heads, hd, pos, cfg->rope_theta);
        rope_forward(k, rows, kvd, cfg->kv_heads, hd, pos, cfg->rope_theta);
        for (int s = 0, r0 = 0; s < seqs; r0 += n[s], s++) {
            const int start = c->len[slots[s]], total = start + n[s];
            float *kc = cache_at(c, c->k, i, slots[s]), *vc = cache_at(c, c->v, i, slots[s]);
            memcpy(kc + (size_t)start * kvd, k + (size_t)r0 * kvd, (size_t)n[s] * kvd * sizeof(float));
            memcpy(vc + (size_t)start * kvd, v + (size_t)r0 * kvd, (size_t)n[s] * kvd * sizeof(float));
            /* one head at a time: query head hh reads key/value head hh / rep (GQA), which
             * attention_args' shared head index cannot express; causal with the cache in front */
            for (int hh = 0; hh < cfg->heads; hh++) {
                attention_args at = {.batch = 1, .heads = 1, .head_dim = hd, .q_len = n[s], .k_len = total,
                                     .q = q + (size_t)r0 * qd + (size_t)hh * hd, .q_stride = qd,
                                     .k = kc + (size_t)(hh / rep) * hd, .k_stride = kvd,
                                     .v = vc + (size_t)(hh / rep) * hd, .v_stride = kvd,
                                     .out = att + (size_t)r0 * qd + (size_t)hh * hd, .out_stride = qd,
                                     .scale = 1.0f / sqrtf((float)hd), .causal = 1};
                if (attention_forward(&at, a)) goto oom;
            }
        }
        if (product(&l->wo, xn, att, rows, step, a, st)) goto fail;
        add_forward(h, xn, (size_t)rows * d);

        rmsnorm_forward(xn, h, l->ffn_norm, rows, d, cfg->rms_eps);
        if (adapter(&l->adapter_mlp, xn, rows, cfg, 0, a)) goto oom;
        if (product(&l->w_gate, g, xn, rows, step, a, st)) goto fail;
        silu_forward(g, (size_t)rows * f);
        if (product(&l->w_up, u, xn, rows, step, a, st)) goto fail;
        mul_forward(g, g, u, (size_t)rows * f);
        if (product(&l->w_down, xn, g, rows, step, a, st)) goto fail;
        add_forward(h, xn, (size_t)rows * d);
    }
    for (int s = 0; s < seqs; s++) c->len[slots[s]] += n[s];

    /* the last new row of each sequence, normalised, through lm_head */
    for (int s = 0, r = 0; s < seqs; s++) {
        r += n[s];
        memcpy(xn + (size_t)s * d, h + (size_t)(r - 1) * d, (size_t)d * sizeof(float));
    }
    rmsnorm_forward(xn, xn, m->norm, seqs, d, cfg->rms_eps);
    /* lm_head reads one row per sequence: a step's form whatever the call was */
    if (product(&m->lm_head, logits, xn, seqs, 1, a, st)) goto fail;
    arena_restore(a, mark);
    return 0;
oom:
    lion_fail(st, LION_ENOMEM, "llama: out of scratch memory for %d rows", rows);
fail:
    arena_restore(a, mark);
    return -1;
}

int llama_step(const llama_model *m, llama_cache *c, int seqs, const int *slots, const int32_t *tokens, float *logits,
               arena *a, lion_status *st) {
    if (seqs <= 0) return lion_fail(st, LION_EINVAL, "llama: %d sequences", seqs);
    arena_mark mark = arena_save(a);
    float *x = arena_floats(a, (size_t)seqs * m->cfg.dim);
    int *ones = arena_alloc(a, (size_t)seqs * sizeof(int));
    if (!x || !ones) {
        arena_restore(a, mark);
        return lion_fail(st, LION_ENOMEM, "llama: out of scratch memory for %d rows", seqs);
    }
    for (int s = 0; s < seqs; s++) ones[s] = 1;
    int rc = llama_embed(m, tokens, seqs, x, st);
    if (rc == 0) rc = llama_forward(m, c, seqs, slots, ones, x, logits, a, st);
    arena_restore(a, mark);
    return rc;
}
