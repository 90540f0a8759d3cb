/* tap_message.h - one message of the gateway's tap (docs/wire-protocol.md "Message taps").
 *
 *   [topic "<class>/<stage>/<direction>/<request id>"][envelope][tensor frames, data/ only]
 *
 * The same frames come from a SUB socket or from a dump file, so both decode here and
 * everything that reads taps (watch, dump, show, replay) sees one validated form. */
#ifndef LION_TAP_MESSAGE_H
#define LION_TAP_MESSAGE_H

#include "envelope.h"

/* topic + envelope + the most tensor frames an envelope may have */
#define TAP_MAX_FRAMES 66
#define TAP_MAX_TOPIC 256

typedef struct tap_topic {
    int data;              /* class data/ (tensor frames follow) rather than meta/ */
    char stage[16];        /* "vision", ... */
    char direction[4];     /* "out" (JOB, CANCEL) or "in" (PARTIAL, RESULT, ERROR) */
    char request_id[129];
} tap_topic;

typedef struct tap_message {
    tap_topic topic;
    zmq_msg_t topic_frame; /* kept as received, for dump files */
    /* data/: the whole decoded message (tensor views, frames[0] envelope);
     * meta/: the envelope alone, n_tensors 0, descriptors in msg.env->tensors */
    envelope_msg msg;
} tap_message;

/* Parses "<class>/<stage>/<direction>/<request id>"; the request id may hold '/'. */
int tap_topic_parse(const void *data, size_t len, tap_topic *t, lion_status *st);

/* Decodes frames[0..n) (topic first), moving them in; the caller's frames are left
 * empty, still to be closed. On failure st names what was wrong; always close tm. */
int tap_message_decode(tap_message *tm, zmq_msg_t *frames, int n, lion_status *st);

/* Receives one whole tap message from a SUB socket and decodes it. A message with more
 * than TAP_MAX_FRAMES frames is read to its end and refused. LION_EUNAVAILABLE with
 * ENVELOPE_DONTWAIT when nothing is waiting. Always close tm. */
int tap_message_recv(void *sub, tap_message *tm, int flags, lion_status *st);

void tap_message_close(tap_message *tm);

/* What watch, dump, show and replay select: NULL fields match anything. */
typedef struct tap_filter {
    const char *request_id;
    const char *stage;
} tap_filter;

int tap_filter_match(const tap_filter *f, const tap_topic *t);

#endif
