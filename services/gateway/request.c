/* request.c - one request's path through the stages.
 *
 * vision and tagger start together (the tagger is skipped when the user gave tags); the
 * aggregator starts as soon as vision is done (it does not need the tags), the llm once
 * both the aggregator and the tagger are done. Each stage's RESULT is kept until the
 * request ends: its frames are what the next job forwards, and what a re-dispatched
 * job is built from again. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "gateway_impl.h"
#include "log.h"

static void free_image(void *data, void *hint) { free(data); }

request *request_new(gateway *gw, request_kind kind, unsigned char *image, size_t image_len, Lion__Task *task,
                     int deadline_ms, lion_status *st) {
    request *r = calloc(1, sizeof *r);
    Lion__Envelope *job = r ? envelope_new(LION__KIND__JOB, 0, NULL, st) : NULL;
    if (!r || !job) {
        free(r);
        free(image);
        if (task) lion__task__free_unpacked(task, NULL);
        if (!job) return NULL;
        lion_fail(st, LION_ENOMEM, "request: out of memory");
        return NULL;
    }
    r->gw = gw;
    r->kind = kind;
    snprintf(r->id, sizeof r->id, "req-%llx-%08x", (unsigned long long)++gw->next_request,
             (unsigned)(clock_unix_us() ^ (int64_t)random()) & 0xffffffffu);
    r->job = job;
    if (!task) {
        task = malloc(sizeof *task);
        if (task) lion__task__init(task);
    }
    job->task = task;
    r->user_tags = task && task->n_tags > 0;
    /* the image frame is shared by the vision and the tagger job: built once, never copied */
    zmq_msg_init_data(&r->image, image, image_len, free_image, NULL);
    int64_t shape[1] = {(int64_t)image_len};
    r->image_view = tensor_view(DTYPE_U8, zmq_msg_data(&r->image), 1, shape);
    if (deadline_ms <= 0 || deadline_ms > gw->cfg.deadline_ms) deadline_ms = gw->cfg.deadline_ms;
    r->start_us = clock_mono_us();
    r->deadline_us = r->start_us + (int64_t)deadline_ms * 1000;
    r->start_unix_us = clock_unix_us();
    r->deadline_unix_us = r->start_unix_us + (int64_t)deadline_ms * 1000;
    return r;
}

request *request_find(gateway *gw, const char *id) {
    for (request *r = gw->requests; r; r = r->next)
        if (!strcmp(r->id, id)) return r;
    return NULL;
}

void request_free(request *r) {
    gateway *gw = r->gw;
    if (r->prev || gw->requests == r) {
        if (r->prev) r->prev->next = r->next;
        else gw->requests = r->next;
        if (r->next) r->next->prev = r->prev;
        gw->n_requests--;
    }
    for (int s = 1; s < GATEWAY_STAGES; s++) {
        if (r->step[s].state == STEP_QUEUED) stage_pool_unqueue(&gw->pool[s], r);
        envelope_msg_close(&r->step[s].result);
    }
    if (r->conn) http_conn_detach(r->conn);
    envelope_free(r->job);
    zmq_msg_close(&r->image);
    free(r);
}

void request_fail(request *r, int http_status, const lion_status *st) {
    log_info("%s failed (%d): %s", r->id, http_status, st->msg);
    if (r->conn) api_respond_error(r->gw, r->conn, http_status, st->code, st->msg);
    request_free(r);
}

int request_start(request *r, int *http_status, lion_status *st) {
    gateway *gw = r->gw;
    if (r->kind == REQUEST_TAGS) {
        r->step[LION__STAGE__TAGGER].state = STEP_WAITING;
    } else {
        r->step[LION__STAGE__VISION].state = STEP_WAITING;
        r->step[LION__STAGE__AGGREGATOR].state = STEP_WAITING;
        r->step[LION__STAGE__LLM].state = STEP_WAITING;
        if (!r->user_tags) r->step[LION__STAGE__TAGGER].state = STEP_WAITING;
    }
    int rc = 0;
    *http_status = 503;
    if (gw->n_requests >= gw->cfg.max_requests) {
        *http_status = 429;
        rc = lion_fail(st, LION_EUNAVAILABLE, "too many requests in flight (limit %d)", gw->cfg.max_requests);
    }
    for (int s = 1; rc == 0 && s < GATEWAY_STAGES; s++) {
        if (r->step[s].state == STEP_UNUSED) continue;
        if (stage_pool_live_workers(&gw->pool[s]) == 0)
            rc = lion_fail(st, LION_EUNAVAILABLE, "no live %s worker", lion_stage_name(s));
        else if (gw->pool[s].queue_len >= gw->cfg.max_queue) {
            *http_status = 429;
            rc = lion_fail(st, LION_EUNAVAILABLE, "the %s queue is full (%d jobs waiting)", lion_stage_name(s),
                           gw->pool[s].queue_len);
        }
    }
    if (rc) {
        request_free(r);
        return -1;
    }
    r->next = gw->requests;
    if (gw->requests) gw->requests->prev = r;
    gw->requests = r;
    gw->n_requests++;
    log_debug("%s started", r->id);
    /* from here on every failure answers the client through the request itself */
    static const int first[] = {LION__STAGE__VISION, LION__STAGE__TAGGER};
    for (int k = 0; k < 2; k++) {
        int s = first[k];
        if (r->step[s].state != STEP_WAITING) continue;
        lion_status sub;
        if (stage_pool_submit(&gw->pool[s], r, &sub) != 0) {
            request_fail(r, 503, &sub);
            return 0;
        }
        /* the submit may have failed the request already (e.g. a dead worker, no attempts left) */
        if (!request_is_live(gw, r)) return 0;
    }
    return 0;
}

int request_is_live(gateway *gw, const request *r) {
    for (request *q = gw->requests; q; q = q->next)
        if (q == r) return 1;
    return 0;
}

int request_job(request *r, int stage, Lion__Envelope **out, envelope_tensor *tensors, int *n, lion_status *st) {
    Lion__Envelope *job = envelope_dup(r->job, st);
    *out = job;
    *n = 0;
    if (!job) return -1;
    job->has_stage = 1;
    job->stage = (Lion__Stage)stage;
    job->request_id = strdup(r->id);
    job->has_attempt = 1;
    job->attempt = r->step[stage].attempt;
    job->has_deadline_us = 1;
    job->deadline_us = r->deadline_unix_us;
    if (!job->request_id) return lion_fail(st, LION_ENOMEM, "request %s: out of memory", r->id);
    /* the gateway's hop: from the request's arrival to this dispatch */
    char replica[32];
    snprintf(replica, sizeof replica, "gateway-%d", (int)getpid());
    if (envelope_add_hop(job, "gateway", replica, r->start_unix_us, clock_unix_us(), st) != 0) return -1;
    if (stage == LION__STAGE__VISION || stage == LION__STAGE__TAGGER) {
        tensors[(*n)++] = (envelope_tensor){"image", &r->image_view, &r->image};
    } else if (stage == LION__STAGE__AGGREGATOR) {
        envelope_msg *v = &r->step[LION__STAGE__VISION].result;
        for (int i = 0; i < v->n_tensors && *n < 16; i++)
            if (!strncmp(v->env->tensors[i]->name, "vit_layer_", 10)) tensors[(*n)++] = envelope_forward(v, i);
        if (*n == 0) return lion_fail(st, LION_EIO, "vision returned no vit_layer_* tensors");
    } else {
        envelope_msg *a = &r->step[LION__STAGE__AGGREGATOR].result;
        int i = envelope_msg_find(a, "visual_tokens");
        if (i < 0) return lion_fail(st, LION_EIO, "aggregator returned no visual_tokens tensor");
        tensors[(*n)++] = envelope_forward(a, i);
    }
    return 0;
}

static void submit_or_fail(request *r, int stage) {
    lion_status st;
    if (stage_pool_submit(&r->gw->pool[stage], r, &st) != 0) request_fail(r, 503, &st);
}

void request_redispatch(request *r, int stage, const char *why) {
    request_step *s = &r->step[stage];
    s->attempt++;
    r->gw->metrics.redispatches[stage]++;
    if ((int)s->attempt >= r->gw->cfg.max_attempts) {
        lion_status st;
        lion_fail(&st, LION_EUNAVAILABLE, "%s: gave up after %u attempts: %s", lion_stage_name(stage), s->attempt,
                  why);
        request_fail(r, 503, &st);
        return;
    }
    log_info("%s: %s job again (attempt %u): %s", r->id, lion_stage_name(stage), s->attempt, why);
    submit_or_fail(r, stage);
}

/* Tags the tagger found become the llm job's tags. */
static int take_tags(request *r, const Lion__Envelope *answer, lion_status *st) {
    const Lion__Result *res = answer->result;
    Lion__Task *task = r->job->task;
    if (!res || res->n_tags == 0 || !task) return 0;
    char **tags = calloc(res->n_tags, sizeof *tags);
    if (!tags) return lion_fail(st, LION_ENOMEM, "tags: out of memory");
    for (size_t i = 0; i < res->n_tags; i++) {
        tags[i] = strdup(res->tags[i]->name ? res->tags[i]->name : "");
        if (!tags[i]) {
            for (size_t k = 0; k < i; k++) free(tags[k]);
            free(tags);
            return lion_fail(st, LION_ENOMEM, "tags: out of memory");
        }
    }
    task->tags = tags;
    task->n_tags = res->n_tags;
    return 0;
}

static void finish(request *r) {
    log_debug("%s done", r->id);
    if (r->conn) api_respond_result(r);
    request_free(r);
}

void request_on_answer(request *r, int stage, envelope_msg *m) {
    gateway *gw = r->gw;
    request_step *s = &r->step[stage];
    Lion__Envelope *env = m->env;
    if (env->kind == LION__KIND__ERROR) {
        int code = env->error ? env->error->code : LION_EINTERNAL;
        lion_status st;
        lion_fail(&st, code, "%s: %s", lion_stage_name(stage),
                  env->error && env->error->message ? env->error->message : "failed");
        envelope_msg_close(m);
        if (code == LION_EUNAVAILABLE) { /* over capacity or shutting down: another worker may take it */
            s->state = STEP_QUEUED;
            request_redispatch(r, stage, st.msg);
        } else {
            request_fail(r, api_http_status_of(code), &st);
        }
        return;
    }
    envelope_msg_close(&s->result);
    s->result = *m;
    memset(m, 0, sizeof *m);
    s->state = STEP_DONE;
    /* the worker's hop is the last one that is not the gateway's */
    for (size_t i = env->n_trace; i-- > 0;) {
        const Lion__Hop *h = env->trace[i];
        if (h->service && !strcmp(h->service, "gateway")) continue;
        s->worker_ms = (double)(h->finish_us - h->receive_us) / 1000.0;
        histogram_observe(&gw->metrics.stage_seconds[stage], s->worker_ms / 1000.0);
        break;
    }
    lion_status st;
    switch (stage) {
    case LION__STAGE__VISION:
        submit_or_fail(r, LION__STAGE__AGGREGATOR);
        return;
    case LION__STAGE__TAGGER:
        if (r->kind == REQUEST_TAGS) {
            finish(r);
            return;
        }
        if (take_tags(r, env, &st) != 0) {
            request_fail(r, 503, &st);
            return;
        }
        break;
    case LION__STAGE__AGGREGATOR:
        break;
    case LION__STAGE__LLM:
        finish(r);
        return;
    }
    request_step *tagger = &r->step[LION__STAGE__TAGGER];
    if (r->step[LION__STAGE__AGGREGATOR].state == STEP_DONE &&
        (tagger->state == STEP_DONE || tagger->state == STEP_UNUSED) && r->step[LION__STAGE__LLM].state == STEP_WAITING)
        submit_or_fail(r, LION__STAGE__LLM);
}

void request_sweep_deadlines(gateway *gw, int64_t now_us) {
    for (request *r = gw->requests; r;) {
        if (now_us < r->deadline_us) {
            r = r->next;
            continue;
        }
        const char *at = "?";
        for (int s = 1; s < GATEWAY_STAGES; s++)
            if (r->step[s].state == STEP_SENT || r->step[s].state == STEP_QUEUED) {
                at = lion_stage_name(s);
                break;
            }
        lion_status st;
        lion_fail(&st, LION_ETIMEOUT, "deadline of %lld ms exceeded waiting for %s",
                  (long long)((r->deadline_us - r->start_us) / 1000), at);
        request_fail(r, 504, &st);
        r = gw->requests; /* answering may have changed the list */
    }
}
