#include "tap_watch.h"

#include <signal.h>
#include <string.h>

#include "clock.h"
#include "curve.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) { stop_requested = 1; }

static int watch_loop(const tap_watch_options *o, void *sub, tap_watch_fn fn, void *ctx, lion_status *st) {
    int64_t end = o->timeout_ms > 0 ? clock_mono_us() + (int64_t)o->timeout_ms * 1000 : 0;
    long seen = 0;
    while (!stop_requested && (o->count <= 0 || seen < o->count)) {
        long wait_ms = 100; /* the stop flag is polled, too */
        if (end) {
            int64_t left = (end - clock_mono_us()) / 1000;
            if (left <= 0) break;
            if (left < wait_ms) wait_ms = (long)left;
        }
        zmq_pollitem_t item = {sub, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, wait_ms) <= 0) continue;
        tap_message tm;
        lion_status mst;
        if (tap_message_recv(sub, &tm, ENVELOPE_DONTWAIT, &mst) != 0) {
            if (mst.code != LION_EUNAVAILABLE) fprintf(stderr, "lion-tap: skipped a tap message: %s\n", mst.msg);
            tap_message_close(&tm);
            continue;
        }
        int stop = 0;
        if (tap_filter_match(&o->filter, &tm.topic)) {
            seen++;
            stop = fn(ctx, &tm, st);
        }
        tap_message_close(&tm);
        if (stop) return -1;
    }
    if (o->count > 0 && seen < o->count) {
        fprintf(stderr, "lion-tap: %ld of %ld messages before %s\n", seen, o->count,
                stop_requested ? "the signal" : "the timeout");
        return 1;
    }
    return 0;
}

/* The tap carries users' images and prompts: CURVE when given keys, and no gateway on
 * another machine without it unless --insecure. */
static int secure_link(void *sub, const tap_watch_options *o, lion_status *st) {
    if (!o->curve_server_key && !o->curve_key) {
        if (curve_endpoint_is_local(o->endpoint) || o->insecure) return 0;
        return lion_fail(st, LION_EINVAL,
                         "%s is on another machine: give --curve-server-key and --curve-key, or --insecure", o->endpoint);
    }
    if (!o->curve_server_key || !o->curve_key)
        return lion_fail(st, LION_EINVAL, "CURVE needs both --curve-server-key and --curve-key");
    char server[CURVE_KEY_TEXT];
    curve_keypair own;
    if (curve_public_load(o->curve_server_key, server, st) != 0 || curve_keypair_load(o->curve_key, &own, st) != 0)
        return -1;
    int rc = curve_client_setup(sub, server, &own, st);
    memset(&own, 0, sizeof own);
    return rc;
}

int tap_watch_run(const tap_watch_options *o, tap_watch_fn fn, void *ctx, lion_status *st) {
    if (o->filter.stage && !lion_stage_from_name(o->filter.stage))
        return lion_fail(st, LION_EINVAL, "unknown stage '%s' (vision, tagger, aggregator, llm)", o->filter.stage);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    void *zctx = zmq_ctx_new();
    void *sub = zmq_socket(zctx, ZMQ_SUB);
    int linger = 0;
    zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof linger);
    /* the stage filter is a topic prefix, so the gateway does not even send the rest */
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s/%s%s", o->data ? "data" : "meta", o->filter.stage ? o->filter.stage : "",
             o->filter.stage ? "/" : "");
    int rc;
    if (secure_link(sub, o, st) != 0)
        rc = -1;
    else if (zmq_setsockopt(sub, ZMQ_SUBSCRIBE, prefix, strlen(prefix)) != 0 || zmq_connect(sub, o->endpoint) != 0)
        rc = lion_fail(st, LION_EINVAL, "cannot subscribe to %s: %s", o->endpoint, zmq_strerror(zmq_errno()));
    else
        rc = watch_loop(o, sub, fn, ctx, st);
    zmq_close(sub);
    zmq_ctx_term(zctx);
    return rc;
}
