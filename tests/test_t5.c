/* FlanT5 + adapters against the PyTorch reference (fixtures/gen_t5.py): encoder output and
 * several KV-cached decoder steps, both router indices, padded batches, at tiny dims and at
 * true FlanT5-XL dims truncated to one layer per stack. Tolerance 1e-4 relative. Also the
 * bucket function exactly, the beam cache (shared cross keys, reorder) against plain rows,
 * and the errors of bad weights and bad input. */
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

static const float *io_floats(safetensors_file *io, const char *key, size_t n) {
    lion_status st;
    tensor t;
    if (safetensors_get(io, key, &t, &st) || t.dtype != DTYPE_F32 || (size_t)tensor_numel(&t) != n) {
        testing_fail(__FILE__, __LINE__, "fixture tensor %s missing or of the wrong size", key);
        return NULL;
    }
    return t.data;
}

static void run_case(const char *name, t5_config cfg, int batch, int len, int steps) {
    char path[4096], io_path[4096];
    snprintf(path, sizeof path, "%s.safetensors", testing_fixture(name));
    snprintf(io_path, sizeof io_path, "%s_io.safetensors", testing_fixture(name));
    lion_status st;
    weights w;
    safetensors_file *io;
    if (weights_open(&w, path, "t5_model.", &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return;
    }
    if (safetensors_open(&io, io_path, &st)) {
        CHECK_MSG(0, "%s", st.msg);
        weights_close(&w);
        return;
    }
    t5_model m;
    if (t5_load(&m, &cfg, &w, &st)) {
        CHECK_MSG(0, "%s: %s", name, st.msg);
        safetensors_close(io);
        weights_close(&w);
        return;
    }
    const int d = cfg.d_model, V = cfg.vocab_size;
    const size_t n_enc = (size_t)batch * len * d;
    const float *x = io_floats(io, "inputs_embeds", n_enc);
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
        const float *want_enc = io_floats(io, key, n_enc);
        snprintf(key, sizeof key, "logits_%d", r);
        const float *want_logits = io_floats(io, key, (size_t)steps * batch * V);
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

/* Beam rows share their batch element's cross keys; reorder must equal having fed each row
 * the other row's history. Compared against beams = 1 decoders, no reference needed. */
static void test_beam_cache(void) {
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
    CHECK_MSG(t5_load(&m, &cfg, &w, &st) == 0, "%s", st.msg);
    const int batch = 3, len = 40, beams = 2, V = 128;
    const float *enc = io_floats(io, "enc_1", (size_t)batch * len * 32);
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
    CHECK_CONTAINS(st.msg, "batch row 1 has no unmasked encoder token");
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
    test_beam_cache();
    test_errors();
    return testing_finish();
}
