/* gateway_impl.h - the gateway's internal state, shared by its files (not a public API).
 *
 *   gateway.c     the loop: timers, signals, start and shutdown
 *   stage_pool.c  one ROUTER per stage: workers, credit, queue, send and receive
 *   request.c     one request's path through the stages
 *   http_conn.c   HTTP/1.1 connections on libuv + http-parser
 *   api.c         the routes: JSON in, JSON out
 *   tap.c         the XPUB tap endpoint
 *   metrics.c     counters and histograms, Prometheus text
 *   base64.c      image payloads (nettle's decoder)
 *   multipart.c   multipart/form-data uploads */
#ifndef LION_GATEWAY_IMPL_H
#define LION_GATEWAY_IMPL_H

#include <http_parser.h>
#include <stdint.h>
#include <uv.h>

#include "envelope.h"
#include "gateway.h"

#define GATEWAY_STAGES 5 /* arrays indexed by Lion__Stage (1..4); [0] unused */

struct gateway;
struct request;
struct http_conn;

/* --- stage pools ----------------------------------------------------------------------- */

typedef struct worker_slot {
    envelope_peer peer;
    char replica_id[64];
    unsigned capacity;    /* from READY / HEARTBEAT */
    unsigned outstanding; /* jobs sent to it and not answered */
    int64_t last_seen_us; /* monotonic */
    uint64_t cache_hits, cache_misses; /* the worker's own counters, from its credit */
} worker_slot;

typedef struct stage_pool {
    struct gateway *gw;
    int stage;
    void *router;
    uv_poll_t poll;
    int polling;
    worker_slot *workers;
    int n_workers, cap_workers;
    int rr;                   /* where the least-loaded search starts (round robin on ties) */
    struct request **queue;   /* FIFO of requests waiting for a worker of this stage */
    int queue_len, queue_cap;
    int draining;
    uint64_t gone_cache_hits, gone_cache_misses; /* of workers that left, so totals never fall */
} stage_pool;

int stage_pool_open(stage_pool *p, struct gateway *gw, int stage, const char *endpoint, lion_status *st);
void stage_pool_close(stage_pool *p);
/* Sends the request's job for this stage now, or queues it until a worker has credit. */
int stage_pool_submit(stage_pool *p, struct request *r, lion_status *st);
/* Drops a request from the queue (it finished or expired). */
void stage_pool_unqueue(stage_pool *p, struct request *r);
/* Receives and handles every message waiting on the router. ZMQ_FD is edge-triggered and a
 * send can consume the edge, so the loop also calls this once per iteration. */
void stage_pool_drain(stage_pool *p);
/* Heartbeats to the workers, and dead workers' jobs re-dispatched. */
void stage_pool_tick(stage_pool *p, int64_t now_us);
int stage_pool_live_workers(const stage_pool *p);
unsigned stage_pool_capacity(const stage_pool *p);
unsigned stage_pool_outstanding(const stage_pool *p);
/* Feature-cache hits and misses the stage's workers reported, those that left included. */
void stage_pool_cache_counts(const stage_pool *p, uint64_t *hits, uint64_t *misses);
/* Says BYE to every worker (the gateway is going away). */
void stage_pool_bye(stage_pool *p);

/* --- requests -------------------------------------------------------------------------- */

typedef enum request_kind { REQUEST_GENERATE = 0, REQUEST_CHAT, REQUEST_TAGS } request_kind;

typedef enum step_state {
    STEP_UNUSED = 0, /* not part of this request (tagger with user tags, llm for /v1/tags) */
    STEP_WAITING,    /* needs another stage's output first */
    STEP_QUEUED,     /* in its pool's queue */
    STEP_SENT,       /* at a worker */
    STEP_DONE
} step_state;

typedef struct request_step {
    step_state state;
    unsigned attempt;
    envelope_peer worker; /* where the current attempt went */
    envelope_msg result;  /* the RESULT, kept for forwarding its frames and for the answer */
    double worker_ms;     /* the worker's hop (receive -> finish) */
} request_step;

typedef struct request {
    struct gateway *gw;
    struct request *prev, *next; /* gw->requests */
    char id[48];
    request_kind kind;
    struct http_conn *conn;      /* NULL once the client went away */
    Lion__Envelope *job;         /* JOB template: task (instruction, tags, generation) */
    int user_tags;               /* tags came with the request: no tagger step */
    zmq_msg_t image;             /* the encoded image, shared by the vision and tagger jobs */
    tensor image_view;
    int64_t start_us, deadline_us;  /* monotonic */
    int64_t start_unix_us, deadline_unix_us;
    request_step step[GATEWAY_STAGES];
} request;

/* A new request with its image (moved in, freed by the request) and task; not started. */
request *request_new(struct gateway *gw, request_kind kind, unsigned char *image, size_t image_len,
                     Lion__Task *task, int deadline_ms, lion_status *st);
/* Admission (live workers, queue room) and the first jobs. On failure the request is
 * freed and st says why (LION_EUNAVAILABLE: *http_status 429 or 503). */
int request_start(request *r, int *http_status, lion_status *st);
/* Builds the stage's JOB envelope and tensors into *job, tensors[] (at most 16). */
int request_job(request *r, int stage, Lion__Envelope **job, envelope_tensor *tensors, int *n,
                lion_status *st);
/* A RESULT or ERROR for the request's current attempt at stage (m is moved in). */
void request_on_answer(request *r, int stage, envelope_msg *m);
/* The job at stage must go again (worker dead, BYE, over capacity, send failure). */
void request_redispatch(request *r, int stage, const char *why);
/* Fails the request with an HTTP status and a status; frees it. */
void request_fail(request *r, int http_status, const lion_status *st);
request *request_find(struct gateway *gw, const char *id);
/* Whether r is still in flight (a call may have finished and freed it). */
int request_is_live(struct gateway *gw, const request *r);
void request_free(request *r);
/* Expired requests answered 504. */
void request_sweep_deadlines(struct gateway *gw, int64_t now_us);

/* --- HTTP connections ------------------------------------------------------------------- */

typedef struct http_conn {
    uv_tcp_t tcp;
    uv_shutdown_t shutdown; /* gateway shutdown: answers written out, then closed */
    struct gateway *gw;
    struct http_conn *prev, *next; /* gw->conns */
    http_parser parser;
    char *url;
    size_t url_len;
    char *body;
    size_t body_len, body_cap;
    size_t header_bytes;
    char header_field[32];
    size_t header_field_len;
    int in_header_value;
    char content_type[128];
    int expect_continue;
    int error_status;     /* a limit broken while parsing: 413, 414, 431 */
    char error_message[160];
    int keep_alive;
    int head_only;        /* a HEAD request: answers carry headers (Content-Length) only */
    const char *allow;    /* the next answer's Allow header (a 405), then NULL */
    int busy;             /* a request is being answered: parsing waits */
    int closing;
    char *pending;        /* bytes read while busy (a pipelined next request) */
    size_t pending_len;
    struct request *req;  /* the request answering on this connection */
    int route;            /* metrics_route of the current request */
    int64_t start_us;
    int64_t last_read_us; /* monotonic: bytes arrived or an answer went out */
} http_conn;

typedef struct http_request_view {
    int method;            /* enum http_method */
    const char *path;      /* without the query string */
    const char *body;
    size_t body_len;
    const char *content_type;
} http_request_view;

int http_server_start(struct gateway *gw, lion_status *st);
void http_server_close(struct gateway *gw);
/* Writes a response; the connection then reads its next request (keep-alive) or closes.
 * retry_after_s > 0 adds Retry-After. */
void http_conn_respond(struct http_conn *c, int status, const char *content_type, const char *body,
                       size_t len, int retry_after_s);
/* Closes connections idle (or stalled mid-request) longer than --idle-timeout-ms. */
void http_server_sweep_idle(struct gateway *gw, int64_t now_us);
/* The request answering on this connection finished or was freed. */
void http_conn_detach(struct http_conn *c);

/* --- API ------------------------------------------------------------------------------- */

/* Handles one complete HTTP request (answers now, or later through the request). */
void api_handle(struct gateway *gw, struct http_conn *c, const http_request_view *req);
/* {"error": {"code": ..., "message": ...}} with the status. */
void api_respond_error(struct gateway *gw, struct http_conn *c, int http_status, int code,
                       const char *message);
/* The answer of a finished request, in its route's shape. */
void api_respond_result(request *r);
int api_http_status_of(int lion_code);

/* --- taps ------------------------------------------------------------------------------ */

typedef struct tap {
    void *pub;
    uv_poll_t poll;
    int polling;
    int data_subscriptions; /* subscriptions that match data/ topics */
    uint64_t published;     /* jobs and answers published (meta/) */
} tap;

int tap_open(tap *t, void *zctx, uv_loop_t *loop, const char *endpoint, lion_status *st);
void tap_close(tap *t);
/* Publishes a JOB (out) or answer (in): frames[0] is the envelope, frames[1..n) tensors. */
void tap_publish(tap *t, int stage, int outgoing, const char *request_id, zmq_msg_t *frames, int n);
/* Reads subscription messages (called when the XPUB is readable). */
void tap_drain(tap *t);

/* --- base64 ------------------------------------------------------------------------------ */

/* Decodes base64 (standard alphabet with '=' padding, whitespace ignored), or a data URI
 * "data:<type>;base64,<payload>". A malloc'd buffer in *out; -1 with st naming the
 * problem (LION_EINVAL "not valid base64 ..."; LION_ETOOBIG over max_bytes). */
int base64_decode_payload(const char *text, size_t len, size_t max_bytes, unsigned char **out,
                          size_t *out_len, lion_status *st);

/* --- multipart/form-data -------------------------------------------------------------------- */

typedef struct multipart_part {
    char name[64];    /* the form field */
    int is_file;      /* had a filename */
    const char *data; /* a view into the body */
    size_t len;
} multipart_part;

/* Splits a multipart/form-data body into its parts (views into body). -1 with st naming
 * what is malformed (LION_EINVAL) or more than max_parts parts (LION_ETOOBIG). */
int multipart_parse(const char *content_type, const char *body, size_t len, multipart_part *parts, int max_parts,
                    int *n_parts, lion_status *st);

/* --- metrics ----------------------------------------------------------------------------- */

#define METRIC_BUCKETS 14

typedef struct histogram {
    uint64_t bucket[METRIC_BUCKETS]; /* counts per upper bound, not cumulative */
    uint64_t count;
    double sum;
} histogram;

#define METRIC_ROUTES 8
#define METRIC_STATUSES 16

typedef struct metrics {
    uint64_t requests[METRIC_ROUTES][METRIC_STATUSES];
    int status_codes[METRIC_STATUSES];
    uint64_t errors[16];                     /* by lion_code */
    histogram request_seconds[METRIC_ROUTES];
    histogram stage_seconds[GATEWAY_STAGES]; /* the worker's hop */
    uint64_t jobs[GATEWAY_STAGES];
    uint64_t redispatches[GATEWAY_STAGES];
    uint64_t late_answers[GATEWAY_STAGES];
} metrics;

/* Route index for the metrics ("/v1/generate" ... ; everything else "other"). */
int metrics_route(const char *path);
void metrics_count_request(metrics *m, int route, int http_status, double seconds);
void metrics_count_error(metrics *m, int lion_code);
void histogram_observe(histogram *h, double seconds);
/* The Prometheus text exposition (version 0.0.4), malloc'd. */
char *metrics_render(struct gateway *gw, size_t *len);

/* --- the gateway ------------------------------------------------------------------------- */

typedef struct gateway {
    gateway_config cfg;
    uv_loop_t *loop;
    void *zctx;
    stage_pool pool[GATEWAY_STAGES];
    tap tap;
    uv_tcp_t listener;
    int listening;
    uv_timer_t tick;
    uv_check_t check;
    uv_signal_t sigterm, sigint;
    atomic_int *stop;
    request *requests; /* in flight */
    http_conn *conns;
    int n_conns;
    uint64_t conns_rejected; /* over --max-connections */
    int n_requests;
    uint64_t next_request;
    int64_t last_heartbeat_us;
    metrics metrics;
    int stopping;
} gateway;

#endif
