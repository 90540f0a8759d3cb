/* onednn_matmul.h - y = x W^T (+ b) on oneDNN (Debian libdnnl 2.6, its C API), with W held
 * only in the packed layout oneDNN's matmul chose for it: where bf16 runs on the CPU's
 * matrix units (AVX512_BF16, AMX), the bf16 products of linear.h.
 *
 * Built once per matrix: the weights are reordered from [out][in] into the layout a matmul
 * primitive asks for with format_tag_any (on AMX a blocked, VNNI-interleaved bf16 layout) and
 * nothing else of them is kept. Primitives are created per (row bucket, post-ops, bias) on
 * first use and kept in a small cache in the matrix (oneDNN's own primitive cache sits behind
 * it), so a steady run creates none: more than 16 rows run padded with zero rows to a
 * multiple of 32, so that prompts of varying length share primitives. x is rounded to the
 * weights' data type on the way in (bf16: round to nearest even, into scratch); accumulation
 * and y are f32; bias, an activation and a residual add are post-ops of the same primitive.
 *
 * The same code runs with f32 weights (onednn_matmul_create_f32): that is how the suite
 * checks this file on CPUs without native bf16 (oneDNN refuses bf16 matmul below AVX-512
 * there, and emulates it at a fifth of f32 speed on AVX-512 without BF16). */
#ifndef LION_ONEDNN_MATMUL_H
#define LION_ONEDNN_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "status.h"

typedef struct onednn_matmul onednn_matmul;

/* From bf16 W [out][in] (not kept: the packed copy is made from it). NULL with st filled when
 * oneDNN cannot multiply bf16 on this CPU, or is out of memory. */
onednn_matmul *onednn_matmul_create(const uint16_t *w, int out, int in, lion_status *st);
/* The same in f32 (tests of this file on any CPU; benchmarks against OpenBLAS). */
onednn_matmul *onednn_matmul_create_f32(const float *w, int out, int in, lion_status *st);
void onednn_matmul_free(onednn_matmul *m);

/* y[rows][out] = act(x[rows][in] W^T + b) (+ y before, when accumulate). act: 0 none, else
 * 1 + an activation of model_config.h (linear.h's LINEAR_ACT). Scratch for x's bf16 copy
 * from a. 0, or -1 with st filled. Safe to call from several threads at once. */
int onednn_matmul_forward(onednn_matmul *m, float *y, const float *x, const float *b, int rows, int act,
                          int accumulate, arena *a, lion_status *st);

/* Tests: from now on, every new (rows, post-ops) plan is made as if oneDNN refused the
 * packed layout for it (the weights reordered into the layout it chooses at every call). */
void onednn_matmul_test_force_reorder(int on);

/* The packed weights' bytes. */
size_t onednn_matmul_weight_bytes(const onednn_matmul *m);
/* oneDNN's name of the implementation it picked for this matrix, e.g.
 * "onednn bf16 brg:avx512_core_amx" (from the primitive the weights were packed for). */
const char *onednn_matmul_impl(const onednn_matmul *m);

/* The ISA oneDNN dispatches to on this CPU ("avx2", "avx512_core_bf16", "avx512_core_amx"),
 * as dnnl_get_effective_cpu_isa says (ONEDNN_MAX_CPU_ISA can cap it). */
const char *onednn_isa_name(void);
/* 1 when oneDNN creates a bf16 matmul here (checked once by creating a small one); on
 * AVX-512 without BF16 it does, by emulation at a fifth of f32 speed. */
int onednn_bf16_supported(void);
/* 1 when oneDNN runs bf16 on the CPU's own bf16 instructions: it dispatches to
 * avx512_core_bf16 or avx512_core_amx and creates a bf16 matmul. What `--precision auto`
 * and linear.h's packed form ask for. */
int onednn_bf16_native(void);

#endif
