#include "envelope.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Appends item to a malloc'd array of n elements (the layout protobuf-c frees). */
#define ARRAY_PUSH(arr, n, item, on_fail)                                  \
    do {                                                                   \
        void *p_ = realloc((arr), ((n) + 1) * sizeof *(arr));              \
        if (!p_) { on_fail; }                                              \
        (arr) = p_;                                                        \
        (arr)[(n)++] = (item);                                             \
    } while (0)

envelope_limits envelope_limits_default(void) {
    envelope_limits lim = {
        .max_envelope_bytes = 1u << 20,
        .max_decoded_bytes = 16u << 20,
        .max_tensors = 64,
        .max_payload_bytes = 2ull << 30,
        .max_request_id = 128,
    };
    return lim;
}

static envelope_limits limits_or_default(const envelope_limits *given) {
    envelope_limits lim = envelope_limits_default();
    if (!given) return lim;
    if (given->max_envelope_bytes) lim.max_envelope_bytes = given->max_envelope_bytes;
    if (given->max_decoded_bytes) lim.max_decoded_bytes = given->max_decoded_bytes;
    if (given->max_tensors > 0) lim.max_tensors = given->max_tensors;
    if (given->max_payload_bytes) lim.max_payload_bytes = given->max_payload_bytes;
    if (given->max_request_id) lim.max_request_id = given->max_request_id;
    return lim;
}

/* --- names ---------------------------------------------------------------------------- */

static int kind_known(int kind) { return kind >= LION__KIND__JOB && kind <= LION__KIND__CANCEL; }

/* Kinds that belong to one request and must name it. */
static int kind_has_request(int kind) {
    return kind == LION__KIND__JOB || kind == LION__KIND__RESULT || kind == LION__KIND__ERROR ||
           kind == LION__KIND__PARTIAL || kind == LION__KIND__CANCEL;
}

/* The wire DType numbers are tensor.h's (lion.proto says so); this is the one mapping. */
static int dtype_from_wire(int wire, dtype *out) {
    switch (wire) {
    case LION__DTYPE__F32: *out = DTYPE_F32; return 0;
    case LION__DTYPE__F16: *out = DTYPE_F16; return 0;
    case LION__DTYPE__BF16: *out = DTYPE_BF16; return 0;
    case LION__DTYPE__I8: *out = DTYPE_I8; return 0;
    case LION__DTYPE__U8: *out = DTYPE_U8; return 0;
    case LION__DTYPE__I32: *out = DTYPE_I32; return 0;
    case LION__DTYPE__I64: *out = DTYPE_I64; return 0;
    default: return -1;
    }
}

/* --- building envelopes ------------------------------------------------------------- */

void envelope_free(Lion__Envelope *env) {
    /* built envelopes have the same all-malloc layout as unpacked ones */
    if (env) lion__envelope__free_unpacked(env, NULL);
}

static char *str_dup(const char *s, int *failed) {
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *failed = 1;
    return d;
}

Lion__Envelope *envelope_new(Lion__Kind kind, int stage, const char *request_id, lion_status *st) {
    Lion__Envelope *env = malloc(sizeof *env);
    if (!env) {
        lion_fail(st, LION_ENOMEM, "envelope_new: out of memory");
        return NULL;
    }
    lion__envelope__init(env);
    env->has_schema_version = 1;
    env->schema_version = (uint32_t)lion_proto_schema_version;
    env->has_kind = 1;
    env->kind = kind;
    if (stage) {
        env->has_stage = 1;
        env->stage = (Lion__Stage)stage;
    }
    int failed = 0;
    env->request_id = str_dup(request_id, &failed);
    if (failed) {
        envelope_free(env);
        lion_fail(st, LION_ENOMEM, "envelope_new: out of memory");
        return NULL;
    }
    return env;
}

int envelope_add_hop(Lion__Envelope *env, const char *service, const char *replica_id,
                     int64_t receive_us, int64_t finish_us, lion_status *st) {
    Lion__Hop *hop = malloc(sizeof *hop);
    if (!hop) return lion_fail(st, LION_ENOMEM, "envelope_add_hop: out of memory");
    lion__hop__init(hop);
    int failed = 0;
    hop->service = str_dup(service, &failed);
    hop->replica_id = str_dup(replica_id, &failed);
    hop->has_receive_us = 1;
    hop->receive_us = receive_us;
    hop->has_finish_us = 1;
    hop->finish_us = finish_us;
    if (!failed) {
        ARRAY_PUSH(env->trace, env->n_trace, hop, failed = 1);
    }
    if (failed) {
        lion__hop__free_unpacked(hop, NULL);
        return lion_fail(st, LION_ENOMEM, "envelope_add_hop: out of memory");
    }
    return 0;
}

Lion__Envelope *envelope_reply(const Lion__Envelope *job, Lion__Kind kind, lion_status *st) {
    int stage = job && job->has_stage ? (int)job->stage : 0;
    Lion__Envelope *env = envelope_new(kind, stage, job ? job->request_id : NULL, st);
    if (!env || !job) return env;
    if (job->has_attempt) {
        env->has_attempt = 1;
        env->attempt = job->attempt;
    }
    for (size_t i = 0; i < job->n_trace; i++) {
        const Lion__Hop *h = job->trace[i];
        if (envelope_add_hop(env, h->service, h->replica_id, h->receive_us, h->finish_us, st) != 0) {
            envelope_free(env);
            return NULL;
        }
        /* keep absent times absent rather than turning them into 0 */
        env->trace[i]->has_receive_us = h->has_receive_us;
        env->trace[i]->has_finish_us = h->has_finish_us;
    }
    return env;
}

int envelope_set_error(Lion__Envelope *env, int code, const char *message, lion_status *st) {
    Lion__Error *err = env->error;
    if (!err) {
        err = malloc(sizeof *err);
        if (!err) return lion_fail(st, LION_ENOMEM, "envelope_set_error: out of memory");
        lion__error__init(err);
        env->error = err;
    }
    int failed = 0;
    char *msg = str_dup(message ? message : "", &failed);
    if (failed) return lion_fail(st, LION_ENOMEM, "envelope_set_error: out of memory");
    free(err->message);
    err->message = msg;
    err->has_code = 1;
    err->code = code;
    return 0;
}

Lion__Envelope *envelope_error_reply(const Lion__Envelope *job, int code, const char *message,
                                     lion_status *st) {
    Lion__Envelope *env = envelope_reply(job, LION__KIND__ERROR, st);
    if (env && envelope_set_error(env, code, message, st) != 0) {
        envelope_free(env);
        return NULL;
    }
    return env;
}

Lion__Envelope *envelope_dup(const Lion__Envelope *env, lion_status *st) {
    /* a pack/unpack round trip is the deep copy protobuf-c offers */
    size_t len = lion__envelope__get_packed_size(env);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        lion_fail(st, LION_ENOMEM, "envelope_dup: out of memory");
        return NULL;
    }
    lion__envelope__pack(env, buf);
    Lion__Envelope *copy = lion__envelope__unpack(NULL, len, buf);
    free(buf);
    if (!copy) lion_fail(st, LION_ENOMEM, "envelope_dup: out of memory");
    return copy;
}

static Lion__Result *result_of(Lion__Envelope *env) {
    if (!env->result) {
        env->result = malloc(sizeof *env->result);
        if (env->result) lion__result__init(env->result);
    }
    return env->result;
}

Lion__Sequence *envelope_add_sequence(Lion__Envelope *env, const char *text,
                                      const int32_t *token_ids, size_t n_tokens, float score,
                                      lion_status *st) {
    Lion__Result *res = result_of(env);
    Lion__Sequence *seq = res ? malloc(sizeof *seq) : NULL;
    if (!seq) {
        lion_fail(st, LION_ENOMEM, "envelope_add_sequence: out of memory");
        return NULL;
    }
    lion__sequence__init(seq);
    int failed = 0;
    seq->text = str_dup(text, &failed);
    seq->has_score = 1;
    seq->score = score;
    if (n_tokens) {
        seq->token_ids = malloc(n_tokens * sizeof *seq->token_ids);
        if (seq->token_ids) {
            memcpy(seq->token_ids, token_ids, n_tokens * sizeof *seq->token_ids);
            seq->n_token_ids = n_tokens;
        } else {
            failed = 1;
        }
    }
    if (!failed) {
        ARRAY_PUSH(res->sequences, res->n_sequences, seq, failed = 1);
    }
    if (failed) {
        lion__sequence__free_unpacked(seq, NULL);
        lion_fail(st, LION_ENOMEM, "envelope_add_sequence: out of memory");
        return NULL;
    }
    return seq;
}

void envelope_sequence_set_finish(Lion__Sequence *seq, int finish_reason, uint32_t generated_tokens) {
    seq->has_finish_reason = finish_reason != 0;
    seq->finish_reason = (Lion__FinishReason)finish_reason;
    seq->has_generated_tokens = 1;
    seq->generated_tokens = generated_tokens;
}

Lion__Envelope *envelope_partial(const Lion__Envelope *job, const char *text, const int32_t *ids,
                                 size_t n_ids, lion_status *st) {
    Lion__Envelope *env =
        envelope_new(LION__KIND__PARTIAL, job->has_stage ? (int)job->stage : 0, job->request_id, st);
    if (!env) return NULL;
    env->has_attempt = job->has_attempt;
    env->attempt = job->attempt;
    Lion__Sequence *seq = envelope_add_sequence(env, text ? text : "", ids, n_ids, 0.0f, st);
    if (!seq) {
        envelope_free(env);
        return NULL;
    }
    seq->has_score = 0; /* a part of an answer has no score of its own */
    return env;
}

Lion__Envelope *envelope_cancel(const char *request_id, int stage, uint32_t attempt, lion_status *st) {
    Lion__Envelope *env = envelope_new(LION__KIND__CANCEL, stage, request_id, st);
    if (!env) return NULL;
    env->has_attempt = 1;
    env->attempt = attempt;
    return env;
}

int envelope_set_prompt_tokens(Lion__Envelope *env, uint32_t n, lion_status *st) {
    Lion__Result *res = result_of(env);
    if (!res) return lion_fail(st, LION_ENOMEM, "envelope_set_prompt_tokens: out of memory");
    res->has_prompt_tokens = 1;
    res->prompt_tokens = n;
    return 0;
}

int envelope_set_first_token(Lion__Envelope *env, int64_t unix_us, lion_status *st) {
    Lion__Result *res = result_of(env);
    if (!res) return lion_fail(st, LION_ENOMEM, "envelope_set_first_token: out of memory");
    res->has_first_token_us = 1;
    res->first_token_us = unix_us;
    return 0;
}

int envelope_set_cache_hit(Lion__Envelope *env, int hit, lion_status *st) {
    Lion__Result *res = result_of(env);
    if (!res) return lion_fail(st, LION_ENOMEM, "envelope_set_cache_hit: out of memory");
    res->has_cache_hit = 1;
    res->cache_hit = hit != 0;
    return 0;
}

int envelope_add_box(Lion__Sequence *seq, float x0, float y0, float x1, float y1, lion_status *st) {
    Lion__Box *box = malloc(sizeof *box);
    if (!box) return lion_fail(st, LION_ENOMEM, "envelope_add_box: out of memory");
    lion__box__init(box);
    box->has_x0 = box->has_y0 = box->has_x1 = box->has_y1 = 1;
    box->x0 = x0;
    box->y0 = y0;
    box->x1 = x1;
    box->y1 = y1;
    int failed = 0;
    ARRAY_PUSH(seq->boxes, seq->n_boxes, box, failed = 1);
    if (failed) {
        free(box);
        return lion_fail(st, LION_ENOMEM, "envelope_add_box: out of memory");
    }
    return 0;
}

static int tag_push(Lion__Tag ***arr, size_t *n, const char *name, float score, lion_status *st) {
    Lion__Tag *tag = malloc(sizeof *tag);
    if (!tag) return lion_fail(st, LION_ENOMEM, "envelope_add_tag: out of memory");
    lion__tag__init(tag);
    int failed = 0;
    tag->name = str_dup(name, &failed);
    tag->has_score = 1;
    tag->score = score;
    if (!failed) {
        ARRAY_PUSH(*arr, *n, tag, failed = 1);
    }
    if (failed) {
        lion__tag__free_unpacked(tag, NULL);
        return lion_fail(st, LION_ENOMEM, "envelope_add_tag: out of memory");
    }
    return 0;
}

int envelope_add_tag(Lion__Envelope *env, const char *name, float score, lion_status *st) {
    Lion__Result *res = result_of(env);
    if (!res) return lion_fail(st, LION_ENOMEM, "envelope_add_tag: out of memory");
    return tag_push(&res->tags, &res->n_tags, name, score, st);
}

int envelope_add_top_tag(Lion__Envelope *env, const char *name, float score, lion_status *st) {
    Lion__Result *res = result_of(env);
    if (!res) return lion_fail(st, LION_ENOMEM, "envelope_add_top_tag: out of memory");
    return tag_push(&res->top_tags, &res->n_top_tags, name, score, st);
}

/* --- encoding and sending ----------------------------------------------------------- */

_Static_assert((int)LION__DTYPE__F32 == (int)DTYPE_F32 && (int)LION__DTYPE__F16 == (int)DTYPE_F16 &&
                   (int)LION__DTYPE__BF16 == (int)DTYPE_BF16 && (int)LION__DTYPE__I8 == (int)DTYPE_I8 &&
                   (int)LION__DTYPE__U8 == (int)DTYPE_U8 && (int)LION__DTYPE__I32 == (int)DTYPE_I32 &&
                   (int)LION__DTYPE__I64 == (int)DTYPE_I64,
               "lion.proto DType numbers must equal tensor.h's enum dtype");

static void free_handed_off(void *data, void *hint) { free(data); }

/* Checks one outgoing tensor; sets *bytes to its byte length. */
static int outgoing_check(envelope_tensor *tensors, int i, size_t *bytes, lion_status *st) {
    const envelope_tensor *et = &tensors[i];
    if (!et->name || !et->name[0]) return lion_fail(st, LION_EINVAL, "outgoing tensor %d: empty name", i);
    for (int j = 0; j < i; j++)
        if (strcmp(tensors[j].name, et->name) == 0)
            return lion_fail(st, LION_EINVAL, "outgoing tensor %d '%.64s': duplicate name (also tensor %d)",
                             i, et->name, j);
    const tensor *t = et->t;
    if (!t) return lion_fail(st, LION_EINVAL, "outgoing tensor '%.64s': no tensor", et->name);
    if (dtype_size(t->dtype) == 0)
        return lion_fail(st, LION_EINVAL, "outgoing tensor '%.64s': unknown dtype %d", et->name, (int)t->dtype);
    int64_t numel = shape_numel(t->ndim, t->shape);
    if (numel < 0 || (uint64_t)numel > SIZE_MAX / dtype_size(t->dtype))
        return lion_fail(st, LION_EINVAL, "outgoing tensor '%.64s': invalid shape (ndim %d)", et->name, t->ndim);
    *bytes = (size_t)numel * dtype_size(t->dtype);
    if (*bytes && !t->data && !et->frame)
        return lion_fail(st, LION_EINVAL, "outgoing tensor '%.64s': no data", et->name);
    if (et->frame && zmq_msg_size(et->frame) != *bytes)
        return lion_fail(st, LION_EINVAL, "outgoing tensor '%.64s': frame is %zu bytes, shape needs %zu",
                         et->name, zmq_msg_size(et->frame), *bytes);
    return 0;
}

/* Makes the frame for one checked tensor, sharing, handing off or copying its bytes. */
static int outgoing_frame(envelope_tensor *et, size_t bytes, zmq_msg_t *f, lion_status *st) {
    tensor *t = et->t;
    if (et->frame) {
        zmq_msg_init(f);
        if (zmq_msg_copy(f, et->frame) != 0)
            return lion_fail(st, LION_EIO, "tensor '%.64s': zmq_msg_copy: %s", et->name, zmq_strerror(errno));
        return 0;
    }
    if (t->owns_data && bytes > 0) {
        if (zmq_msg_init_data(f, t->data, bytes, free_handed_off, NULL) != 0)
            return lion_fail(st, LION_ENOMEM, "tensor '%.64s': zmq_msg_init_data: %s", et->name,
                             zmq_strerror(errno));
        t->data = NULL; /* ZeroMQ owns the buffer now */
        t->owns_data = 0;
        return 0;
    }
    if (zmq_msg_init_size(f, bytes) != 0)
        return lion_fail(st, LION_ENOMEM, "tensor '%.64s': no memory for a %zu-byte frame", et->name, bytes);
    if (bytes) memcpy(zmq_msg_data(f), t->data, bytes);
    if (t->owns_data) tensor_free(t); /* an empty owned tensor: nothing to hand off */
    return 0;
}

int envelope_encode(Lion__Envelope *env, envelope_tensor *tensors, int n, zmq_msg_t *frames,
                    lion_status *st) {
    if (n < 0 || n > 4096) return lion_fail(st, LION_EINVAL, "envelope_encode: %d tensors", n);
    size_t *bytes = calloc((size_t)n + 1, sizeof *bytes);
    Lion__TensorDesc *descs = calloc((size_t)n + 1, sizeof *descs);
    Lion__TensorDesc **desc_ptrs = calloc((size_t)n + 1, sizeof *desc_ptrs);
    int rc = -1, made = 0;
    if (!bytes || !descs || !desc_ptrs) {
        lion_fail(st, LION_ENOMEM, "envelope_encode: out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        if (outgoing_check(tensors, i, &bytes[i], st) != 0) goto done;
        const tensor *t = tensors[i].t;
        lion__tensor_desc__init(&descs[i]);
        descs[i].name = (char *)tensors[i].name; /* only read by pack */
        descs[i].has_dtype = 1;
        descs[i].dtype = (Lion__DType)t->dtype;
        descs[i].n_shape = (size_t)t->ndim;
        descs[i].shape = (int64_t *)t->shape;
        descs[i].has_byte_length = 1;
        descs[i].byte_length = bytes[i];
        desc_ptrs[i] = &descs[i];
    }

    /* the descriptors are borrowed for packing only; env keeps its own afterwards */
    size_t saved_n = env->n_tensors;
    Lion__TensorDesc **saved = env->tensors;
    env->n_tensors = (size_t)n;
    env->tensors = desc_ptrs;
    size_t len = lion__envelope__get_packed_size(env);
    if (zmq_msg_init_size(&frames[0], len) == 0) {
        lion__envelope__pack(env, zmq_msg_data(&frames[0]));
        made = 1;
    }
    env->n_tensors = saved_n;
    env->tensors = saved;
    if (!made) {
        lion_fail(st, LION_ENOMEM, "envelope_encode: no memory for a %zu-byte envelope frame", len);
        goto done;
    }
    for (; made <= n; made++)
        if (outgoing_frame(&tensors[made - 1], bytes[made - 1], &frames[made], st) != 0) goto done;
    rc = 0;
done:
    if (rc != 0)
        for (int i = 0; i < made; i++) zmq_msg_close(&frames[i]);
    free(bytes);
    free(descs);
    free(desc_ptrs);
    return rc;
}

static int send_error(const char *what, lion_status *st) {
    if (errno == EAGAIN) return lion_fail(st, LION_EUNAVAILABLE, "%s: send queue full", what);
    return lion_fail(st, LION_EIO, "%s: %s", what, zmq_strerror(errno));
}

int envelope_send(void *sock, const envelope_peer *peer, Lion__Envelope *env,
                  envelope_tensor *tensors, int n, int flags, lion_status *st) {
    zmq_msg_t *frames = malloc(((size_t)n + 1) * sizeof *frames);
    if (!frames) return lion_fail(st, LION_ENOMEM, "envelope_send: out of memory");
    if (envelope_encode(env, tensors, n, frames, st) != 0) {
        free(frames);
        return -1;
    }
    int zflags = (flags & ENVELOPE_DONTWAIT) ? ZMQ_DONTWAIT : 0;
    int rc = 0;
    if (peer && zmq_send(sock, peer->id, peer->len, zflags | ZMQ_SNDMORE) < 0)
        rc = send_error("envelope_send: routing id", st);
    /* after the first part ZeroMQ takes the rest of a multipart message whole */
    for (int i = 0; rc == 0 && i <= n; i++) {
        if (zmq_msg_send(&frames[i], sock, zflags | (i < n ? ZMQ_SNDMORE : 0)) < 0)
            rc = send_error(i == 0 ? "envelope_send: envelope frame" : "envelope_send: tensor frame", st);
    }
    /* a sent frame is left empty by ZeroMQ, so closing every one is always right */
    for (int i = 0; i <= n; i++) zmq_msg_close(&frames[i]);
    free(frames);
    return rc;
}

/* --- receiving and decoding ---------------------------------------------------------- */

/* protobuf-c allocator that refuses to spend more than a budget on one unpack, so that a
 * small frame of empty submessages cannot make the worker allocate gigabytes. */
typedef struct unpack_budget {
    size_t left;
    int exceeded;
} unpack_budget;

static void *budget_alloc(void *data, size_t size) {
    unpack_budget *b = data;
    if (size > b->left) {
        b->exceeded = 1;
        return NULL;
    }
    b->left -= size;
    return malloc(size ? size : 1);
}

static void budget_free(void *data, void *p) { free(p); }

/* Field number 0 does not exist in protobuf, yet protobuf-c takes it when the tag is written
 * in more bytes than needed (0x81 0x00), keeping it as an unknown field, and then packs it in
 * one byte that it refuses to unpack: a message received so could not be copied (envelope_dup)
 * nor sent on. 1 when m or any message inside it holds such a field. */
static int has_field_number_zero(const ProtobufCMessage *m) {
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0) return 1;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    for (unsigned f = 0; f < d->n_fields; f++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[f];
        if (fd->type != PROTOBUF_C_TYPE_MESSAGE) continue;
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            const size_t n = *(const size_t *)(base + fd->quantifier_offset);
            ProtobufCMessage *const *items = *(ProtobufCMessage *const *const *)(base + fd->offset);
            for (size_t k = 0; k < n; k++)
                if (has_field_number_zero(items[k])) return 1;
        } else {
            const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)(base + fd->offset);
            if (sub && has_field_number_zero(sub)) return 1;
        }
    }
    return 0;
}

Lion__Envelope *envelope_unpack(const void *data, size_t len, const envelope_limits *lim, lion_status *st) {
    envelope_limits defaults = envelope_limits_default();
    if (!lim) lim = &defaults;
    if (len > lim->max_envelope_bytes) {
        lion_fail(st, LION_ETOOBIG, "envelope frame is %zu bytes, limit %zu", len, lim->max_envelope_bytes);
        return NULL;
    }
    unpack_budget budget = {.left = lim->max_decoded_bytes};
    ProtobufCAllocator alloc = {.alloc = budget_alloc, .free = budget_free, .allocator_data = &budget};
    Lion__Envelope *env = lion__envelope__unpack(&alloc, len, data);
    if (!env && budget.exceeded)
        lion_fail(st, LION_ETOOBIG, "envelope frame (%zu bytes) needs more than %zu bytes to decode", len,
                  lim->max_decoded_bytes);
    else if (!env)
        lion_fail(st, LION_EFORMAT, "envelope frame (%zu bytes) is not a valid lion.Envelope", len);
    else if (has_field_number_zero(&env->base)) {
        envelope_free(env);
        env = NULL;
        lion_fail(st, LION_EFORMAT, "envelope frame (%zu bytes) is not a valid lion.Envelope: a field number 0", len);
    }
    return env;
}

static int parse_envelope(envelope_msg *m, const envelope_limits *lim, lion_status *st) {
    m->env = envelope_unpack(zmq_msg_data(&m->frames[0]), zmq_msg_size(&m->frames[0]), lim, st);
    return m->env ? 0 : -1;
}

static int check_header(const Lion__Envelope *env, const envelope_limits *lim, lion_status *st) {
    if (!env->has_schema_version) return lion_fail(st, LION_EFORMAT, "envelope has no schema_version");
    if (env->schema_version != (uint32_t)lion_proto_schema_version)
        return lion_fail(st, LION_EFORMAT, "schema version %u, this build speaks %d", env->schema_version,
                         lion_proto_schema_version);
    if (!env->has_kind) return lion_fail(st, LION_EFORMAT, "envelope has no kind");
    if (!kind_known(env->kind)) return lion_fail(st, LION_EFORMAT, "unknown message kind %d", (int)env->kind);
    const char *kind = lion_kind_name(env->kind);
    if (env->has_stage && lion_stage_name(env->stage)[0] == '?')
        return lion_fail(st, LION_EFORMAT, "%s: unknown stage %d", kind, (int)env->stage);
    if (!env->has_stage && (kind_has_request(env->kind) || env->kind == LION__KIND__READY))
        return lion_fail(st, LION_EFORMAT, "%s without a stage", kind);
    if (kind_has_request(env->kind) && (!env->request_id || !env->request_id[0]))
        return lion_fail(st, LION_EFORMAT, "%s without a request id", kind);
    if (env->request_id && strlen(env->request_id) > lim->max_request_id)
        return lion_fail(st, LION_EFORMAT, "%s: request id is %zu bytes, at most %zu", kind,
                         strlen(env->request_id), lim->max_request_id);
    if (env->kind == LION__KIND__ERROR && (!env->error || !env->error->has_code))
        return lion_fail(st, LION_EFORMAT, "ERROR without an error code");
    return 0;
}

/* Checks descriptor i against frame 1 + i; adds its bytes to *total. */
static int check_tensor(const envelope_msg *m, int i, uint64_t *total, const envelope_limits *lim,
                        lion_status *st) {
    const Lion__TensorDesc *d = m->env->tensors[i];
    const char *name = d->name ? d->name : "";
    if (!name[0]) return lion_fail(st, LION_EFORMAT, "tensor %d (frame %d): empty name", i, i + 1);
    for (int j = 0; j < i; j++) {
        const char *other = m->env->tensors[j]->name;
        if (other && strcmp(other, name) == 0)
            return lion_fail(st, LION_EFORMAT, "tensor %d '%.64s': duplicate name (also tensor %d)", i, name, j);
    }
    dtype dt;
    if (!d->has_dtype) return lion_fail(st, LION_EFORMAT, "tensor '%.64s': no dtype", name);
    if (dtype_from_wire(d->dtype, &dt) != 0)
        return lion_fail(st, LION_EFORMAT, "tensor '%.64s': unknown dtype %d", name, (int)d->dtype);
    if (d->n_shape > TENSOR_MAX_DIMS)
        return lion_fail(st, LION_EFORMAT, "tensor '%.64s': %zu dimensions, at most %d", name, d->n_shape,
                         TENSOR_MAX_DIMS);
    for (size_t k = 0; k < d->n_shape; k++)
        if (d->shape[k] < 0)
            return lion_fail(st, LION_EFORMAT, "tensor '%.64s': dimension %zu is %lld", name, k,
                             (long long)d->shape[k]);
    char shape[160];
    shape_str((int)d->n_shape, d->shape, shape, sizeof shape);
    int64_t numel = shape_numel((int)d->n_shape, d->shape);
    if (numel < 0 || (uint64_t)numel > UINT64_MAX / dtype_size(dt))
        return lion_fail(st, LION_EFORMAT, "tensor '%.64s': shape %s overflows", name, shape);
    uint64_t need = (uint64_t)numel * dtype_size(dt);
    if (!d->has_byte_length) return lion_fail(st, LION_EFORMAT, "tensor '%.64s': no byte_length", name);
    if (d->byte_length != need)
        return lion_fail(st, LION_EFORMAT, "tensor '%.64s': shape %s x %s is %llu bytes but byte_length says %llu",
                         name, shape, dtype_name(dt), (unsigned long long)need,
                         (unsigned long long)d->byte_length);
    size_t got = zmq_msg_size(&m->frames[1 + i]);
    if (got != need)
        return lion_fail(st, LION_EFORMAT, "tensor '%.64s' (frame %d): frame is %zu bytes but byte_length says %llu",
                         name, i + 1, got, (unsigned long long)need);
    *total += need;
    if (*total > lim->max_payload_bytes)
        return lion_fail(st, LION_ETOOBIG, "tensor '%.64s': tensor frames exceed %llu bytes in all", name,
                         (unsigned long long)lim->max_payload_bytes);
    return 0;
}

/* Makes tensor i a view of its frame; a frame whose bytes are not aligned for the dtype
 * (ZeroMQ may receive small frames into a shared buffer) is copied once instead. */
static int view_tensor(envelope_msg *m, int i, lion_status *st) {
    const Lion__TensorDesc *d = m->env->tensors[i];
    dtype dt;
    dtype_from_wire(d->dtype, &dt);
    void *data = zmq_msg_data(&m->frames[1 + i]);
    size_t bytes = zmq_msg_size(&m->frames[1 + i]);
    if ((uintptr_t)data % dtype_size(dt) == 0) {
        m->tensors[i] = tensor_view(dt, data, (int)d->n_shape, d->shape);
        return 0;
    }
    tensor *t = &m->tensors[i];
    if (tensor_alloc(t, dt, (int)d->n_shape, d->shape, st) != 0)
        return lion_fail_prefix(st, "tensor '%.64s': ", d->name);
    memcpy(t->data, data, bytes);
    return 0;
}

/* Validates m (frames in place; frames_seen counts frames dropped over the limit too). */
static int decode_frames(envelope_msg *m, int frames_seen, const envelope_limits *given, lion_status *st) {
    envelope_limits lim = limits_or_default(given);
    if (m->n_frames < 1) return lion_fail(st, LION_EFORMAT, "empty message");
    if (parse_envelope(m, &lim, st) != 0) return -1;
    if (check_header(m->env, &lim, st) != 0) return -1;
    size_t n_desc = m->env->n_tensors;
    if (n_desc > (size_t)lim.max_tensors)
        return lion_fail(st, LION_ETOOBIG, "%zu tensor descriptors, at most %d", n_desc, lim.max_tensors);
    if (n_desc != (size_t)(frames_seen - 1))
        return lion_fail(st, LION_EFORMAT, "%zu tensor descriptors but %d tensor frames", n_desc, frames_seen - 1);
    uint64_t total = 0;
    for (int i = 0; i < (int)n_desc; i++)
        if (check_tensor(m, i, &total, &lim, st) != 0) return -1;
    m->tensors = calloc(n_desc ? n_desc : 1, sizeof *m->tensors);
    if (!m->tensors) return lion_fail(st, LION_ENOMEM, "decode: out of memory");
    m->n_tensors = (int)n_desc;
    for (int i = 0; i < (int)n_desc; i++)
        if (view_tensor(m, i, st) != 0) return -1;
    return 0;
}

int envelope_decode(envelope_msg *m, zmq_msg_t *frames, int n, const envelope_limits *limits,
                    lion_status *st) {
    memset(m, 0, sizeof *m);
    if (n < 1) return lion_fail(st, LION_EFORMAT, "empty message");
    m->frames = malloc((size_t)n * sizeof *m->frames);
    if (!m->frames) return lion_fail(st, LION_ENOMEM, "decode: out of memory");
    for (int i = 0; i < n; i++) {
        zmq_msg_init(&m->frames[i]);
        zmq_msg_move(&m->frames[i], &frames[i]);
    }
    m->n_frames = n;
    return decode_frames(m, n, limits, st);
}

static int recv_error(const char *what, lion_status *st) {
    if (errno == EAGAIN) return lion_fail(st, LION_EUNAVAILABLE, "%s: no message", what);
    return lion_fail(st, LION_EIO, "%s: %s", what, zmq_strerror(errno));
}

static int more_parts(void *sock) {
    int more = 0;
    size_t len = sizeof more;
    return zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len) == 0 && more;
}

int envelope_recv(void *sock, envelope_msg *m, int flags, const envelope_limits *limits,
                  lion_status *st) {
    memset(m, 0, sizeof *m);
    envelope_limits lim = limits_or_default(limits);
    int zflags = (flags & ENVELOPE_DONTWAIT) ? ZMQ_DONTWAIT : 0;
    /* one array sized for the limit, never reallocated: tensor views of small frames
     * point inside the zmq_msg_t itself */
    int cap = lim.max_tensors + 1;
    zmq_msg_t first;
    zmq_msg_init(&first);
    if (zmq_msg_recv(&first, sock, zflags) < 0) {
        zmq_msg_close(&first);
        return recv_error("envelope_recv", st);
    }
    m->frames = malloc((size_t)cap * sizeof *m->frames);
    if (!m->frames) {
        zmq_msg_close(&first);
        while (more_parts(sock)) {
            zmq_msg_init(&first);
            zmq_msg_recv(&first, sock, 0);
            zmq_msg_close(&first);
        }
        return lion_fail(st, LION_ENOMEM, "envelope_recv: out of memory");
    }
    int have_first = 1, seen = 0;
    if (flags & ENVELOPE_ROUTED) {
        size_t len = zmq_msg_size(&first);
        m->peer.len = len < sizeof m->peer.id ? len : sizeof m->peer.id;
        memcpy(m->peer.id, zmq_msg_data(&first), m->peer.len);
        zmq_msg_close(&first);
        have_first = 0;
    }
    int more = have_first || more_parts(sock);
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (have_first) {
            zmq_msg_move(&part, &first);
            zmq_msg_close(&first);
            have_first = 0;
        } else if (zmq_msg_recv(&part, sock, 0) < 0) {
            zmq_msg_close(&part);
            recv_error("envelope_recv: frame", st);
            m->n_frames = seen < cap ? seen : cap;
            return -1;
        }
        more = more_parts(sock);
        if (seen < cap) {
            zmq_msg_init(&m->frames[seen]);
            zmq_msg_move(&m->frames[seen], &part);
        }
        zmq_msg_close(&part); /* frames past the limit are counted, then dropped */
        seen++;
    }
    m->n_frames = seen < cap ? seen : cap;
    if (seen == 0) return lion_fail(st, LION_EFORMAT, "message has a routing id and nothing else");
    return decode_frames(m, seen, &lim, st);
}

void envelope_msg_close(envelope_msg *m) {
    if (!m) return;
    for (int i = 0; i < m->n_tensors; i++) tensor_free(&m->tensors[i]);
    free(m->tensors);
    for (int i = 0; i < m->n_frames; i++) zmq_msg_close(&m->frames[i]);
    free(m->frames);
    envelope_free(m->env);
    memset(m, 0, sizeof *m);
}

int envelope_msg_find(const envelope_msg *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->env->tensors[i]->name, name) == 0) return i;
    return -1;
}

envelope_tensor envelope_forward(envelope_msg *m, int i) {
    envelope_tensor et = {.name = m->env->tensors[i]->name, .t = &m->tensors[i], .frame = &m->frames[1 + i]};
    return et;
}
