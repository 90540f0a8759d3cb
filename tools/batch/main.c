/* lion-batch: sends a batch of requests (a requests file, or a folder of images with one
 * instruction) to the gateways' POST /v1/generate with N in flight, writes one JSON line per
 * request, retries what a restarting or busy gateway refuses, resumes a killed run from its
 * output, with --check compares the answers with the expected ones, and ends with a summary
 * (throughput, latency, stage times). See docs/operations.md, "Batch runs".
 *
 * This file is the command line; batch_run.c the run, batch_output.c --out and --resume,
 * batch_request.c the input, batch_check.c --check and --draw, batch_summary.c the figures. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "batch_request.h"
#include "file_read.h"
#include "batch_run.h"

#define DEFAULT_GATEWAY "http://127.0.0.1:8080"

static int add_gateway(batch_options *o, const char *url, size_t len, const char *name, lion_status *st) {
    while (len && (url[len - 1] == '/' || url[len - 1] == ' ')) len--; /* base + "/v1/generate" */
    while (len && *url == ' ') url++, len--;
    if (!len) return lion_fail(st, LION_EINVAL, "%s: an empty URL", name);
    if (len > 2048) return lion_fail(st, LION_EINVAL, "%s: a URL over 2048 bytes", name);
    if (o->n_gateways == BATCH_MAX_GATEWAYS)
        return lion_fail(st, LION_EINVAL, "%s: more than %d gateways", name, BATCH_MAX_GATEWAYS);
    char *copy = strndup(url, len);
    if (!copy) return lion_fail(st, LION_ENOMEM, "%s: no memory", name);
    o->gateways[o->n_gateways++] = copy;
    return 0;
}

/* --gateway may be given several times, and each value may list several URLs: "A,B". */
static int set_gateway(const args_option *opt, void *base, const char *name, const char *text, lion_status *st) {
    for (const char *p = text;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (add_gateway(base, p, len, name, st) != 0) return -1;
        if (!comma) return 0;
        p = comma + 1;
    }
}

static int set_task(const args_option *opt, void *base, const char *name, const char *text, lion_status *st) {
    if (strcmp(text, "image_level") && strcmp(text, "region_level"))
        return lion_fail(st, LION_EINVAL, "%s is image_level or region_level, not '%s'", name, text);
    ((batch_options *)base)->task = text;
    return 0;
}

static int set_progress(const args_option *opt, void *base, const char *name, const char *text, lion_status *st) {
    static const struct {
        const char *name;
        progress_mode mode;
    } modes[] = {{"auto", PROGRESS_AUTO}, {"bar", PROGRESS_BAR}, {"plain", PROGRESS_PLAIN}, {"none", PROGRESS_QUIET}};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        if (!strcmp(text, modes[i].name)) {
            ((batch_options *)base)->progress = modes[i].mode;
            return 0;
        }
    }
    return lion_fail(st, LION_EINVAL, "%s is auto, bar, plain or none, not '%s'", name, text);
}

static const args_option batch_options_table[] = {
    {.name = "--gateway", .metavar = "URL[,URL...]", .kind = ARG_CUSTOM, .set = set_gateway,
     .help = "a gateway; several: repeat the option or separate with commas (round robin)", .deflt = DEFAULT_GATEWAY},
    {.name = "--concurrency", .metavar = "N", .kind = ARG_INT, ARGS_AT(batch_options, concurrency), .min = 1,
     .max = 1000000000, .help = "requests in flight, all gateways together (more than 1024 are 1024)"},
    {.name = "--out", .metavar = "FILE", .kind = ARG_STRING, ARGS_AT(batch_options, out),
     .help = "one JSON line per request", .deflt = "stdout"},
    {.name = "--resume", .kind = ARG_FLAG, ARGS_AT(batch_options, resume),
     .help = "keep the answers already in --out FILE, send the other requests, append"},
    {.name = "--images", .metavar = "DIR|GLOB", .kind = ARG_STRING, ARGS_AT(batch_options, images),
     .help = "instead of REQUESTS: every .jpg/.jpeg/.png of a folder or glob (id: the file name)"},
    {.name = "--instruction", .metavar = "TEXT", .kind = ARG_STRING, ARGS_AT(batch_options, instruction),
     .help = "with --images: the instruction of every image"},
    {.name = "--task", .metavar = "ROUTE", .kind = ARG_CUSTOM, .set = set_task,
     .help = "with --images: image_level or region_level", .deflt = "image_level"},
    {.name = "--model", .env = "LION_BATCH_MODEL", .metavar = "NAME", .kind = ARG_STRING, ARGS_AT(batch_options, model),
     .min = 1, .max = 256, .help = "the model of requests that name none (the gateway's default when not given)"},
    {.name = "--params", .metavar = "JSON", .kind = ARG_STRING, ARGS_AT(batch_options, params),
     .help = "fields for every request that lacks them, e.g. '{\"max_new_tokens\":16,\"num_beams\":1}'"},
    {.name = "--check", .kind = ARG_FLAG, ARGS_AT(batch_options, check),
     .help = "compare with \"expected\"; per-task accuracy, exit 1 on any failure"},
    {.name = "--draw", .metavar = "DIR", .kind = ARG_STRING, ARGS_AT(batch_options, draw_dir),
     .help = "write DIR/<id>.png of each region-level answer: answer boxes red, expected box green"},
    {.name = "--retries", .metavar = "N", .kind = ARG_INT, ARGS_AT(batch_options, retries), .min = 0,
     .max = 1000000000, .help = "retries of a request (429/503 answers, transport errors)"},
    {.name = "--max-retry-wait-ms", .metavar = "N", .kind = ARG_INT, ARGS_AT(batch_options, max_retry_wait_ms),
     .min = 0, .max = 1000000000, .help = "cap on one wait before a retry"},
    {.name = "--timeout-ms", .metavar = "N", .kind = ARG_INT, ARGS_AT(batch_options, timeout_ms), .min = 1,
     .max = 1000000000, .help = "per attempt (connecting: at most 10000 of it)"},
    {.name = "--api-key-file", .env = "LION_API_KEY_FILE", .metavar = "FILE", .kind = ARG_STRING,
     ARGS_AT(batch_options, api_key_file),
     .help = "send Authorization: Bearer KEY, KEY the file's first line (a gateway with --api-keys)"},
    {.name = "--progress", .metavar = "MODE", .kind = ARG_CUSTOM, .set = set_progress,
     .help = "auto (bar on a terminal, else lines), bar, plain, none", .deflt = "auto"},
};

static const batch_options option_defaults = {.task = "image_level", .concurrency = 4, .retries = 8,
                                              .timeout_ms = 300000, .max_retry_wait_ms = 30000,
                                              .progress = PROGRESS_AUTO};

static void usage(FILE *out) {
    fprintf(out,
            "usage: lion-batch [options] REQUESTS\n"
            "       lion-batch [options] --images DIR|GLOB --instruction TEXT [--task ROUTE] [--params JSON]\n"
            "  REQUESTS                  requests.json ({\"requests\": [...]}, tools/train/evaluate.py) or JSONL,\n"
            "                            one {\"id\",\"image\",\"instruction\",\"task\",\"tags\"?,...} per line\n");
    batch_options defaults = option_defaults;
    args_table table = ARGS_TABLE(batch_options_table, &defaults);
    args_usage(out, &table, 1);
}

static void options_free(batch_options *o) {
    for (int i = 0; i < o->n_gateways; i++) free(o->gateways[i]);
    o->n_gateways = 0;
    free(o->authorization);
    o->authorization = NULL;
}

/* The header from --api-key-file: the first line that is not empty or a "#" comment, as the
 * gateway reads its --api-keys file. From a file, not the command line, so that the key is
 * not in every `ps` listing. */
static int load_api_key(batch_options *o, lion_status *st) {
    char *text = NULL;
    size_t size = 0;
    if (file_read_all(o->api_key_file, 1 << 16, "API key file", &text, &size, st) != 0) return -1;
    char *key = NULL;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l && !key; l = strtok_r(NULL, "\n", &save)) {
        while (*l == ' ' || *l == '\t') l++;
        size_t len = strlen(l);
        while (len && (l[len - 1] == ' ' || l[len - 1] == '\t' || l[len - 1] == '\r')) l[--len] = 0;
        if (len && *l != '#') key = l;
    }
    int rc = 0;
    if (!key) {
        rc = lion_fail(st, LION_EINVAL, "%s: no API key in the file", o->api_key_file);
    } else {
        size_t n = strlen("Authorization: Bearer ") + strlen(key) + 1;
        o->authorization = malloc(n);
        if (o->authorization) snprintf(o->authorization, n, "Authorization: Bearer %s", key);
        else rc = lion_fail(st, LION_ENOMEM, "%s: no memory", o->api_key_file);
    }
    memset(text, 0, size);
    free(text);
    return rc;
}

/* The combinations the table cannot check. */
static const char *options_conflict(const batch_options *o, const args_parsed *parsed) {
    if (parsed->n_positional > 1) return "one requests file only";
    if (o->images && parsed->n_positional) return "--images or a requests file, not both";
    if (o->images && !o->instruction) return "--images needs --instruction";
    if (!o->images && (o->instruction || strcmp(o->task, "image_level")))
        return "--instruction and --task go with --images (a requests file has its own)";
    if (o->resume && !o->out) return "--resume needs --out FILE (the answers so far)";
    return NULL;
}

/* 0: run; 1: --help was printed; -1: bad options (reported). */
static int parse_options(int argc, char **argv, batch_options *o) {
    *o = option_defaults;
    args_table table = ARGS_TABLE(batch_options_table, o);
    args_parsed parsed;
    lion_status st;
    if (args_parse(&table, 1, ARGS_MAX_POSITIONAL, argc, argv, &parsed, &st) != 0) {
        fprintf(stderr, "lion-batch: %s\n", st.msg);
        return -1;
    }
    if (parsed.help) {
        usage(stdout);
        return 1;
    }
    if (!o->images && parsed.n_positional == 0) {
        usage(stderr);
        return -1;
    }
    const char *conflict = options_conflict(o, &parsed);
    if (conflict) {
        fprintf(stderr, "lion-batch: %s\n", conflict);
        return -1;
    }
    if (o->n_gateways == 0 && set_gateway(NULL, o, "--gateway", DEFAULT_GATEWAY, &st) != 0) {
        fprintf(stderr, "lion-batch: %s\n", st.msg);
        return -1;
    }
    if (o->api_key_file && load_api_key(o, &st) != 0) {
        fprintf(stderr, "lion-batch: %s\n", st.msg);
        return -1;
    }
    o->requests = parsed.n_positional ? parsed.positional[0] : NULL;
    if (o->concurrency > 1024) o->concurrency = 1024;
    return 0;
}

int main(int argc, char **argv) {
    batch_options o;
    int parsed = parse_options(argc, argv, &o);
    if (parsed != 0) {
        options_free(&o);
        return parsed > 0 ? 0 : 2;
    }
    batch_requests reqs;
    lion_status st = {0};
    int rc = o.images ? batch_requests_from_images(o.images, o.instruction, o.task, &reqs, &st)
                      : batch_requests_load(o.requests, &reqs, &st);
    if (rc == 0 && o.model && (rc = batch_requests_set_model(&reqs, o.model, &st)) != 0) batch_requests_free(&reqs);
    if (rc == 0 && o.params && (rc = batch_requests_set_params(&reqs, o.params, &st)) != 0) batch_requests_free(&reqs);
    if (rc != 0) {
        fprintf(stderr, "lion-batch: %s\n", st.msg);
        options_free(&o);
        return 2;
    }
    rc = batch_run_all(&o, &reqs);
    batch_requests_free(&reqs);
    options_free(&o);
    return rc;
}
