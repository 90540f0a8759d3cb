/* The tensor-core ops against PyTorch (fixtures/gen_ops.py) and against naive loops. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "ops.h"
#include "safetensors.h"
#include "testing.h"
#include "weight_builder.h"
#include "threads.h"

static safetensors_file *fx;
static arena scratch;

static float *get(const char *name) {
    tensor t;
    lion_status st;
    if (safetensors_get(fx, name, &t, &st)) {
        fprintf(stderr, "fixture: %s\n", st.msg);
        exit(2);
    }
    return t.data;
}

static int64_t numel_of(const char *name) {
    tensor t;
    lion_status st;
    return safetensors_get(fx, name, &t, &st) ? 0 : tensor_numel(&t);
}

static float *fresh(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) exit(2);
    return p;
}

/* Naive references: plain loops in double, no BLAS, no threads. */
static void naive_linear(float *y, const float *x, const float *w, const float *b, int n, int in, int out) {
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            double s = b ? b[o] : 0;
            for (int k = 0; k < in; k++) s += (double)x[(size_t)i * in + k] * w[(size_t)o * in + k];
            y[(size_t)i * out + o] = (float)s;
        }
}

static void naive_attention(const attention_args *a) {
    int lq = a->q_len, lk = a->k_len, dh = a->head_dim;
    double *s = malloc(sizeof(double) * (size_t)lk);
    for (int b = 0; b < a->batch; b++)
        for (int h = 0; h < a->heads; h++)
            for (int i = 0; i < lq; i++) {
                const float *q = a->q + ((size_t)b * lq + i) * a->q_stride + (size_t)h * dh;
                double mx = -INFINITY;
                for (int j = 0; j < lk; j++) {
                    const float *k = a->k + ((size_t)b * lk + j) * a->k_stride + (size_t)h * dh;
                    double d = 0;
                    for (int c = 0; c < dh; c++) d += (double)q[c] * k[c];
                    d *= a->scale;
                    if (a->bias) d += a->bias[(size_t)b * a->bias_batch_stride + ((size_t)h * lq + i) * lk + j];
                    if (a->window_mask) d += a->window_mask[((size_t)(b % a->window_count) * lq + i) * lk + j];
                    if (a->key_mask && !a->key_mask[(size_t)b * lk + j]) d = -INFINITY;
                    if (a->causal && j > i + (lk - lq)) d = -INFINITY;
                    s[j] = d;
                    if (d > mx) mx = d;
                }
                double sum = 0;
                for (int j = 0; j < lk; j++) sum += (s[j] = mx == -INFINITY ? 0 : exp(s[j] - mx));
                float *o = a->out + ((size_t)b * lq + i) * a->out_stride + (size_t)h * dh;
                for (int c = 0; c < dh; c++) {
                    double acc = 0;
                    for (int j = 0; j < lk; j++)
                        acc += s[j] * a->v[((size_t)b * lk + j) * a->v_stride + (size_t)h * dh + c];
                    o[c] = sum > 0 ? (float)(acc / sum) : 0.0f;
                }
            }
    free(s);
}

static void test_linear(const char *c, int n, int in, int out) {
    char k[64];
    snprintf(k, sizeof k, "%s.x", c); const float *x = get(k);
    snprintf(k, sizeof k, "%s.w", c); const float *w = get(k);
    snprintf(k, sizeof k, "%s.b", c); const float *b = get(k);
    snprintf(k, sizeof k, "%s.y", c); const float *want = get(k);
    float *y = fresh((size_t)n * out), *ny = fresh((size_t)n * out);
    linear_forward(y, x, w, b, n, in, out);
    naive_linear(ny, x, w, b, n, in, out);
    CHECK_CLOSE(y, want, (size_t)n * out, 1e-5, c);
    CHECK_CLOSE(y, ny, (size_t)n * out, 1e-5, "linear vs naive");
    linear_forward(y, x, w, NULL, n, in, out); /* no bias: y = x W^T */
    naive_linear(ny, x, w, NULL, n, in, out);
    CHECK_CLOSE(y, ny, (size_t)n * out, 1e-5, "linear without bias vs naive");
    free(y);
    free(ny);
}

static void test_norms(void) {
    static const struct { const char *c; int n, d; float eps; } ln[] = {
        {"layernorm_vit", 5, 1408, 1e-6f}, {"layernorm_bert", 3, 768, 1e-12f}};
    char k[64];
    for (size_t i = 0; i < 2; i++) {
        snprintf(k, sizeof k, "%s.x", ln[i].c); const float *x = get(k);
        snprintf(k, sizeof k, "%s.w", ln[i].c); const float *w = get(k);
        snprintf(k, sizeof k, "%s.b", ln[i].c); const float *b = get(k);
        snprintf(k, sizeof k, "%s.y", ln[i].c); const float *want = get(k);
        size_t n = (size_t)ln[i].n * ln[i].d;
        float *y = fresh(n);
        layernorm_forward(y, x, w, b, ln[i].n, ln[i].d, ln[i].eps);
        CHECK_CLOSE(y, want, n, 1e-5, ln[i].c);
        memcpy(y, x, n * sizeof(float)); /* in place gives the same */
        layernorm_forward(y, y, w, b, ln[i].n, ln[i].d, ln[i].eps);
        CHECK_CLOSE(y, want, n, 1e-5, "layernorm in place");
        free(y);
    }
    float *y = fresh(4 * 256);
    rmsnorm_forward(y, get("rmsnorm.x"), get("rmsnorm.w"), 4, 256, 1e-6f);
    CHECK_CLOSE(y, get("rmsnorm.y"), 4 * 256, 1e-5, "rmsnorm");
    free(y);
}

static void test_elementwise(void) {
    size_t n = (size_t)numel_of("gelu.x");
    CHECK_EQ_INT(n, 1001);
    float *y = fresh(n);
    memcpy(y, get("gelu.x"), n * sizeof(float));
    gelu_forward(y, n);
    CHECK(testing_max_abs_err(y, get("gelu.y"), n) <= 1e-6);
    memcpy(y, get("relu.x"), n * sizeof(float));
    relu_forward(y, n);
    CHECK(testing_max_abs_err(y, get("relu.y"), n) == 0);
    free(y);

    float *s = fresh(6 * 50);
    memcpy(s, get("softmax.x"), 6 * 50 * sizeof(float));
    softmax_forward(s, 6, 50);
    CHECK(testing_max_abs_err(s, get("softmax.y"), 6 * 50) <= 1e-6);
    int finite = 1;
    for (int i = 0; i < 300; i++) finite &= isfinite(s[i]);
    CHECK_MSG(finite, "softmax of huge and fully masked rows must stay finite");
    free(s);

    CHECK(fabsf(sigmoidf_stable(-100.0f)) < 1e-30f && sigmoidf_stable(100.0f) == 1.0f);
    CHECK(fabsf(sigmoidf_stable(0.3f) - 1.0f / (1.0f + expf(-0.3f))) < 1e-7f);
}

static void run_attention(attention_args *a, const float *want, const char *what) {
    size_t n = (size_t)a->batch * a->q_len * a->out_stride;
    float *got = fresh(n), *naive = fresh(n);
    a->out = got;
    CHECK(attention_forward(a, &scratch) == 0);
    a->out = naive;
    naive_attention(a);
    CHECK_CLOSE(got, want, n, 1e-5, what);
    CHECK_CLOSE(got, naive, n, 1e-5, "attention vs naive");
    free(got);
    free(naive);
}

static void test_attention(void) {
    const int B = 2, H = 4, D = 16, L = 10, HD = H * D;
    const float *qkv = get("attn_self.qkv");
    uint8_t mask[2 * 10];
    const uint8_t *mraw = (const uint8_t *)get("attn_self.mask");
    memcpy(mask, mraw, sizeof mask);
    attention_args a = {.batch = B, .heads = H, .head_dim = D, .q_len = L, .k_len = L, .q = qkv, .k = qkv + HD,
                        .v = qkv + 2 * HD, .q_stride = 3 * HD, .k_stride = 3 * HD, .v_stride = 3 * HD,
                        .out_stride = HD, .scale = 0.25f, .key_mask = mask};
    run_attention(&a, get("attn_self.out"), "self-attention (fused qkv, padding mask)");

    attention_args c = {.batch = B, .heads = H, .head_dim = D, .q_len = L, .k_len = L, .q = get("attn_causal.q"),
                        .k = get("attn_causal.k"), .v = get("attn_causal.v"), .q_stride = HD, .k_stride = HD,
                        .v_stride = HD, .out_stride = HD, .scale = 1.0f, .causal = 1, .bias = get("attn_causal.bias")};
    run_attention(&c, get("attn_causal.out"), "causal attention with position bias");

    attention_args s = c;
    s.q_len = 1;
    s.q = get("attn_step.q");
    s.k = get("attn_step.k");
    s.v = get("attn_step.v");
    s.bias = get("attn_step.bias");
    run_attention(&s, get("attn_step.out"), "one decode step over cached keys");

    attention_args x = {.batch = B, .heads = H, .head_dim = D, .q_len = 5, .k_len = 9, .q = get("attn_cross.q"),
                        .k = get("attn_cross.k"), .v = get("attn_cross.v"), .q_stride = HD, .k_stride = HD,
                        .v_stride = HD, .out_stride = HD, .scale = 0.25f};
    run_attention(&x, get("attn_cross.out"), "cross-attention");

    attention_args w = {.batch = 4, .heads = H, .head_dim = D, .q_len = 9, .k_len = 9, .q = get("attn_window.q"),
                        .k = get("attn_window.k"), .v = get("attn_window.v"), .q_stride = HD, .k_stride = HD,
                        .v_stride = HD, .out_stride = HD, .scale = 0.25f, .bias = get("attn_window.bias"),
                        .window_mask = get("attn_window.wmask"), .window_count = 2};
    run_attention(&w, get("attn_window.out"), "shifted-window attention");
}

/* attention_query (the decode step's per-row attention) against the naive loops: head dims
 * in whole vectors (8, 24, 32, 64, 128: the vector path) and not (36: the scalar path), key
 * counts around the 8-key blocks, keys and values in rows wider than the heads (a cache's
 * layout, unaligned), position bias per head, masked keys, one fully masked query. */
static void test_attention_query(void) {
    static const int dims[] = {8, 24, 32, 36, 64, 128}, lens[] = {1, 7, 8, 9, 17, 40};
    uint64_t seed = 7;
    for (size_t di = 0; di < sizeof dims / sizeof *dims; di++)
        for (size_t li = 0; li < sizeof lens / sizeof *lens; li++)
            for (int variant = 0; variant < 3; variant++) {
                const int D = dims[di], L = lens[li], H = 3, stride = H * D + 5;
                float *q = fresh((size_t)H * D), *k = fresh((size_t)L * stride + 1), *v = fresh((size_t)L * stride + 1);
                float *bias = fresh((size_t)H * L), *got = fresh((size_t)H * D), *want = fresh((size_t)H * D);
                float *scores = fresh((size_t)L);
                uint8_t *mask = calloc((size_t)L, 1);
                if (!mask) exit(2);
                float *all[] = {q, k + 1, v + 1, bias};
                size_t counts[] = {(size_t)H * D, (size_t)L * stride, (size_t)L * stride, (size_t)H * L};
                for (int a = 0; a < 4; a++)
                    for (size_t i = 0; i < counts[a]; i++) all[a][i] = weight_builder_uniform(&seed, 2.5f);
                /* variant 0: no bias, no mask; 1: bias, every third key masked; 2: all masked */
                for (int j = 0; j < L; j++) mask[j] = variant == 0 || (variant == 1 && j % 3 != 1);
                const float scale = 1.0f / sqrtf((float)D);
                attention_query(got, q, k + 1, v + 1, L, stride, H, D, scale, variant == 1 ? bias : NULL, (size_t)L,
                                variant ? mask : NULL, scores);
                attention_args a = {.batch = 1, .heads = H, .head_dim = D, .q_len = 1, .k_len = L, .q = q, .k = k + 1,
                                    .v = v + 1, .q_stride = H * D, .k_stride = stride, .v_stride = stride,
                                    .out_stride = H * D, .scale = scale, .out = want,
                                    .bias = variant == 1 ? bias : NULL, .key_mask = variant ? mask : NULL};
                naive_attention(&a);
                char what[96];
                snprintf(what, sizeof what, "attention_query head_dim %d, %d keys, variant %d", D, L, variant);
                CHECK_CLOSE(got, want, (size_t)H * D, 1e-5, what);
                free(q), free(k), free(v), free(bias), free(got), free(want), free(scores), free(mask);
            }
}

static void test_patch_embed(void) {
    const int dim = 32, np = 2 * 3;
    float *y = fresh((size_t)np * dim);
    CHECK(patch_embed_forward(y, get("patch.img"), get("patch.w"), get("patch.b"), 3, 28, 42, 14, dim, &scratch) == 0);
    CHECK_CLOSE(y, get("patch.y"), (size_t)np * dim, 1e-5, "patch embedding vs conv2d");
    free(y);
}

static void test_arena(void) {
    arena a;
    arena_init(&a, 1024);
    float *p = arena_floats(&a, 100);
    CHECK(p && ((uintptr_t)p % 64) == 0);
    arena_mark m = arena_save(&a);
    float *big = arena_floats(&a, 10000); /* larger than a chunk: gets its own */
    CHECK(big != NULL);
    arena_restore(&a, m);
    float *again = arena_floats(&a, 10);
    CHECK(again == p + 112); /* 400 bytes rounded up to 448: back to just after p */
    size_t peak = a.peak;
    arena_reset(&a);
    CHECK(arena_floats(&a, 100) == p); /* memory is reused after reset, not reallocated */
    CHECK(a.peak == peak);
    arena_free(&a);
}

static void test_dtypes(void) {
    /* exact values: 1, -2, 65504 (f16 max), 2^-24 (smallest subnormal), round-half-even */
    CHECK(f16_to_f32(0x3c00) == 1.0f && f16_to_f32(0xc000) == -2.0f && f16_to_f32(0x7bff) == 65504.0f);
    CHECK(f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    CHECK(f32_to_f16(1.0f) == 0x3c00 && f32_to_f16(65520.0f) == 0x7c00 && f32_to_f16(ldexpf(1.0f, -25)) == 0);
    CHECK(f32_to_f16(1.0f + ldexpf(1.0f, -11)) == 0x3c00); /* tie goes to even */
    CHECK(f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)) == 0x3c02);
    CHECK(f32_to_bf16(1.0f) == 0x3f80 && bf16_to_f32(0x4049) == 3.140625f);
    CHECK(isnan(f16_to_f32(f32_to_f16(NAN))) && isnan(bf16_to_f32(f32_to_bf16(NAN))));
    for (uint32_t h = 0; h < 0x7c00; h++) /* every finite positive half survives a round trip */
        if (f32_to_f16(f16_to_f32((uint16_t)h)) != h) {
            CHECK_MSG(0, "f16 round trip of 0x%04x", h);
            break;
        }
    int64_t big[] = {INT64_MAX / 2, 3};
    CHECK(shape_numel(2, big) == -1);
    int64_t neg[] = {4, -1};
    CHECK(shape_numel(2, neg) == -1);
}

int main(void) {
    threads_init(2);
    arena_init(&scratch, 1 << 20);
    lion_status st;
    if (safetensors_open(&fx, testing_fixture("ops.safetensors"), &st)) {
        fprintf(stderr, "%s\n", st.msg);
        return 2;
    }
    test_linear("linear_small", 7, 33, 19);
    test_linear("linear_wide", 20, 1408, 96);
    test_linear("linear_row", 1, 1408, 37);
    test_linear("linear_beams", 5, 1411, 37);
    test_norms();
    test_elementwise();
    test_attention();
    test_attention_query();
    test_patch_embed();
    test_arena();
    test_dtypes();
    safetensors_close(fx);
    arena_free(&scratch);
    return testing_finish();
}
