/* tap_replay.h - sends a dumped JOB to a live worker and checks that its answer
 * reproduces the dumped one. lion-tap replay binds the stage's ROUTER as the gateway
 * would; the worker under test connects to it (lion-vision --gateway ENDPOINT). */
#ifndef LION_TAP_REPLAY_H
#define LION_TAP_REPLAY_H

#include <stdio.h>

#include "status.h"

typedef struct tap_replay_options {
    const char *dump_path;
    const char *request_id;
    const char *stage;
    const char *bind;     /* ROUTER endpoint, e.g. tcp://127.0.0.1:5599 */
    const char *out_path; /* NULL, or a dump file for the answer */
    int timeout_ms;       /* for the worker to connect, and again for its answer */
} tap_replay_options;

/* Returns 0 when the answer is identical to the dumped one (or there was none dumped and
 * the answer is a RESULT), 1 when it differs (the difference printed on out), -1 with st
 * filled when the replay could not be done (no such JOB, no worker, no answer). */
int tap_replay_run(const tap_replay_options *o, FILE *out, lion_status *st);

#endif
