/* request.c - one request's path through the stages of its model.
 *
 * Its model's family says which stages run and what each waits for (models.c): a stage's job
 * starts as soon as the stages it is built from are done. LION: vision and tagger start
 * together (the tagger is skipped when the user gave tags), the aggregator as soon as vision
 * is done (it does not need the tags), the llm once both the aggregator and the tagger are
 * done. Pink: vision, then the llm with vision's visual tokens. Each job goes to its model's
 * pool of that stage only. Each stage's RESULT is kept until the request ends: its frames are
 * what the next job forwards, and what a re-dispatched job is built from again.
 *
 * A request's life: request_new (created), request_start (admitted; its first jobs go to
 * the stage pools), each answer moves it on (on_answer), and it ends exactly once,
 * answered (finish) or failed (request_fail): its client is told through r->done, it
 * leaves gw->requests and its pools, and goes onto gw->ended. It is freed only from the
 * loop's check callback (request_free_ended), as libuv frees a handle in its close
 * callback: no code that ended a request, or walks a list it was on, sees it freed. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "gateway_impl.h"
#include "log.h"

static void free_image(void *data, void *hint) { free(data); }

/* A hash of the image for routing its jobs (stage_pool's affinity): FNV-1a over the length
 * and up to 64 slices of 1 KiB spread over the file, so a 12 MP JPEG costs microseconds on
 * the gateway's one thread. Two images that collide only share a replica. */
static uint64_t image_affinity(const unsigned char *b, size_t n) {
    enum { SLICES = 64, SLICE = 1024 };
    uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)n;
    const size_t step = n > (size_t)SLICES * SLICE ? n / SLICES : SLICE;
    for (size_t at = 0; at < n; at += step)
        for (size_t i = at; i < at + SLICE && i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h ? h : 1; /* 0 means "no affinity" */
}

request *request_new(gateway *gw, request_kind kind, unsigned char *image, size_t image_len, Lion__Task *task,
                     int deadline_ms, request_done_fn done, lion_status *st) {
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
    r->done = done;
    snprintf(r->id, sizeof r->id, "req-%llx-%08x", (unsigned long long)++gw->next_request,
             (unsigned)(clock_unix_us() ^ (int64_t)random()) & 0xffffffffu);
    r->image_hash = image_affinity(image, image_len);
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++) {
        r->step[s].job.owner = r;
        r->step[s].job.request_id = r->id;
    }
    /* the stages that cache by image go to the replica that has seen it */
    r->step[LION__STAGE__VISION].job.affinity = r->image_hash;
    r->step[LION__STAGE__TAGGER].job.affinity = r->image_hash;
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

static void request_free(request *r) {
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++) envelope_msg_close(&r->step[s].result);
    envelope_free(r->job);
    zmq_msg_close(&r->image);
    free(r);
}

void request_free_ended(gateway *gw) {
    while (gw->ended) {
        request *r = gw->ended;
        gw->ended = r->ended_next;
        request_free(r);
    }
}

/* Ends r once: out of its pools and off gw->requests (its own links are kept, so a walk
 * that stands on it can go on), onto gw->ended; then its client is told. */
static void request_end(request *r, int http_status, const lion_status *st) {
    gateway *gw = r->gw;
    if (r->ended) return;
    r->ended = 1;
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++)
        model_pool_cancel(GATEWAY_POOL(gw, r->model, s), &r->step[s].job);
    if (r->prev) r->prev->next = r->next;
    else gw->requests = r->next;
    if (r->next) r->next->prev = r->prev;
    gw->n_requests--;
    r->ended_next = gw->ended;
    gw->ended = r;
    pipeline_record(gw, r, http_status);
    if (r->done) r->done(r, http_status, st);
}

void request_fail(request *r, int http_status, const lion_status *st) {
    if (r->ended) return;
    log_info("%s failed (%d): %s", r->id, http_status, st->msg);
    request_end(r, http_status, st);
}

void request_cancel(request *r) {
    if (r->ended) return;
    r->conn = NULL; /* nobody to answer */
    r->gw->metrics.requests_cancelled++;
    lion_status st;
    lion_fail(&st, LION_ECANCELED, "the client went away");
    log_info("%s cancelled: the client went away", r->id);
    request_end(r, 499, &st);
}

static void finish(request *r) {
    log_debug("%s done", r->id);
    request_end(r, 200, NULL);
}

static model_pool *pool_of(request *r, int stage) { return GATEWAY_POOL(r->gw, r->model, stage); }

static const family_pipeline *pipeline_of(const request *r) {
    return family_pipeline_of(r->gw->cfg.models[r->model].family);
}

static void submit(request *r, int stage) {
    r->step[stage].state = STEP_RUNNING;
    model_pool_submit(pool_of(r, stage), &r->step[stage].job);
}

/* Starts every waiting stage whose inputs are there: each stage it is built from is done
 * or not part of the request (its family's `needs`). */
static void submit_ready(request *r) {
    const family_pipeline *fp = pipeline_of(r);
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST && !r->ended; s++) {
        if (r->step[s].state != STEP_WAITING) continue;
        int ready = 1;
        for (int need = LION_STAGE_FIRST; need <= LION_STAGE_LAST; need++)
            if ((fp->needs[s] & STAGE_BIT(need)) && r->step[need].state != STEP_DONE &&
                r->step[need].state != STEP_UNUSED)
                ready = 0;
        if (ready) submit(r, s);
    }
}

/* Refuses r when a stage it needs has no worker of its model or a full queue, or too many
 * requests run. */
static int admit(request *r, int *http_status, lion_status *st) {
    gateway *gw = r->gw;
    const char *model = gw->cfg.models[r->model].name;
    *http_status = 429;
    if (gw->n_requests >= gw->cfg.max_requests)
        return lion_fail(st, LION_EUNAVAILABLE, "too many requests in flight (limit %d)", gw->cfg.max_requests);
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++) {
        if (r->step[s].state == STEP_UNUSED) continue;
        if (model_pool_live_workers(pool_of(r, s)) == 0) {
            *http_status = 503;
            return lion_fail(st, LION_EUNAVAILABLE, "no live %s worker for model %s", lion_stage_name(s), model);
        }
        if (model_pool_queued(pool_of(r, s)) >= gw->cfg.max_queue)
            return lion_fail(st, LION_EUNAVAILABLE, "the %s queue is full (%d jobs of model %s waiting)",
                             lion_stage_name(s), model_pool_queued(pool_of(r, s)), model);
    }
    return 0;
}

int request_start(request *r, int *http_status, lion_status *st) {
    gateway *gw = r->gw;
    if (r->kind == REQUEST_TAGS) {
        r->step[LION__STAGE__TAGGER].state = STEP_WAITING;
    } else {
        const family_pipeline *fp = pipeline_of(r);
        for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++)
            if (fp->stages & STAGE_BIT(s)) r->step[s].state = STEP_WAITING;
        if (r->user_tags) r->step[LION__STAGE__TAGGER].state = STEP_UNUSED;
    }
    if (admit(r, http_status, st) != 0) {
        request_free(r);
        return -1;
    }
    r->next = gw->requests;
    if (gw->requests) gw->requests->prev = r;
    gw->requests = r;
    gw->n_requests++;
    log_debug("%s started (model %s)", r->id, gw->cfg.models[r->model].name);
    /* from here on every outcome reaches the client through r->done */
    submit_ready(r);
    return 0;
}

/* stage_pool_client.build: the stage's JOB for the step's current attempt. */
static int build_job(void *owner, int stage, Lion__Envelope **out, envelope_tensor *tensors, int *n,
                     lion_status *st) {
    request *r = owner;
    Lion__Envelope *job = envelope_dup(r->job, st);
    *out = job;
    *n = 0;
    if (!job) return -1;
    job->has_stage = 1;
    job->stage = (Lion__Stage)stage;
    job->request_id = strdup(r->id);
    job->has_attempt = 1;
    job->attempt = r->step[stage].job.attempt;
    job->has_deadline_us = 1;
    job->deadline_us = r->deadline_unix_us;
    if (!job->request_id) return lion_fail(st, LION_ENOMEM, "request %s: out of memory", r->id);
    /* the gateway's hop: from the request's arrival to this dispatch */
    char replica[32];
    snprintf(replica, sizeof replica, "gateway-%d", (int)getpid());
    if (envelope_add_hop(job, "gateway", replica, r->start_unix_us, clock_unix_us(), st) != 0) return -1;
    if (stage == LION__STAGE__VISION || stage == LION__STAGE__TAGGER) {
        tensors[(*n)++] = (envelope_tensor){LION_TENSOR_IMAGE, &r->image_view, &r->image};
    } else if (stage == LION__STAGE__AGGREGATOR) {
        envelope_msg *v = &r->step[LION__STAGE__VISION].result;
        const size_t prefix = strlen(LION_TENSOR_VIT_LAYER_PREFIX);
        for (int i = 0; i < v->n_tensors && *n < LION_MAX_JOB_TENSORS; i++)
            if (!strncmp(v->env->tensors[i]->name, LION_TENSOR_VIT_LAYER_PREFIX, prefix))
                tensors[(*n)++] = envelope_forward(v, i);
        if (*n == 0) return lion_fail(st, LION_EIO, "vision returned no %s* tensors", LION_TENSOR_VIT_LAYER_PREFIX);
    } else {
        /* the aggregator's (LION) or the vision stage's (Pink) visual tokens */
        const int from = pipeline_of(r)->visual_tokens_from;
        envelope_msg *a = &r->step[from].result;
        int i = envelope_msg_find(a, LION_TENSOR_VISUAL_TOKENS);
        if (i < 0)
            return lion_fail(st, LION_EIO, "%s returned no %s tensor", lion_stage_name(from), LION_TENSOR_VISUAL_TOKENS);
        tensors[(*n)++] = envelope_forward(a, i);
    }
    return 0;
}

/* The job at stage goes again with attempt + 1, or the request fails after max_attempts. */
static void redispatch(request *r, int stage, const char *why) {
    stage_job *j = &r->step[stage].job;
    j->attempt++;
    pool_of(r, stage)->redispatches++;
    if ((int)j->attempt >= r->gw->cfg.max_attempts) {
        lion_status st;
        lion_fail(&st, LION_EUNAVAILABLE, "%s: gave up after %u attempts: %s", lion_stage_name(stage), j->attempt,
                  why);
        request_fail(r, 503, &st);
        return;
    }
    log_info("%s: %s job again (attempt %u): %s", r->id, lion_stage_name(stage), j->attempt, why);
    submit(r, stage);
}

/* stage_pool_client.lost */
static void job_lost(void *owner, int stage, const char *why) {
    request *r = owner;
    if (!r->ended) redispatch(r, stage, why);
}

/* stage_pool_client.failed */
static void job_failed(void *owner, int stage, const lion_status *st) {
    request_fail(owner, http_status_of(st->code), st);
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

/* Time to first token: the request's time so far less what the llm did after its first
 * token (both of that difference on the worker's clock, so no clock of two hosts is
 * compared); time per output token: the llm's time after the first token per later token. */
static void observe_token_times(request *r, const Lion__Envelope *env, const Lion__Hop *h) {
    const Lion__Result *res = env->result;
    if (!res || !res->has_first_token_us || res->n_sequences == 0) return;
    model_pool *llm = pool_of(r, LION__STAGE__LLM);
    const double after_first_s = (double)(h->finish_us - res->first_token_us) / 1e6;
    const double elapsed_s = (double)(clock_mono_us() - r->start_us) / 1e6;
    histogram_observe(&llm->ttft_seconds, elapsed_s - after_first_s);
    const uint32_t tokens = res->sequences[0]->generated_tokens;
    if (tokens > 1) histogram_observe(&llm->tpot_seconds, after_first_s / (tokens - 1));
}

/* The worker's hop is the last one in the trace that is not the gateway's. */
static void observe_worker_time(request *r, int stage, const Lion__Envelope *env) {
    for (size_t i = env->n_trace; i-- > 0;) {
        const Lion__Hop *h = env->trace[i];
        if (h->service && !strcmp(h->service, "gateway")) continue;
        r->step[stage].worker_ms = (double)(h->finish_us - h->receive_us) / 1000.0;
        snprintf(r->step[stage].replica, sizeof r->step[stage].replica, "%s", h->replica_id ? h->replica_id : "?");
        histogram_observe(&pool_of(r, stage)->seconds, r->step[stage].worker_ms / 1000.0);
        if (stage == LION__STAGE__LLM) observe_token_times(r, env, h);
        return;
    }
}

/* An ERROR answer: unavailable (over capacity, shutting down) goes to another worker;
 * anything else fails the request with the worker's code and message. */
static void on_error(request *r, int stage, envelope_msg *m) {
    const Lion__Envelope *env = m->env;
    int code = env->error ? env->error->code : LION_EINTERNAL;
    lion_status st;
    lion_fail(&st, code, "%s: %s", lion_stage_name(stage),
              env->error && env->error->message ? env->error->message : "failed");
    envelope_msg_close(m);
    if (code == LION_EUNAVAILABLE) redispatch(r, stage, st.msg);
    else request_fail(r, http_status_of(code), &st);
}

/* stage_pool_client.answered: the stage's answer moves the request on. */
static void on_answer(void *owner, int stage, envelope_msg *m) {
    request *r = owner;
    if (r->ended) {
        envelope_msg_close(m);
        return;
    }
    if (m->env->kind == LION__KIND__ERROR) {
        on_error(r, stage, m);
        return;
    }
    request_step *s = &r->step[stage];
    envelope_msg_close(&s->result);
    s->result = *m;
    memset(m, 0, sizeof *m);
    s->state = STEP_DONE;
    observe_worker_time(r, stage, s->result.env);
    lion_status st;
    if (stage == LION__STAGE__LLM || (stage == LION__STAGE__TAGGER && r->kind == REQUEST_TAGS)) {
        finish(r);
        return;
    }
    if (stage == LION__STAGE__TAGGER && take_tags(r, s->result.env, &st) != 0) {
        request_fail(r, 503, &st);
        return;
    }
    submit_ready(r);
}

/* stage_pool_client.partial: the llm's new text, given on once. A re-dispatched job starts
 * its text again: its first bytes, up to what an earlier attempt already gave, are skipped
 * (generation is deterministic: greedy, or sampling with the seed the gateway fixed). */
static void on_partial(void *owner, int stage, const envelope_msg *m) {
    request *r = owner;
    const Lion__Result *res = m->env->result;
    if (r->ended || !r->on_text || !res || res->n_sequences == 0 || !res->sequences[0]->text) return;
    if (m->env->attempt != r->partial_attempt) {
        r->partial_attempt = m->env->attempt;
        r->attempt_bytes = 0;
    }
    const char *text = res->sequences[0]->text;
    const size_t len = strlen(text), start = r->attempt_bytes, end = start + len;
    r->attempt_bytes = end;
    if (end <= r->streamed_bytes) return;
    const size_t skip = r->streamed_bytes > start ? r->streamed_bytes - start : 0;
    r->streamed_bytes = end;
    r->on_text(r, text + skip, len - skip);
}

const stage_pool_client request_pool_client = {
    .build = build_job,
    .answered = on_answer,
    .lost = job_lost,
    .failed = job_failed,
    .partial = on_partial,
};

void request_sweep_deadlines(gateway *gw, int64_t now_us) {
    /* an ended request keeps its links, so the walk goes on from it */
    for (request *r = gw->requests; r; r = r->next) {
        if (r->ended || now_us < r->deadline_us) continue;
        const char *at = "?";
        for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++)
            if (r->step[s].state == STEP_RUNNING) {
                at = lion_stage_name(s);
                break;
            }
        lion_status st;
        lion_fail(&st, LION_ETIMEOUT, "deadline of %lld ms exceeded waiting for %s",
                  (long long)((r->deadline_us - r->start_us) / 1000), at);
        request_fail(r, 504, &st);
    }
}
