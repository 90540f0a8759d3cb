/* batch_run.c - see batch_run.h. */
#include "batch_run.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batch_check.h"
#include "batch_output.h"
#include "batch_summary.h"
#include "clock.h"

#define RETRY_BASE_MS 250
/* a gateway host that drops packets is known after this, not after --timeout-ms */
#define CONNECT_TIMEOUT_MS 10000
#define MAX_POLL_MS 100

typedef struct buffer {
    char *data;
    size_t len;
} buffer;

typedef enum slot_state {
    SLOT_IDLE,      /* no request */
    SLOT_WAITING,   /* a request waiting until retry_at_us to be sent (again) */
    SLOT_IN_FLIGHT, /* a request on the wire */
} slot_state;

typedef struct slot {
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    buffer reply;
    size_t request; /* index into the requests */
    slot_state state;
    int attempts;           /* sent so far */
    int transport_failures; /* of those, failed in transport: the backoff's exponent */
    int gateway;            /* of the attempt in flight */
    int64_t sent_at_us, retry_at_us;
} slot;

typedef struct gateway {
    const char *base;
    char url[2200]; /* base + /v1/generate */
    int fails;      /* transport failures in a row: the backoff's exponent */
    int64_t down_until_us;  /* avoided until then */
    int64_t marked_down_us; /* when fails last grew */
    long answers, transport_errors;
} gateway;

typedef struct batch_run {
    const batch_options *o;
    const batch_requests *reqs;
    unsigned char *answered; /* per request: in --out already (--resume) */
    size_t next;             /* the next request to start */
    size_t to_send, finished, resumed;
    int stopping;            /* no new request: the gateways are gone or --out failed */
    int failed_now;          /* failed in this run: for the progress line */
    batch_output out;
    CURLM *multi;
    slot *slots;
    int n_slots;
    gateway gateways[BATCH_MAX_GATEWAYS];
    int n_gateways, next_gateway;
    batch_stats stats;
    progress prog;
    uint64_t rng;
} batch_run;

/* ---------------------------------------------------------------------------------------- */
/* waits and gateways                                                                        */

static uint64_t random_next(batch_run *run) {
    /* xorshift64*: jitter only, so that the slots that failed together do not retry together */
    run->rng ^= run->rng >> 12;
    run->rng ^= run->rng << 25;
    run->rng ^= run->rng >> 27;
    return run->rng * 2685821657736338717ULL;
}

/* The k-th (from 1) wait after a transport failure: 250 ms doubled each time, capped by
 * --max-retry-wait-ms, then "equal jitter": half of it fixed, half random. */
static int64_t backoff_ms(batch_run *run, int k) {
    int64_t d = RETRY_BASE_MS;
    for (int i = 1; i < k && d < run->o->max_retry_wait_ms; i++) d *= 2;
    if (d > run->o->max_retry_wait_ms) d = run->o->max_retry_wait_ms;
    return d / 2 + (int64_t)(random_next(run) % (uint64_t)(d / 2 + 1));
}

/* The transfer failed on the way (no answer, or half of one): the gateway is restarting,
 * overloaded or gone, and the same request may well succeed later or elsewhere. A bad URL,
 * no memory or a local write error would fail the same way again. */
static int transport_retryable(CURLcode c) {
    switch (c) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_PARTIAL_FILE:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR: return 1;
    default: return 0;
    }
}

/* The next gateway not being avoided, round robin; -1 when all are. */
static int pick_gateway(batch_run *run, int64_t now) {
    for (int k = 0; k < run->n_gateways; k++) {
        int i = (run->next_gateway + k) % run->n_gateways;
        if (run->gateways[i].down_until_us <= now) {
            run->next_gateway = (i + 1) % run->n_gateways;
            return i;
        }
    }
    return -1;
}

static int64_t earliest_gateway_us(const batch_run *run) {
    int64_t t = run->gateways[0].down_until_us;
    for (int i = 1; i < run->n_gateways; i++)
        if (run->gateways[i].down_until_us < t) t = run->gateways[i].down_until_us;
    return t;
}

/* A transport failure of an attempt sent at sent_at. The in-flight requests of a gateway
 * that dies all fail at once: only an attempt sent after the gateway was last marked down
 * is news, and makes its backoff grow. */
static void gateway_failed(batch_run *run, gateway *g, int64_t sent_at, int64_t now) {
    g->transport_errors++;
    if (g->fails && sent_at < g->marked_down_us) return;
    g->fails++;
    g->marked_down_us = now;
    g->down_until_us = now + backoff_ms(run, g->fails) * 1000;
}

/* Any HTTP answer, even 503, shows the gateway is up. */
static void gateway_answered(gateway *g) {
    g->fails = 0;
    g->down_until_us = 0;
}

/* ---------------------------------------------------------------------------------------- */
/* sending                                                                                   */

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

/* Sends the slot's request to the next gateway up; when none is, it waits for the first
 * to come back (no attempt is spent on a gateway known to be down). */
static void slot_send(batch_run *run, slot *s, int64_t now) {
    int g = pick_gateway(run, now);
    if (g < 0) {
        s->retry_at_us = earliest_gateway_us(run);
        return;
    }
    free(s->reply.data);
    s->reply = (buffer){0};
    curl_easy_reset(s->easy);
    curl_easy_setopt(s->easy, CURLOPT_URL, run->gateways[g].url);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, s->body);
    curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->headers);
    curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, &s->reply);
    curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS, (long)run->o->timeout_ms);
    long connect_ms = run->o->timeout_ms < CONNECT_TIMEOUT_MS ? run->o->timeout_ms : CONNECT_TIMEOUT_MS;
    curl_easy_setopt(s->easy, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
    s->gateway = g;
    s->attempts++;
    s->sent_at_us = now;
    s->state = SLOT_IN_FLIGHT;
    curl_multi_add_handle(run->multi, s->easy);
}

/* The line of a finished request, its tallies, its drawing, the progress. */
static void record_result(batch_run *run, const batch_request *r, int http_status, int attempts, const cJSON *answer,
                          const char *error) {
    const batch_options *o = run->o;
    int pass = !error && batch_answer_matches(r, answer);
    lion_status st;
    if (error) {
        run->stats.errors++;
        fprintf(stderr, "lion-batch: request %s: %s\n", r->id, error);
    }
    if (o->check) batch_stats_check(&run->stats, r->label, pass);
    if (error || (o->check && !pass)) run->failed_now++;
    if (batch_output_answer(&run->out, r, http_status, attempts, answer, error, o->check, pass, &st) != 0) {
        fprintf(stderr, "lion-batch: %s; no new request started\n", st.msg);
        run->stats.errors++;
        run->stopping = 1;
    }
    if (!error && o->draw_dir && !strcmp(r->category, "region_level") && batch_draw_boxes(r, answer, o->draw_dir, &st))
        fprintf(stderr, "lion-batch: --draw for request %s: %s\n", r->id, st.msg);
    run->stats.requests++;
    progress_update(&run->prog, (int64_t)++run->finished, run->failed_now);
}

/* Gives an idle slot the next request not answered yet; a request whose image cannot be
 * read is finished on the spot, as an error line. */
static void slot_take_next(batch_run *run, slot *s, int64_t now) {
    while (s->state == SLOT_IDLE && !run->stopping && run->next < run->reqs->n) {
        size_t i = run->next++;
        if (run->answered[i]) continue;
        const batch_request *r = &run->reqs->items[i];
        lion_status st;
        s->body = batch_request_body(r, &st);
        if (!s->body) {
            record_result(run, r, 0, 0, NULL, st.msg);
            continue;
        }
        s->request = i;
        s->attempts = s->transport_failures = 0;
        s->state = SLOT_WAITING;
        s->retry_at_us = now;
    }
}

static void start_requests(batch_run *run, int64_t now) {
    for (int i = 0; i < run->n_slots; i++) {
        slot *s = &run->slots[i];
        slot_take_next(run, s, now);
        if (s->state == SLOT_WAITING && now >= s->retry_at_us) slot_send(run, s, now);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* answers                                                                                   */

/* Why the request failed, or "" when it did not. */
static void describe_error(const slot *s, const char *url, CURLcode result, long code, const cJSON *answer,
                           char *error, size_t size) {
    error[0] = 0;
    if (result != CURLE_OK) {
        snprintf(error, size, "%s: %s", url, curl_easy_strerror(result));
    } else if (code != 200) {
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(answer, "error");
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
        snprintf(error, size, "HTTP %ld: %s", code,
                 cJSON_IsString(msg) ? msg->valuestring : s->reply.data ? s->reply.data : "(no body)");
    } else if (!answer) {
        snprintf(error, size, "HTTP 200 with a body that is not JSON");
    }
}

/* The request is done (answered, or failed for good): its line, and the slot is free. */
static void finish_request(batch_run *run, slot *s, CURLcode result, long code) {
    const batch_request *r = &run->reqs->items[s->request];
    gateway *g = &run->gateways[s->gateway];
    cJSON *answer = s->reply.data ? cJSON_Parse(s->reply.data) : NULL;
    char error[3072];
    describe_error(s, g->url, result, code, answer, error, sizeof error);
    if (!error[0]) {
        curl_off_t us = 0;
        curl_easy_getinfo(s->easy, CURLINFO_TOTAL_TIME_T, &us);
        batch_stats_answer(&run->stats, answer, (double)us / 1000.0);
        g->answers++;
    }
    record_result(run, r, (int)code, s->attempts, error[0] ? NULL : answer, error[0] ? error : NULL);
    cJSON_Delete(answer);
    free(s->body);
    s->body = NULL;
    s->state = SLOT_IDLE;
}

static int any_gateway_up(const batch_run *run, int64_t now) {
    for (int i = 0; i < run->n_gateways; i++)
        if (run->gateways[i].down_until_us <= now) return 1;
    return 0;
}

/* One transfer ended: a retry (429/503, or a transport failure), or the request's end. */
static void handle_finished(batch_run *run, slot *s, CURLcode result) {
    long code = 0;
    curl_off_t retry_after = -1;
    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_getinfo(s->easy, CURLINFO_RETRY_AFTER, &retry_after);
    curl_multi_remove_handle(run->multi, s->easy);
    int64_t now = clock_mono_us();
    gateway *g = &run->gateways[s->gateway];
    int transport = transport_retryable(result);
    if (result == CURLE_OK) gateway_answered(g);
    if (transport) {
        gateway_failed(run, g, s->sent_at_us, now);
        s->transport_failures++;
    }
    s->state = SLOT_WAITING;
    if (result == CURLE_OK && (code == 429 || code == 503) && s->attempts <= run->o->retries) {
        /* the gateway is busy or a stage has no worker yet: wait as it says, bounded */
        int64_t wait_ms = retry_after > 0 ? (int64_t)retry_after * 1000 : 1000;
        if (wait_ms > run->o->max_retry_wait_ms) wait_ms = run->o->max_retry_wait_ms;
        s->retry_at_us = now + wait_ms * 1000;
        run->stats.busy_retries++;
        return;
    }
    if (transport && s->attempts <= run->o->retries) {
        /* at once when another gateway is up, else after the backoff */
        s->retry_at_us = now + (any_gateway_up(run, now) ? 0 : backoff_ms(run, s->transport_failures) * 1000);
        run->stats.transport_retries++;
        return;
    }
    finish_request(run, s, result, code);
    if (transport && !any_gateway_up(run, now) && !run->stopping) {
        run->stopping = 1;
        fprintf(stderr, "lion-batch: no gateway reachable after %d attempts of request %s; no new request started "
                        "(run again with --resume for the rest)\n",
                s->attempts, run->reqs->items[s->request].id);
    }
}

static void collect_finished(batch_run *run) {
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(run->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        slot *s;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
        handle_finished(run, s, m->data.result);
    }
}

/* Until the first waiting slot is due, at most MAX_POLL_MS (curl wakes up on any transfer). */
static int poll_timeout_ms(const batch_run *run, int64_t now) {
    int64_t t = MAX_POLL_MS;
    for (int i = 0; i < run->n_slots; i++) {
        const slot *s = &run->slots[i];
        if (s->state != SLOT_WAITING) continue;
        int64_t due = (s->retry_at_us - now + 999) / 1000;
        if (due < t) t = due > 0 ? due : 0;
    }
    return (int)t;
}

static int run_done(batch_run *run) {
    for (int i = 0; i < run->n_slots; i++)
        if (run->slots[i].state != SLOT_IDLE) return 0;
    while (run->next < run->reqs->n && run->answered[run->next]) run->next++;
    return run->stopping || run->next == run->reqs->n;
}

/* ---------------------------------------------------------------------------------------- */
/* the run                                                                                   */

/* --resume: an id answered in an earlier run is not sent again; its answer still counts
 * in --check's tally, judged against this run's requests. */
static void resume_answered(void *ctx, const char *id, const cJSON *line) {
    batch_run *run = ctx;
    long i = batch_requests_find(run->reqs, id);
    if (i < 0 || run->answered[i]) return;
    run->answered[i] = 1;
    run->resumed++;
    const batch_request *r = &run->reqs->items[i];
    if (run->o->check) batch_stats_check(&run->stats, r->label, batch_answer_matches(r, line));
}

static int open_output(batch_run *run, lion_status *st) {
    const batch_options *o = run->o;
    if (o->resume) {
        batch_resume_stats rs;
        if (batch_output_resume(o->out, resume_answered, run, &rs, st) != 0) return -1;
        fprintf(stderr,
                "lion-batch: --resume %s: %zu of %zu requests answered already; dropped: %zu error lines, %zu "
                "duplicates, %zu broken lines, %d torn last line%s\n",
                o->out, run->resumed, run->reqs->n, rs.errors, rs.duplicates, rs.broken, rs.torn,
                rs.rewritten ? " (file rewritten)" : "");
        if (rs.answered > run->resumed)
            fprintf(stderr, "lion-batch: --resume %s: %zu answered ids are not among the requests (lines kept)\n",
                    o->out, rs.answered - run->resumed);
    }
    return batch_output_open(&run->out, o->out, o->resume, st);
}

/* A reason the run cannot start, on stderr: -1. */
static int cannot_start(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int cannot_start(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("lion-batch: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return -1;
}

static int run_open(batch_run *run, const batch_options *o, const batch_requests *reqs) {
    memset(run, 0, sizeof *run);
    run->o = o;
    run->reqs = reqs;
    run->out.fd = -1;
    run->rng = (uint64_t)clock_unix_us() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ULL;
    batch_stats_init(&run->stats);
    run->answered = calloc(reqs->n ? reqs->n : 1, 1);
    lion_status st;
    if (!run->answered) return cannot_start("no memory");
    if (o->draw_dir && mkdir(o->draw_dir, 0777) != 0 && errno != EEXIST)
        return cannot_start("--draw %s: %s", o->draw_dir, strerror(errno));
    if (open_output(run, &st) != 0) return cannot_start("%s", st.msg);
    run->to_send = reqs->n - run->resumed;
    run->n_gateways = o->n_gateways;
    for (int i = 0; i < o->n_gateways; i++) {
        run->gateways[i].base = o->gateways[i];
        snprintf(run->gateways[i].url, sizeof run->gateways[i].url, "%s/v1/generate", o->gateways[i]);
    }
    run->multi = curl_multi_init();
    run->n_slots = (size_t)o->concurrency < run->to_send ? o->concurrency : (int)run->to_send;
    run->slots = calloc(run->n_slots ? (size_t)run->n_slots : 1, sizeof *run->slots);
    if (!run->multi || !run->slots) return cannot_start("no memory");
    for (int i = 0; i < run->n_slots; i++) {
        slot *s = &run->slots[i];
        s->easy = curl_easy_init();
        s->headers = curl_slist_append(NULL, "Content-Type: application/json");
        /* no "Expect: 100-continue" round trip for bodies over 1 KiB */
        s->headers = curl_slist_append(s->headers, "Expect:");
        if (o->authorization) s->headers = curl_slist_append(s->headers, o->authorization);
        if (!s->easy || !s->headers) return cannot_start("no memory");
    }
    return 0;
}

/* The per-gateway lines, when there is more than one or one failed. */
static void report_gateways(const batch_run *run) {
    int show = run->n_gateways > 1;
    for (int i = 0; i < run->n_gateways; i++) show |= run->gateways[i].transport_errors > 0;
    for (int i = 0; show && i < run->n_gateways; i++)
        fprintf(stderr, "lion-batch: gateway %s: %ld answers, %ld transport errors\n", run->gateways[i].base,
                run->gateways[i].answers, run->gateways[i].transport_errors);
}

/* The summary; the exit status. */
static int report(batch_run *run) {
    progress_finish(&run->prog);
    batch_stats_print(stderr, &run->stats, run->o->check);
    report_gateways(run);
    size_t unsent = run->to_send - run->finished;
    if (unsent) fprintf(stderr, "lion-batch: %zu requests not sent\n", unsent);
    lion_status st;
    if (batch_output_close(&run->out, &st) != 0) {
        fprintf(stderr, "lion-batch: %s\n", st.msg);
        run->stats.errors++;
    }
    return run->stats.errors || unsent || (run->o->check && run->stats.failed) ? 1 : 0;
}

static void run_close(batch_run *run) {
    for (int i = 0; run->slots && i < run->n_slots; i++) {
        slot *s = &run->slots[i];
        if (s->state == SLOT_IN_FLIGHT) curl_multi_remove_handle(run->multi, s->easy);
        if (s->easy) curl_easy_cleanup(s->easy);
        curl_slist_free_all(s->headers);
        free(s->reply.data);
        free(s->body);
    }
    free(run->slots);
    if (run->multi) curl_multi_cleanup(run->multi);
    if (run->out.fd > 1) close(run->out.fd);
    free(run->answered);
    batch_stats_free(&run->stats);
}

int batch_run_all(const batch_options *o, const batch_requests *reqs) {
    batch_run run;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = 2;
    if (run_open(&run, o, reqs) == 0) {
        progress_start(&run.prog, stderr, "lion-batch", (int64_t)run.to_send, o->progress);
        while (!run_done(&run)) {
            start_requests(&run, clock_mono_us());
            int running = 0;
            curl_multi_perform(run.multi, &running);
            collect_finished(&run);
            if (!run_done(&run)) curl_multi_poll(run.multi, NULL, 0, poll_timeout_ms(&run, clock_mono_us()), NULL);
        }
        rc = report(&run);
    }
    run_close(&run);
    curl_global_cleanup();
    return rc;
}
