/* linear.h - a Linear layer's weight matrix, held in the form its precision multiplies, and
 * the product y = x W^T (+ b) with it: the one way every model stage multiplies by a weight.
 *
 * W is [out][in] as the checkpoints hold it (nn.Linear). How it is held depends on the
 * precision the stage runs with (precision.h) and on what kind of product reads it:
 *
 *   f32                 the file's f32 array in place (a view of the mapping, or weights'
 *                       f32 copy of an f16/bf16 tensor); products on OpenBLAS (sgemv for
 *                       one row, sgemm otherwise).
 *   bf16, native CPU    (AVX512_BF16 or AMX, cpu_features.h) oneDNN's packed layout only,
 *                       reordered once at bind: x rounded to bf16 into the product, f32
 *                       accumulation, f32 out (onednn_matmul.h). Not for LINEAR_STEP.
 *   bf16, otherwise     bf16 [out][in] only (a view of a bf16 file, else converted once; the
 *   and LINEAR_STEP     f32 file pages are released): 1..32 rows (and any rows of a
 *                       LINEAR_STEP matrix) through matvec_bf16 (W widened in registers,
 *                       one pass over W for all rows); more rows of any other matrix through
 *                       panels of W widened to f32 into scratch, each multiplied by sgemm.
 *                       x stays f32 on this path.
 *
 * LINEAR_STEP marks a matrix read by a decoder step (a few rows, bandwidth-bound, and a row's
 * result must not depend on the rows beside it): it stays plain bf16 on matvec_bf16 on every
 * CPU, whose rows are bit-identical to one-row products; a product marked prefill (linear_post)
 * of such a matrix takes the many-row path instead.
 *
 * No matrix is ever held twice: the f32 view is dropped (its file pages released) when a bf16
 * form is made. */
#ifndef LION_LINEAR_H
#define LION_LINEAR_H

#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "precision.h"
#include "status.h"
#include "weights.h"

struct onednn_matmul;

typedef struct linear {
    int in, out;
    lion_precision precision; /* PRECISION_F32 or PRECISION_BF16 */
    int flags;                /* LINEAR_STEP */
    const float *w;           /* f32 form, not owned; NULL in bf16 */
    const uint16_t *w16;      /* plain bf16 form: a view of a bf16 file or w16_owned; NULL otherwise */
    uint16_t *w16_owned;
    struct onednn_matmul *packed; /* oneDNN's packed bf16 form (owned), native CPUs only */
    size_t released_bytes;    /* file pages given back when the bf16 form was made */
} linear;

#define LINEAR_STEP 1

/* What a product may fold into its output (oneDNN post-ops where packed; loops otherwise). */
typedef struct linear_post {
    int act;        /* 0: none; else 1 + an activation (model_config.h): LINEAR_ACT(ACT_GELU) */
    int accumulate; /* 1: y += x W^T + b, after the activation (a residual add); 0: y = ... */
    /* 1: the rows are one sequence's positions (a LLaMA prefill), not a step's requests: a
     * LINEAR_STEP matrix then takes the many-row path (widened panels beyond 32 rows) too */
    int prefill;
} linear_post;
#define LINEAR_ACT(a) (1 + (int)(a))

/* Binds tensor prefix+name of w (a printf format, as weights_get) as a Linear of [out][in] in
 * precision p (f32 or bf16; resolve auto first). The shape is checked; f32, f16 and bf16
 * files are accepted in both precisions. */
int linear_bind(linear *l, weights *w, lion_precision p, int flags, int out, int in, lion_status *st,
                const char *fmt, ...) __attribute__((format(printf, 8, 9)));

/* The same from an f32 array in memory (tests, benchmarks, weights assembled at load): f32
 * keeps the pointer (not owned), bf16 converts (the caller still owns w). */
int linear_from_f32(linear *l, const float *w, int out, int in, lion_precision p, int flags, lion_status *st);
void linear_free(linear *l);

/* The bytes the matrix takes in memory in its form (what a product reads). */
size_t linear_bytes(const linear *l);
/* "f32", "bf16 (matvec)", "bf16 (onednn avx512_core_amx)": for logs and benchmarks. */
const char *linear_form(const linear *l);

/* y[rows][out] = x[rows][in] W^T + b (b: f32 [out] or NULL), then post (NULL: none). y must
 * not alias x. Scratch (bf16 panels, rounded x) from a. Returns 0, or -1 with st filled
 * (out of scratch memory, a oneDNN failure). */
int linear_forward_post(const linear *l, float *y, const float *x, const float *b, int rows, const linear_post *post,
                        arena *a, lion_status *st);
/* Without post-ops. */
int linear_apply(const linear *l, float *y, const float *x, const float *b, int rows, arena *a, lion_status *st);

#endif
