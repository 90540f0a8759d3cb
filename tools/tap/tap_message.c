#include "tap_message.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Copies the part of s[0..len) up to the next '/' into out; returns the length consumed
 * (with the '/'), or -1 when there is no '/' or the part does not fit. */
static int topic_part(const char *s, size_t len, char *out, size_t cap) {
    const char *slash = memchr(s, '/', len);
    if (!slash) return -1;
    size_t n = (size_t)(slash - s);
    if (n >= cap) return -1;
    memcpy(out, s, n);
    out[n] = '\0';
    return (int)n + 1;
}

int tap_topic_parse(const void *data, size_t len, tap_topic *t, lion_status *st) {
    memset(t, 0, sizeof *t);
    if (len > TAP_MAX_TOPIC) return lion_fail(st, LION_EFORMAT, "bad topic: %zu bytes, at most %d", len, TAP_MAX_TOPIC);
    char topic[TAP_MAX_TOPIC + 1];
    memcpy(topic, data, len);
    topic[len] = '\0';
    if (strlen(topic) != len) return lion_fail(st, LION_EFORMAT, "bad topic: it holds a NUL byte");
    /* topics go into messages: bytes a terminal would misread are shown as '?' */
    char shown[TAP_MAX_TOPIC + 1];
    for (size_t i = 0; i <= len; i++) shown[i] = i < len && (topic[i] < 0x20 || topic[i] > 0x7e) ? '?' : topic[i];
    const char *s = topic;
    size_t left = len;
    char cls[8];
    int used = topic_part(s, left, cls, sizeof cls);
    if (used < 0 || (strcmp(cls, "meta") && strcmp(cls, "data")))
        return lion_fail(st, LION_EFORMAT, "bad topic '%s': it must start with meta/ or data/", shown);
    t->data = cls[0] == 'd';
    s += used, left -= (size_t)used;
    used = topic_part(s, left, t->stage, sizeof t->stage);
    if (used < 0 || !lion_stage_from_name(t->stage))
        return lion_fail(st, LION_EFORMAT, "bad topic '%s': no known stage after the class", shown);
    s += used, left -= (size_t)used;
    used = topic_part(s, left, t->direction, sizeof t->direction);
    if (used < 0 || (strcmp(t->direction, "out") && strcmp(t->direction, "in")))
        return lion_fail(st, LION_EFORMAT, "bad topic '%s': direction must be out or in", shown);
    s += used, left -= (size_t)used;
    if (left == 0 || left >= sizeof t->request_id)
        return lion_fail(st, LION_EFORMAT, "bad topic '%s': request id must be 1..%zu bytes", shown,
                         sizeof t->request_id - 1);
    memcpy(t->request_id, s, left);
    t->request_id[left] = '\0';
    return 0;
}

/* A meta/ envelope has descriptors but no tensor frames, which envelope_decode would
 * refuse, so it is unpacked here with the same limits and checked as far as a reader
 * of descriptors needs. */
static int decode_meta(envelope_msg *m, lion_status *st) {
    envelope_limits lim = envelope_limits_default();
    m->env = envelope_unpack(zmq_msg_data(&m->frames[0]), zmq_msg_size(&m->frames[0]), &lim, st);
    if (!m->env) return -1;
    const Lion__Envelope *env = m->env;
    if (!env->has_schema_version || env->schema_version != (uint32_t)lion_proto_schema_version)
        return lion_fail(st, LION_EFORMAT, "schema version %u, this build speaks %d",
                         env->has_schema_version ? env->schema_version : 0, lion_proto_schema_version);
    if (env->n_tensors > (size_t)lim.max_tensors)
        return lion_fail(st, LION_ETOOBIG, "%zu tensor descriptors, at most %d", env->n_tensors, lim.max_tensors);
    for (size_t i = 0; i < env->n_tensors; i++) {
        const Lion__TensorDesc *d = env->tensors[i];
        if (!d->name || !d->name[0]) return lion_fail(st, LION_EFORMAT, "tensor %zu: empty name", i);
        if (d->n_shape > TENSOR_MAX_DIMS)
            return lion_fail(st, LION_EFORMAT, "tensor '%.64s': %zu dimensions, at most %d", d->name, d->n_shape,
                             TENSOR_MAX_DIMS);
    }
    return 0;
}

/* The topic repeats what the envelope says; a gateway that disagrees with itself is a
 * bug worth naming rather than printing one of the two. */
static int check_topic_matches(const tap_topic *t, const Lion__Envelope *env, lion_status *st) {
    int kind = env->has_kind ? (int)env->kind : 0;
    if (kind != LION__KIND__JOB && kind != LION__KIND__CANCEL && kind != LION__KIND__RESULT &&
        kind != LION__KIND__ERROR && kind != LION__KIND__PARTIAL)
        return lion_fail(st, LION_EFORMAT, "bad envelope: a tap carries JOB, CANCEL, PARTIAL, RESULT or ERROR, not kind %d",
                         kind);
    const char *want_dir = kind == LION__KIND__JOB || kind == LION__KIND__CANCEL ? "out" : "in";
    if (strcmp(t->direction, want_dir) != 0)
        return lion_fail(st, LION_EFORMAT, "topic says direction %s but the envelope is a %s", t->direction,
                         lion_kind_name(kind));
    const char *stage = env->has_stage ? lion_stage_name(env->stage) : "(none)";
    if (strcmp(t->stage, stage) != 0)
        return lion_fail(st, LION_EFORMAT, "topic says stage %s but the envelope says %s", t->stage, stage);
    const char *id = env->request_id ? env->request_id : "";
    if (strcmp(t->request_id, id) != 0)
        return lion_fail(st, LION_EFORMAT, "topic says request %s but the envelope says '%.128s'", t->request_id, id);
    return 0;
}

int tap_message_decode(tap_message *tm, zmq_msg_t *frames, int n, lion_status *st) {
    memset(tm, 0, sizeof *tm);
    zmq_msg_init(&tm->topic_frame);
    if (n < 2) return lion_fail(st, LION_EFORMAT, "tap message has %d frames, at least 2 (topic, envelope)", n);
    if (n > TAP_MAX_FRAMES)
        return lion_fail(st, LION_ETOOBIG, "tap message has %d frames, at most %d", n, TAP_MAX_FRAMES);
    zmq_msg_move(&tm->topic_frame, &frames[0]);
    if (tap_topic_parse(zmq_msg_data(&tm->topic_frame), zmq_msg_size(&tm->topic_frame), &tm->topic, st) != 0)
        return -1;
    if (!tm->topic.data && n != 2)
        return lion_fail(st, LION_EFORMAT, "meta/ tap message has %d frames, a meta message is topic + envelope", n);
    if (tm->topic.data) {
        if (envelope_decode(&tm->msg, frames + 1, n - 1, NULL, st) != 0)
            return lion_fail_prefix(st, "bad envelope: ");
    } else {
        tm->msg.frames = malloc(sizeof *tm->msg.frames);
        if (!tm->msg.frames) return lion_fail(st, LION_ENOMEM, "tap message: out of memory");
        zmq_msg_init(&tm->msg.frames[0]);
        zmq_msg_move(&tm->msg.frames[0], &frames[1]);
        tm->msg.n_frames = 1;
        if (decode_meta(&tm->msg, st) != 0) return lion_fail_prefix(st, "bad envelope: ");
    }
    return check_topic_matches(&tm->topic, tm->msg.env, st);
}

static int more_parts(void *sock) {
    int more = 0;
    size_t len = sizeof more;
    return zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len) == 0 && more;
}

int tap_message_recv(void *sub, tap_message *tm, int flags, lion_status *st) {
    memset(tm, 0, sizeof *tm);
    zmq_msg_init(&tm->topic_frame);
    zmq_msg_t frames[TAP_MAX_FRAMES];
    int seen = 0, kept = 0, more = 1;
    int zflags = (flags & ENVELOPE_DONTWAIT) ? ZMQ_DONTWAIT : 0;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sub, seen ? 0 : zflags) < 0) {
            int err = zmq_errno();
            zmq_msg_close(&part);
            for (int i = 0; i < kept; i++) zmq_msg_close(&frames[i]);
            if (seen == 0 && err == EAGAIN) return lion_fail(st, LION_EUNAVAILABLE, "no tap message waiting");
            return lion_fail(st, LION_EIO, "tap receive: %s", zmq_strerror(err));
        }
        more = more_parts(sub);
        if (kept < TAP_MAX_FRAMES) {
            zmq_msg_init(&frames[kept]);
            zmq_msg_move(&frames[kept++], &part);
        }
        zmq_msg_close(&part); /* frames past the limit are counted, then dropped */
        seen++;
    }
    int rc = seen > TAP_MAX_FRAMES
                 ? lion_fail(st, LION_ETOOBIG, "tap message has %d frames, at most %d", seen, TAP_MAX_FRAMES)
                 : tap_message_decode(tm, frames, kept, st);
    for (int i = 0; i < kept; i++) zmq_msg_close(&frames[i]);
    return rc;
}

void tap_message_close(tap_message *tm) {
    if (!tm) return;
    zmq_msg_close(&tm->topic_frame);
    envelope_msg_close(&tm->msg);
    memset(tm, 0, sizeof *tm);
    zmq_msg_init(&tm->topic_frame); /* closing twice is harmless */
}

int tap_filter_match(const tap_filter *f, const tap_topic *t) {
    if (f->stage && strcmp(f->stage, t->stage) != 0) return 0;
    if (f->request_id && strcmp(f->request_id, t->request_id) != 0) return 0;
    return 1;
}
