/* fuzz_envelope.c - the wire codec (common/wire/envelope.h) on hostile multipart messages.
 *
 * Input: [u8 flags][u16 len][envelope frame][u16 len][tensor frame]... (lengths little-endian,
 * cut short by the end of the input; at most 70 frames, so more than the default 64 tensors
 * can be tried). flags & 1 decodes with small limits instead of the defaults.
 *
 * Each message goes through envelope_decode exactly as envelope_recv hands it over (ZeroMQ
 * frames, small ones stored inside the zmq_msg_t as ZeroMQ does). What a worker or the
 * gateway then does with it is done too: a rejected message's partial envelope answered with
 * envelope_error_reply; an accepted one read tensor by tensor, replied to, duplicated, and
 * forwarded: re-encoded with its frames shared (envelope_encode + envelope_forward) and
 * decoded again, which must give the same envelope, names, dtypes, shapes and bytes. */
#include <zmq.h>

#include "envelope.h"
#include "fuzz_util.h"

#define MAX_FRAMES 70

static void frame_from(zmq_msg_t *f, const uint8_t *data, size_t len) {
    if (zmq_msg_init_size(f, len) != 0) abort();
    if (len) memcpy(zmq_msg_data(f), data, len);
}

/* The packed bytes of env (its own descriptors included), malloc'd. */
static uint8_t *packed(const Lion__Envelope *env, size_t *len) {
    *len = lion__envelope__get_packed_size(env);
    uint8_t *b = malloc(*len ? *len : 1);
    if (!b) abort();
    lion__envelope__pack(env, b);
    return b;
}

static void check_same_packing(const Lion__Envelope *a, const Lion__Envelope *b) {
    size_t la, lb;
    uint8_t *pa = packed(a, &la), *pb = packed(b, &lb);
    FUZZ_CHECK(la == lb && memcmp(pa, pb, la) == 0);
    free(pa);
    free(pb);
}

/* Forwards every tensor of m (frames shared) under a copy of its envelope, decodes the
 * result and compares. */
static void forward_round_trip(envelope_msg *m) {
    lion_status st;
    Lion__Envelope *copy = envelope_dup(m->env, &st);
    FUZZ_CHECK(copy != NULL);
    check_same_packing(m->env, copy);
    int n = m->n_tensors;
    envelope_tensor *ets = calloc((size_t)n + 1, sizeof *ets);
    zmq_msg_t *frames = calloc((size_t)n + 1, sizeof *frames);
    if (!ets || !frames) abort();
    for (int i = 0; i < n; i++) ets[i] = envelope_forward(m, i);
    int rc = envelope_encode(copy, ets, n, frames, &st);
    if (rc != 0) fprintf(stderr, "re-encoding an accepted message failed: %s\n", st.msg);
    FUZZ_CHECK(rc == 0);
    envelope_msg back;
    rc = envelope_decode(&back, frames, n + 1, NULL, &st);
    if (rc != 0) fprintf(stderr, "decoding a forwarded message failed: %s\n", st.msg);
    FUZZ_CHECK(rc == 0);
    FUZZ_CHECK(back.n_tensors == n);
    FUZZ_CHECK(back.env->kind == m->env->kind && back.env->has_stage == m->env->has_stage);
    FUZZ_CHECK((back.env->request_id == NULL) == (m->env->request_id == NULL));
    if (m->env->request_id) FUZZ_CHECK(strcmp(back.env->request_id, m->env->request_id) == 0);
    for (int i = 0; i < n; i++) {
        const tensor *a = &m->tensors[i], *b = &back.tensors[i];
        FUZZ_CHECK(strcmp(m->env->tensors[i]->name, back.env->tensors[i]->name) == 0);
        FUZZ_CHECK(a->dtype == b->dtype && a->ndim == b->ndim);
        for (int d = 0; d < a->ndim; d++) FUZZ_CHECK(a->shape[d] == b->shape[d]);
        size_t bytes = tensor_nbytes(a);
        FUZZ_CHECK(bytes == tensor_nbytes(b));
        if (bytes) FUZZ_CHECK(memcmp(a->data, b->data, bytes) == 0);
    }
    envelope_msg_close(&back);
    for (int i = 0; i <= n; i++) zmq_msg_close(&frames[i]);
    free(frames);
    free(ets);
    envelope_free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_cursor c = {data, size};
    const uint8_t flags = fuzz_u8(&c);
    zmq_msg_t frames[MAX_FRAMES];
    int n = 0;
    while (n < MAX_FRAMES && (n == 0 || c.left > 0)) {
        size_t len;
        const uint8_t *at = fuzz_take(&c, fuzz_u16(&c), &len);
        frame_from(&frames[n++], at, len);
    }
    envelope_limits small = {.max_envelope_bytes = 512,
                             .max_decoded_bytes = 4096,
                             .max_tensors = 3,
                             .max_payload_bytes = 256,
                             .max_request_id = 16};
    const envelope_limits *lim = (flags & 1) ? &small : NULL;

    /* the envelope frame alone, as lion-tap reads meta/ messages */
    lion_status st = {0};
    Lion__Envelope *alone = envelope_unpack(zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]), lim, &st);
    FUZZ_CHECK(alone || st.msg[0]);
    envelope_free(alone);

    envelope_msg m;
    st.msg[0] = 0;
    int rc = envelope_decode(&m, frames, n, lim, &st);
    if (rc != 0) {
        FUZZ_CHECK(st.msg[0] != 0);
        /* a worker answers what it can of a malformed message */
        Lion__Envelope *err = envelope_error_reply(m.env, st.code, st.msg, &st);
        FUZZ_CHECK(err != NULL);
        envelope_free(err);
    } else {
        FUZZ_CHECK(m.env != NULL && m.n_tensors == n - 1);
        uint8_t sum = 0;
        for (int i = 0; i < m.n_tensors; i++) {
            FUZZ_CHECK(envelope_msg_find(&m, m.env->tensors[i]->name) == i);
            const uint8_t *b = m.tensors[i].data;
            for (size_t k = 0, nb = tensor_nbytes(&m.tensors[i]); k < nb; k++) sum ^= b[k];
        }
        (void)sum;
        Lion__Envelope *reply = envelope_reply(m.env, LION__KIND__RESULT, &st);
        FUZZ_CHECK(reply != NULL);
        FUZZ_CHECK(envelope_add_hop(reply, "fuzz", "r0", 1, 2, &st) == 0);
        envelope_free(reply);
        forward_round_trip(&m);
    }
    envelope_msg_close(&m);
    for (int i = 0; i < n; i++) zmq_msg_close(&frames[i]);
    return 0;
}
