/* lion-batch: sends a file of requests to the gateway's POST /v1/generate with N in flight
 * (libcurl's multi interface), writes one JSON line per answer, retries 429/503 as the
 * gateway's Retry-After says, and with --check compares the answers with the expected ones.
 * See docs/operations.md, "Batch runs". */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"
#include "batch_check.h"
#include "batch_request.h"
#include "clock.h"
#include "progress.h"

typedef struct options {
    const char *gateway, *requests, *out, *draw_dir;
    int concurrency, retries, timeout_ms, max_retry_wait_ms, check;
    progress_mode progress;
} options;

typedef struct buffer {
    char *data;
    size_t len;
} buffer;

typedef struct slot {
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    buffer reply;
    size_t request; /* index into the requests */
    int attempts;
    int busy;       /* a request is in flight or waiting for its retry */
    int64_t retry_at_us; /* > 0: waiting until then to send again */
} slot;

/* Per-task accounting of --check. */
typedef struct tally {
    char label[64];
    int passed, failed;
} tally;

static int set_progress(const args_option *opt, void *base, const char *name, const char *text, lion_status *st) {
    static const struct {
        const char *name;
        progress_mode mode;
    } modes[] = {{"auto", PROGRESS_AUTO}, {"bar", PROGRESS_BAR}, {"plain", PROGRESS_PLAIN}, {"none", PROGRESS_QUIET}};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        if (!strcmp(text, modes[i].name)) {
            ((options *)base)->progress = modes[i].mode;
            return 0;
        }
    }
    return lion_fail(st, LION_EINVAL, "%s is auto, bar, plain or none, not '%s'", name, text);
}

static const args_option batch_options[] = {
    {.name = "--gateway", .metavar = "URL", .kind = ARG_STRING, ARGS_AT(options, gateway), .help = "the gateway"},
    {.name = "--concurrency", .metavar = "N", .kind = ARG_INT, ARGS_AT(options, concurrency), .min = 1,
     .max = 1000000000, .help = "requests in flight (more than 1024 are 1024)"},
    {.name = "--out", .metavar = "FILE", .kind = ARG_STRING, ARGS_AT(options, out),
     .help = "one JSON line per answer", .deflt = "stdout"},
    {.name = "--check", .kind = ARG_FLAG, ARGS_AT(options, check),
     .help = "compare with \"expected\"; per-task accuracy, exit 1 on any failure"},
    {.name = "--draw", .metavar = "DIR", .kind = ARG_STRING, ARGS_AT(options, draw_dir),
     .help = "write DIR/<id>.png of each region-level answer: answer boxes red, expected box green"},
    {.name = "--retries", .metavar = "N", .kind = ARG_INT, ARGS_AT(options, retries), .min = 0, .max = 1000000000,
     .help = "retries of a 429/503 answer"},
    {.name = "--max-retry-wait-ms", .metavar = "N", .kind = ARG_INT, ARGS_AT(options, max_retry_wait_ms), .min = 0,
     .max = 1000000000, .help = "cap on one Retry-After wait"},
    {.name = "--timeout-ms", .metavar = "N", .kind = ARG_INT, ARGS_AT(options, timeout_ms), .min = 1,
     .max = 1000000000, .help = "per attempt"},
    {.name = "--progress", .metavar = "MODE", .kind = ARG_CUSTOM, .set = set_progress,
     .help = "auto (bar on a terminal, else lines), bar, plain, none", .deflt = "auto"},
};

static const options option_defaults = {.gateway = "http://127.0.0.1:8080", .concurrency = 4, .retries = 5,
                                        .timeout_ms = 300000, .max_retry_wait_ms = 30000, .progress = PROGRESS_AUTO};

static void usage(FILE *out) {
    fprintf(out,
            "usage: lion-batch [options] REQUESTS\n"
            "  REQUESTS                  requests.json ({\"requests\": [...]}, tools/train/evaluate.py) or JSONL,\n"
            "                            one {\"id\",\"image\",\"instruction\",\"task\",\"tags\"?,...} per line\n");
    options defaults = option_defaults;
    args_table table = ARGS_TABLE(batch_options, &defaults);
    args_usage(out, &table, 1);
}

static int parse_options(int argc, char **argv, options *o) {
    *o = option_defaults;
    args_table table = ARGS_TABLE(batch_options, o);
    args_parsed parsed;
    lion_status st;
    if (args_parse(&table, 1, ARGS_MAX_POSITIONAL, argc, argv, &parsed, &st) != 0) {
        fprintf(stderr, "lion-batch: %s\n", st.msg);
        return -1;
    }
    if (parsed.help) {
        usage(stdout);
        exit(0);
    }
    if (parsed.n_positional > 1) {
        fprintf(stderr, "lion-batch: one requests file only (got '%s' and '%s')\n", parsed.positional[0],
                parsed.positional[1]);
        return -1;
    }
    if (parsed.n_positional == 0) {
        usage(stderr);
        return -1;
    }
    o->requests = parsed.positional[0];
    if (o->concurrency > 1024) o->concurrency = 1024;
    return 0;
}

static size_t on_data(char *data, size_t size, size_t n, void *user) {
    buffer *b = user;
    size_t len = size * n;
    char *d = realloc(b->data, b->len + len + 1);
    if (!d) return 0; /* curl fails the transfer: "Failed writing received data" */
    memcpy(d + b->len, data, len);
    b->data = d;
    b->len += len;
    b->data[b->len] = 0;
    return len;
}

static void slot_send(CURLM *multi, slot *s, const options *o, const char *url) {
    free(s->reply.data);
    s->reply = (buffer){0};
    curl_easy_reset(s->easy);
    curl_easy_setopt(s->easy, CURLOPT_URL, url);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, s->body);
    curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->headers);
    curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, &s->reply);
    curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS, (long)o->timeout_ms);
    curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
    s->attempts++;
    s->retry_at_us = 0;
    curl_multi_add_handle(multi, s->easy);
}

static tally *tally_for(tally *t, int *n, const char *label) {
    for (int i = 0; i < *n; i++)
        if (!strcmp(t[i].label, label)) return &t[i];
    snprintf(t[*n].label, sizeof t[*n].label, "%s", label);
    return &t[(*n)++];
}

/* One output line: the request's identity, the answer's fields (or the error), the verdict. */
static void write_answer(FILE *out, const batch_request *r, int http_status, int attempts, const cJSON *answer,
                         const char *error, int checked, int pass) {
    cJSON *line = cJSON_CreateObject();
    cJSON_AddStringToObject(line, "id", r->id);
    cJSON_AddStringToObject(line, "task", r->label);
    cJSON_AddStringToObject(line, "category", r->category);
    const cJSON *instr = cJSON_GetObjectItemCaseSensitive(r->body, "instruction");
    if (cJSON_IsString(instr)) cJSON_AddStringToObject(line, "instruction", instr->valuestring);
    cJSON_AddNumberToObject(line, "status", http_status);
    cJSON_AddNumberToObject(line, "attempts", attempts);
    static const char *const fields[] = {"request_id", "text", "boxes", "tags", "tokens", "timings_ms", NULL};
    for (int i = 0; answer && fields[i]; i++) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(answer, fields[i]);
        if (f) cJSON_AddItemToObject(line, fields[i], cJSON_Duplicate(f, 1));
    }
    if (error) cJSON_AddStringToObject(line, "error", error);
    if (r->expected) cJSON_AddStringToObject(line, "expected", r->expected);
    if (checked) cJSON_AddBoolToObject(line, "pass", pass);
    char *text = cJSON_PrintUnformatted(line);
    if (text) fprintf(out, "%s\n", text);
    fflush(out);
    free(text);
    cJSON_Delete(line);
}

int main(int argc, char **argv) {
    options o;
    if (parse_options(argc, argv, &o)) return 2;
    lion_status st = {0};
    batch_requests reqs;
    if (batch_requests_load(o.requests, &reqs, &st)) {
        fprintf(stderr, "lion-batch: %s\n", st.msg);
        return 2;
    }
    if (o.draw_dir && mkdir(o.draw_dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "lion-batch: --draw %s: %s\n", o.draw_dir, strerror(errno));
        batch_requests_free(&reqs);
        return 2;
    }
    FILE *out = o.out ? fopen(o.out, "w") : stdout;
    if (!out) {
        fprintf(stderr, "lion-batch: --out %s: %s\n", o.out, strerror(errno));
        batch_requests_free(&reqs);
        return 2;
    }
    char url[2048];
    snprintf(url, sizeof url, "%s/v1/generate", o.gateway);

    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *multi = curl_multi_init();
    int n_slots = o.concurrency < (int)reqs.n ? o.concurrency : (int)reqs.n;
    slot *slots = calloc((size_t)n_slots, sizeof *slots);
    tally *tallies = calloc(reqs.n, sizeof *tallies);
    int n_tallies = 0, passed = 0, failed = 0, errors = 0;
    for (int i = 0; i < n_slots; i++) {
        slots[i].easy = curl_easy_init();
        slots[i].headers = curl_slist_append(NULL, "Content-Type: application/json");
        /* no "Expect: 100-continue" round trip for bodies over 1 KiB */
        slots[i].headers = curl_slist_append(slots[i].headers, "Expect:");
    }
    progress prog;
    progress_start(&prog, stderr, "lion-batch", (int64_t)reqs.n, o.progress);

    size_t next = 0, finished = 0;
    while (finished < reqs.n) {
        int64_t now = clock_mono_us();
        for (int i = 0; i < n_slots; i++) {
            slot *s = &slots[i];
            if (s->busy && s->retry_at_us > 0 && now >= s->retry_at_us) slot_send(multi, s, &o, url);
            while (!s->busy && next < reqs.n) {
                const batch_request *r = &reqs.items[next];
                s->request = next++;
                s->attempts = 0;
                s->body = batch_request_body(r, &st);
                if (s->body) {
                    s->busy = 1;
                    slot_send(multi, s, &o, url);
                } else {
                    write_answer(out, r, 0, 0, NULL, st.msg, o.check, 0);
                    fprintf(stderr, "lion-batch: request %s: %s\n", r->id, st.msg);
                    errors++, failed++;
                    tally_for(tallies, &n_tallies, r->label)->failed++;
                    progress_update(&prog, (int64_t)++finished, o.check ? failed : errors);
                }
            }
        }
        int running = 0;
        curl_multi_perform(multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(multi, &left))) {
            if (m->msg != CURLMSG_DONE) continue;
            slot *s;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            CURLcode result = m->data.result;
            long code = 0;
            curl_off_t retry_after = -1;
            curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &code);
            curl_easy_getinfo(s->easy, CURLINFO_RETRY_AFTER, &retry_after);
            curl_multi_remove_handle(multi, s->easy);
            const batch_request *r = &reqs.items[s->request];
            if (result == CURLE_OK && (code == 429 || code == 503) && s->attempts <= o.retries) {
                /* the gateway is busy or a stage has no worker yet: wait as it says, bounded */
                int64_t wait_ms = retry_after > 0 ? (int64_t)retry_after * 1000 : 1000;
                if (wait_ms > o.max_retry_wait_ms) wait_ms = o.max_retry_wait_ms;
                s->retry_at_us = clock_mono_us() + wait_ms * 1000 + 1;
                continue;
            }
            cJSON *answer = s->reply.data ? cJSON_Parse(s->reply.data) : NULL;
            char error[3072] = "";
            if (result != CURLE_OK) {
                snprintf(error, sizeof error, "%s: %s", url, curl_easy_strerror(result));
            } else if (code != 200) {
                const cJSON *msg = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(answer, "error"), "message");
                snprintf(error, sizeof error, "HTTP %ld: %s", code,
                         cJSON_IsString(msg) ? msg->valuestring : s->reply.data ? s->reply.data : "(no body)");
            } else if (!answer) {
                snprintf(error, sizeof error, "HTTP 200 with a body that is not JSON");
            }
            int pass = !error[0] && batch_answer_matches(r, answer);
            if (error[0]) {
                errors++;
                fprintf(stderr, "lion-batch: request %s: %s\n", r->id, error);
            }
            if (o.check) {
                tally *t = tally_for(tallies, &n_tallies, r->label);
                if (pass) passed++, t->passed++;
                else failed++, t->failed++;
            }
            write_answer(out, r, (int)code, s->attempts, error[0] ? NULL : answer, error[0] ? error : NULL, o.check,
                         pass);
            if (!error[0] && o.draw_dir && !strcmp(r->category, "region_level") &&
                batch_draw_boxes(r, answer, o.draw_dir, &st))
                fprintf(stderr, "lion-batch: --draw for request %s: %s\n", r->id, st.msg);
            cJSON_Delete(answer);
            free(s->body);
            s->body = NULL;
            s->busy = 0;
            progress_update(&prog, (int64_t)++finished, o.check ? failed : errors);
        }
        if (finished < reqs.n) curl_multi_poll(multi, NULL, 0, 50, NULL);
    }
    progress_finish(&prog);

    if (o.check) {
        for (int i = 0; i < n_tallies; i++) {
            int n = tallies[i].passed + tallies[i].failed;
            fprintf(stderr, "%-16s %d/%d (%.0f%%)\n", tallies[i].label, tallies[i].passed, n,
                    n ? 100.0 * tallies[i].passed / n : 0.0);
        }
        fprintf(stderr, "%d passed, %d failed\n", passed, failed);
    }
    for (int i = 0; i < n_slots; i++) {
        curl_easy_cleanup(slots[i].easy);
        curl_slist_free_all(slots[i].headers);
        free(slots[i].reply.data);
        free(slots[i].body);
    }
    free(slots);
    free(tallies);
    curl_multi_cleanup(multi);
    curl_global_cleanup();
    if (out != stdout && fclose(out) != 0) {
        fprintf(stderr, "lion-batch: --out %s: cannot write\n", o.out);
        errors++;
    }
    batch_requests_free(&reqs);
    return errors || (o.check && failed) ? 1 : 0;
}
