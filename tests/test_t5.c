/* FlanT5 + adapters against the PyTorch reference (fixtures/gen_t5.py): encoder output and
 * several KV-cached decoder steps, both router indices, padded batches, at tiny dims and at
 * true FlanT5-XL dims truncated to one layer per stack. Tolerance 1e-4 relative. The bf16
 * decoder step (t5_load_with PRECISION_BF16) on the same fixtures: its matrices held in bf16
 * only, its logits within a measured bound of f32's and the reference's, greedy's token the
 * same where the logits' margin is wide; at XL widths on weights with random low mantissa
 * bits. Also the bucket function exactly, the beam cache (shared cross keys, reorder) against
 * plain rows, and the errors of bad weights and bad input. In bf16 the encoder's matrices and
 * the cross-attention keys/values are bf16 too (linear.h's many-row form): the encoder output
 * is checked against f32's with its own bound (tests/test_llm_bf16.c does so at XL widths). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "t5.h"
#include "testing.h"
#include "threads.h"

static void test_buckets(void) {
    lion_status st;
    safetensors_file *f;
    if (safetensors_open(&f, testing_fixture("t5_buckets.safetensors"), &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return;
    }
    const struct { const char *key; int bi, n, dist; } cases[] = {
        {"bi_32_128", 1, 32, 128}, {"causal_32_128", 0, 32, 128}, {"bi_8_16", 1, 8, 16}, {"causal_8_16", 0, 8, 16}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        tensor t;
        CHECK(safetensors_get(f, cases[c].key, &t, &st) == 0 && t.dtype == DTYPE_I32 && t.shape[0] == 601);
        const int32_t *want = t.data;
        int bad = 0;
        for (int r = -300; r <= 300; r++) {
            int got = t5_relative_bucket(r, cases[c].bi, cases[c].n, cases[c].dist);
            if (got != want[r + 300] && bad++ < 3)
                testing_fail(__FILE__, __LINE__, "%s: bucket(%d) = %d, reference %d", cases[c].key, r, got,
                             (int)want[r + 300]);
        }
        CHECK_MSG(bad == 0, "%s: %d buckets differ", cases[c].key, bad);
    }
    safetensors_close(f);
}

static void run_case(const char *name, t5_config cfg, int batch, int len, int steps) {
    lion_status st;
    weights w;
    safetensors_file *io;
    if (testing_open_model(name, "t5_model.", &w, &io)) return;
    t5_model m;
    if (t5_load(&m, &cfg, &w, &st)) {
        CHECK_MSG(0, "%s: %s", name, st.msg);
        safetensors_close(io);
        weights_close(&w);
        return;
    }
    const int d = cfg.d_model, V = cfg.vocab_size;
    const size_t n_enc = (size_t)batch * len * d;
    const float *x = testing_floats(io, "inputs_embeds", n_enc);
    tensor tmask, ttok;
    CHECK(safetensors_get(io, "key_mask", &tmask, &st) == 0 && tensor_numel(&tmask) == batch * len);
    CHECK(safetensors_get(io, "tokens", &ttok, &st) == 0 && tensor_numel(&ttok) == batch * steps);
    const uint8_t *mask = tmask.data;
    const int32_t *tokens = ttok.data;
    float *enc = malloc(n_enc * sizeof(float)), *logits = malloc((size_t)batch * V * sizeof(float));
    arena a;
    arena_init(&a, 0);
    for (int r = 0; r < 2 && x; r++) {
        char key[32], what[96];
        snprintf(key, sizeof key, "enc_%d", r);
        const float *want_enc = testing_floats(io, key, n_enc);
        snprintf(key, sizeof key, "logits_%d", r);
        const float *want_logits = testing_floats(io, key, (size_t)steps * batch * V);
        if (!want_enc || !want_logits) continue;
        CHECK_MSG(t5_encode(&m, x, mask, batch, len, r, enc, &a, &st) == 0, "%s", st.msg);
        snprintf(what, sizeof what, "%s encoder, router %d", name, r);
        CHECK_CLOSE(enc, want_enc, n_enc, 1e-4, what);
        t5_decoder dec;
        CHECK_MSG(t5_decoder_init(&dec, &m, enc, mask, batch, len, 1, steps, r, &st) == 0, "%s", st.msg);
        for (int s = 0; s < steps; s++) {
            CHECK_MSG(t5_decoder_step(&m, &dec, tokens + (size_t)s * batch, logits, &a, &st) == 0, "%s", st.msg);
            snprintf(what, sizeof what, "%s decoder step %d, router %d", name, s, r);
            CHECK_CLOSE(logits, want_logits + (size_t)s * batch * V, (size_t)batch * V, 1e-4, what);
        }
        /* the cache holds exactly `steps` positions */
        CHECK(t5_decoder_step(&m, &dec, tokens, logits, &a, &st) == -1);
        CHECK_CONTAINS(st.msg, "cache full");
        t5_decoder_free(&dec);
    }
    free(enc);
    free(logits);
    arena_free(&a);
    t5_free(&m);
    safetensors_close(io);
    weights_close(&w);
}

/* ------------------------------------------------------------------ bf16 decoder step */

/* Bounds of the bf16 decoder step against the f32 one, as testing_rel_err measures them (max
 * |diff| / max |f32 logit| over one step's rows). bf16 keeps 8 bits of mantissa: each weight
 * is rounded by at most 2^-9 relative, and the products sum those errors with random signs,
 * so a logit moves by about 2^-9 sqrt(sum (x w)^2) per product, compounded through the
 * layers: a few 2^-9 (1.95e-3). Measured (the test prints them): tiny fixtures 4.0e-3 to
 * 7.3e-3 (2-3 decoder layers 32-64 wide, the cross-attention keys/values in bf16 too), XL
 * widths with random low mantissa bits 2.8e-3 (the step alone); asserted with about 3x margin. */
#define BF16_TINY_BOUND 2e-2
#define BF16_XL_BOUND 1e-2
/* The bf16 encoder's output (after its final norm) against f32's on the tiny fixtures: the
 * same per-product rounding through 2 layers. Measured 3.0e-3 to 4.2e-3; asserted with ~3.5x. */
#define BF16_ENC_BOUND 1.5e-2

/* The row's best and second-best logits. */
static void top2(const float *l, int n, int *best, float *margin) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[b]) b = i;
    float second = -INFINITY;
    for (int i = 0; i < n; i++)
        if (i != b && l[i] > second) second = l[i];
    *best = b;
    *margin = l[b] - second;
}

typedef struct bf16_figures {
    double enc_vs_f32;         /* testing_rel_err of the bf16 encoder's output */
    double vs_f32, vs_ref;     /* worst testing_rel_err of a step */
    int rows, wide, same;      /* rows checked; of them with a wide margin; of those, same argmax */
} bf16_figures;

/* Steps both models on the same encoder output (f32's: the bf16 step's figures cover its own
 * products and cross-attention keys/values) with the fixture's tokens, for both routes; the
 * bf16 logits against the f32 ones and the reference's (NULL: none). The bf16 encoder's output
 * against f32's goes to fig->enc_vs_f32. */
static void bf16_steps(const t5_model *mf, const t5_model *mb, safetensors_file *io, int batch, int len, int steps,
                       int ref, bf16_figures *fig) {
    lion_status st;
    const int d = mf->cfg.d_model, V = mf->cfg.vocab_size;
    const size_t n_enc = (size_t)batch * len * d;
    const float *x = testing_floats(io, "inputs_embeds", n_enc);
    tensor tmask, ttok;
    if (!x || safetensors_get(io, "key_mask", &tmask, &st) || safetensors_get(io, "tokens", &ttok, &st)) {
        CHECK_MSG(0, "fixture inputs missing");
        return;
    }
    const int32_t *tokens = ttok.data;
    float *enc = malloc(n_enc * sizeof(float)), *enc_b = malloc(n_enc * sizeof(float)),
          *lf = malloc((size_t)batch * V * sizeof(float)), *lb = malloc((size_t)batch * V * sizeof(float));
    arena a;
    arena_init(&a, 0);
    for (int r = 0; r < 2; r++) {
        char key[32];
        snprintf(key, sizeof key, "logits_%d", r);
        const float *want = ref ? testing_floats(io, key, (size_t)steps * batch * V) : NULL;
        CHECK_MSG(t5_encode(mf, x, tmask.data, batch, len, r, enc, &a, &st) == 0, "%s", st.msg);
        CHECK_MSG(t5_encode(mb, x, tmask.data, batch, len, r, enc_b, &a, &st) == 0, "%s", st.msg);
        fig->enc_vs_f32 = fmax(fig->enc_vs_f32, testing_rel_err(enc_b, enc, n_enc));
        t5_decoder df, db;
        CHECK_MSG(t5_decoder_init(&df, mf, enc, tmask.data, batch, len, 1, steps, r, &st) == 0, "%s", st.msg);
        CHECK_MSG(t5_decoder_init(&db, mb, enc, tmask.data, batch, len, 1, steps, r, &st) == 0, "%s", st.msg);
        for (int s = 0; s < steps; s++) {
            CHECK(t5_decoder_step(mf, &df, tokens + (size_t)s * batch, lf, &a, &st) == 0);
            CHECK(t5_decoder_step(mb, &db, tokens + (size_t)s * batch, lb, &a, &st) == 0);
            double e = testing_rel_err(lb, lf, (size_t)batch * V);
            if (e > fig->vs_f32) fig->vs_f32 = e;
            if (want) {
                e = testing_rel_err(lb, want + (size_t)s * batch * V, (size_t)batch * V);
                if (e > fig->vs_ref) fig->vs_ref = e;
            }
            /* greedy's choice: where f32's best logit leads by more than twice the bound of the
             * error (in logits), bf16 must pick the same token */
            double scale = 1e-12;
            for (size_t i = 0; i < (size_t)batch * V; i++) scale = fmax(scale, fabs(lf[i]));
            for (int b = 0; b < batch; b++) {
                int best_f, best_b;
                float margin, unused;
                top2(lf + (size_t)b * V, V, &best_f, &margin);
                top2(lb + (size_t)b * V, V, &best_b, &unused);
                fig->rows++;
                if (margin > 2 * BF16_TINY_BOUND * scale) {
                    fig->wide++;
                    fig->same += best_f == best_b;
                }
            }
        }
        t5_decoder_free(&df);
        t5_decoder_free(&db);
    }
    free(enc), free(enc_b), free(lf), free(lb);
    arena_free(&a);
}

/* The decoder step's f32 matrices with random low 16 bits: an f32 model whose weights are not
 * bf16 values (the fixture's are), so that bf16 storage rounds every one of them. */
static float *with_low_bits(const float *w, size_t n, uint64_t *state) {
    float *p = malloc(n * sizeof(float));
    if (!p) return NULL;
    uint64_t x = *state;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint32_t u;
        memcpy(&u, &w[i], 4);
        u = (u & 0xffff0000u) | (uint32_t)(x >> 48);
        memcpy(&p[i], &u, 4);
    }
    *state = x;
    return p;
}

/* A copy of m's layer tables (the linears in them are views or f32: nothing is copied but the
 * tables), so that t5_free on the copy frees only what the copy made. */
static int copy_tables(t5_model *dst, const t5_model *m) {
    *dst = *m;
    const size_t ne = (size_t)m->encoder.n_layers * sizeof(t5_layer), nd = (size_t)m->decoder.n_layers * sizeof(t5_layer);
    dst->encoder.layers = malloc(ne), dst->decoder.layers = malloc(nd);
    if (!dst->encoder.layers || !dst->decoder.layers) {
        free(dst->encoder.layers), free(dst->decoder.layers);
        return -1;
    }
    memcpy(dst->encoder.layers, m->encoder.layers, ne);
    memcpy(dst->decoder.layers, m->decoder.layers, nd);
    return 0;
}

/* At true FlanT5-XL widths (one layer per stack): f32 weights with random low mantissa bits
 * against their bf16 storage (t5_decoder_to_bf16: the decoder step only). */
static void bf16_xl_rounding(const t5_model *m, safetensors_file *io, int batch, int len, int steps) {
    lion_status st;
    const t5_config *c = &m->cfg;
    t5_model mf, mb;
    if (m->precision != PRECISION_F32 || copy_tables(&mf, m)) {
        CHECK_MSG(0, "t5_xl bf16: an f32 model and memory needed");
        return;
    }
    uint64_t seed = 0x2545f4914f6cdd1dull;
    float *made[64];
    int n_made = 0, ok = 1;
    linear *step[64];
    int n_step = 0;
    for (int i = 0; i < c->decoder_layers; i++) {
        t5_layer *l = &mf.decoder.layers[i];
        linear *all[] = {&l->self.q, &l->self.k, &l->self.v, &l->self.o, &l->cross.q, &l->cross.o,
                         &l->ff.wi_0, &l->ff.wi_1, &l->ff.wo};
        for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) step[n_step++] = all[k];
    }
    step[n_step++] = &mf.lm_head;
    for (int k = 0; k < n_step; k++) {
        linear *l = step[k];
        float *p = with_low_bits(l->w, (size_t)l->out * l->in, &seed);
        made[n_made++] = p;
        ok &= p && linear_from_f32(l, p, l->out, l->in, PRECISION_F32, LINEAR_STEP, &st) == 0;
    }
    if (ok && copy_tables(&mb, &mf) == 0) {
        if (t5_decoder_to_bf16(&mb, &st) == 0) {
            t5_weight_bytes b, bf;
            t5_weight_bytes_of(&mb, &b);
            t5_weight_bytes_of(&mf, &bf);
            CHECK(mb.step_bf16 && mb.lm_head.precision == PRECISION_BF16 && mb.lm_head.w == NULL &&
                  mb.decoder.layers[0].ff.wo.w16 && mb.decoder.layers[0].cross.k.precision == PRECISION_F32);
            CHECK(b.step == b.owned && b.owned > 0 && 2 * b.step == bf.step && b.encoder == bf.encoder);
            bf16_figures fig = {0};
            bf16_steps(&mf, &mb, io, batch, len, steps, 0, &fig);
            printf("t5_xl, random low mantissa bits: bf16 step vs f32 %.2e (bound %.1e); argmax same in %d of %d rows "
                   "with a wide margin (%d rows)\n",
                   fig.vs_f32, BF16_XL_BOUND, fig.same, fig.wide, fig.rows);
            CHECK_MSG(fig.vs_f32 <= BF16_XL_BOUND, "t5_xl bf16 step: relative error %.3g > %.3g", fig.vs_f32,
                      BF16_XL_BOUND);
            CHECK_MSG(fig.vs_f32 > 1e-5, "t5_xl: the weights were not rounded (error %.3g)", fig.vs_f32);
            CHECK_EQ_INT(fig.same, fig.wide);
        } else {
            CHECK_MSG(0, "t5_xl bf16: %s", st.msg);
        }
        t5_free(&mb);
    } else {
        CHECK_MSG(0, "t5_xl bf16: out of memory");
    }
    t5_free(&mf);
    for (int i = 0; i < n_made; i++) free(made[i]);
}

/* Matrices held as t5.h says: a step's plain bf16 (LINEAR_STEP, no f32 copy), the others in the
 * many-row bf16 form (plain, or oneDNN's packed on a CPU with native bf16). */
static int step_bf16(const linear *l) {
    return l->precision == PRECISION_BF16 && !l->w && l->w16 && !l->packed && (l->flags & LINEAR_STEP);
}

static int many_bf16(const linear *l) {
    return l->precision == PRECISION_BF16 && !l->w && (l->w16 || l->packed) && !(l->flags & LINEAR_STEP);
}

/* The bf16 model (t5_load_with PRECISION_BF16) on a fixture: its matrices held in bf16 only,
 * half f32's bytes, its encoder output and step logits against f32's and the reference's.
 * bf16_file: the fixture's weights are bf16 values (t5_xl), used in place and rounded by
 * nothing, so bf16 matches the reference as f32 does (but for x, which oneDNN rounds to bf16
 * on a native CPU); at XL widths the rounding is then checked on perturbed weights. */
static void bf16_case(const char *name, t5_config cfg, int batch, int len, int steps, int bf16_file) {
    lion_status st;
    weights w;
    safetensors_file *io;
    if (testing_open_model(name, "t5_model.", &w, &io)) return;
    t5_model mf, mb;
    CHECK(t5_load_with(&mb, &cfg, &w, PRECISION_AUTO, &st) == -1);
    CHECK_CONTAINS(st.msg, "precision auto");
    if (t5_load(&mf, &cfg, &w, &st) || t5_load_with(&mb, &cfg, &w, PRECISION_BF16, &st)) {
        CHECK_MSG(0, "%s: %s", name, st.msg);
        safetensors_close(io);
        weights_close(&w);
        return;
    }
    /* held in bf16 only; the embeddings stay f32 */
    const t5_layer *l = &mb.decoder.layers[0], *e = &mb.encoder.layers[0];
    CHECK(mb.step_bf16 && mb.precision == PRECISION_BF16 && step_bf16(&l->self.q) && step_bf16(&l->self.k) &&
          step_bf16(&l->self.v) && step_bf16(&l->self.o) && step_bf16(&l->cross.q) && step_bf16(&l->cross.o) &&
          step_bf16(&l->ff.wi_0) && step_bf16(&l->ff.wi_1) && step_bf16(&l->ff.wo));
    CHECK(many_bf16(&l->cross.k) && many_bf16(&l->cross.v) && many_bf16(&e->self.q) && many_bf16(&e->self.o) &&
          many_bf16(&e->ff.wi_0) && many_bf16(&e->ff.wo) && mb.shared);
    if (cfg.tie_word_embeddings) CHECK(mb.lm_head.precision == PRECISION_F32 && mb.lm_head.w == mb.shared);
    else CHECK(step_bf16(&mb.lm_head));
    t5_weight_bytes b, bf;
    t5_weight_bytes_of(&mb, &b);
    t5_weight_bytes_of(&mf, &bf);
    const double d = cfg.d_model, inner = (double)cfg.heads * cfg.d_kv;
    const double want_step = 2.0 * (cfg.decoder_layers * (6 * d * inner + 3 * d * cfg.d_ff) +
                                    (cfg.tie_word_embeddings ? 0 : (double)cfg.vocab_size * d));
    CHECK_MSG((double)b.step == want_step, "%s: %zu bf16 step bytes, expected %.0f", name, b.step, want_step);
    /* half of f32's bytes (oneDNN's packed layout may pad the encoder's) */
    CHECK(2 * b.step == bf.step);
    const int packed = e->ff.wi_0.packed != NULL;
    if (!packed) CHECK(2 * b.encoder == bf.encoder && 2 * b.cross_kv == bf.cross_kv);
    else CHECK(b.encoder < bf.encoder && b.cross_kv < bf.cross_kv);
    /* a bf16 file's matrices are views of it (its other tensors widened to f32, their pages
     * released), but for oneDNN's packed copies; an f32 file's are converted and their f32
     * pages released */
    if (bf16_file)
        CHECK(b.owned == (packed ? b.encoder + b.cross_kv : 0) && b.released > 0 && bf.released > b.released);
    else CHECK(b.owned == b.step + b.encoder + b.cross_kv && b.released > 0 && bf.released == 0);

    bf16_figures fig = {0};
    bf16_steps(&mf, &mb, io, batch, len, steps, 1, &fig);
    printf("%s: bf16 encoder vs f32 %.2e (%s); bf16 decoder step vs f32 %.2e, vs reference %.2e; argmax same in %d "
           "of %d rows with a wide margin (%d rows)\n",
           name, fig.enc_vs_f32, linear_form(&e->ff.wi_0), fig.vs_f32, fig.vs_ref, fig.same, fig.wide, fig.rows);
    /* a bf16 file rounds nothing but x on oneDNN's path (native CPUs): there the bound of any
     * bf16 product applies */
    const double bound = bf16_file && !packed ? 1e-4 : BF16_TINY_BOUND;
    CHECK_MSG(fig.enc_vs_f32 <= (bf16_file && !packed ? 1e-4 : BF16_ENC_BOUND),
              "%s bf16 encoder: relative error %.3g", name, fig.enc_vs_f32);
    CHECK_MSG(fig.vs_f32 <= bound && fig.vs_ref <= bound, "%s bf16 step: relative error %.3g / %.3g > %.3g", name,
              fig.vs_f32, fig.vs_ref, bound);
    CHECK_EQ_INT(fig.same, fig.wide);
    CHECK_MSG(fig.wide * 2 >= fig.rows, "%s: only %d of %d rows have a wide margin", name, fig.wide, fig.rows);
    if (bf16_file) bf16_xl_rounding(&mf, io, batch, len, steps);
    t5_free(&mb);
    t5_free(&mf);
    safetensors_close(io);
    weights_close(&w);
}

/* Beam rows share their batch element's cross keys; reorder must equal having fed each row
 * the other row's history. Compared against beams = 1 decoders, no reference needed; in f32
 * and with the decoder step in bf16. */
static void test_beam_cache(lion_precision precision) {
    lion_status st;
    weights w;
    safetensors_file *io;
    if (weights_open(&w, testing_fixture("t5_tiny.safetensors"), "t5_model.", &st) ||
        safetensors_open(&io, testing_fixture("t5_tiny_io.safetensors"), &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return;
    }
    t5_config cfg = {32, 64, 8, 4, 2, 2, 128, 8, 16, 1e-6f, ACT_GELU, 2, 4, 0};
    t5_model m;
    CHECK_MSG(t5_load_with(&m, &cfg, &w, precision, &st) == 0, "%s", st.msg);
    const int batch = 3, len = 40, beams = 2, V = 128;
    const float *enc = testing_floats(io, "enc_1", (size_t)batch * len * 32);
    tensor tmask;
    CHECK(safetensors_get(io, "key_mask", &tmask, &st) == 0);
    arena a;
    arena_init(&a, 0);
    t5_decoder beam, plain_a, plain_b;
    CHECK(t5_decoder_init(&beam, &m, enc, tmask.data, batch, len, beams, 4, 1, &st) == 0);
    CHECK(t5_decoder_init(&plain_a, &m, enc, tmask.data, batch, len, 1, 4, 1, &st) == 0);
    CHECK(t5_decoder_init(&plain_b, &m, enc, tmask.data, batch, len, 1, 4, 1, &st) == 0);
    /* beam 0 of element b follows history A, beam 1 history B */
    const int32_t hist_a[3][3] = {{0, 0, 0}, {5, 9, 17}, {33, 2, 90}}, hist_b[3][3] = {{0, 0, 0}, {7, 7, 3}, {12, 64, 8}};
    float *lb = malloc((size_t)batch * beams * V * sizeof(float)), *la = malloc((size_t)batch * V * sizeof(float)),
          *lbb = malloc((size_t)batch * V * sizeof(float));
    for (int s = 0; s < 3; s++) {
        int32_t tb[6];
        for (int b = 0; b < batch; b++) tb[b * 2] = hist_a[s][b], tb[b * 2 + 1] = hist_b[s][b];
        CHECK(t5_decoder_step(&m, &beam, tb, lb, &a, &st) == 0);
        CHECK(t5_decoder_step(&m, &plain_a, hist_a[s], la, &a, &st) == 0);
        CHECK(t5_decoder_step(&m, &plain_b, hist_b[s], lbb, &a, &st) == 0);
    }
    for (int b = 0; b < batch; b++) {
        CHECK_CLOSE(lb + (size_t)(b * 2) * V, la + (size_t)b * V, V, 1e-5, "beam 0 == plain history A");
        CHECK_CLOSE(lb + (size_t)(b * 2 + 1) * V, lbb + (size_t)b * V, V, 1e-5, "beam 1 == plain history B");
    }
    /* swap the beams of element 0 and duplicate beam 1 of element 2; then one more step */
    const int src[6] = {1, 0, 2, 3, 5, 5};
    CHECK(t5_decoder_reorder(&beam, src, &a, &st) == 0);
    const int32_t next[6] = {11, 11, 11, 11, 11, 11}, next1[3] = {11, 11, 11};
    CHECK(t5_decoder_step(&m, &beam, next, lb, &a, &st) == 0);
    CHECK(t5_decoder_step(&m, &plain_a, next1, la, &a, &st) == 0);
    CHECK(t5_decoder_step(&m, &plain_b, next1, lbb, &a, &st) == 0);
    CHECK_CLOSE(lb + 0 * V, lbb + 0 * V, V, 1e-5, "reordered row 0 == history B");
    CHECK_CLOSE(lb + 1 * V, la + 0 * V, V, 1e-5, "reordered row 1 == history A");
    CHECK_CLOSE(lb + 2 * V, la + 1 * V, V, 1e-5, "kept row 2 == history A");
    CHECK_CLOSE(lb + 4 * V, lbb + 2 * V, V, 1e-5, "duplicated row 4 == history B");
    CHECK_CLOSE(lb + 5 * V, lbb + 2 * V, V, 1e-5, "row 5 == history B");
    /* a source from another batch element is refused */
    const int cross[6] = {2, 1, 2, 3, 4, 5};
    CHECK(t5_decoder_reorder(&beam, cross, &a, &st) == -1);
    CHECK_CONTAINS(st.msg, "reorder source 2 for row 0");
    const int32_t bad_tok[6] = {0, 0, 0, 128, 0, 0};
    CHECK(t5_decoder_step(&m, &beam, bad_tok, lb, &a, &st) == -1);
    CHECK_CONTAINS(st.msg, "token 128 of row 3 is outside the vocabulary of 128");
    free(lb), free(la), free(lbb);
    t5_decoder_free(&beam), t5_decoder_free(&plain_a), t5_decoder_free(&plain_b);
    arena_free(&a);
    t5_free(&m);
    safetensors_close(io);
    weights_close(&w);
}

static void test_errors(void) {
    lion_status st;
    weights w;
    if (weights_open(&w, testing_fixture("t5_tiny.safetensors"), "t5_model.", &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return;
    }
    t5_model m;
    t5_config cfg = {32, 64, 8, 4, 2, 2, 128, 8, 16, 1e-6f, ACT_GELU, 2, 4, 0};
    t5_config c = cfg;
    c.d_ff = 96;
    CHECK(t5_load(&m, &c, &w, &st) == -1);
    CHECK_CONTAINS(st.msg, "encoder.block.0.layer.1.DenseReluDense.wi_0.weight");
    c = cfg;
    c.decoder_layers = 3;
    CHECK(t5_load(&m, &c, &w, &st) == -1);
    CHECK_CONTAINS(st.msg, "decoder.block.2.");
    c = cfg;
    c.adapter_bottleneck = 8;
    CHECK(t5_load(&m, &c, &w, &st) == -1);
    CHECK_CONTAINS(st.msg, "adapter.adapters.0.down_proj.weight");
    c = cfg;
    c.rel_buckets = 32;
    CHECK(t5_load(&m, &c, &w, &st) == -1);
    CHECK_CONTAINS(st.msg, "relative_attention_bias");
    c = cfg;
    c.adapters = 3;
    CHECK(t5_load(&m, &c, &w, &st) == -1);
    CHECK_CONTAINS(st.msg, "adapters must be 0, 1 or 2");

    CHECK_MSG(t5_load(&m, &cfg, &w, &st) == 0, "%s", st.msg);
    arena a;
    arena_init(&a, 0);
    float x[2 * 3 * 32] = {0}, out[2 * 3 * 32];
    uint8_t mask[6] = {1, 1, 1, 0, 0, 0};
    CHECK(t5_encode(&m, x, mask, 2, 3, 1, out, &a, &st) == -1);
    CHECK_CONTAINS(st.msg, "batch row 1 has no unmasked token");
    CHECK(t5_encode(&m, x, NULL, 2, 3, 2, out, &a, &st) == -1);
    CHECK_CONTAINS(st.msg, "router index 2");
    CHECK(t5_encode(&m, x, NULL, 0, 3, 0, out, &a, &st) == -1);
    CHECK_CONTAINS(st.msg, "empty input");
    t5_decoder dec;
    CHECK(t5_decoder_init(&dec, &m, out, mask, 2, 3, 1, 4, 0, &st) == -1);
    CHECK_CONTAINS(st.msg, "batch row 1: t5_decoder: no unmasked encoder token");
    arena_free(&a);
    t5_free(&m);
    weights_close(&w);
}

int main(void) {
    threads_init(2);
    test_buckets();
    t5_config tiny = {32, 64, 8, 4, 2, 2, 128, 8, 16, 1e-6f, ACT_GELU, 2, 4, 0};
    run_case("t5_tiny", tiny, 3, 40, 6);
    t5_config tiny1 = {64, 96, 16, 4, 2, 3, 128, 32, 128, 1e-6f, ACT_GELU, 1, 8, 0};
    run_case("t5_tiny1", tiny1, 2, 200, 4);
    t5_config tied = {32, 64, 8, 4, 2, 2, 128, 8, 16, 1e-6f, ACT_GELU_TANH, 0, 0, 1};
    run_case("t5_tied", tied, 2, 12, 3);
    t5_config xl = {2048, 5120, 64, 32, 1, 1, 32128, 32, 128, 1e-6f, ACT_GELU, 2, 64, 0};
    run_case("t5_xl", xl, 2, 40, 3);
    bf16_case("t5_tiny", tiny, 3, 40, 6, 0);
    bf16_case("t5_tiny1", tiny1, 2, 200, 4, 0);
    bf16_case("t5_tied", tied, 2, 12, 3, 0);
    bf16_case("t5_xl", xl, 2, 40, 3, 1);
    test_beam_cache(PRECISION_F32);
    test_beam_cache(PRECISION_BF16);
    test_errors();
    return testing_finish();
}
