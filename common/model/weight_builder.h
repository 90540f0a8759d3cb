/* weight_builder.h - a safetensors file of named random f32 tensors, for tests and benchmarks
 * that need a model file of a given layout (a stage's keys and shapes) with random weights.
 *
 * The numbers come from a 64-bit LCG (Knuth's MMIX constants) whose top 24 bits map to
 * [-1, 1): fast enough for the hundreds of millions of weights of a full-width model (rand_r
 * would take seconds), and the same on every machine, so errors measured against such a file
 * are reproducible. Each tensor draws its elements in order, tensors in the order they are
 * added; a given seed and sequence of adds always gives the same file.
 *
 *     weight_builder *b = weight_builder_new(42);
 *     weight_builder_linear(b, 768, 768, 1, 0.0346f, "layer.%d.dense", i);
 *     weight_builder_norm(b, 768, "layer.%d.LayerNorm", i);
 *     int rc = weight_builder_write(b, path, &st);
 *     weight_builder_free(b);
 *
 * An add that fails (out of memory, a bad shape) returns -1 and marks the builder: the adds
 * after it do nothing and weight_builder_write fails, so a caller may check only the write. */
#ifndef LION_WEIGHT_BUILDER_H
#define LION_WEIGHT_BUILDER_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct weight_builder weight_builder;

/* An empty builder whose generator starts at seed; NULL when out of memory. */
weight_builder *weight_builder_new(uint64_t seed);

/* One step of the builder's generator on *state: uniform in [-scale, scale], as
 * scale * (top 24 bits / 2^24 * 2 - 1). For inputs drawn the same way as the weights. */
float weight_builder_uniform(uint64_t *state, float scale);
/* n of them into p, in order (the same numbers as n calls; for benches that fill gigabytes). */
void weight_builder_fill(float *p, size_t n, float scale, uint64_t *state);

/* A tensor of this shape named by the printf format, each element base + uniform in
 * [-scale, scale] from the builder's generator (base 0: exactly the uniform draw). */
int weight_builder_add(weight_builder *b, float base, float scale, int ndim, const int64_t *shape,
                       const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* A Linear: "<name>.weight" [out, in], then when bias "<name>.bias" [out], both uniform in
 * [-scale, scale] (0.0346: std 0.02, the init of Swin and BERT). */
int weight_builder_linear(weight_builder *b, int out, int in, int bias, float scale, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* A LayerNorm: "<name>.weight" [n] about 1 (1 + uniform in [-0.1, 0.1]), then "<name>.bias"
 * [n] uniform in [-0.02, 0.02]. */
int weight_builder_norm(weight_builder *b, int n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The tensors as one f32 safetensors file at path (no metadata); -1 with st filled when an
 * add failed or the write does. The builder keeps its tensors (free it after). */
int weight_builder_write(const weight_builder *b, const char *path, lion_status *st);

/* The builder and every tensor's data; NULL is fine. */
void weight_builder_free(weight_builder *b);

#endif
