/* envelope.h - the one place that encodes, decodes and validates wire messages.
 *
 * A message is one ZeroMQ multipart message:
 *   [routing id, ROUTER side only][envelope frame][one raw frame per tensor descriptor]
 * The envelope is a protobuf lion.Envelope (proto/lion.proto); tensor bytes travel as
 * their own frames so that they are never copied into or out of protobuf, and a tensor
 * received from one stage is forwarded to the next by sharing its frame (zmq_msg_copy
 * shares the buffer, it does not copy it). docs/wire-protocol.md has the rules.
 *
 * Ownership of envelopes: every Lion__Envelope * this API hands out is a heap tree whose
 * every pointer came from malloc, decoded or built alike, and envelope_free releases it.
 * Code that fills fields of such an envelope by hand must malloc what it stores. */
#ifndef LION_ENVELOPE_H
#define LION_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "lion.pb-c.h"
#include "protocol.h"
#include "status.h"
#include "tensor.h"

/* The schema version this build speaks (proto/proto_version.c); every other is rejected. */
extern const int lion_proto_schema_version;

/* What a received message may cost before it is rejected. Zero fields take the defaults. */
typedef struct envelope_limits {
    size_t max_envelope_bytes;  /* envelope frame size (default 1 MiB) */
    size_t max_decoded_bytes;   /* memory protobuf-c may allocate to unpack it (default 16 MiB) */
    int max_tensors;            /* tensor descriptors = tensor frames (default 64) */
    uint64_t max_payload_bytes; /* all tensor frames together (default 2 GiB) */
    size_t max_request_id;      /* request id length (default 128) */
} envelope_limits;

envelope_limits envelope_limits_default(void);

/* A ROUTER peer's routing id (ZeroMQ caps them at 255 bytes). */
typedef struct envelope_peer {
    size_t len;
    unsigned char id[255];
} envelope_peer;

/* A received message. The tensors are views into the frames (zero copy), so they live
 * exactly as long as the message: until envelope_msg_close. Move it by value freely,
 * the frames themselves stay where they are. */
typedef struct envelope_msg {
    envelope_peer peer;    /* set when received with ENVELOPE_ROUTED */
    Lion__Envelope *env;   /* NULL when the envelope frame did not parse */
    int n_tensors;
    tensor *tensors;       /* n_tensors views, in descriptor order; names in env->tensors[i] */
    int n_frames;
    zmq_msg_t *frames;     /* [0] envelope, [1 + i] tensor i */
} envelope_msg;

/* One tensor of an outgoing message.
 *  - frame set: that frame (a received one, which t views) is sent shared, without a copy;
 *    t only supplies dtype and shape.
 *  - else t->owns_data: the buffer (from malloc, as tensor_alloc makes it) is handed to
 *    ZeroMQ, which frees it once sent; t is left empty (data NULL, owns_data 0).
 *  - else t is a view of memory the caller keeps (weights, an arena): it is copied. */
typedef struct envelope_tensor {
    const char *name;
    tensor *t;
    zmq_msg_t *frame;
} envelope_tensor;

/* Flags for envelope_send / envelope_recv. */
enum {
    ENVELOPE_ROUTED = 1,   /* a routing id frame precedes the envelope (ROUTER sockets) */
    ENVELOPE_DONTWAIT = 2, /* fail with LION_EUNAVAILABLE instead of blocking */
};

/* --- building envelopes ------------------------------------------------------------- */

/* A new envelope with the schema version set; stage 0 and request_id NULL leave those
 * fields absent. NULL (st filled) when memory is short. */
Lion__Envelope *envelope_new(Lion__Kind kind, int stage, const char *request_id, lion_status *st);
/* A RESULT or ERROR answering job: same request id, stage and attempt, and a copy of its
 * trace (the worker then appends its own hop). */
Lion__Envelope *envelope_reply(const Lion__Envelope *job, Lion__Kind kind, lion_status *st);
/* An ERROR answering job with code and message. job may be NULL or lack fields (a
 * malformed message): what it has is copied. */
Lion__Envelope *envelope_error_reply(const Lion__Envelope *job, int code, const char *message,
                                     lion_status *st);
/* A PARTIAL for job (its request id, stage and attempt; no trace): result.sequences[0]
 * holds text and the n_ids token ids (ids may be NULL when n_ids is 0), without a score. */
Lion__Envelope *envelope_partial(const Lion__Envelope *job, const char *text, const int32_t *ids,
                                 size_t n_ids, lion_status *st);
/* A CANCEL of the job of request_id at stage, dispatch attempt (the gateway's side). */
Lion__Envelope *envelope_cancel(const char *request_id, int stage, uint32_t attempt, lion_status *st);
/* A deep copy (e.g. the task of a request, copied into each stage's job). */
Lion__Envelope *envelope_dup(const Lion__Envelope *env, lion_status *st);
void envelope_free(Lion__Envelope *env);

int envelope_set_error(Lion__Envelope *env, int code, const char *message, lion_status *st);
int envelope_add_hop(Lion__Envelope *env, const char *service, const char *replica_id,
                     int64_t receive_us, int64_t finish_us, lion_status *st);
/* Result parts for text answers. The sequence returned stays owned by env. */
Lion__Sequence *envelope_add_sequence(Lion__Envelope *env, const char *text,
                                      const int32_t *token_ids, size_t n_tokens, float score,
                                      lion_status *st);
int envelope_add_box(Lion__Sequence *seq, float x0, float y0, float x1, float y1, lion_status *st);
/* Why the sequence ended (LION__FINISH_REASON__STOP or __LENGTH; 0 leaves it absent) and the
 * tokens generated for it, the decoder start id not counted. */
void envelope_sequence_set_finish(Lion__Sequence *seq, int finish_reason, uint32_t generated_tokens);
int envelope_set_prompt_tokens(Lion__Envelope *env, uint32_t n, lion_status *st);
/* When the llm generated the job's first token (unix microseconds): the gateway's time to
 * first token. */
int envelope_set_first_token(Lion__Envelope *env, int64_t unix_us, lion_status *st);
/* Whether the stage answered from its cache (vision, tagger). */
int envelope_set_cache_hit(Lion__Envelope *env, int hit, lion_status *st);
int envelope_add_tag(Lion__Envelope *env, const char *name, float score, lion_status *st);
int envelope_add_top_tag(Lion__Envelope *env, const char *name, float score, lion_status *st);

/* --- encoding and sending ----------------------------------------------------------- */

/* Encodes env with descriptors made from tensors[0..n) into frames[0..n] (n + 1 frames,
 * initialized here; the caller sends or closes them). Descriptors already in env are
 * ignored; env is left as it was. Checks names (non-empty, unique), dtypes and shapes
 * first, so that a bad tensor fails before any buffer changes hands. */
int envelope_encode(Lion__Envelope *env, envelope_tensor *tensors, int n, zmq_msg_t *frames,
                    lion_status *st);
/* envelope_encode, then sends [peer id when peer != NULL][envelope][tensors] on sock. */
int envelope_send(void *sock, const envelope_peer *peer, Lion__Envelope *env,
                  envelope_tensor *tensors, int n, int flags, lion_status *st);

/* --- receiving and decoding ---------------------------------------------------------- */

/* Receives one whole multipart message (ENVELOPE_ROUTED: its first frame is the peer's
 * routing id) and decodes it. On any failure st says what was wrong and, when the
 * envelope itself parsed, m->env is kept so that the caller can answer the request id;
 * m->n_frames == 0 means nothing was received (socket error, or EAGAIN with DONTWAIT:
 * LION_EUNAVAILABLE). Always envelope_msg_close(m) afterwards. limits may be NULL. */
int envelope_recv(void *sock, envelope_msg *m, int flags, const envelope_limits *limits,
                  lion_status *st);
/* Unpacks one envelope frame within lim's size and decode budget (NULL: the defaults), with
 * the errors envelope_recv gives; nothing else is checked. NULL with st filled on failure.
 * For readers of envelopes without their tensor frames (lion-tap's meta/ messages). */
Lion__Envelope *envelope_unpack(const void *data, size_t len, const envelope_limits *lim, lion_status *st);
/* Decodes frames[0..n) (envelope + tensor frames) into m, moving them in (the caller's
 * frames are left empty, still to be closed). Same failure contract as envelope_recv. */
int envelope_decode(envelope_msg *m, zmq_msg_t *frames, int n, const envelope_limits *limits,
                    lion_status *st);
void envelope_msg_close(envelope_msg *m);

/* Index of the tensor called name, or -1. */
int envelope_msg_find(const envelope_msg *m, const char *name);
/* Sends tensor i of m on, sharing its frame. */
envelope_tensor envelope_forward(envelope_msg *m, int i);

#endif
