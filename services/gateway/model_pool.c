/* model_pool.c - the workers of one model at one stage: their credit, the model's jobs
 * waiting for credit, the jobs at its workers and their answers (docs/wire-protocol.md). The
 * messages come and go through the stage's ROUTER (stage_pool.c), which hands each to the
 * pool of the worker that sent it. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "gateway_impl.h"
#include "log.h"

static int peer_equal(const envelope_peer *a, const envelope_peer *b) {
    return a->len == b->len && memcmp(a->id, b->id, a->len) == 0;
}

int model_pool_stage(const model_pool *p) { return p->endpoint->stage; }

const char *model_pool_name(const model_pool *p) { return p->endpoint->gw->cfg.models[p->model].name; }

static const char *stage_name(const model_pool *p) { return lion_stage_name(p->endpoint->stage); }

worker_slot *model_pool_find(model_pool *p, const envelope_peer *peer) {
    for (int i = 0; i < p->n_workers; i++)
        if (peer_equal(&p->workers[i].peer, peer)) return &p->workers[i];
    return NULL;
}

int model_pool_live_workers(const model_pool *p) { return p->n_workers; }

unsigned model_pool_capacity(const model_pool *p) {
    unsigned c = 0;
    for (int i = 0; i < p->n_workers; i++) c += p->workers[i].capacity;
    return c;
}

void model_pool_cache_counts(const model_pool *p, uint64_t *hits, uint64_t *misses) {
    *hits = p->gone_cache_hits;
    *misses = p->gone_cache_misses;
    for (int i = 0; i < p->n_workers; i++) {
        *hits += p->workers[i].cache_hits;
        *misses += p->workers[i].cache_misses;
    }
}

int model_pool_queued(const model_pool *p) { return p->queue.len; }

unsigned model_pool_outstanding(const model_pool *p) {
    unsigned c = 0;
    for (int i = 0; i < p->n_workers; i++) c += p->workers[i].outstanding;
    return c;
}

int model_pool_stuck_workers(const model_pool *p) {
    int n = 0;
    for (int i = 0; i < p->n_workers; i++) n += p->workers[i].stuck;
    return n;
}

/* The live worker with the lowest load (outstanding / capacity) that has credit left;
 * ties go round robin so that idle replicas share the work. */
static worker_slot *least_loaded(model_pool *p) {
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

static worker_slot *worker_pick(model_pool *p, uint64_t affinity) {
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
            p->affinity_routed++;
        }
    }
    if (chosen == least && least) p->rr = (int)(least - p->workers + 1) % p->n_workers;
    return chosen;
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
static void job_unlink(model_pool *p, stage_job *j) {
    if (j->state == JOB_QUEUED) list_remove(&p->queue, j);
    else if (j->state == JOB_SENT) list_remove(&p->sent, j);
    j->state = JOB_IDLE;
}

/* --- sending ---------------------------------------------------------------------------- */

/* Sends the job to w. A send that fails drops the worker (its jobs go again, this one too). */
static void send_job(model_pool *p, worker_slot *w, stage_job *j) {
    const stage_pool_client *client = p->endpoint->client;
    const int stage = model_pool_stage(p);
    Lion__Envelope *env = NULL;
    envelope_tensor tensors[LION_MAX_JOB_TENSORS];
    int n = 0;
    lion_status st;
    if (client->build(j->owner, stage, &env, tensors, &n, &st) != 0) {
        envelope_free(env);
        client->failed(j->owner, stage, &st);
        return;
    }
    int rc = stage_pool_send(p->endpoint, w, env, tensors, n, j->request_id, &st);
    envelope_free(env);
    if (rc != 0) {
        log_warn("%s", st.msg);
        model_pool_remove(p, w, "send failed");
        client->lost(j->owner, stage, st.msg);
        return;
    }
    j->state = JOB_SENT;
    j->worker = w->peer;
    j->sent_us = clock_mono_us();
    list_push(&p->sent, j);
    w->outstanding++;
    p->jobs++;
}

void model_pool_pump(model_pool *p) {
    while (p->queue.head) {
        stage_job *j = p->queue.head;
        worker_slot *w = worker_pick(p, j->affinity);
        if (!w) return;
        job_unlink(p, j);
        send_job(p, w, j);
    }
}

void model_pool_submit(model_pool *p, stage_job *job) {
    job_unlink(p, job);
    job->state = JOB_QUEUED;
    list_push(&p->queue, job);
    model_pool_pump(p);
}

/* Tells the worker that holds j to drop it. Best effort: a worker that is gone answers
 * nothing, and its slot's credit goes with it. */
static void send_cancel(model_pool *p, const stage_job *j) {
    worker_slot *w = model_pool_find(p, &j->worker);
    lion_status st;
    Lion__Envelope *env = w ? envelope_new(LION__KIND__CANCEL, model_pool_stage(p), j->request_id, &st) : NULL;
    if (!env) return;
    env->has_attempt = 1;
    env->attempt = j->attempt;
    if (stage_pool_send(p->endpoint, w, env, NULL, 0, j->request_id, &st) != 0) log_debug("%s", st.msg);
    envelope_free(env);
    p->cancels_sent++;
}

void model_pool_cancel(model_pool *p, stage_job *job) {
    if (job->state == JOB_SENT) send_cancel(p, job);
    job_unlink(p, job);
}

/* --- workers ---------------------------------------------------------------------------- */

void model_pool_remove(model_pool *p, worker_slot *w, const char *why) {
    const stage_pool_client *client = p->endpoint->client;
    const int stage = model_pool_stage(p);
    envelope_peer peer = w->peer;
    /* "(N jobs outstanding)" right after the reason: operators' scripts read it there */
    log_warn("%s worker %s removed: %s (%u jobs outstanding), model %s", stage_name(p), w->replica_id, why,
             w->outstanding, model_pool_name(p));
    p->gone_cache_hits += w->cache_hits;
    p->gone_cache_misses += w->cache_misses;
    *w = p->workers[--p->n_workers];
    if (p->rr >= p->n_workers) p->rr = 0;
    char reason[160];
    snprintf(reason, sizeof reason, "%s worker lost: %s", stage_name(p), why);
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
        client->lost(j->owner, stage, reason);
    }
}

worker_slot *model_pool_register(model_pool *p, const envelope_msg *m) {
    worker_slot *w = model_pool_find(p, &m->peer);
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
        log_info("%s worker %s joined (model %s)", stage_name(p), w->replica_id, model_pool_name(p));
    }
    const Lion__Credit *c = m->env->credit;
    w->capacity = c && c->has_capacity && c->capacity > 0 ? c->capacity : 1;
    return w;
}

/* --- answers ---------------------------------------------------------------------------- */

stage_job *model_pool_sent_job(model_pool *p, const Lion__Envelope *env) {
    if (!env->request_id || env->stage != (Lion__Stage)model_pool_stage(p)) return NULL;
    for (stage_job *j = p->sent.head; j; j = j->next)
        if (j->attempt == env->attempt && !strcmp(j->request_id, env->request_id)) return j;
    return NULL;
}

void model_pool_answer(model_pool *p, worker_slot *w, stage_job *j, envelope_msg *m, int decode_failed,
                       const lion_status *st) {
    const stage_pool_client *client = p->endpoint->client;
    const int stage = model_pool_stage(p);
    Lion__Envelope *env = m->env;
    if (w && w->outstanding > 0) w->outstanding--;
    if (w && w->stuck) {
        log_info("%s worker %s answers again: it gets jobs again", stage_name(p), w->replica_id);
        w->stuck = 0;
    }
    if (env->request_id) tap_publish(&p->endpoint->gw->tap, stage, 0, env->request_id, m->frames, m->n_frames);
    if (!j) {
        p->late_answers++;
        log_debug("%s: dropped a late answer for %s attempt %u", stage_name(p),
                  env->request_id ? env->request_id : "?", env->attempt);
        envelope_msg_close(m);
        return;
    }
    /* the pool's latency, for the default job timeout: an average over about 20 answers */
    const double took_s = (double)(clock_mono_us() - j->sent_us) / 1e6;
    p->latency_ewma_s = p->latency_ewma_s > 0 ? 0.95 * p->latency_ewma_s + 0.05 * took_s : took_s;
    job_unlink(p, j);
    if (decode_failed) {
        lion_status failed;
        lion_fail(&failed, LION_EIO, "%s worker %s sent a malformed answer: %s", stage_name(p),
                  w ? w->replica_id : "?", st->msg);
        envelope_msg_close(m);
        client->failed(j->owner, stage, &failed);
        return;
    }
    client->answered(j->owner, stage, m);
}

/* --- timeouts --------------------------------------------------------------------------- */

#define JOB_TIMEOUT_FACTOR 20
#define JOB_TIMEOUT_MIN_MS 10000

int64_t model_pool_job_timeout_us(const model_pool *p) {
    const gateway *gw = p->endpoint->gw;
    if (gw->cfg.job_timeout_ms > 0) return (int64_t)gw->cfg.job_timeout_ms * 1000;
    const int64_t observed = (int64_t)(JOB_TIMEOUT_FACTOR * p->latency_ewma_s * 1e6);
    return observed > (int64_t)JOB_TIMEOUT_MIN_MS * 1000 ? observed : (int64_t)JOB_TIMEOUT_MIN_MS * 1000;
}

/* A worker that heartbeats but does not answer would hold its jobs until their deadlines:
 * a job past the job timeout is taken back (the worker is told CANCEL, and its answer, if
 * it ever comes, is dropped as late), sent again elsewhere, and the worker gets no new job
 * until it answers something. */
static void take_back_overdue(model_pool *p, int64_t now_us) {
    const stage_pool_client *client = p->endpoint->client;
    const int64_t limit = model_pool_job_timeout_us(p);
    job_list overdue = {0};
    for (stage_job *j = p->sent.head, *next; j; j = next) {
        next = j->next;
        if (now_us - j->sent_us <= limit) continue;
        worker_slot *w = model_pool_find(p, &j->worker);
        if (w && !w->stuck) {
            w->stuck = 1;
            log_warn("%s worker %s: a job past the job timeout of %lld ms; no new jobs until it answers",
                     stage_name(p), w->replica_id, (long long)(limit / 1000));
        }
        send_cancel(p, j);
        list_remove(&p->sent, j);
        j->state = JOB_IDLE;
        list_push(&overdue, j);
        p->job_timeouts++;
    }
    while (overdue.head) {
        stage_job *j = overdue.head;
        list_remove(&overdue, j);
        char why[96];
        snprintf(why, sizeof why, "no answer within the job timeout of %lld ms", (long long)(limit / 1000));
        client->lost(j->owner, model_pool_stage(p), why);
    }
}

void model_pool_tick(model_pool *p, int64_t now_us) {
    take_back_overdue(p, now_us);
    const gateway *gw = p->endpoint->gw;
    for (int i = 0; i < p->n_workers;) {
        worker_slot *w = &p->workers[i];
        if (now_us - w->last_seen_us > (int64_t)gw->cfg.worker_timeout_ms * 1000) {
            char why[96];
            snprintf(why, sizeof why, "no heartbeat for %d ms", gw->cfg.worker_timeout_ms);
            model_pool_remove(p, w, why);
            continue; /* slot i now holds another worker */
        }
        i++;
    }
}
