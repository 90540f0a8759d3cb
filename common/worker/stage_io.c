#include "stage_io.h"

#include "protocol.h"

int stage_image_bytes(const worker_job *job, const uint8_t **bytes, size_t *len, lion_status *st) {
    const tensor *t = worker_job_input(job, LION_TENSOR_IMAGE, st);
    if (!t) return -1;
    if (t->dtype != DTYPE_U8 || t->ndim != 1)
        return lion_fail(st, LION_EINVAL,
                         "input '" LION_TENSOR_IMAGE "' must be U8 with one dimension (the encoded file), "
                         "got %s with %d", dtype_name(t->dtype), t->ndim);
    *bytes = t->data;
    *len = (size_t)t->shape[0];
    return 0;
}

int stage_output_dtype(const worker_job *job, dtype *out, lion_status *st) {
    *out = DTYPE_F32;
    if (!job->task->has_output_dtype) return 0;
    int dt = (int)job->task->output_dtype;
    if (dt != DTYPE_F32 && dt != DTYPE_F16 && dt != DTYPE_BF16)
        return lion_fail(st, LION_EINVAL, "output_dtype %s is not F32, F16 or BF16", dtype_name((dtype)dt));
    *out = (dtype)dt;
    return 0;
}

int stage_add_output_f32(worker_job *job, const char *name, const float *data, int ndim, const int64_t *shape,
                         dtype dt, lion_status *st) {
    tensor t;
    if (tensor_alloc(&t, dt, ndim, shape, st)) return -1;
    if (convert_from_f32(t.data, dt, data, (size_t)tensor_numel(&t), st) ||
        worker_job_add_output(job, name, &t, st)) {
        tensor_free(&t);
        return -1;
    }
    return 0;
}
