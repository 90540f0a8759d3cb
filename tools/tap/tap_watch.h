/* tap_watch.h - subscribing to a gateway's tap: lion-tap watch and dump. */
#ifndef LION_TAP_WATCH_H
#define LION_TAP_WATCH_H

#include <stdio.h>

#include "tap_message.h"

typedef struct tap_watch_options {
    const char *endpoint;  /* the gateway's --tap endpoint */
    tap_filter filter;     /* stage: a topic prefix the publisher filters; request: here */
    int data;              /* subscribe to data/ (tensor payloads) instead of meta/ */
    long count;            /* stop after this many messages; 0: no limit */
    long timeout_ms;       /* stop after this long in all; 0: no limit */
    const char *curve_server_key; /* the gateway's public key file: CURVE on the link */
    const char *curve_key;        /* this reader's key pair file (in the gateway's --tap-keys) */
    int insecure;                 /* a gateway on another machine without CURVE, on purpose */
} tap_watch_options;

/* Called for each message that passes the filter; a non-zero return stops the watch. */
typedef int (*tap_watch_fn)(void *ctx, tap_message *tm, lion_status *st);

/* Subscribes and calls fn per message until count, timeout or SIGINT/SIGTERM. Malformed
 * messages are reported on stderr and skipped. Returns 0, 1 when --count was given and
 * fewer messages came before the timeout, -1 with st on failure. */
int tap_watch_run(const tap_watch_options *o, tap_watch_fn fn, void *ctx, lion_status *st);

#endif
