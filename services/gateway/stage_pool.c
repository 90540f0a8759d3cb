/* stage_pool.c - one stage's ROUTER endpoint, shared by every model the gateway serves: the
 * messages in and out (docs/wire-protocol.md), each handed to the pool of the model whose
 * worker sent it (model_pool.c). A worker joins the pool of the model its READY (or first
 * HEARTBEAT) credit names; a worker that names none joins the default model's, as workers
 * did before they announced a model, and so does every worker of the right family when the
 * gateway serves one model. A worker the gateway cannot use (a model it does not serve, the
 * model as another family, a stage the model's pipeline has not) is refused: no jobs, no
 * heartbeats; it is logged once and counted while it keeps heartbeating. */
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

/* The worker that sent from peer and the pool it is in; NULL when no pool knows it. */
static worker_slot *worker_lookup(stage_pool *p, const envelope_peer *peer, model_pool **pool) {
    for (int m = 0; m < p->n_models; m++) {
        worker_slot *w = model_pool_find(&p->models[m], peer);
        if (w) {
            *pool = &p->models[m];
            return w;
        }
    }
    *pool = NULL;
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
    p->n_models = gw->cfg.n_models;
    for (int m = 0; m < p->n_models; m++) {
        p->models[m].endpoint = p;
        p->models[m].model = m;
    }
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
    for (int m = 0; m < p->n_models; m++) {
        free(p->models[m].workers);
        p->models[m].workers = NULL;
        p->models[m].n_workers = 0;
    }
}

int stage_pool_send(stage_pool *p, const worker_slot *w, Lion__Envelope *env, envelope_tensor *tensors, int n,
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

/* --- joining ---------------------------------------------------------------------------- */

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

/* The pool a new worker joins: that of the model its credit names (none: the default model;
 * any name, when the gateway serves one model), when this gateway serves that model, as the
 * family the worker says (when it says one), and the model's pipeline has this stage. NULL
 * with why otherwise. */
static model_pool *pool_for(stage_pool *p, const Lion__Credit *c, const char *replica, char *why, size_t size) {
    const gateway_config *cfg = &p->gw->cfg;
    const char *stage = lion_stage_name(p->stage);
    int m = 0, other_name = 0;
    char name[64] = "";
    if (c && c->model && c->model[0]) {
        copy_label(name, sizeof name, c->model);
        for (m = 0; m < cfg->n_models && strcmp(c->model, cfg->models[m].name) != 0; m++) continue;
        if (m == cfg->n_models && cfg->n_models > 1) {
            snprintf(why, size, "it serves model '%s', which this gateway does not (--model-name %s)", name,
                     cfg->model_name);
            return NULL;
        }
        /* A gateway of one model takes every worker of its family, as before workers
         * announced a model: its name is then only what the API reports (the default
         * lion-flant5 in front of a converted model named otherwise). */
        if (m == cfg->n_models) m = 0, other_name = 1;
    }
    const gateway_model *gm = &cfg->models[m];
    const char *family = family_pipeline_of(gm->family)->name;
    if (c && c->family && c->family[0] && strcmp(c->family, family) != 0) {
        char said[16];
        copy_label(said, sizeof said, c->family);
        snprintf(why, size, "it serves %s (%s), this gateway serves %s as %s (--model-name %s)",
                 name[0] ? name : "its model", said, gm->name, family, cfg->model_name);
        return NULL;
    }
    if (!model_has_stage(cfg, m, p->stage)) {
        snprintf(why, size, "model %s (%s) has no %s stage", gm->name, family, stage);
        return NULL;
    }
    if (other_name) {
        char who[64];
        copy_label(who, sizeof who, replica ? replica : "?");
        log_info("%s worker %s announces model '%s'; the one model served here is %s: it joins it", stage, who, name,
                 gm->name);
    }
    return &p->models[m];
}

static refused_worker *refused_find(stage_pool *p, const envelope_peer *peer) {
    for (int i = 0; i < p->n_refused; i++)
        if (peer_equal(&p->refused[i].peer, peer)) return &p->refused[i];
    return NULL;
}

/* Notes a refused worker: logged when first seen (it heartbeats every second: once is
 * enough), kept (the longest silent one makes room) until silent for --worker-timeout-ms. */
static void refuse(stage_pool *p, const envelope_msg *m, const char *why) {
    refused_worker *r = refused_find(p, &m->peer);
    const int64_t now = clock_mono_us();
    if (r) {
        r->last_seen_us = now;
        return;
    }
    char replica[64];
    copy_label(replica, sizeof replica, m->env->replica_id ? m->env->replica_id : "?");
    log_warn("%s worker %s refused: %s", lion_stage_name(p->stage), replica, why);
    if (p->n_refused < REFUSED_MAX) {
        r = &p->refused[p->n_refused++];
    } else {
        r = &p->refused[0];
        for (int i = 1; i < p->n_refused; i++)
            if (p->refused[i].last_seen_us < r->last_seen_us) r = &p->refused[i];
    }
    r->peer = m->peer;
    r->last_seen_us = now;
}

static void refused_forget(stage_pool *p, refused_worker *r) { *r = p->refused[--p->n_refused]; }

int stage_pool_refused(const stage_pool *p) { return p->n_refused; }

/* --- receiving -------------------------------------------------------------------------- */

/* The sent job an answer is for: in the sender's pool, or, from a worker no pool knows any
 * more, in whichever pool sent it (*pool is set then). */
static stage_job *find_job(stage_pool *p, const Lion__Envelope *env, model_pool **pool) {
    if (*pool) return model_pool_sent_job(*pool, env);
    for (int m = 0; m < p->n_models; m++) {
        stage_job *j = model_pool_sent_job(&p->models[m], env);
        if (j) {
            *pool = &p->models[m];
            return j;
        }
    }
    return NULL;
}

/* READY, or a HEARTBEAT: a worker (re)announces itself, or says its credit. */
static void handle_state(stage_pool *p, worker_slot *w, model_pool *pool, envelope_msg *m, int rc) {
    const Lion__Envelope *env = m->env;
    if (rc == 0 && (env->kind == LION__KIND__READY || (!w && env->credit))) {
        if (env->has_stage && env->stage != (Lion__Stage)p->stage) {
            log_warn("%s endpoint: a %s worker announced itself here; ignored", lion_stage_name(p->stage),
                     lion_stage_name(env->stage));
            return;
        }
        if (!w) {
            char why[512];
            pool = pool_for(p, env->credit, env->replica_id, why, sizeof why);
            if (!pool) {
                refuse(p, m, why);
                return;
            }
            refused_worker *r = refused_find(p, &m->peer);
            if (r) refused_forget(p, r);
        }
        w = model_pool_register(pool, m);
        if (w) w->last_seen_us = clock_mono_us();
    } else if (w && env->credit && env->credit->has_capacity && env->credit->capacity > 0) {
        w->capacity = env->credit->capacity;
    }
    if (w && rc == 0 && env->credit) worker_info(w, env->credit);
    if (pool) model_pool_pump(pool);
}

static void handle(stage_pool *p, envelope_msg *m, int rc, lion_status *st) {
    Lion__Envelope *env = m->env;
    if (!env) {
        log_warn("%s: dropped a malformed message: %s", lion_stage_name(p->stage), st->msg);
        envelope_msg_close(m);
        return;
    }
    model_pool *pool;
    worker_slot *w = worker_lookup(p, &m->peer, &pool);
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
        handle_state(p, w, pool, m, rc);
        break;
    case LION__KIND__BYE: {
        refused_worker *r = w ? NULL : refused_find(p, &m->peer);
        if (w) model_pool_remove(pool, w, "said BYE");
        else if (r) refused_forget(p, r); /* it leaves: no longer counted */
        break;
    }
    case LION__KIND__RESULT:
    case LION__KIND__ERROR: {
        stage_job *j = find_job(p, env, &pool);
        /* a late answer from a worker that already left is counted under the default model:
         * nothing says any more whose it was */
        model_pool *at = pool ? pool : &p->models[0];
        model_pool_answer(at, w, j, m, rc != 0, st);
        model_pool_pump(at);
        return;
    }
    case LION__KIND__PARTIAL: {
        /* passed on when the attempt is still the one waited for */
        if (env->request_id) tap_publish(&p->gw->tap, p->stage, 0, env->request_id, m->frames, m->n_frames);
        stage_job *j = rc == 0 ? find_job(p, env, &pool) : NULL;
        if (j) p->client->partial(j->owner, p->stage, m);
        break;
    }
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

/* --- time ------------------------------------------------------------------------------- */

/* The gateway's heartbeat to every worker of every pool; a worker it cannot reach is removed. */
static void heartbeat(stage_pool *p) {
    lion_status st;
    Lion__Envelope *hb = envelope_new(LION__KIND__HEARTBEAT, 0, NULL, &st);
    if (!hb) return;
    hb->has_sent_us = 1;
    hb->sent_us = clock_unix_us();
    hb->replica_id = strdup("gateway");
    for (int m = 0; m < p->n_models; m++) {
        model_pool *pool = &p->models[m];
        for (int i = 0; i < pool->n_workers;) {
            if (stage_pool_send(p, &pool->workers[i], hb, NULL, 0, NULL, &st) != 0) {
                model_pool_remove(pool, &pool->workers[i], "unreachable");
                continue; /* slot i now holds another worker */
            }
            i++;
        }
    }
    envelope_free(hb);
}

void stage_pool_tick(stage_pool *p, int64_t now_us) {
    gateway *gw = p->gw;
    for (int m = 0; m < p->n_models; m++) model_pool_tick(&p->models[m], now_us);
    for (int i = 0; i < p->n_refused;) {
        if (now_us - p->refused[i].last_seen_us > (int64_t)gw->cfg.worker_timeout_ms * 1000) {
            refused_forget(p, &p->refused[i]);
            continue;
        }
        i++;
    }
    if (now_us - gw->last_heartbeat_us >= (int64_t)gw->cfg.heartbeat_ms * 1000) heartbeat(p);
    for (int m = 0; m < p->n_models; m++) model_pool_pump(&p->models[m]);
    stage_pool_drain(p);
}

void stage_pool_bye(stage_pool *p) {
    lion_status st;
    Lion__Envelope *bye = envelope_new(LION__KIND__BYE, 0, NULL, &st);
    if (!bye) return;
    bye->replica_id = strdup("gateway");
    for (int m = 0; m < p->n_models; m++)
        for (int i = 0; i < p->models[m].n_workers; i++)
            stage_pool_send(p, &p->models[m].workers[i], bye, NULL, 0, NULL, &st);
    envelope_free(bye);
}
