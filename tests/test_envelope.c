/* test_envelope: the wire codec. Round trips of every kind and dtype, the zero-copy
 * paths, sockets with routing ids, and every malformed message the decoder must refuse,
 * each with the words of its error. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "envelope.h"
#include "testing.h"

/* --- helpers ---------------------------------------------------------------------------- */

/* A stack envelope with the right schema version; tests then break one thing. */
static Lion__Envelope good_header(Lion__Kind kind) {
    Lion__Envelope env = LION__ENVELOPE__INIT;
    env.has_schema_version = 1;
    env.schema_version = (uint32_t)lion_proto_schema_version;
    env.has_kind = 1;
    env.kind = kind;
    env.has_stage = 1;
    env.stage = LION__STAGE__VISION;
    env.request_id = "req-1";
    return env;
}

static Lion__TensorDesc desc(const char *name, int dt, int ndim, const int64_t *shape, uint64_t bytes) {
    Lion__TensorDesc d = LION__TENSOR_DESC__INIT;
    d.name = (char *)name;
    d.has_dtype = 1;
    d.dtype = (Lion__DType)dt;
    d.n_shape = (size_t)ndim;
    d.shape = (int64_t *)shape;
    d.has_byte_length = 1;
    d.byte_length = bytes;
    return d;
}

/* Packs env by hand, adds n_raw zero-filled frames of the given sizes and decodes. */
static int decode_raw(Lion__Envelope *env, const size_t *sizes, int n_raw, const envelope_limits *lim,
                      envelope_msg *m, lion_status *st) {
    zmq_msg_t frames[80];
    size_t len = lion__envelope__get_packed_size(env);
    zmq_msg_init_size(&frames[0], len);
    lion__envelope__pack(env, zmq_msg_data(&frames[0]));
    for (int i = 0; i < n_raw; i++) {
        zmq_msg_init_size(&frames[1 + i], sizes[i]);
        memset(zmq_msg_data(&frames[1 + i]), 0, sizes[i]);
    }
    lion_status_clear(st);
    int rc = envelope_decode(m, frames, 1 + n_raw, lim, st);
    for (int i = 0; i <= n_raw; i++) zmq_msg_close(&frames[i]);
    return rc;
}

/* Decodes a hand-made message that must fail with code and a message containing want. */
#define CHECK_REJECTS(env, sizes, n_raw, lim, want_code, want)                                    \
    do {                                                                                   \
        envelope_msg m_;                                                                   \
        lion_status st_;                                                                   \
        CHECK_EQ_INT(decode_raw((env), (sizes), (n_raw), (lim), &m_, &st_), -1);          \
        CHECK_EQ_INT(st_.code, (want_code));                                                  \
        CHECK_CONTAINS(st_.msg, (want));                                                   \
        envelope_msg_close(&m_);                                                           \
    } while (0)

/* Encodes env with tensors and decodes the frames again. */
static int round_trip(Lion__Envelope *env, envelope_tensor *tensors, int n, envelope_msg *m, lion_status *st) {
    zmq_msg_t frames[80];
    if (envelope_encode(env, tensors, n, frames, st) != 0) return -1;
    int rc = envelope_decode(m, frames, n + 1, NULL, st);
    for (int i = 0; i <= n; i++) zmq_msg_close(&frames[i]);
    return rc;
}

/* --- round trips ------------------------------------------------------------------------ */

static void test_job_round_trip(void) {
    lion_status st;
    Lion__Envelope *env = envelope_new(LION__KIND__JOB, LION__STAGE__LLM, "req-42", &st);
    CHECK(env != NULL);
    env->has_attempt = 1;
    env->attempt = 2;
    env->has_deadline_us = 1;
    env->deadline_us = 1700000000123456;
    Lion__Task *task = malloc(sizeof *task);
    lion__task__init(task);
    task->instruction = strdup("What is in the image?");
    task->has_task_type = 1;
    task->task_type = LION__TASK_TYPE__REGION_LEVEL;
    task->tags = malloc(2 * sizeof *task->tags);
    task->tags[0] = strdup("dog");
    task->tags[1] = strdup("man");
    task->n_tags = 2;
    task->has_output_dtype = 1;
    task->output_dtype = LION__DTYPE__BF16;
    Lion__GenerationParams *gen = malloc(sizeof *gen);
    lion__generation_params__init(gen);
    gen->has_num_beams = gen->has_temperature = gen->has_seed = gen->has_do_sample = 1;
    gen->num_beams = 5;
    gen->temperature = 0.0f;
    gen->seed = 0;
    gen->do_sample = 0;
    task->generation = gen;
    env->task = task;
    CHECK_EQ_INT(envelope_add_hop(env, "gateway", "gw-0", 100, 200, &st), 0);

    envelope_msg m;
    CHECK_EQ_INT(round_trip(env, NULL, 0, &m, &st), 0);
    const Lion__Envelope *got = m.env;
    CHECK(got != NULL);
    if (got) {
        CHECK_EQ_INT(got->kind, LION__KIND__JOB);
        CHECK_EQ_INT(got->stage, LION__STAGE__LLM);
        CHECK(strcmp(got->request_id, "req-42") == 0);
        CHECK_EQ_INT(got->attempt, 2);
        CHECK_EQ_INT(got->deadline_us, 1700000000123456);
        CHECK(strcmp(got->task->instruction, "What is in the image?") == 0);
        CHECK_EQ_INT(got->task->task_type, LION__TASK_TYPE__REGION_LEVEL);
        CHECK_EQ_INT(got->task->n_tags, 2);
        CHECK(strcmp(got->task->tags[1], "man") == 0);
        CHECK_EQ_INT(got->task->output_dtype, LION__DTYPE__BF16);
        /* presence survives: temperature 0 was given, top_p was not */
        CHECK(got->task->generation->has_temperature);
        CHECK(!got->task->generation->has_top_p);
        CHECK_EQ_INT(got->task->generation->num_beams, 5);
        CHECK_EQ_INT(got->n_trace, 1);
        CHECK(strcmp(got->trace[0]->replica_id, "gw-0") == 0);
        CHECK_EQ_INT(got->trace[0]->finish_us, 200);
        CHECK_EQ_INT(m.n_tensors, 0);

        /* an error reply keeps the job's identity and trace */
        Lion__Envelope *err = envelope_error_reply(got, LION_ETIMEOUT, "too late", &st);
        CHECK(err != NULL);
        CHECK_EQ_INT(err->kind, LION__KIND__ERROR);
        CHECK(strcmp(err->request_id, "req-42") == 0);
        CHECK_EQ_INT(err->stage, LION__STAGE__LLM);
        CHECK_EQ_INT(err->attempt, 2);
        CHECK_EQ_INT(err->n_trace, 1);
        CHECK_EQ_INT(err->error->code, LION_ETIMEOUT);
        CHECK(strcmp(err->error->message, "too late") == 0);
        envelope_msg m2;
        CHECK_EQ_INT(round_trip(err, NULL, 0, &m2, &st), 0);
        CHECK(m2.env && strcmp(m2.env->error->message, "too late") == 0);
        envelope_msg_close(&m2);
        envelope_free(err);

        Lion__Envelope *copy = envelope_dup(got, &st);
        CHECK(copy && strcmp(copy->task->tags[0], "dog") == 0);
        envelope_free(copy);
    }
    envelope_msg_close(&m);
    envelope_free(env);
}

static void test_result_round_trip(void) {
    lion_status st;
    Lion__Envelope *env = envelope_new(LION__KIND__RESULT, LION__STAGE__LLM, "r", &st);
    int32_t ids[] = {37, 1782, 1};
    Lion__Sequence *seq = envelope_add_sequence(env, "Answer: [0.440,0.060,0.650,0.367]", ids, 3, -0.25f, &st);
    CHECK(seq != NULL);
    CHECK_EQ_INT(envelope_add_box(seq, 0.44f, 0.06f, 0.65f, 0.367f, &st), 0);
    CHECK_EQ_INT(envelope_add_tag(env, "dog", 0.91f, &st), 0);
    CHECK_EQ_INT(envelope_add_top_tag(env, "pet", 0.5f, &st), 0);
    envelope_msg m;
    CHECK_EQ_INT(round_trip(env, NULL, 0, &m, &st), 0);
    if (m.env) {
        const Lion__Result *r = m.env->result;
        CHECK_EQ_INT(r->n_sequences, 1);
        CHECK(strcmp(r->sequences[0]->text, "Answer: [0.440,0.060,0.650,0.367]") == 0);
        CHECK_EQ_INT(r->sequences[0]->n_token_ids, 3);
        CHECK_EQ_INT(r->sequences[0]->token_ids[1], 1782);
        CHECK(r->sequences[0]->score == -0.25f);
        CHECK_EQ_INT(r->sequences[0]->n_boxes, 1);
        CHECK(r->sequences[0]->boxes[0]->x1 == 0.65f);
        CHECK(r->n_tags == 1 && strcmp(r->tags[0]->name, "dog") == 0 && r->tags[0]->score == 0.91f);
        CHECK(r->n_top_tags == 1 && strcmp(r->top_tags[0]->name, "pet") == 0);
    }
    envelope_msg_close(&m);
    envelope_free(env);
}

static void test_state_kinds_round_trip(void) {
    Lion__Kind kinds[] = {LION__KIND__READY, LION__KIND__HEARTBEAT, LION__KIND__BYE};
    for (int k = 0; k < 3; k++) {
        lion_status st;
        Lion__Envelope *env = envelope_new(kinds[k], LION__STAGE__TAGGER, NULL, &st);
        Lion__Credit *credit = malloc(sizeof *credit);
        lion__credit__init(credit);
        credit->has_capacity = credit->has_in_flight = 1;
        credit->capacity = 8;
        credit->in_flight = 3;
        env->credit = credit;
        env->replica_id = strdup("tagger-7");
        envelope_msg m;
        CHECK_EQ_INT(round_trip(env, NULL, 0, &m, &st), 0);
        CHECK(m.env && m.env->kind == kinds[k]);
        CHECK(m.env && m.env->request_id == NULL);
        CHECK(m.env && m.env->credit->capacity == 8 && m.env->credit->in_flight == 3);
        CHECK(m.env && strcmp(m.env->replica_id, "tagger-7") == 0);
        envelope_msg_close(&m);
        envelope_free(env);
    }
    CHECK(strcmp(lion_kind_name(LION__KIND__HEARTBEAT), "HEARTBEAT") == 0);
    CHECK_EQ_INT(lion_stage_from_name("aggregator"), LION__STAGE__AGGREGATOR);
    CHECK_EQ_INT(lion_stage_from_name("nope"), 0);
    CHECK(strcmp(lion_stage_name(LION__STAGE__LLM), "llm") == 0);
}

static void test_every_dtype(void) {
    lion_status st;
    Lion__Envelope *env = envelope_new(LION__KIND__RESULT, LION__STAGE__VISION, "dtypes", &st);
    tensor ts[DTYPE_COUNT];
    envelope_tensor outs[DTYPE_COUNT];
    char names[DTYPE_COUNT][16];
    unsigned char want[DTYPE_COUNT][64];
    int64_t shape[2] = {2, 3};
    for (int d = 0; d < DTYPE_COUNT; d++) {
        tensor_alloc(&ts[d], (dtype)d, 2, shape, &st);
        unsigned char *p = ts[d].data;
        for (size_t i = 0; i < tensor_nbytes(&ts[d]); i++) p[i] = (unsigned char)(d * 31 + i * 7 + 1);
        memcpy(want[d], p, tensor_nbytes(&ts[d]));
        snprintf(names[d], sizeof names[d], "t_%s", dtype_name((dtype)d));
        outs[d] = (envelope_tensor){.name = names[d], .t = &ts[d]};
    }
    envelope_msg m;
    CHECK_EQ_INT(round_trip(env, outs, DTYPE_COUNT, &m, &st), 0);
    CHECK_EQ_INT(m.n_tensors, DTYPE_COUNT);
    for (int d = 0; d < DTYPE_COUNT && m.n_tensors == DTYPE_COUNT; d++) {
        CHECK_EQ_INT(m.tensors[d].dtype, d);
        CHECK_EQ_INT(m.tensors[d].ndim, 2);
        CHECK_EQ_INT(m.tensors[d].shape[1], 3);
        CHECK(memcmp(m.tensors[d].data, want[d], 6 * dtype_size((dtype)d)) == 0);
        CHECK_EQ_INT(envelope_msg_find(&m, names[d]), d);
        /* handed to ZeroMQ: the caller's tensor no longer owns anything */
        CHECK(ts[d].data == NULL && ts[d].owns_data == 0);
    }
    CHECK_EQ_INT(envelope_msg_find(&m, "absent"), -1);
    envelope_msg_close(&m);
    envelope_free(env);
}

static void test_zero_length_scalar_and_many(void) {
    lion_status st;
    Lion__Envelope *env = envelope_new(LION__KIND__JOB, LION__STAGE__TAGGER, "many", &st);
    enum { N = 64 };
    tensor ts[N];
    envelope_tensor outs[N];
    char names[N][16];
    float scalar = 3.5f;
    int64_t empty_shape[2] = {0, 4};
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "x%d", i);
        if (i == 0) {
            ts[i] = tensor_view(DTYPE_F32, &scalar, 0, NULL); /* a view: copied */
        } else if (i == 1) {
            tensor_alloc(&ts[i], DTYPE_F16, 2, empty_shape, &st);
        } else {
            int64_t shape[1] = {i};
            tensor_alloc(&ts[i], DTYPE_I32, 1, shape, &st);
            for (int k = 0; k < i; k++) ((int32_t *)ts[i].data)[k] = i * 1000 + k;
        }
        outs[i] = (envelope_tensor){.name = names[i], .t = &ts[i]};
    }
    envelope_msg m;
    CHECK_EQ_INT(round_trip(env, outs, N, &m, &st), 0);
    CHECK_EQ_INT(m.n_tensors, N);
    if (m.n_tensors == N) {
        CHECK_EQ_INT(m.tensors[0].ndim, 0);
        CHECK(*(float *)m.tensors[0].data == 3.5f);
        CHECK(ts[0].data == &scalar); /* a view stays the caller's */
        CHECK_EQ_INT(m.tensors[1].shape[0], 0);
        CHECK_EQ_INT(tensor_nbytes(&m.tensors[1]), 0);
        CHECK_EQ_INT(((int32_t *)m.tensors[63].data)[62], 63062);
    }
    envelope_msg_close(&m);
    for (int i = 0; i < N; i++) tensor_free(&ts[i]);
    envelope_free(env);
}

static void test_zero_copy(void) {
    lion_status st;
    Lion__Envelope *env = envelope_new(LION__KIND__RESULT, LION__STAGE__VISION, "zc", &st);
    int64_t shape[2] = {16, 64};
    tensor t;
    tensor_alloc(&t, DTYPE_F32, 2, shape, &st);
    void *buffer = t.data;
    envelope_tensor out = {.name = "hidden", .t = &t};
    zmq_msg_t frames[2];
    CHECK_EQ_INT(envelope_encode(env, &out, 1, frames, &st), 0);
    CHECK(zmq_msg_data(&frames[1]) == buffer); /* handed off, not copied */
    envelope_msg m;
    CHECK_EQ_INT(envelope_decode(&m, frames, 2, NULL, &st), 0);
    zmq_msg_close(&frames[0]);
    zmq_msg_close(&frames[1]);
    CHECK(m.tensors[0].data == buffer); /* the decoded tensor views the same bytes */

    /* forwarding a received tensor shares its frame */
    envelope_tensor fwd = envelope_forward(&m, 0);
    CHECK(strcmp(fwd.name, "hidden") == 0);
    zmq_msg_t again[2];
    CHECK_EQ_INT(envelope_encode(env, &fwd, 1, again, &st), 0);
    CHECK(zmq_msg_data(&again[1]) == buffer);
    CHECK(m.tensors[0].data == buffer); /* and leaves the received message intact */
    zmq_msg_close(&again[0]);
    zmq_msg_close(&again[1]);
    envelope_msg_close(&m);
    envelope_free(env);
}

static void test_misaligned_frame_is_copied(void) {
    static _Alignas(16) unsigned char raw[1 + 4 * 4];
    float vals[4] = {1.0f, -2.0f, 3.0f, 0.5f};
    memcpy(raw + 1, vals, sizeof vals);
    Lion__Envelope env = good_header(LION__KIND__JOB);
    int64_t shape[1] = {4};
    Lion__TensorDesc d = desc("v", LION__DTYPE__F32, 1, shape, 16);
    Lion__TensorDesc *dp = &d;
    env.n_tensors = 1;
    env.tensors = &dp;
    zmq_msg_t frames[2];
    size_t len = lion__envelope__get_packed_size(&env);
    zmq_msg_init_size(&frames[0], len);
    lion__envelope__pack(&env, zmq_msg_data(&frames[0]));
    zmq_msg_init_data(&frames[1], raw + 1, 16, NULL, NULL);
    envelope_msg m;
    lion_status st;
    CHECK_EQ_INT(envelope_decode(&m, frames, 2, NULL, &st), 0);
    CHECK(m.tensors[0].data != (void *)(raw + 1));
    CHECK((uintptr_t)m.tensors[0].data % 4 == 0);
    CHECK(((float *)m.tensors[0].data)[1] == -2.0f);
    envelope_msg_close(&m);
    zmq_msg_close(&frames[0]);
    zmq_msg_close(&frames[1]);
}

/* --- malformed messages ------------------------------------------------------------------ */

static void test_malformed_envelope_frame(void) {
    envelope_msg m;
    lion_status st;
    zmq_msg_t f[1];
    const char garbage[] = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x0f";
    zmq_msg_init_size(&f[0], sizeof garbage);
    memcpy(zmq_msg_data(&f[0]), garbage, sizeof garbage);
    CHECK_EQ_INT(envelope_decode(&m, f, 1, NULL, &st), -1);
    CHECK_EQ_INT(st.code, LION_EFORMAT);
    CHECK_CONTAINS(st.msg, "is not a valid lion.Envelope");
    CHECK(m.env == NULL);
    envelope_msg_close(&m);
    zmq_msg_close(&f[0]);

    CHECK_EQ_INT(envelope_decode(&m, f, 0, NULL, &st), -1);
    CHECK_CONTAINS(st.msg, "empty message");
    envelope_msg_close(&m);

    Lion__Envelope env = good_header(LION__KIND__JOB);
    envelope_limits small = {.max_envelope_bytes = 4};
    CHECK_REJECTS(&env, NULL, 0, &small, LION_ETOOBIG, "bytes, limit 4");

    /* a small frame of many empty submessages: over the decode budget, not a crash */
    Lion__Hop hop = LION__HOP__INIT;
    Lion__Hop *hops[200];
    for (int i = 0; i < 200; i++) hops[i] = &hop;
    env.n_trace = 200;
    env.trace = hops;
    envelope_limits budget = {.max_decoded_bytes = 2048};
    CHECK_REJECTS(&env, NULL, 0, &budget, LION_ETOOBIG, "bytes to decode");

    /* Field number 0, written in two bytes (0x81 0x00: a 64-bit field), which protobuf-c
     * keeps as an unknown field it then cannot copy: refused, at the top and inside a
     * submessage. Found by fuzz_envelope (tests/fuzz/regressions/envelope/). */
    static const uint8_t zero_top[] = {0x08, 0x02, 0x10, 0x04, 0x20, 0x03, 0x81, 0x00, 1, 2, 3, 4, 5, 6, 7, 8};
    static const uint8_t zero_hop[] = {0x08, 0x02, 0x10, 0x05, 0x4a, 0x06, 0x0a, 0x01, 'g', 0x80, 0x00, 0x07};
    const struct {
        const uint8_t *bytes;
        size_t len;
    } zero[] = {{zero_top, sizeof zero_top}, {zero_hop, sizeof zero_hop}};
    for (int i = 0; i < 2; i++) {
        zmq_msg_init_size(&f[0], zero[i].len);
        memcpy(zmq_msg_data(&f[0]), zero[i].bytes, zero[i].len);
        CHECK_EQ_INT(envelope_decode(&m, f, 1, NULL, &st), -1);
        CHECK_EQ_INT(st.code, LION_EFORMAT);
        CHECK_CONTAINS(st.msg, "is not a valid lion.Envelope: a field number 0");
        CHECK(m.env == NULL);
        envelope_msg_close(&m);
        lion_status_clear(&st);
        CHECK(envelope_unpack(zero[i].bytes, zero[i].len, NULL, &st) == NULL);
        CHECK_CONTAINS(st.msg, "a field number 0");
        zmq_msg_close(&f[0]);
    }
    /* an unknown field with a real number (a newer sender's) is kept and copied */
    static const uint8_t newer[] = {0x08, 0x02, 0x10, 0x05, 0xf8, 0x07, 0x2a};
    lion_status_clear(&st);
    Lion__Envelope *e = envelope_unpack(newer, sizeof newer, NULL, &st);
    CHECK_MSG(e != NULL, "%s", st.msg);
    Lion__Envelope *copy = e ? envelope_dup(e, &st) : NULL;
    CHECK(copy != NULL);
    CHECK(copy && copy->base.n_unknown_fields == 1 && copy->base.unknown_fields[0].tag == 127);
    envelope_free(copy);
    envelope_free(e);
}

static void test_malformed_header(void) {
    Lion__Envelope env = good_header(LION__KIND__JOB);
    env.schema_version = 1; /* before PARTIAL and CANCEL */
    CHECK_REJECTS(&env, NULL, 0, NULL, LION_EFORMAT, "schema version 1, this build speaks 2");
    env.has_schema_version = 0;
    CHECK_REJECTS(&env, NULL, 0, NULL, LION_EFORMAT, "envelope has no schema_version");

    env = good_header(LION__KIND__JOB);
    env.has_kind = 0;
    CHECK_REJECTS(&env, NULL, 0, NULL, LION_EFORMAT, "envelope has no kind");
    env.has_kind = 1;
    env.kind = (Lion__Kind)42;
    CHECK_REJECTS(&env, NULL, 0, NULL, LION_EFORMAT, "unknown message kind 42");

    env = good_header(LION__KIND__JOB);
    env.stage = (Lion__Stage)9;
    CHECK_REJECTS(&env, NULL, 0, NULL, LION_EFORMAT, "JOB: unknown stage 9");
    env.has_stage = 0;
    CHECK_REJECTS(&env, NULL, 0, NULL, LION_EFORMAT, "JOB without a stage");

    Lion__Kind need_id[] = {LION__KIND__JOB, LION__KIND__RESULT, LION__KIND__ERROR};
    const char *want[] = {"JOB without a request id", "RESULT without a request id", "ERROR without a request id"};
    for (int k = 0; k < 3; k++) {
        env = good_header(need_id[k]);
        env.request_id = NULL;
        CHECK_REJECTS(&env, NULL, 0, NULL, LION_EFORMAT, want[k]);
        env.request_id = "";
        CHECK_REJECTS(&env, NULL, 0, NULL, LION_EFORMAT, want[k]);
    }
    char long_id[201];
    memset(long_id, 'a', 200);
    long_id[200] = '\0';
    env = good_header(LION__KIND__JOB);
    env.request_id = long_id;
    CHECK_REJECTS(&env, NULL, 0, NULL, LION_EFORMAT, "request id is 200 bytes, at most 128");

    env = good_header(LION__KIND__ERROR);
    CHECK_REJECTS(&env, NULL, 0, NULL, LION_EFORMAT, "ERROR without an error code");

    /* a header that parsed but did not validate is kept: the worker answers its id */
    env = good_header(LION__KIND__JOB);
    env.schema_version = 7;
    envelope_msg m;
    lion_status st;
    CHECK_EQ_INT(decode_raw(&env, NULL, 0, NULL, &m, &st), -1);
    CHECK(m.env != NULL && strcmp(m.env->request_id, "req-1") == 0);
    envelope_msg_close(&m);
}

static void test_malformed_tensors(void) {
    int64_t s23[2] = {2, 3};
    Lion__TensorDesc d[10];
    Lion__TensorDesc *dp[10];
    for (int i = 0; i < 10; i++) dp[i] = &d[i];
    Lion__Envelope env = good_header(LION__KIND__JOB);
    env.tensors = dp;
    size_t sizes[10] = {24, 24, 24, 24};

    /* frame count, both ways */
    d[0] = desc("a", LION__DTYPE__F32, 2, s23, 24);
    d[1] = desc("b", LION__DTYPE__F32, 2, s23, 24);
    env.n_tensors = 2;
    CHECK_REJECTS(&env, sizes, 1, NULL, LION_EFORMAT, "2 tensor descriptors but 1 tensor frames");
    env.n_tensors = 1;
    CHECK_REJECTS(&env, sizes, 2, NULL, LION_EFORMAT, "1 tensor descriptors but 2 tensor frames");
    env.n_tensors = 0;
    CHECK_REJECTS(&env, sizes, 1, NULL, LION_EFORMAT, "0 tensor descriptors but 1 tensor frames");

    /* too many tensors for the limit */
    d[2] = desc("c", LION__DTYPE__F32, 2, s23, 24);
    env.n_tensors = 3;
    envelope_limits two = {.max_tensors = 2};
    CHECK_REJECTS(&env, sizes, 3, &two, LION_ETOOBIG, "3 tensor descriptors, at most 2");

    env.n_tensors = 1;
    d[0] = desc("a", LION__DTYPE__F32, 2, s23, 20);
    sizes[0] = 20;
    CHECK_REJECTS(&env, sizes, 1, NULL, LION_EFORMAT, "tensor 'a': shape [2, 3] x F32 is 24 bytes but byte_length says 20");

    d[0] = desc("a", LION__DTYPE__F32, 2, s23, 24);
    sizes[0] = 16;
    CHECK_REJECTS(&env, sizes, 1, NULL, LION_EFORMAT, "tensor 'a' (frame 1): frame is 16 bytes but byte_length says 24");
    sizes[0] = 24;

    d[0] = desc("a", 99, 2, s23, 24);
    CHECK_REJECTS(&env, sizes, 1, NULL, LION_EFORMAT, "tensor 'a': unknown dtype 99");
    d[0] = desc("a", LION__DTYPE__F32, 2, s23, 24);
    d[0].has_dtype = 0;
    CHECK_REJECTS(&env, sizes, 1, NULL, LION_EFORMAT, "tensor 'a': no dtype");
    d[0] = desc("a", LION__DTYPE__F32, 2, s23, 24);
    d[0].has_byte_length = 0;
    CHECK_REJECTS(&env, sizes, 1, NULL, LION_EFORMAT, "tensor 'a': no byte_length");

    int64_t s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 24};
    d[0] = desc("a", LION__DTYPE__U8, 9, s9, 24);
    CHECK_REJECTS(&env, sizes, 1, NULL, LION_EFORMAT, "tensor 'a': 9 dimensions, at most 8");

    int64_t neg[2] = {2, -3};
    d[0] = desc("a", LION__DTYPE__F32, 2, neg, 24);
    CHECK_REJECTS(&env, sizes, 1, NULL, LION_EFORMAT, "tensor 'a': dimension 1 is -3");

    int64_t huge[2] = {(int64_t)1 << 40, (int64_t)1 << 40};
    d[0] = desc("a", LION__DTYPE__F32, 2, huge, 24);
    CHECK_REJECTS(&env, sizes, 1, NULL, LION_EFORMAT, "tensor 'a': shape [1099511627776, 1099511627776] overflows");
    int64_t bytes_overflow[1] = {(int64_t)1 << 62};
    d[0] = desc("a", LION__DTYPE__I64, 1, bytes_overflow, 24);
    CHECK_REJECTS(&env, sizes, 1, NULL, LION_EFORMAT, "overflows");

    d[0] = desc("a", LION__DTYPE__F32, 2, s23, 24);
    d[1] = desc("a", LION__DTYPE__F32, 2, s23, 24);
    env.n_tensors = 2;
    CHECK_REJECTS(&env, sizes, 2, NULL, LION_EFORMAT, "tensor 1 'a': duplicate name (also tensor 0)");
    d[1] = desc("", LION__DTYPE__F32, 2, s23, 24);
    CHECK_REJECTS(&env, sizes, 2, NULL, LION_EFORMAT, "tensor 1 (frame 2): empty name");
    d[1] = desc(NULL, LION__DTYPE__F32, 2, s23, 24);
    CHECK_REJECTS(&env, sizes, 2, NULL, LION_EFORMAT, "tensor 1 (frame 2): empty name");

    d[1] = desc("b", LION__DTYPE__F32, 2, s23, 24);
    envelope_limits little = {.max_payload_bytes = 40};
    CHECK_REJECTS(&env, sizes, 2, &little, LION_ETOOBIG, "tensor 'b': tensor frames exceed 40 bytes in all");

    /* and the same message within limits decodes */
    envelope_msg m;
    lion_status st;
    CHECK_EQ_INT(decode_raw(&env, sizes, 2, NULL, &m, &st), 0);
    CHECK_EQ_INT(m.n_tensors, 2);
    envelope_msg_close(&m);
}

static void test_encode_refuses_bad_tensors(void) {
    lion_status st;
    Lion__Envelope *env = envelope_new(LION__KIND__RESULT, LION__STAGE__VISION, "enc", &st);
    float x[6] = {0};
    int64_t shape[2] = {2, 3};
    tensor a = tensor_view(DTYPE_F32, x, 2, shape);
    tensor b = a;
    zmq_msg_t frames[3];
    envelope_tensor outs[2] = {{.name = "a", .t = &a}, {.name = "a", .t = &b}};
    CHECK_EQ_INT(envelope_encode(env, outs, 2, frames, &st), -1);
    CHECK_CONTAINS(st.msg, "outgoing tensor 1 'a': duplicate name (also tensor 0)");
    outs[1].name = "";
    CHECK_EQ_INT(envelope_encode(env, outs, 2, frames, &st), -1);
    CHECK_CONTAINS(st.msg, "outgoing tensor 1: empty name");
    outs[1].name = "b";
    b.dtype = (dtype)77;
    CHECK_EQ_INT(envelope_encode(env, outs, 2, frames, &st), -1);
    CHECK_CONTAINS(st.msg, "outgoing tensor 'b': unknown dtype 77");
    b = a;
    b.ndim = 9;
    CHECK_EQ_INT(envelope_encode(env, outs, 2, frames, &st), -1);
    CHECK_CONTAINS(st.msg, "outgoing tensor 'b': invalid shape (ndim 9)");
    b = a;
    zmq_msg_t small;
    zmq_msg_init_size(&small, 8);
    outs[1].frame = &small;
    CHECK_EQ_INT(envelope_encode(env, outs, 2, frames, &st), -1);
    CHECK_CONTAINS(st.msg, "outgoing tensor 'b': frame is 8 bytes, shape needs 24");
    zmq_msg_close(&small);
    CHECK(env->n_tensors == 0 && env->tensors == NULL); /* env left as it was */
    envelope_free(env);
}

/* Mutated envelopes and frame sizes: each decodes to a consistent message or fails with a
 * message, never anything else (run under ASan/UBSan in the sanitizer build). */
static void test_mutations(void) {
    lion_status st;
    Lion__Envelope *env = envelope_new(LION__KIND__JOB, LION__STAGE__AGGREGATOR, "fuzz", &st);
    Lion__Task *task = malloc(sizeof *task);
    lion__task__init(task);
    task->instruction = strdup("describe");
    env->task = task;
    int64_t sa[2] = {2, 4}, sb[3] = {1, 3, 2};
    tensor a = tensor_view(DTYPE_F32, NULL, 2, sa), b = tensor_view(DTYPE_BF16, NULL, 3, sb);
    zmq_msg_t fa, fb;
    zmq_msg_init_size(&fa, 32);
    zmq_msg_init_size(&fb, 12);
    envelope_tensor outs[2] = {{.name = "a", .t = &a, .frame = &fa}, {.name = "b", .t = &b, .frame = &fb}};
    zmq_msg_t frames[3];
    CHECK_EQ_INT(envelope_encode(env, outs, 2, frames, &st), 0);
    size_t len = zmq_msg_size(&frames[0]);
    unsigned char good[512];
    memcpy(good, zmq_msg_data(&frames[0]), len);
    for (int i = 0; i < 3; i++) zmq_msg_close(&frames[i]);
    zmq_msg_close(&fa);
    zmq_msg_close(&fb);
    envelope_free(env);

    unsigned rng = 12345;
    int ok = 0, refused = 0, bad = 0;
    for (int iter = 0; iter < 3000; iter++) {
        unsigned char buf[512];
        memcpy(buf, good, len);
        size_t n = len;
        int flips = 1 + (int)((rng = rng * 1103515245u + 12345u) >> 16) % 3;
        for (int f = 0; f < flips; f++) {
            rng = rng * 1103515245u + 12345u;
            buf[(rng >> 8) % n] ^= (unsigned char)(1u << ((rng >> 20) % 8));
        }
        rng = rng * 1103515245u + 12345u;
        if ((rng >> 16) % 8 == 0) n = (rng >> 4) % n; /* truncated */
        int n_frames = 1 + (int)((rng >> 24) % 4);
        size_t sizes[3] = {32, 12, 8};
        for (int k = 0; k < 3; k++)
            if (((rng >> (k + 2)) & 7) == 0) sizes[k] += 4;
        zmq_msg_t in[4];
        zmq_msg_init_size(&in[0], n);
        memcpy(zmq_msg_data(&in[0]), buf, n);
        for (int k = 1; k < n_frames; k++) {
            zmq_msg_init_size(&in[k], sizes[k - 1]);
            memset(zmq_msg_data(&in[k]), 0x5a, sizes[k - 1]);
        }
        envelope_msg m;
        lion_status_clear(&st);
        if (envelope_decode(&m, in, n_frames, NULL, &st) == 0) {
            ok++;
            int consistent = m.n_tensors == n_frames - 1;
            for (int k = 0; consistent && k < m.n_tensors; k++)
                consistent = tensor_nbytes(&m.tensors[k]) == zmq_msg_size(&m.frames[1 + k]);
            if (!consistent) bad++;
        } else {
            refused++;
            if (st.code == LION_OK || !st.msg[0]) bad++;
        }
        envelope_msg_close(&m);
        for (int k = 0; k < n_frames; k++) zmq_msg_close(&in[k]);
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(ok > 0 && refused > 0);
}

/* --- sockets ----------------------------------------------------------------------------- */

static void test_sockets_and_routing(void) {
    void *ctx = zmq_ctx_new();
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    void *dealer = zmq_socket(ctx, ZMQ_DEALER);
    CHECK_EQ_INT(zmq_bind(router, "inproc://test-envelope"), 0);
    CHECK_EQ_INT(zmq_connect(dealer, "inproc://test-envelope"), 0);
    int timeout = 2000;
    zmq_setsockopt(router, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(dealer, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    lion_status st;

    /* worker -> gateway: the ROUTER sees a routing id first */
    Lion__Envelope *ready = envelope_new(LION__KIND__READY, LION__STAGE__VISION, NULL, &st);
    CHECK_EQ_INT(envelope_send(dealer, NULL, ready, NULL, 0, 0, &st), 0);
    envelope_free(ready);
    envelope_msg m;
    CHECK_EQ_INT(envelope_recv(router, &m, ENVELOPE_ROUTED, NULL, &st), 0);
    CHECK(m.peer.len > 0);
    CHECK(m.env && m.env->kind == LION__KIND__READY);
    envelope_peer peer = m.peer;
    envelope_msg_close(&m);

    /* gateway -> worker, addressed by that id, with a tensor */
    Lion__Envelope *job = envelope_new(LION__KIND__JOB, LION__STAGE__VISION, "sock-1", &st);
    int64_t shape[1] = {100};
    tensor t;
    tensor_alloc(&t, DTYPE_F32, 1, shape, &st);
    ((float *)t.data)[99] = 7.25f;
    envelope_tensor out = {.name = "pixels", .t = &t};
    CHECK_EQ_INT(envelope_send(router, &peer, job, &out, 1, 0, &st), 0);
    envelope_free(job);
    CHECK_EQ_INT(envelope_recv(dealer, &m, 0, NULL, &st), 0);
    CHECK(m.env && strcmp(m.env->request_id, "sock-1") == 0);
    CHECK(m.n_tensors == 1 && ((float *)m.tensors[0].data)[99] == 7.25f);
    envelope_msg_close(&m);

    /* too many frames: refused after reading them all, the header still readable, and
     * the next message is whole */
    Lion__Envelope hdr = good_header(LION__KIND__JOB);
    size_t len = lion__envelope__get_packed_size(&hdr);
    unsigned char buf[256];
    lion__envelope__pack(&hdr, buf);
    zmq_send(dealer, buf, len, ZMQ_SNDMORE);
    for (int i = 0; i < 70; i++) zmq_send(dealer, "x", 1, i < 69 ? ZMQ_SNDMORE : 0);
    Lion__Envelope *hb = envelope_new(LION__KIND__HEARTBEAT, 0, NULL, &st);
    envelope_send(dealer, NULL, hb, NULL, 0, 0, &st);
    envelope_free(hb);
    lion_status_clear(&st);
    CHECK_EQ_INT(envelope_recv(router, &m, ENVELOPE_ROUTED, NULL, &st), -1);
    CHECK_CONTAINS(st.msg, "0 tensor descriptors but 70 tensor frames");
    CHECK(m.env && strcmp(m.env->request_id, "req-1") == 0);
    envelope_msg_close(&m);
    CHECK_EQ_INT(envelope_recv(router, &m, ENVELOPE_ROUTED, NULL, &st), 0);
    CHECK(m.env && m.env->kind == LION__KIND__HEARTBEAT);
    envelope_msg_close(&m);

    /* nothing waiting */
    CHECK_EQ_INT(envelope_recv(router, &m, ENVELOPE_ROUTED | ENVELOPE_DONTWAIT, NULL, &st), -1);
    CHECK_EQ_INT(st.code, LION_EUNAVAILABLE);
    CHECK_EQ_INT(m.n_frames, 0);
    envelope_msg_close(&m);

    zmq_close(dealer);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

int main(void) {
    test_job_round_trip();
    test_result_round_trip();
    test_state_kinds_round_trip();
    test_every_dtype();
    test_zero_length_scalar_and_many();
    test_zero_copy();
    test_misaligned_frame_is_copied();
    test_malformed_envelope_frame();
    test_malformed_header();
    test_malformed_tensors();
    test_encode_refuses_bad_tensors();
    test_mutations();
    test_sockets_and_routing();
    return testing_finish();
}
