/* stage_io.h - what every stage does with a job's tensors: read its encoded image,
 * and add f32 results in the storage dtype the job asked for (Task.output_dtype). */
#ifndef LION_STAGE_IO_H
#define LION_STAGE_IO_H

#include "worker.h"

/* The job's LION_TENSOR_IMAGE frame (protocol.h), checked to be U8 and one-dimensional. */
int stage_image_bytes(const worker_job *job, const uint8_t **bytes, size_t *len, lion_status *st);

/* The storage dtype for the job's outputs: F32 unless the task asks for F16 or BF16
 * (others are refused with LION_EINVAL). */
int stage_output_dtype(const worker_job *job, dtype *out, lion_status *st);

/* Adds a copy of n f32 values as output name with this shape, stored as dt. */
int stage_add_output_f32(worker_job *job, const char *name, const float *data, int ndim, const int64_t *shape,
                         dtype dt, lion_status *st);

#endif
