/* fuzz_gateway_api.c - the gateway's routes (api.c) on well-framed requests.
 *
 * Input: [u8 method][u8 path][u8 content type][u8 flags][body]. The first three pick from the
 * tables below (every route, the web page, paths that are none; JSON, multipart/form-data with
 * and without a usable boundary, others); flags: bits 0-1 the Authorization header (0, 1: the
 * gateway's key, 2: none, 3: a wrong key), bit 2 a chunked body (in chunks of 1 + 97 * bits
 * 6-7 bytes), bit 3 Expect: 100-continue, bit 4 HTTP/1.0, bit 5 a GET /healthz pipelined
 * behind (keep-alive). The request is framed correctly around the body (Content-Length or
 * chunks), so the fuzzer's effort goes into the bodies: JSON fields, OpenAI chat messages,
 * multipart parts, base64 and data-URI images, generation parameters. It is sent to the
 * gateway's real listener (gateway_loopback.h), which has no workers: a request that passes
 * every check ends at admission with 503.
 *
 * The answer must be one well-formed response (gateway_loopback_check_response), after an
 * interim 100 Continue when asked for; with a pipelined request behind it, either the
 * connection was closed by an answer that said "Connection: close", or the /healthz answer
 * (200) follows. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "fuzz_util.h"
#include "gateway_loopback.h"

static const char *const methods[8] = {"POST", "POST", "POST", "POST", "GET", "HEAD", "PUT", "DELETE"};
static const char *const paths[16] = {
    "/v1/generate", "/v1/chat/completions", "/v1/tags", "/v1/models", "/healthz", "/readyz", "/metrics",
    "/v1/pipeline", "/",           "/index.html",      "/app.js",  "/nope", "/v1/generate?stream=1",
    "/v1/generate/", "//v1/tags",  "/../etc/passwd"};
static const char *const content_types[8] = {"application/json",
                                             "multipart/form-data; boundary=LionFuzzBoundary",
                                             "multipart/form-data; boundary=\"Lion Fuzz\"",
                                             "application/json; charset=utf-8",
                                             NULL,
                                             "text/plain",
                                             "multipart/mixed; boundary=LionFuzzBoundary",
                                             "multipart/form-data"};

typedef struct req_buf {
    char *p;
    size_t len, cap;
} req_buf;

static void put(req_buf *b, const void *data, size_t len) {
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2 + 256;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
}

static void puts_(req_buf *b, const char *s) { put(b, s, strlen(s)); }

/* The answer's headers say "Connection: close". */
static int header_says_close(const char *text, size_t len) {
    static const char close_[] = "\r\nConnection: close\r\n";
    const size_t n = sizeof close_ - 1;
    const char *end = memmem(text, len, "\r\n\r\n", 4);
    const size_t head = end ? (size_t)(end - text) + 2 : len;
    for (size_t i = 0; i + n <= head; i++)
        if (!strncasecmp(text + i, close_, n)) return 1;
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    gateway_loopback_start();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_cursor c = {data, size};
    const char *method = methods[fuzz_u8(&c) % 8];
    const char *path = paths[fuzz_u8(&c) % 16];
    const char *ctype = content_types[fuzz_u8(&c) % 8];
    const unsigned flags = fuzz_u8(&c);
    const int auth = flags & 3, chunked = flags & 4, expect = flags & 8, http10 = flags & 16, pipelined = flags & 32;
    const size_t chunk = 1 + 97 * (flags >> 6);
    const int head_only = !strcmp(method, "HEAD");

    req_buf b = {0};
    char line[512];
    snprintf(line, sizeof line, "%s %s HTTP/1.%d\r\nHost: 127.0.0.1\r\n", method, path, http10 ? 0 : 1);
    puts_(&b, line);
    if (auth < 2) puts_(&b, "Authorization: Bearer " GATEWAY_FUZZ_API_KEY "\r\n");
    else if (auth == 3) puts_(&b, "Authorization: Bearer not-the-key\r\n");
    if (ctype) {
        snprintf(line, sizeof line, "Content-Type: %s\r\n", ctype);
        puts_(&b, line);
    }
    if (expect) puts_(&b, "Expect: 100-continue\r\n");
    puts_(&b, pipelined ? (http10 ? "Connection: keep-alive\r\n" : "") : "Connection: close\r\n");
    if (chunked) {
        puts_(&b, "Transfer-Encoding: chunked\r\n\r\n");
        for (size_t at = 0; at < c.left; at += chunk) {
            size_t n = c.left - at < chunk ? c.left - at : chunk;
            snprintf(line, sizeof line, "%zx\r\n", n);
            puts_(&b, line);
            put(&b, c.p + at, n);
            puts_(&b, "\r\n");
        }
        puts_(&b, "0\r\n\r\n");
    } else {
        snprintf(line, sizeof line, "Content-Length: %zu\r\n\r\n", c.left);
        puts_(&b, line);
        put(&b, c.p, c.left);
    }
    if (pipelined) puts_(&b, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");

    char *out;
    size_t len;
    gateway_loopback_exchange((const uint8_t *)b.p, b.len, &out, &len);
    free(b.p);
    size_t at = 0, next = 0;
    int status = gateway_loopback_check_response(out, len, head_only, 0, &next);
    if (status == 100) {
        at = next;
        status = gateway_loopback_check_response(out + at, len - at, head_only, 0, &next);
    }
    FUZZ_CHECK(status != 100);
    const char *first = out + at;
    at += next;
    if (!pipelined) {
        FUZZ_CHECK(at == len); /* one answer, then the close asked for */
    } else if (at == len) {
        FUZZ_CHECK(header_says_close(first, len - (size_t)(first - out)));
    } else {
        int second = gateway_loopback_check_response(out + at, len - at, 0, 1, NULL);
        FUZZ_CHECK(second == 200);
    }
    free(out);
    return 0;
}
