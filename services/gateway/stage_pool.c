/* stage_pool.c - one stage's ROUTER endpoint: the workers connected to it, their credit,
 * the jobs waiting for credit, and the messages in and out (docs/wire-protocol.md). */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "gateway_impl.h"
#include "log.h"

static int peer_equal(const envelope_peer *a, const envelope_peer *b) {
    return a->len == b->len && memcmp(a->id, b->id, a->len) == 0;
}

static worker_slot *worker_find(stage_pool *p, const envelope_peer *peer) {
    for (int i = 0; i < p->n_workers; i++)
        if (peer_equal(&p->workers[i].peer, peer)) return &p->workers[i];
    return NULL;
}

static void on_poll(uv_poll_t *h, int status, int events) {
    stage_pool_drain((stage_pool *)h->data);
}

int stage_pool_open(stage_pool *p, gateway *gw, int stage, const char *endpoint, const stage_pool_client *client,
                    lion_status *st) {
    memset(p, 0, sizeof *p);
    p->gw = gw;
    p->stage = stage;
    p->client = client;
    p->router = zmq_socket(gw->zctx, ZMQ_ROUTER);
    if (!p->router) return lion_fail(st, LION_EIO, "%s: zmq_socket: %s", lion_stage_name(stage), zmq_strerror(errno));
    /* a send to a worker that is gone fails (EHOSTUNREACH) instead of vanishing silently,
     * so its job goes to another worker at once */
    int one = 1, zero = 0;
    zmq_setsockopt(p->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(p->router, ZMQ_LINGER, &zero, sizeof zero);
    if (zap_secure(gw, p->router, "workers", st) != 0) return -1;
    if (zmq_bind(p->router, endpoint) != 0)
        return lion_fail(st, LION_EIO, "%s endpoint %s: cannot bind: %s", lion_stage_name(stage), endpoint,
                         zmq_strerror(errno));
    int fd;
    size_t len = sizeof fd;
    zmq_getsockopt(p->router, ZMQ_FD, &fd, &len);
    uv_poll_init(gw->loop, &p->poll, fd);
    p->poll.data = p;
    uv_poll_start(&p->poll, UV_READABLE, on_poll);
    p->polling = 1;
    log_info("%s workers connect to %s", lion_stage_name(stage), endpoint);
    return 0;
}

void stage_pool_close(stage_pool *p) {
    if (p->polling) uv_close((uv_handle_t *)&p->poll, NULL);
    p->polling = 0;
    if (p->router) zmq_close(p->router);
    p->router = NULL;
    free(p->workers);
    p->workers = NULL;
}

int stage_pool_live_workers(const stage_pool *p) { return p->n_workers; }

unsigned stage_pool_capacity(const stage_pool *p) {
    unsigned c = 0;
    for (int i = 0; i < p->n_workers; i++) c += p->workers[i].capacity;
    return c;
}

void stage_pool_cache_counts(const stage_pool *p, uint64_t *hits, uint64_t *misses) {
    *hits = p->gone_cache_hits;
    *misses = p->gone_cache_misses;
    for (int i = 0; i < p->n_workers; i++) {
        *hits += p->workers[i].cache_hits;
        *misses += p->workers[i].cache_misses;
    }
}

int stage_pool_queued(const stage_pool *p) { return p->queue.len; }

unsigned stage_pool_outstanding(const stage_pool *p) {
    unsigned c = 0;
    for (int i = 0; i < p->n_workers; i++) c += p->workers[i].outstanding;
    return c;
}

/* The live worker with the lowest load (outstanding / capacity) that has credit left;
 * ties go round robin so that idle replicas share the work. */
static worker_slot *least_loaded(stage_pool *p) {
    worker_slot *best = NULL;
    for (int k = 0; k < p->n_workers; k++) {
        worker_slot *w = &p->workers[(p->rr + k) % p->n_workers];
        if (w->outstanding >= w->capacity || w->stuck) continue;
        if (!best || (uint64_t)w->outstanding * best->capacity < (uint64_t)best->outstanding * w->capacity) best = w;
    }
    return best;
}

/* splitmix64's finaliser: every input bit moves every output bit. */
static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* A job with an affinity (its image's hash) goes where rendezvous hashing puts it among the
 * replicas with credit: the same replica for the same image, from any gateway, and only 1/N
 * of the images move when a replica comes or goes, so N replicas' feature caches keep the
 * hit rate of one. A replica AFFINITY_SLACK jobs busier than the least loaded one gives the
 * job up to that one: a hot image must not queue behind itself while others idle. */
#define AFFINITY_SLACK 2u

static worker_slot *worker_pick(stage_pool *p, uint64_t affinity) {
    worker_slot *least = least_loaded(p), *chosen = least;
    if (least && affinity) {
        worker_slot *best = NULL;
        uint64_t top = 0;
        for (int k = 0; k < p->n_workers; k++) {
            worker_slot *w = &p->workers[k];
            if (w->outstanding >= w->capacity || w->stuck) continue;
            const uint64_t weight = mix64(affinity ^ w->id_hash);
            if (!best || weight > top) {
                best = w;
                top = weight;
            }
        }
        if (best->outstanding < least->outstanding + AFFINITY_SLACK) {
            chosen = best;
            p->gw->metrics.affinity_routed[p->stage]++;
        }
    }
    if (chosen == least && least) p->rr = (int)(least - p->workers + 1) % p->n_workers;
    return chosen;
}

/* Sends [peer][envelope][tensors] without blocking; publishes the frames on the tap first. */
static int send_to(stage_pool *p, worker_slot *w, Lion__Envelope *env, envelope_tensor *tensors, int n,
                   const char *request_id, lion_status *st) {
    zmq_msg_t frames[LION_MAX_JOB_TENSORS + 1];
    if (envelope_encode(env, tensors, n, frames, st) != 0) return -1;
    if (request_id) tap_publish(&p->gw->tap, p->stage, 1, request_id, frames, n + 1);
    int rc = 0;
    if (zmq_send(p->router, w->peer.id, w->peer.len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) rc = -1;
    for (int i = 0; rc == 0 && i <= n; i++)
        if (zmq_msg_send(&frames[i], p->router, ZMQ_DONTWAIT | (i < n ? ZMQ_SNDMORE : 0)) < 0) rc = -1;
    int err = errno;
    for (int i = 0; i <= n; i++) zmq_msg_close(&frames[i]);
    if (rc) return lion_fail(st, LION_EUNAVAILABLE, "%s worker %s: send failed: %s", lion_stage_name(p->stage),
                             w->replica_id, zmq_strerror(err));
    return 0;
}

/* --- job lists ------------------------------------------------------------------------- */

static void list_push(job_list *l, stage_job *j) {
    j->prev = l->tail;
    j->next = NULL;
    if (l->tail) l->tail->next = j;
    else l->head = j;
    l->tail = j;
    l->len++;
}

static void list_remove(job_list *l, stage_job *j) {
    if (j->prev) j->prev->next = j->next;
    else l->head = j->next;
    if (j->next) j->next->prev = j->prev;
    else l->tail = j->prev;
    j->prev = j->next = NULL;
    l->len--;
}

/* Takes the job off whichever list holds it. */
static void job_unlink(stage_pool *p, stage_job *j) {
    if (j->state == JOB_QUEUED) list_remove(&p->queue, j);
    else if (j->state == JOB_SENT) list_remove(&p->sent, j);
    j->state = JOB_IDLE;
}

/* --- sending ---------------------------------------------------------------------------- */

static void worker_remove(stage_pool *p, worker_slot *w, const char *why);

/* Sends the job to w. A send that fails drops the worker (its jobs go again, this one too). */
static void send_job(stage_pool *p, worker_slot *w, stage_job *j) {
    Lion__Envelope *env = NULL;
    envelope_tensor tensors[LION_MAX_JOB_TENSORS];
    int n = 0;
    lion_status st;
    if (p->client->build(j->owner, p->stage, &env, tensors, &n, &st) != 0) {
        envelope_free(env);
        p->client->failed(j->owner, p->stage, &st);
        return;
    }
    int rc = send_to(p, w, env, tensors, n, j->request_id, &st);
    envelope_free(env);
    if (rc != 0) {
        log_warn("%s", st.msg);
        worker_remove(p, w, "send failed");
        p->client->lost(j->owner, p->stage, st.msg);
        return;
    }
    j->state = JOB_SENT;
    j->worker = w->peer;
    j->sent_us = clock_mono_us();
    list_push(&p->sent, j);
    w->outstanding++;
    p->gw->metrics.jobs[p->stage]++;
}

/* Sends queued jobs while some worker has credit. */
static void pump(stage_pool *p) {
    while (p->queue.head) {
        stage_job *j = p->queue.head;
        worker_slot *w = worker_pick(p, j->affinity);
        if (!w) return;
        job_unlink(p, j);
        send_job(p, w, j);
    }
}

void stage_pool_submit(stage_pool *p, stage_job *job) {
    job_unlink(p, job);
    job->state = JOB_QUEUED;
    list_push(&p->queue, job);
    pump(p);
}

/* Tells the worker that holds j to drop it. Best effort: a worker that is gone answers
 * nothing, and its slot's credit goes with it. */
static void send_cancel(stage_pool *p, const stage_job *j) {
    worker_slot *w = worker_find(p, &j->worker);
    lion_status st;
    Lion__Envelope *env = w ? envelope_new(LION__KIND__CANCEL, p->stage, j->request_id, &st) : NULL;
    if (!env) return;
    env->has_attempt = 1;
    env->attempt = j->attempt;
    if (send_to(p, w, env, NULL, 0, j->request_id, &st) != 0) log_debug("%s", st.msg);
    envelope_free(env);
    p->gw->metrics.cancels_sent[p->stage]++;
}

void stage_pool_cancel(stage_pool *p, stage_job *job) {
    if (job->state == JOB_SENT) send_cancel(p, job);
    job_unlink(p, job);
}

/* --- workers ---------------------------------------------------------------------------- */

/* Removes w; the jobs it held go again (through the client's lost callback). */
static void worker_remove(stage_pool *p, worker_slot *w, const char *why) {
    envelope_peer peer = w->peer;
    log_warn("%s worker %s removed: %s (%u jobs outstanding)", lion_stage_name(p->stage), w->replica_id, why,
             w->outstanding);
    p->gone_cache_hits += w->cache_hits;
    p->gone_cache_misses += w->cache_misses;
    *w = p->workers[--p->n_workers];
    if (p->rr >= p->n_workers) p->rr = 0;
    char reason[160];
    snprintf(reason, sizeof reason, "%s worker lost: %s", lion_stage_name(p->stage), why);
    /* The lost jobs leave the sent list first, onto a list of their own (idle, so nothing
     * else unlinks them): re-dispatching one may send, fail and remove other workers, which
     * changes the sent list but not this one. Only lost() resubmits a lost job. */
    job_list lost = {0};
    for (stage_job *j = p->sent.head, *next; j; j = next) {
        next = j->next;
        if (!peer_equal(&j->worker, &peer)) continue;
        list_remove(&p->sent, j);
        j->state = JOB_IDLE;
        list_push(&lost, j);
    }
    while (lost.head) {
        stage_job *j = lost.head;
        list_remove(&lost, j);
        p->client->lost(j->owner, p->stage, reason);
    }
}

/* A label value and a log word from a worker: kept to a safe alphabet, as replica ids are. */
static void copy_label(char *dst, size_t len, const char *src) {
    snprintf(dst, len, "%s", src);
    for (char *c = dst; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr("._:-+@", *c)) *c = '_';
}

/* What the worker computes with, when its READY or HEARTBEAT credit says (lion_worker_info). */
static void worker_info(worker_slot *w, const Lion__Credit *c) {
    if (c->precision) copy_label(w->precision, sizeof w->precision, c->precision);
    if (c->isa) copy_label(w->isa, sizeof w->isa, c->isa);
}

static worker_slot *worker_register(stage_pool *p, const envelope_msg *m) {
    worker_slot *w = worker_find(p, &m->peer);
    if (!w) {
        if (p->n_workers == p->cap_workers) {
            int cap = p->cap_workers ? p->cap_workers * 2 : 8;
            worker_slot *ws = realloc(p->workers, (size_t)cap * sizeof *ws);
            if (!ws) return NULL;
            p->workers = ws;
            p->cap_workers = cap;
        }
        w = &p->workers[p->n_workers++];
        memset(w, 0, sizeof *w);
        w->peer = m->peer;
        snprintf(w->replica_id, sizeof w->replica_id, "%s", m->env->replica_id ? m->env->replica_id : "?");
        /* it becomes a Prometheus label value and a log word: keep it to a safe alphabet */
        for (char *c = w->replica_id; *c; c++)
            if (!isalnum((unsigned char)*c) && !strchr("._:-@", *c)) *c = '_';
        /* FNV-1a: a replica keeps its place in rendezvous hashing across reconnects */
        w->id_hash = 0xcbf29ce484222325ull;
        for (const char *c = w->replica_id; *c; c++) w->id_hash = (w->id_hash ^ (unsigned char)*c) * 0x100000001b3ull;
        log_info("%s worker %s joined", lion_stage_name(p->stage), w->replica_id);
    }
    const Lion__Credit *c = m->env->credit;
    w->capacity = c && c->has_capacity && c->capacity > 0 ? c->capacity : 1;
    return w;
}

/* The sent job an answer is for: same request and attempt; NULL for an answer nobody waits
 * for any more (re-dispatched, expired, cancelled). */
static stage_job *sent_job_find(stage_pool *p, const Lion__Envelope *env) {
    if (!env->request_id || env->stage != (Lion__Stage)p->stage) return NULL;
    for (stage_job *j = p->sent.head; j; j = j->next)
        if (j->attempt == env->attempt && !strcmp(j->request_id, env->request_id)) return j;
    return NULL;
}

static void handle_answer(stage_pool *p, worker_slot *w, envelope_msg *m, int decode_failed, lion_status *st) {
    Lion__Envelope *env = m->env;
    if (w && w->outstanding > 0) w->outstanding--;
    if (w && w->stuck) {
        log_info("%s worker %s answers again: it gets jobs again", lion_stage_name(p->stage), w->replica_id);
        w->stuck = 0;
    }
    if (env->request_id) tap_publish(&p->gw->tap, p->stage, 0, env->request_id, m->frames, m->n_frames);
    stage_job *j = sent_job_find(p, env);
    if (!j) {
        p->gw->metrics.late_answers[p->stage]++;
        log_debug("%s: dropped a late answer for %s attempt %u", lion_stage_name(p->stage),
                  env->request_id ? env->request_id : "?", env->attempt);
        envelope_msg_close(m);
        return;
    }
    /* the stage's latency, for the default job timeout: an average over about 20 answers */
    const double took_s = (double)(clock_mono_us() - j->sent_us) / 1e6;
    p->latency_ewma_s = p->latency_ewma_s > 0 ? 0.95 * p->latency_ewma_s + 0.05 * took_s : took_s;
    job_unlink(p, j);
    if (decode_failed) {
        lion_status failed;
        lion_fail(&failed, LION_EIO, "%s worker %s sent a malformed answer: %s", lion_stage_name(p->stage),
                  w ? w->replica_id : "?", st->msg);
        envelope_msg_close(m);
        p->client->failed(j->owner, p->stage, &failed);
        return;
    }
    p->client->answered(j->owner, p->stage, m);
}

/* A PARTIAL goes to its job's owner when the attempt is still the one waited for. */
static void handle_partial(stage_pool *p, envelope_msg *m, int decode_failed) {
    const Lion__Envelope *env = m->env;
    if (env->request_id) tap_publish(&p->gw->tap, p->stage, 0, env->request_id, m->frames, m->n_frames);
    stage_job *j = decode_failed ? NULL : sent_job_find(p, env);
    if (j) p->client->partial(j->owner, p->stage, m);
    envelope_msg_close(m);
}

static void handle(stage_pool *p, envelope_msg *m, int rc, lion_status *st) {
    Lion__Envelope *env = m->env;
    if (!env) {
        log_warn("%s: dropped a malformed message: %s", lion_stage_name(p->stage), st->msg);
        envelope_msg_close(m);
        return;
    }
    worker_slot *w = worker_find(p, &m->peer);
    if (w) w->last_seen_us = clock_mono_us();
    if (w && env->credit && env->credit->has_cache_hits) {
        w->cache_hits = env->credit->cache_hits;
        w->cache_misses = env->credit->cache_misses;
    }
    if (w && env->credit && env->credit->has_running_rows) {
        w->decodes = 1;
        w->running_rows = env->credit->running_rows;
        w->kv_bytes = env->credit->kv_bytes;
        w->kv_budget_bytes = env->credit->kv_budget_bytes;
    }
    switch (env->kind) {
    case LION__KIND__READY:
    case LION__KIND__HEARTBEAT:
        if (rc == 0 && (env->kind == LION__KIND__READY || (!w && env->credit))) {
            if (env->has_stage && env->stage != (Lion__Stage)p->stage) {
                log_warn("%s endpoint: a %s worker announced itself here; ignored", lion_stage_name(p->stage),
                         lion_stage_name(env->stage));
                break;
            }
            w = worker_register(p, m);
            if (w) w->last_seen_us = clock_mono_us();
        } else if (w && env->credit && env->credit->has_capacity && env->credit->capacity > 0) {
            w->capacity = env->credit->capacity;
        }
        if (w && rc == 0 && env->credit) worker_info(w, env->credit);
        envelope_msg_close(m);
        pump(p);
        return;
    case LION__KIND__BYE:
        envelope_msg_close(m);
        if (w) worker_remove(p, w, "said BYE");
        return;
    case LION__KIND__RESULT:
    case LION__KIND__ERROR:
        handle_answer(p, w, m, rc != 0, st);
        pump(p);
        return;
    case LION__KIND__PARTIAL:
        handle_partial(p, m, rc != 0);
        return;
    default:
        log_warn("%s: unexpected %s from a worker; ignored", lion_stage_name(p->stage), lion_kind_name(env->kind));
        break;
    }
    envelope_msg_close(m);
}

void stage_pool_drain(stage_pool *p) {
    if (!p->router) return;
    for (;;) {
        int events = 0;
        size_t len = sizeof events;
        if (zmq_getsockopt(p->router, ZMQ_EVENTS, &events, &len) != 0 || !(events & ZMQ_POLLIN)) break;
        envelope_msg m;
        memset(&m, 0, sizeof m);
        lion_status st;
        int rc = envelope_recv(p->router, &m, ENVELOPE_ROUTED | ENVELOPE_DONTWAIT, NULL, &st);
        if (m.n_frames == 0) {
            envelope_msg_close(&m);
            break;
        }
        handle(p, &m, rc, &st);
    }
}

#define JOB_TIMEOUT_FACTOR 20
#define JOB_TIMEOUT_MIN_MS 10000

int64_t stage_pool_job_timeout_us(const stage_pool *p) {
    if (p->gw->cfg.job_timeout_ms > 0) return (int64_t)p->gw->cfg.job_timeout_ms * 1000;
    const int64_t observed = (int64_t)(JOB_TIMEOUT_FACTOR * p->latency_ewma_s * 1e6);
    return observed > (int64_t)JOB_TIMEOUT_MIN_MS * 1000 ? observed : (int64_t)JOB_TIMEOUT_MIN_MS * 1000;
}

int stage_pool_stuck_workers(const stage_pool *p) {
    int n = 0;
    for (int i = 0; i < p->n_workers; i++) n += p->workers[i].stuck;
    return n;
}

/* A worker that heartbeats but does not answer would hold its jobs until their deadlines:
 * a job past the job timeout is taken back (the worker is told CANCEL, and its answer, if
 * it ever comes, is dropped as late), sent again elsewhere, and the worker gets no new job
 * until it answers something. */
static void take_back_overdue(stage_pool *p, int64_t now_us) {
    const int64_t limit = stage_pool_job_timeout_us(p);
    job_list overdue = {0};
    for (stage_job *j = p->sent.head, *next; j; j = next) {
        next = j->next;
        if (now_us - j->sent_us <= limit) continue;
        worker_slot *w = worker_find(p, &j->worker);
        if (w && !w->stuck) {
            w->stuck = 1;
            log_warn("%s worker %s: a job past the job timeout of %lld ms; no new jobs until it answers",
                     lion_stage_name(p->stage), w->replica_id, (long long)(limit / 1000));
        }
        send_cancel(p, j);
        list_remove(&p->sent, j);
        j->state = JOB_IDLE;
        list_push(&overdue, j);
        p->gw->metrics.job_timeouts[p->stage]++;
    }
    while (overdue.head) {
        stage_job *j = overdue.head;
        list_remove(&overdue, j);
        char why[96];
        snprintf(why, sizeof why, "no answer within the job timeout of %lld ms", (long long)(limit / 1000));
        p->client->lost(j->owner, p->stage, why);
    }
}

void stage_pool_tick(stage_pool *p, int64_t now_us) {
    take_back_overdue(p, now_us);
    gateway *gw = p->gw;
    for (int i = 0; i < p->n_workers;) {
        worker_slot *w = &p->workers[i];
        if (now_us - w->last_seen_us > (int64_t)gw->cfg.worker_timeout_ms * 1000) {
            char why[96];
            snprintf(why, sizeof why, "no heartbeat for %d ms", gw->cfg.worker_timeout_ms);
            worker_remove(p, w, why);
            continue; /* slot i now holds another worker */
        }
        i++;
    }
    if (now_us - gw->last_heartbeat_us >= (int64_t)gw->cfg.heartbeat_ms * 1000) {
        lion_status st;
        Lion__Envelope *hb = envelope_new(LION__KIND__HEARTBEAT, 0, NULL, &st);
        if (hb) {
            hb->has_sent_us = 1;
            hb->sent_us = clock_unix_us();
            hb->replica_id = strdup("gateway");
            for (int i = 0; i < p->n_workers;) {
                if (send_to(p, &p->workers[i], hb, NULL, 0, NULL, &st) != 0) {
                    worker_remove(p, &p->workers[i], "unreachable");
                    continue;
                }
                i++;
            }
            envelope_free(hb);
        }
    }
    pump(p);
    stage_pool_drain(p);
}

void stage_pool_bye(stage_pool *p) {
    lion_status st;
    Lion__Envelope *bye = envelope_new(LION__KIND__BYE, 0, NULL, &st);
    if (!bye) return;
    bye->replica_id = strdup("gateway");
    for (int i = 0; i < p->n_workers; i++) send_to(p, &p->workers[i], bye, NULL, 0, NULL, &st);
    envelope_free(bye);
}
