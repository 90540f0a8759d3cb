/* The gateway under failure, with stub workers (gateway_harness.h): no worker, overload
 * (429 with Retry-After), a request's deadline, a killed llm worker whose jobs a second
 * replica answers, a slow worker's late answers dropped, a clean shutdown. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <nettle/base64.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <strings.h>
#include <unistd.h>

#include "clock.h"
#include "curve.h"
#include "envelope.h"
#include "fake_gateway.h"
#include "gateway_impl.h"
#include "log.h"
#include "gateway_harness.h"
#include "testing.h"
#include "worker.h"

extern char **environ;
/* ---------------------------------------------------------------------------------------- */
/* scenario 2: no worker, overload, deadline, a killed worker                                   */

typedef struct pending_call {
    int fd;
    reply r;
    int got;
} pending_call;

static void scenario_failures(void) {
    int port = free_port();
    char listen[64], ep[5][64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    for (int s = 1; s <= 4; s++) snprintf(ep[s], sizeof ep[s], "tcp://127.0.0.1:%d", free_port());
    char gw_bin[4096];
    const char *bin_dir = getenv("LION_BIN_DIR");
    snprintf(gw_bin, sizeof gw_bin, "%s/lion-gateway", bin_dir ? bin_dir : "build/services");
    const char *argv[] = {gw_bin, "--listen", listen, "--vision", ep[1], "--tagger", ep[2], "--aggregator", ep[3],
                          "--llm", ep[4], "--max-queue", "1", "--heartbeat-ms", "100", "--worker-timeout-ms", "600",
                          "--retry-after-s", "2", "--idle-timeout-ms", "400", NULL};
    CHECK(spawn(argv) > 0);
    spawn_stub("vision", ep[1], "vision-slow", "300", "1");
    spawn_stub("tagger", ep[2], "tagger-1", "0", "4");
    spawn_stub("aggregator", ep[3], "aggregator-1", "0", "4");
    if (wait_ready(port, 503, "no live llm worker", 15000) != 0) {
        CHECK_MSG(0, "the gateway did not see the first three stages");
        stop_all();
        return;
    }
    /* a stage without workers: 503 at once */
    char *body = generate_body("anyone", NULL);
    reply r;
    CHECK(http(port, "POST", "/v1/generate", body, &r) == 0);
    CHECK_EQ_INT(r.status, 503);
    CHECK_CONTAINS(json_str(r.json, "error.message"), "no live llm worker");
    CHECK_CONTAINS(header_value(&r, "Retry-After"), "2");
    reply_free(&r);

    pid_t slow_llm = spawn_stub("llm", ep[4], "llm-slow", "2000", "4");
    if (wait_ready(port, 200, "\"llm\":1", 10000) != 0) {
        CHECK_MSG(0, "the llm worker did not register");
        stop_all();
        return;
    }
    /* overload: vision takes one job at a time and the queue holds one more */
    pending_call calls[4];
    size_t len;
    char *req = format_request("POST", "/v1/generate", body, &len);
    for (int i = 0; i < 4; i++) {
        calls[i].fd = http_connect(port);
        calls[i].got = 0;
        CHECK(calls[i].fd >= 0 && send_all(calls[i].fd, req, len) == 0);
        sleep_ms(20);
    }
    int n429 = 0;
    for (int i = 2; i < 4; i++) {
        calls[i].got = read_reply(calls[i].fd, &calls[i].r, 5000) == 0;
        if (calls[i].got && calls[i].r.status == 429) {
            n429++;
            CHECK_CONTAINS(json_str(calls[i].r.json, "error.message"), "the vision queue is full");
            CHECK_CONTAINS(header_value(&calls[i].r, "Retry-After"), "2");
        }
    }
    CHECK_EQ_INT(n429, 2);
    /* the first two reach the slow llm worker (the gateway's metrics say when); a second
     * replica joins and the first dies */
    int at_llm = 0;
    for (int i = 0; i < 200 && !at_llm; i++) {
        reply m;
        if (http(port, "GET", "/metrics", NULL, &m) == 0)
            at_llm = metric_value(m.body ? m.body : "", "lion_jobs_outstanding{stage=\"llm\",model=\"lion-flant5\"}") == 2;
        reply_free(&m);
        if (!at_llm) sleep_ms(20);
    }
    CHECK_MSG(at_llm, "the two requests did not reach the slow llm worker");
    spawn_stub("llm", ep[4], "llm-fast", "0", "4");
    if (wait_ready(port, 200, "\"llm\":2", 5000) != 0) CHECK_MSG(0, "the second llm worker did not register");
    stop_child(slow_llm, SIGKILL);
    char want[512];
    expected_text(want, sizeof want, "anyone", "dog,cat", "image", 1, 0);
    for (int i = 0; i < 2; i++) {
        calls[i].got = read_reply(calls[i].fd, &calls[i].r, 10000) == 0;
        CHECK_MSG(calls[i].got, "request %d: no answer after the worker was killed", i);
        CHECK_EQ_INT(calls[i].r.status, 200);
        const char *text = json_str(calls[i].r.json, "text");
        CHECK_MSG(text && !strcmp(text, want), "request %d: text '%s', expected '%s'", i, text ? text : "(none)", want);
        /* answered exactly once: nothing more arrives on the connection */
        reply extra;
        CHECK(read_reply(calls[i].fd, &extra, 300) != 0);
    }
    for (int i = 0; i < 4; i++) {
        if (calls[i].got) reply_free(&calls[i].r);
        close(calls[i].fd);
    }
    free(req);
    CHECK(http(port, "GET", "/metrics", NULL, &r) == 0);
    CHECK(metric_value(r.body ? r.body : "", "lion_redispatches_total{stage=\"llm\",model=\"lion-flant5\"}") == 2);
    CHECK(metric_value(r.body ? r.body : "", "lion_workers{stage=\"llm\",model=\"lion-flant5\"}") == 1);
    CHECK(metric_value(r.body ? r.body : "", "lion_http_requests_total{route=\"/v1/generate\",status=\"429\"}") == 2);
    reply_free(&r);
    free(body);

    /* an idle connection is closed; one waiting for its answer is not (above) */
    int idle = http_connect(port);
    CHECK(idle >= 0);
    struct pollfd pfd = {idle, POLLIN, 0};
    CHECK(poll(&pfd, 1, 3000) == 1);
    char byte;
    CHECK(recv(idle, &byte, 1, 0) == 0);
    close(idle);

    /* a deadline shorter than the vision stage: 504 */
    body = generate_body("too slow", "\"deadline_ms\":100");
    CHECK(http(port, "POST", "/v1/generate", body, &r) == 0);
    CHECK_EQ_INT(r.status, 504);
    CHECK(json_str(r.json, "error.code") && !strcmp(json_str(r.json, "error.code"), "deadline_exceeded"));
    CHECK_CONTAINS(json_str(r.json, "error.message"), "deadline of 100 ms exceeded waiting for vision");
    reply_free(&r);
    free(body);
    /* the gateway still serves afterwards (the late vision answer is dropped) */
    sleep_ms(400);
    body = generate_body("after", NULL);
    CHECK(http(port, "POST", "/v1/generate", body, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    reply_free(&r);

    /* SIGTERM with a request in flight: it is answered 503, then the gateway exits cleanly */
    size_t rlen;
    char *inflight = format_request("POST", "/v1/generate", body, &rlen);
    int fd = http_connect(port);
    CHECK(fd >= 0 && send_all(fd, inflight, rlen) == 0);
    sleep_ms(100);
    CHECK_EQ_INT(stop_child(spawned(0), SIGTERM), 0);
    CHECK(read_reply(fd, &r, 3000) == 0);
    CHECK_EQ_INT(r.status, 503);
    CHECK_CONTAINS(json_str(r.json, "error.message"), "the gateway is shutting down");
    reply_free(&r);
    close(fd);
    free(inflight);
    free(body);
    stop_all();
}


/* The metric's value, polled until it equals want or timeout_ms pass. */
static int metric_reaches(int port, const char *series, double want, int timeout_ms) {
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        reply m;
        double v = -1;
        if (http(port, "GET", "/metrics", NULL, &m) == 0) v = metric_value(m.body ? m.body : "", series);
        reply_free(&m);
        if (v == want) return 1;
        sleep_ms(20);
    }
    return 0;
}

/* A gateway on fresh loopback ports with a stub worker per stage (the llm one named
 * llm_replica, taking llm_delay_ms per job), started and ready; port 0 when it did not
 * become ready. extra: more gateway flags, NULL-terminated. */
typedef struct test_gateway {
    int port;
    char ep[5][64]; /* the stage endpoints, [1..4] */
} test_gateway;

static test_gateway start_gateway_with(const char *const *extra, const char *llm_replica, const char *llm_delay_ms) {
    test_gateway g;
    g.port = free_port();
    char listen[64], gw_bin[4096];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", g.port);
    for (int s = 1; s <= 4; s++) snprintf(g.ep[s], sizeof g.ep[s], "tcp://127.0.0.1:%d", free_port());
    const char *bin_dir = getenv("LION_BIN_DIR");
    snprintf(gw_bin, sizeof gw_bin, "%s/lion-gateway", bin_dir ? bin_dir : "build/services");
    const char *argv[32] = {gw_bin, "--listen", listen, "--vision", g.ep[1], "--tagger", g.ep[2], "--aggregator",
                            g.ep[3], "--llm", g.ep[4], "--heartbeat-ms", "100"};
    int n = 13;
    for (int i = 0; extra && extra[i] && n < 31; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    CHECK(spawn(argv) > 0);
    spawn_stub("vision", g.ep[1], "vision-1", "0", "4");
    spawn_stub("tagger", g.ep[2], "tagger-1", "0", "4");
    spawn_stub("aggregator", g.ep[3], "aggregator-1", "0", "4");
    spawn_stub("llm", g.ep[4], llm_replica, llm_delay_ms, "4");
    if (wait_ready(g.port, 200, "\"llm\":1", 15000) != 0) {
        CHECK_MSG(0, "the gateway did not become ready");
        g.port = 0;
    }
    return g;
}

static int start_gateway(const char *const *extra) { return start_gateway_with(extra, "llm-1", "0").port; }

/* A client that leaves cancels its request through the pipeline: the llm worker holding the
 * job gets CANCEL, drops it (the stub checks every 10 ms of its 3 s delay) and its credit
 * comes back long before the job would have ended. */
static void scenario_cancel(void) {
    const int port = start_gateway_with(NULL, "llm-slow", "3000").port;
    if (!port) {
        stop_all();
        return;
    }
    char *body = generate_body("leave early", NULL);
    size_t len;
    char *req = format_request("POST", "/v1/generate", body, &len);
    int fd = http_connect(port);
    CHECK(fd >= 0 && send_all(fd, req, len) == 0);
    CHECK_MSG(metric_reaches(port, "lion_jobs_outstanding{stage=\"llm\",model=\"lion-flant5\"}", 1, 5000), "the job never reached the llm");
    const int64_t left = clock_mono_us();
    close(fd);
    CHECK_MSG(metric_reaches(port, "lion_requests_cancelled_total", 1, 1000), "the request was not cancelled");
    CHECK(metric_reaches(port, "lion_cancels_total{stage=\"llm\",model=\"lion-flant5\"}", 1, 1000));
    /* the worker answered the cancelled job (ERROR cancelled, dropped as late): credit back */
    CHECK_MSG(metric_reaches(port, "lion_jobs_outstanding{stage=\"llm\",model=\"lion-flant5\"}", 0, 1500), "the llm worker kept the job");
    CHECK_MSG(clock_mono_us() - left < 2000000, "the job was dropped only after %lld ms",
              (long long)((clock_mono_us() - left) / 1000));
    CHECK(metric_reaches(port, "lion_late_answers_total{stage=\"llm\",model=\"lion-flant5\"}", 1, 1000));
    /* the gateway and the worker go on: the next request is answered */
    reply r;
    CHECK(http(port, "POST", "/v1/generate", body, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    reply_free(&r);
    free(req);
    free(body);
    CHECK_EQ_INT(stop_all(), 0);
}


/* A request with an Authorization header (NULL: none). */
static int http_auth(int port, const char *path, const char *body, const char *authorization, reply *r) {
    char req[65536 + 1024];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s%s%s\r\n%s",
                     body ? "POST" : "GET", path, body ? strlen(body) : 0, authorization ? "Authorization: " : "",
                     authorization ? authorization : "", authorization ? "\r\n" : "", body ? body : "");
    return http_raw(port, req, (size_t)n, r);
}

/* The HTTP edge against abuse: API keys (401 with WWW-Authenticate, probes open), a slow
 * sender closed after --read-timeout-ms (408), a per-client connection cap (429), health
 * probes answered while the gateway is full, and no open API off loopback by accident. */
static void scenario_http_edge(void) {
    char keys[] = "/tmp/lion-keys-XXXXXX";
    int kfd = mkstemp(keys);
    static const char key_text[] = "# test keys\nsk-test-0123456789abcdef\n  sk-other-0123456789abcdef  \n";
    CHECK(kfd >= 0 && write(kfd, key_text, sizeof key_text - 1) == (ssize_t)(sizeof key_text - 1));
    close(kfd);
    const char *extra[] = {"--api-keys", keys, "--read-timeout-ms", "300", "--max-connections-per-client", "4", NULL};
    int port = start_gateway(extra);
    CHECK_MSG(port, "the gateway with API keys did not become ready");
    if (!port) {
        stop_all();
        unlink(keys);
        return;
    }
    char *body = generate_body("keyed", NULL);
    reply r;
    CHECK(http_auth(port, "/v1/generate", body, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 401);
    CHECK(json_str(r.json, "error.code") && !strcmp(json_str(r.json, "error.code"), "invalid_api_key"));
    CHECK_CONTAINS(header_value(&r, "WWW-Authenticate"), "Bearer");
    reply_free(&r);
    CHECK(http_auth(port, "/v1/generate", body, "Bearer sk-wrong-0123456789abcdef", &r) == 0);
    CHECK_EQ_INT(r.status, 401);
    CHECK_CONTAINS(json_str(r.json, "error.message"), "not valid");
    reply_free(&r);
    CHECK(http_auth(port, "/v1/generate", body, "Bearer sk-other-0123456789abcdef", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    reply_free(&r);
    CHECK(http_auth(port, "/v1/models", NULL, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 401);
    reply_free(&r);
    static const char *const open_paths[] = {"/healthz", "/readyz", "/metrics"};
    for (int i = 0; i < 3; i++) {
        CHECK(http_auth(port, open_paths[i], NULL, NULL, &r) == 0);
        CHECK_MSG(r.status == 200, "%s without a key: %d", open_paths[i], r.status);
        reply_free(&r);
    }
    free(body);
    /* a sender that stops in the middle of its headers: 408 after --read-timeout-ms */
    int slow = http_connect(port);
    static const char part[] = "POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Le";
    CHECK(slow >= 0 && send_all(slow, part, sizeof part - 1) == 0);
    const int64_t sent = clock_mono_us();
    CHECK(read_reply(slow, &r, 3000) == 0);
    CHECK_EQ_INT(r.status, 408);
    CHECK_MSG(clock_mono_us() - sent < 2000000, "408 came after %lld ms", (long long)((clock_mono_us() - sent) / 1000));
    reply_free(&r);
    close(slow);
    /* one client address: 4 connections, the 5th is answered 429 */
    int fds[5];
    for (int i = 0; i < 5; i++) fds[i] = http_connect(port);
    sleep_ms(100);
    CHECK(read_reply(fds[4], &r, 3000) == 0);
    CHECK_EQ_INT(r.status, 429);
    CHECK_CONTAINS(json_str(r.json, "error.message"), "--max-connections-per-client 4");
    reply_free(&r);
    for (int i = 0; i < 5; i++) close(fds[i]);
    CHECK_EQ_INT(stop_all(), 0);
    unlink(keys);

    /* full: a health probe is still answered, anything else 503 */
    const char *full[] = {"--max-connections", "3", NULL};
    port = start_gateway(full);
    CHECK_MSG(port, "the gateway with 3 connections did not become ready");
    int held[3];
    for (int i = 0; i < 3; i++) held[i] = http_connect(port);
    sleep_ms(100);
    CHECK(http_auth(port, "/healthz", NULL, NULL, &r) == 0);
    CHECK_MSG(r.status == 200, "/healthz over the cap: %d", r.status);
    reply_free(&r);
    CHECK(http_auth(port, "/v1/models", NULL, NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 503);
    CHECK_CONTAINS(json_str(r.json, "error.message"), "--max-connections 3");
    reply_free(&r);
    for (int i = 0; i < 3; i++) close(held[i]);
    CHECK_EQ_INT(stop_all(), 0);

    /* off loopback without keys: refused at start, unless --allow-open */
    const char *bin_dir = getenv("LION_BIN_DIR");
    char gw_bin[4096], listen[64];
    snprintf(gw_bin, sizeof gw_bin, "%s/lion-gateway", bin_dir ? bin_dir : "build/services");
    snprintf(listen, sizeof listen, "0.0.0.0:%d", free_port());
    const char *open_argv[] = {gw_bin, "--listen", listen, "--bind-base", "tcp://127.0.0.1:1", NULL};
    pid_t pid = -1;
    int status = 0; /* posix_spawn, not spawn(): this one is waited for here, not by stop_all */
    CHECK(posix_spawn(&pid, gw_bin, NULL, NULL, (char *const *)open_argv, environ) == 0);
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) != 0, "an open gateway on 0.0.0.0 started");
}

/* A worker that holds a job past the job timeout: the job goes to another replica (attempt
 * 1), the first is told CANCEL and gets no new job until it answers; counted. */
static void scenario_stuck_worker(void) {
    const char *extra[] = {"--job-timeout-ms", "400", NULL};
    const test_gateway g = start_gateway_with(extra, "llm-stuck", "20000");
    const int port = g.port;
    if (!port) {
        stop_all();
        return;
    }
    char *body = generate_body("stuck", NULL);
    size_t len;
    char *req = format_request("POST", "/v1/generate", body, &len);
    int fd = http_connect(port);
    CHECK(fd >= 0 && send_all(fd, req, len) == 0);
    const int64_t sent = clock_mono_us();
    CHECK(metric_reaches(port, "lion_jobs_outstanding{stage=\"llm\",model=\"lion-flant5\"}", 1, 3000));
    spawn_stub("llm", g.ep[4], "llm-fast", "0", "4");
    reply r;
    CHECK(read_reply(fd, &r, 8000) == 0);
    CHECK_EQ_INT(r.status, 200);
    char want[512];
    expected_text(want, sizeof want, "stuck", "dog,cat", "image", 1, 0);
    CHECK_MSG(json_str(r.json, "text") && !strcmp(json_str(r.json, "text"), want), "text '%s', expected '%s'",
              json_str(r.json, "text") ? json_str(r.json, "text") : "(none)", want);
    CHECK_MSG(clock_mono_us() - sent < 5000000, "answered after %lld ms", (long long)((clock_mono_us() - sent) / 1000));
    reply_free(&r);
    close(fd);
    CHECK(metric_reaches(port, "lion_job_timeouts_total{stage=\"llm\",model=\"lion-flant5\"}", 1, 1000));
    free(req);
    free(body);
    CHECK_EQ_INT(stop_all(), 0);
}

/* CURVE on the ZeroMQ links: workers whose keys are allowed serve, a worker with an
 * unknown key never registers (so gets no job), a tap reader without an allowed key gets
 * nothing while an allowed one sees the traffic; and without CURVE a gateway refuses
 * endpoints off loopback unless --insecure. */
static void scenario_curve(void) {
    char dir[] = "/tmp/lion-curve-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    const char *keygen_dir = getenv("LION_BUILD_DIR");
    char keygen[4096], cmd[8192];
    snprintf(keygen, sizeof keygen, "%s/tools/keygen/lion-keygen", keygen_dir ? keygen_dir : "build");
    static const char *const names[] = {"gateway", "workers/vision", "workers/tagger", "workers/aggregator",
                                        "workers/llm", "rogue", "reader", "stranger"};
    snprintf(cmd, sizeof cmd, "mkdir -p %s/workers", dir);
    CHECK(system(cmd) == 0);
    for (int i = 0; i < 8; i++) {
        snprintf(cmd, sizeof cmd, "%s %s/%s >/dev/null", keygen, dir, names[i]);
        CHECK_MSG(system(cmd) == 0, "lion-keygen %s failed", names[i]);
    }
    char gw_key[4200], gw_pub[4200], workers[4200], taps[4200], key[9][4200];
    snprintf(gw_key, sizeof gw_key, "%s/gateway.key", dir);
    snprintf(gw_pub, sizeof gw_pub, "%s/gateway.pub", dir);
    snprintf(workers, sizeof workers, "%s/workers", dir);
    snprintf(taps, sizeof taps, "%s/reader.pub", dir);
    for (int i = 0; i < 8; i++) snprintf(key[i], sizeof key[i], "%s/%s.key", dir, names[i]);
    int port = free_port();
    char listen[64], ep[5][64], tap_ep[64], gw_bin[4096];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    for (int s = 1; s <= 4; s++) snprintf(ep[s], sizeof ep[s], "tcp://127.0.0.1:%d", free_port());
    snprintf(tap_ep, sizeof tap_ep, "tcp://127.0.0.1:%d", free_port());
    const char *bin_dir = getenv("LION_BIN_DIR");
    snprintf(gw_bin, sizeof gw_bin, "%s/lion-gateway", bin_dir ? bin_dir : "build/services");
    const char *argv[] = {gw_bin, "--listen", listen, "--vision", ep[1], "--tagger", ep[2], "--aggregator", ep[3],
                          "--llm", ep[4], "--tap", tap_ep, "--heartbeat-ms", "100", "--curve-key", gw_key,
                          "--worker-keys", workers, "--tap-keys", taps, NULL};
    CHECK(spawn(argv) > 0);
    static const char *const stages[] = {"", "vision", "tagger", "aggregator", "llm"};
    for (int s = 1; s <= 3; s++) {
        const char *extra[] = {"--curve-server-key", gw_pub, "--curve-key", key[s], NULL};
        spawn_stub_with(stages[s], ep[s], stages[s], extra);
    }
    /* the llm stage: only a worker with a key not on the list */
    const char *rogue[] = {"--curve-server-key", gw_pub, "--curve-key", key[5], NULL};
    spawn_stub_with("llm", ep[4], "rogue", rogue);
    CHECK(wait_ready(port, 503, "no live llm worker", 15000) == 0);
    sleep_ms(600); /* handshakes and heartbeats had their time: the rogue is still not in */
    reply r;
    CHECK(http(port, "GET", "/readyz", NULL, &r) == 0);
    CHECK_MSG(r.status == 503, "the worker with an unknown key was let in: %s", r.body ? r.body : "");
    reply_free(&r);
    CHECK(http(port, "GET", "/metrics", NULL, &r) == 0);
    CHECK(metric_value(r.body ? r.body : "", "lion_zap_denied_total") >= 1);
    reply_free(&r);
    const char *good[] = {"--curve-server-key", gw_pub, "--curve-key", key[4], NULL};
    spawn_stub_with("llm", ep[4], "llm", good);
    CHECK(wait_ready(port, 200, "\"llm\":1", 10000) == 0);
    /* tap readers: the allowed one sees the request's messages, the stranger nothing */
    void *zctx = zmq_ctx_new();
    void *readers[2];
    for (int k = 0; k < 2; k++) {
        curve_keypair own;
        char server[CURVE_KEY_TEXT];
        lion_status st;
        readers[k] = zmq_socket(zctx, ZMQ_SUB);
        CHECK(curve_public_load(gw_pub, server, &st) == 0 && curve_keypair_load(key[k == 0 ? 6 : 7], &own, &st) == 0);
        CHECK(curve_client_setup(readers[k], server, &own, &st) == 0);
        zmq_setsockopt(readers[k], ZMQ_SUBSCRIBE, "meta/", 5);
        zmq_connect(readers[k], tap_ep);
    }
    sleep_ms(500);
    char *body = generate_body("secure", NULL);
    CHECK(http(port, "POST", "/v1/generate", body, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    reply_free(&r);
    free(body);
    int got[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        int timeout = 300;
        zmq_setsockopt(readers[k], ZMQ_RCVTIMEO, &timeout, sizeof timeout);
        zmq_msg_t m;
        zmq_msg_init(&m);
        while (zmq_msg_recv(&m, readers[k], 0) >= 0) got[k]++;
        zmq_msg_close(&m);
        zmq_close(readers[k]);
    }
    zmq_ctx_term(zctx);
    CHECK_MSG(got[0] > 0, "the allowed tap reader got nothing");
    CHECK_MSG(got[1] == 0, "a tap reader with an unknown key got %d frames", got[1]);
    CHECK_EQ_INT(stop_all(), 0);

    /* without CURVE, endpoints off loopback are refused unless --insecure */
    char open_ep[64];
    snprintf(open_ep, sizeof open_ep, "tcp://0.0.0.0:%d", free_port());
    const char *plain[] = {gw_bin, "--listen", listen, "--vision", open_ep, NULL};
    pid_t pid = -1;
    int status = 0;
    CHECK(posix_spawn(&pid, gw_bin, NULL, NULL, (char *const *)plain, environ) == 0);
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) != 0, "a gateway with a plain 0.0.0.0 endpoint started");
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

static void run_all(void) {
    scenario_failures();
    scenario_cancel();
    scenario_http_edge();
    scenario_stuck_worker();
    scenario_curve();
}

int main(int argc, char **argv) { return gateway_harness_main(argc, argv, run_all); }
