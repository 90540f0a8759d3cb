/* fuzz_gateway_http.c - the gateway's HTTP server on raw bytes from a client.
 *
 * Input: the bytes a client sends on one connection (request line, headers, body, further
 * pipelined requests, anything). They go over a loopback TCP connection to the gateway's
 * real listener and connections (gateway_loopback.h): http-parser with the gateway's
 * settings and limits (URL, headers, body, pipelined bytes), 100-continue, chunked bodies,
 * lingering close, API keys, then the routes. The gateway must answer or close within 10 s,
 * free the connection, and every answer must be a well-formed HTTP/1.x response (status,
 * Content-Length and that many body bytes, JSON bodies that parse, error bodies with a code
 * and a message, no 5xx but 503/505). */
#include <string.h>

#include "fuzz_util.h"
#include "gateway_loopback.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    gateway_loopback_start();
    return 0;
}

/* A HEAD answer has no body: when what follows its headers is the next answer, or nothing,
 * the answer was to a HEAD (the raw bytes do not say which requests were HEAD). */
static int looks_head_only(const char *text, size_t len) {
    const char *end = memmem(text, len, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t rest = len - (size_t)(end + 4 - text);
    return rest == 0 || (rest >= 7 && !memcmp(end + 4, "HTTP/1.", 7));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *out;
    size_t len;
    gateway_loopback_exchange(data, size, &out, &len);
    for (size_t at = 0; at < len;) {
        size_t next = 0;
        gateway_loopback_check_response(out + at, len - at, looks_head_only(out + at, len - at), 0, &next);
        FUZZ_CHECK(next > 0 && at + next <= len);
        at += next;
    }
    free(out);
    return 0;
}
