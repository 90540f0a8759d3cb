/* bench_util.c - the benchmarks' clock, CPU model and memory-bandwidth floor. */
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "arena.h"
#include "onednn_matmul.h"
#include "precision.h"
#include "tensor.h"
#include "weight_builder.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void *bench_alloc(const char *who, size_t n) {
    void *p = aligned_alloc(64, (n + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "%s: out of memory (%.1f MB)\n", who, n / 1e6);
        exit(1);
    }
    return p;
}

void bench_cpu_model(char *buf, size_t len) {
    snprintf(buf, len, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "model name", 10) == 0) {
            const char *v = strchr(line, ':');
            if (v) {
                v++;
                while (*v == ' ' || *v == '\t') v++;
                snprintf(buf, len, "%.*s", (int)strcspn(v, "\n"), v);
            }
            break;
        }
    fclose(f);
}

void bench_sort(double *v, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double t = v[j];
            v[j] = v[j - 1], v[j - 1] = t;
        }
}

/* The sum of n words, n a multiple of 32, read as 4 streams side by side (the quarters of
 * the range): one stream per core leaves bandwidth unused (measured here: ~35% less than
 * 4), and the products read several rows of W at once too. */
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2"))) static uint64_t sum_avx2(const uint64_t *p, size_t n) {
    const size_t q = n / 4;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < q; i += 8) {
        a0 = _mm256_add_epi64(a0, _mm256_add_epi64(_mm256_load_si256((const __m256i *)(p + i)),
                                                   _mm256_load_si256((const __m256i *)(p + i + 4))));
        a1 = _mm256_add_epi64(a1, _mm256_add_epi64(_mm256_load_si256((const __m256i *)(p + q + i)),
                                                   _mm256_load_si256((const __m256i *)(p + q + i + 4))));
        a2 = _mm256_add_epi64(a2, _mm256_add_epi64(_mm256_load_si256((const __m256i *)(p + 2 * q + i)),
                                                   _mm256_load_si256((const __m256i *)(p + 2 * q + i + 4))));
        a3 = _mm256_add_epi64(a3, _mm256_add_epi64(_mm256_load_si256((const __m256i *)(p + 3 * q + i)),
                                                   _mm256_load_si256((const __m256i *)(p + 3 * q + i + 4))));
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, a0);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}
#endif

static uint64_t sum_words(const uint64_t *p, size_t n) {
#if defined(__x86_64__) || defined(__i386__)
    if (__builtin_cpu_supports("avx2")) return sum_avx2(p, n);
#endif
    const size_t q = n / 4;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i < q; i++) s0 += p[i], s1 += p[q + i], s2 += p[2 * q + i], s3 += p[3 * q + i];
    return s0 + s1 + s2 + s3;
}

static volatile uint64_t sink;

#define SLICE_WORDS ((size_t)1 << 17) /* 1 MiB */
#define PIECE_SLICES 16

void stream_init(stream_buffer *sb, size_t mb) {
    sb->n_pieces = mb / 16 ? mb / 16 : 1;
    size_t slices = sb->n_pieces * PIECE_SLICES;
    sb->words = bench_alloc("stream buffer", slices * SLICE_WORDS * sizeof(uint64_t));
    sb->next = 0;
    const long n = (long)slices;
#pragma omp parallel for schedule(static)
    for (long b = 0; b < n; b++) /* first touch by the thread that will read it */
        for (size_t i = 0; i < SLICE_WORDS; i++) sb->words[(size_t)b * SLICE_WORDS + i] = (size_t)b * SLICE_WORDS + i;
}

/* GB/s of reading pieces until min_s have passed. */
double time_stream(stream_buffer *sb, double min_s) {
    size_t bytes = 0;
    uint64_t total = 0;
    double t0 = bench_now(), t;
    do {
        const uint64_t *piece = sb->words + sb->next * PIECE_SLICES * SLICE_WORDS;
#pragma omp parallel for schedule(static) reduction(+ : total)
        for (int b = 0; b < PIECE_SLICES; b++) total += sum_words(piece + (size_t)b * SLICE_WORDS, SLICE_WORDS);
        bytes += PIECE_SLICES * SLICE_WORDS * sizeof(uint64_t);
        sb->next = (sb->next + 1) % sb->n_pieces;
    } while ((t = bench_now() - t0) < min_s);
    sink = total;
    return (double)bytes / t / 1e9;
}

void stream_free(stream_buffer *sb) {
    free(sb->words);
    sb->words = NULL;
}

static size_t floats_bytes;

float *bench_random_floats(size_t n, float scale, uint64_t *state) {
    float *p = bench_alloc("random weights", n * sizeof(float));
    floats_bytes += n * sizeof(float);
    weight_builder_fill(p, n, 0.5f * scale, state);
    return p;
}

float *bench_constant_floats(size_t n, float v) {
    float *p = bench_alloc("constant weights", n * sizeof(float));
    floats_bytes += n * sizeof(float);
    for (size_t i = 0; i < n; i++) p[i] = v;
    return p;
}

size_t bench_floats_bytes(void) { return floats_bytes; }

double bench_sgemm_gflops(int n) {
    float *a = calloc((size_t)n * n, 4), *b = calloc((size_t)n * n, 4), *c = calloc((size_t)n * n, 4);
    if (!a || !b || !c) {
        fprintf(stderr, "bench: out of memory for a %d^3 sgemm\n", n);
        exit(1);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    const int reps = 3;
    double t = bench_now();
    for (int r = 0; r < reps; r++) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    t = bench_now() - t;
    free(a), free(b), free(c);
    return 2.0 * n * n * (double)n * reps / t / 1e9;
}

double bench_onednn_gflops(int rows, int in, int out, int bf16, const char **impl) {
    static char name[600];
    const size_t nw = (size_t)out * in, nx = (size_t)rows * in;
    float *w = bench_alloc("bench_onednn_gflops", nw * sizeof(float));
    float *x = bench_alloc("bench_onednn_gflops", nx * sizeof(float));
    float *y = bench_alloc("bench_onednn_gflops", (size_t)rows * out * sizeof(float));
    uint16_t *w16 = bench_alloc("bench_onednn_gflops", nw * sizeof(uint16_t));
    unsigned seed = 1;
    for (size_t i = 0; i < nw; i++) {
        w[i] = (float)rand_r(&seed) / RAND_MAX - 0.5f;
        w16[i] = f32_to_bf16(w[i]);
    }
    for (size_t i = 0; i < nx; i++) x[i] = (float)rand_r(&seed) / RAND_MAX - 0.5f;
    lion_status st;
    onednn_matmul *m = bf16 ? onednn_matmul_create(w16, out, in, &st) : onednn_matmul_create_f32(w, out, in, &st);
    double best = 0;
    if (!m) {
        snprintf(name, sizeof name, "%s", st.msg);
    } else {
        snprintf(name, sizeof name, "%s", onednn_matmul_impl(m));
        arena a;
        arena_init(&a, 1 << 20);
        for (int r = 0; r < 4; r++) { /* the first run creates the primitive: not counted */
            double t = bench_now();
            if (onednn_matmul_forward(m, y, x, NULL, rows, 0, 0, &a, &st)) break;
            t = bench_now() - t;
            const double g = 2.0 * rows * in * (double)out / t / 1e9;
            if (r > 0 && g > best) best = g;
        }
        arena_free(&a);
        onednn_matmul_free(m);
    }
    if (impl) *impl = name;
    free(w), free(x), free(y), free(w16);
    return best;
}

int bench_args(const char *name, const args_table *t, const args_table *dflt, int argc, char **argv) {
    args_parsed parsed;
    lion_status st;
    const int rc = args_parse(t, 1, 0, argc, argv, &parsed, &st);
    if (rc == 0 && !parsed.help) return -1;
    if (rc != 0) fprintf(stderr, "%s: %s\n", name, st.msg);
    FILE *out = rc != 0 ? stderr : stdout;
    fprintf(out, "usage: %s [options]\n", name);
    args_usage(out, dflt, 1);
    return rc != 0 ? 2 : 0;
}

int bench_set_precision(const args_option *opt, void *base, const char *name, const char *text, lion_status *st) {
    lion_precision p;
    if (precision_from_name(text, &p) || p == PRECISION_AUTO)
        return lion_fail(st, LION_EINVAL, "%s: '%s' is not f32 or bf16", name, text);
    *(lion_precision *)args_field(opt, base) = p;
    return 0;
}
