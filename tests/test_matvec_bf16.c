/* matvec_bf16 / matvec_f32 (common/nn/matvec_bf16.h) against a double-precision reference
 * computed from the same weights, for every kernel this CPU runs (each one forced), and the
 * f32 -> bf16 rounding of tensor.h's helpers on known values.
 *
 * Error bound. Each output is `in` products summed in f32 (in some order) plus the bias, so
 * whatever the order, |y - ref| <= gamma * (sum_k |x_k w_k| + |b|) with gamma = (in + 2) * 2^-24
 * (the classic bound for a sum of in + 1 terms, products exact in double). That is asserted
 * per output, and the normwise error max|y - ref| / max|ref| is asserted <= 1e-5. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "matvec_bf16.h"
#include "tensor.h"
#include "testing.h"
#include "threads.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;

static float uniform(void) { /* [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) exit(2);
    return p;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ------------------------------------------------------------------ bf16 rounding */

static void test_bf16_rounding(void) {
    static const struct { uint32_t f32; uint16_t bf16; const char *what; } cases[] = {
        {0x3f800000u, 0x3f80, "1.0 exact"},
        {0x3f808000u, 0x3f80, "tie between 0x3f80 and 0x3f81 goes to even 0x3f80"},
        {0x3f818000u, 0x3f82, "tie between 0x3f81 and 0x3f82 goes to even 0x3f82"},
        {0x3f808001u, 0x3f81, "just above the tie rounds up"},
        {0x3f807fffu, 0x3f80, "just below the tie rounds down"},
        {0xbf808000u, 0xbf80, "negative tie goes to even"},
        {0xbf818000u, 0xbf82, "negative tie goes to even (odd below)"},
        {0x00000000u, 0x0000, "+0"},
        {0x80000000u, 0x8000, "-0 keeps its sign"},
        {0x00008000u, 0x0000, "subnormal tie to even zero"},
        {0x00018000u, 0x0002, "subnormal tie to even"},
        {0x7f800000u, 0x7f80, "+inf"},
        {0xff800000u, 0xff80, "-inf"},
        {0x7f7fffffu, 0x7f80, "FLT_MAX rounds up to inf, as torch does"},
        {0x7f7f7fffu, 0x7f7f, "largest below the bf16 max's tie stays finite"},
        {0x3fc00000u, 0x3fc0, "1.5 exact"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t got = f32_to_bf16(bits_f32(cases[i].f32));
        CHECK_MSG(got == cases[i].bf16, "f32_to_bf16(0x%08x) = 0x%04x, expected 0x%04x: %s", (unsigned)cases[i].f32,
                  (unsigned)got, (unsigned)cases[i].bf16, cases[i].what);
    }
    /* NaN stays NaN, whatever its payload: a NaN whose payload is only in the low 16 bits
     * must not truncate to inf */
    static const uint32_t nans[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7fbfffffu, 0x7f80ffffu};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        uint16_t h = f32_to_bf16(bits_f32(nans[i]));
        CHECK_MSG(isnan(bf16_to_f32(h)), "f32_to_bf16(NaN 0x%08x) = 0x%04x is not NaN", (unsigned)nans[i],
                  (unsigned)h);
        CHECK_MSG((h & 0x8000) == ((nans[i] >> 16) & 0x8000), "NaN 0x%08x lost its sign", (unsigned)nans[i]);
    }
    /* every bf16 widens and narrows back to itself (NaN to a NaN) */
    int roundtrip_bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = bf16_to_f32((uint16_t)h);
        uint16_t back = f32_to_bf16(f);
        if (isnan(f) ? !isnan(bf16_to_f32(back)) : back != h) roundtrip_bad++;
    }
    CHECK_MSG(roundtrip_bad == 0, "%d bf16 values do not round-trip through f32", roundtrip_bad);
    /* the bulk converter is the same helper */
    float v[257];
    uint16_t bulk[257];
    for (int i = 0; i < 257; i++) v[i] = uniform() * 1000.0f;
    v[0] = bits_f32(0x3f808000u), v[1] = NAN, v[2] = INFINITY;
    lion_status st;
    CHECK(convert_from_f32(bulk, DTYPE_BF16, v, 257, &st) == 0);
    int same = 1;
    for (int i = 0; i < 257; i++) same &= bulk[i] == f32_to_bf16(v[i]);
    CHECK_MSG(same, "convert_from_f32(BF16) differs from f32_to_bf16");
}

/* ------------------------------------------------------------------ products */

/* ref[r][n] = sum_k x w + b in double; mag[r][n] = sum_k |x w| + |b| for the bound. */
static void reference(double *ref, double *mag, const float *x, const float *wf, const float *b, int rows, int in,
                      int out) {
    for (int r = 0; r < rows; r++)
        for (int n = 0; n < out; n++) {
            double s = b ? b[n] : 0, m = b ? fabs(b[n]) : 0;
            for (int k = 0; k < in; k++) {
                double p = (double)x[(size_t)r * in + k] * wf[(size_t)n * in + k];
                s += p;
                m += fabs(p);
            }
            ref[(size_t)r * out + n] = s;
            mag[(size_t)r * out + n] = m;
        }
}

typedef struct problem {
    int rows, in, out;
    float *x, *wf, *b; /* wf: the weights as f32 (for bf16: exactly the bf16 values) */
    uint16_t *wh;
    double *ref, *mag;
} problem;

static void problem_init(problem *p, int rows, int in, int out, int is_bf16, int with_bias) {
    p->rows = rows, p->in = in, p->out = out;
    /* x one float past a 64-byte boundary: the kernels must not assume alignment */
    float *xs = xmalloc(((size_t)rows * in + 1) * sizeof(float));
    p->x = xs + 1;
    p->wf = xmalloc((size_t)out * in * sizeof(float));
    p->wh = xmalloc((size_t)out * in * sizeof(uint16_t));
    for (size_t i = 0; i < (size_t)rows * in; i++) p->x[i] = uniform();
    for (size_t i = 0; i < (size_t)out * in; i++) {
        float w = uniform();
        p->wh[i] = f32_to_bf16(w);
        p->wf[i] = is_bf16 ? bf16_to_f32(p->wh[i]) : w;
    }
    p->b = NULL;
    if (with_bias) {
        p->b = xmalloc((size_t)out * sizeof(float));
        for (int n = 0; n < out; n++) p->b[n] = uniform() * 4.0f;
    }
    p->ref = xmalloc((size_t)rows * out * sizeof(double));
    p->mag = xmalloc((size_t)rows * out * sizeof(double));
    reference(p->ref, p->mag, p->x, p->wf, p->b, rows, in, out);
}

static void problem_free(problem *p) {
    free(p->x - 1);
    free(p->wf);
    free(p->wh);
    free(p->b);
    free(p->ref);
    free(p->mag);
}

static int product(matvec_isa isa, int is_bf16, float *y, const problem *p, const float *x, int rows) {
    return is_bf16 ? matvec_bf16_isa(isa, y, x, p->wh, p->b, rows, p->in, p->out)
                   : matvec_f32_isa(isa, y, x, p->wf, p->b, rows, p->in, p->out);
}

static double worst_normwise;

/* One kernel on one problem: the bounds, rows independent of each other, threads. */
static void check_problem(matvec_isa isa, int is_bf16, const problem *p) {
    const int rows = p->rows, in = p->in, out = p->out;
    const size_t ny = (size_t)rows * out;
    char what[160];
    snprintf(what, sizeof what, "%s %s rows %d in %d out %d %s", matvec_isa_name(isa), is_bf16 ? "bf16" : "f32",
             rows, in, out, p->b ? "bias" : "no bias");
    float *y = xmalloc(ny * sizeof(float)), *y1 = xmalloc((size_t)out * sizeof(float));
    float *yt = xmalloc(ny * sizeof(float));
    CHECK_MSG(product(isa, is_bf16, y, p, p->x, rows) == 0, "%s: refused", what);

    const double gamma = (in + 2) * ldexp(1.0, -24);
    double max_err = 0, max_ref = 0;
    int bad = 0;
    for (size_t i = 0; i < ny; i++) {
        double e = fabs((double)y[i] - p->ref[i]);
        if (!(e <= gamma * p->mag[i])) {
            if (bad++ < 3)
                fprintf(stderr, "%s: y[%zu] = %.9g, reference %.9g, error %.3g > bound %.3g\n", what, i, y[i],
                        p->ref[i], e, gamma * p->mag[i]);
        }
        if (!(e <= max_err)) max_err = e;
        if (fabs(p->ref[i]) > max_ref) max_ref = fabs(p->ref[i]);
    }
    CHECK_MSG(bad == 0, "%s: %d outputs outside the f32 summation bound", what, bad);
    double normwise = max_err / (max_ref > 1e-30 ? max_ref : 1e-30);
    CHECK_MSG(normwise <= 1e-5, "%s: normwise relative error %.3g > 1e-5", what, normwise);
    if (normwise > worst_normwise) worst_normwise = normwise;

    /* row r of the many-row product is bit-identical to the one-row product of x[r] */
    int rows_differ = 0;
    for (int r = 0; r < rows; r++) {
        product(isa, is_bf16, y1, p, p->x + (size_t)r * in, 1);
        rows_differ += memcmp(y1, y + (size_t)r * out, (size_t)out * sizeof(float)) != 0;
    }
    CHECK_MSG(rows_differ == 0, "%s: %d rows differ from their one-row product", what, rows_differ);

    /* and independent of the thread count */
    threads_use_here(1);
    product(isa, is_bf16, yt, p, p->x, rows);
    threads_use_here(2);
    CHECK_MSG(memcmp(yt, y, ny * sizeof(float)) == 0, "%s: 1 thread and 2 threads differ", what);
    free(y);
    free(y1);
    free(yt);
}

static const matvec_isa kernels[] = {MATVEC_SCALAR, MATVEC_AVX2, MATVEC_AVX512};

static void test_products(void) {
    /* the acceptance shape: in and out off every vector width and block (in = 2048 + 3,
     * out = 129 = 32 blocks of 4 + 1), all row counts; then small edges of the k tail
     * (below, at and past one step of 16 or 32) and of the blocks of W */
    static const int row_counts[] = {1, 2, 5, 7, 16};
    static const struct { int in, out; } shapes[] = {
        {2048 + 3, 129}, {1, 5}, {7, 3}, {15, 4}, {16, 9}, {17, 1}, {31, 6}, {32, 7}, {33, 8}, {64, 4}, {69, 2}};
    int ran = 0;
    for (size_t ki = 0; ki < sizeof kernels / sizeof kernels[0]; ki++) {
        matvec_isa isa = kernels[ki];
        if (!matvec_isa_supported(isa)) {
            printf("kernel %s: not supported by this CPU, not run here\n", matvec_isa_name(isa));
            continue;
        }
        printf("kernel %s: run\n", matvec_isa_name(isa));
        ran++;
        for (int is_bf16 = 0; is_bf16 <= 1; is_bf16++)
            for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
                for (size_t ri = 0; ri < sizeof row_counts / sizeof row_counts[0]; ri++)
                    for (int bias = 0; bias <= 1; bias++) {
                        if (si > 0 && ri % 2 == 1 && bias) continue; /* small shapes: fewer combinations */
                        problem p;
                        problem_init(&p, row_counts[ri], shapes[si].in, shapes[si].out, is_bf16, bias);
                        check_problem(isa, is_bf16, &p);
                        problem_free(&p);
                    }
    }
    CHECK(ran >= 1);
    printf("worst normwise relative error: %.3g (bound 1e-5)\n", worst_normwise);
}

/* MATVEC_AUTO is the best supported kernel, bit for bit; unsupported kernels refuse. */
static void test_dispatch(void) {
    matvec_isa best = matvec_isa_best();
    CHECK(matvec_isa_supported(best));
    CHECK(best != MATVEC_AUTO);
    const char *name = matvec_kernel_name();
    CHECK(name != NULL && strncmp(name, matvec_isa_name(best), strlen(matvec_isa_name(best))) == 0);
    printf("kernel chosen: %s\n", name);
    for (int i = 0; i < MATVEC_ISA_COUNT; i++) {
        matvec_isa back;
        CHECK(matvec_isa_from_name(matvec_isa_name((matvec_isa)i), &back) == 0 && back == (matvec_isa)i);
    }
    matvec_isa unused;
    CHECK(matvec_isa_from_name("avx1024", &unused) == -1);
    CHECK(strcmp(matvec_isa_name((matvec_isa)99), "?") == 0);

    problem p;
    problem_init(&p, 5, 2048 + 3, 129, 1, 1);
    size_t ny = (size_t)5 * 129;
    float *ya = xmalloc(ny * sizeof(float)), *yb = xmalloc(ny * sizeof(float));
    matvec_bf16(ya, p.x, p.wh, p.b, 5, p.in, p.out);
    matvec_bf16_isa(best, yb, p.x, p.wh, p.b, 5, p.in, p.out);
    CHECK_MSG(memcmp(ya, yb, ny * sizeof(float)) == 0, "matvec_bf16 differs from the %s kernel", matvec_isa_name(best));
    matvec_f32(ya, p.x, p.wf, p.b, 5, p.in, p.out);
    matvec_f32_isa(best, yb, p.x, p.wf, p.b, 5, p.in, p.out);
    CHECK_MSG(memcmp(ya, yb, ny * sizeof(float)) == 0, "matvec_f32 differs from the %s kernel", matvec_isa_name(best));

    for (size_t ki = 0; ki < sizeof kernels / sizeof kernels[0]; ki++) {
        if (matvec_isa_supported(kernels[ki])) continue;
        for (size_t i = 0; i < ny; i++) ya[i] = 42.0f;
        CHECK(matvec_bf16_isa(kernels[ki], ya, p.x, p.wh, p.b, 5, p.in, p.out) == -1);
        CHECK(matvec_f32_isa(kernels[ki], ya, p.x, p.wf, p.b, 5, p.in, p.out) == -1);
        int untouched = 1;
        for (size_t i = 0; i < ny; i++) untouched &= ya[i] == 42.0f;
        CHECK_MSG(untouched, "a refused %s product wrote y", matvec_isa_name(kernels[ki]));
    }

    /* empty products: no rows or no outputs write nothing; in = 0 gives the bias (or 0) */
    for (size_t ki = 0; ki < sizeof kernels / sizeof kernels[0]; ki++) {
        matvec_isa isa = kernels[ki];
        if (!matvec_isa_supported(isa)) continue;
        ya[0] = 42.0f;
        CHECK(matvec_bf16_isa(isa, ya, p.x, p.wh, p.b, 0, p.in, p.out) == 0 && ya[0] == 42.0f);
        CHECK(matvec_bf16_isa(isa, ya, p.x, p.wh, p.b, 5, p.in, 0) == 0 && ya[0] == 42.0f);
        float y0[2 * 3];
        CHECK(matvec_bf16_isa(isa, y0, p.x, p.wh, p.b, 2, 0, 3) == 0);
        CHECK(matvec_f32_isa(isa, y0 + 3, p.x, p.wf, NULL, 1, 0, 3) == 0);
        CHECK(y0[0] == p.b[0] && y0[1] == p.b[1] && y0[2] == p.b[2] && y0[3] == 0.0f && y0[4] == 0.0f && y0[5] == 0.0f);
    }
    free(ya);
    free(yb);
    problem_free(&p);
}

int main(void) {
    threads_init(2);
    test_bf16_rounding();
    test_dispatch();
    test_products();
    return testing_finish();
}
