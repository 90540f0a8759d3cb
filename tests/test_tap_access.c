/* Who reads the gateway's taps, with CURVE on (docs/operations.md, "Security"): the real
 * gateway and stub workers (gateway_harness.h), and readers that are SUB sockets of this
 * process with their own key pairs:
 *   - a reader of --tap-keys on --tap gets data/ (with the tensor frames) and meta/;
 *   - the same reader on --tap-meta gets meta/ only, though it subscribes to everything;
 *   - a reader of --tap-meta-keys on --tap-meta, subscribed to "", "d" and "data/", gets
 *     meta/ and not one data/ message; on --tap it is refused and gets nothing;
 *   - a stranger's key, and a reader without CURVE, get nothing on either endpoint;
 *   - a key added to --tap-meta-keys is let in after SIGHUP;
 * and the gateway refuses --tap-meta-keys without --tap-meta, and --tap-meta under CURVE
 * without any list of its readers. */
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <zmq.h>

#include "clock.h"
#include "curve.h"
#include "gateway_harness.h"
#include "testing.h"

extern char **environ;

static char dir[] = "/tmp/lion-tap-access-XXXXXX";

static const char *path_of(const char *name) {
    static char p[16][sizeof dir + 64];
    static int next;
    char *s = p[next++ % 16];
    snprintf(s, sizeof p[0], "%s/%s", dir, name);
    return s;
}

/* name.key and name.pub in the test folder; the public key in pub. */
static void make_keys(const char *name, char pub[CURVE_KEY_TEXT]) {
    char key_path[sizeof dir + 64], pub_path[sizeof dir + 64];
    snprintf(key_path, sizeof key_path, "%s/%s.key", dir, name);
    snprintf(pub_path, sizeof pub_path, "%s/%s.pub", dir, name);
    curve_keypair pair;
    lion_status st;
    CHECK_MSG(curve_keypair_generate(key_path, pub_path, &pair, &st) == 0, "%s", st.msg);
    memcpy(pub, pair.public_key, CURVE_KEY_TEXT);
}

static void write_list(const char *name, const char *keys) {
    FILE *f = fopen(path_of(name), "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs(keys, f);
    fclose(f);
}

/* A tap reader: a SUB socket with key pair `key` (NULL: no CURVE) on endpoint, subscribed to
 * each prefix of the NULL-terminated list. */
typedef struct reader {
    const char *what;
    void *sub;
    int meta, data, data_with_tensors; /* messages by class; data/ ones that carried tensors */
} reader;

static void reader_open(reader *r, void *zctx, const char *what, const char *key, const char *endpoint,
                        const char *const *prefixes) {
    memset(r, 0, sizeof *r);
    r->what = what;
    r->sub = zmq_socket(zctx, ZMQ_SUB);
    int zero = 0;
    zmq_setsockopt(r->sub, ZMQ_LINGER, &zero, sizeof zero);
    if (key) {
        curve_keypair own;
        char server[CURVE_KEY_TEXT];
        lion_status st;
        CHECK(curve_public_load(path_of("gateway.pub"), server, &st) == 0 &&
              curve_keypair_load(path_of(key), &own, &st) == 0 && curve_client_setup(r->sub, server, &own, &st) == 0);
    }
    for (int i = 0; prefixes[i]; i++) zmq_setsockopt(r->sub, ZMQ_SUBSCRIBE, prefixes[i], strlen(prefixes[i]));
    CHECK(zmq_connect(r->sub, endpoint) == 0);
}

/* Reads whatever arrives until timeout_ms pass without a message; counts it. */
static void reader_drain(reader *r, int timeout_ms) {
    zmq_setsockopt(r->sub, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    for (;;) {
        zmq_msg_t topic;
        zmq_msg_init(&topic);
        if (zmq_msg_recv(&topic, r->sub, 0) < 0) {
            zmq_msg_close(&topic);
            return;
        }
        int frames = 1;
        int more = zmq_msg_more(&topic);
        while (more) { /* the rest of the message is already here: no timeout can split it */
            zmq_msg_t part;
            zmq_msg_init(&part);
            zmq_msg_recv(&part, r->sub, 0);
            more = zmq_msg_more(&part);
            zmq_msg_close(&part);
            frames++;
        }
        const char *t = zmq_msg_data(&topic);
        size_t n = zmq_msg_size(&topic);
        if (n >= 5 && !memcmp(t, "meta/", 5)) r->meta++;
        if (n >= 5 && !memcmp(t, "data/", 5)) {
            r->data++;
            r->data_with_tensors += frames > 2; /* topic, envelope, then the tensors */
        }
        zmq_msg_close(&topic);
    }
}

static void reader_reset(reader *r) { r->meta = r->data = r->data_with_tensors = 0; }

static void reader_close(reader *r) { zmq_close(r->sub); }

static double metric(int port, const char *series) {
    reply m;
    double v = -1;
    if (http(port, "GET", "/metrics", NULL, &m) == 0) v = metric_value(m.body ? m.body : "", series);
    reply_free(&m);
    return v;
}

/* One generate request through the stub pipeline; 1 when it was answered 200. */
static int one_request(int port) {
    char *body = generate_body("tapped", NULL);
    reply r;
    int ok = http(port, "POST", "/v1/generate", body, &r) == 0 && r.status == 200;
    if (ok) reply_free(&r);
    free(body);
    return ok;
}

/* Exit status of the gateway started with argv, which must stop by itself (a refused
 * configuration); -1 when it does not within 10 s. */
static int gateway_exit_status(const char *const *argv) {
    pid_t pid = -1;
    if (posix_spawn(&pid, argv[0], NULL, NULL, (char *const *)argv, environ) != 0) return -1;
    int status = 0;
    for (int i = 0; i < 500; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        sleep_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

static void run(void) {
    CHECK(mkdtemp(dir) != NULL);
    char gw_pub[CURVE_KEY_TEXT], worker_pub[CURVE_KEY_TEXT], data_pub[CURVE_KEY_TEXT], meta_pub[CURVE_KEY_TEXT],
        stranger_pub[CURVE_KEY_TEXT], late_pub[CURVE_KEY_TEXT], text[512];
    make_keys("gateway", gw_pub);
    make_keys("worker", worker_pub);
    make_keys("data-reader", data_pub);
    make_keys("meta-reader", meta_pub);
    make_keys("stranger", stranger_pub);
    make_keys("late", late_pub);
    snprintf(text, sizeof text, "%s\n", worker_pub);
    write_list("workers.list", text);
    snprintf(text, sizeof text, "# readers of the payloads\n%s\n", data_pub);
    write_list("taps.list", text);
    snprintf(text, sizeof text, "%s\n", meta_pub);
    write_list("tap-meta.list", text);

    int port = free_port();
    char listen[64], ep[5][64], tap_ep[64], meta_ep[64], gw_bin[4096];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    for (int s = 1; s <= 4; s++) snprintf(ep[s], sizeof ep[s], "tcp://127.0.0.1:%d", free_port());
    snprintf(tap_ep, sizeof tap_ep, "tcp://127.0.0.1:%d", free_port());
    snprintf(meta_ep, sizeof meta_ep, "tcp://127.0.0.1:%d", free_port());
    const char *bin_dir = getenv("LION_BIN_DIR");
    snprintf(gw_bin, sizeof gw_bin, "%s/lion-gateway", bin_dir ? bin_dir : "build/services");
    const char *argv[] = {gw_bin, "--listen", listen, "--vision", ep[1], "--tagger", ep[2], "--aggregator", ep[3],
                          "--llm", ep[4], "--tap", tap_ep, "--tap-meta", meta_ep, "--heartbeat-ms", "100",
                          "--curve-key", path_of("gateway.key"), "--worker-keys", path_of("workers.list"),
                          "--tap-keys", path_of("taps.list"), "--tap-meta-keys", path_of("tap-meta.list"), NULL};
    CHECK(spawn(argv) > 0);
    static const char *const stages[] = {"", "vision", "tagger", "aggregator", "llm"};
    const char *worker_curve[] = {"--curve-server-key", path_of("gateway.pub"), "--curve-key", path_of("worker.key"),
                                  NULL};
    for (int s = 1; s <= 4; s++) spawn_stub_with(stages[s], ep[s], stages[s], worker_curve);
    if (wait_ready(port, 200, "\"llm\":1", 15000) != 0) {
        CHECK_MSG(0, "the gateway and its CURVE workers did not become ready");
        stop_all();
        return;
    }

    static const char *const everything[] = {"", NULL};
    static const char *const greedy[] = {"", "d", "data/", "data/vision/", NULL};
    void *zctx = zmq_ctx_new();
    enum { DATA_ON_TAP, DATA_ON_META, META_ON_META, META_ON_TAP, STRANGER_ON_TAP, STRANGER_ON_META, PLAIN_ON_TAP,
           PLAIN_ON_META, LATE_ON_META, READERS };
    reader rd[READERS];
    reader_open(&rd[DATA_ON_TAP], zctx, "data reader on --tap", "data-reader.key", tap_ep, everything);
    reader_open(&rd[DATA_ON_META], zctx, "data reader on --tap-meta", "data-reader.key", meta_ep, everything);
    reader_open(&rd[META_ON_META], zctx, "meta-only reader on --tap-meta", "meta-reader.key", meta_ep, greedy);
    reader_open(&rd[META_ON_TAP], zctx, "meta-only reader on --tap", "meta-reader.key", tap_ep, greedy);
    reader_open(&rd[STRANGER_ON_TAP], zctx, "stranger on --tap", "stranger.key", tap_ep, everything);
    reader_open(&rd[STRANGER_ON_META], zctx, "stranger on --tap-meta", "stranger.key", meta_ep, everything);
    reader_open(&rd[PLAIN_ON_TAP], zctx, "reader without CURVE on --tap", NULL, tap_ep, everything);
    reader_open(&rd[PLAIN_ON_META], zctx, "reader without CURVE on --tap-meta", NULL, meta_ep, everything);
    reader_open(&rd[LATE_ON_META], zctx, "key not yet on a list, on --tap-meta", "late.key", meta_ep, everything);

    /* The refused handshakes have happened (four keys refused by ZAP), and the admitted
     * readers are subscribed: requests until each of them has seen one. */
    int64_t end = clock_mono_us() + 10000000;
    while (metric(port, "lion_zap_denied_total") < 4 && clock_mono_us() < end) sleep_ms(50);
    CHECK_MSG(metric(port, "lion_zap_denied_total") >= 4, "ZAP refused %g clients, expected the 4 unknown ones",
              metric(port, "lion_zap_denied_total"));
    for (int tries = 0; tries < 50; tries++) {
        CHECK(one_request(port));
        for (int i = 0; i < READERS; i++) reader_drain(&rd[i], 100);
        if (rd[DATA_ON_TAP].data && rd[DATA_ON_META].meta && rd[META_ON_META].meta) break;
    }
    for (int i = 0; i < READERS; i++) reader_reset(&rd[i]);

    /* the measured requests */
    for (int i = 0; i < 3; i++) CHECK(one_request(port));
    for (int i = 0; i < READERS; i++) reader_drain(&rd[i], 300);
    /* each request: 4 JOBs out and 4 RESULTs in, one meta/ message each */
    CHECK_MSG(rd[DATA_ON_TAP].meta >= 24 && rd[DATA_ON_TAP].data >= 24, "data reader on --tap: %d meta/, %d data/",
              rd[DATA_ON_TAP].meta, rd[DATA_ON_TAP].data);
    CHECK_MSG(rd[DATA_ON_TAP].data_with_tensors > 0, "no data/ message carried tensor frames");
    CHECK_MSG(rd[DATA_ON_META].meta >= 24 && rd[DATA_ON_META].data == 0, "data reader on --tap-meta: %d meta/, %d data/",
              rd[DATA_ON_META].meta, rd[DATA_ON_META].data);
    CHECK_MSG(rd[META_ON_META].meta >= 24 && rd[META_ON_META].data == 0,
              "meta-only reader subscribed to everything: %d meta/, %d data/", rd[META_ON_META].meta,
              rd[META_ON_META].data);
    for (int i = META_ON_TAP; i < READERS; i++)
        CHECK_MSG(rd[i].meta == 0 && rd[i].data == 0, "%s: %d meta/, %d data/", rd[i].what, rd[i].meta, rd[i].data);

    /* SIGHUP: the late key joins the meta-only readers (a new connection is judged by the new
     * list) */
    snprintf(text, sizeof text, "%s\n%s\n", meta_pub, late_pub);
    write_list("tap-meta.list", text);
    kill(spawned(0), SIGHUP);
    reader late;
    reader_open(&late, zctx, "key added on SIGHUP, on --tap-meta", "late.key", meta_ep, greedy);
    for (int tries = 0; tries < 50 && !late.meta; tries++) {
        sleep_ms(tries ? 100 : 300); /* the reload, then the handshake */
        CHECK(one_request(port));
        reader_drain(&late, 100);
    }
    CHECK_MSG(late.meta > 0 && late.data == 0, "after SIGHUP the added meta-only key got %d meta/, %d data/", late.meta,
              late.data);
    reader_close(&late);
    for (int i = 0; i < READERS; i++) reader_close(&rd[i]);
    zmq_ctx_term(zctx);
    CHECK_EQ_INT(stop_all(), 0);

    /* configurations refused at start */
    const char *no_meta_ep[] = {gw_bin, "--listen", listen, "--vision", ep[1], "--tagger", ep[2], "--aggregator", ep[3],
                                "--llm", ep[4], "--tap", tap_ep, "--curve-key", path_of("gateway.key"),
                                "--worker-keys", path_of("workers.list"), "--tap-keys", path_of("taps.list"),
                                "--tap-meta-keys", path_of("tap-meta.list"), NULL};
    CHECK_MSG(gateway_exit_status(no_meta_ep) == 1, "--tap-meta-keys without --tap-meta was accepted");
    const char *no_readers[] = {gw_bin, "--listen", listen, "--vision", ep[1], "--tagger", ep[2], "--aggregator", ep[3],
                                "--llm", ep[4], "--tap-meta", meta_ep, "--curve-key", path_of("gateway.key"),
                                "--worker-keys", path_of("workers.list"), NULL};
    CHECK_MSG(gateway_exit_status(no_readers) == 1, "--tap-meta under CURVE without a list of readers was accepted");

    char cmd[sizeof dir + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

int main(int argc, char **argv) { return gateway_harness_main(argc, argv, run); }
