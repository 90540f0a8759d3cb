/* worker.c - the worker's socket thread: its links to the gateways (READY, credit,
 * heartbeats, JOBs, CANCELs), the queue of received jobs, the batches it hands the compute
 * thread (worker_compute.c) and the answers it sends back, and the stop sequence. */
#include "worker.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "curve.h"
#include "log.h"
#include "worker_check.h"
#include "worker_compute.h"
#include "worker_gateways.h"

typedef struct pending_job {
    envelope_msg msg;
    int64_t receive_us;
    int link; /* the gateway it came from */
} pending_job;

/* The link to one gateway: its socket, and what the worker knows of that gateway. */
typedef struct gateway_link {
    const char *endpoint;  /* into worker.gateways */
    void *sock;            /* DEALER to the gateway's ROUTER of the stage */
    int64_t last_heard_us; /* monotonic */
    int lost;              /* silent for the silence window, or said BYE: READY again when it is
                              heard from, and meanwhile its share of the credit goes to the
                              others and nothing sent to it waits */
} gateway_link;

typedef struct worker {
    const worker_config *cfg;
    const worker_stage *stage;
    envelope_limits limits;
    void *zctx;
    worker_gateways gateways; /* --gateway's list, with each gateway's key file */
    gateway_link links[WORKER_MAX_GATEWAYS];
    int n_links;
    void *pipe; /* PAIR to the compute thread */
    pthread_t compute;
    compute_args compute_args; /* read by the compute thread until it is joined */
    int compute_started;
    atomic_int compute_exited;
    pending_job *pending; /* FIFO of received jobs, capacity entries */
    int n_pending;
    batch *running;   /* batches in the compute thread (NULL: idle); a process stage has one
                         at most, a continuous stage any number */
    int running_jobs; /* their jobs not answered yet */
    int stopping;
    char pipe_endpoint[64];
} worker;

static volatile sig_atomic_t signal_stop;

static void on_stop_signal(int sig) { signal_stop = 1; }

static int stop_requested(const worker *w) {
    return w->cfg->stop ? atomic_load(w->cfg->stop) != 0 : signal_stop != 0;
}

/* --- sending ---------------------------------------------------------------------------- */

/* Sends on one gateway's link. A gateway found gone must not hold up the others: nothing
 * sent to it waits for room (what it loses, it re-dispatches or has already). */
static int link_send(worker *w, int link, Lion__Envelope *env, envelope_tensor *tensors, int n, int flags,
                     lion_status *st) {
    if (w->links[link].lost) flags |= ENVELOPE_DONTWAIT;
    return envelope_send(w->links[link].sock, NULL, env, tensors, n, flags, st);
}

static void send_or_log(worker *w, int link, Lion__Envelope *env, envelope_tensor *tensors, int n, int flags) {
    lion_status st;
    if (link_send(w, link, env, tensors, n, flags, &st) != 0)
        log_warn("%s %s not sent to %s: %s", lion_kind_name(env->kind), env->request_id ? env->request_id : "",
                 w->links[link].endpoint, st.msg);
}

static int in_flight(const worker *w) { return w->n_pending + w->running_jobs; }

/* The jobs of one gateway the worker holds, queued and running. */
static int link_held(const worker *w, int link) {
    int n = 0;
    for (int i = 0; i < w->n_pending; i++) n += w->pending[i].link == link;
    for (const batch *b = w->running; b; b = b->next)
        for (int i = 0; i < b->n; i++) n += !b->jobs[i].answered && b->jobs[i].link == link;
    return n;
}

/* The capacity announced to one gateway: its share (worker_gateways_credit). */
static int link_credit(const worker *w, int link) {
    int up[WORKER_MAX_GATEWAYS], held[WORKER_MAX_GATEWAYS];
    for (int i = 0; i < w->n_links; i++) {
        up[i] = !w->links[i].lost;
        held[i] = link_held(w, i);
    }
    return worker_gateways_credit(w->cfg->capacity, w->n_links, up, held, link);
}

/* READY, HEARTBEAT and BYE to one gateway: the worker's state, no request. Its credit is
 * that gateway's: its share of the capacity, and its jobs held. */
static void send_state(worker *w, int link, Lion__Kind kind) {
    lion_status st;
    Lion__Envelope *env = envelope_new(kind, w->stage->stage, NULL, &st);
    if (!env) {
        log_error("%s: %s", lion_kind_name(kind), st.msg);
        return;
    }
    Lion__Credit credit = LION__CREDIT__INIT;
    credit.has_capacity = credit.has_in_flight = credit.has_max_batch = 1;
    credit.capacity = (uint32_t)link_credit(w, link);
    credit.in_flight = (uint32_t)link_held(w, link);
    credit.max_batch = (uint32_t)w->cfg->max_batch;
    if (w->stage->cache_stats) {
        w->stage->cache_stats(w->stage->ctx, &credit.cache_hits, &credit.cache_misses);
        credit.has_cache_hits = credit.has_cache_misses = 1;
    }
    if (w->stage->decode_stats) {
        w->stage->decode_stats(w->stage->ctx, &credit.running_rows, &credit.kv_bytes, &credit.kv_budget_bytes);
        credit.has_running_rows = credit.has_kv_bytes = credit.has_kv_budget_bytes = 1;
    }
    credit.precision = (char *)w->stage->precision; /* borrowed; NULL: not sent */
    credit.isa = (char *)w->stage->isa;
    credit.model = (char *)w->stage->model;
    credit.family = (char *)w->stage->family;
    env->credit = &credit;
    env->replica_id = (char *)w->cfg->replica_id;
    env->has_sent_us = 1;
    env->sent_us = clock_unix_us();
    /* a heartbeat that cannot be queued is stale by the next one: never block on it */
    send_or_log(w, link, env, NULL, 0, kind == LION__KIND__HEARTBEAT ? ENVELOPE_DONTWAIT : 0);
    env->credit = NULL; /* borrowed, not malloc'd */
    env->replica_id = NULL;
    envelope_free(env);
}

static void send_state_all(worker *w, Lion__Kind kind) {
    for (int i = 0; i < w->n_links; i++) send_state(w, i, kind);
}

/* Answers job (which may be a malformed envelope) with an ERROR, on its gateway's link. */
static void send_error(worker *w, int link, const Lion__Envelope *job, int64_t receive_us, int code,
                       const char *msg) {
    lion_status st;
    Lion__Envelope *reply = envelope_error_reply(job, code, msg, &st);
    if (!reply) {
        log_error("error reply: %s", st.msg);
        return;
    }
    /* the stage field of a malformed job may be anything: answer for our own */
    reply->has_stage = 1;
    reply->stage = (Lion__Stage)w->stage->stage;
    if (envelope_add_hop(reply, w->cfg->service, w->cfg->replica_id, receive_us, clock_unix_us(), &st) != 0)
        log_warn("error reply: %s", st.msg);
    log_info("request %s: %s: %s", reply->request_id ? reply->request_id : "?", lion_code_name(code), msg);
    send_or_log(w, link, reply, NULL, 0, 0);
    envelope_free(reply);
}

#define CANCELLED_MSG "cancelled by the gateway"

/* Sends the RESULT of a job the stage finished, or an ERROR when it failed or was
 * cancelled while it ran (b->rc: its whole batch failed). */
static void send_outcome(worker *w, worker_job *job, const batch *b, int64_t finish_us) {
    if (worker_job_cancelled(job)) {
        send_error(w, job->link, job->env, job->receive_us, LION_ECANCELED, CANCELLED_MSG);
        return;
    }
    if (b->rc != 0 || job->status.code != LION_OK) {
        const lion_status *why = b->rc != 0 ? &b->st : &job->status;
        int code = why->code != LION_OK ? why->code : LION_EINTERNAL;
        send_error(w, job->link, job->env, job->receive_us, code,
                   why->msg[0] ? why->msg : "stage failed without a message");
        return;
    }
    lion_status st;
    if (envelope_add_hop(job->reply, w->cfg->service, w->cfg->replica_id, job->receive_us, finish_us, &st) != 0) {
        send_error(w, job->link, job->env, job->receive_us, st.code, st.msg);
        return;
    }
    envelope_tensor *outs = calloc((size_t)job->n_outputs + 1, sizeof *outs);
    if (!outs) {
        send_error(w, job->link, job->env, job->receive_us, LION_ENOMEM, "result: out of memory");
        return;
    }
    const envelope_msg *in = job->msg;
    for (int i = 0; i < job->n_outputs; i++) {
        tensor *t = &job->outputs[i].t;
        outs[i].name = job->outputs[i].name;
        outs[i].t = t;
        /* an output that is a whole input goes back out on the same frame */
        for (int k = 0; k < in->n_tensors && !t->owns_data; k++)
            if (t->data == in->tensors[k].data && tensor_nbytes(t) == zmq_msg_size(&in->frames[1 + k]))
                outs[i].frame = &in->frames[1 + k];
    }
    if (link_send(w, job->link, job->reply, outs, job->n_outputs, 0, &st) != 0) {
        lion_fail_prefix(&st, "stage output: ");
        send_error(w, job->link, job->env, job->receive_us, st.code, st.msg);
    }
    free(outs);
}

/* --- batches ---------------------------------------------------------------------------- */

static void batch_free(batch *b) {
    if (!b) return;
    for (int i = 0; i < b->n; i++) {
        worker_job *job = &b->jobs[i];
        for (int k = 0; k < job->n_outputs; k++) {
            free(job->outputs[k].name);
            tensor_free(&job->outputs[k].t);
        }
        free(job->outputs);
        envelope_free(job->reply);
        envelope_msg_close(&b->msgs[i]);
    }
    free(b->jobs);
    free(b->msgs);
    free(b);
}

static int deadline_passed(const Lion__Envelope *env, int64_t now_us) {
    return env->has_deadline_us && env->deadline_us > 0 && now_us >= env->deadline_us;
}

/* Moves up to max_batch pending jobs whose deadline has not passed into a new batch and
 * gives it to the compute thread. */
static void dispatch(worker *w) {
    static const Lion__Task empty_task = LION__TASK__INIT;
    int take = w->n_pending < w->cfg->max_batch ? w->n_pending : w->cfg->max_batch;
    batch *b = calloc(1, sizeof *b);
    if (b) {
        b->jobs = calloc((size_t)take, sizeof *b->jobs);
        b->msgs = calloc((size_t)take, sizeof *b->msgs);
    }
    if (!b || !b->jobs || !b->msgs) {
        batch_free(b);
        log_error("dispatch: out of memory, retrying");
        return;
    }
    int used = 0;
    int64_t now = clock_unix_us();
    for (; used < take; used++) {
        pending_job *p = &w->pending[used];
        const Lion__Envelope *env = p->msg.env;
        if (deadline_passed(env, now)) {
            char msg[128];
            snprintf(msg, sizeof msg, "deadline passed %.1f ms before the job could run",
                     (double)(now - env->deadline_us) / 1000.0);
            send_error(w, p->link, env, p->receive_us, LION_ETIMEOUT, msg);
            envelope_msg_close(&p->msg);
            continue;
        }
        lion_status st;
        Lion__Envelope *reply = envelope_reply(env, LION__KIND__RESULT, &st);
        if (!reply) {
            send_error(w, p->link, env, p->receive_us, st.code, st.msg);
            envelope_msg_close(&p->msg);
            continue;
        }
        b->msgs[b->n] = p->msg;
        worker_job *job = &b->jobs[b->n];
        job->msg = &b->msgs[b->n];
        job->env = job->msg->env;
        job->task = env->task ? env->task : &empty_task;
        job->n_inputs = job->msg->n_tensors;
        job->inputs = job->msg->tensors;
        job->reply = reply;
        job->receive_us = p->receive_us;
        job->batch = b;
        job->link = p->link;
        atomic_init(&job->cancelled, 0);
        lion_status_clear(&job->status);
        b->n++;
    }
    w->n_pending -= used;
    memmove(w->pending, w->pending + used, (size_t)w->n_pending * sizeof *w->pending);
    if (b->n == 0) {
        batch_free(b);
        return;
    }
    if (zmq_send(w->pipe, &b, sizeof b, 0) != sizeof b) {
        /* the pipe is in-process: this only fails when the context is going away */
        for (int i = 0; i < b->n; i++)
            send_error(w, b->jobs[i].link, b->jobs[i].env, b->jobs[i].receive_us, LION_EINTERNAL,
                       "compute thread unreachable");
        batch_free(b);
        return;
    }
    b->left = b->n;
    b->next = w->running;
    w->running = b;
    w->running_jobs += b->n;
}

/* Takes b out of the running list and frees it. */
static void running_remove(worker *w, batch *b) {
    for (batch **at = &w->running; *at; at = &(*at)->next)
        if (*at == b) {
            *at = b->next;
            break;
        }
    w->running_jobs -= b->left;
    batch_free(b);
}

static int is_running(const worker *w, const batch *b) {
    for (const batch *r = w->running; r; r = r->next)
        if (r == b) return 1;
    return 0;
}

/* One job of a continuous stage answered: its batch goes with its last job. */
static void job_answered(worker *w, worker_job *job) {
    batch *b = job->batch;
    job->answered = 1;
    b->left--;
    w->running_jobs--;
    if (b->left == 0) running_remove(w, b);
}

/* A PARTIAL from the compute thread goes to its job's gateway as it comes (then freed). */
static void send_partial(worker *w, int link, Lion__Envelope *env) {
    log_debug("request %s: PARTIAL of %zu bytes", env->request_id,
              env->result && env->result->n_sequences && env->result->sequences[0]->text
                  ? strlen(env->result->sequences[0]->text)
                  : (size_t)0);
    send_or_log(w, link, env, NULL, 0, 0);
    envelope_free(env);
}

/* What the compute thread sent, in its order: PARTIALs go out at once; a done batch has
 * its answers sent (after the PARTIALs of its jobs, which came first). */
static void collect(worker *w) {
    for (;;) {
        pipe_msg msg;
        if (zmq_recv(w->pipe, &msg, sizeof msg, ZMQ_DONTWAIT) != (int)sizeof msg) return;
        if (msg.kind == PIPE_PARTIAL) {
            send_partial(w, msg.link, msg.ptr);
            continue;
        }
        if (msg.kind == PIPE_JOB_DONE) {
            worker_job *job = msg.ptr;
            send_outcome(w, job, job->batch, job->finish_us);
            job_answered(w, job);
            continue;
        }
        batch *b = msg.ptr;
        if (msg.kind != PIPE_BATCH_DONE || !is_running(w, b)) continue;
        for (int i = 0; i < b->n; i++) send_outcome(w, &b->jobs[i], b, b->finish_us);
        running_remove(w, b);
    }
}

/* --- receiving -------------------------------------------------------------------------- */

/* A JOB from gateway link. The capacity is the worker's whoever sends: with several gateways
 * this refusal is what keeps their shares from overlapping (worker_gateways.h). */
static void on_job(worker *w, int link, envelope_msg *m, int64_t receive_us) {
    const Lion__Envelope *env = m->env;
    if ((int)env->stage != w->stage->stage) {
        char msg[160];
        snprintf(msg, sizeof msg, "job for stage %s sent to a %s worker", lion_stage_name(env->stage),
                 lion_stage_name(w->stage->stage));
        send_error(w, link, env, receive_us, LION_EINVAL, msg);
        return;
    }
    if (w->stopping) {
        send_error(w, link, env, receive_us, LION_EUNAVAILABLE, "worker shutting down");
        return;
    }
    if (in_flight(w) >= w->cfg->capacity) {
        char msg[128];
        snprintf(msg, sizeof msg, "worker over capacity (%d jobs held, capacity %d)", in_flight(w),
                 w->cfg->capacity);
        send_error(w, link, env, receive_us, LION_EUNAVAILABLE, msg);
        return;
    }
    pending_job *p = &w->pending[w->n_pending++];
    p->msg = *m;
    p->receive_us = receive_us;
    p->link = link;
    memset(m, 0, sizeof *m); /* moved into the queue */
}

/* Whether job is the one cancel names: same request id, stage and attempt (absent = 0).
 * The gateway is compared by the caller: two gateways' request ids are independent. */
static int cancel_names(const Lion__Envelope *cancel, const Lion__Envelope *job) {
    uint32_t want = cancel->has_attempt ? cancel->attempt : 0, have = job->has_attempt ? job->attempt : 0;
    return job->request_id && strcmp(job->request_id, cancel->request_id) == 0 && want == have &&
           (int)cancel->stage == (int)job->stage;
}

/* CANCEL from gateway link: its queued job is answered at once, its running one flagged
 * (answered when its batch ends); one the worker does not hold for that gateway (answered
 * already, never seen, another gateway's) is ignored. */
static void on_cancel(worker *w, int link, const Lion__Envelope *cancel) {
    int found = 0;
    for (int i = 0; i < w->n_pending;) {
        pending_job *p = &w->pending[i];
        if (p->link != link || !cancel_names(cancel, p->msg.env)) {
            i++;
            continue;
        }
        send_error(w, link, p->msg.env, p->receive_us, LION_ECANCELED, CANCELLED_MSG);
        envelope_msg_close(&p->msg);
        w->n_pending--;
        memmove(w->pending + i, w->pending + i + 1, (size_t)(w->n_pending - i) * sizeof *w->pending);
        found++;
    }
    for (batch *b = w->running; b; b = b->next)
        for (int i = 0; i < b->n; i++) {
            worker_job *job = &b->jobs[i];
            if (job->answered || job->link != link || !cancel_names(cancel, job->env)) continue;
            atomic_store(&job->cancelled, 1);
            log_info("request %s: cancelled while running", job->env->request_id);
            found++;
        }
    if (!found)
        log_debug("CANCEL of request %s attempt %u at %s: no such job here (answered already?)", cancel->request_id,
                  cancel->has_attempt ? cancel->attempt : 0, lion_stage_name(cancel->stage));
}

/* A message that did not decode: answer it when it names a job, else log and drop. */
static void on_malformed(worker *w, int link, const envelope_msg *m, const lion_status *why, int64_t receive_us) {
    const Lion__Envelope *env = m->env;
    int is_job = env && (!env->has_kind || env->kind == LION__KIND__JOB);
    if (is_job && env->request_id && env->request_id[0] && strlen(env->request_id) <= w->limits.max_request_id) {
        char msg[LION_STATUS_MSG_MAX + 32];
        snprintf(msg, sizeof msg, "malformed job: %s", why->msg);
        send_error(w, link, env, receive_us, why->code, msg);
        return;
    }
    log_warn("dropped a malformed message (%d frames): %s", m->n_frames, why->msg);
}

/* Handles every message waiting on one gateway's link. */
static void drain_socket(worker *w, int link) {
    gateway_link *l = &w->links[link];
    for (;;) {
        envelope_msg m;
        lion_status st;
        lion_status_clear(&st);
        int rc = envelope_recv(l->sock, &m, ENVELOPE_DONTWAIT, &w->limits, &st);
        if (m.n_frames == 0) {
            envelope_msg_close(&m);
            if (st.code != LION_EUNAVAILABLE) log_warn("receive: %s", st.msg);
            return;
        }
        int64_t receive_us = clock_unix_us();
        if (l->lost) {
            /* the gateway may have restarted and forgotten us (the other gateways learn
             * their smaller shares from the next heartbeat) */
            log_info("gateway %s heard again: announcing READY", l->endpoint);
            l->lost = 0;
            send_state(w, link, LION__KIND__READY);
        }
        l->last_heard_us = clock_mono_us();
        if (rc != 0) {
            on_malformed(w, link, &m, &st, receive_us);
        } else if (m.env->kind == LION__KIND__JOB) {
            on_job(w, link, &m, receive_us);
        } else if (m.env->kind == LION__KIND__CANCEL) {
            on_cancel(w, link, m.env);
        } else if (m.env->kind == LION__KIND__HEARTBEAT) {
            /* last_heard_us is all a heartbeat is for */
        } else if (m.env->kind == LION__KIND__BYE) {
            log_info("gateway %s said BYE: waiting for it to come back", l->endpoint);
            l->lost = 1;
        } else {
            log_warn("dropped a %s message: workers only take JOB, CANCEL, HEARTBEAT and BYE",
                     lion_kind_name(m.env->kind));
        }
        envelope_msg_close(&m);
    }
}

/* --- the loop --------------------------------------------------------------------------- */

/* One DEALER to gateway i, with CURVE and that gateway's public key when keys are given
 * (own: this worker's pair). worker_check_link has checked the rule first: without keys,
 * the gateway is on this machine or --insecure was given. */
static int link_open(worker *w, int i, const curve_keypair *own, lion_status *st) {
    const worker_config *cfg = w->cfg;
    gateway_link *l = &w->links[i];
    l->endpoint = w->gateways.endpoint[i];
    l->sock = zmq_socket(w->zctx, ZMQ_DEALER);
    if (!l->sock) return lion_fail(st, LION_EIO, "zmq_socket: %s", zmq_strerror(errno));
    int linger = cfg->linger_ms > 0 ? cfg->linger_ms : 2000;
    zmq_setsockopt(l->sock, ZMQ_LINGER, &linger, sizeof linger);
    /* a gateway that stops reading must not freeze the loop (and its heartbeats): an
     * answer that cannot be queued for this long is logged and dropped; the request's
     * deadline covers it on the gateway's side */
    int send_timeout = 10000;
    zmq_setsockopt(l->sock, ZMQ_SNDTIMEO, &send_timeout, sizeof send_timeout);
    /* a frame over the whole payload limit is refused by ZeroMQ before it is buffered */
    int64_t max_msg = (int64_t)w->limits.max_payload_bytes;
    zmq_setsockopt(l->sock, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg);
    if (own) {
        char server[CURVE_KEY_TEXT];
        if (curve_public_load(w->gateways.server_key[i], server, st) != 0) return -1;
        if (curve_client_setup(l->sock, server, own, st) != 0) return -1;
    } else if (!curve_endpoint_is_local(l->endpoint)) {
        log_warn("INSECURE: connecting to %s without CURVE (--insecure)", l->endpoint);
    }
    if (zmq_connect(l->sock, l->endpoint) != 0)
        return lion_fail(st, LION_EINVAL, "gateway endpoint '%s': %s", l->endpoint, zmq_strerror(errno));
    return 0;
}

static int worker_open(worker *w, lion_status *st) {
    const worker_config *cfg = w->cfg;
    /* the same rule --check-config applies: keys, and no CURVE only where it is safe */
    char what[256];
    if (worker_check_link(cfg, what, sizeof what, st) != 0) return -1;
    if (worker_gateways_parse(&w->gateways, cfg, st) != 0) return -1;
    w->zctx = zmq_ctx_new();
    if (!w->zctx) return lion_fail(st, LION_EIO, "zmq_ctx_new: %s", zmq_strerror(errno));
    w->pipe = zmq_socket(w->zctx, ZMQ_PAIR);
    if (!w->pipe) return lion_fail(st, LION_EIO, "zmq_socket: %s", zmq_strerror(errno));
    int zero = 0;
    zmq_setsockopt(w->pipe, ZMQ_LINGER, &zero, sizeof zero);
    curve_keypair own;
    const int curve = cfg->curve_key != NULL;
    if (curve && curve_keypair_load(cfg->curve_key, &own, st) != 0) return -1;
    int rc = 0;
    for (int i = 0; i < w->gateways.n && rc == 0; i++) {
        w->n_links++; /* counted before it opens, so that worker_close closes what it opened */
        rc = link_open(w, i, curve ? &own : NULL, st);
    }
    memset(&own, 0, sizeof own);
    if (rc != 0) return -1;
    snprintf(w->pipe_endpoint, sizeof w->pipe_endpoint, "inproc://worker-compute-%p", (void *)w);
    if (zmq_bind(w->pipe, w->pipe_endpoint) != 0)
        return lion_fail(st, LION_EIO, "compute pipe: %s", zmq_strerror(errno));
    return 0;
}

static void worker_close(worker *w) {
    for (int i = 0; i < w->n_links; i++)
        if (w->links[i].sock) zmq_close(w->links[i].sock);
    if (w->pipe) zmq_close(w->pipe);
    if (w->zctx) zmq_ctx_term(w->zctx);
    for (int i = 0; i < w->n_pending; i++) envelope_msg_close(&w->pending[i].msg);
    free(w->pending);
    worker_gateways_free(&w->gateways);
}

static int config_check(const worker_config *cfg, const worker_stage *stage, lion_status *st) {
    if (!cfg->gateway) return lion_fail(st, LION_EINVAL, "worker: no gateway endpoint");
    if (!cfg->service || !cfg->replica_id[0]) return lion_fail(st, LION_EINVAL, "worker: no service name or replica id");
    if (cfg->capacity < 1 || cfg->max_batch < 1 || cfg->heartbeat_ms < 1)
        return lion_fail(st, LION_EINVAL, "worker: capacity %d, max batch %d, heartbeat %d ms must all be >= 1",
                         cfg->capacity, cfg->max_batch, cfg->heartbeat_ms);
    if (lion_stage_name(stage->stage)[0] == '?' || (!stage->process && (!stage->admit || !stage->step)))
        return lion_fail(st, LION_EINVAL, "worker: stage %d has no process (or admit and step) function or is unknown",
                         stage->stage);
    return 0;
}

static envelope_limits limits_or_defaults(envelope_limits l) {
    envelope_limits defaults = envelope_limits_default();
    if (!l.max_envelope_bytes) l.max_envelope_bytes = defaults.max_envelope_bytes;
    if (!l.max_decoded_bytes) l.max_decoded_bytes = defaults.max_decoded_bytes;
    if (l.max_tensors <= 0) l.max_tensors = defaults.max_tensors;
    if (!l.max_payload_bytes) l.max_payload_bytes = defaults.max_payload_bytes;
    if (!l.max_request_id) l.max_request_id = defaults.max_request_id;
    return l;
}

/* The handlers SIGTERM/SIGINT had before worker_run, given back when it returns. */
typedef struct stop_signals {
    struct sigaction term, intr;
} stop_signals;

static void stop_signals_install(stop_signals *saved) {
    signal_stop = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal; /* no SA_RESTART: zmq_poll returns at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, &saved->term);
    sigaction(SIGINT, &sa, &saved->intr);
}

static void stop_signals_restore(const stop_signals *saved) {
    sigaction(SIGTERM, &saved->term, NULL);
    sigaction(SIGINT, &saved->intr, NULL);
}

static int compute_start(worker *w, lion_status *st) {
    atomic_init(&w->compute_exited, 0);
    w->compute_args = (compute_args){.zctx = w->zctx, .endpoint = w->pipe_endpoint, .stage = w->stage,
                                     .threads = w->cfg->threads, .exited = &w->compute_exited};
    /* the compute thread blocks the stop signals, so that they wake the socket thread's poll */
    sigset_t block, saved;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &saved);
    if (pthread_create(&w->compute, NULL, worker_compute_main, &w->compute_args) == 0) w->compute_started = 1;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    return w->compute_started ? 0 : lion_fail(st, LION_EIO, "worker: cannot start the compute thread");
}

/* Whatever the compute thread still sends once the loop is over (only when the loop ended
 * with a batch running: a poll failure) is freed unsent, so that it never blocks on a full
 * pipe. */
static void discard_pipe(worker *w) {
    pipe_msg msg;
    while (zmq_recv(w->pipe, &msg, sizeof msg, ZMQ_DONTWAIT) == (int)sizeof msg) {
        if (msg.kind == PIPE_PARTIAL) {
            envelope_free(msg.ptr);
        } else if (msg.kind == PIPE_JOB_DONE) {
            job_answered(w, msg.ptr);
        } else if (msg.kind == PIPE_BATCH_DONE && is_running(w, msg.ptr)) {
            running_remove(w, msg.ptr);
        }
    }
}

/* A NULL batch tells the compute thread to end, once the batch it may be running is done. */
static void compute_stop(worker *w) {
    if (!w->compute_started) return;
    batch *none = NULL;
    zmq_send(w->pipe, &none, sizeof none, 0);
    while (!atomic_load(&w->compute_exited)) {
        zmq_pollitem_t item = {.socket = w->pipe, .events = ZMQ_POLLIN};
        zmq_poll(&item, 1, 20);
        discard_pipe(w);
    }
    pthread_join(w->compute, NULL);
    discard_pipe(w);
    w->compute_started = 0;
}

/* BYE to every gateway, and every queued job back to its gateway as unavailable (it
 * re-dispatches them); the running batch still finishes and is answered. */
static void begin_stopping(worker *w) {
    log_info("stopping: %d queued jobs handed back, %d running", w->n_pending, w->running_jobs);
    w->stopping = 1;
    send_state_all(w, LION__KIND__BYE);
    for (int i = 0; i < w->n_pending; i++) {
        pending_job *p = &w->pending[i];
        send_error(w, p->link, p->msg.env, p->receive_us, LION_EUNAVAILABLE, "worker shutting down");
        envelope_msg_close(&w->pending[i].msg);
    }
    w->n_pending = 0;
}

/* Waits for the gateways' sockets or the compute thread until the next heartbeat is due,
 * and handles what came. Returns -1 when polling itself failed (the loop cannot go on). */
static int wait_and_handle(worker *w, int64_t next_beat_us) {
    long wait_ms = (long)((next_beat_us - clock_mono_us()) / 1000);
    if (wait_ms < 0) wait_ms = 0;
    if (wait_ms > 100) wait_ms = 100; /* the stop flag is polled, too */
    zmq_pollitem_t items[WORKER_MAX_GATEWAYS + 1];
    items[0] = (zmq_pollitem_t){.socket = w->pipe, .events = ZMQ_POLLIN};
    for (int i = 0; i < w->n_links; i++)
        items[1 + i] = (zmq_pollitem_t){.socket = w->links[i].sock, .events = ZMQ_POLLIN};
    if (zmq_poll(items, 1 + w->n_links, wait_ms) < 0 && errno != EINTR) {
        log_error("zmq_poll: %s", zmq_strerror(errno));
        return -1;
    }
    if (items[0].revents & ZMQ_POLLIN) collect(w);
    for (int i = 0; i < w->n_links; i++)
        if (items[1 + i].revents & ZMQ_POLLIN) drain_socket(w, i);
    return 0;
}

/* Heartbeats on schedule, and notices a gateway that has gone silent (drain_socket
 * announces READY again when it is heard from). Silence is looked at first, so that the
 * same round of heartbeats tells the other gateways their larger shares. */
static void beat_if_due(worker *w, int64_t *next_beat_us, int silence_ms) {
    int64_t now = clock_mono_us();
    if (now < *next_beat_us) return;
    for (int i = 0; i < w->n_links; i++) {
        gateway_link *l = &w->links[i];
        if (l->lost || now - l->last_heard_us <= (int64_t)silence_ms * 1000) continue;
        log_warn("nothing heard from the gateway %s for %lld ms", l->endpoint,
                 (long long)((now - l->last_heard_us) / 1000));
        l->lost = 1;
    }
    send_state_all(w, LION__KIND__HEARTBEAT);
    *next_beat_us = now + (int64_t)w->cfg->heartbeat_ms * 1000;
}

/* The loop, from READY until stopped and the running batch is answered. */
static void serve(worker *w) {
    const worker_config *cfg = w->cfg;
    log_info("%s %s: serving stage %s from %s (capacity %d, max batch %d)", cfg->service, cfg->replica_id,
             lion_stage_name(w->stage->stage), cfg->gateway, cfg->capacity, cfg->max_batch);
    if (w->n_links > 1)
        log_info("%d gateways share the capacity: each is announced its share, the others' when one is gone",
                 w->n_links);
    if (w->n_links > cfg->capacity)
        log_warn("capacity %d for %d gateways: each is announced 1, and jobs over the capacity are refused",
                 cfg->capacity, w->n_links);
    int silence_ms = cfg->gateway_silence_ms > 0 ? cfg->gateway_silence_ms : 3 * cfg->heartbeat_ms;
    for (int i = 0; i < w->n_links; i++) w->links[i].last_heard_us = clock_mono_us();
    send_state_all(w, LION__KIND__READY);
    int64_t next_beat_us = clock_mono_us() + (int64_t)cfg->heartbeat_ms * 1000;
    for (;;) {
        if (stop_requested(w) && !w->stopping) begin_stopping(w);
        if (w->stopping && !w->running) break;
        /* a process stage takes the next batch when it is idle, a continuous one at once */
        while (w->n_pending > 0 && (!w->running || !w->stage->process)) {
            int before = w->n_pending;
            dispatch(w);
            if (w->n_pending == before) break; /* out of memory: tried again next turn */
        }
        if (wait_and_handle(w, next_beat_us) != 0) break;
        beat_if_due(w, &next_beat_us, silence_ms);
    }
    /* jobs that were already on their way when BYE went out */
    for (int i = 0; i < w->n_links; i++) drain_socket(w, i);
    log_info("stopped");
}

int worker_run(const worker_config *cfg, const worker_stage *stage, lion_status *st) {
    if (config_check(cfg, stage, st) != 0) return -1;
    worker w = {.cfg = cfg, .stage = stage, .limits = limits_or_defaults(cfg->limits)};
    w.pending = calloc((size_t)cfg->capacity, sizeof *w.pending);
    if (!w.pending) return lion_fail(st, LION_ENOMEM, "worker: out of memory");
    stop_signals saved;
    if (!cfg->stop) stop_signals_install(&saved);
    int rc = worker_open(&w, st);
    if (rc == 0) rc = compute_start(&w, st);
    if (rc == 0) serve(&w);
    compute_stop(&w);
    worker_close(&w);
    if (!cfg->stop) stop_signals_restore(&saved);
    return rc;
}
