/* worker_main.h - the main() every stage service shares: parse the worker options, set
 * logging and threads, open the stage's model, run the worker loop, close.
 *
 * A service supplies its name, its stage, and how to open and close its model; its own
 * main.c is then a few lines (services/<stage>/main.c). */
#ifndef LION_WORKER_MAIN_H
#define LION_WORKER_MAIN_H

#include "worker.h"

/* Without --model (or LION_MODEL) services load the embedded tiny model. */
#define WORKER_DEFAULT_MODEL "models/tiny-lion"

typedef struct worker_service {
    const char *name;  /* "vision": logs, trace hops, replica ids, "lion-vision" in usage */
    int stage;         /* Lion__Stage */
    /* Opens the stage from cfg (model_dir already defaulted, max_batch, threads); returns
     * the ctx given to process, or NULL with st filled. */
    void *(*open)(const worker_config *cfg, lion_status *st);
    void (*close)(void *ctx);
    worker_process_fn process;
    void (*cache_stats)(void *ctx, uint64_t *hits, uint64_t *misses); /* optional, see worker_stage */
    const char *extra_usage; /* lines printed after the shared options by --help, or NULL */
} worker_service;

/* Exit status: 0 after a clean shutdown, 1 when the model or the loop failed, 2 for bad
 * options. */
int worker_main(const worker_service *svc, int argc, char **argv);

#endif
