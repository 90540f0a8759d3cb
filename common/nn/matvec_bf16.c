#include "matvec_bf16.h"

#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MATVEC_X86 1
#else
#define MATVEC_X86 0
#endif

/* Products with fewer weights than this (e.g. 32 x 2048) run on the calling thread: waking
 * the OpenMP team would cost about as much as the product. */
#define PARALLEL_MIN_WEIGHTS ((size_t)1 << 16)

/* Rows of W in a block: the unit of work a thread takes, read from memory once and then
 * multiplied with every group of x rows while it is in L1/L2 (4 rows of 2048 bf16: 16 KB). */
#define NBLK 4
/* The most x rows one tile takes at a time (the AVX-512 kernel's; AVX2 takes 6). More rows
 * are split into groups of near-equal size, each reusing the block of W from cache. */
#define RB_CAP 8

/* A tile: out[r * NBLK + j] = sum_{k < kv} x[r * ldx + k] * W[j * ldw + k] for r < RB, j < NB
 * (RB and NB fixed per function). For bf16, x is in the permuted even/odd order. */
typedef void (*tile_fn)(const float *x, size_t ldx, const void *w, size_t ldw, size_t kv, float *out);

typedef struct kernel_set {
    int chunk;                  /* elements of k per step of the vector loop; kv = in - in % chunk */
    int permute;                /* bf16: x copied into the even/odd order of each chunk */
    int rb_max;                 /* most x rows per tile */
    int nb_of[RB_CAP + 1];      /* rows of W per full tile for a group of rb x rows; divides NBLK */
    tile_fn full[RB_CAP + 1];   /* rb x nb_of[rb] */
    tile_fn one[RB_CAP + 1];    /* rb x 1: the last, partial block of W */
} kernel_set;

/* bf16 -> f32 is the top half of the f32 bits: the same as bf16_to_f32 (tensor.h), inlined in
 * the loops that widen every weight. */
static inline float widen(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ------------------------------------------------------------------ AVX2 + FMA */

#if MATVEC_X86
/* Software prefetch, PREFETCH_BYTES ahead in each row's stream. A row of W is a short stream
 * (2048 bf16: one 4 KB page) and a tile reads NBLK of them side by side, so the hardware
 * prefetchers, which stop at page boundaries and must retrain on every new stream, left a
 * bf16 one-row product at ~13 GB/s where one long stream reads ~19 (AMD EPYC, 1 thread).
 * Past the end of the row the prefetch continues in the same row of the next block (NBLK
 * rows down), where this row's stream goes next. After the last block it points past W:
 * a prefetch never faults, and the address is only computed as an integer. */
#define PREFETCH_BYTES 1024

static inline __attribute__((always_inline)) void prefetch_ahead(const void *row, size_t offset, size_t row_bytes) {
    offset += PREFETCH_BYTES;
    if (offset >= row_bytes) offset += (NBLK - 1) * row_bytes;
    _mm_prefetch((const char *)((uintptr_t)row + offset), _MM_HINT_T0);
}

#define AVX2_FN __attribute__((target("avx2,fma")))
#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma")))

AVX2_INLINE float avx2_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 16 bf16 of a row of W per step, loaded as 8 words: word << 16 holds the even k, word & hi
 * the odd ones, matching x's permuted order (8 even then 8 odd per chunk). Each accumulator
 * takes the even then the odd product; x comes straight from L1 as the FMAs' memory operand. */
AVX2_INLINE void avx2_bf16_tile(const int rb, const int nb, const float *x, size_t ldx, const uint16_t *w,
                                size_t ldw, size_t kv, float *out) {
    __m256 acc[6][NBLK];
#pragma GCC unroll 8
    for (int r = 0; r < rb; r++)
#pragma GCC unroll 4
        for (int j = 0; j < nb; j++) acc[r][j] = _mm256_setzero_ps();
    const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
    for (size_t k = 0; k < kv; k += 16) {
#pragma GCC unroll 4
        for (int j = 0; j < nb; j++) {
            prefetch_ahead(w + j * ldw, 2 * k, 2 * ldw);
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(w + j * ldw + k));
            const __m256 we = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
            const __m256 wo = _mm256_castsi256_ps(_mm256_and_si256(raw, hi));
#pragma GCC unroll 8
            for (int r = 0; r < rb; r++) {
                acc[r][j] = _mm256_fmadd_ps(we, _mm256_loadu_ps(x + r * ldx + k), acc[r][j]);
                acc[r][j] = _mm256_fmadd_ps(wo, _mm256_loadu_ps(x + r * ldx + k + 8), acc[r][j]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < rb; r++)
#pragma GCC unroll 4
        for (int j = 0; j < nb; j++) out[r * NBLK + j] = avx2_hsum(acc[r][j]);
}

AVX2_INLINE void avx2_f32_tile(const int rb, const int nb, const float *x, size_t ldx, const float *w, size_t ldw,
                               size_t kv, float *out) {
    __m256 acc[6][NBLK];
#pragma GCC unroll 8
    for (int r = 0; r < rb; r++)
#pragma GCC unroll 4
        for (int j = 0; j < nb; j++) acc[r][j] = _mm256_setzero_ps();
    for (size_t k = 0; k < kv; k += 8) {
#pragma GCC unroll 4
        for (int j = 0; j < nb; j++) {
            prefetch_ahead(w + j * ldw, 4 * k, 4 * ldw);
            const __m256 wv = _mm256_loadu_ps(w + j * ldw + k);
#pragma GCC unroll 8
            for (int r = 0; r < rb; r++) acc[r][j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + r * ldx + k), acc[r][j]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < rb; r++)
#pragma GCC unroll 4
        for (int j = 0; j < nb; j++) out[r * NBLK + j] = avx2_hsum(acc[r][j]);
}

#define AVX2_TILES(RB, NB)                                                                                      \
    static AVX2_FN void avx2_bf16_##RB##x##NB(const float *x, size_t ldx, const void *w, size_t ldw, size_t kv, \
                                              float *out) {                                                     \
        avx2_bf16_tile(RB, NB, x, ldx, (const uint16_t *)w, ldw, kv, out);                                      \
    }                                                                                                           \
    static AVX2_FN void avx2_f32_##RB##x##NB(const float *x, size_t ldx, const void *w, size_t ldw, size_t kv,  \
                                             float *out) {                                                      \
        avx2_f32_tile(RB, NB, x, ldx, (const float *)w, ldw, kv, out);                                          \
    }
/* at most 12 accumulators: with W's two halves and the mask, 15 of the 16 ymm registers */
AVX2_TILES(1, 4)
AVX2_TILES(2, 4)
AVX2_TILES(3, 4)
AVX2_TILES(4, 2)
AVX2_TILES(5, 2)
AVX2_TILES(6, 2)
AVX2_TILES(1, 1)
AVX2_TILES(2, 1)
AVX2_TILES(3, 1)
AVX2_TILES(4, 1)
AVX2_TILES(5, 1)
AVX2_TILES(6, 1)

static const kernel_set avx2_bf16 = {
    .chunk = 16, .permute = 1, .rb_max = 6, .nb_of = {0, 4, 4, 4, 2, 2, 2},
    .full = {NULL, avx2_bf16_1x4, avx2_bf16_2x4, avx2_bf16_3x4, avx2_bf16_4x2, avx2_bf16_5x2, avx2_bf16_6x2},
    .one = {NULL, avx2_bf16_1x1, avx2_bf16_2x1, avx2_bf16_3x1, avx2_bf16_4x1, avx2_bf16_5x1, avx2_bf16_6x1}};
static const kernel_set avx2_f32 = {
    .chunk = 8, .permute = 0, .rb_max = 6, .nb_of = {0, 4, 4, 4, 2, 2, 2},
    .full = {NULL, avx2_f32_1x4, avx2_f32_2x4, avx2_f32_3x4, avx2_f32_4x2, avx2_f32_5x2, avx2_f32_6x2},
    .one = {NULL, avx2_f32_1x1, avx2_f32_2x1, avx2_f32_3x1, avx2_f32_4x1, avx2_f32_5x1, avx2_f32_6x1}};

/* ------------------------------------------------------------------ AVX-512 */

#define AVX512_FN __attribute__((target("avx512f,avx512bw")))
#define AVX512_INLINE static inline __attribute__((always_inline, target("avx512f,avx512bw")))

/* As the AVX2 tile with 32 bf16 per step (16 even, 16 odd) and up to 24 accumulators of the
 * 32 zmm registers. */
AVX512_INLINE void avx512_bf16_tile(const int rb, const int nb, const float *x, size_t ldx, const uint16_t *w,
                                    size_t ldw, size_t kv, float *out) {
    __m512 acc[RB_CAP][NBLK];
#pragma GCC unroll 8
    for (int r = 0; r < rb; r++)
#pragma GCC unroll 4
        for (int j = 0; j < nb; j++) acc[r][j] = _mm512_setzero_ps();
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    for (size_t k = 0; k < kv; k += 32) {
#pragma GCC unroll 4
        for (int j = 0; j < nb; j++) {
            prefetch_ahead(w + j * ldw, 2 * k, 2 * ldw);
            const __m512i raw = _mm512_loadu_si512((const void *)(w + j * ldw + k));
            const __m512 we = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));
            const __m512 wo = _mm512_castsi512_ps(_mm512_and_si512(raw, hi));
#pragma GCC unroll 8
            for (int r = 0; r < rb; r++) {
                acc[r][j] = _mm512_fmadd_ps(we, _mm512_loadu_ps(x + r * ldx + k), acc[r][j]);
                acc[r][j] = _mm512_fmadd_ps(wo, _mm512_loadu_ps(x + r * ldx + k + 16), acc[r][j]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < rb; r++)
#pragma GCC unroll 4
        for (int j = 0; j < nb; j++) out[r * NBLK + j] = _mm512_reduce_add_ps(acc[r][j]);
}

AVX512_INLINE void avx512_f32_tile(const int rb, const int nb, const float *x, size_t ldx, const float *w,
                                   size_t ldw, size_t kv, float *out) {
    __m512 acc[RB_CAP][NBLK];
#pragma GCC unroll 8
    for (int r = 0; r < rb; r++)
#pragma GCC unroll 4
        for (int j = 0; j < nb; j++) acc[r][j] = _mm512_setzero_ps();
    for (size_t k = 0; k < kv; k += 16) {
#pragma GCC unroll 4
        for (int j = 0; j < nb; j++) {
            prefetch_ahead(w + j * ldw, 4 * k, 4 * ldw);
            const __m512 wv = _mm512_loadu_ps(w + j * ldw + k);
#pragma GCC unroll 8
            for (int r = 0; r < rb; r++) acc[r][j] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + r * ldx + k), acc[r][j]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < rb; r++)
#pragma GCC unroll 4
        for (int j = 0; j < nb; j++) out[r * NBLK + j] = _mm512_reduce_add_ps(acc[r][j]);
}

#define AVX512_TILES(RB, NB)                                                                                      \
    static AVX512_FN void avx512_bf16_##RB##x##NB(const float *x, size_t ldx, const void *w, size_t ldw,          \
                                                  size_t kv, float *out) {                                        \
        avx512_bf16_tile(RB, NB, x, ldx, (const uint16_t *)w, ldw, kv, out);                                      \
    }                                                                                                             \
    static AVX512_FN void avx512_f32_##RB##x##NB(const float *x, size_t ldx, const void *w, size_t ldw, size_t kv, \
                                                 float *out) {                                                    \
        avx512_f32_tile(RB, NB, x, ldx, (const float *)w, ldw, kv, out);                                          \
    }
AVX512_TILES(1, 4)
AVX512_TILES(2, 4)
AVX512_TILES(3, 4)
AVX512_TILES(4, 4)
AVX512_TILES(5, 4)
AVX512_TILES(6, 4)
AVX512_TILES(7, 2)
AVX512_TILES(8, 2)
AVX512_TILES(1, 1)
AVX512_TILES(2, 1)
AVX512_TILES(3, 1)
AVX512_TILES(4, 1)
AVX512_TILES(5, 1)
AVX512_TILES(6, 1)
AVX512_TILES(7, 1)
AVX512_TILES(8, 1)

static const kernel_set avx512_bf16 = {
    .chunk = 32, .permute = 1, .rb_max = 8, .nb_of = {0, 4, 4, 4, 4, 4, 4, 2, 2},
    .full = {NULL, avx512_bf16_1x4, avx512_bf16_2x4, avx512_bf16_3x4, avx512_bf16_4x4, avx512_bf16_5x4,
             avx512_bf16_6x4, avx512_bf16_7x2, avx512_bf16_8x2},
    .one = {NULL, avx512_bf16_1x1, avx512_bf16_2x1, avx512_bf16_3x1, avx512_bf16_4x1, avx512_bf16_5x1,
            avx512_bf16_6x1, avx512_bf16_7x1, avx512_bf16_8x1}};
static const kernel_set avx512_f32 = {
    .chunk = 16, .permute = 0, .rb_max = 8, .nb_of = {0, 4, 4, 4, 4, 4, 4, 2, 2},
    .full = {NULL, avx512_f32_1x4, avx512_f32_2x4, avx512_f32_3x4, avx512_f32_4x4, avx512_f32_5x4, avx512_f32_6x4,
             avx512_f32_7x2, avx512_f32_8x2},
    .one = {NULL, avx512_f32_1x1, avx512_f32_2x1, avx512_f32_3x1, avx512_f32_4x1, avx512_f32_5x1, avx512_f32_6x1,
            avx512_f32_7x1, avx512_f32_8x1}};
#endif /* MATVEC_X86 */

/* ------------------------------------------------------------------ drivers */

/* Plain C: one f32 accumulator per output, k in order. */
static void scalar_run(int is_bf16, float *y, const float *x, const void *w, const float *b, int rows, int in,
                       int out) {
    const size_t K = (size_t)in;
#pragma omp parallel for schedule(static) if ((size_t)out * K >= PARALLEL_MIN_WEIGHTS)
    for (int n = 0; n < out; n++) {
        for (int r = 0; r < rows; r++) {
            const float *xr = x + (size_t)r * K;
            float s = 0.0f;
            if (is_bf16) {
                const uint16_t *wn = (const uint16_t *)w + (size_t)n * K;
                for (size_t k = 0; k < K; k++) s += xr[k] * widen(wn[k]);
            } else {
                const float *wn = (const float *)w + (size_t)n * K;
                for (size_t k = 0; k < K; k++) s += xr[k] * wn[k];
            }
            if (b) s += b[n];
            y[(size_t)r * out + n] = s;
        }
    }
}

#if MATVEC_X86
/* x rows into the order the bf16 tiles read: per chunk of c = 2v elements, the v even ones
 * then the v odd ones. Only the first kv (a multiple of c) elements of each row. */
static void permute_even_odd(float *dst, const float *x, int rows, size_t in, size_t kv, int c) {
    const int v = c / 2;
    for (int r = 0; r < rows; r++) {
        const float *s = x + (size_t)r * in;
        float *d = dst + (size_t)r * kv;
        for (size_t k0 = 0; k0 < kv; k0 += (size_t)c)
            for (int i = 0; i < v; i++) {
                d[k0 + i] = s[k0 + 2 * i];
                d[k0 + v + i] = s[k0 + 2 * i + 1];
            }
    }
}

static void tiles_run(const kernel_set *ks, int is_bf16, float *y, const float *x, const void *w, const float *b,
                      int rows, int in, int out) {
    const size_t K = (size_t)in, kv = K - K % (size_t)ks->chunk, esz = is_bf16 ? 2 : 4;
    const float *xs = x;
    size_t ldx = K;
    float *xbuf = NULL;
    if (ks->permute && kv > 0) {
        size_t bytes = ((size_t)rows * kv * sizeof(float) + 63) / 64 * 64;
        if (!(xbuf = aligned_alloc(64, bytes))) { /* out of memory: the kernel that needs no copy */
            scalar_run(is_bf16, y, x, w, b, rows, in, out);
            return;
        }
        permute_even_odd(xbuf, x, rows, K, kv, ks->chunk);
        xs = xbuf;
        ldx = kv;
    }
    const int groups = (rows + ks->rb_max - 1) / ks->rb_max;
    const int nblocks = (out + NBLK - 1) / NBLK;
#pragma omp parallel for schedule(static) if ((size_t)out * K >= PARALLEL_MIN_WEIGHTS)
    for (int blk = 0; blk < nblocks; blk++) {
        const int n0 = blk * NBLK, nb = out - n0 < NBLK ? out - n0 : NBLK;
        const char *wb = (const char *)w + (size_t)n0 * K * esz;
        float tile[RB_CAP * NBLK] = {0};
        for (int g = 0, r0 = 0; g < groups; g++) {
            const int rb = rows / groups + (g < rows % groups);
            const float *xg = xs + (size_t)r0 * ldx;
            if (kv > 0 && nb == NBLK) {
                const int step = ks->nb_of[rb];
                for (int j0 = 0; j0 < NBLK; j0 += step)
                    ks->full[rb](xg, ldx, wb + (size_t)j0 * K * esz, K, kv, tile + j0);
            } else if (kv > 0) {
                for (int j = 0; j < nb; j++) ks->one[rb](xg, ldx, wb + (size_t)j * K * esz, K, kv, tile + j);
            }
            for (int r = 0; r < rb; r++) {
                const float *xr = x + (size_t)(r0 + r) * K;
                float *yr = y + (size_t)(r0 + r) * out;
                for (int j = 0; j < nb; j++) {
                    float s = tile[r * NBLK + j];
                    if (is_bf16) {
                        const uint16_t *wn = (const uint16_t *)wb + (size_t)j * K;
                        for (size_t k = kv; k < K; k++) s += xr[k] * widen(wn[k]);
                    } else {
                        const float *wn = (const float *)wb + (size_t)j * K;
                        for (size_t k = kv; k < K; k++) s += xr[k] * wn[k];
                    }
                    if (b) s += b[n0 + j];
                    yr[n0 + j] = s;
                }
            }
            r0 += rb;
        }
    }
    free(xbuf);
}
#endif

/* ------------------------------------------------------------------ dispatch */

int matvec_isa_supported(matvec_isa isa) {
    switch (isa) {
    case MATVEC_AUTO:
    case MATVEC_SCALAR:
        return 1;
#if MATVEC_X86
    case MATVEC_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case MATVEC_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#endif
    default:
        return 0;
    }
}

static matvec_isa best_isa;
static pthread_once_t best_once = PTHREAD_ONCE_INIT;

static void find_best_isa(void) {
    best_isa = matvec_isa_supported(MATVEC_AVX512) ? MATVEC_AVX512
               : matvec_isa_supported(MATVEC_AVX2) ? MATVEC_AVX2
                                                    : MATVEC_SCALAR;
}

/* Decided once: every product of every decode step asks. */
matvec_isa matvec_isa_best(void) {
    pthread_once(&best_once, find_best_isa);
    return best_isa;
}

static const char *const isa_names[MATVEC_ISA_COUNT] = {"auto", "scalar", "avx2", "avx512"};

const char *matvec_isa_name(matvec_isa isa) {
    return (unsigned)isa < MATVEC_ISA_COUNT ? isa_names[isa] : "?";
}

int matvec_isa_from_name(const char *name, matvec_isa *out) {
    for (int i = 0; i < MATVEC_ISA_COUNT; i++)
        if (name && strcmp(name, isa_names[i]) == 0) {
            *out = (matvec_isa)i;
            return 0;
        }
    return -1;
}

const char *matvec_kernel_name(void) {
    switch (matvec_isa_best()) {
    case MATVEC_AVX512:
        return "avx512 (AVX-512F, 16 x f32 FMA, bf16 widened by shift/and)";
    case MATVEC_AVX2:
        return "avx2 (AVX2+FMA, 8 x f32 FMA, bf16 widened by shift/and)";
    default:
        return "scalar (plain C)";
    }
}

static int run(matvec_isa isa, int is_bf16, float *y, const float *x, const void *w, const float *b, int rows,
               int in, int out) {
    if (isa == MATVEC_AUTO) isa = matvec_isa_best();
    else if (!matvec_isa_supported(isa)) return -1;
    if (rows <= 0 || out <= 0) return 0;
    if (in < 0) in = 0;
    switch (isa) {
#if MATVEC_X86
    case MATVEC_AVX512:
        tiles_run(is_bf16 ? &avx512_bf16 : &avx512_f32, is_bf16, y, x, w, b, rows, in, out);
        return 0;
    case MATVEC_AVX2:
        tiles_run(is_bf16 ? &avx2_bf16 : &avx2_f32, is_bf16, y, x, w, b, rows, in, out);
        return 0;
#endif
    default:
        scalar_run(is_bf16, y, x, w, b, rows, in, out);
        return 0;
    }
}

int matvec_bf16_isa(matvec_isa isa, float *y, const float *x, const uint16_t *w, const float *b, int rows, int in,
                    int out) {
    return run(isa, 1, y, x, w, b, rows, in, out);
}

int matvec_f32_isa(matvec_isa isa, float *y, const float *x, const float *w, const float *b, int rows, int in,
                   int out) {
    return run(isa, 0, y, x, w, b, rows, in, out);
}

void matvec_bf16(float *y, const float *x, const uint16_t *w, const float *b, int rows, int in, int out) {
    run(MATVEC_AUTO, 1, y, x, w, b, rows, in, out);
}

void matvec_f32(float *y, const float *x, const float *w, const float *b, int rows, int in, int out) {
    run(MATVEC_AUTO, 0, y, x, w, b, rows, in, out);
}
