/* The llm's bf16 path against its own f32 at true widths with truncated depth, on random
 * weights (no reference needed: the question is what bf16 storage costs, and the f32 path is
 * checked against PyTorch by test_t5 and test_llama):
 *
 *   FlanT5-XL (d_model 2048, d_ff 5120, 32 heads of 64, vocab 32128, 2 adapters of 64): an
 *   encoder of 2 layers over 100 tokens, then the cross-attention keys/values and two decoder
 *   steps (1 layer) of 3 beams, everything bf16 in one model (t5_to_bf16: the encoder's
 *   matrices and the cross k/v in linear.h's many-row form, the step's LINEAR_STEP);
 *   LLaMA-2-7B (dim 4096, 32 heads, hidden 11008), 1 layer, with adapters: a prefill of 20
 *   tokens (panels widened to f32 + sgemm) and two steps of 2 sequences (matvec_bf16). Its
 *   vocabulary is cut to 8000: a logit's error depends on the width it sums over (4096), not
 *   on how many logits there are, and the full 32000 would add 0.5 GB of f32 to a shared
 *   machine's test run.
 *
 * Measured: testing_rel_err (max |bf16 - f32| / max |f32|) of the encoder output, of the
 * logits of each step and of the prefill; printed, and held under bounds stated below. Also:
 * bf16 matrices take half the bytes of f32's (linear_bytes), and each is held in the form the
 * model's headers say. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "cpu_features.h"
#include "llama.h"
#include "t5.h"
#include "testing.h"
#include "weight_builder.h"
#include "threads.h"

/* Bounds on testing_rel_err of bf16 against f32. bf16 keeps 8 bits of mantissa: each weight
 * moves by up to 2^-9 relative, with random signs, so a product's output moves by about
 * 2^-9 / sqrt(3) of its typical size, compounded through the layers. Measured here (printed;
 * AVX2 CPU without native bf16): T5 encoder 2.9e-3, T5 steps 3.0e-3, LLaMA prefill 1.6e-3,
 * steps 2.1e-3; asserted with about 3x margin.
 * On a CPU with native bf16 the encoder's products also round x to bf16 (oneDNN), about
 * doubling that part of the error: within the same bounds. */
#define T5_ENC_BOUND 1e-2
#define T5_STEP_BOUND 1e-2
#define LLAMA_BOUND 6e-3

static uint64_t seed = 0x9e3779b97f4a7c15ull;

/* Uniform in [-scale, scale] (weight_builder's generator, continuing seed). */
static float *random_floats(size_t n, float scale) {
    float *p = malloc(n * sizeof *p);
    if (p) weight_builder_fill(p, n, scale, &seed);
    return p;
}

static float *constant_floats(size_t n, float v) {
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; p && i < n; i++) p[i] = v;
    return p;
}

/* Every array made for a model, freed together at the end. */
typedef struct pool {
    float *p[512];
    int n, failed;
} pool;

static const float *keep(pool *pl, float *p) {
    if (!p || pl->n == (int)(sizeof pl->p / sizeof pl->p[0])) {
        pl->failed = 1;
        free(p);
        return NULL;
    }
    return pl->p[pl->n++] = p;
}

static void pool_free(pool *pl) {
    for (int i = 0; i < pl->n; i++) free(pl->p[i]);
    pl->n = 0;
}

/* An f32 linear [out][in] of random weights of variance about 1/(3 in): outputs of unit-ish
 * size from unit-size inputs. */
static void random_linear(pool *pl, linear *l, int out, int in, int flags) {
    lion_status st;
    const float *w = keep(pl, random_floats((size_t)out * in, 1.0f / sqrtf((float)in)));
    if (!w || linear_from_f32(l, w, out, in, PRECISION_F32, flags, &st)) pl->failed = 1;
}

/* ------------------------------------------------------------------ FlanT5-XL */

static void random_attention(pool *pl, t5_attention *at, int d, int inner, int qo, int kv) {
    at->norm = keep(pl, constant_floats((size_t)d, 1.0f));
    random_linear(pl, &at->q, inner, d, qo);
    random_linear(pl, &at->k, inner, d, kv);
    random_linear(pl, &at->v, inner, d, kv);
    random_linear(pl, &at->o, d, inner, qo);
}

static void random_ff(pool *pl, t5_ff *ff, const t5_config *c, int flags) {
    const size_t d = c->d_model, bn = c->adapter_bottleneck;
    ff->norm = keep(pl, constant_floats(d, 1.0f));
    random_linear(pl, &ff->wi_0, c->d_ff, c->d_model, flags);
    random_linear(pl, &ff->wi_1, c->d_ff, c->d_model, flags);
    random_linear(pl, &ff->wo, c->d_model, c->d_ff, flags);
    for (int k = 0; k < c->adapters; k++) {
        t5_adapter *ad = &ff->adapters[k];
        ad->scale = keep(pl, constant_floats(1, 0.5f));
        ad->down_w = keep(pl, random_floats(bn * d, 1.0f / sqrtf((float)d)));
        ad->down_b = keep(pl, random_floats(bn, 0.1f));
        ad->up_w = keep(pl, random_floats(d * bn, 1.0f / sqrtf((float)bn)));
        ad->up_b = keep(pl, random_floats(d, 0.1f));
    }
    ff->router_ratio1 = keep(pl, random_floats(2 * d, 1.0f));
    ff->router_ratio2 = keep(pl, random_floats(2 * d, 1.0f));
}

static void random_stack(pool *pl, t5_stack *s, const t5_config *c, int decoder) {
    const int d = c->d_model, inner = c->heads * c->d_kv, step = decoder ? LINEAR_STEP : 0;
    s->n_layers = decoder ? c->decoder_layers : c->encoder_layers;
    s->layers = calloc((size_t)s->n_layers, sizeof *s->layers);
    if (!s->layers) {
        pl->failed = 1;
        return;
    }
    for (int i = 0; i < s->n_layers; i++) {
        random_attention(pl, &s->layers[i].self, d, inner, step, step);
        if (decoder) random_attention(pl, &s->layers[i].cross, d, inner, LINEAR_STEP, 0);
        random_ff(pl, &s->layers[i].ff, c, step);
    }
    /* T5 does not scale its attention scores: biases of a few units, as trained ones are */
    s->rel_bias = keep(pl, random_floats((size_t)c->rel_buckets * c->heads, 2.0f));
    s->final_norm = keep(pl, constant_floats((size_t)d, 1.0f));
}

/* A copy of m's layer tables, so that t5_free on each model frees only what it made. */
static int copy_tables(t5_model *dst, const t5_model *m) {
    *dst = *m;
    const size_t ne = (size_t)m->encoder.n_layers * sizeof(t5_layer), nd = (size_t)m->decoder.n_layers * sizeof(t5_layer);
    dst->encoder.layers = malloc(ne), dst->decoder.layers = malloc(nd);
    if (!dst->encoder.layers || !dst->decoder.layers) return -1;
    memcpy(dst->encoder.layers, m->encoder.layers, ne);
    memcpy(dst->decoder.layers, m->decoder.layers, nd);
    return 0;
}

/* Two steps of a decoder of `beams` rows on each model's own encoder output; the worst
 * testing_rel_err of the logits. */
static double t5_steps(const t5_model *mf, const t5_model *mb, const float *enc_f, const float *enc_b, int len,
                       int beams, arena *a) {
    lion_status st;
    const int V = mf->cfg.vocab_size;
    float *lf = malloc((size_t)beams * V * sizeof *lf), *lb = malloc((size_t)beams * V * sizeof *lb);
    t5_decoder df, db;
    double worst = 0;
    if (!lf || !lb || t5_decoder_init(&df, mf, enc_f, NULL, 1, len, beams, 2, 1, &st) ||
        t5_decoder_init(&db, mb, enc_b, NULL, 1, len, beams, 2, 1, &st)) {
        CHECK_MSG(0, "t5 decoders: %s", st.msg);
        free(lf), free(lb);
        return INFINITY;
    }
    const int32_t tokens[2][3] = {{0, 0, 0}, {37, 1200, 31000}};
    for (int s = 0; s < 2; s++) {
        CHECK_MSG(t5_decoder_step(mf, &df, tokens[s], lf, a, &st) == 0, "%s", st.msg);
        CHECK_MSG(t5_decoder_step(mb, &db, tokens[s], lb, a, &st) == 0, "%s", st.msg);
        worst = fmax(worst, testing_rel_err(lb, lf, (size_t)beams * V));
    }
    t5_decoder_free(&df), t5_decoder_free(&db);
    free(lf), free(lb);
    return worst;
}

static void test_t5_xl(void) {
    const t5_config c = {2048, 5120, 64, 32, 2, 1, 32128, 32, 128, 1e-6f, ACT_GELU, 2, 64, 0};
    const int len = 100, beams = 3, d = c.d_model;
    lion_status st;
    pool pl = {0};
    t5_model mf = {.cfg = c, .precision = PRECISION_F32, .step_matvec_f32 = 1}, mb;
    double t0 = (clock_mono_us() * 1e-6);
    mf.shared = keep(&pl, random_floats((size_t)c.vocab_size * d, 1.0f));
    random_linear(&pl, &mf.lm_head, c.vocab_size, d, LINEAR_STEP);
    random_stack(&pl, &mf.encoder, &c, 0);
    random_stack(&pl, &mf.decoder, &c, 1);
    if (pl.failed || copy_tables(&mb, &mf) || t5_to_bf16(&mb, &st)) {
        CHECK_MSG(0, "t5_xl: out of memory or %s", st.msg);
        t5_free(&mf);
        pool_free(&pl);
        return;
    }
    const double t_made = (clock_mono_us() * 1e-6) - t0;
    /* every matrix bf16 in the form t5.h gives it; half the bytes */
    t5_weight_bytes bf, bb;
    t5_weight_bytes_of(&mf, &bf);
    t5_weight_bytes_of(&mb, &bb);
    const linear *enc_wi = &mb.encoder.layers[0].ff.wi_0, *step_wi = &mb.decoder.layers[0].ff.wi_0;
    CHECK(mb.precision == PRECISION_BF16 && mb.step_bf16 && enc_wi->precision == PRECISION_BF16 &&
          !(enc_wi->flags & LINEAR_STEP) && step_wi->w16 && (step_wi->flags & LINEAR_STEP) && !step_wi->packed &&
          mb.decoder.layers[0].cross.k.precision == PRECISION_BF16 && mb.lm_head.w16);
    CHECK_MSG(2 * bb.step == bf.step, "t5_xl: bf16 step matrices %zu bytes, f32 %zu", bb.step, bf.step);
    if (!enc_wi->packed)
        CHECK_MSG(2 * bb.encoder == bf.encoder && 2 * bb.cross_kv == bf.cross_kv,
                  "t5_xl: bf16 encoder %zu + cross %zu bytes, f32 %zu + %zu", bb.encoder, bb.cross_kv, bf.encoder,
                  bf.cross_kv);
    CHECK(bb.owned == bb.encoder + bb.cross_kv + bb.step && bf.owned == 0);

    float *x = random_floats((size_t)len * d, 1.0f);
    float *enc_f = malloc((size_t)len * d * sizeof *enc_f), *enc_b = malloc((size_t)len * d * sizeof *enc_b);
    arena a;
    arena_init(&a, 0);
    double t_f = 0, t_b = 0;
    if (x && enc_f && enc_b) {
        t0 = (clock_mono_us() * 1e-6);
        CHECK_MSG(t5_encode(&mf, x, NULL, 1, len, 1, enc_f, &a, &st) == 0, "%s", st.msg);
        t_f = (clock_mono_us() * 1e-6) - t0, t0 = (clock_mono_us() * 1e-6);
        CHECK_MSG(t5_encode(&mb, x, NULL, 1, len, 1, enc_b, &a, &st) == 0, "%s", st.msg);
        t_b = (clock_mono_us() * 1e-6) - t0;
        const double e_enc = testing_rel_err(enc_b, enc_f, (size_t)len * d);
        const double e_step = t5_steps(&mf, &mb, enc_f, enc_b, len, beams, &a);
        printf("t5_xl (2 + 1 layers, %d tokens): bf16 vs f32: encoder %.2e (bound %.0e), 2 steps of %d beams %.2e "
               "(bound %.0e); encoder f32 %.2f s, bf16 %.2f s (%s); matrices f32 %.2f GB, bf16 %.2f GB; made in "
               "%.1f s\n",
               len, e_enc, T5_ENC_BOUND, beams, e_step, T5_STEP_BOUND, t_f, t_b, linear_form(enc_wi),
               (bf.encoder + bf.cross_kv + bf.step) / 1e9, (bb.encoder + bb.cross_kv + bb.step) / 1e9, t_made);
        CHECK_MSG(e_enc <= T5_ENC_BOUND, "t5_xl bf16 encoder: relative error %.3g > %.3g", e_enc, T5_ENC_BOUND);
        CHECK_MSG(e_step <= T5_STEP_BOUND, "t5_xl bf16 steps: relative error %.3g > %.3g", e_step, T5_STEP_BOUND);
        CHECK_MSG(e_enc > 1e-5 && e_step > 1e-5, "t5_xl: bf16 rounded nothing (%.3g, %.3g)", e_enc, e_step);
    } else {
        CHECK_MSG(0, "t5_xl: out of memory");
    }
    free(x), free(enc_f), free(enc_b);
    arena_free(&a);
    t5_free(&mb);
    t5_free(&mf);
    pool_free(&pl);
}

/* ------------------------------------------------------------------ LLaMA-2-7B */

static void random_llama(pool *pl, llama_model *m, const llama_config *c) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    m->precision = PRECISION_F32;
    m->head_dim = c->dim / c->heads;
    m->q_dim = c->heads * m->head_dim;
    m->kv_dim = c->kv_heads * m->head_dim;
    const int d = c->dim, f = c->hidden, bn = c->adapter_dim;
    m->embed = keep(pl, random_floats((size_t)c->vocab_size * d, 1.0f));
    m->norm = keep(pl, constant_floats((size_t)d, 1.0f));
    random_linear(pl, &m->lm_head, c->vocab_size, d, LINEAR_STEP);
    m->layer = calloc((size_t)c->layers, sizeof *m->layer);
    if (!m->layer) {
        pl->failed = 1;
        return;
    }
    for (int i = 0; i < c->layers; i++) {
        llama_layer *l = &m->layer[i];
        l->attn_norm = keep(pl, constant_floats((size_t)d, 1.0f));
        l->ffn_norm = keep(pl, constant_floats((size_t)d, 1.0f));
        random_linear(pl, &l->wq, m->q_dim, d, LINEAR_STEP);
        random_linear(pl, &l->wk, m->kv_dim, d, LINEAR_STEP);
        random_linear(pl, &l->wv, m->kv_dim, d, LINEAR_STEP);
        random_linear(pl, &l->wo, d, m->q_dim, LINEAR_STEP);
        random_linear(pl, &l->w_gate, f, d, LINEAR_STEP);
        random_linear(pl, &l->w_up, f, d, LINEAR_STEP);
        random_linear(pl, &l->w_down, d, f, LINEAR_STEP);
        llama_adapter *ads[] = {&l->adapter_attn, &l->adapter_mlp};
        for (int k = 0; k < 2; k++) {
            ads[k]->down_w = keep(pl, random_floats((size_t)bn * d, 1.0f / sqrtf((float)d)));
            ads[k]->down_b = keep(pl, random_floats((size_t)bn, 0.1f));
            ads[k]->up_w = keep(pl, random_floats((size_t)d * bn, 0.1f / sqrtf((float)bn)));
            ads[k]->up_b = keep(pl, random_floats((size_t)d, 0.01f));
        }
    }
}

static void test_llama_7b(void) {
    const llama_config c = {4096, 11008, 1, 32, 32, 8000, 1e-5f, 10000.0f, 8, 1, 1, 1};
    const int prompt = 20, d = c.dim, V = c.vocab_size;
    lion_status st;
    pool pl = {0};
    llama_model mf, mb;
    random_llama(&pl, &mf, &c);
    mb = mf;
    mb.layer = malloc(sizeof *mb.layer * (size_t)c.layers);
    if (pl.failed || !mb.layer) {
        CHECK_MSG(0, "llama_7b: out of memory");
        free(mb.layer);
        llama_free(&mf);
        pool_free(&pl);
        return;
    }
    memcpy(mb.layer, mf.layer, sizeof *mb.layer * (size_t)c.layers);
    if (llama_to_bf16(&mb, &st)) {
        CHECK_MSG(0, "llama_7b: %s", st.msg);
        llama_free(&mb);
        llama_free(&mf);
        pool_free(&pl);
        return;
    }
    const size_t bytes_f = llama_matrix_bytes(&mf, NULL), bytes_b = llama_matrix_bytes(&mb, NULL);
    CHECK_MSG(2 * bytes_b == bytes_f, "llama_7b: bf16 matrices %zu bytes, f32 %zu", bytes_b, bytes_f);
    CHECK(mb.precision == PRECISION_BF16 && mb.layer[0].w_up.w16 && !mb.layer[0].w_up.packed &&
          (mb.layer[0].w_up.flags & LINEAR_STEP) && mb.lm_head.w16);

    llama_cache cf, cb;
    arena a;
    arena_init(&a, 0);
    int32_t ids[2][20];
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < prompt; i++) ids[s][i] = (int32_t)((i * 7919 + s * 104729 + 13) % V);
    float *x = malloc((size_t)prompt * d * sizeof *x), *lf = malloc(2 * (size_t)V * sizeof *lf),
          *lb = malloc(2 * (size_t)V * sizeof *lb);
    if (!x || !lf || !lb || llama_cache_init(&cf, &mf, 2, prompt + 2, &st) ||
        llama_cache_init(&cb, &mb, 2, prompt + 2, &st)) {
        CHECK_MSG(0, "llama_7b: out of memory");
    } else {
        /* both sequences prefilled one at a time (as decode_batch does), then 2 steps together */
        double e_prefill = 0, e_step = 0, t_f = 0, t_b = 0;
        for (int s = 0; s < 2; s++) {
            const int n = prompt;
            CHECK(llama_embed(&mf, ids[s], prompt, x, &st) == 0);
            double t0 = (clock_mono_us() * 1e-6);
            CHECK_MSG(llama_forward(&mf, &cf, 1, &s, &n, x, lf, &a, &st) == 0, "%s", st.msg);
            t_f += (clock_mono_us() * 1e-6) - t0, t0 = (clock_mono_us() * 1e-6);
            CHECK_MSG(llama_forward(&mb, &cb, 1, &s, &n, x, lb, &a, &st) == 0, "%s", st.msg);
            t_b += (clock_mono_us() * 1e-6) - t0;
            e_prefill = fmax(e_prefill, testing_rel_err(lb, lf, (size_t)V));
        }
        const int slots[2] = {0, 1};
        const int32_t steps[2][2] = {{5, 6}, {3000, 7777}};
        for (int k = 0; k < 2; k++) {
            CHECK_MSG(llama_step(&mf, &cf, 2, slots, steps[k], lf, &a, &st) == 0, "%s", st.msg);
            CHECK_MSG(llama_step(&mb, &cb, 2, slots, steps[k], lb, &a, &st) == 0, "%s", st.msg);
            e_step = fmax(e_step, testing_rel_err(lb, lf, 2 * (size_t)V));
        }
        printf("llama_7b (1 layer, vocab %d): bf16 vs f32: prefill of %d tokens %.2e, 2 steps of 2 rows %.2e (bound "
               "%.0e); prefill f32 %.2f s, bf16 %.2f s (%s); matrices f32 %.2f GB, bf16 %.2f GB\n",
               V, prompt, e_prefill, e_step, LLAMA_BOUND, t_f / 2, t_b / 2, linear_form(&mb.layer[0].w_up),
               bytes_f / 1e9, bytes_b / 1e9);
        CHECK_MSG(e_prefill <= LLAMA_BOUND, "llama_7b bf16 prefill: relative error %.3g > %.3g", e_prefill, LLAMA_BOUND);
        CHECK_MSG(e_step <= LLAMA_BOUND, "llama_7b bf16 steps: relative error %.3g > %.3g", e_step, LLAMA_BOUND);
        CHECK_MSG(e_prefill > 1e-5 && e_step > 1e-5, "llama_7b: bf16 rounded nothing (%.3g, %.3g)", e_prefill, e_step);
        llama_cache_free(&cf);
        llama_cache_free(&cb);
    }
    free(x), free(lf), free(lb);
    arena_free(&a);
    llama_free(&mb);
    llama_free(&mf);
    pool_free(&pl);
}

int main(void) {
    threads_init(2);
    printf("CPU isa %s, native bf16 %s\n", cpu_isa_name(), cpu_native_bf16() ? "yes" : "no");
    test_t5_xl();
    test_llama_7b();
    return testing_finish();
}
