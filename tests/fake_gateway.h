/* fake_gateway.h - a stand-in gateway for service integration tests.
 *
 * Binds a ROUTER on a loopback port, starts a real service executable as a child process
 * pointed at it, waits for its READY, then sends jobs (and CANCELs) and returns the answers,
 * skipping heartbeats, and PARTIALs unless asked for them. Stopping sends SIGTERM and reports
 * how the child exited. */
#ifndef LION_FAKE_GATEWAY_H
#define LION_FAKE_GATEWAY_H

#include <sys/types.h>

#include "envelope.h"

typedef struct fake_gateway {
    void *ctx, *router;
    char endpoint[64];
    pid_t child;
    envelope_peer worker;
    unsigned capacity; /* from READY */
    int want_partials; /* fake_gateway_recv returns PARTIALs too (else they are skipped) */
    unsigned partials; /* PARTIALs received, returned or skipped */
} fake_gateway;

/* argv: the service command line (NULL-terminated); "--gateway <endpoint>" is appended.
 * Returns 0 once READY arrived within timeout_ms, -1 with a message on stderr otherwise. */
int fake_gateway_start(fake_gateway *g, const char *const *argv, int timeout_ms);

/* Sends job (+ tensors) to the worker and waits up to timeout_ms for the next RESULT or
 * ERROR, into reply (close it with envelope_msg_close). Returns 0 when one came. */
int fake_gateway_call(fake_gateway *g, Lion__Envelope *job, envelope_tensor *tensors, int n,
                      envelope_msg *reply, int timeout_ms);

/* Sends raw frames as they are (for malformed-message tests). */
int fake_gateway_send_raw(fake_gateway *g, const void *const *frames, const size_t *lens, int n);
/* Waits for the next RESULT or ERROR (or PARTIAL, with want_partials). */
int fake_gateway_recv(fake_gateway *g, envelope_msg *reply, int timeout_ms);
/* Sends a CANCEL of the job of request_id at stage, dispatch attempt. */
int fake_gateway_cancel(fake_gateway *g, const char *request_id, int stage, unsigned attempt);

/* SIGTERM, wait; returns the child's exit status (0 = clean), or -1 when it had to be killed. */
int fake_gateway_stop(fake_gateway *g);

#endif
