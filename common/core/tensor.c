#include "tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtype_info[DTYPE_COUNT] = {
    [DTYPE_F32] = {"F32", 4}, [DTYPE_F16] = {"F16", 2}, [DTYPE_BF16] = {"BF16", 2},
    [DTYPE_I8] = {"I8", 1},   [DTYPE_U8] = {"U8", 1},   [DTYPE_I32] = {"I32", 4},
    [DTYPE_I64] = {"I64", 8},
};

size_t dtype_size(dtype dt) { return (unsigned)dt < DTYPE_COUNT ? dtype_info[dt].size : 0; }

const char *dtype_name(dtype dt) { return (unsigned)dt < DTYPE_COUNT ? dtype_info[dt].name : "?"; }

int dtype_from_name(const char *name, dtype *out) {
    for (int i = 0; i < DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_info[i].name) == 0) {
            *out = (dtype)i;
            return 0;
        }
    }
    return -1;
}

int64_t shape_numel(int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > TENSOR_MAX_DIMS) return -1;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] != 0 && n > INT64_MAX / shape[i]) return -1;
        n *= shape[i];
    }
    return n;
}

int64_t tensor_numel(const tensor *t) { return shape_numel(t->ndim, t->shape); }

size_t tensor_nbytes(const tensor *t) { return (size_t)tensor_numel(t) * dtype_size(t->dtype); }

const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t len) {
    size_t used = 0;
    used += (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < len) snprintf(buf + used, len - used, "]");
    return buf;
}

tensor tensor_view(dtype dt, void *data, int ndim, const int64_t *shape) {
    tensor t = {.dtype = dt, .ndim = ndim, .data = data, .owns_data = 0};
    for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
    return t;
}

int tensor_alloc(tensor *t, dtype dt, int ndim, const int64_t *shape, lion_status *st) {
    memset(t, 0, sizeof *t);
    if ((unsigned)dt >= DTYPE_COUNT) return lion_fail(st, LION_EINVAL, "tensor_alloc: bad dtype %d", (int)dt);
    int64_t n = shape_numel(ndim, shape);
    if (n < 0) return lion_fail(st, LION_EINVAL, "tensor_alloc: invalid shape (ndim %d)", ndim);
    if ((uint64_t)n > SIZE_MAX / dtype_size(dt)) return lion_fail(st, LION_ETOOBIG, "tensor_alloc: shape too large");
    size_t bytes = (size_t)n * dtype_size(dt);
    void *p = calloc(bytes ? bytes : 1, 1);
    if (!p) return lion_fail(st, LION_ENOMEM, "tensor_alloc: out of memory for %zu bytes", bytes);
    *t = tensor_view(dt, p, ndim, shape);
    t->owns_data = 1;
    return 0;
}

void tensor_free(tensor *t) {
    if (t && t->owns_data) free(t->data);
    if (t) memset(t, 0, sizeof *t);
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do { e++; mant <<= 1; } while (!(mant & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) return (uint16_t)(sign | 0x7e00); /* NaN */
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* overflow (after rounding) -> inf */
    if (absx < 0x38800000u) { /* result is subnormal or zero */
        if (absx < 0x33000000u) return (uint16_t)sign; /* below half the smallest subnormal */
        uint32_t e = absx >> 23;
        uint32_t mant = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t half = 1u << (shift - 1);
        uint32_t rest = mant & ((1u << shift) - 1);
        uint32_t r = mant >> shift;
        if (rest > half || (rest == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = absx - 0x38000000u; /* rebias exponent 127 -> 15, keep 23-bit mantissa */
    uint32_t rest = r & 0x1fff;
    r >>= 13;
    if (rest > 0x1000 || (rest == 0x1000 && (r & 1))) r++;
    return (uint16_t)(sign | r);
}

float bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

int convert_to_f32(float *dst, const void *src, dtype src_dt, size_t n, lion_status *st) {
    switch (src_dt) {
    case DTYPE_F32:
        if ((const void *)dst != src) memmove(dst, src, n * 4);
        return 0;
    case DTYPE_F16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(s[i]);
        return 0;
    }
    case DTYPE_BF16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(s[i]);
        return 0;
    }
    default:
        return lion_fail(st, LION_EINVAL, "cannot convert %s to F32", dtype_name(src_dt));
    }
}

int convert_from_f32(void *dst, dtype dst_dt, const float *src, size_t n, lion_status *st) {
    switch (dst_dt) {
    case DTYPE_F32:
        if (dst != (const void *)src) memmove(dst, src, n * 4);
        return 0;
    case DTYPE_F16: {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = f32_to_f16(src[i]);
        return 0;
    }
    case DTYPE_BF16: {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = f32_to_bf16(src[i]);
        return 0;
    }
    default:
        return lion_fail(st, LION_EINVAL, "cannot convert F32 to %s", dtype_name(dst_dt));
    }
}

int tensor_to_f32(tensor *out, const tensor *in, lion_status *st) {
    if (tensor_alloc(out, DTYPE_F32, in->ndim, in->shape, st)) return -1;
    if (convert_to_f32(out->data, in->data, in->dtype, (size_t)tensor_numel(in), st)) {
        tensor_free(out);
        return -1;
    }
    return 0;
}
