/* linear.h and onednn_matmul.h against a double-precision reference: every form of a
 * matrix (f32, plain bf16 on matvec / widened panels, oneDNN packed) with bias, activation
 * and residual post-ops, binding from safetensors files of every float dtype, and oneDNN's
 * matmul in f32 on any CPU (bf16 where oneDNN runs it natively; said when it does not). */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_features.h"
#include "linear.h"
#include "onednn_matmul.h"
#include "ops.h"
#include "tensor.h"
#include "testing.h"

static float frand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static float round_bf16(float v) { return bf16_to_f32(f32_to_bf16(v)); }

static double gelu_ref(double v) { return 0.5 * v * (1.0 + erf(v / sqrt(2.0))); }

/* y = post(x W^T + b) in double, with x and/or W rounded to bf16 first when asked */
static void reference(float *y, const float *x, const float *w, const float *b, int rows, int in, int out,
                      int round_x, int round_w, int gelu, int accumulate) {
    for (int r = 0; r < rows; r++)
        for (int n = 0; n < out; n++) {
            double acc = b ? b[n] : 0;
            for (int k = 0; k < in; k++) {
                const float xv = round_x ? round_bf16(x[(size_t)r * in + k]) : x[(size_t)r * in + k];
                const float wv = round_w ? round_bf16(w[(size_t)n * in + k]) : w[(size_t)n * in + k];
                acc += (double)xv * wv;
            }
            if (gelu) acc = gelu_ref(acc);
            float *yo = &y[(size_t)r * out + n];
            *yo = (float)(accumulate ? *yo + acc : acc);
        }
}

static void fill(float *p, size_t n, unsigned seed, float scale) {
    for (size_t i = 0; i < n; i++) p[i] = frand(&seed) * scale;
}

/* One product of l in every post-op combination against the reference. */
static void check_forms(lion_precision p, int flags, int rows, int in, int out, double tol) {
    float *w = malloc(sizeof(float) * out * in), *x = malloc(sizeof(float) * rows * in), *b = malloc(sizeof(float) * out);
    float *y = malloc(sizeof(float) * rows * out), *want = malloc(sizeof(float) * rows * out);
    fill(w, (size_t)out * in, 7 + in, 0.1f);
    fill(x, (size_t)rows * in, 11 + rows, 1.0f);
    fill(b, (size_t)out, 13, 0.5f);
    lion_status st;
    linear l;
    arena a;
    arena_init(&a, 1 << 20);
    CHECK_MSG(linear_from_f32(&l, w, out, in, p, flags, &st) == 0, "linear_from_f32: %s", st.msg);
    const int bf16 = p == PRECISION_BF16, round_x = l.packed != NULL;
    for (int mode = 0; mode < 3; mode++) {
        /* 0: y = xW^T + b; 1: gelu; 2: y += xW^T + b (residual) */
        linear_post post = {.act = mode == 1 ? LINEAR_ACT(ACT_GELU) : 0, .accumulate = mode == 2};
        fill(y, (size_t)rows * out, 17, 1.0f);
        memcpy(want, y, sizeof(float) * rows * out);
        reference(want, x, w, b, rows, in, out, round_x, bf16, mode == 1, mode == 2);
        int rc = linear_forward_post(&l, y, x, b, rows, &post, &a, &st);
        CHECK_MSG(rc == 0, "forward: %s", st.msg);
        double err = testing_rel_err(y, want, (size_t)rows * out);
        CHECK_MSG(err <= tol, "%s (%s) rows %d in %d out %d mode %d: rel err %.3g > %.3g", precision_name(p),
                  linear_form(&l), rows, in, out, mode, err, tol);
    }
    /* no bias */
    reference(want, x, w, NULL, rows, in, out, round_x, bf16, 0, 0);
    CHECK(linear_apply(&l, y, x, NULL, rows, &a, &st) == 0);
    CHECK_MSG(testing_rel_err(y, want, (size_t)rows * out) <= tol, "%s rows %d without bias", precision_name(p), rows);
    CHECK_EQ_INT(linear_bytes(&l) > 0, 1);
    linear_free(&l);
    arena_free(&a);
    free(w), free(x), free(b), free(y), free(want);
}

/* A step matrix's rows are bit-identical to one-row products, whatever the rows beside them. */
static void check_step_rows(void) {
    const int in = 96, out = 40, rows = 24;
    float w[40 * 96], x[24 * 96], y[24 * 40], one[40];
    fill(w, sizeof w / sizeof *w, 3, 0.2f);
    fill(x, sizeof x / sizeof *x, 5, 1.0f);
    lion_status st;
    linear l;
    arena a;
    arena_init(&a, 1 << 16);
    CHECK(linear_from_f32(&l, w, out, in, PRECISION_BF16, LINEAR_STEP, &st) == 0);
    CHECK(l.packed == NULL && l.w16 != NULL);
    CHECK(linear_apply(&l, y, x, NULL, rows, &a, &st) == 0);
    int same = 1;
    for (int r = 0; r < rows; r++) {
        CHECK(linear_apply(&l, one, x + r * in, NULL, 1, &a, &st) == 0);
        same &= memcmp(one, y + r * out, sizeof one) == 0;
    }
    CHECK_MSG(same, "a step matrix's row differs from its one-row product");
    linear_free(&l);
    arena_free(&a);
}

/* Binding from a file: f32, f16 and bf16 tensors in both precisions. */
static void check_bind(void) {
    const int out = 24, in = 40;
    float w[24 * 40];
    fill(w, sizeof w / sizeof *w, 19, 0.3f);
    char dir[] = "/tmp/lion-test-linear-XXXXXX", path[256];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    lion_status st;
    tensor t[3];
    int64_t shape[] = {out, in};
    const dtype dts[3] = {DTYPE_F32, DTYPE_F16, DTYPE_BF16};
    safetensors_item items[3] = {{"m.f32", &t[0]}, {"m.f16", &t[1]}, {"m.bf16", &t[2]}};
    for (int i = 0; i < 3; i++) {
        CHECK(tensor_alloc(&t[i], dts[i], 2, shape, &st) == 0);
        CHECK(convert_from_f32(t[i].data, dts[i], w, (size_t)out * in, &st) == 0);
    }
    CHECK_MSG(safetensors_write(path, items, 3, NULL, 0, &st) == 0, "write: %s", st.msg);
    weights wt;
    CHECK_MSG(weights_open(&wt, path, "m.", &st) == 0, "open: %s", st.msg);
    arena a;
    arena_init(&a, 1 << 16);
    float x[3 * 40], y[3 * 24], want[3 * 24];
    fill(x, sizeof x / sizeof *x, 23, 1.0f);
    const char *names[3] = {"f32", "f16", "bf16"};
    for (int p = PRECISION_F32; p <= PRECISION_BF16; p++)
        for (int i = 0; i < 3; i++) {
            linear l;
            int rc = linear_bind(&l, &wt, (lion_precision)p, 0, out, in, &st, "%s", names[i]);
            CHECK_MSG(rc == 0, "bind %s as %s: %s", names[i], precision_name((lion_precision)p), st.msg);
            if (rc) continue;
            CHECK((p == PRECISION_F32) == (l.w != NULL));
            /* what the file holds, as the product sees it */
            float held[24 * 40];
            for (int k = 0; k < out * in; k++)
                held[k] = dts[i] == DTYPE_F16 ? f16_to_f32(((const uint16_t *)t[1].data)[k]) : w[k];
            reference(want, x, held, NULL, 3, in, out, l.packed != NULL, p == PRECISION_BF16 || dts[i] == DTYPE_BF16,
                      0, 0);
            CHECK(linear_apply(&l, y, x, NULL, 3, &a, &st) == 0);
            CHECK_MSG(testing_rel_err(y, want, 3 * 24) <= 1e-5, "bound %s as %s: rel err %.3g", names[i],
                      precision_name((lion_precision)p), testing_rel_err(y, want, 3 * 24));
            linear_free(&l);
        }
    /* a wrong shape names the tensor */
    linear l;
    CHECK(linear_bind(&l, &wt, PRECISION_BF16, 0, in, out, &st, "bf16") != 0);
    CHECK_MSG(strstr(st.msg, "m.bf16") != NULL, "shape error does not name the tensor: %s", st.msg);
    CHECK(linear_bind(&l, &wt, PRECISION_AUTO, 0, out, in, &st, "f32") != 0);
    weights_close(&wt);
    arena_free(&a);
    for (int i = 0; i < 3; i++) tensor_free(&t[i]);
    unlink(path);
    rmdir(dir);
}

typedef struct thread_arg {
    onednn_matmul *m;
    const float *x;
    int rows, in, out;
    float *y;
    int rc;
} thread_arg;

static void *run_matmul(void *p) {
    thread_arg *t = p;
    arena a;
    arena_init(&a, 1 << 16);
    lion_status st;
    for (int i = 0; i < 20 && t->rc == 0; i++)
        t->rc = onednn_matmul_forward(t->m, t->y, t->x, NULL, t->rows, 0, 0, &a, &st);
    arena_free(&a);
    return NULL;
}

/* The f32 matmul m (weights w, bias b) on rows of x in each post-op set (none, GELU, residual
 * add onto y filled from y_seed) against the reference, within 1e-5. */
static void check_onednn_modes(onednn_matmul *m, const float *x, const float *w, const float *b, int rows, int in,
                               int out, unsigned y_seed, const char *what, arena *a) {
    float *y = malloc(sizeof(float) * rows * out), *want = malloc(sizeof(float) * rows * out);
    lion_status st;
    for (int mode = 0; mode < 3; mode++) {
        fill(y, (size_t)rows * out, y_seed, 1.0f);
        memcpy(want, y, sizeof(float) * rows * out);
        reference(want, x, w, b, rows, in, out, 0, 0, mode == 1, mode == 2);
        int rc = onednn_matmul_forward(m, y, x, b, rows, mode == 1 ? LINEAR_ACT(ACT_GELU) : 0, mode == 2, a, &st);
        CHECK_MSG(rc == 0, "%s rows %d: %s", what, rows, st.msg);
        double err = testing_rel_err(y, want, (size_t)rows * out);
        CHECK_MSG(err <= 1e-5, "%s rows %d mode %d: rel err %.3g", what, rows, mode, err);
    }
    free(y), free(want);
}

/* oneDNN's matmul in f32 (any CPU): packing, the primitive cache (more shapes than it holds),
 * post-ops, several threads on one matrix. */
static void check_onednn_f32(void) {
    const int in = 136, out = 72;
    float *w = malloc(sizeof(float) * out * in), *b = malloc(sizeof(float) * out);
    fill(w, (size_t)out * in, 29, 0.1f);
    fill(b, out, 31, 0.5f);
    lion_status st;
    onednn_matmul *m = onednn_matmul_create_f32(w, out, in, &st);
    CHECK_MSG(m != NULL, "onednn f32: %s", st.msg);
    if (!m) return;
    printf("onednn isa %s; f32 matrix: %s, %zu bytes packed\n", onednn_isa_name(), onednn_matmul_impl(m),
           onednn_matmul_weight_bytes(m));
    CHECK(strncmp(onednn_matmul_impl(m), "onednn f32", 10) == 0);
    CHECK(onednn_matmul_weight_bytes(m) >= sizeof(float) * out * in);
    arena a;
    arena_init(&a, 1 << 20);
    for (int rows = 1; rows <= 301; rows += 15) { /* 12 row buckets x 3 post-op sets: more than the cache holds */
        float *x = malloc(sizeof(float) * rows * in);
        fill(x, (size_t)rows * in, 37 + rows, 1.0f);
        check_onednn_modes(m, x, w, b, rows, in, out, 41, "onednn f32", &a);
        free(x);
    }
    /* two threads, different row counts, same matrix */
    float *x = malloc(sizeof(float) * 64 * in), *y1 = malloc(sizeof(float) * 64 * out),
          *y2 = malloc(sizeof(float) * 9 * out), *want = malloc(sizeof(float) * 64 * out);
    fill(x, (size_t)64 * in, 43, 1.0f);
    thread_arg t1 = {m, x, 64, in, out, y1, 0}, t2 = {m, x, 9, in, out, y2, 0};
    pthread_t a1, a2;
    pthread_create(&a1, NULL, run_matmul, &t1);
    pthread_create(&a2, NULL, run_matmul, &t2);
    pthread_join(a1, NULL);
    pthread_join(a2, NULL);
    CHECK(t1.rc == 0 && t2.rc == 0);
    reference(want, x, w, NULL, 64, in, out, 0, 0, 0, 0);
    CHECK(testing_rel_err(y1, want, (size_t)64 * out) <= 1e-5);
    CHECK(testing_rel_err(y2, want, (size_t)9 * out) <= 1e-5);
    onednn_matmul_free(m);
    /* a matmul that wants another layout than the packed one: the weights reordered per call */
    onednn_matmul_test_force_reorder(1);
    m = onednn_matmul_create_f32(w, out, in, &st);
    CHECK_MSG(m != NULL, "onednn f32: %s", st.msg);
    for (int rows = 3; m && rows <= 64; rows += 30) /* x: 64 rows */
        check_onednn_modes(m, x, w, b, rows, in, out, 59, "onednn f32, reordered weights", &a);
    onednn_matmul_test_force_reorder(0);
    onednn_matmul_free(m);
    arena_free(&a);
    free(x), free(y1), free(y2), free(want), free(w), free(b);
}

/* oneDNN's bf16 matmul: on CPUs where oneDNN creates one. */
static void check_onednn_bf16(void) {
    if (!onednn_bf16_supported()) {
        printf("onednn bf16: not run, oneDNN (isa %s) has no bf16 matmul on this CPU (%s); the plain bf16 forms "
               "were checked instead\n", onednn_isa_name(), cpu_isa_name());
        return;
    }
    const int in = 200, out = 96;
    float *w = malloc(sizeof(float) * out * in);
    uint16_t *w16 = malloc(sizeof(uint16_t) * out * in);
    fill(w, (size_t)out * in, 47, 0.1f);
    for (int i = 0; i < out * in; i++) w16[i] = f32_to_bf16(w[i]);
    lion_status st;
    onednn_matmul *m = onednn_matmul_create(w16, out, in, &st);
    CHECK_MSG(m != NULL, "onednn bf16: %s", st.msg);
    if (m) {
        printf("onednn bf16 matrix: %s\n", onednn_matmul_impl(m));
        arena a;
        arena_init(&a, 1 << 20);
        const int rows = 257;
        float *x = malloc(sizeof(float) * rows * in), *y = malloc(sizeof(float) * rows * out),
              *want = malloc(sizeof(float) * rows * out);
        fill(x, (size_t)rows * in, 53, 1.0f);
        reference(want, x, w, NULL, rows, in, out, 1, 1, 0, 0);
        CHECK(onednn_matmul_forward(m, y, x, NULL, rows, 0, 0, &a, &st) == 0);
        double err = testing_rel_err(y, want, (size_t)rows * out);
        CHECK_MSG(err <= 1e-5, "onednn bf16: rel err %.3g against bf16 operands in double", err);
        free(x), free(y), free(want);
        arena_free(&a);
        onednn_matmul_free(m);
    }
    free(w), free(w16);
}

int main(void) {
    /* f32 is OpenBLAS (sgemv / sgemm) */
    check_forms(PRECISION_F32, 0, 1, 300, 130, 1e-5);
    check_forms(PRECISION_F32, 0, 37, 300, 130, 1e-5);
    /* bf16: matvec for 1..32 rows, widened panels beyond (two panels: 512 rows of 4096 fill 8 MB) */
    const int rows[] = {1, 5, 32, 33, 64, 257};
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) check_forms(PRECISION_BF16, 0, rows[i], 300, 130, 1e-5);
    check_forms(PRECISION_BF16, 0, 40, 1408, 520, 1e-5);
    check_forms(PRECISION_BF16, 0, 20, 4096, 600, 1e-5);
    check_forms(PRECISION_BF16, LINEAR_STEP, 40, 96, 50, 1e-5);
    check_step_rows();
    check_bind();
    check_onednn_f32();
    check_onednn_bf16();
    return testing_finish();
}
