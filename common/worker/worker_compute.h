/* worker_compute.h - inside lion_worker: what the socket thread (worker.c) and the compute
 * thread (worker_compute.c) hand each other over their inproc pipe. Not for stages: they see
 * worker.h only. */
#ifndef LION_WORKER_COMPUTE_H
#define LION_WORKER_COMPUTE_H

#include <stdatomic.h>
#include <stdint.h>

#include "envelope.h"
#include "worker.h"

struct worker_output {
    char *name;
    tensor t;
};

/* A batch handed to the compute thread and back, by pointer over an inproc pipe. A
 * process stage answers it whole (PIPE_BATCH_DONE); a continuous stage answers its jobs one
 * by one (PIPE_JOB_DONE), and the batch is freed with its last answer. */
typedef struct batch {
    int n;
    worker_job *jobs;
    envelope_msg *msgs;
    int rc;
    lion_status st;
    int64_t finish_us;
    int left;           /* jobs not answered yet */
    struct batch *next; /* the worker's list of batches in the compute thread */
} batch;

/* What the compute thread sends the socket thread over the pipe, in order: the PARTIALs
 * of a running batch, then the batch itself when it is done. */
enum { PIPE_BATCH_DONE = 1, PIPE_PARTIAL = 2, PIPE_JOB_DONE = 3 };
typedef struct pipe_msg {
    int kind;
    void *ptr; /* batch *, worker_job * or Lion__Envelope * (a PARTIAL to send and free) */
    int link;  /* a PARTIAL's gateway: its job's */
} pipe_msg;

typedef struct compute_args {
    void *zctx;
    const char *endpoint;
    const worker_stage *stage;
    int threads;
    atomic_int *exited; /* set when the compute thread has sent its last message */
} compute_args;

/* The compute thread's body (pthread start routine; arg: its compute_args): connects to the
 * pipe, then runs a process stage batch by batch, or a continuous stage step by step, until
 * the socket thread sends NULL; sets *exited last. */
void *worker_compute_main(void *arg);

#endif
