/* tap.c - the XPUB endpoint that shows every job and answer (docs/wire-protocol.md,
 * "Message taps"): [topic][envelope][tensor frames, data/ topics only], topic
 * "<meta|data>/<stage>/<in|out>/<request id>". Tensor frames are shared with the message
 * that goes to or came from the worker (zmq_msg_copy counts references), and data/
 * messages are only built while some subscription would receive them. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "gateway_impl.h"
#include "log.h"

static void on_poll(uv_poll_t *h, int status, int events) { tap_drain((tap *)h->data); }

int tap_open(tap *t, gateway *gw, const char *endpoint, lion_status *st) {
    memset(t, 0, sizeof *t);
    if (!endpoint) return 0;
    t->pub = zmq_socket(gw->zctx, ZMQ_XPUB);
    if (!t->pub) return lion_fail(st, LION_EIO, "tap: zmq_socket: %s", zmq_strerror(errno));
    int zero = 0;
    zmq_setsockopt(t->pub, ZMQ_LINGER, &zero, sizeof zero);
    if (zap_secure(gw, t->pub, "taps", st) != 0) return -1;
    if (zmq_bind(t->pub, endpoint) != 0)
        return lion_fail(st, LION_EIO, "tap endpoint %s: cannot bind: %s", endpoint, zmq_strerror(errno));
    int fd;
    size_t len = sizeof fd;
    zmq_getsockopt(t->pub, ZMQ_FD, &fd, &len);
    uv_poll_init(gw->loop, &t->poll, fd);
    t->poll.data = t;
    uv_poll_start(&t->poll, UV_READABLE, on_poll);
    t->polling = 1;
    log_info("taps published on %s", endpoint);
    return 0;
}

void tap_close(tap *t) {
    if (t->polling) uv_close((uv_handle_t *)&t->poll, NULL);
    t->polling = 0;
    if (t->pub) zmq_close(t->pub);
    t->pub = NULL;
}

/* Whether a subscription prefix matches some data/ topic: "data/llm/" does, and so do
 * "", "d", "da", "dat" and "data" (prefixes of every data/ topic). */
static int matches_data(const char *prefix, size_t len) {
    static const char data[] = "data/";
    if (len <= 5) return memcmp(prefix, data, len) == 0;
    return memcmp(prefix, data, 5) == 0;
}

/* XPUB hands us one message per new or dropped subscription (duplicates of a prefix that
 * is already subscribed are filtered by ZeroMQ, so counting them up and down is exact). */
void tap_drain(tap *t) {
    if (!t->pub) return;
    for (;;) {
        int events = 0;
        size_t len = sizeof events;
        if (zmq_getsockopt(t->pub, ZMQ_EVENTS, &events, &len) != 0 || !(events & ZMQ_POLLIN)) return;
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, t->pub, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return;
        }
        const char *b = zmq_msg_data(&m);
        size_t n = zmq_msg_size(&m);
        if (n >= 1 && (b[0] == 0 || b[0] == 1) && matches_data(b + 1, n - 1)) {
            t->data_subscriptions += b[0] == 1 ? 1 : -1;
            if (t->data_subscriptions < 0) t->data_subscriptions = 0;
            log_info("tap: %s data subscription '%.*s' (%d now)", b[0] == 1 ? "new" : "dropped", (int)(n - 1 > 64 ? 64 : n - 1),
                     b + 1, t->data_subscriptions);
        }
        zmq_msg_close(&m);
    }
}

/* Sends topic + copies of frames[0..n) (n == 1: the envelope alone). */
static void publish(tap *t, const char *topic, zmq_msg_t *frames, int n) {
    if (zmq_send(t->pub, topic, strlen(topic), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return;
    for (int i = 0; i < n; i++) {
        zmq_msg_t copy;
        zmq_msg_init(&copy);
        zmq_msg_copy(&copy, &frames[i]);
        /* a PUB socket never blocks: past its high-water mark a subscriber misses messages */
        if (zmq_msg_send(&copy, t->pub, ZMQ_DONTWAIT | (i + 1 < n ? ZMQ_SNDMORE : 0)) < 0) {
            zmq_msg_close(&copy);
            return;
        }
    }
}

void tap_publish(tap *t, int stage, int outgoing, const char *request_id, zmq_msg_t *frames, int n) {
    if (!t->pub || n < 1) return;
    tap_drain(t); /* subscriptions first, so that a new data/ subscriber gets this message */
    char topic[256];
    snprintf(topic, sizeof topic, "meta/%s/%s/%s", lion_stage_name(stage), outgoing ? "out" : "in", request_id);
    publish(t, topic, frames, 1);
    if (t->data_subscriptions > 0) {
        memcpy(topic, "data", 4);
        publish(t, topic, frames, n);
    }
    t->published++;
}
