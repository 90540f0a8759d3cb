#include "weights.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
