/* weights.h - a stage's parameters as f32 arrays, looked up by upstream key name.
 *
 * F32 tensors are zero-copy views into the mmap'ed safetensors file (a replica maps its
 * weights, it does not copy them); F16/BF16 tensors are converted once at load into
 * owned f32 buffers that weights_close frees. Every lookup checks the shape. */
#ifndef LION_WEIGHTS_H
#define LION_WEIGHTS_H

#include <stdint.h>

#include "safetensors.h"
#include "status.h"
#include "tensor.h"

typedef struct weights {
    safetensors_file *file;
    char prefix[128]; /* prepended to every name, e.g. "visual_encoder." */
    tensor *owned;    /* converted copies */
    size_t n_owned, cap_owned;
    size_t bytes_f32; /* f32 bytes the stage computes with, mapped or owned */
} weights;

int weights_open(weights *w, const char *path, const char *prefix, lion_status *st);
void weights_close(weights *w);

/* The f32 data of tensor prefix+name with exactly this shape, or NULL with st filled
 * (missing tensor, wrong shape, non-float dtype, out of memory). The name is a printf
 * format so that per-layer keys read naturally: weights_get(w, st, 2, shape,
 * "blocks.%d.attn.qkv.weight", i). */
const float *weights_get(weights *w, lion_status *st, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Gives the whole pages inside [p, p + bytes) of a read-only file mapping back to the kernel
 * (madvise MADV_DONTNEED): they leave the process's RSS and are read from the file again
 * should anyone touch them. For tensors whose data now lives elsewhere (converted at load).
 * Returns the bytes released. */
size_t weights_release_pages(const void *p, size_t bytes);
/* After weights_get made an f32 copy of tensor prefix+name (stored f16 or bf16), its file
 * pages are not read again: released. An f32 tensor is used in place and keeps them. Returns
 * the bytes released. */
size_t weights_release_converted(weights *w, const char *name);

/* 1 if prefix+name exists (for optional parameters). */
int weights_has(const weights *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
