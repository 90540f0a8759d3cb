/* config.c - the gateway's command line: one option table (common/core/args.h) that both
 * parses and prints --help, and the checks a start makes before it binds anything (also
 * all that --check-config does). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"
#include "curve.h"
#include "gateway.h"
#include "gateway_impl.h"
#include "protocol.h"

#define DEFAULT_BIND_BASE "tcp://127.0.0.1:5551"

static void defaults(gateway_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->listen_host = "127.0.0.1";
    cfg->listen_port = 8080;
    cfg->model_name = "lion-flant5";
    cfg->deadline_ms = 60000;
    cfg->heartbeat_ms = 1000;
    cfg->worker_timeout_ms = 3500;
    cfg->max_requests = 256;
    cfg->max_queue = 64;
    cfg->max_attempts = 3;
    cfg->retry_after_s = 1;
    cfg->max_body_bytes = (size_t)32 << 20;
    cfg->max_image_bytes = (size_t)16 << 20;
    /* the most a worker takes: a larger limit here would only move the refusal to a stage */
    cfg->max_prompt_bytes = LION_MAX_INSTRUCTION_BYTES;
    cfg->max_tags = LION_MAX_TAGS;
    cfg->idle_timeout_ms = 60000;
    cfg->read_timeout_ms = 10000;
    cfg->max_connections = 1024;
    cfg->max_connections_per_client = 64;
}

/* A port number after "HOST:"; name is the option, for the message. */
static int parse_port(const char *name, const char *text, long lo, long hi, long *port, lion_status *st) {
    char *end = NULL;
    errno = 0;
    long v = (text[0] >= '0' && text[0] <= '9') ? strtol(text, &end, 10) : -1;
    if (!end || *end)
        return lion_fail(st, LION_EINVAL, "%s: port '%s' is not an integer in [%ld, %ld]", name, text, lo, hi);
    if (errno || v < lo || v > hi)
        return lion_fail(st, LION_EINVAL, "%s: port %s is not in [%ld, %ld]", name, text, lo, hi);
    *port = v;
    return 0;
}

/* Endpoints PORT, PORT+1, ... for the four stages from "tcp://HOST:PORT". A stage whose
 * endpoint was given on its own (--vision EP, pointing into argv rather than into
 * endpoint_storage) keeps it, whichever of the two options came first. */
static int set_bind_base(const args_option *opt, void *base, const char *name, const char *text, lion_status *st) {
    gateway_config *cfg = base;
    const char *colon = strrchr(text, ':');
    if (!colon || strncmp(text, "tcp://", 6) != 0)
        return lion_fail(st, LION_EINVAL, "%s: expected tcp://HOST:PORT, got '%s'", name, text);
    long port;
    if (parse_port(name, colon + 1, 1, 65535 - (LION_STAGE_LAST - LION_STAGE_FIRST), &port, st) != 0) return -1;
    int host_len = (int)(colon - text);
    if ((size_t)host_len + sizeof ":65535" > sizeof cfg->endpoint_storage[0])
        return lion_fail(st, LION_EINVAL, "%s: '%s' is longer than %zu bytes", name, text,
                         sizeof cfg->endpoint_storage[0] - sizeof ":65535");
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++) {
        if (cfg->stage_endpoint[s] && cfg->stage_endpoint[s] != cfg->endpoint_storage[s]) continue;
        snprintf(cfg->endpoint_storage[s], sizeof cfg->endpoint_storage[s], "%.*s:%ld", host_len, text,
                 port + s - LION_STAGE_FIRST);
        cfg->stage_endpoint[s] = cfg->endpoint_storage[s];
    }
    return 0;
}

/* HOST:PORT; the host is copied into endpoint_storage[0] (gateway_run expects it there). */
static int set_listen(const args_option *opt, void *base, const char *name, const char *text, lion_status *st) {
    gateway_config *cfg = base;
    const char *colon = strrchr(text, ':');
    if (!colon) return lion_fail(st, LION_EINVAL, "%s: expected HOST:PORT, got '%s'", name, text);
    long port;
    if (parse_port(name, colon + 1, 0, 65535, &port, st) != 0) return -1;
    int host_len = (int)(colon - text);
    if ((size_t)host_len >= sizeof cfg->endpoint_storage[0])
        return lion_fail(st, LION_EINVAL, "%s: host '%.*s' is longer than %zu bytes", name, host_len, text,
                         sizeof cfg->endpoint_storage[0] - 1);
    snprintf(cfg->endpoint_storage[0], sizeof cfg->endpoint_storage[0], "%.*s", host_len, text);
    cfg->listen_host = cfg->endpoint_storage[0];
    cfg->listen_port = (int)port;
    return 0;
}

/* An endpoint of one stage; the length bound only keeps a runaway argument out of logs. */
#define STAGE_OPTION(flag, stage, what)                                                                      \
    {.name = flag, .metavar = "EP", .kind = ARG_STRING, ARGS_AT(gateway_config, stage_endpoint[stage]),     \
     .min = 1, .max = 1024, .help = what " workers' ROUTER endpoint (tcp://, ipc://)"}

/* Flags only: the gateway reads no environment variables. */
static const args_option gateway_options[] = {
    {.name = "--listen", .metavar = "HOST:PORT", .kind = ARG_CUSTOM, .set = set_listen, .help = "HTTP address",
     .deflt = "127.0.0.1:8080"},
    {.name = "--bind-base", .metavar = "tcp://H:P", .kind = ARG_CUSTOM, .set = set_bind_base,
     .help = "stages on P (vision), P+1 (tagger), P+2 (aggregator), P+3 (llm)", .deflt = DEFAULT_BIND_BASE},
    STAGE_OPTION("--vision", LION__STAGE__VISION, "vision"),
    STAGE_OPTION("--tagger", LION__STAGE__TAGGER, "tagger"),
    STAGE_OPTION("--aggregator", LION__STAGE__AGGREGATOR, "aggregator"),
    STAGE_OPTION("--llm", LION__STAGE__LLM, "llm"),
    {.name = "--tap", .metavar = "EP", .kind = ARG_STRING, ARGS_AT(gateway_config, tap_endpoint), .min = 1,
     .max = 1024, .help = "XPUB endpoint of the message taps, meta/ and data/ (none without it)"},
    {.name = "--tap-meta", .metavar = "EP", .kind = ARG_STRING, ARGS_AT(gateway_config, tap_meta_endpoint), .min = 1,
     .max = 1024, .help = "XPUB endpoint of the message taps' meta/ only: no payloads (none without it)"},
    {.name = "--model-name", .metavar = "NAME[=FAMILY],...", .kind = ARG_STRING, ARGS_AT(gateway_config, model_name),
     .min = 1, .max = 120,
     .help = "the models served (the first is the default), each with its family: lion (when not given) or pink"},
    {.name = "--web-root", .metavar = "DIR", .kind = ARG_STRING, ARGS_AT(gateway_config, web_root), .min = 1,
     .max = 1024, .help = "serve the web page from DIR instead of the copy built in (while editing web/)"},
    {.name = "--deadline-ms", .metavar = "N", .kind = ARG_INT, ARGS_AT(gateway_config, deadline_ms), .min = 1,
     .max = 86400000, .help = "per request (a request may ask for less)"},
    {.name = "--heartbeat-ms", .metavar = "N", .kind = ARG_INT, ARGS_AT(gateway_config, heartbeat_ms), .min = 10,
     .max = 600000, .help = "gateway -> worker heartbeats"},
    {.name = "--worker-timeout-ms", .metavar = "N", .kind = ARG_INT, ARGS_AT(gateway_config, worker_timeout_ms),
     .min = 20, .max = 3600000, .help = "silence after which a worker is dead"},
    {.name = "--max-requests", .metavar = "N", .kind = ARG_INT, ARGS_AT(gateway_config, max_requests), .min = 1,
     .max = 1000000, .help = "requests in flight; beyond: 429"},
    {.name = "--max-queue", .metavar = "N", .kind = ARG_INT, ARGS_AT(gateway_config, max_queue), .min = 1,
     .max = 1000000, .help = "jobs waiting for credit in a first stage; beyond: 429"},
    {.name = "--max-attempts", .metavar = "N", .kind = ARG_INT, ARGS_AT(gateway_config, max_attempts), .min = 1,
     .max = 100, .help = "dispatches of one stage job before the request fails 503"},
    {.name = "--retry-after-s", .metavar = "N", .kind = ARG_INT, ARGS_AT(gateway_config, retry_after_s), .min = 1,
     .max = 3600, .help = "Retry-After of 429 and 503"},
    {.name = "--max-body-bytes", .metavar = "N", .kind = ARG_SIZE, ARGS_AT(gateway_config, max_body_bytes),
     .min = 1024, .max = 1LL << 31, .help = "HTTP request body"},
    {.name = "--max-image-bytes", .metavar = "N", .kind = ARG_SIZE, ARGS_AT(gateway_config, max_image_bytes),
     .min = 16, .max = 1LL << 31, .help = "decoded image"},
    {.name = "--max-prompt-bytes", .metavar = "N", .kind = ARG_SIZE, ARGS_AT(gateway_config, max_prompt_bytes),
     .min = 1, .max = LION_MAX_INSTRUCTION_BYTES, .help = "instruction (at most the workers' limit)"},
    {.name = "--max-tags", .metavar = "N", .kind = ARG_INT, ARGS_AT(gateway_config, max_tags), .min = 0,
     .max = LION_MAX_TAGS, .help = "user-given tags (at most the workers' limit)"},
    {.name = "--idle-timeout-ms", .metavar = "N", .kind = ARG_INT, ARGS_AT(gateway_config, idle_timeout_ms),
     .min = 100, .max = 86400000, .help = "close connections idle (or stalled mid-request) this long"},
    {.name = "--max-connections", .metavar = "N", .kind = ARG_INT, ARGS_AT(gateway_config, max_connections),
     .min = 1, .max = 1000000, .help = "open HTTP connections; one more is answered 503 (health probes still answered)"},
    {.name = "--max-connections-per-client", .metavar = "N", .kind = ARG_INT,
     ARGS_AT(gateway_config, max_connections_per_client), .min = 1, .max = 1000000,
     .help = "open HTTP connections from one client address; one more is answered 429"},
    {.name = "--job-timeout-ms", .metavar = "N", .kind = ARG_INT, ARGS_AT(gateway_config, job_timeout_ms), .min = 0,
     .max = 86400000, .deflt = "from latency",
     .help = "a job at a worker this long goes to another (0: 20x the stage's mean latency, at least 10 s)"},
    {.name = "--read-timeout-ms", .metavar = "N", .kind = ARG_INT, ARGS_AT(gateway_config, read_timeout_ms),
     .min = 100, .max = 86400000, .help = "a request's headers and body must arrive within this; else 408"},
    {.name = "--api-keys", .metavar = "FILE", .kind = ARG_STRING, ARGS_AT(gateway_config, api_keys_file), .min = 1,
     .max = 4096, .help = "API keys, one per line: requests need Authorization: Bearer KEY"},
    {.name = "--metrics-auth", .kind = ARG_FLAG, ARGS_AT(gateway_config, metrics_auth),
     .help = "/metrics needs a key too (with --api-keys)"},
    {.name = "--curve-key", .metavar = "FILE", .kind = ARG_STRING, ARGS_AT(gateway_config, curve_key), .min = 1,
     .max = 4096, .help = "CURVE on every ZeroMQ link: the gateway's key pair (lion-keygen)"},
    {.name = "--worker-keys", .metavar = "FILE|DIR", .kind = ARG_STRING, ARGS_AT(gateway_config, worker_keys), .min = 1,
     .max = 4096, .help = "public keys of the workers allowed (reloaded on SIGHUP)"},
    {.name = "--tap-keys", .metavar = "FILE|DIR", .kind = ARG_STRING, ARGS_AT(gateway_config, tap_keys), .min = 1,
     .max = 4096, .help = "public keys of the tap readers allowed, meta/ and data/ (reloaded on SIGHUP)"},
    {.name = "--tap-meta-keys", .metavar = "FILE|DIR", .kind = ARG_STRING, ARGS_AT(gateway_config, tap_meta_keys),
     .min = 1, .max = 4096, .help = "public keys of the readers allowed meta/ only, on --tap-meta (reloaded on SIGHUP)"},
    {.name = "--insecure", .kind = ARG_FLAG, ARGS_AT(gateway_config, insecure),
     .help = "ZeroMQ endpoints off this machine without CURVE (anyone who reaches them may take jobs)"},
    {.name = "--allow-open", .kind = ARG_FLAG, ARGS_AT(gateway_config, allow_open),
     .help = "serve without --api-keys on an address other than loopback (anyone who reaches it may use it)"},
    {.name = "--check-config", .kind = ARG_FLAG, ARGS_AT(gateway_config, check_config),
     .help = "check the options and key files as a start would, print what would run, exit (binds nothing)"},
};

static int defaults_with_endpoints(gateway_config *cfg, lion_status *st) {
    defaults(cfg);
    return set_bind_base(NULL, cfg, "--bind-base", DEFAULT_BIND_BASE, st);
}

int gateway_config_parse(gateway_config *cfg, int argc, char **argv, lion_status *st) {
    if (defaults_with_endpoints(cfg, st) != 0) return -1;
    args_table table = ARGS_TABLE(gateway_options, cfg);
    args_parsed parsed;
    if (args_parse(&table, 1, 0, argc, argv, &parsed, st) != 0) return -1;
    cfg->help = parsed.help;
    return models_parse(cfg->model_name, cfg->models, &cfg->n_models, st);
}

void gateway_usage(FILE *out, const char *program) {
    gateway_config d;
    lion_status st;
    defaults_with_endpoints(&d, &st);
    args_table table = ARGS_TABLE(gateway_options, &d);
    fprintf(out, "usage: %s [options]\n", program);
    args_usage(out, &table, 1);
}

/* --- the checks of a start ------------------------------------------------------------------ */

/* The option that set a stage's endpoint, for messages. */
static const char *endpoint_option(int stage) {
    static const char *const names[LION_STAGE_SLOTS] = {
        [LION__STAGE__VISION] = "--vision (or --bind-base)", [LION__STAGE__TAGGER] = "--tagger (or --bind-base)",
        [LION__STAGE__AGGREGATOR] = "--aggregator (or --bind-base)", [LION__STAGE__LLM] = "--llm (or --bind-base)"};
    return names[stage];
}

/* What zmq_bind takes: tcp://HOST:PORT (PORT a number or *), ipc://PATH, inproc://NAME. */
static int check_endpoint(const char *option, const char *ep, lion_status *st) {
    if ((!strncmp(ep, "ipc://", 6) && ep[6]) || (!strncmp(ep, "inproc://", 9) && ep[9])) return 0;
    if (strncmp(ep, "tcp://", 6) != 0)
        return lion_fail(st, LION_EINVAL, "%s: '%s' is not a ZeroMQ endpoint (tcp://HOST:PORT, ipc://PATH)", option,
                         ep);
    const char *colon = strrchr(ep + 6, ':');
    if (!colon || colon == ep + 6) return lion_fail(st, LION_EINVAL, "%s: '%s' has no HOST:PORT", option, ep);
    long port;
    if (strcmp(colon + 1, "*") != 0 && parse_port(option, colon + 1, 0, 65535, &port, st) != 0) return -1;
    return 0;
}

/* Every endpoint well formed and none bound twice (the second bind would fail at start). */
static int check_endpoints(const gateway_config *cfg, lion_status *st) {
    const char *eps[LION_STAGE_SLOTS + 1] = {0}, *opts[LION_STAGE_SLOTS + 1] = {0};
    int n = 0;
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++) {
        opts[n] = endpoint_option(s);
        eps[n++] = cfg->stage_endpoint[s];
    }
    if (cfg->tap_endpoint) opts[n] = "--tap", eps[n++] = cfg->tap_endpoint;
    for (int i = 0; i < n; i++) {
        if (check_endpoint(opts[i], eps[i], st) != 0) return -1;
        for (int k = 0; k < i; k++)
            if (!strcmp(eps[i], eps[k]))
                return lion_fail(st, LION_EINVAL, "%s: %s is already the endpoint of %s", opts[i], eps[i], opts[k]);
    }
    return 0;
}

/* Loopback as gateway.c judges it: there the API may run without keys. (gateway.c keeps its
 * own copy of this rule, and zap.c of the CURVE one below, applied again when they open: a
 * start checks here first, so the two can only disagree by refusing twice.) */
static int listen_is_loopback(const char *host) {
    return !strncmp(host, "127.", 4) || !strcmp(host, "::1") || !strcmp(host, "localhost");
}

/* The HTTP side: an address libuv can bind, and API keys unless loopback or --allow-open. */
static int check_http(const gateway_config *cfg, char *what, size_t size, lion_status *st) {
    struct in_addr addr;
    if (inet_pton(AF_INET, cfg->listen_host, &addr) != 1)
        return lion_fail(st, LION_EINVAL, "--listen: '%s' is not an IPv4 address", cfg->listen_host);
    if (cfg->web_root) {
        struct stat sb;
        if (stat(cfg->web_root, &sb) != 0)
            return lion_fail(st, LION_EINVAL, "--web-root %s: %s", cfg->web_root, strerror(errno));
        if (!S_ISDIR(sb.st_mode)) return lion_fail(st, LION_EINVAL, "--web-root %s: not a folder", cfg->web_root);
    }
    if (cfg->api_keys_file) {
        api_keys keys;
        if (api_keys_load(&keys, cfg->api_keys_file, st) != 0) return lion_fail_prefix(st, "--api-keys: ");
        snprintf(what, size, "HTTP %s:%d with %d API key%s from %s (/metrics %s)", cfg->listen_host, cfg->listen_port,
                 keys.n, keys.n == 1 ? "" : "s", cfg->api_keys_file, cfg->metrics_auth ? "needs a key too" : "open");
        api_keys_free(&keys);
        return 0;
    }
    if (listen_is_loopback(cfg->listen_host)) {
        snprintf(what, size, "HTTP %s:%d on loopback without API keys", cfg->listen_host, cfg->listen_port);
        return 0;
    }
    if (!cfg->allow_open)
        return lion_fail(st, LION_EINVAL,
                         "listening on %s without --api-keys: anyone who reaches it could use it; give --api-keys FILE "
                         "(or --allow-open to serve it open on purpose)",
                         cfg->listen_host);
    snprintf(what, size, "HTTP %s:%d OPEN without API keys (--allow-open)", cfg->listen_host, cfg->listen_port);
    return 0;
}

/* The ZeroMQ side: CURVE's key pair and allow-lists read, or every endpoint local, or
 * --insecure. */
static int check_zmq(const gateway_config *cfg, char *what, size_t size, lion_status *st) {
    if (!cfg->curve_key) {
        const char *eps[LION_STAGE_SLOTS + 1] = {0};
        int n = 0, reachable = 0;
        for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++) eps[n++] = cfg->stage_endpoint[s];
        if (cfg->tap_endpoint) eps[n++] = cfg->tap_endpoint;
        for (int i = 0; i < n; i++) {
            if (curve_endpoint_is_local(eps[i])) continue;
            if (!cfg->insecure)
                return lion_fail(st, LION_EINVAL,
                                 "%s is reachable from other machines: give --curve-key and --worker-keys "
                                 "(lion-keygen), or --insecure to run it without CURVE on purpose",
                                 eps[i]);
            reachable = 1;
        }
        snprintf(what, size, "%s",
                 reachable ? "ZeroMQ INSECURE (--insecure: no CURVE on endpoints other machines reach)"
                           : "plain ZeroMQ (local endpoints only)");
        return 0;
    }
    if (!cfg->worker_keys) return lion_fail(st, LION_EINVAL, "--curve-key needs --worker-keys FILE|DIR");
    if (cfg->tap_endpoint && !cfg->tap_keys)
        return lion_fail(st, LION_EINVAL, "--curve-key with --tap needs --tap-keys FILE|DIR (the readers allowed)");
    curve_keypair server;
    int rc = curve_keypair_load(cfg->curve_key, &server, st);
    char public_key[CURVE_KEY_TEXT];
    memcpy(public_key, server.public_key, sizeof public_key);
    memset(&server, 0, sizeof server); /* read again by zap.c when the gateway opens */
    if (rc != 0) return lion_fail_prefix(st, "--curve-key: ");
    curve_allowlist workers = {0}, taps = {0};
    if (curve_allowlist_load(&workers, cfg->worker_keys, st) != 0) return lion_fail_prefix(st, "--worker-keys: ");
    if (cfg->tap_keys && curve_allowlist_load(&taps, cfg->tap_keys, st) != 0) {
        curve_allowlist_free(&workers);
        return lion_fail_prefix(st, "--tap-keys: ");
    }
    snprintf(what, size, "ZeroMQ over CURVE (gateway key %s, %d worker keys, %d tap reader keys)", public_key,
             workers.n, taps.n);
    curve_allowlist_free(&workers);
    curve_allowlist_free(&taps);
    return 0;
}

int gateway_config_check(const gateway_config *cfg, char *summary, size_t size, lion_status *st) {
    char http[4400], zmq[256], models[1200];
    if (check_endpoints(cfg, st) != 0 || check_http(cfg, http, sizeof http, st) != 0 ||
        check_zmq(cfg, zmq, sizeof zmq, st) != 0)
        return -1;
    const char *const *ep = cfg->stage_endpoint;
    models_describe(cfg, models, sizeof models);
    snprintf(summary, size, "%s; stages vision %s, tagger %s, aggregator %s, llm %s; tap %s; %s; models %s", http,
             ep[LION__STAGE__VISION], ep[LION__STAGE__TAGGER], ep[LION__STAGE__AGGREGATOR], ep[LION__STAGE__LLM],
             cfg->tap_endpoint ? cfg->tap_endpoint : "none", zmq, models);
    return 0;
}
