/* metrics.c - what /metrics shows, in the Prometheus text exposition format 0.0.4:
 * "# HELP" and "# TYPE" once per metric family, then its samples; histograms as
 * cumulative _bucket{le=...} lines ending with le="+Inf", then _sum and _count. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway_impl.h"

static const double bucket_bounds[METRIC_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                     0.25,  0.5,    1,     2.5,  5,     10,   30};

void histogram_observe(histogram *h, double seconds) {
    if (seconds < 0) seconds = 0;
    for (int i = 0; i < METRIC_BUCKETS; i++)
        if (seconds <= bucket_bounds[i]) {
            h->bucket[i]++;
            break;
        }
    h->count++; /* beyond the last bound it counts in +Inf only */
    h->sum += seconds;
}

void metrics_count_request(metrics *m, int route, int http_status, double seconds) {
    int k = 0;
    while (k < METRIC_STATUSES && m->status_codes[k] && m->status_codes[k] != http_status) k++;
    if (k == METRIC_STATUSES) k = METRIC_STATUSES - 1; /* more distinct statuses than slots: unlikely */
    m->status_codes[k] = http_status;
    m->requests[route][k]++;
    histogram_observe(&m->request_seconds[route], seconds);
}

void metrics_count_error(metrics *m, int lion_code) {
    if (lion_code > 0 && lion_code < 16) m->errors[lion_code]++;
}

typedef struct text {
    char *buf;
    size_t len, cap;
    int failed;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...) {
    if (t->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = 1;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap * 2 + (size_t)n + 1;
        char *b = realloc(t->buf, cap);
        if (!b) {
            t->failed = 1;
            return;
        }
        t->buf = b;
        t->cap = cap;
    }
}

static void family(text *t, const char *name, const char *type, const char *help) {
    put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* label NULL: a histogram without labels; value NULL: label holds the labels already
 * ("stage=\"llm\",model=\"m\"") */
static void put_histogram(text *t, const char *name, const char *label, const char *value, const histogram *h) {
    char labels[320] = "", bucket_sep[2] = "";
    if (label) {
        if (value) snprintf(labels, sizeof labels, "%s=\"%s\"", label, value);
        else snprintf(labels, sizeof labels, "%s", label);
        bucket_sep[0] = ',';
    }
    uint64_t cumulative = 0;
    for (int i = 0; i < METRIC_BUCKETS; i++) {
        cumulative += h->bucket[i];
        put(t, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, bucket_sep, bucket_bounds[i],
            (unsigned long long)cumulative);
    }
    put(t, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, bucket_sep, (unsigned long long)h->count);
    if (label) {
        put(t, "%s_sum{%s} %.6f\n", name, labels, h->sum);
        put(t, "%s_count{%s} %llu\n", name, labels, (unsigned long long)h->count);
    } else {
        put(t, "%s_sum %.6f\n", name, h->sum);
        put(t, "%s_count %llu\n", name, (unsigned long long)h->count);
    }
}

/* `git describe` when the build passes it (-DLION_GIT_DESCRIBE="..."), else the schema. */
static const char *build_version(void) {
#ifdef LION_GIT_DESCRIBE
    return LION_GIT_DESCRIBE;
#else
    static char schema[16];
    snprintf(schema, sizeof schema, "schema-%d", lion_proto_schema_version);
    return schema;
#endif
}

static const char *stage_of(const model_pool *p) { return lion_stage_name(model_pool_stage(p)); }

/* One gauge or counter sample per pool of a served model's pipeline. A pool's series are
 * labelled with its stage and then its model: the model label comes after the labels the
 * series had before the gateway served several models (before le, in histograms), so that
 * their prefixes stay as they were. */
#define PER_POOL(t, pools, n, name, fmt, value)                                                                    \
    for (int i_ = 0; i_ < (n); i_++) {                                                                             \
        const model_pool *p = (pools)[i_];                                                                         \
        put((t), name "{stage=\"%s\",model=\"%s\"} " fmt "\n", stage_of(p), model_pool_name(p), (value));          \
    }

/* Per-replica samples of every pool's workers: "stage=...,replica=..." then extra labels. */
static void per_replica(text *t, model_pool **pools, int n, const char *name, int cache_misses) {
    for (int i = 0; i < n; i++)
        for (int k = 0; k < pools[i]->n_workers; k++) {
            const worker_slot *w = &pools[i]->workers[k];
            put(t, "%s{stage=\"%s\",replica=\"%s\",model=\"%s\"} %llu\n", name, stage_of(pools[i]), w->replica_id,
                model_pool_name(pools[i]), (unsigned long long)(cache_misses ? w->cache_misses : w->cache_hits));
        }
}

/* The llm replicas' decoding state (continuous batching), from their heartbeats. */
static void llm_gauges(text *t, model_pool **pools, int n) {
    static const char *const names[3] = {"lion_llm_running_rows", "lion_llm_kv_bytes", "lion_llm_kv_budget_bytes"};
    static const char *const helps[3] = {
        "Decoder rows (beams of all requests) in each llm replica's running batch, from its heartbeats.",
        "Bytes of decoding state each llm replica holds, from its heartbeats.",
        "Each llm replica's --kv-budget-mb, in bytes (0: no limit)."};
    for (int g = 0; g < 3; g++) {
        family(t, names[g], "gauge", helps[g]);
        for (int i = 0; i < n; i++) {
            if (model_pool_stage(pools[i]) != LION__STAGE__LLM) continue;
            for (int k = 0; k < pools[i]->n_workers; k++) {
                const worker_slot *w = &pools[i]->workers[k];
                if (!w->decodes) continue;
                const unsigned long long v = g == 0 ? w->running_rows : g == 1 ? w->kv_bytes : w->kv_budget_bytes;
                put(t, "%s{replica=\"%s\",model=\"%s\"} %llu\n", names[g], w->replica_id, model_pool_name(pools[i]), v);
            }
        }
    }
}

char *metrics_render(gateway *gw, size_t *len) {
    metrics *m = &gw->metrics;
    text t = {malloc(4096), 0, 4096, 0};
    if (!t.buf) return NULL;
    t.buf[0] = 0;
    model_pool *pools[GATEWAY_MAX_MODELS * LION_STAGE_SLOTS];
    const int n = gateway_pools(gw, pools);
    char labels[320];
    family(&t, "lion_http_requests_total", "counter", "HTTP requests answered, by route and status.");
    for (int r = 0; r < METRIC_ROUTES; r++)
        for (int k = 0; k < METRIC_STATUSES && m->status_codes[k]; k++)
            if (m->requests[r][k])
                put(&t, "lion_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n", api_route_label(r),
                    m->status_codes[k], (unsigned long long)m->requests[r][k]);
    family(&t, "lion_errors_total", "counter", "Error answers, by error code.");
    for (int c = 1; c <= LION_EDENIED; c++)
        put(&t, "lion_errors_total{code=\"%s\"} %llu\n", lion_code_name(c), (unsigned long long)m->errors[c]);
    family(&t, "lion_request_duration_seconds", "histogram", "Time from a complete HTTP request to its answer.");
    for (int r = 0; r < METRIC_ROUTES; r++)
        if (m->request_seconds[r].count) put_histogram(&t, "lion_request_duration_seconds", "route", api_route_label(r), &m->request_seconds[r]);
    family(&t, "lion_stage_duration_seconds", "histogram", "Time a worker spent on a job (its trace hop).");
    for (int i = 0; i < n; i++) {
        snprintf(labels, sizeof labels, "stage=\"%s\",model=\"%s\"", stage_of(pools[i]), model_pool_name(pools[i]));
        put_histogram(&t, "lion_stage_duration_seconds", labels, NULL, &pools[i]->seconds);
    }
    family(&t, "lion_time_to_first_token_seconds", "histogram",
           "llm answers: from the complete HTTP request to the first generated token.");
    for (int i = 0; i < n; i++)
        if (model_pool_stage(pools[i]) == LION__STAGE__LLM)
            put_histogram(&t, "lion_time_to_first_token_seconds", "model", model_pool_name(pools[i]),
                          &pools[i]->ttft_seconds);
    family(&t, "lion_time_per_output_token_seconds", "histogram",
           "llm answers: the llm's time after the first token, per later token.");
    for (int i = 0; i < n; i++)
        if (model_pool_stage(pools[i]) == LION__STAGE__LLM)
            put_histogram(&t, "lion_time_per_output_token_seconds", "model", model_pool_name(pools[i]),
                          &pools[i]->tpot_seconds);
    llm_gauges(&t, pools, n);
    family(&t, "lion_queue_depth", "gauge", "Jobs waiting for a worker with credit.");
    PER_POOL(&t, pools, n, "lion_queue_depth", "%d", model_pool_queued(p))
    family(&t, "lion_workers", "gauge", "Live workers connected.");
    PER_POOL(&t, pools, n, "lion_workers", "%d", model_pool_live_workers(p))
    family(&t, "lion_workers_refused", "gauge",
           "Workers refused and still heartbeating: a model this gateway does not serve (or as another family, or a "
           "stage its pipeline lacks).");
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++)
        put(&t, "lion_workers_refused{stage=\"%s\"} %d\n", lion_stage_name(s), stage_pool_refused(&gw->pool[s]));
    family(&t, "lion_worker_capacity", "gauge", "Jobs the live workers take at once, together.");
    PER_POOL(&t, pools, n, "lion_worker_capacity", "%u", model_pool_capacity(p))
    family(&t, "lion_jobs_outstanding", "gauge", "Jobs sent to workers and not answered yet.");
    PER_POOL(&t, pools, n, "lion_jobs_outstanding", "%u", model_pool_outstanding(p))
    uint64_t hits[GATEWAY_MAX_MODELS * LION_STAGE_SLOTS], misses[GATEWAY_MAX_MODELS * LION_STAGE_SLOTS];
    for (int i = 0; i < n; i++) model_pool_cache_counts(pools[i], &hits[i], &misses[i]);
    family(&t, "lion_cache_hits_total", "counter", "Cache hits the workers reported (vision and tagger: the same image bytes again).");
    PER_POOL(&t, pools, n, "lion_cache_hits_total", "%llu", (unsigned long long)hits[i_])
    family(&t, "lion_cache_misses_total", "counter", "Feature-cache misses the workers reported.");
    PER_POOL(&t, pools, n, "lion_cache_misses_total", "%llu", (unsigned long long)misses[i_])
    family(&t, "lion_worker_cache_hits_total", "counter", "Cache hits of each live replica, from its heartbeats.");
    per_replica(&t, pools, n, "lion_worker_cache_hits_total", 0);
    family(&t, "lion_worker_cache_misses_total", "counter", "Cache misses of each live replica, from its heartbeats.");
    per_replica(&t, pools, n, "lion_worker_cache_misses_total", 1);
    family(&t, "lion_worker_info", "gauge",
           "Each live replica's precision (f32, bf16) and CPU kernels, from its READY/HEARTBEAT credit.");
    for (int i = 0; i < n; i++)
        for (int k = 0; k < pools[i]->n_workers; k++) {
            const worker_slot *w = &pools[i]->workers[k];
            put(&t, "lion_worker_info{stage=\"%s\",replica=\"%s\",precision=\"%s\",isa=\"%s\",model=\"%s\"} 1\n",
                stage_of(pools[i]), w->replica_id, w->precision[0] ? w->precision : "unknown",
                w->isa[0] ? w->isa : "unknown", model_pool_name(pools[i]));
        }
    family(&t, "lion_zap_denied_total", "counter", "ZeroMQ clients refused by CURVE/ZAP (key not allowed).");
    put(&t, "lion_zap_denied_total %llu\n", (unsigned long long)gw->zap.denied);
    family(&t, "lion_job_timeouts_total", "counter", "Jobs taken back from a worker past the stage's job timeout.");
    PER_POOL(&t, pools, n, "lion_job_timeouts_total", "%llu", (unsigned long long)p->job_timeouts)
    family(&t, "lion_workers_stuck", "gauge", "Workers given no new jobs until they answer (a job timed out).");
    PER_POOL(&t, pools, n, "lion_workers_stuck", "%d", model_pool_stuck_workers(p))
    family(&t, "lion_affinity_routed_total", "counter",
           "Jobs sent to the replica their image hashes to (the rest went to the least loaded one).");
    PER_POOL(&t, pools, n, "lion_affinity_routed_total", "%llu", (unsigned long long)p->affinity_routed)
    family(&t, "lion_jobs_total", "counter", "Jobs sent to workers.");
    PER_POOL(&t, pools, n, "lion_jobs_total", "%llu", (unsigned long long)p->jobs)
    family(&t, "lion_redispatches_total", "counter", "Jobs sent again (worker lost, over capacity, shutting down).");
    PER_POOL(&t, pools, n, "lion_redispatches_total", "%llu", (unsigned long long)p->redispatches)
    family(&t, "lion_late_answers_total", "counter", "Answers dropped because nobody waited for them any more.");
    PER_POOL(&t, pools, n, "lion_late_answers_total", "%llu", (unsigned long long)p->late_answers)
    family(&t, "lion_cancels_total", "counter", "CANCELs sent to workers for jobs whose request ended.");
    PER_POOL(&t, pools, n, "lion_cancels_total", "%llu", (unsigned long long)p->cancels_sent)
    family(&t, "lion_requests_cancelled_total", "counter", "Requests whose client left before the answer.");
    put(&t, "lion_requests_cancelled_total %llu\n", (unsigned long long)m->requests_cancelled);
    family(&t, "lion_requests_in_flight", "gauge", "Requests being processed.");
    put(&t, "lion_requests_in_flight %d\n", gw->n_requests);
    family(&t, "lion_http_connections", "gauge", "Open HTTP connections.");
    put(&t, "lion_http_connections %d\n", gw->n_conns);
    family(&t, "lion_http_connections_rejected_total", "counter", "Connections answered 503 over --max-connections.");
    put(&t, "lion_http_connections_rejected_total %llu\n", (unsigned long long)gw->conns_rejected);
    family(&t, "lion_http_connections_rejected_per_client_total", "counter",
           "Connections answered 429 over --max-connections-per-client.");
    put(&t, "lion_http_connections_rejected_per_client_total %llu\n", (unsigned long long)gw->conns_rejected_per_client);
    family(&t, "lion_tap_messages_total", "counter", "Jobs and answers published on the tap endpoint.");
    put(&t, "lion_tap_messages_total %llu\n", (unsigned long long)gw->tap.published);
    family(&t, "lion_build_info", "gauge", "The gateway's build: its version and the wire schema it speaks.");
    put(&t, "lion_build_info{version=\"%s\",schema=\"%d\"} 1\n", build_version(), lion_proto_schema_version);
    if (t.failed) {
        free(t.buf);
        return NULL;
    }
    *len = t.len;
    return t.buf;
}
