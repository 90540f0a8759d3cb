/* gateway_impl.h - the gateway's internal state, shared by its files (not a public API).
 *
 *   gateway.c     the loop: timers, signals, start and shutdown
 *   models.c      the served models (--model-name) and each family's pipeline
 *   stage_pool.c  one ROUTER per stage, shared by every model: messages to the sender's pool
 *   model_pool.c  one model's workers at one stage: credit, queue, jobs sent, answers
 *   request.c     one request's path through the stages
 *   http_conn.c   HTTP/1.1 connections on libuv + http-parser
 *   api.c         the routes: JSON in, JSON out
 *   tap.c         the XPUB tap endpoint
 *   metrics.c     counters and histograms, Prometheus text
 *   base64.c      image payloads (nettle's decoder)
 *   multipart.c   multipart/form-data uploads */
#ifndef LION_GATEWAY_IMPL_H
#define LION_GATEWAY_IMPL_H

#include <cjson/cJSON.h>
#include <http_parser.h>
#include <stdint.h>
#include <uv.h>

#include "curve.h"
#include "envelope.h"
#include "gateway.h"
#include "protocol.h"

struct gateway;
struct request;
struct http_conn;

/* --- histograms (metrics.c; the pools keep their own) ------------------------------------- */

#define METRIC_BUCKETS 14

typedef struct histogram {
    uint64_t bucket[METRIC_BUCKETS]; /* counts per upper bound, not cumulative */
    uint64_t count;
    double sum;
} histogram;

void histogram_observe(histogram *h, double seconds);

/* --- models (models.c) ------------------------------------------------------------------ */

#define STAGE_BIT(stage) (1u << (stage))

/* What a family's requests run: the stages of a generate or chat request, and what each
 * stage's job is built from. The gateway starts a stage's job as soon as every stage in its
 * `needs` is done (or skipped: the tagger when the user gave tags). */
typedef struct family_pipeline {
    const char *name;                 /* "lion", "pink": model.json's family, the workers' credit */
    unsigned stages;                  /* STAGE_BIT of each stage it runs */
    unsigned needs[LION_STAGE_SLOTS]; /* STAGE_BITs of the stages a stage's job is built from */
    int visual_tokens_from;           /* the stage whose RESULT holds the llm's visual_tokens */
} family_pipeline;

const family_pipeline *family_pipeline_of(gateway_family family);
/* The family called name, or -1. */
int family_from_name(const char *name);
/* --model-name's list into models (at most GATEWAY_MAX_MODELS): "NAME[=FAMILY],...", names
 * of [A-Za-z0-9._:+@/-] (they become label values and JSON), each once; -1 with st naming
 * what is wrong. */
int models_parse(const char *list, gateway_model *models, int *n_models, lion_status *st);
/* The model a request names: NAME, or NAME-region (*region then 1: the region-level task);
 * -1 when this gateway serves no such model. A name served as it is wins over the suffix. */
int models_find(const gateway_config *cfg, const char *name, int *region);
/* Whether model m's pipeline has the stage. */
int model_has_stage(const gateway_config *cfg, int m, int stage);
/* "'a', 'a-region', 'b' and 'b-region'": the names requests may use, for messages. */
void models_list(const gateway_config *cfg, char *out, size_t size);
/* "a (lion, the default), b (pink)": the models and their families, for logs. */
void models_describe(const gateway_config *cfg, char *out, size_t size);

/* --- stage pools ----------------------------------------------------------------------- */

typedef struct worker_slot {
    envelope_peer peer;
    char replica_id[64];
    unsigned capacity;    /* from READY / HEARTBEAT */
    unsigned outstanding; /* jobs sent to it and not answered */
    int64_t last_seen_us; /* monotonic */
    uint64_t cache_hits, cache_misses; /* the worker's own counters, from its credit */
    uint64_t id_hash;     /* of replica_id: its place in rendezvous hashing */
    char precision[16];   /* from its credit ("f32", "bf16"); "" until reported */
    char isa[48];         /* from its credit ("avx2", ...); "" until reported */
    int stuck;            /* a job of it passed the stage's job timeout: no new jobs until it
                             answers something */
    int decodes;          /* it reports a running decode batch (the llm): the three below */
    uint32_t running_rows;
    uint64_t kv_bytes, kv_budget_bytes;
} worker_slot;

typedef enum job_state { JOB_IDLE = 0, JOB_QUEUED, JOB_SENT } job_state;

/* One stage's job of one request as the stage's pool sees it: waiting in the pool's queue,
 * or at a worker. The request owns the memory; the pool links it into its queue or its list
 * of sent jobs, and finds an answer's job there by request id and attempt. */
typedef struct stage_job {
    const char *request_id;
    void *owner; /* the request, handed back to the client's callbacks */
    job_state state;
    unsigned attempt;
    uint64_t affinity;             /* the image's hash: jobs for one image go to the same
                                      replica, whose cache holds it; 0: any replica */
    envelope_peer worker;          /* JOB_SENT: where it went */
    int64_t sent_us;               /* JOB_SENT: when (monotonic) */
    struct stage_job *prev, *next; /* in the queue (JOB_QUEUED) or the sent list (JOB_SENT) */
} stage_job;

typedef struct job_list {
    stage_job *head, *tail;
    int len;
} job_list;

/* What a pool asks of its jobs' owner (request.c); the pool knows nothing else of requests.
 * Each callback may end the request (its jobs are then cancelled, never freed under the
 * pool: requests are freed from the loop's check callback). */
typedef struct stage_pool_client {
    /* The JOB envelope and tensors (at most LION_MAX_JOB_TENSORS) of the job's attempt. */
    int (*build)(void *owner, int stage, Lion__Envelope **job, envelope_tensor *tensors, int *n, lion_status *st);
    /* The RESULT or ERROR (moved in) of the job's current attempt; the job is JOB_IDLE. */
    void (*answered)(void *owner, int stage, envelope_msg *m);
    /* The job must go again (its worker left or died, a send failed); the job is JOB_IDLE. */
    void (*lost)(void *owner, int stage, const char *why);
    /* The job cannot be done: it could not be built, or its answer was malformed. */
    void (*failed)(void *owner, int stage, const lion_status *st);
    /* A PARTIAL of the job's current attempt (m is closed by the pool); the job stays sent. */
    void (*partial)(void *owner, int stage, const envelope_msg *m);
} stage_pool_client;

struct stage_pool;

/* The workers of one model at one stage (model_pool.c): their credit, the jobs of the model's
 * requests waiting for credit, the jobs at its workers, and the pool's own counters (the
 * /metrics series with a model label). A job of one model goes only to its model's pool, so
 * a request never reaches another model's workers. */
typedef struct model_pool {
    struct stage_pool *endpoint; /* its stage's ROUTER, shared by every model */
    int model;                   /* index into cfg.models */
    worker_slot *workers;
    int n_workers, cap_workers;
    int rr;         /* where the least-loaded search starts (round robin on ties) */
    job_list queue; /* FIFO of jobs waiting for a worker with credit */
    job_list sent;  /* jobs at workers, waiting for their answers */
    double latency_ewma_s; /* of the pool's jobs, answer - send */
    uint64_t gone_cache_hits, gone_cache_misses; /* of workers that left, so totals never fall */
    histogram seconds;           /* the worker's hop per job */
    histogram ttft_seconds;      /* llm answers: time to first token */
    histogram tpot_seconds;      /* llm answers: time per output token after it */
    uint64_t jobs, redispatches, late_answers;
    uint64_t cancels_sent;       /* CANCELs sent to workers */
    uint64_t affinity_routed;    /* jobs sent to their image's replica */
    uint64_t job_timeouts;       /* jobs taken back from a stuck worker */
} model_pool;

/* A worker this gateway does not take (it announces a model the gateway does not serve, or
 * serves as another family, or a stage the model's pipeline lacks): remembered while it
 * heartbeats, so that it is logged once and counted in lion_workers_refused. */
typedef struct refused_worker {
    envelope_peer peer;
    int64_t last_seen_us; /* monotonic */
} refused_worker;

#define REFUSED_MAX 64

/* One stage's ROUTER endpoint (stage_pool.c): every served model's workers of the stage
 * connect to it, and each joins the pool of the model it announces in its credit (none: the
 * default model, models[0]). */
typedef struct stage_pool {
    struct gateway *gw;
    int stage;
    const stage_pool_client *client;
    void *router;
    uv_poll_t poll;
    int polling;
    model_pool models[GATEWAY_MAX_MODELS]; /* cfg.models' order */
    int n_models;
    refused_worker refused[REFUSED_MAX];
    int n_refused;
} stage_pool;

/* Binds the stage's ROUTER; its pools are one per cfg.models (set by gateway_config_parse). */
int stage_pool_open(stage_pool *p, struct gateway *gw, int stage, const char *endpoint,
                    const stage_pool_client *client, lion_status *st);
void stage_pool_close(stage_pool *p);
/* Receives and handles every message waiting on the router. ZMQ_FD is edge-triggered and a
 * send can consume the edge, so the loop also calls this once per iteration. */
void stage_pool_drain(stage_pool *p);
/* Heartbeats to the workers, dead workers' jobs re-dispatched, jobs past the stage's job
 * timeout taken back from their (stuck) worker and sent again, refused workers forgotten once
 * silent. */
void stage_pool_tick(stage_pool *p, int64_t now_us);
/* Says BYE to every worker (the gateway is going away). */
void stage_pool_bye(stage_pool *p);
/* Sends [peer][envelope][tensors] to w without blocking; publishes the frames on the tap
 * first when request_id is given. -1 with st (LION_EUNAVAILABLE) when the send failed. */
int stage_pool_send(stage_pool *p, const worker_slot *w, Lion__Envelope *env, envelope_tensor *tensors, int n,
                    const char *request_id, lion_status *st);
/* Refused workers still heartbeating. */
int stage_pool_refused(const stage_pool *p);

/* The pool of model m at stage s. */
#define GATEWAY_POOL(gw, m, s) (&(gw)->pool[(s)].models[(m)])
const char *model_pool_name(const model_pool *p); /* its model's name */
int model_pool_stage(const model_pool *p);

/* Sends the job now, or queues it until a worker has credit. A send that fails comes back
 * through the client's lost or failed callback, so the job may have ended on return. */
void model_pool_submit(model_pool *p, stage_job *job);
/* Takes the job out of the queue or the sent list (its request ended); a job at a worker is
 * sent CANCEL, and its answer (ERROR cancelled, or a RESULT already on its way) is then
 * counted as late and dropped. */
void model_pool_cancel(model_pool *p, stage_job *job);
/* Sends queued jobs while some worker has credit. */
void model_pool_pump(model_pool *p);
worker_slot *model_pool_find(model_pool *p, const envelope_peer *peer);
/* Adds the worker of a READY (or of a HEARTBEAT from a worker not known yet: the gateway
 * restarted), or updates its capacity; NULL when out of memory. */
worker_slot *model_pool_register(model_pool *p, const envelope_msg *m);
/* Removes w; the jobs it held go again (through the client's lost callback). */
void model_pool_remove(model_pool *p, worker_slot *w, const char *why);
/* The sent job an answer is for: same request and attempt; NULL for an answer nobody waits
 * for any more (re-dispatched, expired, cancelled). */
stage_job *model_pool_sent_job(model_pool *p, const Lion__Envelope *env);
/* A RESULT or ERROR (moved in) from w (NULL: a worker that left) for job j (NULL: late,
 * counted and dropped); decode_failed: the answer did not validate (st says why). */
void model_pool_answer(model_pool *p, worker_slot *w, stage_job *j, envelope_msg *m, int decode_failed,
                       const lion_status *st);
/* Jobs past the job timeout taken back, workers silent past --worker-timeout-ms removed. */
void model_pool_tick(model_pool *p, int64_t now_us);
/* The job timeout now: --job-timeout-ms, or JOB_TIMEOUT_FACTOR x the pool's observed
 * latency, at least JOB_TIMEOUT_MIN_MS. */
int64_t model_pool_job_timeout_us(const model_pool *p);
int model_pool_stuck_workers(const model_pool *p);
int model_pool_live_workers(const model_pool *p);
unsigned model_pool_capacity(const model_pool *p);
unsigned model_pool_outstanding(const model_pool *p);
int model_pool_queued(const model_pool *p);
/* Feature-cache hits and misses the pool's workers reported, those that left included. */
void model_pool_cache_counts(const model_pool *p, uint64_t *hits, uint64_t *misses);

/* Every pool a served model's pipeline has, models in order, each model's stages in order
 * (what /metrics and /v1/pipeline show); returns how many (at most
 * GATEWAY_MAX_MODELS * LION_STAGE_SLOTS). */
int gateway_pools(struct gateway *gw, model_pool **pools);

/* --- requests -------------------------------------------------------------------------- */

typedef enum request_kind { REQUEST_GENERATE = 0, REQUEST_CHAT, REQUEST_TAGS } request_kind;

typedef enum step_state {
    STEP_UNUSED = 0, /* not part of this request (tagger with user tags, llm for /v1/tags, a
                        stage its model's family has not) */
    STEP_WAITING,    /* needs another stage's output first */
    STEP_RUNNING,    /* in its pool: queued or at a worker (job.state says which) */
    STEP_DONE
} step_state;

typedef struct request_step {
    step_state state;
    stage_job job;
    envelope_msg result; /* the RESULT, kept for forwarding its frames and for the answer */
    double worker_ms;    /* the worker's hop (receive -> finish) */
    char replica[64];    /* the worker that answered (its trace hop) */
} request_step;

struct request;
/* How a request's end reaches its client (api.c): the answer when st is NULL, else the
 * failure with its HTTP status. Called once; the request is freed later. */
typedef void (*request_done_fn)(struct request *r, int http_status, const lion_status *st);
/* New answer text while the llm generates (streamed requests): each byte once, in order,
 * even across a re-dispatch (the new attempt's text is skipped up to what was sent). */
typedef void (*request_text_fn)(struct request *r, const char *text, size_t len);

typedef struct request {
    struct gateway *gw;
    struct request *prev, *next; /* gw->requests while in flight */
    struct request *ended_next;  /* gw->ended once ended, until freed */
    int ended;
    char id[48];
    request_kind kind;
    request_done_fn done;
    request_text_fn on_text;     /* streamed requests only */
    size_t streamed_bytes;       /* answer text given to on_text so far */
    unsigned partial_attempt;    /* the llm attempt the last PARTIAL came from */
    size_t attempt_bytes;        /* text that attempt has produced */
    int stream_begun;            /* api.c: the streamed answer's headers are out */
    int include_usage;           /* api.c: OpenAI stream_options.include_usage */
    int64_t created_s;           /* api.c: the answer's "created" */
    struct http_conn *conn;      /* the client's connection; NULL once it went away */
    Lion__Envelope *job;         /* JOB template: task (instruction, tags, generation) */
    int user_tags;               /* tags came with the request: no tagger step */
    zmq_msg_t image;             /* the encoded image, shared by the vision and tagger jobs */
    tensor image_view;
    uint64_t image_hash;         /* the affinity of its vision and tagger jobs */
    int64_t start_us, deadline_us;  /* monotonic */
    int64_t start_unix_us, deadline_unix_us;
    int model;                   /* index into cfg.models: its pools, its family's pipeline */
    request_step step[LION_STAGE_SLOTS];
} request;

/* The stage pools' view of requests (request.c). */
extern const stage_pool_client request_pool_client;

/* A new request with its image (moved in, freed by the request) and task; not started. Its
 * model is the default one (models[0]) until the caller sets r->model. */
request *request_new(struct gateway *gw, request_kind kind, unsigned char *image, size_t image_len,
                     Lion__Task *task, int deadline_ms, request_done_fn done, lion_status *st);
/* Admission (live workers of its model, queue room) and the first jobs. On a refusal the request is
 * freed at once and st says why (LION_EUNAVAILABLE: *http_status 429 or 503); once started,
 * every outcome goes through r->done. */
int request_start(request *r, int *http_status, lion_status *st);
/* Ends the request with an HTTP status and a status (r->done is told). */
void request_fail(request *r, int http_status, const lion_status *st);
/* The client left: the request ends cancelled (no answer) and the workers holding its jobs
 * are told to drop them. */
void request_cancel(request *r);
/* Frees the requests that ended since the last call (the loop's check callback). */
void request_free_ended(struct gateway *gw);
/* Expired requests answered 504. */
void request_sweep_deadlines(struct gateway *gw, int64_t now_us);

/* --- HTTP connections ------------------------------------------------------------------- */

typedef struct http_conn {
    uv_tcp_t tcp;
    uv_shutdown_t shutdown; /* gateway shutdown: answers written out, then closed */
    uv_shutdown_t linger;   /* a closing answer is out: FIN sent, the rest read and dropped */
    int lingering;
    int64_t linger_until_us;
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
    int streaming;        /* a streamed answer has begun and not ended */
    char authorization[192]; /* the request's Authorization header */
    int64_t message_begin_us; /* the current request's first byte (0: between requests) */
    char peer[64];        /* the client's address, for --max-connections-per-client */
    int probe_only;       /* over --max-connections: only /healthz and /readyz are answered */
    const char *extra_header; /* one more header line for the next answer ("Name: value") */
    int stream_status;    /* its status, counted when it ends */
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
    const char *query;     /* after the '?', "" when none */
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
/* The HTTP status that answers a lion_code. */
int http_status_of(int lion_code);
/* A streamed answer (server-sent events): the headers, then each piece as one chunk, then
 * the end, after which the connection takes its next request (or closes). */
void http_conn_stream_begin(struct http_conn *c, int status, const char *content_type);
void http_conn_stream_write(struct http_conn *c, const char *data, size_t len);
void http_conn_stream_end(struct http_conn *c);
/* Closes connections idle (or stalled mid-request) longer than --idle-timeout-ms. */
void http_server_sweep_idle(struct gateway *gw, int64_t now_us);

/* --- API ------------------------------------------------------------------------------- */

/* Handles one complete HTTP request (answers now, or later through its request). */
void api_handle(struct gateway *gw, struct http_conn *c, const http_request_view *req);
/* The JSON body (freed here) with the status; an error body in the shape both our clients
 * and OpenAI's read: {"error": {"code", "message", "type", "param"}}. */
void api_respond_json(struct http_conn *c, int status, cJSON *root, int retry_after_s);
cJSON *api_error_json(int http_status, const char *code_name, const char *message, const char *param);

/* --- answers (answer.c) ------------------------------------------------------------------ */

/* request_done_fn: the answer or the failure to the request's connection, if still there. */
void answer_done(request *r, int http_status, const lion_status *st);
/* request_text_fn: a streamed request's new text. */
void answer_stream_text(request *r, const char *text, size_t len);
/* {"error": {"code": ..., "message": ...}} with the status. */
void api_respond_error(struct gateway *gw, struct http_conn *c, int http_status, int code,
                       const char *message);

/* The route table's size, and each route's label in /metrics: api_route_of gives a path's
 * index, or API_ROUTES ("other") for a path that is no route. */
#define API_ROUTES 9
int api_route_of(const char *path);
const char *api_route_label(int route);

/* --- taps ------------------------------------------------------------------------------ */

/* One XPUB endpoint of the taps. */
typedef struct tap_socket {
    void *pub;
    uv_poll_t poll;
    int polling;
    int data_subscriptions; /* subscriptions that match data/ topics (the --tap endpoint only) */
} tap_socket;

/* Two endpoints, because one XPUB cannot safely give its subscribers different topics with
 * the libzmq we build on (tap.c says why): --tap carries meta/ and data/ to the readers of
 * --tap-keys, --tap-meta carries meta/ only, to the readers of --tap-meta-keys (and of
 * --tap-keys). */
typedef struct tap {
    tap_socket all;     /* --tap: meta/ and data/ */
    tap_socket meta;    /* --tap-meta: meta/ only */
    uint64_t published; /* jobs and answers published (meta/) */
} tap;

/* Opens endpoint (meta/ and data/) and the config's tap_meta_endpoint (meta/ only); each
 * may be NULL. */
int tap_open(tap *t, struct gateway *gw, const char *endpoint, lion_status *st);
void tap_close(tap *t);
/* Publishes a JOB (out) or answer (in): frames[0] is the envelope, frames[1..n) tensors. */
void tap_publish(tap *t, int stage, int outgoing, const char *request_id, zmq_msg_t *frames, int n);
/* Reads subscription messages (called when an XPUB is readable). */
void tap_drain(tap *t);

/* --- base64 ------------------------------------------------------------------------------ */

/* Decodes base64 (standard alphabet with '=' padding, whitespace ignored), or a data URI
 * "data:image/<type>;base64,<payload>" (other media types are refused). A malloc'd
 * buffer in *out; -1 with st naming the problem (LION_EINVAL "not valid base64 ...";
 * LION_ETOOBIG over max_bytes). */
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

#define METRIC_ROUTES (API_ROUTES + 1) /* the routes and "other" */
#define METRIC_STATUSES 16

/* The gateway's own counters; each pool keeps those of its model and stage (model_pool). */
typedef struct metrics {
    uint64_t requests[METRIC_ROUTES][METRIC_STATUSES];
    int status_codes[METRIC_STATUSES];
    uint64_t errors[16];                     /* by lion_code */
    histogram request_seconds[METRIC_ROUTES];
    uint64_t requests_cancelled;             /* the client left before its answer */
} metrics;

void metrics_count_request(metrics *m, int route, int http_status, double seconds);
void metrics_count_error(metrics *m, int lion_code);
/* The Prometheus text exposition (version 0.0.4), malloc'd. */
char *metrics_render(struct gateway *gw, size_t *len);

/* --- CURVE and ZAP (zap.c) --------------------------------------------------------------- */

typedef struct zap {
    int on;                   /* --curve-key given: every ZeroMQ endpoint is a CURVE server */
    curve_keypair server;
    curve_allowlist workers, taps, tap_meta; /* tap_meta: readers of meta/ only */
    void *rep;                /* the ZAP handler */
    uv_poll_t poll;
    int polling;
    uint64_t denied;          /* clients refused */
} zap;

/* Loads the key pair and allow-lists and starts the ZAP handler (before any endpoint binds);
 * without --curve-key, refuses endpoints off this machine unless --insecure. */
int zap_open(struct gateway *gw, lion_status *st);
/* Makes sock a CURVE server judged in domain ("workers", "taps", "taps-meta"), when CURVE
 * is on. */
int zap_secure(struct gateway *gw, void *sock, const char *domain, lion_status *st);
void zap_drain(struct gateway *gw);
void zap_reload(struct gateway *gw); /* SIGHUP: the allow-lists again */
void zap_close(struct gateway *gw);

/* --- API keys (auth.c) -------------------------------------------------------------------- */

#define API_KEY_HASH 32

typedef struct api_keys {
    uint8_t (*hashes)[API_KEY_HASH]; /* SHA-256 of each key; the keys themselves are not kept */
    int n;
} api_keys;

int api_keys_load(api_keys *k, const char *path, lion_status *st);
void api_keys_free(api_keys *k);
/* Whether an Authorization header value ("Bearer KEY") names one of the keys. */
int api_keys_check(const api_keys *k, const char *authorization);

/* --- the pipeline view (pipeline.c): GET /v1/pipeline for the web page's Watch view ---- */

/* A finished request's summary for the view; kept only while someone watches (polled in the
 * last PIPELINE_WATCH_S), so nobody watching costs the request path one comparison. */
void pipeline_record(struct gateway *gw, const request *r, int http_status);
/* The view as JSON (malloc'd): stages, workers, rates, recent requests; marks it watched. */
char *pipeline_render(struct gateway *gw, size_t *len);
void pipeline_start(struct gateway *gw); /* at start: uptime and totals count from here */
void pipeline_free(struct gateway *gw);

/* --- static files of the web page (web.c) ---------------------------------------------- */

/* Answers GET path from --web-root or from the page files built into the binary; 0 when the
 * path is no file of the page (the caller answers 404). */
int web_serve(struct gateway *gw, struct http_conn *c, const char *path);

/* --- the gateway ------------------------------------------------------------------------- */

typedef struct gateway {
    gateway_config cfg;
    uv_loop_t *loop;
    void *zctx;
    stage_pool pool[LION_STAGE_SLOTS];
    tap tap;
    uv_tcp_t listener;
    int listening;
    uv_timer_t tick;
    uv_check_t check;
    uv_signal_t sigterm, sigint, sighup;
    atomic_int *stop;
    request *requests; /* in flight */
    request *ended;    /* ended, freed from the check callback */
    http_conn *conns;
    int n_conns;
    uint64_t conns_rejected; /* over --max-connections */
    uint64_t conns_rejected_per_client; /* over --max-connections-per-client */
    int n_requests;
    uint64_t next_request;
    int64_t last_heartbeat_us;
    metrics metrics;
    struct pipeline_view *view; /* /v1/pipeline's state (pipeline.c) */
    api_keys keys;              /* empty: no key asked for */
    zap zap;
    int stopping;
} gateway;

#endif
