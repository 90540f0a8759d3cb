/* tensor.h - the tensor type every stage computes with and every frame carries.
 *
 * Tensors are contiguous row-major. Compute is f32; storage (model files, wire frames)
 * may be f16 or bf16 and is converted with the functions below. A tensor either owns
 * its data (tensor_alloc) or views memory owned by someone else (tensor_view: an mmap'ed
 * safetensors file, a ZeroMQ frame, an arena). */
#ifndef LION_TENSOR_H
#define LION_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum dtype {
    DTYPE_F32 = 0,
    DTYPE_F16 = 1,
    DTYPE_BF16 = 2,
    DTYPE_I8 = 3,
    DTYPE_U8 = 4,
    DTYPE_I32 = 5,
    DTYPE_I64 = 6,
    DTYPE_COUNT
} dtype;

#define TENSOR_MAX_DIMS 8

typedef struct tensor {
    dtype dtype;
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    void *data;
    int owns_data; /* tensor_free releases data only when set */
} tensor;

size_t dtype_size(dtype dt);
/* Names as safetensors spells them: "F32", "F16", "BF16", "I8", "U8", "I32", "I64". */
const char *dtype_name(dtype dt);
/* Returns 0 and sets *out for a known name, -1 otherwise. */
int dtype_from_name(const char *name, dtype *out);

/* Element count of a shape; -1 when a dimension is negative or the product overflows
 * int64 (shapes come from files and frames, so this is checked, not assumed). */
int64_t shape_numel(int ndim, const int64_t *shape);

int64_t tensor_numel(const tensor *t);
size_t tensor_nbytes(const tensor *t);
/* "[2, 257, 1408]" into buf; returns buf. */
const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t len);

/* A non-owning tensor over data. ndim <= TENSOR_MAX_DIMS is the caller's duty. */
tensor tensor_view(dtype dt, void *data, int ndim, const int64_t *shape);
/* An owning, zero-filled tensor; returns -1 with st filled when the shape is invalid or
 * memory is short. */
int tensor_alloc(tensor *t, dtype dt, int ndim, const int64_t *shape, lion_status *st);
void tensor_free(tensor *t);

/* Element conversion. f32 -> f16/bf16 rounds to nearest even, as torch does; NaN stays NaN. */
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float bf16_to_f32(uint16_t b);
uint16_t f32_to_bf16(float f);

/* dst[i] = (float)src[i] for n elements of a floating storage dtype (F32, F16, BF16). */
int convert_to_f32(float *dst, const void *src, dtype src_dt, size_t n, lion_status *st);
/* dst (of dtype dst_dt: F32, F16, BF16) from n floats. */
int convert_from_f32(void *dst, dtype dst_dt, const float *src, size_t n, lion_status *st);

/* Returns an owning f32 copy of any floating tensor (used at load time so that the hot
 * loops only ever read f32). */
int tensor_to_f32(tensor *out, const tensor *in, lion_status *st);

#endif
