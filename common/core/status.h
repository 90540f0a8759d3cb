/* status.h - how every fallible function in this project reports what went wrong.
 *
 * A function that can fail returns 0 on success and -1 on failure, and fills a
 * caller-provided lion_status with a code (the same codes travel in error envelopes
 * on the wire, see proto/lion.proto) and a message that names what was wrong:
 * the file, the tensor, the field, the limit. Nothing aborts on bad input. */
#ifndef LION_STATUS_H
#define LION_STATUS_H

#include <stddef.h>

enum lion_code {
    LION_OK = 0,
    LION_EINVAL = 1,       /* malformed request or input: the caller's fault */
    LION_EFORMAT = 2,      /* a file or frame that does not parse or validate */
    LION_ETOOBIG = 3,      /* over a configured limit (bytes, pixels, tokens) */
    LION_ENOMEM = 4,       /* allocation failed */
    LION_EIO = 5,          /* open/read/mmap/socket failed */
    LION_ENOTFOUND = 6,    /* a named tensor, key, route or model is absent */
    LION_ETIMEOUT = 7,     /* a deadline passed */
    LION_EUNAVAILABLE = 8, /* no worker, queue full, shutting down: retry later */
    LION_EINTERNAL = 9,    /* a bug: an invariant did not hold */
    LION_ECANCELED = 10,   /* the client went away and the work was dropped */
    LION_EDENIED = 11      /* no or a wrong credential (API key, CURVE key) */
};

#define LION_STATUS_MSG_MAX 512

typedef struct lion_status {
    int code;
    char msg[LION_STATUS_MSG_MAX];
} lion_status;

/* Fills st (if not NULL) with code and a printf-style message; always returns -1 so that
 * `return lion_fail(st, LION_EINVAL, "...", ...);` reads naturally. */
int lion_fail(lion_status *st, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes an existing message with context ("vision.safetensors: " + msg). Returns -1. */
int lion_fail_prefix(lion_status *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void lion_status_clear(lion_status *st);

/* Stable lower-case name of a code ("invalid_argument", ...), used in JSON errors and logs. */
const char *lion_code_name(int code);

#endif
