/* safetensors.h - read (mmap, zero-copy) and write safetensors files.
 *
 * The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header
 * length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
 * "__metadata__": {string: string}}, then the data section; offsets are relative to it.
 *
 * safetensors_open validates the whole header once, so that every later lookup can trust
 * it: see docs/model-format.md, "Reader guarantees". Every error names the file, the tensor
 * where there is one, and what is wrong. Views returned by safetensors_get point into the
 * read-only mapping: never write through them, and keep the file open while they are used. */
#ifndef LION_SAFETENSORS_H
#define LION_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "tensor.h"

/* Header bigger than this is refused before it is parsed (the reference implementation
 * uses the same 100 MB bound). */
#define SAFETENSORS_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

/* Passed as the dtype of safetensors_get_checked to accept any storage dtype. */
#define SAFETENSORS_ANY_DTYPE (-1)

typedef struct safetensors_file safetensors_file;

int safetensors_open(safetensors_file **out, const char *path, lion_status *st);
void safetensors_close(safetensors_file *f);

const char *safetensors_path(const safetensors_file *f);

/* Tensors, in name order: iterate with i in [0, safetensors_count). */
size_t safetensors_count(const safetensors_file *f);
const char *safetensors_name_at(const safetensors_file *f, size_t i);
/* 1 when a tensor of that name exists. */
int safetensors_has(const safetensors_file *f, const char *name);

/* A zero-copy view of a tensor (out->owns_data == 0). LION_ENOTFOUND when absent. */
int safetensors_get(const safetensors_file *f, const char *name, tensor *out, lion_status *st);

/* As safetensors_get, and checks the dtype (or SAFETENSORS_ANY_DTYPE) and the shape; a -1 in
 * shape matches any size in that dimension. The error gives file, tensor, expected and
 * actual ("vision.safetensors: tensor 'x': expected shape [2, 3], found [3, 2]"). */
int safetensors_get_checked(const safetensors_file *f, const char *name, int dt, int ndim,
                            const int64_t *shape, tensor *out, lion_status *st);

/* An owning f32 copy of a floating tensor (stored F32, F16 or BF16), shape checked as in
 * safetensors_get_checked; shape may be NULL to accept any. Free with tensor_free. */
int safetensors_load_f32(const safetensors_file *f, const char *name, int ndim,
                         const int64_t *shape, tensor *out, lion_status *st);

/* The "__metadata__" map: value for key, or NULL; and iteration in key order. */
const char *safetensors_metadata_get(const safetensors_file *f, const char *key);
size_t safetensors_metadata_count(const safetensors_file *f);
void safetensors_metadata_at(const safetensors_file *f, size_t i, const char **key, const char **value);

/* One tensor to write; its data is read from t->data (any dtype of tensor.h). */
typedef struct safetensors_item {
    const char *name;
    const tensor *t;
} safetensors_item;

typedef struct safetensors_kv {
    const char *key;
    const char *value;
} safetensors_kv;

/* Writes tensors and metadata to path (through path.tmp and a rename, so that a reader
 * never sees half a file). Data is laid out like the reference implementation does it:
 * tensors sorted by dtype size (largest first), then by name, and the header padded with
 * spaces to a multiple of 8 bytes, so every tensor is aligned to its dtype size. */
int safetensors_write(const char *path, const safetensors_item *items, size_t n_items,
                      const safetensors_kv *metadata, size_t n_metadata, lion_status *st);

#endif
