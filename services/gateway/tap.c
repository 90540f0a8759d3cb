/* tap.c - the XPUB endpoints that show every job and answer (docs/wire-protocol.md,
 * "Message taps"): [topic][envelope][tensor frames, data/ topics only], topic
 * "<meta|data>/<stage>/<in|out>/<request id>". Tensor frames are shared with the message
 * that goes to or came from the worker (zmq_msg_copy counts references), and data/
 * messages are only built while some subscription would receive them.
 *
 * Two endpoints, so that a reader may be allowed the flow (meta/) without the users' images
 * and tensors (data/): --tap publishes both classes to the readers of --tap-keys, --tap-meta
 * publishes meta/ only, to the readers of --tap-meta-keys (zap.c admits --tap-keys there
 * too). A meta-only reader cannot get data/ whatever it subscribes to: nothing but meta/ is
 * ever sent on its endpoint, and the ZAP handler keeps it off the other.
 *
 * Why not one endpoint whose subscriptions the gateway filters by the reader's key
 * (ZMQ_XPUB_MANUAL, reading each subscription's "User-Id" set by ZAP)? With libzmq 4.3.4
 * (Debian 12) a manual subscription is applied to the pipe the subscription came from even
 * when that pipe closed before the gateway read it; the socket then keeps a freed pipe
 * (libzmq commit 2df7ab6a, fixed in 4.3.5). A reader that subscribes and disconnects at
 * once could crash the gateway. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "gateway_impl.h"
#include "log.h"

static void on_poll(uv_poll_t *h, int status, int events) { tap_drain((tap *)h->data); }

/* One XPUB on endpoint, a CURVE server judged in zap_domain when CURVE is on. */
static int open_socket(tap_socket *s, tap *t, gateway *gw, const char *endpoint, const char *zap_domain,
                       lion_status *st) {
    s->pub = zmq_socket(gw->zctx, ZMQ_XPUB);
    if (!s->pub) return lion_fail(st, LION_EIO, "tap: zmq_socket: %s", zmq_strerror(errno));
    int zero = 0;
    zmq_setsockopt(s->pub, ZMQ_LINGER, &zero, sizeof zero);
    if (zap_secure(gw, s->pub, zap_domain, st) != 0) return -1;
    if (zmq_bind(s->pub, endpoint) != 0)
        return lion_fail(st, LION_EIO, "tap endpoint %s: cannot bind: %s", endpoint, zmq_strerror(errno));
    int fd;
    size_t len = sizeof fd;
    zmq_getsockopt(s->pub, ZMQ_FD, &fd, &len);
    uv_poll_init(gw->loop, &s->poll, fd);
    s->poll.data = t;
    uv_poll_start(&s->poll, UV_READABLE, on_poll);
    s->polling = 1;
    return 0;
}

int tap_open(tap *t, gateway *gw, const char *endpoint, lion_status *st) {
    memset(t, 0, sizeof *t);
    const char *meta_endpoint = gw->cfg.tap_meta_endpoint;
    if (endpoint) {
        if (open_socket(&t->all, t, gw, endpoint, "taps", st) != 0) return -1;
        log_info("taps (meta/ and data/) published on %s", endpoint);
    }
    if (meta_endpoint) {
        if (open_socket(&t->meta, t, gw, meta_endpoint, "taps-meta", st) != 0) return -1;
        log_info("taps (meta/ only) published on %s", meta_endpoint);
    }
    return 0;
}

static void close_socket(tap_socket *s) {
    if (s->polling) uv_close((uv_handle_t *)&s->poll, NULL);
    s->polling = 0;
    if (s->pub) zmq_close(s->pub);
    s->pub = NULL;
}

void tap_close(tap *t) {
    close_socket(&t->all);
    close_socket(&t->meta);
}

/* Whether a subscription prefix matches some data/ topic: "data/llm/" does, and so do
 * "", "d", "da", "dat" and "data" (prefixes of every data/ topic). */
static int matches_data(const char *prefix, size_t len) {
    static const char data[] = "data/";
    if (len <= 5) return memcmp(prefix, data, len) == 0;
    return memcmp(prefix, data, 5) == 0;
}

/* XPUB hands us one message per new or dropped subscription (duplicates of a prefix that
 * is already subscribed are filtered by ZeroMQ, so counting them up and down is exact).
 * The meta endpoint's are read only to keep its edge-triggered descriptor clear (and its
 * queue of them short): nothing is built for them. */
static void drain_socket(tap_socket *s, int counts_data) {
    if (!s->pub) return;
    for (;;) {
        int events = 0;
        size_t len = sizeof events;
        if (zmq_getsockopt(s->pub, ZMQ_EVENTS, &events, &len) != 0 || !(events & ZMQ_POLLIN)) return;
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s->pub, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return;
        }
        const char *b = zmq_msg_data(&m);
        size_t n = zmq_msg_size(&m);
        if (counts_data && n >= 1 && (b[0] == 0 || b[0] == 1) && matches_data(b + 1, n - 1)) {
            s->data_subscriptions += b[0] == 1 ? 1 : -1;
            if (s->data_subscriptions < 0) s->data_subscriptions = 0;
            log_info("tap: %s data subscription '%.*s' (%d now)", b[0] == 1 ? "new" : "dropped", (int)(n - 1 > 64 ? 64 : n - 1),
                     b + 1, s->data_subscriptions);
        }
        zmq_msg_close(&m);
    }
}

void tap_drain(tap *t) {
    drain_socket(&t->all, 1);
    drain_socket(&t->meta, 0);
}

/* Sends topic + copies of frames[0..n) (n == 1: the envelope alone). */
static void publish(void *pub, const char *topic, zmq_msg_t *frames, int n) {
    if (zmq_send(pub, topic, strlen(topic), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return;
    for (int i = 0; i < n; i++) {
        zmq_msg_t copy;
        zmq_msg_init(&copy);
        zmq_msg_copy(&copy, &frames[i]);
        /* a PUB socket never blocks: past its high-water mark a subscriber misses messages */
        if (zmq_msg_send(&copy, pub, ZMQ_DONTWAIT | (i + 1 < n ? ZMQ_SNDMORE : 0)) < 0) {
            zmq_msg_close(&copy);
            return;
        }
    }
}

void tap_publish(tap *t, int stage, int outgoing, const char *request_id, zmq_msg_t *frames, int n) {
    if ((!t->all.pub && !t->meta.pub) || n < 1) return;
    tap_drain(t); /* subscriptions first, so that a new subscriber gets this message */
    char topic[256];
    snprintf(topic, sizeof topic, "meta/%s/%s/%s", lion_stage_name(stage), outgoing ? "out" : "in", request_id);
    if (t->all.pub) publish(t->all.pub, topic, frames, 1);
    if (t->meta.pub) publish(t->meta.pub, topic, frames, 1);
    /* data/ goes to the --tap endpoint only: the meta endpoint's readers may not see it */
    if (t->all.pub && t->all.data_subscriptions > 0) {
        memcpy(topic, "data", 4);
        publish(t->all.pub, topic, frames, n);
    }
    t->published++;
}
