/* zap.c - who may connect to the gateway's ZeroMQ endpoints (CURVE + ZAP, RFC 27).
 *
 * With --curve-key, every stage ROUTER and both tap XPUBs are CURVE servers with the
 * gateway's secret key, and libzmq asks this ZAP handler (a REP socket on
 * inproc://zeromq.zap.01, polled by the libuv loop like the other sockets) about every
 * client's public key: a worker's against --worker-keys (domain "workers"), a reader of the
 * --tap endpoint (meta/ and data/) against --tap-keys ("taps"), a reader of the --tap-meta
 * endpoint (meta/ only) against --tap-meta-keys or --tap-keys ("taps-meta": whoever may
 * read the payloads may read the flow). A key not on its list is refused during the
 * handshake: it never gets a job or a tap message. SIGHUP reloads the three lists. Without
 * --curve-key the endpoints must stay on this machine (ipc://, loopback) unless --insecure
 * is given, which is logged loudly. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gateway_impl.h"
#include "log.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"

/* All three lists or none: a reload that fails half-way keeps the old ones. */
static int load_lists(gateway *gw, lion_status *st) {
    zap *z = &gw->zap;
    curve_allowlist workers = {0}, taps = {0}, tap_meta = {0};
    if (curve_allowlist_load(&workers, gw->cfg.worker_keys, st) != 0 ||
        (gw->cfg.tap_keys && curve_allowlist_load(&taps, gw->cfg.tap_keys, st) != 0) ||
        (gw->cfg.tap_meta_keys && curve_allowlist_load(&tap_meta, gw->cfg.tap_meta_keys, st) != 0)) {
        curve_allowlist_free(&workers);
        curve_allowlist_free(&taps);
        curve_allowlist_free(&tap_meta);
        return -1;
    }
    curve_allowlist_free(&z->workers);
    curve_allowlist_free(&z->taps);
    curve_allowlist_free(&z->tap_meta);
    z->workers = workers;
    z->taps = taps;
    z->tap_meta = tap_meta;
    log_info("CURVE: %d worker keys, %d tap reader keys (meta/ and data/), %d meta-only tap reader keys", workers.n,
             taps.n, tap_meta.n);
    return 0;
}

static void on_poll(uv_poll_t *h, int status, int events) { zap_drain(h->data); }

/* Without CURVE, a link that leaves the machine carries images and prompts in the clear and
 * lets anyone who reaches it take jobs: only with --insecure. */
static int check_plain_endpoints(gateway *gw, lion_status *st) {
    const char *eps[LION_STAGE_SLOTS + 2] = {0};
    int n = 0;
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++) eps[n++] = gw->cfg.stage_endpoint[s];
    if (gw->cfg.tap_endpoint) eps[n++] = gw->cfg.tap_endpoint;
    if (gw->cfg.tap_meta_endpoint) eps[n++] = gw->cfg.tap_meta_endpoint;
    for (int i = 0; i < n; i++) {
        if (curve_endpoint_is_local(eps[i])) continue;
        if (!gw->cfg.insecure)
            return lion_fail(st, LION_EINVAL,
                             "%s is reachable from other machines: give --curve-key and --worker-keys (lion-keygen), "
                             "or --insecure to run it without CURVE on purpose",
                             eps[i]);
        log_warn("INSECURE: %s without CURVE (--insecure): any process that reaches it can take jobs and read taps",
                 eps[i]);
    }
    return 0;
}

int zap_open(gateway *gw, lion_status *st) {
    zap *z = &gw->zap;
    memset(z, 0, sizeof *z);
    if (!gw->cfg.curve_key) return check_plain_endpoints(gw, st);
    if (!gw->cfg.worker_keys) return lion_fail(st, LION_EINVAL, "--curve-key needs --worker-keys FILE|DIR");
    if (gw->cfg.tap_endpoint && !gw->cfg.tap_keys)
        return lion_fail(st, LION_EINVAL, "--curve-key with --tap needs --tap-keys FILE|DIR (the readers allowed)");
    /* without --tap-meta, the readers of --tap-meta-keys would be admitted nowhere (--tap
     * refuses them): a mistake in the set-up, said at start rather than found later */
    if (gw->cfg.tap_meta_keys && !gw->cfg.tap_meta_endpoint)
        return lion_fail(st, LION_EINVAL, "--tap-meta-keys needs --tap-meta EP (the endpoint that carries meta/ only)");
    if (gw->cfg.tap_meta_endpoint && !gw->cfg.tap_meta_keys && !gw->cfg.tap_keys)
        return lion_fail(st, LION_EINVAL,
                         "--curve-key with --tap-meta needs --tap-meta-keys FILE|DIR (the meta-only readers allowed)");
    if (curve_keypair_load(gw->cfg.curve_key, &z->server, st) != 0 || load_lists(gw, st) != 0) return -1;
    z->rep = zmq_socket(gw->zctx, ZMQ_REP);
    if (!z->rep || zmq_bind(z->rep, ZAP_ENDPOINT) != 0)
        return lion_fail(st, LION_EIO, "ZAP handler: %s", zmq_strerror(errno));
    int fd;
    size_t len = sizeof fd;
    zmq_getsockopt(z->rep, ZMQ_FD, &fd, &len);
    uv_poll_init(gw->loop, &z->poll, fd);
    z->poll.data = gw;
    uv_poll_start(&z->poll, UV_READABLE, on_poll);
    z->polling = 1;
    z->on = 1;
    log_info("CURVE on every ZeroMQ link; gateway public key %s", z->server.public_key);
    return 0;
}

int zap_secure(gateway *gw, void *sock, const char *domain, lion_status *st) {
    if (!gw->zap.on) return 0;
    return curve_server_setup(sock, &gw->zap.server, domain, st);
}

void zap_reload(gateway *gw) {
    if (!gw->zap.on) return;
    lion_status st;
    if (load_lists(gw, &st) != 0) log_error("SIGHUP: the allow-lists were not reloaded (the old ones stay): %s", st.msg);
}

/* One ZAP request: [version][request id][domain][address][identity][mechanism][key...]. */
static void answer_one(gateway *gw) {
    zap *z = &gw->zap;
    zmq_msg_t part[8];
    int n = 0, more = 1;
    while (more && n < 8) {
        zmq_msg_init(&part[n]);
        if (zmq_msg_recv(&part[n], z->rep, n ? 0 : ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part[n]);
            break;
        }
        more = zmq_msg_more(&part[n]);
        n++;
    }
    if (n == 0) return;
    while (more) { /* a request longer than any ZAP request: drop the rest */
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        zmq_msg_recv(&extra, z->rep, 0);
        more = zmq_msg_more(&extra);
        zmq_msg_close(&extra);
    }
    int ok = 0;
    const char *why = "malformed ZAP request";
    char domain[32] = "";
    if (n >= 7) {
        size_t dl = zmq_msg_size(&part[2]) < sizeof domain - 1 ? zmq_msg_size(&part[2]) : sizeof domain - 1;
        memcpy(domain, zmq_msg_data(&part[2]), dl);
        domain[dl] = 0;
        const int curve = zmq_msg_size(&part[5]) == 5 && !memcmp(zmq_msg_data(&part[5]), "CURVE", 5);
        const int workers = !strcmp(domain, "workers"), taps = !strcmp(domain, "taps"),
                  tap_meta = !strcmp(domain, "taps-meta");
        if (!curve || zmq_msg_size(&part[6]) != 32) {
            why = "not CURVE";
        } else if (!workers && !taps && !tap_meta) {
            why = "unknown domain";
        } else {
            const unsigned char *key = zmq_msg_data(&part[6]);
            /* the meta endpoint also admits the data readers: they may see everything */
            ok = workers  ? curve_allowlist_has(&z->workers, key)
                 : taps   ? curve_allowlist_has(&z->taps, key)
                          : curve_allowlist_has(&z->tap_meta, key) || curve_allowlist_has(&z->taps, key);
            if (!ok) why = "key not allowed";
        }
    }
    if (!ok) {
        char key[CURVE_KEY_TEXT] = "?";
        if (n >= 7 && zmq_msg_size(&part[6]) == 32) zmq_z85_encode(key, zmq_msg_data(&part[6]), 32);
        z->denied++;
        log_warn("ZAP: refused a %s client with key %s: %s", domain[0] ? domain : "?", key, why);
    }
    /* [version][request id][status code][status text][user id][metadata] */
    zmq_send(z->rep, "1.0", 3, ZMQ_SNDMORE);
    if (n >= 2) zmq_send(z->rep, zmq_msg_data(&part[1]), zmq_msg_size(&part[1]), ZMQ_SNDMORE);
    else zmq_send(z->rep, "", 0, ZMQ_SNDMORE);
    zmq_send(z->rep, ok ? "200" : "400", 3, ZMQ_SNDMORE);
    zmq_send(z->rep, ok ? "OK" : why, ok ? 2 : strlen(why), ZMQ_SNDMORE);
    zmq_send(z->rep, domain, strlen(domain), ZMQ_SNDMORE);
    zmq_send(z->rep, "", 0, 0);
    for (int i = 0; i < n; i++) zmq_msg_close(&part[i]);
}

void zap_drain(gateway *gw) {
    zap *z = &gw->zap;
    if (!z->rep) return;
    for (;;) {
        int events = 0;
        size_t len = sizeof events;
        if (zmq_getsockopt(z->rep, ZMQ_EVENTS, &events, &len) != 0 || !(events & ZMQ_POLLIN)) return;
        answer_one(gw);
    }
}

void zap_close(gateway *gw) {
    zap *z = &gw->zap;
    if (z->polling) uv_close((uv_handle_t *)&z->poll, NULL);
    z->polling = 0;
    if (z->rep) zmq_close(z->rep);
    z->rep = NULL;
    curve_allowlist_free(&z->workers);
    curve_allowlist_free(&z->taps);
    curve_allowlist_free(&z->tap_meta);
    memset(&z->server, 0, sizeof z->server);
}
