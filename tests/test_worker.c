/* test_worker: the generic worker loop against a ROUTER on 127.0.0.1 that plays the
 * gateway. The toy stage doubles tensor "x" into "y" and misbehaves on request, so that
 * READY, results, batching, every kind of error answer, deadlines, heartbeats, capacity,
 * streamed PARTIALs, cancellation (queued, running, unknown), the precision and ISA in the
 * credit, and both ways of shutting down are seen from the gateway's side of the socket.
 * Also --precision's parsing and resolution (auto, f32, bf16 on CPUs with and without
 * native bf16). */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "clock.h"
#include "cpu_features.h"
#include "envelope.h"
#include "matvec_bf16.h"
#include "precision.h"
#include "onednn_matmul.h"
#include "testing.h"
#include "worker.h"

/* --- the toy stage ----------------------------------------------------------------------- */

static atomic_int stage_calls, stage_max_batch;
/* "wait-cancel": how many such jobs saw worker_job_cancelled become true */
static atomic_int saw_cancel;

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int toy_process(void *ctx, worker_job *jobs, int n, lion_status *st) {
    atomic_fetch_add(&stage_calls, 1);
    if (n > atomic_load(&stage_max_batch)) atomic_store(&stage_max_batch, n);
    for (int j = 0; j < n; j++) {
        worker_job *job = &jobs[j];
        const char *what = job->task->instruction ? job->task->instruction : "";
        if (!strcmp(what, "batchfail")) return lion_fail(st, LION_EINTERNAL, "whole batch failed");
        if (!strcmp(what, "slow")) sleep_ms(300);
        if (!strcmp(what, "fail")) {
            worker_job_fail(job, LION_EINVAL, "asked to fail");
            continue;
        }
        if (!strcmp(what, "text")) {
            int32_t ids[2] = {5, 1};
            if (!envelope_add_sequence(job->reply, "a dog", ids, 2, -1.5f, &job->status)) continue;
        }
        if (!strcmp(what, "stream")) {
            /* three parts, a little apart, then the whole answer */
            static const char *parts[3] = {"a ", "big ", "dog"};
            int32_t ids[4] = {7, 8, 9, 1};
            for (int k = 0; k < 3; k++) {
                if (worker_job_send_partial(job, parts[k], ids + k, k == 2 ? 2 : 1, &job->status)) break;
                sleep_ms(20);
            }
            if (job->status.code != LION_OK) continue;
            if (!envelope_add_sequence(job->reply, "a big dog", ids, 4, 0, &job->status)) continue;
        }
        if (!strcmp(what, "wait-cancel")) {
            /* says it runs, then works in 10 ms steps until cancelled (3 s at most) */
            if (worker_job_send_partial(job, "started", NULL, 0, &job->status)) continue;
            for (int k = 0; k < 300 && !worker_job_cancelled(job); k++) sleep_ms(10);
            if (worker_job_cancelled(job)) atomic_fetch_add(&saw_cancel, 1);
        }
        const tensor *x = worker_job_input(job, "x", &job->status);
        if (!x) continue;
        if (!strcmp(what, "passthrough")) {
            tensor view = *x;
            worker_job_add_output(job, "x", &view, &job->status);
            continue;
        }
        tensor y;
        if (tensor_alloc(&y, DTYPE_F32, x->ndim, x->shape, &job->status) != 0) continue;
        for (int64_t i = 0; i < tensor_numel(x); i++) ((float *)y.data)[i] = 2.0f * ((const float *)x->data)[i];
        if (worker_job_add_output(job, "y", &y, &job->status) != 0) tensor_free(&y);
    }
    return 0;
}

/* --- the gateway's side ------------------------------------------------------------------- */

typedef struct gateway {
    void *ctx, *router;
    char endpoint[128];
    envelope_peer peer;
    int heartbeats;
    int heartbeat_with_credit;
    int heartbeat_with_info; /* credit with precision and isa */
    int last_in_flight; /* of the latest heartbeat */
    int readies;     /* READY again after a silence: the worker re-announces itself */
    int want_ready;  /* gateway_recv returns the next READY instead of counting it */
} gateway;

static void gateway_open(gateway *g) {
    memset(g, 0, sizeof *g);
    g->ctx = zmq_ctx_new();
    g->router = zmq_socket(g->ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(g->router, ZMQ_LINGER, &linger, sizeof linger);
    CHECK_EQ_INT(zmq_bind(g->router, "tcp://127.0.0.1:*"), 0);
    size_t len = sizeof g->endpoint;
    zmq_getsockopt(g->router, ZMQ_LAST_ENDPOINT, g->endpoint, &len);
}

static void gateway_close(gateway *g) {
    zmq_close(g->router);
    zmq_ctx_term(g->ctx);
}

/* The next message that is not a HEARTBEAT or a repeated READY (those are counted);
 * -1 after timeout_ms. */
static int gateway_recv(gateway *g, envelope_msg *m, int timeout_ms) {
    int64_t end = clock_mono_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        long left = (long)((end - clock_mono_us()) / 1000);
        if (left <= 0) return -1;
        zmq_pollitem_t item = {.socket = g->router, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, left) <= 0) continue;
        lion_status st;
        if (envelope_recv(g->router, m, ENVELOPE_ROUTED, NULL, &st) != 0) {
            testing_fail(__FILE__, __LINE__, "gateway got a malformed message: %s", st.msg);
            envelope_msg_close(m);
            continue;
        }
        if (m->env->kind == LION__KIND__HEARTBEAT) {
            g->heartbeats++;
            if (m->env->credit && m->env->credit->capacity > 0) g->heartbeat_with_credit++;
            if (m->env->credit && m->env->credit->precision && !strcmp(m->env->credit->precision, "bf16") &&
                m->env->credit->isa && !strcmp(m->env->credit->isa, cpu_isa_name()))
                g->heartbeat_with_info++;
            if (m->env->credit) g->last_in_flight = (int)m->env->credit->in_flight;
            envelope_msg_close(m);
            continue;
        }
        if (m->env->kind == LION__KIND__READY && !g->want_ready) {
            g->readies++;
            envelope_msg_close(m);
            continue;
        }
        return 0;
    }
}

static void send_job_stream(gateway *g, const char *id, const char *instruction, const float *x, int n,
                            int64_t deadline_us, int stage, int stream) {
    lion_status st;
    Lion__Envelope *env = envelope_new(LION__KIND__JOB, stage, id, &st);
    Lion__Task *task = malloc(sizeof *task);
    lion__task__init(task);
    task->instruction = strdup(instruction);
    if (stream) task->has_stream = task->stream = 1;
    env->task = task;
    env->has_attempt = 1;
    env->attempt = 3;
    if (deadline_us) {
        env->has_deadline_us = 1;
        env->deadline_us = deadline_us;
    }
    tensor t = {0};
    envelope_tensor out = {.name = "x", .t = &t};
    if (x) {
        int64_t shape[1] = {n};
        tensor_alloc(&t, DTYPE_F32, 1, shape, &st);
        memcpy(t.data, x, (size_t)n * sizeof *x);
    }
    if (envelope_send(g->router, &g->peer, env, &out, x ? 1 : 0, 0, &st) != 0)
        testing_fail(__FILE__, __LINE__, "send_job %s: %s", id, st.msg);
    tensor_free(&t);
    envelope_free(env);
}

static void send_job(gateway *g, const char *id, const char *instruction, const float *x, int n,
                     int64_t deadline_us, int stage) {
    send_job_stream(g, id, instruction, x, n, deadline_us, stage, 0);
}

static void send_cancel(gateway *g, const char *id, int stage, uint32_t attempt) {
    lion_status st;
    Lion__Envelope *env = envelope_cancel(id, stage, attempt, &st);
    CHECK(env != NULL);
    if (!env) return;
    if (envelope_send(g->router, &g->peer, env, NULL, 0, 0, &st) != 0)
        testing_fail(__FILE__, __LINE__, "send_cancel %s: %s", id, st.msg);
    envelope_free(env);
}

/* Receives answers until one for id arrives (others are stashed back into a small set). */
typedef struct answers {
    envelope_msg msgs[32];
    int n;
} answers;

static envelope_msg *answer_for(gateway *g, answers *a, const char *id, int timeout_ms) {
    for (;;) {
        for (int i = 0; i < a->n; i++)
            if (a->msgs[i].env->request_id && !strcmp(a->msgs[i].env->request_id, id)) return &a->msgs[i];
        if (a->n == 32 || gateway_recv(g, &a->msgs[a->n], timeout_ms) != 0) {
            testing_fail(__FILE__, __LINE__, "no answer for %s", id);
            return NULL;
        }
        a->n++;
    }
}

static void answers_clear(answers *a) {
    for (int i = 0; i < a->n; i++) envelope_msg_close(&a->msgs[i]);
    a->n = 0;
}

static void check_error(envelope_msg *m, int code, const char *want) {
    CHECK(m != NULL);
    if (!m) return;
    CHECK_EQ_INT(m->env->kind, LION__KIND__ERROR);
    if (m->env->kind != LION__KIND__ERROR) return;
    CHECK_EQ_INT(m->env->error->code, code);
    CHECK_CONTAINS(m->env->error->message, want);
}

/* --- the worker in a thread --------------------------------------------------------------- */

typedef struct worker_thread {
    pthread_t thread;
    worker_config cfg;
    worker_stage stage;
    atomic_int stop;
    int rc;
    lion_status st;
} worker_thread;

static void *worker_thread_main(void *arg) {
    worker_thread *wt = arg;
    wt->rc = worker_run(&wt->cfg, &wt->stage, &wt->st);
    return NULL;
}

static void worker_start(worker_thread *wt, const gateway *g, int use_signals) {
    char arg_gw[160];
    snprintf(arg_gw, sizeof arg_gw, "--gateway=%s", g->endpoint);
    char *argv[] = {"vision", arg_gw, "--replica", "vision-test", "--capacity", "8", "--max-batch", "4",
                    "--heartbeat-ms", "50", "--threads", "1"};
    lion_status st;
    CHECK_EQ_INT(worker_config_parse(&wt->cfg, "vision", 12, argv, &st), 0);
    wt->cfg.gateway = g->endpoint; /* argv above is on this stack frame */
    wt->cfg.linger_ms = 500;
    atomic_store(&wt->stop, 0);
    wt->cfg.stop = use_signals ? NULL : &wt->stop;
    wt->stage = (worker_stage){.stage = LION__STAGE__VISION, .process = toy_process, .precision = "bf16",
                               .isa = cpu_isa_name()};
    pthread_create(&wt->thread, NULL, worker_thread_main, wt);
}

/* --- the tests ----------------------------------------------------------------------------- */

static void expect_ready(gateway *g) {
    envelope_msg m;
    g->want_ready = 1;
    CHECK_EQ_INT(gateway_recv(g, &m, 5000), 0);
    g->want_ready = 0;
    if (!m.env) return;
    CHECK_EQ_INT(m.env->kind, LION__KIND__READY);
    CHECK_EQ_INT(m.env->stage, LION__STAGE__VISION);
    CHECK(m.env->credit && m.env->credit->capacity == 8 && m.env->credit->max_batch == 4);
    CHECK(m.env->replica_id && !strcmp(m.env->replica_id, "vision-test"));
    /* what the stage computes with, for the gateway's lion_worker_info */
    CHECK(m.env->credit && m.env->credit->precision && !strcmp(m.env->credit->precision, "bf16"));
    CHECK(m.env->credit && m.env->credit->isa && !strcmp(m.env->credit->isa, cpu_isa_name()));
    g->peer = m.peer;
    envelope_msg_close(&m);
}

static void test_results_and_errors(gateway *g) {
    answers a = {.n = 0};
    float x[3] = {1.0f, 2.5f, -4.0f};

    send_job(g, "j1", "double", x, 3, 0, LION__STAGE__VISION);
    envelope_msg *m = answer_for(g, &a, "j1", 3000);
    if (m) {
        CHECK_EQ_INT(m->env->kind, LION__KIND__RESULT);
        CHECK_EQ_INT(m->env->attempt, 3);
        CHECK_EQ_INT(m->env->stage, LION__STAGE__VISION);
        CHECK_EQ_INT(m->n_tensors, 1);
        CHECK_EQ_INT(envelope_msg_find(m, "y"), 0);
        const float want[3] = {2.0f, 5.0f, -8.0f};
        CHECK(m->n_tensors == 1 && memcmp(m->tensors[0].data, want, sizeof want) == 0);
        CHECK_EQ_INT(m->env->n_trace, 1);
        if (m->env->n_trace == 1) {
            const Lion__Hop *hop = m->env->trace[0];
            CHECK(!strcmp(hop->service, "vision") && !strcmp(hop->replica_id, "vision-test"));
            CHECK(hop->receive_us > 0 && hop->receive_us <= hop->finish_us);
        }
    }

    send_job(g, "p1", "passthrough", x, 3, 0, LION__STAGE__VISION);
    m = answer_for(g, &a, "p1", 3000);
    CHECK(m && m->n_tensors == 1 && envelope_msg_find(m, "x") == 0 &&
          ((float *)m->tensors[0].data)[2] == -4.0f);

    send_job(g, "t1", "text", x, 3, 0, LION__STAGE__VISION);
    m = answer_for(g, &a, "t1", 3000);
    CHECK(m && m->env->result && m->env->result->n_sequences == 1 &&
          !strcmp(m->env->result->sequences[0]->text, "a dog") && m->n_tensors == 1);

    send_job(g, "f1", "fail", x, 3, 0, LION__STAGE__VISION);
    check_error(answer_for(g, &a, "f1", 3000), LION_EINVAL, "asked to fail");

    send_job(g, "f2", "batchfail", x, 3, 0, LION__STAGE__VISION);
    check_error(answer_for(g, &a, "f2", 3000), LION_EINTERNAL, "whole batch failed");

    send_job(g, "n1", "double", NULL, 0, 0, LION__STAGE__VISION);
    check_error(answer_for(g, &a, "n1", 3000), LION_EINVAL, "request n1: no input tensor 'x' (the job has none)");

    send_job(g, "d1", "double", x, 3, clock_unix_us() - 5000, LION__STAGE__VISION);
    m = answer_for(g, &a, "d1", 3000);
    check_error(m, LION_ETIMEOUT, "deadline passed");
    CHECK(m && m->env->n_trace == 1); /* even an error says where it happened */

    send_job(g, "w1", "double", x, 3, 0, LION__STAGE__LLM);
    check_error(answer_for(g, &a, "w1", 3000), LION_EINVAL, "job for stage llm sent to a vision worker");

    /* a job frame whose tensor does not match its descriptor */
    Lion__Envelope *bad = envelope_new(LION__KIND__JOB, LION__STAGE__VISION, "bad-1", NULL);
    int64_t shape[1] = {3};
    Lion__TensorDesc d = LION__TENSOR_DESC__INIT;
    d.name = "x";
    d.has_dtype = d.has_byte_length = 1;
    d.dtype = LION__DTYPE__F32;
    d.n_shape = 1;
    d.shape = shape;
    d.byte_length = 12;
    Lion__TensorDesc *dp = &d;
    bad->n_tensors = 1;
    bad->tensors = &dp;
    unsigned char buf[256];
    size_t len = lion__envelope__pack(bad, buf);
    bad->n_tensors = 0;
    bad->tensors = NULL;
    envelope_free(bad);
    zmq_send(g->router, g->peer.id, g->peer.len, ZMQ_SNDMORE);
    zmq_send(g->router, buf, len, ZMQ_SNDMORE);
    zmq_send(g->router, "12345678", 8, 0);
    m = answer_for(g, &a, "bad-1", 3000);
    check_error(m, LION_EFORMAT, "malformed job: tensor 'x' (frame 1): frame is 8 bytes but byte_length says 12");

    /* garbage with no readable request id is dropped, and the worker goes on */
    zmq_send(g->router, g->peer.id, g->peer.len, ZMQ_SNDMORE);
    zmq_send(g->router, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11, 0);
    send_job(g, "j2", "double", x, 3, 0, LION__STAGE__VISION);
    m = answer_for(g, &a, "j2", 3000);
    CHECK(m && m->env->kind == LION__KIND__RESULT);
    CHECK_EQ_INT(a.n, 10); /* one answer per job, nothing for the garbage */
    answers_clear(&a);
}

static void test_batching_and_capacity(gateway *g) {
    answers a = {.n = 0};
    float x[2] = {1.0f, 2.0f};
    /* while "slow" runs, four jobs queue up and go to the stage in one call */
    atomic_store(&stage_max_batch, 0);
    send_job(g, "s0", "slow", x, 2, 0, LION__STAGE__VISION);
    sleep_ms(100);
    char id[16];
    for (int i = 1; i <= 4; i++) {
        snprintf(id, sizeof id, "b%d", i);
        send_job(g, id, "double", x, 2, 0, LION__STAGE__VISION);
    }
    for (int i = 1; i <= 4; i++) {
        snprintf(id, sizeof id, "b%d", i);
        envelope_msg *m = answer_for(g, &a, id, 3000);
        CHECK(m && m->env->kind == LION__KIND__RESULT && ((float *)m->tensors[0].data)[1] == 4.0f);
    }
    CHECK(answer_for(g, &a, "s0", 3000) != NULL);
    CHECK_EQ_INT(atomic_load(&stage_max_batch), 4);
    answers_clear(&a);

    /* capacity 8: of ten jobs sent at once, the worker holds eight and refuses two */
    send_job(g, "c0", "slow", x, 2, 0, LION__STAGE__VISION);
    for (int i = 1; i < 10; i++) {
        snprintf(id, sizeof id, "c%d", i);
        send_job(g, id, "double", x, 2, 0, LION__STAGE__VISION);
    }
    int refused = 0, done = 0;
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "c%d", i);
        envelope_msg *m = answer_for(g, &a, id, 3000);
        if (m && m->env->kind == LION__KIND__RESULT) done++;
        if (m && m->env->kind == LION__KIND__ERROR) {
            refused++;
            check_error(m, LION_EUNAVAILABLE, "worker over capacity (8 jobs held, capacity 8)");
        }
    }
    CHECK_EQ_INT(refused, 2);
    CHECK_EQ_INT(done, 8);
    answers_clear(&a);
}

/* The messages about request id in arrival order, up to and including its RESULT or ERROR
 * (at most max), with the time each came; a message about another request fails the test. */
static int flow_of(gateway *g, const char *id, envelope_msg *msgs, int64_t *at_us, int max, int timeout_ms) {
    int n = 0;
    while (n < max) {
        envelope_msg m;
        if (gateway_recv(g, &m, timeout_ms) != 0) break;
        if (!m.env->request_id || strcmp(m.env->request_id, id) != 0) {
            testing_fail(__FILE__, __LINE__, "waiting for %s, got a %s of %s", id, lion_kind_name(m.env->kind),
                         m.env->request_id ? m.env->request_id : "no request");
            envelope_msg_close(&m);
            continue;
        }
        at_us[n] = clock_mono_us();
        msgs[n++] = m;
        if (m.env->kind == LION__KIND__RESULT || m.env->kind == LION__KIND__ERROR) break;
    }
    return n;
}

static void flow_close(envelope_msg *msgs, int n) {
    for (int i = 0; i < n; i++) envelope_msg_close(&msgs[i]);
}

/* A PARTIAL as the stage sent it: this job's id, stage and attempt, text and ids. */
static void check_partial(const envelope_msg *m, const char *id, const char *text, const int32_t *ids, size_t n_ids) {
    CHECK_EQ_INT(m->env->kind, LION__KIND__PARTIAL);
    if (m->env->kind != LION__KIND__PARTIAL) return;
    CHECK(!strcmp(m->env->request_id, id));
    CHECK_EQ_INT(m->env->stage, LION__STAGE__VISION);
    CHECK(m->env->has_attempt && m->env->attempt == 3);
    CHECK_EQ_INT(m->n_tensors, 0);
    const Lion__Result *r = m->env->result;
    CHECK(r && r->n_sequences == 1);
    if (!r || r->n_sequences != 1) return;
    const Lion__Sequence *seq = r->sequences[0];
    CHECK_MSG(seq->text && !strcmp(seq->text, text), "PARTIAL text \"%s\", want \"%s\"", seq->text ? seq->text : "",
              text);
    CHECK_EQ_INT(seq->n_token_ids, n_ids);
    CHECK(seq->n_token_ids == n_ids && (!n_ids || !memcmp(seq->token_ids, ids, n_ids * sizeof *ids)));
    CHECK(!seq->has_score);
}

static void test_streaming(gateway *g) {
    float x[3] = {1.0f, 2.0f, 3.0f};
    envelope_msg msgs[8];
    int64_t at[8];
    /* PARTIALs go out as the stage sends them, in order, and before the RESULT */
    send_job_stream(g, "st1", "stream", x, 3, 0, LION__STAGE__VISION, 1);
    int n = flow_of(g, "st1", msgs, at, 8, 3000);
    CHECK_EQ_INT(n, 4);
    if (n == 4) {
        const int32_t ids[4] = {7, 8, 9, 1};
        check_partial(&msgs[0], "st1", "a ", ids, 1);
        check_partial(&msgs[1], "st1", "big ", ids + 1, 1);
        check_partial(&msgs[2], "st1", "dog", ids + 2, 2);
        CHECK_EQ_INT(msgs[3].env->kind, LION__KIND__RESULT);
        const Lion__Result *r = msgs[3].env->result;
        CHECK(r && r->n_sequences == 1 && !strcmp(r->sequences[0]->text, "a big dog") &&
              r->sequences[0]->n_token_ids == 4);
        CHECK(msgs[3].n_tensors == 1 && envelope_msg_find(&msgs[3], "y") == 0);
        /* the first part came while the stage still worked (two 20 ms sleeps after it) */
        CHECK_MSG(at[3] - at[0] >= 30000, "the first PARTIAL came %.1f ms before the RESULT",
                  (double)(at[3] - at[0]) / 1000.0);
    }
    flow_close(msgs, n);
    /* the same job without `stream`: the stage's calls send nothing */
    send_job_stream(g, "st2", "stream", x, 3, 0, LION__STAGE__VISION, 0);
    n = flow_of(g, "st2", msgs, at, 8, 3000);
    CHECK_EQ_INT(n, 1);
    CHECK(n == 1 && msgs[0].env->kind == LION__KIND__RESULT);
    flow_close(msgs, n);
}

static void test_cancel(gateway *g) {
    float x[2] = {1.0f, 2.0f};
    envelope_msg m;
    /* a queued job: answered at once, while the job before it still runs */
    send_job(g, "q0", "slow", x, 2, 0, LION__STAGE__VISION);
    sleep_ms(50); /* q0 runs (300 ms) */
    send_job(g, "q1", "double", x, 2, 0, LION__STAGE__VISION);
    sleep_ms(20); /* q1 waits */
    int64_t t0 = clock_mono_us();
    send_cancel(g, "q1", LION__STAGE__VISION, 3);
    CHECK_EQ_INT(gateway_recv(g, &m, 3000), 0);
    CHECK_MSG(m.env && m.env->request_id && !strcmp(m.env->request_id, "q1"), "the cancelled job is answered first");
    check_error(&m, LION_ECANCELED, "cancelled by the gateway");
    CHECK_MSG(clock_mono_us() - t0 < 150000, "a queued job's cancel took %.1f ms", (clock_mono_us() - t0) / 1000.0);
    envelope_msg_close(&m);
    CHECK_EQ_INT(gateway_recv(g, &m, 3000), 0);
    CHECK(m.env && !strcmp(m.env->request_id, "q0") && m.env->kind == LION__KIND__RESULT);
    envelope_msg_close(&m);

    /* a running job: flagged, so the stage stops, and answered ERROR cancelled; CANCELs for
     * another attempt or stage of it change nothing */
    atomic_store(&saw_cancel, 0);
    send_job_stream(g, "r1", "wait-cancel", x, 2, 0, LION__STAGE__VISION, 1);
    CHECK_EQ_INT(gateway_recv(g, &m, 3000), 0);
    CHECK(m.env && !strcmp(m.env->request_id, "r1") && m.env->kind == LION__KIND__PARTIAL); /* "started" */
    envelope_msg_close(&m);
    send_cancel(g, "r1", LION__STAGE__VISION, 2);
    send_cancel(g, "r1", LION__STAGE__LLM, 3);
    send_cancel(g, "r", LION__STAGE__VISION, 3);
    CHECK_MSG(gateway_recv(g, &m, 150) == -1, "a CANCEL of another job was answered");
    CHECK_EQ_INT(atomic_load(&saw_cancel), 0);
    t0 = clock_mono_us();
    send_cancel(g, "r1", LION__STAGE__VISION, 3);
    CHECK_EQ_INT(gateway_recv(g, &m, 3000), 0);
    CHECK(m.env && !strcmp(m.env->request_id, "r1"));
    check_error(&m, LION_ECANCELED, "cancelled by the gateway");
    CHECK(m.env && m.env->has_attempt && m.env->attempt == 3 && m.env->n_trace == 1);
    CHECK_MSG(clock_mono_us() - t0 < 1000000, "a running job's cancel took %.1f ms", (clock_mono_us() - t0) / 1000.0);
    CHECK_EQ_INT(atomic_load(&saw_cancel), 1);
    envelope_msg_close(&m);

    /* a CANCEL for a job the worker does not hold (answered already, never seen): ignored */
    send_cancel(g, "r1", LION__STAGE__VISION, 3);
    send_cancel(g, "nobody", LION__STAGE__VISION, 0);
    send_job(g, "after-cancel", "double", x, 2, 0, LION__STAGE__VISION);
    CHECK_EQ_INT(gateway_recv(g, &m, 3000), 0);
    CHECK(m.env && !strcmp(m.env->request_id, "after-cancel") && m.env->kind == LION__KIND__RESULT);
    envelope_msg_close(&m);

    /* the answers to cancelled jobs returned their credit: nothing is held, and a full
     * capacity of jobs is taken */
    CHECK_EQ_INT(gateway_recv(g, &m, 200), -1); /* heartbeats only */
    CHECK_EQ_INT(g->last_in_flight, 0);
    answers a = {.n = 0};
    char id[16];
    send_job(g, "k0", "slow", x, 2, 0, LION__STAGE__VISION);
    for (int i = 1; i < 8; i++) {
        snprintf(id, sizeof id, "k%d", i);
        send_job(g, id, "double", x, 2, 0, LION__STAGE__VISION);
    }
    for (int i = 0; i < 8; i++) {
        snprintf(id, sizeof id, "k%d", i);
        envelope_msg *r = answer_for(g, &a, id, 3000);
        CHECK_MSG(r && r->env->kind == LION__KIND__RESULT, "%s: %s", id,
                  r && r->env->error ? r->env->error->message : "no result");
    }
    answers_clear(&a);
}

static void test_stop_flag_shutdown(gateway *g, worker_thread *wt) {
    answers a = {.n = 0};
    float x[2] = {1.0f, 2.0f};
    send_job(g, "z1", "slow", x, 2, 0, LION__STAGE__VISION);
    sleep_ms(100); /* z1 runs */
    send_job(g, "z2", "double", x, 2, 0, LION__STAGE__VISION);
    sleep_ms(50); /* z2 waits */
    atomic_store(&wt->stop, 1);
    int bye = 0;
    envelope_msg *m = answer_for(g, &a, "z2", 3000);
    check_error(m, LION_EUNAVAILABLE, "worker shutting down");
    m = answer_for(g, &a, "z1", 3000); /* the running job is finished and answered */
    CHECK(m && m->env->kind == LION__KIND__RESULT);
    for (int i = 0; i < a.n; i++) bye += a.msgs[i].env->kind == LION__KIND__BYE;
    CHECK_EQ_INT(bye, 1);
    int64_t t0 = clock_mono_us();
    pthread_join(wt->thread, NULL);
    CHECK((clock_mono_us() - t0) < 2000000);
    CHECK_EQ_INT(wt->rc, 0);
    answers_clear(&a);
}

static void test_signal_shutdown(void) {
    gateway g;
    gateway_open(&g);
    worker_thread wt;
    worker_start(&wt, &g, 1);
    expect_ready(&g);
    float x[1] = {3.0f};
    answers a = {.n = 0};
    send_job(&g, "s1", "double", x, 1, 0, LION__STAGE__VISION);
    envelope_msg *m = answer_for(&g, &a, "s1", 3000);
    CHECK(m && ((float *)m->tensors[0].data)[0] == 6.0f);
    answers_clear(&a);
    kill(getpid(), SIGTERM);
    envelope_msg bye;
    CHECK_EQ_INT(gateway_recv(&g, &bye, 3000), 0);
    CHECK(bye.env && bye.env->kind == LION__KIND__BYE);
    CHECK(bye.env && bye.env->replica_id && !strcmp(bye.env->replica_id, "vision-test"));
    envelope_msg_close(&bye);
    pthread_join(wt.thread, NULL);
    CHECK_EQ_INT(wt.rc, 0);
    /* worker_run put the default handler back */
    struct sigaction now;
    sigaction(SIGTERM, NULL, &now);
    CHECK(now.sa_handler == SIG_DFL);
    gateway_close(&g);
}

/* auto is bf16 only where the CPU has native bf16 and the stage a bf16 path; an explicit bf16
 * runs bf16 on any CPU for a stage that has one (weights widened in registers), f32 otherwise. */
static void test_precision(void) {
    const unsigned llm = PRECISION_BIT(PRECISION_BF16), vision = 0;
    const char *why;
    CHECK_EQ_INT(precision_resolve(PRECISION_AUTO, 0, llm, &why), PRECISION_F32);
    CHECK_CONTAINS(why, "auto: no native bf16");
    CHECK_EQ_INT(precision_resolve(PRECISION_AUTO, 1, llm, &why), PRECISION_BF16);
    CHECK_CONTAINS(why, "auto: native bf16");
    CHECK_EQ_INT(precision_resolve(PRECISION_AUTO, 1, vision, &why), PRECISION_F32);
    CHECK_CONTAINS(why, "no bf16 path");
    CHECK_EQ_INT(precision_resolve(PRECISION_BF16, 0, llm, &why), PRECISION_BF16);
    CHECK_CONTAINS(why, "no native bf16");
    CHECK_EQ_INT(precision_resolve(PRECISION_BF16, 1, vision, NULL), PRECISION_F32);
    CHECK_EQ_INT(precision_resolve(PRECISION_F32, 1, llm, &why), PRECISION_F32);
    char line[160];
    precision_describe(line, sizeof line, PRECISION_F32, "auto: no native bf16");
    char want[160];
    snprintf(want, sizeof want, "precision f32 (auto: no native bf16; kernels %s, onednn %s)", cpu_isa_name(),
             onednn_isa_name());
    CHECK_MSG(!strcmp(line, want), "'%s' != '%s'", line, want);
    /* the ISA starts with the matvec kernel; native bf16 is what cpuid says */
    CHECK(!strncmp(cpu_isa_name(), matvec_isa_name(matvec_isa_best()), strlen(matvec_isa_name(matvec_isa_best()))));
    CHECK_EQ_INT(cpu_native_bf16(), cpu_features_get()->avx512_bf16 || cpu_features_get()->amx_bf16);
    CHECK_EQ_INT(!!strstr(cpu_isa_name(), "avx512bf16"), cpu_features_get()->avx512_bf16);
    lion_precision p;
    CHECK(precision_from_name("bf16", &p) == 0 && p == PRECISION_BF16 && precision_from_name("BF16", &p) == -1);
    CHECK(!strcmp(precision_name(PRECISION_AUTO), "auto") && !strcmp(precision_name((lion_precision)7), "?"));
    printf("this CPU: isa %s, native bf16 %s, vendor %s\n", cpu_isa_name(), cpu_native_bf16() ? "yes" : "no",
           cpu_features_get()->vendor);
}

static void test_config_parse(void) {
    worker_config cfg;
    lion_status st;
    char *ok[] = {"llm", "--gateway", "ipc:///tmp/x", "--model=/m", "--capacity=2", "--max-batch", "2"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "llm", 7, ok, &st), 0);
    CHECK(!strcmp(cfg.gateway, "ipc:///tmp/x") && !strcmp(cfg.model_dir, "/m"));
    CHECK_EQ_INT(cfg.capacity, 2);
    CHECK_EQ_INT(cfg.heartbeat_ms, 1000);
    CHECK(!strncmp(cfg.replica_id, "llm-", 4));

    char *none[] = {"llm"};
    unsetenv("LION_GATEWAY");
    CHECK_EQ_INT(worker_config_parse(&cfg, "llm", 1, none, &st), -1);
    CHECK_CONTAINS(st.msg, "no gateway endpoint: pass --gateway tcp://HOST:PORT or set LION_GATEWAY");
    setenv("LION_GATEWAY", "tcp://127.0.0.1:9", 1);
    setenv("LION_THREADS", "3", 1);
    CHECK_EQ_INT(worker_config_parse(&cfg, "llm", 1, none, &st), 0);
    CHECK(!strcmp(cfg.gateway, "tcp://127.0.0.1:9") && cfg.threads == 3);
    setenv("LION_THREADS", "many", 1);
    CHECK_EQ_INT(worker_config_parse(&cfg, "llm", 1, none, &st), -1);
    CHECK_CONTAINS(st.msg, "LION_THREADS: 'many' is not an integer in [1, 1024]");
    unsetenv("LION_THREADS");
    unsetenv("LION_GATEWAY");

    char *bad_cap[] = {"llm", "--gateway", "tcp://a:1", "--capacity", "0"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "llm", 5, bad_cap, &st), -1);
    CHECK_CONTAINS(st.msg, "--capacity: 0 is not in [1, 4096]");
    char *batch_over[] = {"llm", "--gateway", "tcp://a:1", "--capacity", "2", "--max-batch", "3"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "llm", 7, batch_over, &st), -1);
    CHECK_CONTAINS(st.msg, "--max-batch 3 is larger than --capacity 2");
    char *unknown[] = {"llm", "--gatewy", "tcp://a:1"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "llm", 3, unknown, &st), -1);
    CHECK_CONTAINS(st.msg, "unknown option '--gatewy'");
    char *no_value[] = {"llm", "--gateway"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "llm", 2, no_value, &st), -1);
    CHECK_CONTAINS(st.msg, "--gateway needs a value (EP)");
    char *not_ep[] = {"llm", "--gateway", "localhost"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "llm", 3, not_ep, &st), -1);
    CHECK_CONTAINS(st.msg, "--gateway: 'localhost' is not a ZeroMQ endpoint");
    char *long_id[] = {"llm", "--gateway", "tcp://a:1", "--replica",
                       "0123456789012345678901234567890123456789012345678901234567890123456789"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "llm", 5, long_id, &st), -1);
    CHECK_CONTAINS(st.msg, "--replica: replica id must be 1..63 bytes");
    /* --precision / LION_PRECISION: auto unless given, the command line over the environment */
    CHECK_EQ_INT(worker_config_parse(&cfg, "llm", 7, ok, &st), 0);
    CHECK_EQ_INT(cfg.precision, PRECISION_AUTO);
    char *bf16[] = {"llm", "--gateway", "tcp://a:1", "--precision", "bf16"};
    setenv("LION_PRECISION", "f32", 1);
    CHECK_EQ_INT(worker_config_parse(&cfg, "llm", 3, bf16, &st), 0);
    CHECK_EQ_INT(cfg.precision, PRECISION_F32);
    CHECK_EQ_INT(worker_config_parse(&cfg, "llm", 5, bf16, &st), 0);
    CHECK_EQ_INT(cfg.precision, PRECISION_BF16);
    setenv("LION_PRECISION", "fp16", 1);
    CHECK_EQ_INT(worker_config_parse(&cfg, "llm", 3, bf16, &st), -1);
    CHECK_CONTAINS(st.msg, "LION_PRECISION: 'fp16' is not one of auto, f32, bf16");
    unsetenv("LION_PRECISION");
    char *help[] = {"llm", "--help"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "llm", 2, help, &st), 0);
    CHECK_EQ_INT(cfg.help, 1);

    /* worker_run refuses a config it cannot run with, before touching any socket */
    worker_stage stage = {.stage = 42, .process = toy_process};
    cfg.gateway = "tcp://127.0.0.1:9";
    CHECK_EQ_INT(worker_run(&cfg, &stage, &st), -1);
    CHECK_CONTAINS(st.msg, "worker: stage 42 has no process (or admit and step) function or is unknown");
}

int main(void) {
    alarm(60); /* a hung socket fails the test instead of stalling ctest */
    test_precision();
    test_config_parse();

    gateway g;
    gateway_open(&g);
    worker_thread wt;
    worker_start(&wt, &g, 0);
    expect_ready(&g);
    test_results_and_errors(&g);
    test_batching_and_capacity(&g);
    test_streaming(&g);
    test_cancel(&g);
    /* the gateway's own heartbeat needs no answer; the worker's came every 50 ms */
    lion_status st;
    Lion__Envelope *hb = envelope_new(LION__KIND__HEARTBEAT, 0, NULL, &st);
    CHECK_EQ_INT(envelope_send(g.router, &g.peer, hb, NULL, 0, 0, &st), 0);
    envelope_free(hb);
    CHECK(g.heartbeats >= 3);
    CHECK(g.heartbeat_with_credit == g.heartbeats);
    CHECK(g.heartbeat_with_info == g.heartbeats);
    test_stop_flag_shutdown(&g, &wt);
    gateway_close(&g);

    test_signal_shutdown();
    return testing_finish();
}
