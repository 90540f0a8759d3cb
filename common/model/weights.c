#include "weights.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int weights_open(weights *w, const char *path, const char *prefix, lion_status *st) {
    memset(w, 0, sizeof *w);
    snprintf(w->prefix, sizeof w->prefix, "%s", prefix ? prefix : "");
    return safetensors_open(&w->file, path, st);
}

void weights_close(weights *w) {
    for (size_t i = 0; i < w->n_owned; i++) tensor_free(&w->owned[i]);
    free(w->owned);
    if (w->file) safetensors_close(w->file);
    memset(w, 0, sizeof *w);
}

static void full_name(const weights *w, char *buf, size_t len, const char *fmt, va_list ap) {
    int n = snprintf(buf, len, "%s", w->prefix);
    if (n >= 0 && (size_t)n < len) vsnprintf(buf + n, len - (size_t)n, fmt, ap);
}

const float *weights_get(weights *w, lion_status *st, int ndim, const int64_t *shape, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    full_name(w, name, sizeof name, fmt, ap);
    va_end(ap);
    tensor view;
    if (safetensors_get_checked(w->file, name, SAFETENSORS_ANY_DTYPE, ndim, shape, &view, st)) return NULL;
    if (view.dtype == DTYPE_F32) {
        w->bytes_f32 += tensor_nbytes(&view);
        return view.data;
    }
    if (w->n_owned == w->cap_owned) {
        size_t cap = w->cap_owned ? 2 * w->cap_owned : 64;
        tensor *grown = realloc(w->owned, cap * sizeof *grown);
        if (!grown) {
            lion_fail(st, LION_ENOMEM, "%s: out of memory converting '%s'", safetensors_path(w->file), name);
            return NULL;
        }
        w->owned = grown;
        w->cap_owned = cap;
    }
    tensor *t = &w->owned[w->n_owned];
    if (tensor_to_f32(t, &view, st)) {
        lion_fail_prefix(st, "%s: tensor '%s': ", safetensors_path(w->file), name);
        return NULL;
    }
    w->n_owned++;
    w->bytes_f32 += tensor_nbytes(t);
    return t->data;
}

int weights_has(const weights *w, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    full_name(w, name, sizeof name, fmt, ap);
    va_end(ap);
    return safetensors_has(w->file, name);
}

size_t weights_release_pages(const void *p, size_t bytes) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1), e = ((uintptr_t)p + bytes) & ~(page - 1);
    if (e <= a || madvise((void *)a, e - a, MADV_DONTNEED) != 0) return 0;
    return e - a;
}

size_t weights_release_converted(weights *w, const char *name) {
    char full[sizeof w->prefix + 512];
    snprintf(full, sizeof full, "%s%s", w->prefix, name);
    tensor view;
    lion_status ignored;
    if (safetensors_get(w->file, full, &view, &ignored) != 0 || view.dtype == DTYPE_F32) return 0;
    return weights_release_pages(view.data, tensor_nbytes(&view));
}
