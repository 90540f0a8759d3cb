/* gateway_loopback.c - see gateway_loopback.h. */
#include "gateway_loopback.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "fuzz_util.h"
#include "gateway_impl.h"
#include "log.h"

#define HANG_US 10000000 /* a gateway that neither answers nor closes this long is stuck */

static gateway *gw;
static int port;
static int verbose;

/* The gateway as gateway_run (services/gateway/gateway.c) sets it up: API keys, one stage
 * router per stage, no taps, the HTTP listener; minus its timers and signals: the fuzz target
 * runs the loop itself, between its reads and writes. Keep this in step with gateway_run. */
void gateway_loopback_start(void) {
    if (gw) return;
    verbose = getenv("LION_FUZZ_VERBOSE") && atoi(getenv("LION_FUZZ_VERBOSE")) > 0;
    log_init("fuzz-gateway", LOG_ERROR);
    signal(SIGPIPE, SIG_IGN);
    static char keys_file[512], ep[5][600];
    snprintf(keys_file, sizeof keys_file, "%s/api-keys", fuzz_dir());
    static const uint8_t keys[] = "# the key of every seed request\n" GATEWAY_FUZZ_API_KEY "\n";
    fuzz_write_file("api-keys", keys, sizeof keys - 1);
    static const char *const stages[5] = {NULL, "vision", "tagger", "aggregator", "llm"};
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++)
        snprintf(ep[s], sizeof ep[s], "inproc://fuzz-%s-%d", stages[s], (int)getpid());
    /* small body, image and prompt limits, so that fuzz-sized inputs reach every refusal */
    char *argv[] = {"lion-gateway",        "--listen",           "127.0.0.1:0",       "--vision",
                    ep[1],                 "--tagger",           ep[2],               "--aggregator",
                    ep[3],                 "--llm",              ep[4],               "--api-keys",
                    keys_file,             "--max-body-bytes",   "8192",              "--max-image-bytes",
                    "2048",                "--max-prompt-bytes", "512",               NULL};
    const int argc = (int)(sizeof argv / sizeof argv[0]) - 1;
    gw = calloc(1, sizeof *gw);
    gw->loop = malloc(sizeof *gw->loop);
    lion_status st = {0};
    if (!gw->loop || uv_loop_init(gw->loop) != 0 || gateway_config_parse(&gw->cfg, argc, argv, &st) != 0) {
        fprintf(stderr, "fuzz gateway: configuration: %s\n", st.msg);
        abort();
    }
    gw->zctx = zmq_ctx_new();
    int rc = api_keys_load(&gw->keys, gw->cfg.api_keys_file, &st);
    for (int s = LION_STAGE_FIRST; rc == 0 && s <= LION_STAGE_LAST; s++)
        rc = stage_pool_open(&gw->pool[s], gw, s, gw->cfg.stage_endpoint[s], &request_pool_client, &st);
    /* no --tap: gw->tap stays zeroed, as tap_open leaves it without an endpoint */
    if (rc == 0) rc = http_server_start(gw, &st);
    if (rc != 0) {
        fprintf(stderr, "fuzz gateway: start: %s\n", st.msg);
        abort();
    }
    struct sockaddr_in bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&gw->listener, (struct sockaddr *)&bound, &len);
    port = ntohs(bound.sin_port);
}

/* One turn of the gateway's loop, then what its ended requests leave is freed (its check
 * callback's work). */
static void turn(void) {
    uv_run(gw->loop, UV_RUN_NOWAIT);
    request_free_ended(gw);
}

/* Waits until fd has events or the gateway has work (its loop's descriptor, or callbacks
 * already queued: uv_backend_timeout is then 0), at most ms. */
static void wait_either(int fd, short events, int ms) {
    const int due = uv_backend_timeout(gw->loop);
    if (due >= 0 && due < ms) ms = due;
    if (ms == 0) return;
    struct pollfd p[2] = {{.fd = fd, .events = events}, {.fd = uv_backend_fd(gw->loop), .events = POLLIN}};
    poll(p, 2, ms);
}

typedef struct sink {
    char *data;
    size_t len, cap;
} sink;

/* Reads what is there; 1 at EOF or a reset. */
static int drain(int fd, sink *s) {
    for (;;) {
        if (s->cap - s->len < 65537) {
            s->cap = s->cap ? s->cap * 2 : 131072;
            s->data = realloc(s->data, s->cap);
            if (!s->data) abort();
        }
        ssize_t n = recv(fd, s->data + s->len, s->cap - s->len - 1, MSG_DONTWAIT);
        if (n > 0) {
            s->len += (size_t)n;
            continue;
        }
        if (n == 0) return 1;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        if (errno == EINTR) continue;
        return 1; /* ECONNRESET: the gateway closed with bytes unread */
    }
}

void gateway_loopback_exchange(const uint8_t *data, size_t len, char **out, size_t *out_len) {
    const int conns_before = gw->n_conns;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) abort();
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0 && errno != EINPROGRESS) {
        perror("fuzz gateway: connect");
        abort();
    }
    sink s = {0};
    const int64_t start = clock_mono_us();
    int eof = 0;
    size_t sent = 0;
    int shut = 0;
    while (!eof) {
        if (clock_mono_us() - start > HANG_US) {
            fprintf(stderr, "fuzz gateway: no answer and no close within %d s (%zu of %zu bytes sent)\n",
                    HANG_US / 1000000, sent, len);
            abort();
        }
        turn();
        while (sent < len) {
            ssize_t n = send(fd, data + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                sent += (size_t)n;
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOTCONN)) break;
            if (n < 0 && errno == EINTR) continue;
            sent = len; /* EPIPE / ECONNRESET: the gateway closed; the rest cannot go */
        }
        if (sent == len && !shut) shut = shutdown(fd, SHUT_WR) == 0 || errno != ENOTCONN;
        eof = drain(fd, &s);
        if (!eof) wait_either(fd, POLLIN | (sent < len || !shut ? POLLOUT : 0), 20);
    }
    close(fd);
    /* The gateway closed its end, or half-closed it and lingers until this end closes: it
     * sees the close in its next turns and frees the connection. */
    while (gw->n_conns != conns_before && clock_mono_us() - start <= HANG_US) {
        turn();
        if (gw->n_conns != conns_before) wait_either(-1, 0, 20);
    }
    turn();
    if (gw->n_conns != conns_before) {
        fprintf(stderr, "fuzz gateway: %d connections open after the exchange, %d before\n", gw->n_conns,
                conns_before);
        abort();
    }
    if (!s.data) s.data = malloc(1);
    s.data[s.len] = 0;
    if (verbose) /* LION_FUZZ_VERBOSE=1: every exchange on stderr (to look at one input's) */
        fprintf(stderr, "--- sent %zu bytes ---\n%.*s\n--- answer %zu bytes ---\n%s\n---\n", len, (int)len,
                (const char *)data, s.len, s.data);
    *out = s.data;
    *out_len = s.len;
}

static int head_value(const char *head, size_t head_len, const char *name, char *out, size_t cap) {
    size_t nl = strlen(name);
    for (const char *l = head; l && l < head + head_len;) {
        const char *eol = memmem(l, (size_t)(head + head_len - l), "\r\n", 2);
        size_t ll = eol ? (size_t)(eol - l) : (size_t)(head + head_len - l);
        if (ll > nl + 1 && !strncasecmp(l, name, nl) && l[nl] == ':') {
            const char *v = l + nl + 1;
            while (*v == ' ') v++;
            size_t vl = ll - (size_t)(v - l);
            if (vl >= cap) vl = cap - 1;
            memcpy(out, v, vl);
            out[vl] = 0;
            return 1;
        }
        l = eol ? eol + 2 : NULL;
    }
    return 0;
}

#define BAD(...)                                                                                            \
    do {                                                                                                    \
        fprintf(stderr, "fuzz gateway: malformed response: " __VA_ARGS__);                                \
        fprintf(stderr, "\n--- response (%zu bytes) ---\n%.*s\n---\n", len, (int)(len > 4000 ? 4000 : len), \
                text);                                                                                      \
        abort();                                                                                            \
    } while (0)

int gateway_loopback_check_response(const char *text, size_t len, int head_only, int whole, size_t *next) {
    int major, minor, status, used = 0;
    if (len < 12 || sscanf(text, "HTTP/%d.%d %3d %n", &major, &minor, &status, &used) != 3 || used == 0)
        BAD("no status line");
    if (major != 1 || status < 100 || status > 599) BAD("status line HTTP/%d.%d %d", major, minor, status);
    if (status >= 500 && status != 503 && status != 505) BAD("server error %d", status);
    const char *end = memmem(text, len, "\r\n\r\n", 4);
    if (!end) BAD("headers without an end");
    const size_t head_len = (size_t)(end - text);
    const char *body = end + 4;
    size_t body_have = len - (size_t)(body - text);
    char value[256];
    if (status == 100) { /* interim: the real answer follows */
        if (next) *next = (size_t)(body - text);
        return status;
    }
    if (head_value(text, head_len, "Transfer-Encoding", value, sizeof value)) BAD("a chunked answer without workers");
    if (!head_value(text, head_len, "Content-Length", value, sizeof value)) BAD("no Content-Length");
    char *e;
    unsigned long long cl = strtoull(value, &e, 10);
    if (e == value || *e) BAD("Content-Length '%s'", value);
    const size_t body_len = head_only ? 0 : (size_t)cl;
    if (body_have < body_len) BAD("%zu body bytes of %llu", body_have, cl);
    if (whole && body_have != body_len) BAD("%zu bytes after a %zu-byte body", body_have - body_len, body_len);
    if (next) *next = (size_t)(body - text) + body_len;
    if (head_only || !head_value(text, head_len, "Content-Type", value, sizeof value) ||
        strncasecmp(value, "application/json", 16) != 0)
        return status;
    cJSON *root = cJSON_ParseWithLength(body, body_len);
    if (!root) BAD("a JSON body that does not parse");
    if (status >= 400) {
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
        if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(err, "code")) ||
            !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(err, "message")))
            BAD("error %d without error.code and error.message", status);
    }
    cJSON_Delete(root);
    return status;
}
