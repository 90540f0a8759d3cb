#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int lion_fail(lion_status *st, int code, const char *fmt, ...) {
    if (!st) return -1;
    st->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->msg, sizeof st->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int lion_fail_prefix(lion_status *st, const char *fmt, ...) {
    if (!st) return -1;
    char prefix[LION_STATUS_MSG_MAX], old[LION_STATUS_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, st->msg, sizeof old);
    /* the message is cut, never overflowed, when prefix + old exceed the buffer */
    size_t np = strnlen(prefix, sizeof st->msg - 1);
    memcpy(st->msg, prefix, np);
    size_t room = sizeof st->msg - 1 - np;
    size_t no = strnlen(old, room);
    memcpy(st->msg + np, old, no);
    st->msg[np + no] = '\0';
    if (st->code == LION_OK) st->code = LION_EINTERNAL;
    return -1;
}

void lion_status_clear(lion_status *st) {
    if (!st) return;
    st->code = LION_OK;
    st->msg[0] = '\0';
}

const char *lion_code_name(int code) {
    switch (code) {
    case LION_OK: return "ok";
    case LION_EINVAL: return "invalid_argument";
    case LION_EFORMAT: return "bad_format";
    case LION_ETOOBIG: return "too_large";
    case LION_ENOMEM: return "out_of_memory";
    case LION_EIO: return "io_error";
    case LION_ENOTFOUND: return "not_found";
    case LION_ETIMEOUT: return "deadline_exceeded";
    case LION_EUNAVAILABLE: return "unavailable";
    case LION_EINTERNAL: return "internal";
    case LION_ECANCELED: return "cancelled";
    case LION_EDENIED: return "unauthenticated";
    default: return "unknown";
    }
}
