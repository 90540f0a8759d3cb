#include "linear.h"

#include <cblas.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_features.h"
#include "matvec_bf16.h"
#include "onednn_matmul.h"
#include "ops.h"

/* Up to this many rows, a bf16 product streams W once through matvec_bf16; beyond it the
 * product is compute-bound and sgemm on widened panels does better. Measured (2 threads, EPYC
 * Zen 3, ViT-g / T5-XL / LLaMA-7B shapes): matvec_bf16 at or below the panels up to 32 rows,
 * mixed at 48, 1.3-2.5x slower from 64. */
#define LINEAR_MATVEC_MAX_ROWS 32
/* One widened panel of W: at least LINEAR_PANEL_MIN_ROWS rows of W, else as many as fit in
 * LINEAR_PANEL_BYTES of f32. sgemm packs all of x again for every panel, so narrow panels of a
 * wide matrix cost: 85-row panels (2 MB at in = 6144) ran 1.3-1.9x slower than f32 sgemm,
 * 256-768 rows 1.0-1.1x (2 threads, EPYC Zen 3; ViT-g, Swin-L and T5-XL shapes). */
#define LINEAR_PANEL_BYTES ((size_t)8 << 20)
#define LINEAR_PANEL_MIN_ROWS 256

static void to_bf16(uint16_t *dst, const void *src, dtype dt, size_t n) {
    if (dt == DTYPE_F32) {
        const float *f = src;
#pragma omp parallel for schedule(static) if (n >= ((size_t)1 << 20))
        for (size_t i = 0; i < n; i++) dst[i] = f32_to_bf16(f[i]);
    } else { /* DTYPE_F16 */
        const uint16_t *h = src;
#pragma omp parallel for schedule(static) if (n >= ((size_t)1 << 20))
        for (size_t i = 0; i < n; i++) dst[i] = f32_to_bf16(f16_to_f32(h[i]));
    }
}

/* The bf16 form of l from its plain bf16 [out][in] (borrowed or owned): packed for oneDNN on
 * a native CPU unless it is a step matrix, else kept plain. */
static int finish_bf16(linear *l, const uint16_t *plain, uint16_t *owned, lion_status *st) {
    if (!(l->flags & LINEAR_STEP) && cpu_native_bf16() && onednn_bf16_native()) {
        l->packed = onednn_matmul_create(plain, l->out, l->in, st);
        free(owned); /* the packed copy is the only one kept */
        return l->packed ? 0 : -1;
    }
    l->w16 = plain;
    l->w16_owned = owned;
    return 0;
}

int linear_bind(linear *l, weights *w, lion_precision p, int flags, int out, int in, lion_status *st,
                const char *fmt, ...) {
    memset(l, 0, sizeof *l);
    l->in = in, l->out = out, l->precision = p, l->flags = flags;
    char name[512], full[sizeof w->prefix + sizeof name];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (p != PRECISION_F32 && p != PRECISION_BF16)
        return lion_fail(st, LION_EINVAL, "linear '%s': precision %s (resolve auto first)", name, precision_name(p));
    int64_t shape[] = {out, in};
    if (p == PRECISION_F32) {
        if (!(l->w = weights_get(w, st, 2, shape, "%s", name))) return -1;
        l->released_bytes = weights_release_converted(w, name);
        return 0;
    }
    snprintf(full, sizeof full, "%s%s", w->prefix, name);
    tensor view;
    if (safetensors_get_checked(w->file, full, SAFETENSORS_ANY_DTYPE, 2, shape, &view, st)) return -1;
    if (view.dtype == DTYPE_BF16) {
        if (finish_bf16(l, view.data, NULL, st)) return -1;
        if (l->packed) l->released_bytes = weights_release_pages(view.data, tensor_nbytes(&view));
        return 0;
    }
    if (view.dtype != DTYPE_F32 && view.dtype != DTYPE_F16)
        return lion_fail(st, LION_EFORMAT, "%s: tensor '%s': dtype %s, expected F32, F16 or BF16",
                         safetensors_path(w->file), full, dtype_name(view.dtype));
    const size_t n = (size_t)out * (size_t)in;
    uint16_t *b = malloc(n * sizeof *b);
    if (!b) return lion_fail(st, LION_ENOMEM, "linear: out of memory converting '%s' to bf16", full);
    to_bf16(b, view.data, view.dtype, n);
    l->released_bytes = weights_release_pages(view.data, tensor_nbytes(&view));
    return finish_bf16(l, b, b, st);
}

int linear_from_f32(linear *l, const float *w, int out, int in, lion_precision p, int flags, lion_status *st) {
    memset(l, 0, sizeof *l);
    l->in = in, l->out = out, l->precision = p, l->flags = flags;
    if (p == PRECISION_F32) {
        l->w = w;
        return 0;
    }
    if (p != PRECISION_BF16)
        return lion_fail(st, LION_EINVAL, "linear: precision %s (resolve auto first)", precision_name(p));
    const size_t n = (size_t)out * (size_t)in;
    uint16_t *b = malloc(n ? n * sizeof *b : 1);
    if (!b) return lion_fail(st, LION_ENOMEM, "linear: out of memory converting a [%d, %d] matrix to bf16", out, in);
    to_bf16(b, w, DTYPE_F32, n);
    return finish_bf16(l, b, b, st);
}

void linear_free(linear *l) {
    free(l->w16_owned);
    onednn_matmul_free(l->packed);
    memset(l, 0, sizeof *l);
}

size_t linear_bytes(const linear *l) {
    if (l->packed) return onednn_matmul_weight_bytes(l->packed);
    return (size_t)l->out * (size_t)l->in * (l->precision == PRECISION_F32 ? sizeof(float) : sizeof(uint16_t));
}

const char *linear_form(const linear *l) {
    if (l->precision == PRECISION_F32) return "f32";
    if (l->packed) return onednn_matmul_impl(l->packed);
    return "bf16 (matvec / widened panels)";
}

/* bf16 -> f32 is the top half of the f32: a shift the compiler vectorises (a call of
 * bf16_to_f32 per element made the widened product 1.3-2x slower than f32 sgemm). */
static void widen_bf16(float *dst, const uint16_t *src, size_t n) {
    uint32_t *d = (uint32_t *)(void *)dst;
#pragma omp parallel for simd schedule(static) if (n >= 65536)
    for (size_t i = 0; i < n; i++) d[i] = (uint32_t)src[i] << 16;
}

/* y = x Wb^T for many rows: W widened panel by panel into f32 scratch, each panel one sgemm. */
static int widened_product(const linear *l, float *y, const float *x, int rows, arena *a, lion_status *st) {
    const int in = l->in;
    int panel = (int)(LINEAR_PANEL_BYTES / ((size_t)in * sizeof(float)));
    if (panel < LINEAR_PANEL_MIN_ROWS) panel = LINEAR_PANEL_MIN_ROWS;
    if (panel > l->out) panel = l->out;
    arena_mark mark = arena_save(a);
    float *wf = arena_floats(a, (size_t)panel * in);
    if (!wf) {
        arena_restore(a, mark);
        return lion_fail(st, LION_ENOMEM, "linear: out of scratch memory for a [%d, %d] panel", panel, in);
    }
    for (int n0 = 0; n0 < l->out; n0 += panel) {
        const int nn = l->out - n0 < panel ? l->out - n0 : panel;
        const uint16_t *src = l->w16 + (size_t)n0 * in;
        const size_t count = (size_t)nn * in;
        widen_bf16(wf, src, count);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nn, in, 1.0f, x, in, wf, in, 0.0f, y + n0, l->out);
    }
    arena_restore(a, mark);
    return 0;
}

int linear_forward_post(const linear *l, float *y, const float *x, const float *b, int rows, const linear_post *post,
                        arena *a, lion_status *st) {
    if (rows <= 0 || l->out <= 0) return 0;
    const linear_post none = {0};
    if (!post) post = &none;
    if (l->packed) return onednn_matmul_forward(l->packed, y, x, b, rows, post->act, post->accumulate, a, st);

    /* the other forms write a fresh product; an accumulating one goes to scratch first */
    const size_t n = (size_t)rows * l->out;
    arena_mark mark = arena_save(a);
    float *dst = y;
    if (post->accumulate && !(dst = arena_floats(a, n))) {
        arena_restore(a, mark);
        return lion_fail(st, LION_ENOMEM, "linear: out of scratch memory for [%d, %d]", rows, l->out);
    }
    int rc = 0;
    if (l->precision == PRECISION_F32) {
        linear_forward(dst, x, l->w, b, rows, l->in, l->out);
    } else if (rows <= LINEAR_MATVEC_MAX_ROWS || ((l->flags & LINEAR_STEP) && !post->prefill)) {
        matvec_bf16(dst, x, l->w16, b, rows, l->in, l->out);
    } else {
        rc = widened_product(l, dst, x, rows, a, st);
        if (!rc && b)
            for (int r = 0; r < rows; r++) add_forward(dst + (size_t)r * l->out, b, (size_t)l->out);
    }
    if (!rc && post->act) activation_forward(dst, n, (activation)(post->act - 1));
    if (!rc && post->accumulate) add_forward(y, dst, n);
    arena_restore(a, mark);
    return rc;
}

int linear_apply(const linear *l, float *y, const float *x, const float *b, int rows, arena *a, lion_status *st) {
    return linear_forward_post(l, y, x, b, rows, NULL, a, st);
}
