/* base64.c - image payloads of JSON requests: plain base64 or a data URI, decoded with
 * nettle's base64 decoder (which skips whitespace, so line-wrapped payloads work). */
#include <nettle/base64.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway_impl.h"

int base64_decode_payload(const char *text, size_t len, size_t max_bytes, unsigned char **out, size_t *out_len,
                          lion_status *st) {
    *out = NULL;
    *out_len = 0;
    if (len >= 5 && !memcmp(text, "data:", 5)) {
        const char *comma = memchr(text, ',', len);
        if (!comma) return lion_fail(st, LION_EINVAL, "data URI without a comma");
        size_t head = (size_t)(comma - text);
        if (head < 7 || memcmp(comma - 7, ";base64", 7) != 0)
            return lion_fail(st, LION_EINVAL, "data URI is not base64 (expected data:<type>;base64,...)");
        /* the media type is the part before the first ';' (RFC 2397); only images are taken */
        const char *type = text + 5, *type_end = memchr(type, ';', (size_t)(comma - type));
        const size_t type_len = (size_t)(type_end - type);
        if (type_len < 6 || strncasecmp(type, "image/", 6) != 0)
            return lion_fail(st, LION_EINVAL, "data URI of media type '%.*s' is not an image (expected image/...)",
                             (int)(type_len > 64 ? 64 : type_len), type);
        len -= head + 1;
        text = comma + 1;
    }
    if (len == 0) return lion_fail(st, LION_EINVAL, "empty base64 payload");
    size_t cap = BASE64_DECODE_LENGTH(len);
    unsigned char *buf = malloc(cap ? cap : 1);
    if (!buf) return lion_fail(st, LION_ENOMEM, "no memory to decode a %zu-byte base64 payload", len);
    struct base64_decode_ctx ctx;
    base64_decode_init(&ctx);
    size_t n = cap;
    if (!base64_decode_update(&ctx, &n, buf, len, text)) {
        free(buf);
        /* name the first character nettle refuses, so the client can find it */
        size_t at = 0;
        for (; at < len; at++) {
            unsigned char c = (unsigned char)text[at];
            if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/' ||
                  c == '=' || c == ' ' || c == '\t' || c == '\r' || c == '\n'))
                break;
        }
        if (at < len) return lion_fail(st, LION_EINVAL, "not valid base64: character 0x%02x at offset %zu", (unsigned char)text[at], at);
        return lion_fail(st, LION_EINVAL, "not valid base64: misplaced '=' padding");
    }
    if (!base64_decode_final(&ctx)) {
        free(buf);
        return lion_fail(st, LION_EINVAL, "not valid base64: the payload is truncated");
    }
    if (n > max_bytes) {
        free(buf);
        return lion_fail(st, LION_ETOOBIG, "image of %zu bytes exceeds the limit of %zu bytes", n, max_bytes);
    }
    *out = buf;
    *out_len = n;
    return 0;
}
