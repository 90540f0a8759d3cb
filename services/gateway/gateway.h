/* gateway.h - the process users talk to: HTTP in front, the stage workers behind.
 *
 * The gateway serves the HTTP API of docs/api.md on libuv, binds one ZeroMQ ROUTER per
 * stage (vision, tagger, aggregator, llm) that any number of workers of any served model
 * connect to, runs each request through its model's stages (LION: vision and tagger in
 * parallel, then aggregator, then llm; Pink: vision, then llm), and publishes every job and answer on an XPUB tap endpoint. Everything runs on one
 * thread: the libuv loop polls the ZeroMQ sockets' file descriptors. */
#ifndef LION_GATEWAY_H
#define LION_GATEWAY_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>

#include "status.h"

/* The most models one gateway serves at once (--model-name's list), and the longest name. */
#define GATEWAY_MAX_MODELS 8
#define GATEWAY_MODEL_NAME_MAX 120

/* A model family decides which stages a model's requests go through (models.c holds each
 * pipeline); its name is model.json's "family", which workers announce in their credit. */
typedef enum gateway_family { GATEWAY_FAMILY_LION = 0, GATEWAY_FAMILY_PINK, GATEWAY_FAMILIES } gateway_family;

/* One model the gateway serves: requests name it (or NAME-region), its workers announce it. */
typedef struct gateway_model {
    char name[GATEWAY_MODEL_NAME_MAX + 1];
    gateway_family family;
} gateway_model;

typedef struct gateway_config {
    const char *listen_host;  /* HTTP address (default 127.0.0.1) */
    int listen_port;          /* HTTP port (default 8080) */
    const char *stage_endpoint[5]; /* ROUTER endpoint per Lion__Stage 1..4 */
    const char *tap_endpoint; /* XPUB tap endpoint (meta/ and data/); NULL: none */
    const char *tap_meta_endpoint; /* XPUB tap endpoint of meta/ only; NULL: none */
    const char *model_name;   /* --model-name as given: NAME[=FAMILY][,NAME[=FAMILY]...] */
    gateway_model models[GATEWAY_MAX_MODELS]; /* model_name parsed by gateway_config_parse; */
    int n_models;                              /* models[0] is the default model */
    const char *web_root;     /* the page's files from this folder; NULL: the built-in copy */
    int deadline_ms;          /* per request, unless the request asks for less */
    int heartbeat_ms;         /* gateway -> worker heartbeat interval */
    int worker_timeout_ms;    /* a worker silent this long is dead */
    int max_requests;         /* requests in flight at once; beyond: 429 */
    int max_queue;            /* jobs waiting for a worker per stage; beyond: 429 */
    int max_attempts;         /* dispatches of one stage job before the request fails */
    int retry_after_s;        /* Retry-After of 429/503 answers */
    size_t max_body_bytes;    /* HTTP request body */
    size_t max_image_bytes;   /* decoded image */
    size_t max_prompt_bytes;  /* instruction; at most LION_MAX_INSTRUCTION_BYTES (protocol.h) */
    int max_tags;             /* user-given tags; at most LION_MAX_TAGS (protocol.h) */
    int idle_timeout_ms;      /* a connection with no request being answered and no bytes
                                 for this long is closed (slow or dead clients) */
    int max_connections;      /* open HTTP connections; one more is answered 503 and closed */
    int max_connections_per_client; /* from one address; one more is answered 429 and closed */
    int read_timeout_ms;      /* a request's headers and body arrive within this, else 408 */
    int job_timeout_ms;       /* a job at a worker longer than this goes to another; 0: from
                                 the stage's observed latency */
    const char *api_keys_file; /* one key per line; NULL: no keys asked for */
    int metrics_auth;         /* /metrics needs a key too */
    int allow_open;           /* no keys on a non-loopback address is what the operator wants */
    const char *curve_key;    /* the gateway's CURVE key pair (lion-keygen); NULL: no CURVE */
    const char *worker_keys;  /* workers' public keys allowed (a file, or a folder of .pub) */
    const char *tap_keys;     /* tap readers' public keys allowed (meta/ and data/) */
    const char *tap_meta_keys; /* meta-only tap readers' public keys (on tap_meta_endpoint) */
    int insecure;             /* ZeroMQ endpoints off this machine without CURVE, on purpose */
    char endpoint_storage[5][128]; /* [0]: the --listen host; [1..4]: endpoints made from --bind-base */
    int help;
    int check_config;         /* --check-config: check (gateway_config_check), say what would run, exit */
} gateway_config;

/* Defaults, then the command line (flags only: no environment variables), parsed and
 * checked by one option table (config.c, common/core/args.h); --help sets help.
 *   --listen HOST:PORT --vision EP --tagger EP --aggregator EP --llm EP
 *   --bind-base tcp://HOST:PORT (vision PORT, tagger +1, aggregator +2, llm +3; a stage
 *     given on its own keeps its endpoint)
 *   --tap EP --tap-meta EP --model-name NAME[=FAMILY][,...] --deadline-ms N --heartbeat-ms N --worker-timeout-ms N
 *   --max-requests N --max-queue N --max-attempts N --retry-after-s N
 *   --max-body-bytes N --max-image-bytes N --max-prompt-bytes N --max-tags N
 *   --idle-timeout-ms N --max-connections N --check-config --help
 * Every number has a range; a value outside it is refused naming the option
 * ("--max-tags: 65 is not in [0, 64]"). --model-name is split into models[] (the first is
 * the default; FAMILY "lion" when not given), each name checked (models.c). */
int gateway_config_parse(gateway_config *cfg, int argc, char **argv, lion_status *st);
void gateway_usage(FILE *out, const char *program);

/* What a start needs besides parsing, checked without binding or connecting anything: the
 * --listen host is an IPv4 address; every stage and tap endpoint is tcp://HOST:PORT (or
 * ipc://, inproc://) and no two are the same; --web-root is a folder; --api-keys reads (or
 * the HTTP address is loopback, or --allow-open); with --curve-key its key pair reads and is
 * private, --worker-keys (and --tap-keys with --tap) read as allow-lists; without it every
 * endpoint other machines can reach needs --insecure. main() runs it before gateway_run on
 * every start, and --check-config stops after it. On success summary (size bytes) says
 * what would run (HTTP address and keys, endpoints, CURVE); returns 0, or -1 with st naming
 * the option or the file. */
int gateway_config_check(const gateway_config *cfg, char *summary, size_t size, lion_status *st);

/* Runs until *stop becomes non-zero (checked every tick) or, when stop is NULL, until
 * SIGTERM/SIGINT. Returns 0 after a clean shutdown, -1 with st filled when it could not
 * start (a port or endpoint that cannot be bound). */
int gateway_run(const gateway_config *cfg, atomic_int *stop, lion_status *st);

#endif
