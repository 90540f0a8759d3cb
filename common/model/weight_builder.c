/* weight_builder.c - see weight_builder.h. Built with -ffp-contract=off (CMakeLists.txt):
 * base + scale * u must round twice, as the files' users have always computed it, never be
 * fused into one multiply-add, or the numbers (and the errors tests measure on them) move. */
#include "weight_builder.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "tensor.h"

struct weight_builder {
    int n, cap;
    tensor *t;   /* f32 views of malloc'ed data */
    char **name; /* malloc'ed */
    uint64_t seed;
    int failed; /* an add failed: later adds do nothing, the write fails */
};

static inline float draw(uint64_t *s, float scale) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return scale * ((float)(*s >> 40) / (float)(1 << 24) * 2.0f - 1.0f);
}

float weight_builder_uniform(uint64_t *state, float scale) { return draw(state, scale); }

void weight_builder_fill(float *p, size_t n, float scale, uint64_t *state) {
    for (size_t i = 0; i < n; i++) p[i] = draw(state, scale);
}

weight_builder *weight_builder_new(uint64_t seed) {
    weight_builder *b = calloc(1, sizeof *b);
    if (b) b->seed = seed;
    return b;
}

static int vadd(weight_builder *b, float base, float scale, int ndim, const int64_t *shape, const char *fmt,
                va_list ap) {
    if (b->failed) return -1;
    b->failed = 1; /* until the tensor is in */
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 64;
        tensor *t = realloc(b->t, (size_t)cap * sizeof *t);
        if (!t) return -1;
        b->t = t;
        char **name = realloc(b->name, (size_t)cap * sizeof *name);
        if (!name) return -1;
        b->name = name;
        b->cap = cap;
    }
    va_list ap2;
    va_copy(ap2, ap);
    int len = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    const int64_t n = ndim >= 0 && ndim <= TENSOR_MAX_DIMS ? shape_numel(ndim, shape) : -1;
    if (len < 0 || n < 0 || (uint64_t)n > SIZE_MAX / sizeof(float)) return -1;
    char *name = malloc((size_t)len + 1);
    float *d = malloc(n ? (size_t)n * sizeof(float) : 1);
    if (!name || !d) {
        free(name);
        free(d);
        return -1;
    }
    vsnprintf(name, (size_t)len + 1, fmt, ap);
    /* base 0 stores the draw itself (not 0 + it), as the users did before this builder */
    if (base == 0.0f)
        weight_builder_fill(d, (size_t)n, scale, &b->seed);
    else
        for (int64_t i = 0; i < n; i++) d[i] = base + draw(&b->seed, scale);
    b->name[b->n] = name;
    b->t[b->n++] = tensor_view(DTYPE_F32, d, ndim, shape);
    b->failed = 0;
    return 0;
}

int weight_builder_add(weight_builder *b, float base, float scale, int ndim, const int64_t *shape,
                       const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = vadd(b, base, scale, ndim, shape, fmt, ap);
    va_end(ap);
    return rc;
}

/* "<prefix>.<leaf>" tensors from a printf-formatted prefix */
static int add_pair(weight_builder *b, const char *fmt, va_list ap, float base_w, float scale_w, int ndim_w,
                    const int64_t *shape_w, int bias, float base_b, float scale_b, int64_t n_b) {
    char prefix[512];
    int len = vsnprintf(prefix, sizeof prefix, fmt, ap);
    if (len < 0 || (size_t)len >= sizeof prefix) {
        b->failed = 1;
        return -1;
    }
    if (weight_builder_add(b, base_w, scale_w, ndim_w, shape_w, "%s.weight", prefix)) return -1;
    return bias ? weight_builder_add(b, base_b, scale_b, 1, &n_b, "%s.bias", prefix) : 0;
}

int weight_builder_linear(weight_builder *b, int out, int in, int bias, float scale, const char *fmt, ...) {
    const int64_t shape[2] = {out, in};
    va_list ap;
    va_start(ap, fmt);
    int rc = add_pair(b, fmt, ap, 0.0f, scale, 2, shape, bias, 0.0f, scale, out);
    va_end(ap);
    return rc;
}

int weight_builder_norm(weight_builder *b, int n, const char *fmt, ...) {
    const int64_t shape[1] = {n};
    va_list ap;
    va_start(ap, fmt);
    int rc = add_pair(b, fmt, ap, 1.0f, 0.1f, 1, shape, 1, 0.0f, 0.02f, n);
    va_end(ap);
    return rc;
}

int weight_builder_write(const weight_builder *b, const char *path, lion_status *st) {
    if (b->failed)
        return lion_fail(st, LION_ENOMEM, "%s: a tensor could not be built (out of memory or a bad shape)", path);
    safetensors_item *items = calloc(b->n ? (size_t)b->n : 1, sizeof *items);
    if (!items) return lion_fail(st, LION_ENOMEM, "out of memory");
    for (int i = 0; i < b->n; i++) items[i] = (safetensors_item){b->name[i], &b->t[i]};
    int rc = safetensors_write(path, items, (size_t)b->n, NULL, 0, st);
    free(items);
    return rc;
}

void weight_builder_free(weight_builder *b) {
    if (!b) return;
    for (int i = 0; i < b->n; i++) free(b->t[i].data), free(b->name[i]);
    free(b->t);
    free(b->name);
    free(b);
}
