/* worker_main.h - the main() every stage service shares: parse the worker options, check
 * the link's keys, set logging and threads, open the stage's model, run the worker loop
 * (or, with --check-config, stop there and say what would run), close.
 *
 * A service supplies its name, its stage, and how to open and close its model; its own
 * main.c is then a few lines (services/<stage>/main.c). WORKER_DEFAULT_MODEL (worker.h)
 * is the model directory without --model. */
#ifndef LION_WORKER_MAIN_H
#define LION_WORKER_MAIN_H

#include "worker.h"

typedef struct worker_service {
    const char *name;  /* "vision": logs, trace hops, replica ids, "lion-vision" in usage */
    int stage;         /* Lion__Stage */
    /* Opens the stage from cfg (model_dir already defaulted, max_batch, threads, precision
     * resolved: PRECISION_F32, or PRECISION_BF16 only when `precisions` has it); returns the
     * ctx given to process, or NULL with st filled. */
    void *(*open)(const worker_config *cfg, lion_status *st);
    void (*close)(void *ctx);
    worker_process_fn process;
    /* a continuous stage instead of process (worker_stage) */
    void (*admit)(void *ctx, worker_job *jobs, int n);
    int (*step)(void *ctx);
    void (*decode_stats)(void *ctx, uint32_t *running_rows, uint64_t *kv_bytes, uint64_t *kv_budget_bytes);
    void (*cache_stats)(void *ctx, uint64_t *hits, uint64_t *misses); /* optional, see worker_stage */
    /* The service's own options (common/core/args.h), parsed with the shared ones and
     * listed after them by --help; its base is the service's options struct, holding the
     * defaults until main parses. Zero: none. */
    args_table options;
    /* PRECISION_BIT(PRECISION_BF16) when the stage has a bf16 path (common/nn/precision.h);
     * zero: f32 only, whatever --precision says (logged). */
    unsigned precisions;
} worker_service;

/* The precision and ISA are logged at start ("precision f32 (auto: no native bf16; kernels
 * avx2)") and reported in the worker's credit. Before the model is opened, the link's keys
 * and the --insecure rule are checked (worker_check.h). With --check-config the stage is
 * opened and closed, one line says what would run ("lion-vision: configuration OK: stage
 * vision, model ..., gateway ... over CURVE (...), ..."), and nothing is bound or connected.
 * With --ready-file, the file exists exactly while the loop serves. Exit status: 0 after a
 * clean shutdown (or a check that passed), 1 when the model or the loop failed, 2 for bad
 * options, key files or the --insecure rule. */
int worker_main(const worker_service *svc, int argc, char **argv);

#endif
