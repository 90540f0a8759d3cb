/* batch_run.h - one batch run: the requests sent to the gateways, N in flight (libcurl's
 * multi interface), one line per request written to --out, the summary at the end.
 *
 * A request is retried, up to --retries times in all, when the gateway answers 429 or 503
 * (after its Retry-After) and when the transfer fails in transport: connection refused or
 * reset, nothing or half an answer, a timeout (exponential backoff with jitter from 250 ms,
 * each wait capped by --max-retry-wait-ms), so that a gateway restarted mid-run costs
 * nothing. A gateway that fails in transport is left alone for a while (the same backoff,
 * growing while it keeps failing) and the requests go round robin to the others; when
 * every gateway is down they wait for the first to come back. When a request has used all
 * its retries on transport errors and no gateway is up, no new request is started: the
 * ones in flight finish and the run ends, the rest for --resume. */
#ifndef LION_BATCH_RUN_H
#define LION_BATCH_RUN_H

#include "batch_request.h"
#include "progress.h"

#define BATCH_MAX_GATEWAYS 16

typedef struct batch_options {
    char *gateways[BATCH_MAX_GATEWAYS]; /* base URLs (owned), without a trailing '/' */
    int n_gateways;
    const char *requests;               /* the requests file, NULL with --images */
    const char *images, *instruction, *task;
    const char *model; /* --model: the gateway's model for requests that name none */
    const char *params; /* --params: a JSON object of fields for requests that lack them */
    const char *out, *draw_dir;         /* out NULL: stdout */
    int concurrency, retries, timeout_ms, max_retry_wait_ms, check, resume;
    progress_mode progress;
    const char *api_key_file;           /* --api-key-file: the key is its first key line */
    char *authorization;                /* "Authorization: Bearer KEY" from it (owned), or NULL */
} batch_options;

/* Runs the batch. Returns 0 when every request got its answer (and, with --check, every
 * answer matched, those already in --out included), 1 when not, 2 when the run could not
 * start (--out, --draw). */
int batch_run_all(const batch_options *o, const batch_requests *reqs);

#endif
