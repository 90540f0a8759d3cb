/* worker_config.c - the options every stage worker takes (common/core/args table), from
 * the environment and the command line, and its --help. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "precision.h"
#include "worker.h"
#include "worker_gateways.h"

static int set_gateway(const args_option *opt, void *base, const char *name, const char *text, lion_status *st) {
    /* caught here rather than at zmq_connect, after the model has been loaded */
    if (worker_gateways_check(name, text, st) != 0) return -1;
    ((worker_config *)base)->gateway = text;
    return 0;
}

/* Copied, so that a worker_config can be copied by value (worker threads in tests). */
static int set_replica(const args_option *opt, void *base, const char *name, const char *text, lion_status *st) {
    worker_config *cfg = base;
    size_t len = strlen(text);
    if (len == 0 || len >= sizeof cfg->replica_id)
        return lion_fail(st, LION_EINVAL, "%s: replica id must be 1..%zu bytes", name, sizeof cfg->replica_id - 1);
    memcpy(cfg->replica_id, text, len + 1);
    return 0;
}

static int set_precision(const args_option *opt, void *base, const char *name, const char *text,
                         lion_status *st) {
    if (precision_from_name(text, &((worker_config *)base)->precision))
        return lion_fail(st, LION_EINVAL, "%s: '%s' is not one of auto, f32, bf16", name, text);
    return 0;
}

/* The options every worker shares, each with its environment variable. */
static const args_option worker_options[] = {
    {.name = "--gateway", .env = "LION_GATEWAY", .metavar = "EP", .kind = ARG_CUSTOM, .set = set_gateway,
     .help = "the stage's gateway endpoint (tcp://HOST:PORT, ipc://PATH), or several EPs separated by commas: "
             "the worker serves every one, its capacity shared among them"},
    {.name = "--model", .env = "LION_MODEL", .metavar = "DIR", .kind = ARG_STRING, ARGS_AT(worker_config, model_dir),
     .help = "model directory (docs/model-format.md)", .deflt = WORKER_DEFAULT_MODEL},
    {.name = "--threads", .env = "LION_THREADS", .metavar = "N", .kind = ARG_INT, ARGS_AT(worker_config, threads),
     .min = 1, .max = 1024, .help = "compute threads", .deflt = "OpenMP's"},
    {.name = "--replica", .env = "LION_REPLICA", .metavar = "ID", .kind = ARG_CUSTOM, .set = set_replica,
     .help = "replica id in traces and logs", .deflt = "SERVICE-HOST-PID"},
    {.name = "--capacity", .env = "LION_CAPACITY", .metavar = "N", .kind = ARG_INT, ARGS_AT(worker_config, capacity),
     .min = 1, .max = LION_MAX_CAPACITY, .help = "jobs held at once, queued + running"},
    {.name = "--max-batch", .env = "LION_MAX_BATCH", .metavar = "N", .kind = ARG_INT,
     ARGS_AT(worker_config, max_batch), .min = 1, .max = LION_MAX_BATCH, .help = "jobs run in one forward"},
    {.name = "--heartbeat-ms", .env = "LION_HEARTBEAT_MS", .metavar = "N", .kind = ARG_INT,
     ARGS_AT(worker_config, heartbeat_ms), .min = 1, .max = 3600000, .help = "heartbeat interval"},
    {.name = "--curve-server-key", .env = "LION_CURVE_SERVER_KEY", .metavar = "FILE", .kind = ARG_STRING,
     ARGS_AT(worker_config, curve_server_key), .min = 1, .max = 4096,
     .help = "the gateway's public key (CURVE on the link); with several gateways one FILE for all, or one per "
             "gateway separated by commas, in --gateway's order"},
    {.name = "--curve-key", .env = "LION_CURVE_KEY", .metavar = "FILE", .kind = ARG_STRING,
     ARGS_AT(worker_config, curve_key), .min = 1, .max = 4096, .help = "this worker's key pair (lion-keygen)"},
    {.name = "--insecure", .kind = ARG_FLAG, ARGS_AT(worker_config, insecure),
     .help = "connect to a gateway on another machine without CURVE"},
    {.name = "--precision", .env = "LION_PRECISION", .metavar = "auto|f32|bf16", .kind = ARG_CUSTOM,
     .set = set_precision, .deflt = "auto",
     .help = "what the weight matrices are held and multiplied in: bf16 halves their memory (oneDNN where the "
             "CPU runs bf16 natively, widened to f32 elsewhere); auto = bf16 only on CPUs with native bf16"},
    {.name = "--ready-file", .env = "LION_READY_FILE", .metavar = "FILE", .kind = ARG_STRING,
     ARGS_AT(worker_config, ready_file), .min = 1, .max = 4096,
     .help = "written once the model is open, removed at exit (an exec readiness probe: test -e FILE)"},
    /* command line only: set in an environment, it would keep every start from serving */
    {.name = "--check-config", .kind = ARG_FLAG, ARGS_AT(worker_config, check_config),
     .help = "check the options, key files and model as a start would, print what would run, exit"},
};

/* SERVICE-HOST-PID. The host name matters in containers, where every replica of a stage is
 * PID 1 (or the same small PID under an init): the gateway hashes the replica id to route
 * images to caches, and equal ids would send every image to one replica. The host part is
 * cut so that the PID always fits. */
static void default_replica_id(char *out, size_t size, const char *service) {
    char host[256] = "";
    if (gethostname(host, sizeof host) != 0) host[0] = '\0';
    host[sizeof host - 1] = '\0';
    char *dot = strchr(host, '.'); /* the short name: node1, not node1.cluster.example */
    if (dot) *dot = '\0';
    char pid[24];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    int room = (int)size - 1 - (int)strlen(service) - (int)strlen(pid) - 2;
    if (!host[0] || room < 1) snprintf(out, size, "%s-%s", service, pid);
    else snprintf(out, size, "%s-%.*s-%s", service, room, host, pid);
}

static void config_defaults(worker_config *cfg, const char *service) {
    memset(cfg, 0, sizeof *cfg);
    cfg->service = service;
    /* the llm batches continuously: every job it holds can decode in the same step, so it
     * holds more (its --kv-budget-mb bounds their memory) */
    const int continuous = strcmp(service, "llm") == 0;
    cfg->capacity = continuous ? 32 : 4;
    cfg->max_batch = continuous ? 32 : 4;
    cfg->heartbeat_ms = 1000;
    default_replica_id(cfg->replica_id, sizeof cfg->replica_id, service);
}

/* The worker's table, then the service's own options when it has any. */
static int option_tables(args_table tables[2], worker_config *base, const args_table *extra) {
    tables[0] = ARGS_TABLE(worker_options, base);
    if (!extra || extra->n_options == 0) return 1;
    tables[1] = *extra;
    return 2;
}

int worker_config_parse_with(worker_config *cfg, const char *service, const args_table *extra, int argc, char **argv,
                             lion_status *st) {
    config_defaults(cfg, service);
    args_table tables[2];
    int n_tables = option_tables(tables, cfg, extra);
    args_parsed parsed;
    if (args_parse(tables, n_tables, 0, argc, argv, &parsed, st) != 0) return -1;
    cfg->help = parsed.help;
    if (cfg->help) return 0;
    if (!cfg->gateway)
        return lion_fail(st, LION_EINVAL, "no gateway endpoint: pass --gateway tcp://HOST:PORT or set LION_GATEWAY");
    if (cfg->max_batch > cfg->capacity)
        return lion_fail(st, LION_EINVAL, "--max-batch %d is larger than --capacity %d", cfg->max_batch, cfg->capacity);
    return 0;
}

int worker_config_parse(worker_config *cfg, const char *service, int argc, char **argv, lion_status *st) {
    return worker_config_parse_with(cfg, service, NULL, argc, argv, st);
}

void worker_usage(FILE *out, const char *program, const args_table *extra) {
    worker_config defaults;
    config_defaults(&defaults, "SERVICE");
    args_table tables[2];
    int n_tables = option_tables(tables, &defaults, extra);
    fprintf(out, "usage: %s [options]\n", program);
    args_usage(out, tables, n_tables);
}
