/* test_worker_gateways: one worker serving two gateways (--gateway A,B), seen from two
 * ROUTER sockets on 127.0.0.1 that play the gateways. For a process (batch) stage and a
 * continuous (admit/step) toy stage alike:
 *   - READY reaches both, each announcing its share of the capacity (5: 3 + 2);
 *   - jobs (and their PARTIALs) from each gateway are answered on its own link, never the
 *     other's, also when both send the same request id;
 *   - a CANCEL from one gateway cancels its own job only, never the other's job with the same
 *     request id, queued or running;
 *   - heartbeats carry each gateway's share and its own jobs in flight; the capacity is the
 *     worker's: a gateway that sends past its share gets "over capacity" once the worker is full;
 *   - one gateway going away (BYE, then silence: its socket closed) does not disturb the other,
 *     which is announced the whole capacity meanwhile; the gone one, heard again, gets READY
 *     with its share back;
 *   - stopping says BYE on both links.
 * Also: --gateway's list (and LION_GATEWAY's) parsed and refused as it must be, the gateways'
 * key files (one for all, one each, a count that fits neither), worker_check_link over every
 * endpoint, the credit split, and CURVE links to two gateways with keys of their own. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "clock.h"
#include "curve.h"
#include "envelope.h"
#include "testing.h"
#include "worker.h"
#include "worker_check.h"
#include "worker_gateways.h"

#define CAPACITY 5 /* shared: gateway A is announced 3, B 2 */

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* --- the toy stages: y = 2x, and what the instruction asks ----------------------------------- */

static int job_double(worker_job *job) {
    const tensor *x = worker_job_input(job, "x", &job->status);
    if (!x) return -1;
    tensor y;
    if (tensor_alloc(&y, DTYPE_F32, x->ndim, x->shape, &job->status) != 0) return -1;
    for (int64_t i = 0; i < tensor_numel(x); i++) ((float *)y.data)[i] = 2.0f * ((const float *)x->data)[i];
    if (worker_job_add_output(job, "y", &y, &job->status) != 0) {
        tensor_free(&y);
        return -1;
    }
    return 0;
}

static const char *instruction(const worker_job *job) {
    return job->task->instruction ? job->task->instruction : "";
}

/* A process stage: "double"; "slow" (300 ms first); "stream" (two PARTIALs "a ", "b"
 * 20 ms apart first); "wait-cancel" (a PARTIAL "started", then 10 ms steps until cancelled,
 * 3 s at most). */
static int batch_process(void *ctx, worker_job *jobs, int n, lion_status *st) {
    for (int j = 0; j < n; j++) {
        worker_job *job = &jobs[j];
        const char *what = instruction(job);
        if (!strcmp(what, "slow")) sleep_ms(300);
        if (!strcmp(what, "stream")) {
            if (worker_job_send_partial(job, "a ", NULL, 0, &job->status)) continue;
            sleep_ms(20);
            if (worker_job_send_partial(job, "b", NULL, 0, &job->status)) continue;
        }
        if (!strcmp(what, "wait-cancel")) {
            if (worker_job_send_partial(job, "started", NULL, 0, &job->status)) continue;
            for (int k = 0; k < 300 && !worker_job_cancelled(job); k++) sleep_ms(10);
        }
        job_double(job);
    }
    return 0;
}

/* A continuous stage: each job holds some 10 ms steps ("double" 1, "slow" 30, "stream" 2
 * with a PARTIAL each, "wait-cancel" a PARTIAL "started" and up to 300 until cancelled), and
 * is answered (worker_job_done) when they are over or it is cancelled. */
#define MAX_HELD 64
static worker_job *held[MAX_HELD];
static int held_steps[MAX_HELD], n_held;

static void cont_admit(void *ctx, worker_job *jobs, int n) {
    for (int i = 0; i < n; i++) {
        if (n_held == MAX_HELD) { /* capacity keeps this from happening */
            worker_job_fail(&jobs[i], LION_EINTERNAL, "toy stage full");
            worker_job_done(&jobs[i], NULL);
            continue;
        }
        const char *what = instruction(&jobs[i]);
        int steps = !strcmp(what, "slow") ? 30 : !strcmp(what, "stream") ? 2 : !strcmp(what, "wait-cancel") ? 300 : 1;
        if (!strcmp(what, "wait-cancel")) worker_job_send_partial(&jobs[i], "started", NULL, 0, &jobs[i].status);
        held[n_held] = &jobs[i];
        held_steps[n_held++] = steps;
    }
}

static int cont_step(void *ctx) {
    sleep_ms(10);
    for (int i = 0; i < n_held;) {
        worker_job *job = held[i];
        const int cancelled = worker_job_cancelled(job);
        if (!cancelled && !strcmp(instruction(job), "stream"))
            worker_job_send_partial(job, held_steps[i] == 2 ? "a " : "b", NULL, 0, &job->status);
        if (!cancelled && --held_steps[i] > 0) {
            i++;
            continue;
        }
        if (!cancelled) job_double(job);
        worker_job_done(job, NULL); /* a cancelled job is answered ERROR cancelled */
        held[i] = held[--n_held];
        held_steps[i] = held_steps[n_held];
    }
    return n_held;
}

/* --- the gateways' side ------------------------------------------------------------------------ */

typedef struct fake_gw {
    const char *name; /* "A", "B": for messages */
    void *ctx, *router;
    char endpoint[128];
    envelope_peer peer; /* the worker's routing id on this link, from what it sent */
    int have_peer;
    int readies, ready_capacity;                 /* READYs, and the latest one's capacity */
    int beats, beat_capacity, beat_in_flight;    /* HEARTBEATs, and the latest one's credit */
    int byes;
    int beating;     /* sends HEARTBEATs, as a gateway does (off: silent, as one gone) */
    int64_t next_beat_us;
} fake_gw;

/* The open gateways: whatever the test waits on, all of them heartbeat (the worker takes a
 * gateway it has not heard from for a while for gone), as real gateways do from their own
 * loops. Everything runs on the test's thread. */
static fake_gw *open_gws[4];

static void gw_send(fake_gw *g, Lion__Envelope *env, envelope_tensor *t, int n);

static void gw_tick(void) {
    int64_t now = clock_mono_us();
    for (int i = 0; i < 4; i++) {
        fake_gw *g = open_gws[i];
        if (!g || !g->beating || !g->have_peer || now < g->next_beat_us) continue;
        lion_status st;
        gw_send(g, envelope_new(LION__KIND__HEARTBEAT, 0, NULL, &st), NULL, 0);
        g->next_beat_us = now + 25000;
    }
}

/* Sleeps ms while the gateways keep heartbeating. */
static void idle_ms(int ms) {
    int64_t end = clock_mono_us() + (int64_t)ms * 1000;
    while (clock_mono_us() < end) {
        gw_tick();
        sleep_ms(5);
    }
}

/* Binds on endpoint ("tcp://127.0.0.1:*" for a new port). CURVE with pair when given. */
static void gw_open(fake_gw *g, const char *name, const char *endpoint, const curve_keypair *pair) {
    memset(g, 0, sizeof *g);
    g->name = name;
    g->ctx = zmq_ctx_new();
    g->router = zmq_socket(g->ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(g->router, ZMQ_LINGER, &linger, sizeof linger);
    lion_status st;
    if (pair) CHECK_EQ_INT(curve_server_setup(g->router, pair, "lion-test", &st), 0);
    CHECK_EQ_INT(zmq_bind(g->router, endpoint), 0);
    size_t len = sizeof g->endpoint;
    zmq_getsockopt(g->router, ZMQ_LAST_ENDPOINT, g->endpoint, &len);
    g->beating = 1;
    for (int i = 0; i < 4; i++)
        if (!open_gws[i]) {
            open_gws[i] = g;
            break;
        }
}

static void gw_close(fake_gw *g) {
    for (int i = 0; i < 4; i++)
        if (open_gws[i] == g) open_gws[i] = NULL;
    zmq_close(g->router);
    zmq_ctx_term(g->ctx);
    g->router = g->ctx = NULL;
}

/* The next message other than READY, HEARTBEAT and BYE (those are counted, with their
 * credit); -1 after timeout_ms. */
static int gw_recv(fake_gw *g, envelope_msg *m, int timeout_ms) {
    int64_t end = clock_mono_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        gw_tick();
        long left = (long)((end - clock_mono_us()) / 1000);
        if (left <= 0) return -1;
        zmq_pollitem_t item = {.socket = g->router, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, left < 10 ? left : 10) <= 0) continue;
        lion_status st;
        if (envelope_recv(g->router, m, ENVELOPE_ROUTED, NULL, &st) != 0) {
            testing_fail(__FILE__, __LINE__, "gateway %s got a malformed message: %s", g->name, st.msg);
            envelope_msg_close(m);
            continue;
        }
        g->peer = m->peer;
        g->have_peer = 1;
        const Lion__Envelope *env = m->env;
        int capacity = env->credit ? (int)env->credit->capacity : -1;
        if (env->kind == LION__KIND__READY) {
            g->readies++;
            g->ready_capacity = capacity;
            CHECK(env->replica_id && !strcmp(env->replica_id, "vision-two"));
        } else if (env->kind == LION__KIND__HEARTBEAT) {
            g->beats++;
            g->beat_capacity = capacity;
            g->beat_in_flight = env->credit ? (int)env->credit->in_flight : -1;
        } else if (env->kind == LION__KIND__BYE) {
            g->byes++;
        } else {
            return 0;
        }
        envelope_msg_close(m);
    }
}

/* Handles state messages for ms; anything else arriving is a failure (it belongs to no job
 * this gateway waits for). */
static void gw_expect_nothing(fake_gw *g, int ms, int line) {
    envelope_msg m;
    if (gw_recv(g, &m, ms) != 0) {
        testing_passed++;
        return;
    }
    testing_fail(__FILE__, line, "gateway %s got an unexpected %s of '%s'", g->name, lion_kind_name(m.env->kind),
                 m.env->request_id ? m.env->request_id : "");
    envelope_msg_close(&m);
}
#define EXPECT_NOTHING(g, ms) gw_expect_nothing((g), (ms), __LINE__)

/* Waits (state messages only) until heartbeats announce capacity want; 0 when they did. */
static int gw_wait_capacity(fake_gw *g, int want, int timeout_ms) {
    int64_t end = clock_mono_us() + (int64_t)timeout_ms * 1000;
    while (clock_mono_us() < end) {
        if (g->beat_capacity == want) return 0;
        envelope_msg m;
        if (gw_recv(g, &m, 20) == 0) {
            testing_fail(__FILE__, __LINE__, "gateway %s: an unexpected %s of '%s' while waiting for credit",
                         g->name, lion_kind_name(m.env->kind), m.env->request_id ? m.env->request_id : "");
            envelope_msg_close(&m);
        }
    }
    return g->beat_capacity == want ? 0 : -1;
}

/* Waits until the gateway has its READY (count readies, from the latest value before). */
static int gw_wait_ready(fake_gw *g, int readies, int timeout_ms) {
    int64_t end = clock_mono_us() + (int64_t)timeout_ms * 1000;
    while (g->readies < readies && clock_mono_us() < end) {
        envelope_msg m;
        if (gw_recv(g, &m, 20) == 0) {
            testing_fail(__FILE__, __LINE__, "gateway %s: an unexpected %s while waiting for READY", g->name,
                         lion_kind_name(m.env->kind));
            envelope_msg_close(&m);
        }
    }
    return g->readies >= readies ? 0 : -1;
}

static void gw_send(fake_gw *g, Lion__Envelope *env, envelope_tensor *t, int n) {
    lion_status st;
    g->beating = g->beating || (env->kind == LION__KIND__HEARTBEAT); /* a gateway back speaks */
    if (envelope_send(g->router, &g->peer, env, t, n, 0, &st) != 0)
        testing_fail(__FILE__, __LINE__, "gateway %s: send: %s", g->name, st.msg);
    envelope_free(env);
}

/* A JOB of stage vision, attempt 1, whose x is one float. */
static void send_job(fake_gw *g, const char *id, const char *what, float x, int stream) {
    lion_status st;
    Lion__Envelope *env = envelope_new(LION__KIND__JOB, LION__STAGE__VISION, id, &st);
    Lion__Task *task = malloc(sizeof *task);
    lion__task__init(task);
    task->instruction = strdup(what);
    if (stream) task->has_stream = task->stream = 1;
    env->task = task;
    env->has_attempt = 1;
    env->attempt = 1;
    tensor t;
    int64_t shape[1] = {1};
    tensor_alloc(&t, DTYPE_F32, 1, shape, &st);
    ((float *)t.data)[0] = x;
    envelope_tensor in = {.name = "x", .t = &t};
    gw_send(g, env, &in, 1);
    tensor_free(&t);
}

static void send_cancel(fake_gw *g, const char *id) {
    lion_status st;
    gw_send(g, envelope_cancel(id, LION__STAGE__VISION, 1, &st), NULL, 0);
}

static void send_state(fake_gw *g, Lion__Kind kind) {
    lion_status st;
    gw_send(g, envelope_new(kind, 0, NULL, &st), NULL, 0);
}

/* The next message is kind for id (a RESULT: its y is want_y); -1 when it is not. */
static int expect(fake_gw *g, const char *id, Lion__Kind kind, float want_y, int line) {
    envelope_msg m;
    if (gw_recv(g, &m, 5000) != 0) {
        testing_fail(__FILE__, line, "gateway %s: no %s of '%s'", g->name, lion_kind_name(kind), id);
        return -1;
    }
    const Lion__Envelope *env = m.env;
    int ok = env->request_id && !strcmp(env->request_id, id) && env->kind == kind;
    if (ok && kind == LION__KIND__RESULT)
        ok = m.n_tensors == 1 && envelope_msg_find(&m, "y") == 0 && ((const float *)m.tensors[0].data)[0] == want_y;
    if (ok) testing_passed++;
    else
        testing_fail(__FILE__, line, "gateway %s: want a %s of '%s', got a %s of '%s'%s%s", g->name,
                     lion_kind_name(kind), id, lion_kind_name(env->kind), env->request_id ? env->request_id : "",
                     env->error ? ": " : "", env->error && env->error->message ? env->error->message : "");
    envelope_msg_close(&m);
    return ok ? 0 : -1;
}
#define EXPECT(g, id, kind, y) expect((g), (id), LION__KIND__##kind, (y), __LINE__)

/* The RESULTs of n jobs, in any order (a continuous stage answers each when it is done):
 * ids[i]'s y is ys[i], and nothing else comes meanwhile. */
static void expect_results(fake_gw *g, const char *const *ids, const float *ys, int n, int line) {
    int seen[8] = {0};
    for (int k = 0; k < n; k++) {
        envelope_msg m;
        if (gw_recv(g, &m, 5000) != 0) {
            testing_fail(__FILE__, line, "gateway %s: %d of %d RESULTs came", g->name, k, n);
            return;
        }
        const Lion__Envelope *env = m.env;
        int i = 0;
        while (i < n && !(env->request_id && !strcmp(env->request_id, ids[i]) && !seen[i])) i++;
        int ok = i < n && env->kind == LION__KIND__RESULT && m.n_tensors == 1 &&
                 ((const float *)m.tensors[0].data)[0] == ys[i];
        if (ok) {
            seen[i] = 1;
            testing_passed++;
        } else {
            testing_fail(__FILE__, line, "gateway %s: an unexpected %s of '%s'", g->name, lion_kind_name(env->kind),
                         env->request_id ? env->request_id : "");
        }
        envelope_msg_close(&m);
    }
}
/* An ERROR of id whose message has want. */
static void expect_error(fake_gw *g, const char *id, int code, const char *want, int line) {
    envelope_msg m;
    if (gw_recv(g, &m, 5000) != 0) {
        testing_fail(__FILE__, line, "gateway %s: no ERROR of '%s'", g->name, id);
        return;
    }
    const Lion__Envelope *env = m.env;
    if (env->kind == LION__KIND__ERROR && env->request_id && !strcmp(env->request_id, id) && env->error->code == code &&
        strstr(env->error->message, want))
        testing_passed++;
    else
        testing_fail(__FILE__, line, "gateway %s: want ERROR '%s' of '%s', got a %s of '%s'%s%s", g->name, want, id,
                     lion_kind_name(env->kind), env->request_id ? env->request_id : "", env->error ? ": " : "",
                     env->error && env->error->message ? env->error->message : "");
    envelope_msg_close(&m);
}
#define EXPECT_ERROR(g, id, code, want) expect_error((g), (id), (code), (want), __LINE__)

/* --- the worker in a thread ------------------------------------------------------------------ */

typedef struct worker_thread {
    pthread_t thread;
    char gateways[512];
    char server_keys[1024];
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

/* A vision worker of capacity 5 serving gateways (a comma-separated list), heartbeats every
 * 50 ms, a gateway silent for 250 ms taken for gone (5 beats: a loaded test machine may stall
 * the fake gateways' heartbeats for a moment); keys (server keys, own pair) for CURVE, or NULL. */
static void worker_start(worker_thread *wt, const char *gateways, const worker_stage *stage, const char *server_keys,
                         const char *own_key) {
    memset(wt, 0, sizeof *wt);
    snprintf(wt->gateways, sizeof wt->gateways, "%s", gateways);
    char *argv[] = {"vision", "--gateway", wt->gateways, "--replica", "vision-two", "--capacity", "5",
                    "--max-batch", "4", "--heartbeat-ms", "50", "--threads", "1"};
    lion_status st;
    CHECK_EQ_INT(worker_config_parse(&wt->cfg, "vision", 13, argv, &st), 0);
    if (server_keys) {
        snprintf(wt->server_keys, sizeof wt->server_keys, "%s", server_keys);
        wt->cfg.curve_server_key = wt->server_keys;
        wt->cfg.curve_key = own_key;
    }
    wt->cfg.linger_ms = 200;
    wt->cfg.gateway_silence_ms = 250;
    wt->cfg.stop = &wt->stop;
    wt->stage = *stage;
    pthread_create(&wt->thread, NULL, worker_thread_main, wt);
}

static void worker_stop(worker_thread *wt) {
    atomic_store(&wt->stop, 1);
    pthread_join(wt->thread, NULL);
    CHECK_EQ_INT(wt->rc, 0);
}

/* --- the tests -------------------------------------------------------------------------------- */

static void check_answers_on_own_link(fake_gw *a, fake_gw *b) {
    send_job(a, "a1", "double", 1.0f, 0);
    send_job(b, "b1", "double", 10.0f, 0);
    /* the same request id from both: two jobs, each answered where it came from */
    send_job(a, "same", "double", 2.0f, 0);
    send_job(b, "same", "double", 20.0f, 0);
    const char *a_ids[] = {"a1", "same"}, *b_ids[] = {"b1", "same"};
    const float a_ys[] = {2.0f, 4.0f}, b_ys[] = {20.0f, 40.0f};
    expect_results(a, a_ids, a_ys, 2, __LINE__);
    expect_results(b, b_ids, b_ys, 2, __LINE__);
    EXPECT_NOTHING(a, 150);
    EXPECT_NOTHING(b, 50);
}

/* Both stream the same request id at once: each gets its own two PARTIALs, then its RESULT. */
static void check_partials_on_own_link(fake_gw *a, fake_gw *b) {
    send_job(a, "st", "stream", 3.0f, 1);
    send_job(b, "st", "stream", 30.0f, 1);
    EXPECT(a, "st", PARTIAL, 0);
    EXPECT(a, "st", PARTIAL, 0);
    EXPECT(a, "st", RESULT, 6.0f);
    EXPECT(b, "st", PARTIAL, 0);
    EXPECT(b, "st", PARTIAL, 0);
    EXPECT(b, "st", RESULT, 60.0f);
    EXPECT_NOTHING(a, 100);
    EXPECT_NOTHING(b, 20);
}

static void check_cancel_per_link(fake_gw *a, fake_gw *b) {
    /* A's job "c" runs; B's job "c" (same id, same attempt) is queued behind it (a process
     * stage) or runs beside it (a continuous one) */
    send_job(a, "c", "wait-cancel", 1.0f, 1);
    EXPECT(a, "c", PARTIAL, 0);
    send_job(b, "c", "wait-cancel", 2.0f, 1);
    idle_ms(30);
    int64_t t0 = clock_mono_us();
    send_cancel(a, "c");
    EXPECT_ERROR(a, "c", LION_ECANCELED, "cancelled by the gateway");
    CHECK_MSG(clock_mono_us() - t0 < 1000000, "A's cancel took %.1f ms", (clock_mono_us() - t0) / 1000.0);
    /* B's "c" is not cancelled: it says it started and goes on */
    EXPECT(b, "c", PARTIAL, 0);
    EXPECT_NOTHING(b, 200);
    send_cancel(b, "c");
    EXPECT_ERROR(b, "c", LION_ECANCELED, "cancelled by the gateway");
    EXPECT_NOTHING(a, 50);

    /* a CANCEL from B of a job only A holds changes nothing */
    send_job(a, "only-a", "wait-cancel", 1.0f, 1);
    EXPECT(a, "only-a", PARTIAL, 0);
    send_cancel(b, "only-a");
    EXPECT_NOTHING(a, 200);
    EXPECT_NOTHING(b, 20);
    send_cancel(a, "only-a");
    EXPECT_ERROR(a, "only-a", LION_ECANCELED, "cancelled by the gateway");

    /* a queued job of B's is cancelled by B while A's same id waits too (process stage:
     * both queue behind "hold"; continuous: both run) */
    send_job(a, "hold", "wait-cancel", 0.0f, 1);
    EXPECT(a, "hold", PARTIAL, 0);
    send_job(a, "q", "double", 5.0f, 0);
    send_job(b, "q", "double", 50.0f, 0);
    idle_ms(20);
    send_cancel(b, "q");
    /* a continuous stage may have answered B's "q" before the CANCEL came: then the CANCEL
     * finds nothing (a RESULT is as right as the ERROR); A's "q" is never cancelled */
    envelope_msg m;
    CHECK_EQ_INT(gw_recv(b, &m, 5000), 0);
    if (m.env) {
        CHECK(m.env->request_id && !strcmp(m.env->request_id, "q"));
        CHECK(m.env->kind == LION__KIND__RESULT ||
              (m.env->kind == LION__KIND__ERROR && m.env->error->code == LION_ECANCELED));
        envelope_msg_close(&m);
    }
    send_cancel(a, "hold");
    envelope_msg got[2];
    int n = 0;
    for (; n < 2 && gw_recv(a, &got[n], 5000) == 0; n++) {}
    CHECK_EQ_INT(n, 2);
    int q_result = 0, hold_cancelled = 0;
    for (int i = 0; i < n; i++) {
        const Lion__Envelope *env = got[i].env;
        q_result += !strcmp(env->request_id, "q") && env->kind == LION__KIND__RESULT &&
                    ((const float *)got[i].tensors[0].data)[0] == 10.0f;
        hold_cancelled += !strcmp(env->request_id, "hold") && env->kind == LION__KIND__ERROR;
        envelope_msg_close(&got[i]);
    }
    CHECK_EQ_INT(q_result, 1);
    CHECK_EQ_INT(hold_cancelled, 1);
    EXPECT_NOTHING(a, 50);
    EXPECT_NOTHING(b, 20);
}

/* Heartbeats: each gateway's share and its own jobs; the worker's capacity decides when a
 * gateway sends past its share. */
static void check_credit(fake_gw *a, fake_gw *b) {
    CHECK_EQ_INT(gw_wait_capacity(a, 3, 2000), 0);
    CHECK_EQ_INT(gw_wait_capacity(b, 2, 2000), 0);
    send_job(a, "h", "wait-cancel", 1.0f, 1);
    EXPECT(a, "h", PARTIAL, 0);
    int beats_a = a->beats, beats_b = b->beats;
    EXPECT_NOTHING(a, 120);
    EXPECT_NOTHING(b, 120);
    CHECK(a->beats > beats_a && b->beats > beats_b);
    CHECK_EQ_INT(a->beat_in_flight, 1);
    CHECK_EQ_INT(b->beat_in_flight, 0);
    send_cancel(a, "h");
    EXPECT_ERROR(a, "h", LION_ECANCELED, "cancelled");

    /* A sends its 3, B 3 (one past its 2): the sixth job finds the worker full */
    send_job(a, "o1", "slow", 1.0f, 0);
    send_job(a, "o2", "slow", 2.0f, 0);
    send_job(a, "o3", "slow", 3.0f, 0);
    idle_ms(20);
    send_job(b, "o4", "slow", 4.0f, 0);
    send_job(b, "o5", "slow", 5.0f, 0);
    send_job(b, "o6", "slow", 6.0f, 0);
    EXPECT_ERROR(b, "o6", LION_EUNAVAILABLE, "worker over capacity (5 jobs held, capacity 5)");
    /* process stage: o1..o4 in one batch, o5 after; continuous: all at once */
    envelope_msg m;
    int results_a = 0, results_b = 0;
    for (int i = 0; i < 3 && gw_recv(a, &m, 5000) == 0; i++) {
        results_a += m.env->kind == LION__KIND__RESULT;
        envelope_msg_close(&m);
    }
    for (int i = 0; i < 2 && gw_recv(b, &m, 5000) == 0; i++) {
        results_b += m.env->kind == LION__KIND__RESULT;
        envelope_msg_close(&m);
    }
    CHECK_EQ_INT(results_a, 3);
    CHECK_EQ_INT(results_b, 2);
    EXPECT_NOTHING(a, 50);
    EXPECT_NOTHING(b, 20);
}

/* A says BYE: B is announced the whole capacity and keeps being served; A heard again gets
 * READY with its share, and B its own share back. */
static void check_bye(fake_gw *a, fake_gw *b) {
    int readies = a->readies;
    send_state(a, LION__KIND__BYE);
    a->beating = 0; /* gone: until it says something again */
    CHECK_EQ_INT(gw_wait_capacity(b, CAPACITY, 2000), 0);
    send_job(b, "after-bye", "double", 7.0f, 0);
    EXPECT(b, "after-bye", RESULT, 14.0f);
    send_state(a, LION__KIND__HEARTBEAT);
    CHECK_EQ_INT(gw_wait_ready(a, readies + 1, 2000), 0);
    CHECK_EQ_INT(a->ready_capacity, 3);
    CHECK_EQ_INT(gw_wait_capacity(b, 2, 2000), 0);
    send_job(a, "back", "double", 8.0f, 0);
    EXPECT(a, "back", RESULT, 16.0f);
}

/* A goes silent for good (its socket closed, a job of it still running): B never sees A's
 * answer, gets the whole capacity and is served; a new A on the same port is announced READY
 * once it speaks. */
static void check_silence(fake_gw *a, fake_gw *b) {
    char endpoint[128];
    snprintf(endpoint, sizeof endpoint, "%s", a->endpoint);
    send_job(a, "orphan", "slow", 1.0f, 0);
    idle_ms(20);
    gw_close(a);
    send_job(b, "alone", "double", 9.0f, 0);
    EXPECT(b, "alone", RESULT, 18.0f);
    CHECK_EQ_INT(gw_wait_capacity(b, CAPACITY, 3000), 0);
    send_job(b, "alone2", "slow", 10.0f, 0);
    EXPECT(b, "alone2", RESULT, 20.0f);
    EXPECT_NOTHING(b, 100);

    gw_open(a, "A", endpoint, NULL);
    a->beating = 0; /* until the test has it speak */
    /* ZeroMQ reconnects; the worker's heartbeats show its routing id, A answers one */
    int64_t end = clock_mono_us() + 3000000;
    envelope_msg m;
    while (!a->have_peer && clock_mono_us() < end)
        if (gw_recv(a, &m, 50) == 0) envelope_msg_close(&m); /* the orphan's late answer, if kept */
    CHECK(a->have_peer);
    send_state(a, LION__KIND__HEARTBEAT);
    CHECK_EQ_INT(gw_wait_ready(a, 1, 3000), 0);
    CHECK_EQ_INT(a->ready_capacity, 3);
    CHECK_EQ_INT(gw_wait_capacity(b, 2, 2000), 0);
    send_job(a, "new-a", "double", 11.0f, 0);
    /* the orphan's answer may still be ahead of it in the queue of the old link */
    for (int i = 0; i < 2; i++) {
        if (gw_recv(a, &m, 5000) != 0) break;
        int mine = !strcmp(m.env->request_id, "new-a");
        int orphan = !strcmp(m.env->request_id, "orphan");
        CHECK_MSG(mine || orphan, "new A got an answer of '%s'", m.env->request_id);
        if (mine) CHECK(m.env->kind == LION__KIND__RESULT && ((const float *)m.tensors[0].data)[0] == 22.0f);
        envelope_msg_close(&m);
        if (mine) break;
    }
    EXPECT_NOTHING(b, 50);
}

static void run_two_gateways(const char *what, const worker_stage *stage) {
    printf("--- two gateways, %s stage\n", what);
    fake_gw a, b;
    gw_open(&a, "A", "tcp://127.0.0.1:*", NULL);
    gw_open(&b, "B", "tcp://127.0.0.1:*", NULL);
    char list[300];
    snprintf(list, sizeof list, "%s,%s", a.endpoint, b.endpoint);
    worker_thread wt;
    worker_start(&wt, list, stage, NULL, NULL);
    CHECK_EQ_INT(gw_wait_ready(&a, 1, 5000), 0);
    CHECK_EQ_INT(gw_wait_ready(&b, 1, 5000), 0);
    CHECK_EQ_INT(a.ready_capacity, 3);
    CHECK_EQ_INT(b.ready_capacity, 2);

    check_answers_on_own_link(&a, &b);
    check_partials_on_own_link(&a, &b);
    check_cancel_per_link(&a, &b);
    check_credit(&a, &b);
    check_bye(&a, &b);
    check_silence(&a, &b);

    int byes_a = a.byes, byes_b = b.byes;
    atomic_store(&wt.stop, 1);
    EXPECT_NOTHING(&a, 300);
    EXPECT_NOTHING(&b, 20);
    CHECK_EQ_INT(a.byes, byes_a + 1);
    CHECK_EQ_INT(b.byes, byes_b + 1);
    worker_stop(&wt);
    gw_close(&a);
    gw_close(&b);
}

/* --- configuration ---------------------------------------------------------------------------- */

static void test_config(void) {
    worker_config cfg;
    lion_status st;
    char *two[] = {"vision", "--gateway", "tcp://127.0.0.1:5551, ipc:///tmp/lion-b"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 3, two, &st), 0);
    worker_gateways gws;
    CHECK_EQ_INT(worker_gateways_parse(&gws, &cfg, &st), 0);
    CHECK_EQ_INT(gws.n, 2);
    CHECK(gws.n == 2 && !strcmp(gws.endpoint[0], "tcp://127.0.0.1:5551") &&
          !strcmp(gws.endpoint[1], "ipc:///tmp/lion-b"));
    CHECK(gws.server_key[0] == NULL && gws.server_key[1] == NULL);
    worker_gateways_free(&gws);

    /* one endpoint as before */
    char *one[] = {"vision", "--gateway", "tcp://127.0.0.1:5551"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 3, one, &st), 0);
    CHECK(!strcmp(cfg.gateway, "tcp://127.0.0.1:5551"));
    CHECK_EQ_INT(worker_gateways_parse(&gws, &cfg, &st), 0);
    CHECK_EQ_INT(gws.n, 1);
    worker_gateways_free(&gws);

    /* refused, naming the option (and the environment variable) */
    char *empty[] = {"vision", "--gateway", "tcp://a:1,,tcp://b:2"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 3, empty, &st), -1);
    CHECK_CONTAINS(st.msg, "--gateway: an empty endpoint in 'tcp://a:1,,tcp://b:2'");
    char *trailing[] = {"vision", "--gateway", "tcp://a:1,"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 3, trailing, &st), -1);
    CHECK_CONTAINS(st.msg, "an empty endpoint");
    char *twice[] = {"vision", "--gateway", "tcp://a:1,tcp://b:2, tcp://a:1"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 3, twice, &st), -1);
    CHECK_CONTAINS(st.msg, "--gateway: tcp://a:1 is given twice");
    char *not_ep[] = {"vision", "--gateway", "tcp://a:1,b:2"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 3, not_ep, &st), -1);
    CHECK_CONTAINS(st.msg, "--gateway: 'b:2' is not a ZeroMQ endpoint (tcp://HOST:PORT, ipc://PATH)");
    char many[1024] = "";
    for (int i = 0; i <= WORKER_MAX_GATEWAYS; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%stcp://h:%d", i ? "," : "", 5000 + i);
    char *too_many[] = {"vision", "--gateway", many};
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 3, too_many, &st), -1);
    CHECK_CONTAINS(st.msg, "--gateway: more than 16 endpoints");
    char *none[] = {"vision"};
    setenv("LION_GATEWAY", "tcp://127.0.0.1:1,tcp://127.0.0.1:2", 1);
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 1, none, &st), 0);
    CHECK(!strcmp(cfg.gateway, "tcp://127.0.0.1:1,tcp://127.0.0.1:2"));
    setenv("LION_GATEWAY", "tcp://127.0.0.1:1,tcp://127.0.0.1:1", 1);
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 1, none, &st), -1);
    CHECK_CONTAINS(st.msg, "LION_GATEWAY: tcp://127.0.0.1:1 is given twice");
    unsetenv("LION_GATEWAY");

    /* the gateways' keys: one for all, one each, or refused */
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 3, two, &st), 0);
    cfg.curve_server_key = "gw.pub";
    CHECK_EQ_INT(worker_gateways_parse(&gws, &cfg, &st), 0);
    CHECK(!strcmp(gws.server_key[0], "gw.pub") && !strcmp(gws.server_key[1], "gw.pub"));
    worker_gateways_free(&gws);
    cfg.curve_server_key = "a.pub, b.pub";
    CHECK_EQ_INT(worker_gateways_parse(&gws, &cfg, &st), 0);
    CHECK(!strcmp(gws.server_key[0], "a.pub") && !strcmp(gws.server_key[1], "b.pub"));
    worker_gateways_free(&gws);
    cfg.curve_server_key = "a.pub,b.pub,c.pub";
    CHECK_EQ_INT(worker_gateways_parse(&gws, &cfg, &st), -1);
    CHECK_CONTAINS(st.msg, "--curve-server-key: 3 key files for 2 gateways: give one for all of them, or one per "
                           "gateway in --gateway's order");
    worker_gateways_free(&gws);
}

/* The credit split: even over the gateways up, the first ones one more; a gone one's share to
 * the others; capped by what the others' jobs leave; at least 1. */
static void test_credit_split(void) {
    int up[3] = {1, 1, 1}, held[3] = {0, 0, 0};
    CHECK_EQ_INT(worker_gateways_credit(5, 2, up, held, 0), 3);
    CHECK_EQ_INT(worker_gateways_credit(5, 2, up, held, 1), 2);
    CHECK_EQ_INT(worker_gateways_credit(8, 1, up, held, 0), 8); /* one gateway: the whole, as before */
    CHECK_EQ_INT(worker_gateways_credit(9, 3, up, held, 2), 3);
    up[0] = 0; /* A gone: B has it all; A, back, would get its share */
    CHECK_EQ_INT(worker_gateways_credit(5, 2, up, held, 1), 5);
    CHECK_EQ_INT(worker_gateways_credit(5, 2, up, held, 0), 3);
    up[0] = 1;
    held[1] = 4; /* B still holds 4 of a time it had all: A is told only what is free */
    CHECK_EQ_INT(worker_gateways_credit(5, 2, up, held, 0), 1);
    held[1] = 5;
    CHECK_EQ_INT(worker_gateways_credit(5, 2, up, held, 0), 1); /* never 0: the refusal decides */
    held[1] = 0;
    CHECK_EQ_INT(worker_gateways_credit(1, 3, up, held, 0), 1); /* more gateways than capacity */
    CHECK_EQ_INT(worker_gateways_credit(1, 3, up, held, 2), 1);
}

/* worker_check_link over every endpoint; CURVE links to two gateways with keys of their own. */
static char dir[] = "/tmp/lion-worker-gateways-XXXXXX";

static void test_links(void) {
    CHECK(mkdtemp(dir) != NULL);
    char a_key[300], a_pub[300], b_key[300], b_pub[300], w_key[300], w_pub[300];
    snprintf(a_key, sizeof a_key, "%s/a.key", dir);
    snprintf(a_pub, sizeof a_pub, "%s/a.pub", dir);
    snprintf(b_key, sizeof b_key, "%s/b.key", dir);
    snprintf(b_pub, sizeof b_pub, "%s/b.pub", dir);
    snprintf(w_key, sizeof w_key, "%s/w.key", dir);
    snprintf(w_pub, sizeof w_pub, "%s/w.pub", dir);
    lion_status st;
    curve_keypair a_pair, b_pair, w_pair;
    CHECK_EQ_INT(curve_keypair_generate(a_key, a_pub, &a_pair, &st), 0);
    CHECK_EQ_INT(curve_keypair_generate(b_key, b_pub, &b_pair, &st), 0);
    CHECK_EQ_INT(curve_keypair_generate(w_key, w_pub, &w_pair, &st), 0);

    worker_config cfg;
    char what[512];
    char *local[] = {"vision", "--gateway", "tcp://127.0.0.1:1,ipc:///tmp/x"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 3, local, &st), 0);
    CHECK_EQ_INT(worker_check_link(&cfg, what, sizeof what, &st), 0);
    CHECK_CONTAINS(what, "plain (local endpoints)");
    /* the one gateway off this machine is named */
    char *mixed[] = {"vision", "--gateway", "tcp://127.0.0.1:1,tcp://10.1.2.3:5551"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 3, mixed, &st), 0);
    CHECK_EQ_INT(worker_check_link(&cfg, what, sizeof what, &st), -1);
    CHECK_CONTAINS(st.msg, "gateway tcp://10.1.2.3:5551 is on another machine");
    cfg.insecure = 1;
    CHECK_EQ_INT(worker_check_link(&cfg, what, sizeof what, &st), 0);
    CHECK_CONTAINS(what, "INSECURE");
    cfg.insecure = 0;
    /* one key for both: told once; one each: both, in order; a missing one named */
    cfg.curve_server_key = a_pub;
    cfg.curve_key = w_key;
    CHECK_EQ_INT(worker_check_link(&cfg, what, sizeof what, &st), 0);
    char want[200];
    snprintf(want, sizeof want, "CURVE (gateway key %s)", a_pair.public_key);
    CHECK_MSG(!strcmp(what, want), "'%s' != '%s'", what, want);
    char keys[1024];
    snprintf(keys, sizeof keys, "%s,%s", a_pub, b_pub);
    cfg.curve_server_key = keys;
    CHECK_EQ_INT(worker_check_link(&cfg, what, sizeof what, &st), 0);
    snprintf(want, sizeof want, "CURVE (gateway keys %s, %s)", a_pair.public_key, b_pair.public_key);
    CHECK_MSG(!strcmp(what, want), "'%s' != '%s'", what, want);
    snprintf(keys, sizeof keys, "%s,%s/none.pub", a_pub, dir);
    CHECK_EQ_INT(worker_check_link(&cfg, what, sizeof what, &st), -1);
    CHECK_CONTAINS(st.msg, "--curve-server-key: ");
    CHECK_CONTAINS(st.msg, "none.pub");
    snprintf(keys, sizeof keys, "%s,%s,%s", a_pub, b_pub, a_pub);
    CHECK_EQ_INT(worker_check_link(&cfg, what, sizeof what, &st), -1);
    CHECK_CONTAINS(st.msg, "3 key files for 2 gateways");

    /* live: A and B with key pairs of their own; the worker's READY and answers reach both */
    printf("--- two CURVE gateways with keys of their own\n");
    fake_gw a, b;
    gw_open(&a, "A", "tcp://127.0.0.1:*", &a_pair);
    gw_open(&b, "B", "tcp://127.0.0.1:*", &b_pair);
    char list[300];
    snprintf(list, sizeof list, "%s,%s", a.endpoint, b.endpoint);
    snprintf(keys, sizeof keys, "%s,%s", a_pub, b_pub);
    worker_stage stage = {.stage = LION__STAGE__VISION, .process = batch_process};
    worker_thread wt;
    worker_start(&wt, list, &stage, keys, w_key);
    CHECK_EQ_INT(gw_wait_ready(&a, 1, 5000), 0);
    CHECK_EQ_INT(gw_wait_ready(&b, 1, 5000), 0);
    send_job(&a, "ca", "double", 1.5f, 0);
    send_job(&b, "cb", "double", 2.5f, 0);
    EXPECT(&a, "ca", RESULT, 3.0f);
    EXPECT(&b, "cb", RESULT, 5.0f);
    worker_stop(&wt);
    gw_close(&a);
    gw_close(&b);

    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

int main(void) {
    alarm(120); /* a hung socket fails the test instead of stalling ctest */
    test_config();
    test_credit_split();
    test_links();
    worker_stage batch = {.stage = LION__STAGE__VISION, .process = batch_process};
    run_two_gateways("process", &batch);
    worker_stage continuous = {.stage = LION__STAGE__VISION, .admit = cont_admit, .step = cont_step};
    run_two_gateways("continuous", &continuous);
    return testing_finish();
}
