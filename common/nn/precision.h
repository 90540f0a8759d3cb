/* precision.h - what a stage computes with: --precision auto|f32|bf16 (LION_PRECISION).
 *
 *   f32   every weight f32 in memory, f32 products (OpenBLAS, matvec_f32);
 *   bf16  every weight matrix is held in bf16 only (converted once at load, or used in place
 *         from a bf16 file; no f32 copy kept) and multiplied as linear.h says: on a CPU where
 *         oneDNN runs bf16 natively (AVX512_BF16, AMX) in oneDNN's packed layout with x
 *         rounded to bf16 and f32 accumulation; elsewhere widened to f32 (in registers for a
 *         few rows, matvec_bf16; in panels before sgemm for many). Norms, softmax, attention,
 *         biases and embeddings stay f32 everywhere;
 *   auto  bf16 where the CPU executes bf16 natively (cpu_features.h, and oneDNN dispatches to
 *         it: onednn_matmul.h) and the stage has a bf16 path, f32 elsewhere: without native
 *         bf16 the widened products are no faster than f32 for an encoder (only the
 *         bandwidth-bound decode step gains, by reading half the bytes).
 * A stage without a bf16 path runs f32 whatever is asked (precision_resolve says why). */
#ifndef LION_PRECISION_H
#define LION_PRECISION_H

#include <stddef.h>

typedef enum lion_precision { PRECISION_AUTO = 0, PRECISION_F32, PRECISION_BF16, PRECISION_COUNT } lion_precision;

/* Bits of the precisions a stage implements beyond f32 (f32 is always there). */
#define PRECISION_BIT(p) (1u << (p))

/* "auto", "f32", "bf16"; "?" out of range. */
const char *precision_name(lion_precision p);
/* Inverse of precision_name: 0, or -1 for anything else. */
int precision_from_name(const char *name, lion_precision *out);

/* What a stage runs with: asked (auto, f32, bf16) on a CPU with or without native bf16, for a
 * stage implementing the precisions in `supported` (PRECISION_BIT set; f32 implied). Never
 * returns PRECISION_AUTO. why (may be NULL) gets one line for the start log, e.g.
 *   "auto: no native bf16"        "auto: native bf16"      "asked"
 *   "asked bf16: this stage has no bf16 path" */
lion_precision precision_resolve(lion_precision asked, int native_bf16, unsigned supported, const char **why);

/* The start log line of a stage: "precision f32 (auto: no native bf16; kernels avx2, onednn
 * avx2)", into buf: the CPU's kernels (cpu_isa_name) and the ISA oneDNN dispatches to.
 * Returns buf. */
char *precision_describe(char *buf, size_t len, lion_precision p, const char *why);

#endif
