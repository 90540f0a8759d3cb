/* matvec_bf16.h - y = x W^T (+ b) for a few rows of x, with W stored bf16 (or f32): the
 * matrix-vector products of a decode step.
 *
 * A decoder step at batch 1 (greedy: 1 row; beam search: 5 rows) reads every weight once and
 * does 2 flops per weight per row, so it is bound by memory bandwidth. Storing W as bf16 halves
 * the bytes read on any CPU: the kernels here widen bf16 to f32 in registers (a 16-bit left
 * shift) and accumulate in f32; x and y stay f32.
 *
 *   y[r][n] = sum_k x[r][k] * W[n][k]  (+ b[n])     r < rows, n < out, k < in
 *
 * W is row-major [out][in] (nn.Linear's layout), x is [rows][in], y is [rows][out]; y must
 * not alias x. Any rows, in and out >= 0 work; the kernels are built for rows 1..16.
 *
 * Work: OpenMP threads (threads.h's count) split the out rows of W into contiguous slices;
 * each thread streams its slice once for all rows of x: a block of 4 rows of W is read from
 * memory once and every group of x rows is multiplied with it while it is in cache, so R rows
 * cost about one pass over W, not R (software prefetch runs ahead in each row of W: rows of
 * 2048 bf16 are one 4 KB page, too short for the hardware prefetchers alone).
 *
 * Each output is accumulated in f32 in an order that depends only on the kernel and `in`,
 * not on rows, out or the thread count: row r of a many-row product is bit-identical to the
 * one-row product of x[r] with the same kernel.
 *
 * Kernels, chosen at run time (never by the build machine's flags):
 *   avx512  AVX-512F/BW, 16 floats a vector (compiled with a target attribute, used only
 *           when __builtin_cpu_supports says the CPU and OS have it);
 *   avx2    AVX2 + FMA, 8 floats a vector;
 *   scalar  plain C, any CPU.
 * The bf16 widening loads 2 vectors' worth of W (16 or 32 bf16) as 32-bit words: word j holds
 * W[2j] in its low half and W[2j+1] in its high half, so `word << 16` is W[2j] as f32 and
 * `word & 0xffff0000` is W[2j+1]: two ALU ops per two vectors of W, no shuffles. x is copied
 * once per call into the matching even/odd order (rows x in floats, next to nothing).
 *
 * f32 <-> bf16 conversion of the weights themselves: f32_to_bf16 / convert_from_f32 in
 * tensor.h (round to nearest even, NaN stays NaN), done once at load. */
#ifndef LION_MATVEC_BF16_H
#define LION_MATVEC_BF16_H

#include <stdint.h>

typedef enum matvec_isa {
    MATVEC_AUTO = 0, /* the best this CPU runs: avx512, else avx2, else scalar */
    MATVEC_SCALAR,
    MATVEC_AVX2,
    MATVEC_AVX512,
    MATVEC_ISA_COUNT
} matvec_isa;

/* 1 when this CPU (and OS) can run the kernel; MATVEC_AUTO and MATVEC_SCALAR always can. */
int matvec_isa_supported(matvec_isa isa);
/* What MATVEC_AUTO resolves to on this CPU. */
matvec_isa matvec_isa_best(void);
/* "scalar", "avx2", "avx512", "auto"; "?" for a value out of range. */
const char *matvec_isa_name(matvec_isa isa);
/* Inverse of matvec_isa_name; returns 0, or -1 for an unknown name. */
int matvec_isa_from_name(const char *name, matvec_isa *out);
/* The kernel MATVEC_AUTO runs, described for logs and benchmark output, e.g.
 * "avx2 (AVX2+FMA, 8 x f32, bf16 widened by shift/and)". */
const char *matvec_kernel_name(void);

/* The products with the best kernel (MATVEC_AUTO). */
void matvec_bf16(float *y, const float *x, const uint16_t *w, const float *b, int rows, int in, int out);
void matvec_f32(float *y, const float *x, const float *w, const float *b, int rows, int in, int out);

/* The same with a chosen kernel (tests, benchmarks). Returns 0, or -1 without touching y
 * when this CPU cannot run it. */
int matvec_bf16_isa(matvec_isa isa, float *y, const float *x, const uint16_t *w, const float *b, int rows, int in,
                    int out);
int matvec_f32_isa(matvec_isa isa, float *y, const float *x, const float *w, const float *b, int rows, int in,
                   int out);

#endif
