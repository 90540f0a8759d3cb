/* config.c - the gateway's command line (gateway.h lists the flags). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "gateway.h"

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
    cfg->max_prompt_bytes = 4096;
    cfg->max_tags = 64;
    cfg->idle_timeout_ms = 60000;
    cfg->max_connections = 1024;
}

/* Endpoints PORT, PORT+1, ... for the four stages from "tcp://HOST:PORT". */
static int bind_base(gateway_config *cfg, const char *base, lion_status *st) {
    const char *colon = strrchr(base, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || strncmp(base, "tcp://", 6) != 0 || *end || port < 1 || port > 65532)
        return lion_fail(st, LION_EINVAL, "--bind-base: expected tcp://HOST:PORT, got '%s'", base);
    for (int s = 1; s <= 4; s++) {
        snprintf(cfg->endpoint_storage[s], sizeof cfg->endpoint_storage[s], "%.*s:%ld", (int)(colon - base), base,
                 port + s - 1);
        cfg->stage_endpoint[s] = cfg->endpoint_storage[s];
    }
    return 0;
}

static int parse_long(const char *flag, const char *v, long lo, long hi, long *out, lion_status *st) {
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < lo || n > hi)
        return lion_fail(st, LION_EINVAL, "%s: expected an integer from %ld to %ld, got '%s'", flag, lo, hi, v);
    *out = n;
    return 0;
}

int gateway_config_parse(gateway_config *cfg, int argc, char **argv, lion_status *st) {
    defaults(cfg);
    if (bind_base(cfg, "tcp://127.0.0.1:5551", st)) return -1;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *val = NULL;
        char flag[64];
        const char *eq = strchr(arg, '=');
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            cfg->help = 1;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0) return lion_fail(st, LION_EINVAL, "unexpected argument '%s'", arg);
        if (eq) {
            snprintf(flag, sizeof flag, "%.*s", (int)(eq - arg), arg);
            val = eq + 1;
        } else {
            snprintf(flag, sizeof flag, "%s", arg);
            if (i + 1 >= argc) return lion_fail(st, LION_EINVAL, "%s needs a value", flag);
            val = argv[++i];
        }
        long n = 0;
        int stage = lion_stage_from_name(flag + 2);
        if (stage) {
            cfg->stage_endpoint[stage] = val;
        } else if (!strcmp(flag, "--bind-base")) {
            if (bind_base(cfg, val, st)) return -1;
        } else if (!strcmp(flag, "--listen")) {
            const char *colon = strrchr(val, ':');
            if (!colon) return lion_fail(st, LION_EINVAL, "--listen: expected HOST:PORT, got '%s'", val);
            if (parse_long("--listen port", colon + 1, 0, 65535, &n, st)) return -1;
            snprintf(cfg->endpoint_storage[0], sizeof cfg->endpoint_storage[0], "%.*s", (int)(colon - val), val);
            cfg->listen_host = cfg->endpoint_storage[0];
            cfg->listen_port = (int)n;
        } else if (!strcmp(flag, "--tap")) {
            cfg->tap_endpoint = val;
        } else if (!strcmp(flag, "--model-name")) {
            if (!val[0] || strlen(val) > 120) return lion_fail(st, LION_EINVAL, "--model-name: 1 to 120 characters");
            cfg->model_name = val;
        } else {
#define INT_FLAG(name, lo, hi, field)                                                                                 \
    if (!strcmp(flag, name)) {                                                                                         \
        if (parse_long(name, val, lo, hi, &n, st)) return -1;                                                          \
        cfg->field = n;                                                                                                \
        continue;                                                                                                      \
    }
            INT_FLAG("--deadline-ms", 1, 86400000, deadline_ms)
            INT_FLAG("--heartbeat-ms", 10, 600000, heartbeat_ms)
            INT_FLAG("--worker-timeout-ms", 20, 3600000, worker_timeout_ms)
            INT_FLAG("--max-requests", 1, 1000000, max_requests)
            INT_FLAG("--max-queue", 1, 1000000, max_queue)
            INT_FLAG("--max-attempts", 1, 100, max_attempts)
            INT_FLAG("--retry-after-s", 1, 3600, retry_after_s)
            INT_FLAG("--max-body-bytes", 1024, 1L << 31, max_body_bytes)
            INT_FLAG("--max-image-bytes", 16, 1L << 31, max_image_bytes)
            INT_FLAG("--max-prompt-bytes", 1, 1L << 20, max_prompt_bytes)
            INT_FLAG("--max-tags", 0, 4096, max_tags)
            INT_FLAG("--idle-timeout-ms", 100, 86400000, idle_timeout_ms)
            INT_FLAG("--max-connections", 1, 1000000, max_connections)
#undef INT_FLAG
            return lion_fail(st, LION_EINVAL, "unknown option %s (see --help)", flag);
        }
    }
    return 0;
}

void gateway_usage(FILE *out, const char *program) {
    fprintf(out,
            "usage: %s [options]\n"
            "  --listen HOST:PORT       HTTP address (default 127.0.0.1:8080)\n"
            "  --bind-base tcp://H:P    stage endpoints P (vision), P+1 (tagger), P+2 (aggregator),\n"
            "                           P+3 (llm) (default tcp://127.0.0.1:5551)\n"
            "  --vision|--tagger|--aggregator|--llm EP   one stage's endpoint\n"
            "  --tap EP                 XPUB endpoint for message taps (default: none)\n"
            "  --model-name NAME        reported by /v1/models (default lion-flant5)\n"
            "  --deadline-ms N          per request (default 60000)\n"
            "  --heartbeat-ms N         to workers (default 1000)\n"
            "  --worker-timeout-ms N    silence before a worker is dead (default 3500)\n"
            "  --max-requests N         in flight, beyond: 429 (default 256)\n"
            "  --max-queue N            jobs waiting per stage, beyond: 429 (default 64)\n"
            "  --max-attempts N         dispatches of one job (default 3)\n"
            "  --retry-after-s N        Retry-After of 429/503 (default 1)\n"
            "  --max-body-bytes N       (default 33554432)\n"
            "  --max-image-bytes N      decoded image (default 16777216)\n"
            "  --max-prompt-bytes N     instruction (default 4096)\n"
            "  --max-tags N             user-given tags (default 64)\n"
            "  --idle-timeout-ms N      close idle or stalled connections (default 60000)\n"
            "  --max-connections N      open HTTP connections; more are answered 503 (default 1024)\n",
            program);
}
