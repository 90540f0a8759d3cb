/* worker_compute.c - the worker's compute thread: it runs the stage on what the socket thread
 * hands it over the pipe (a process stage batch by batch, a continuous stage step by step),
 * and the job API a stage calls from there (inputs, outputs, failures, PARTIALs, done), whose
 * answers go back over the same pipe. The socket thread is worker.c. */
#include "worker_compute.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "clock.h"
#include "log.h"
#include "threads.h"

/* --- job API for stages --------------------------------------------------------------- */

const tensor *worker_job_input(const worker_job *job, const char *name, lion_status *st) {
    for (int i = 0; i < job->n_inputs; i++)
        if (strcmp(job->env->tensors[i]->name, name) == 0) return &job->inputs[i];
    char have[256] = "";
    size_t used = 0;
    for (int i = 0; i < job->n_inputs && used < sizeof have; i++)
        used += (size_t)snprintf(have + used, sizeof have - used, "%s'%.32s'", i ? ", " : "",
                                 job->env->tensors[i]->name);
    lion_fail(st, LION_EINVAL, "request %s: no input tensor '%s' (the job has %s)", job->env->request_id,
              name, job->n_inputs ? have : "none");
    return NULL;
}

int worker_job_add_output(worker_job *job, const char *name, tensor *t, lion_status *st) {
    void *grown = realloc(job->outputs, (size_t)(job->n_outputs + 1) * sizeof *job->outputs);
    if (!grown) return lion_fail(st, LION_ENOMEM, "output '%s': out of memory", name);
    job->outputs = grown;
    char *copy = strdup(name);
    if (!copy) return lion_fail(st, LION_ENOMEM, "output '%s': out of memory", name);
    struct worker_output *out = &job->outputs[job->n_outputs++];
    out->name = copy;
    out->t = *t;
    if (t->owns_data) memset(t, 0, sizeof *t); /* moved: the job frees or hands it off */
    return 0;
}

int worker_job_fail(worker_job *job, int code, const char *fmt, ...) {
    job->status.code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(job->status.msg, sizeof job->status.msg, fmt, ap);
    va_end(ap);
    return -1;
}

int worker_job_send_partial(worker_job *job, const char *text, const int32_t *ids, size_t n_ids, lion_status *st) {
    if (!job->task->has_stream || !job->task->stream) return 0;
    if (!job->pipe) return lion_fail(st, LION_EINTERNAL, "request %s: PARTIAL sent outside process", job->env->request_id);
    Lion__Envelope *env = envelope_partial(job->env, text, ids, n_ids, st);
    if (!env) return -1;
    env->has_sent_us = 1;
    env->sent_us = clock_unix_us();
    pipe_msg msg = {.kind = PIPE_PARTIAL, .ptr = env, .link = job->link};
    int rc;
    while ((rc = zmq_send(job->pipe, &msg, sizeof msg, 0)) < 0 && errno == EINTR) {}
    if (rc != (int)sizeof msg) {
        envelope_free(env);
        return lion_fail(st, LION_EINTERNAL, "request %s: PARTIAL not handed to the socket thread: %s",
                         job->env->request_id, zmq_strerror(errno));
    }
    return 0;
}

int worker_job_cancelled(const worker_job *job) { return atomic_load(&job->cancelled) != 0; }

int worker_job_done(worker_job *job, lion_status *st) {
    if (!job->pipe) return lion_fail(st, LION_EINTERNAL, "request %s: done outside the compute thread", job->env->request_id);
    job->finish_us = clock_unix_us();
    /* once sent, the socket thread owns the job (and may free it at once): nothing of it is
     * touched after the send */
    void *pipe = job->pipe;
    job->pipe = NULL;
    const char *id = job->env->request_id;
    pipe_msg msg = {.kind = PIPE_JOB_DONE, .ptr = job};
    int rc;
    while ((rc = zmq_send(pipe, &msg, sizeof msg, 0)) < 0 && errno == EINTR) {}
    if (rc != (int)sizeof msg)
        return lion_fail(st, LION_EINTERNAL, "request %s: answer not handed to the socket thread: %s", id,
                         zmq_strerror(errno));
    return 0;
}

/* --- the thread ------------------------------------------------------------------------ */

/* A process stage: one batch at a time, answered whole. */
static void compute_batches(void *pipe, const worker_stage *stage) {
    for (;;) {
        batch *b = NULL;
        int got = zmq_recv(pipe, &b, sizeof b, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got != sizeof b || !b) break; /* NULL: the loop is shutting down */
        lion_status_clear(&b->st);
        for (int i = 0; i < b->n; i++) b->jobs[i].pipe = pipe;
        b->rc = stage->process(stage->ctx, b->jobs, b->n, &b->st);
        for (int i = 0; i < b->n; i++) b->jobs[i].pipe = NULL;
        b->finish_us = clock_unix_us();
        pipe_msg done = {.kind = PIPE_BATCH_DONE, .ptr = b};
        while (zmq_send(pipe, &done, sizeof done, 0) < 0 && errno == EINTR) {}
    }
}

/* A continuous stage: between its steps, the jobs that arrived join it; it answers each
 * job when it is done. Told to stop, it runs until it holds no job. */
static void compute_continuous(void *pipe, const worker_stage *stage) {
    int held = 0, stopping = 0;
    for (;;) {
        /* wait for work only when there is nothing to step */
        int flags = held > 0 ? ZMQ_DONTWAIT : 0;
        while (!stopping) {
            batch *b = NULL;
            int got = zmq_recv(pipe, &b, sizeof b, flags);
            if (got < 0 && errno == EINTR) continue;
            if (got < 0 && errno == EAGAIN) break;
            if (got != sizeof b || !b) {
                stopping = 1;
                break;
            }
            for (int i = 0; i < b->n; i++) b->jobs[i].pipe = pipe;
            stage->admit(stage->ctx, b->jobs, b->n);
            flags = ZMQ_DONTWAIT;
        }
        held = stage->step(stage->ctx);
        if (stopping && held == 0) break;
    }
}

void *worker_compute_main(void *arg) {
    compute_args *a = arg;
    if (a->threads > 0) threads_use_here(a->threads);
    void *pipe = zmq_socket(a->zctx, ZMQ_PAIR);
    if (!pipe || zmq_connect(pipe, a->endpoint) != 0) {
        log_error("compute thread: pipe: %s", zmq_strerror(errno));
        if (pipe) zmq_close(pipe);
        atomic_store(a->exited, 1);
        return NULL;
    }
    if (a->stage->process) compute_batches(pipe, a->stage);
    else compute_continuous(pipe, a->stage);
    zmq_close(pipe);
    atomic_store(a->exited, 1);
    return NULL;
}
