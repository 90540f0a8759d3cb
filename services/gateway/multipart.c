/* multipart.c - multipart/form-data bodies (RFC 7578), for image uploads without base64.
 *
 * Only what a form upload needs: the boundary from the Content-Type, parts delimited by
 * "\r\n--boundary", each with headers and a Content-Disposition naming the field (and a
 * filename for files). Parts are views into the body; nothing is copied. */
#include <string.h>
#include <strings.h>

#include "gateway_impl.h"

/* The boundary parameter of a multipart Content-Type (quoted or not). */
static int boundary_of(const char *content_type, char *out, size_t cap, lion_status *st) {
    const char *b = strcasestr(content_type, "boundary=");
    if (!b) return lion_fail(st, LION_EINVAL, "multipart Content-Type without a boundary");
    b += 9;
    size_t n;
    if (*b == '"') {
        b++;
        n = strcspn(b, "\"");
    } else {
        n = strcspn(b, "; \t");
    }
    if (n == 0 || n > 70) return lion_fail(st, LION_EINVAL, "multipart boundary must be 1 to 70 characters");
    if (n + 1 > cap) return lion_fail(st, LION_EINVAL, "multipart boundary too long");
    memcpy(out, b, n);
    out[n] = 0;
    return 0;
}

/* The value of parameter key (name, filename) in a Content-Disposition header line. */
static int disposition_param(const char *line, size_t len, const char *key, char *out, size_t cap) {
    size_t klen = strlen(key);
    for (size_t i = 0; i + klen + 2 <= len; i++) {
        if ((i == 0 || line[i - 1] == ' ' || line[i - 1] == ';') && !strncasecmp(line + i, key, klen) &&
            line[i + klen] == '=') {
            const char *v = line + i + klen + 1;
            size_t left = len - (i + klen + 1), n;
            if (left && *v == '"') {
                v++;
                left--;
                const char *q = memchr(v, '"', left);
                n = q ? (size_t)(q - v) : left;
            } else {
                n = 0;
                while (n < left && v[n] != ';' && v[n] != ' ') n++;
            }
            if (n >= cap) n = cap - 1;
            memcpy(out, v, n);
            out[n] = 0;
            return 1;
        }
    }
    return 0;
}

int multipart_parse(const char *content_type, const char *body, size_t len, multipart_part *parts, int max_parts,
                    int *n_parts, lion_status *st) {
    char boundary[80], delim[84];
    *n_parts = 0;
    if (boundary_of(content_type, boundary, sizeof boundary, st)) return -1;
    size_t dlen = (size_t)snprintf(delim, sizeof delim, "--%s", boundary);
    const char *end = body + len;
    const char *p = memmem(body, len, delim, dlen);
    if (!p) return lion_fail(st, LION_EINVAL, "multipart body without its boundary");
    for (;;) {
        p += dlen;
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') return 0; /* the closing delimiter */
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            return lion_fail(st, LION_EINVAL, "multipart part %d: boundary not followed by CRLF", *n_parts);
        p += 2;
        const char *head_end = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!head_end) return lion_fail(st, LION_EINVAL, "multipart part %d: headers without an end", *n_parts);
        if (*n_parts == max_parts) return lion_fail(st, LION_ETOOBIG, "more than %d multipart parts", max_parts);
        multipart_part *part = &parts[*n_parts];
        memset(part, 0, sizeof *part);
        int named = 0;
        for (const char *line = p; line < head_end;) {
            const char *eol = memmem(line, (size_t)(head_end + 2 - line), "\r\n", 2);
            size_t ll = (size_t)(eol - line);
            if (ll > 20 && !strncasecmp(line, "content-disposition:", 20)) {
                char file[256];
                named = disposition_param(line + 20, ll - 20, "name", part->name, sizeof part->name);
                part->is_file = disposition_param(line + 20, ll - 20, "filename", file, sizeof file);
            }
            line = eol + 2;
        }
        if (!named)
            return lion_fail(st, LION_EINVAL, "multipart part %d: no Content-Disposition with a name", *n_parts);
        const char *data = head_end + 4;
        char next[88];
        size_t nlen = (size_t)snprintf(next, sizeof next, "\r\n%s", delim);
        const char *stop = memmem(data, (size_t)(end - data), next, nlen);
        if (!stop) return lion_fail(st, LION_EINVAL, "multipart part '%s' is not terminated by the boundary", part->name);
        part->data = data;
        part->len = (size_t)(stop - data);
        (*n_parts)++;
        p = stop + 2;
    }
}
