/* pipeline.c - GET /v1/pipeline: what the web page's Watch view shows, from the numbers
 * /metrics reads (pools, workers, histograms) and a ring of recently finished requests with
 * their hops and tensor shapes (as the taps' meta topic describes them). Each served model's
 * stages are listed, each with its model; the models themselves (name, family) too.
 *
 * Rates (requests per second, each stage's busy fraction) are over the time since the
 * previous poll, so a page polling every second sees the last second. The ring is written
 * only while someone polled within PIPELINE_WATCH_S: with nobody watching, a finishing
 * request costs one comparison. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "gateway_impl.h"

#define PIPELINE_RECENT 50
#define PIPELINE_WATCH_S 30
#define PIPELINE_TENSORS 8

typedef struct recent_tensor {
    char name[48];
    int dtype;
    int ndim;
    int64_t shape[4];
} recent_tensor;

typedef struct recent_stage {
    int used;
    int cache; /* 0: the stage has no cache, 1: miss, 2: hit */
    char replica[64];
    double worker_ms;
    int n_tensors;
    recent_tensor tensors[PIPELINE_TENSORS];
} recent_stage;

typedef struct recent_request {
    char id[48];
    int kind, status;
    int model; /* index into cfg.models */
    double total_ms;
    int64_t finished_unix_ms;
    recent_stage stage[LION_STAGE_SLOTS];
} recent_request;

typedef struct pipeline_view {
    int64_t watched_until_us; /* monotonic */
    int64_t started_us;
    recent_request recent[PIPELINE_RECENT];
    int next, count;
    uint64_t finished;       /* requests ended, all kinds */
    int64_t prev_us;         /* the previous poll */
    uint64_t prev_finished;
    double prev_busy_s[GATEWAY_MAX_MODELS][LION_STAGE_SLOTS];
} pipeline_view;

static pipeline_view *view_of(gateway *gw) {
    if (!gw->view) {
        gw->view = calloc(1, sizeof *gw->view);
        if (gw->view) gw->view->started_us = gw->view->prev_us = clock_mono_us();
    }
    return gw->view;
}

void pipeline_start(gateway *gw) { view_of(gw); }

void pipeline_free(gateway *gw) {
    free(gw->view);
    gw->view = NULL;
}

static void record_stage(recent_stage *rs, const request_step *step) {
    rs->used = 1;
    snprintf(rs->replica, sizeof rs->replica, "%s", step->replica);
    rs->worker_ms = step->worker_ms;
    const Lion__Envelope *env = step->result.env;
    if (env && env->result && env->result->has_cache_hit) rs->cache = env->result->cache_hit ? 2 : 1;
    for (size_t i = 0; env && i < env->n_tensors && rs->n_tensors < PIPELINE_TENSORS; i++) {
        const Lion__TensorDesc *d = env->tensors[i];
        recent_tensor *t = &rs->tensors[rs->n_tensors++];
        snprintf(t->name, sizeof t->name, "%s", d->name ? d->name : "?");
        t->dtype = d->has_dtype ? (int)d->dtype : 0;
        t->ndim = (int)(d->n_shape < 4 ? d->n_shape : 4);
        for (int k = 0; k < t->ndim; k++) t->shape[k] = d->shape[k];
    }
}

void pipeline_record(gateway *gw, const request *r, int http_status) {
    pipeline_view *v = view_of(gw);
    if (!v) return;
    v->finished++;
    if (clock_mono_us() > v->watched_until_us) return;
    recent_request *e = &v->recent[v->next];
    memset(e, 0, sizeof *e);
    v->next = (v->next + 1) % PIPELINE_RECENT;
    if (v->count < PIPELINE_RECENT) v->count++;
    snprintf(e->id, sizeof e->id, "%s", r->id);
    e->kind = r->kind;
    e->model = r->model;
    e->status = http_status;
    e->total_ms = (double)(clock_mono_us() - r->start_us) / 1000.0;
    e->finished_unix_ms = clock_unix_us() / 1000;
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++)
        if (r->step[s].state == STEP_DONE) record_stage(&e->stage[s], &r->step[s]);
}

static const char *route_of_kind(int kind) {
    return kind == REQUEST_CHAT ? "/v1/chat/completions" : kind == REQUEST_TAGS ? "/v1/tags" : "/v1/generate";
}

static const char *dtype_label(int wire) {
    static const char *const names[] = {"F32", "F16", "BF16", "I8", "U8", "I32", "I64"};
    return wire >= 0 && wire < 7 ? names[wire] : "?";
}

static cJSON *worker_json(const worker_slot *w, int64_t now_us) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "replica", w->replica_id);
    cJSON_AddNumberToObject(o, "capacity", w->capacity);
    cJSON_AddNumberToObject(o, "outstanding", w->outstanding);
    cJSON_AddNumberToObject(o, "cache_hits", (double)w->cache_hits);
    cJSON_AddNumberToObject(o, "cache_misses", (double)w->cache_misses);
    cJSON_AddNumberToObject(o, "last_seen_ms", (double)(now_us - w->last_seen_us) / 1000.0);
    return o;
}

/* One stage of one model: its queue, its workers and, over the time since the last poll, the
 * fraction of its replicas' time spent on jobs (the workers' own hop times, as in /metrics). */
static cJSON *stage_json(pipeline_view *v, const model_pool *p, double elapsed_s, int64_t now_us) {
    const int s = model_pool_stage(p);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", lion_stage_name(s));
    cJSON_AddStringToObject(o, "model", model_pool_name(p));
    cJSON_AddNumberToObject(o, "queue", model_pool_queued(p));
    cJSON_AddNumberToObject(o, "in_flight", model_pool_outstanding(p));
    cJSON_AddNumberToObject(o, "jobs_total", (double)p->jobs);
    const double busy_s = p->seconds.sum;
    const int replicas = p->n_workers > 0 ? p->n_workers : 1;
    double *prev = &v->prev_busy_s[p->model][s];
    double busy = elapsed_s > 0 ? (busy_s - *prev) / (elapsed_s * replicas) : 0;
    *prev = busy_s;
    cJSON_AddNumberToObject(o, "busy_fraction", busy < 0 ? 0 : busy > 1 ? 1 : busy);
    uint64_t hits = 0, misses = 0;
    model_pool_cache_counts(p, &hits, &misses);
    cJSON_AddNumberToObject(o, "cache_hits", (double)hits);
    cJSON_AddNumberToObject(o, "cache_misses", (double)misses);
    if (hits + misses) cJSON_AddNumberToObject(o, "cache_hit_rate", (double)hits / (double)(hits + misses));
    else cJSON_AddNullToObject(o, "cache_hit_rate");
    cJSON *workers = cJSON_AddArrayToObject(o, "workers");
    for (int i = 0; i < p->n_workers; i++) cJSON_AddItemToArray(workers, worker_json(&p->workers[i], now_us));
    return o;
}

static cJSON *recent_json(const gateway *gw, const recent_request *e) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", e->id);
    cJSON_AddStringToObject(o, "model", gw->cfg.models[e->model].name);
    cJSON_AddStringToObject(o, "route", route_of_kind(e->kind));
    cJSON_AddNumberToObject(o, "status", e->status);
    cJSON_AddNumberToObject(o, "total_ms", e->total_ms);
    cJSON_AddNumberToObject(o, "finished_unix_ms", (double)e->finished_unix_ms);
    cJSON *stages = cJSON_AddArrayToObject(o, "stages");
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++) {
        const recent_stage *rs = &e->stage[s];
        if (!rs->used) continue;
        cJSON *so = cJSON_CreateObject();
        cJSON_AddStringToObject(so, "stage", lion_stage_name(s));
        cJSON_AddStringToObject(so, "replica", rs->replica);
        cJSON_AddNumberToObject(so, "worker_ms", rs->worker_ms);
        if (rs->cache) cJSON_AddStringToObject(so, "cache", rs->cache == 2 ? "hit" : "miss");
        cJSON *tensors = cJSON_AddArrayToObject(so, "tensors");
        for (int k = 0; k < rs->n_tensors; k++) {
            const recent_tensor *t = &rs->tensors[k];
            cJSON *to = cJSON_CreateObject();
            cJSON_AddStringToObject(to, "name", t->name);
            cJSON_AddStringToObject(to, "dtype", dtype_label(t->dtype));
            cJSON *shape = cJSON_AddArrayToObject(to, "shape");
            for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
            cJSON_AddItemToArray(tensors, to);
        }
        cJSON_AddItemToArray(stages, so);
    }
    return o;
}

char *pipeline_render(gateway *gw, size_t *len) {
    pipeline_view *v = view_of(gw);
    if (!v) return NULL;
    const int64_t now = clock_mono_us();
    v->watched_until_us = now + (int64_t)PIPELINE_WATCH_S * 1000000;
    const double elapsed_s = (double)(now - v->prev_us) / 1e6;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model", gw->cfg.models[0].name); /* the default model */
    cJSON *models = cJSON_AddArrayToObject(root, "models");
    for (int m = 0; m < gw->cfg.n_models; m++) {
        cJSON *mo = cJSON_CreateObject();
        cJSON_AddStringToObject(mo, "name", gw->cfg.models[m].name);
        cJSON_AddStringToObject(mo, "family", family_pipeline_of(gw->cfg.models[m].family)->name);
        cJSON_AddBoolToObject(mo, "default", m == 0);
        cJSON_AddItemToArray(models, mo);
    }
    cJSON_AddNumberToObject(root, "uptime_s", (double)(now - v->started_us) / 1e6);
    cJSON_AddNumberToObject(root, "now_unix_ms", (double)(clock_unix_us() / 1000)); /* for ages, whatever the reader's clock */
    cJSON *req = cJSON_AddObjectToObject(root, "requests");
    cJSON_AddNumberToObject(req, "in_flight", gw->n_requests);
    cJSON_AddNumberToObject(req, "per_second",
                            elapsed_s > 0 ? (double)(v->finished - v->prev_finished) / elapsed_s : 0);
    cJSON_AddNumberToObject(req, "total", (double)v->finished);
    cJSON_AddNumberToObject(req, "cancelled", (double)gw->metrics.requests_cancelled);
    /* every model's stages, models in order: one model shows its stages as before */
    cJSON *stages = cJSON_AddArrayToObject(root, "stages");
    model_pool *pools[GATEWAY_MAX_MODELS * LION_STAGE_SLOTS];
    const int n = gateway_pools(gw, pools);
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(stages, stage_json(v, pools[i], elapsed_s, now));
    cJSON *recent = cJSON_AddArrayToObject(root, "recent");
    for (int k = 1; k <= v->count; k++)
        cJSON_AddItemToArray(recent, recent_json(gw, &v->recent[(v->next - k + PIPELINE_RECENT) % PIPELINE_RECENT]));
    v->prev_us = now;
    v->prev_finished = v->finished;
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (text) *len = strlen(text);
    return text;
}
