/* worker.h - the loop every stage service runs: connect to the gateway, take jobs, run
 * them in batches, answer.
 *
 * worker_run connects a DEALER to the gateway's ROUTER endpoint for its stage, announces
 * READY with its capacity, heartbeats, and answers every JOB with a RESULT or an ERROR
 * (docs/wire-protocol.md). Given several gateways (--gateway EP,EP), it connects one DEALER
 * to each and serves them all: READY, HEARTBEAT and BYE go on every link, each announcing
 * that gateway's share of the capacity (worker_gateways.h); a job is answered (PARTIALs,
 * RESULT, ERROR) on the link it came from, a CANCEL names a job of its own link, and a
 * gateway's silence or BYE is tracked per link. The sockets belong to the calling thread; the
 * stage's process function runs on a compute thread of its own, so that heartbeats and new
 * jobs keep flowing during a long forward, and the jobs that arrived meanwhile form the next
 * batch.
 * Bad input never stops the worker: a malformed frame gets an ERROR (when its request id
 * can be read) or is logged and dropped. SIGTERM/SIGINT stop it cleanly: queued jobs are
 * failed with LION_EUNAVAILABLE (the gateway re-dispatches them), the running batch
 * finishes and is answered, BYE is sent, and the sockets and context are closed.
 *
 * Streaming: while process runs, it may send a job's answer so far with
 * worker_job_send_partial (a PARTIAL, for a task with `stream` set); the socket thread sends
 * it at once, and every PARTIAL of a job goes out before its RESULT or ERROR.
 * Cancellation: a CANCEL from the gateway names a job (request id, stage, attempt). A job
 * still queued leaves the queue and is answered ERROR LION_ECANCELED at once; a running job
 * is flagged (worker_job_cancelled, which process should poll between steps) and answered
 * ERROR LION_ECANCELED when its batch ends, whatever process did with it; a CANCEL for a job
 * the worker no longer holds is ignored. Every answer, a cancelled one too, frees the job's
 * credit. */
#ifndef LION_WORKER_H
#define LION_WORKER_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "args.h"
#include "envelope.h"
#include "precision.h"
#include "status.h"
#include "tensor.h"

/* Without --model (or LION_MODEL) services load the embedded tiny model. */
#define WORKER_DEFAULT_MODEL "models/tiny-lion"

typedef struct worker_config {
    const char *gateway;   /* the stage's gateway endpoint (tcp://HOST:PORT, ipc://PATH), or
                              several separated by commas: one link to each */
    const char *model_dir; /* for the service; worker_run does not read it */
    const char *service;   /* "vision", ...: logs, trace hops, the default replica id */
    char replica_id[64];   /* a copy, so that the config can be copied by value */
    int threads;           /* compute threads (OpenMP, OpenBLAS) of the stage; 0: as set */
    lion_precision precision; /* --precision as parsed (PRECISION_AUTO unless given);
                                 worker_main replaces it with what the stage runs
                                 (precision_resolve) before opening the stage */
    int capacity;          /* jobs held at once, queued + running: the credit announced */
    int max_batch;         /* jobs given to one process call */
    int heartbeat_ms;
    int gateway_silence_ms; /* nothing heard from a gateway for this long: warn, give its share
                               of the capacity to the others, and announce READY again when it
                               is back (it may have restarted); 0: 3 beats */
    int linger_ms;          /* how long close waits for unsent answers; 0: 2000 */
    const char *curve_server_key; /* the gateway's public key file: CURVE on the link; or one
                                     per gateway, separated by commas (worker_gateways.h) */
    const char *curve_key;        /* this worker's key pair file (lion-keygen) */
    int insecure;                 /* a gateway off this machine without CURVE, on purpose */
    envelope_limits limits; /* for received messages; zeros take the defaults */
    /* Set non-zero (from any thread) to stop the loop. NULL: worker_run stops on
     * SIGTERM/SIGINT, installing handlers for its duration. */
    atomic_int *stop;
    int help;              /* worker_config_parse saw --help */
    int check_config;      /* --check-config: worker_main checks the options, the link's keys
                              and the model (opened and closed), prints what it would run and
                              exits, binding and connecting nothing (worker_check.h) */
    const char *ready_file; /* --ready-file: written by worker_main once the stage is open,
                               removed when it stops: an exec readiness probe's file */
} worker_config;

struct worker_output;

/* One job of a batch, as the stage's process function sees it. */
typedef struct worker_job {
    const Lion__Envelope *env; /* the JOB: request id, stage, attempt, deadline, task */
    const Lion__Task *task;    /* env->task, or an empty task: never NULL */
    int n_inputs;
    const tensor *inputs;      /* zero-copy views of the received frames; the name of
                                  inputs[i] is env->tensors[i]->name */
    Lion__Envelope *reply;     /* the RESULT being built: add text answers with
                                  envelope_add_sequence, envelope_add_tag, ... */
    lion_status status;        /* set (worker_job_fail) to fail this job alone */
    /* the worker's own bookkeeping */
    int n_outputs;
    struct worker_output *outputs;
    envelope_msg *msg;
    int64_t receive_us;
    atomic_int cancelled; /* set by the socket thread on CANCEL: read worker_job_cancelled */
    void *pipe;           /* the compute thread's end of the pipe, for PARTIALs */
    struct batch *batch;  /* the batch it came in */
    int link;             /* the gateway it came from (its place in --gateway's list): its
                             PARTIALs and its answer go back there, and only there */
    int answered;         /* continuous stages: its answer went out */
    int64_t finish_us;    /* continuous stages: when worker_job_done was called */
} worker_job;

/* The stage's batch function, called on the compute thread with 1..max_batch jobs.
 * Returns 0 when it ran (each job then succeeds or fails by its own status), or -1 with
 * st filled when the whole batch failed (every job is answered with st). */
typedef int (*worker_process_fn)(void *ctx, worker_job *jobs, int n, lion_status *st);

/* A stage either runs batches (process: called with the jobs queued, returns when all of
 * them are done; the next batch forms meanwhile) or runs continuously (process NULL; admit
 * and step): jobs join its running work between its steps as they arrive, and each leaves
 * when it is done (worker_job_done), so a short job never waits for a long one. Both run on
 * the compute thread. */
typedef struct worker_stage {
    int stage; /* Lion__Stage this worker serves: jobs for another stage are refused */
    worker_process_fn process;
    /* Continuous stages: admit hands over newly arrived jobs (the stage keeps them until it
     * answers each with worker_job_done, failing a job by worker_job_fail first); step runs
     * one iteration and returns how many jobs the stage still holds (0: the compute thread
     * waits for new jobs). A stage must answer every job it holds in a bounded number of
     * steps; told to stop, the worker steps until it holds none. */
    void (*admit)(void *ctx, worker_job *jobs, int n);
    int (*step)(void *ctx);
    void *ctx; /* the stage's model, given to process */
    /* Optional, continuous decoding stages: rows in the running batch, bytes of decoding
     * state held and the budget for it, reported in READY/HEARTBEAT credit. Called on the
     * socket thread while step may run: read them atomically. */
    void (*decode_stats)(void *ctx, uint32_t *running_rows, uint64_t *kv_bytes, uint64_t *kv_budget_bytes);
    /* Optional: the stage's cache counters, reported in READY/HEARTBEAT credit. Called on the
     * socket thread while process may run, so it must read them atomically. */
    void (*cache_stats)(void *ctx, uint64_t *hits, uint64_t *misses);
    /* Optional: reported in READY/HEARTBEAT credit (the gateway's lion_worker_info): what the
     * stage computes with ("f32", "bf16") and the CPU's ISA (cpu_isa_name()). NULL: not
     * reported. worker_main sets both. */
    const char *precision, *isa;
    /* Optional: the model the stage serves (model.json's name) and its family ("lion",
     * "pink"), reported in READY/HEARTBEAT credit, so that a gateway serving several models
     * puts the worker in that model's pool. NULL: not reported (the gateway's default model).
     * worker_main sets both from the model directory. */
    const char *model, *family;
} worker_stage;

/* Runs until stopped; returns 0 after a clean shutdown, -1 with st filled when the loop
 * could not start (bad config, socket setup). */
int worker_run(const worker_config *cfg, const worker_stage *stage, lion_status *st);

/* The input called name, or NULL with st saying which input is missing. */
const tensor *worker_job_input(const worker_job *job, const char *name, lion_status *st);
/* Adds an output tensor to the job's RESULT. An owning t is moved in (t is left empty);
 * its buffer is handed to ZeroMQ without a copy. A view must stay valid until process
 * returns: a view of a whole input is forwarded without a copy, others are copied. */
int worker_job_add_output(worker_job *job, const char *name, tensor *t, lion_status *st);
/* Fails this job alone with code and message; returns -1. */
int worker_job_fail(worker_job *job, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Streams a part of the job's answer: when job->task->stream is set, a PARTIAL of this job
 * (request id, stage, attempt) whose result.sequences[0] holds text (the new text since the
 * previous PARTIAL) and ids[0..n_ids) (the new token ids; ids may be NULL when n_ids is 0)
 * goes to the gateway at once, before the job's RESULT or ERROR and after its earlier
 * PARTIALs. Returns 0 without sending anything when the task does not ask for streaming.
 * Call it from the thread that runs process (not from threads process starts); -1 with st
 * filled when the message could not be built or handed to the socket thread. */
int worker_job_send_partial(worker_job *job, const char *text, const int32_t *ids, size_t n_ids, lion_status *st);
/* Non-zero once the gateway cancelled this job (a CANCEL with its request id and attempt).
 * Safe to poll from process at any time: a stage that runs long should stop working on a
 * cancelled job (its answer will be ERROR LION_ECANCELED whatever process does). */
int worker_job_cancelled(const worker_job *job);
/* Continuous stages: the job is done (its RESULT built, or failed with worker_job_fail, or
 * cancelled): its answer goes to the gateway now, after its PARTIALs. The stage must not
 * touch the job afterwards. -1 with st filled when it could not be handed over (the worker
 * is going away). */
int worker_job_done(worker_job *job, lion_status *st);

/* Defaults, then LION_GATEWAY, LION_MODEL, LION_THREADS, LION_REPLICA, LION_CAPACITY,
 * LION_MAX_BATCH, LION_HEARTBEAT_MS, LION_CURVE_SERVER_KEY, LION_CURVE_KEY, LION_PRECISION,
 * LION_READY_FILE from the environment, then the command line: --gateway EP[,EP...] --model DIR
 * --threads N (1..1024) --replica ID --capacity N (1..LION_MAX_CAPACITY) --max-batch N
 * (1..LION_MAX_BATCH, at most --capacity) --heartbeat-ms N --curve-server-key FILE
 * --curve-key FILE --insecure --precision auto|f32|bf16 (common/nn/precision.h)
 * --ready-file FILE --check-config --help (either "--opt value" or "--opt=value";
 * common/core/args.h).
 * cfg keeps pointers into argv and the environment (except replica_id, copied). */
int worker_config_parse(worker_config *cfg, const char *service, int argc, char **argv, lion_status *st);
/* The same, with a service's own options (extra, may be NULL: e.g. lion-vision's
 * --cache-mb) read from the same environment and command line. */
int worker_config_parse_with(worker_config *cfg, const char *service, const args_table *extra, int argc, char **argv,
                             lion_status *st);
/* The --help text: the shared options, then extra's (NULL: none), with their defaults. */
void worker_usage(FILE *out, const char *program, const args_table *extra);

#endif
