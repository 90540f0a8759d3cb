/* The gateway as a separate process with stub workers of every stage (this binary run as
 * "--stub STAGE": toy process functions on common/worker.h whose outputs show what each
 * stage received, so that an answer's text proves the whole path: image bytes -> vision ->
 * ViT frames forwarded to the aggregator -> visual tokens to the llm, tagger tags into the
 * llm's task, attempt numbers). Real HTTP over loopback: native and OpenAI answers, error
 * JSON for malformed requests, keep-alive, 429/503 with Retry-After under overload, a
 * killed llm worker's jobs answered by a second replica, /metrics as Prometheus text, and
 * a tap subscriber that sees meta/ and data/ messages. Then end to end with the real workers
 * (lion-vision, lion-tagger, lion-aggregator, lion-llm) on the tiny model of
 * tests/fixtures/gen_gateway.py: the gateway's answers are lion_ref's LionModel answers. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <nettle/base64.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <strings.h>
#include <unistd.h>

#include "clock.h"
#include "envelope.h"
#include "fake_gateway.h"
#include "gateway_impl.h"
#include "log.h"
#include "testing.h"
#include "worker.h"

extern char **environ;

/* ---------------------------------------------------------------------------------------- */
/* stub workers                                                                              */

static int stub_stage;
static int stub_delay_ms;

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int stub_output(worker_job *job, const char *name, int rows, int cols, const float *values, lion_status *st) {
    tensor t;
    int64_t shape[2] = {rows, cols};
    if (tensor_alloc(&t, DTYPE_F32, 2, shape, st)) return -1;
    memcpy(t.data, values, (size_t)rows * cols * sizeof(float));
    return worker_job_add_output(job, name, &t, st);
}

static int stub_process(void *ctx, worker_job *jobs, int n, lion_status *st) {
    if (stub_delay_ms) sleep_ms(stub_delay_ms);
    for (int j = 0; j < n; j++) {
        worker_job *job = &jobs[j];
        lion_status js;
        if (stub_stage == LION__STAGE__VISION) {
            const tensor *img = worker_job_input(job, "image", &js);
            if (!img) {
                worker_job_fail(job, js.code, "%s", js.msg);
                continue;
            }
            size_t len = (size_t)img->shape[0];
            unsigned sum = 0;
            for (size_t i = 0; i < len; i++) sum += ((const unsigned char *)img->data)[i];
            float l1[6], l2[6];
            for (int i = 0; i < 6; i++) {
                l1[i] = (float)len;
                l2[i] = (float)(sum % 997);
            }
            if (stub_output(job, "vit_layer_1", 2, 3, l1, &js) || stub_output(job, "vit_layer_2", 2, 3, l2, &js))
                worker_job_fail(job, js.code, "%s", js.msg);
        } else if (stub_stage == LION__STAGE__TAGGER) {
            if (!worker_job_input(job, "image", &js)) {
                worker_job_fail(job, js.code, "%s", js.msg);
                continue;
            }
            envelope_add_tag(job->reply, "dog", 0.9f, &js);
            envelope_add_tag(job->reply, "cat", 0.75f, &js);
            envelope_add_sequence(job->reply, "dog, cat", NULL, 0, 0, &js);
            for (unsigned k = 0; k < job->task->debug_tags_top_k && k < 3; k++)
                envelope_add_top_tag(job->reply, k == 0 ? "dog" : k == 1 ? "cat" : "grass", 0.9f - 0.2f * k, &js);
        } else if (stub_stage == LION__STAGE__AGGREGATOR) {
            const tensor *a = worker_job_input(job, "vit_layer_1", &js);
            const tensor *b = a ? worker_job_input(job, "vit_layer_2", &js) : NULL;
            if (!b) {
                worker_job_fail(job, js.code, "%s", js.msg);
                continue;
            }
            const char *ins = job->task->instruction ? job->task->instruction : "";
            float v[4] = {((const float *)a->data)[0], ((const float *)b->data)[5], (float)strlen(ins), 0};
            if (stub_output(job, "visual_tokens", 2, 2, v, &js)) worker_job_fail(job, js.code, "%s", js.msg);
        } else {
            const tensor *vt = worker_job_input(job, "visual_tokens", &js);
            if (!vt) {
                worker_job_fail(job, js.code, "%s", js.msg);
                continue;
            }
            const Lion__Task *task = job->task;
            char tags[256] = "";
            for (size_t i = 0; i < task->n_tags; i++)
                snprintf(tags + strlen(tags), sizeof tags - strlen(tags), "%s%s", i ? "," : "", task->tags[i]);
            const float *v = vt->data;
            int region = task->has_task_type && task->task_type == LION__TASK_TYPE__REGION_LEVEL;
            envelope_set_prompt_tokens(job->reply, (uint32_t)(vt->shape[0] + strlen(task->instruction ? task->instruction : "")), &js);
            unsigned nseq = task->generation && task->generation->has_num_return_sequences
                                ? task->generation->num_return_sequences
                                : 1;
            for (unsigned s = 0; s < nseq; s++) {
                char text[512];
                snprintf(text, sizeof text, "%s|%s|%s|%g,%g,%g|a%u|s%u", task->instruction ? task->instruction : "",
                         tags, region ? "region" : "image", v[0], v[1], v[2], job->env->attempt, s);
                int32_t ids[3] = {5, 6, 1};
                Lion__Sequence *seq = envelope_add_sequence(job->reply, text, ids, 3, -0.5f * (float)(s + 1), &js);
                if (seq && region) envelope_add_box(seq, 0.125f, 0.25f, 0.5f, 0.75f, &js);
            }
        }
    }
    return 0;
}

static int run_stub(int argc, char **argv) {
    stub_stage = envelope_stage_from_name(argv[2]);
    int wargc = 0;
    char **wargv = calloc((size_t)argc + 1, sizeof *wargv);
    wargv[wargc++] = argv[0];
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--delay-ms") && i + 1 < argc) stub_delay_ms = atoi(argv[++i]);
        else wargv[wargc++] = argv[i];
    }
    worker_config cfg;
    lion_status st;
    log_init(argv[2], LOG_WARN);
    if (!stub_stage || worker_config_parse(&cfg, argv[2], wargc, wargv, &st)) {
        fprintf(stderr, "stub: bad arguments\n");
        return 2;
    }
    worker_stage ws = {.stage = stub_stage, .process = stub_process, .ctx = NULL};
    int rc = worker_run(&cfg, &ws, &st);
    free(wargv);
    return rc ? 1 : 0;
}

/* ---------------------------------------------------------------------------------------- */
/* processes and ports                                                                       */

static char self_exe[4096];
static pid_t children[32];
static int n_children;

static pid_t spawn(const char *const *argv) {
    pid_t pid;
    if (posix_spawn(&pid, argv[0], NULL, NULL, (char *const *)argv, environ) != 0) return -1;
    children[n_children++] = pid;
    return pid;
}

static pid_t spawn_stub(const char *stage, const char *endpoint, const char *replica, const char *delay_ms,
                        const char *capacity) {
    const char *argv[] = {self_exe, "--stub", stage, "--gateway", endpoint, "--replica", replica, "--heartbeat-ms",
                          "100", "--delay-ms", delay_ms, "--capacity", capacity, "--max-batch", "1", NULL};
    return spawn(argv);
}

/* Signals a child and reaps it; its exit status, or -1 when it died by a signal or had
 * to be killed. Reaped children leave the list, so that no pid is signalled twice. */
static int stop_child(pid_t pid, int sig) {
    int k = 0;
    while (k < n_children && children[k] != pid) k++;
    if (pid <= 0 || k == n_children) return -1;
    children[k] = 0;
    kill(pid, sig);
    int status;
    for (int i = 0; i < 200; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        sleep_ms(50);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

/* Stops the workers, then the gateway (children[0]); returns the gateway's exit status,
 * which is 0 only after a clean shutdown (and, under ASan, no leaks). */
static int stop_all(void) {
    for (int i = n_children - 1; i >= 1; i--)
        if (children[i]) stop_child(children[i], SIGTERM);
    int rc = children[0] ? stop_child(children[0], SIGTERM) : -1;
    n_children = 0;
    return rc;
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

/* ---------------------------------------------------------------------------------------- */
/* a small HTTP client                                                                        */

typedef struct reply {
    int status;
    char head[4096];
    char *body;
    size_t body_len;
    cJSON *json;
} reply;

static void reply_free(reply *r) {
    free(r->body);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof *r);
}

static int http_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const char *data, size_t len) {
    while (len) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n <= 0) return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static const char *header_value(const reply *r, const char *name) {
    static char value[256];
    size_t n = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p; p = strstr(p + 2, "\r\n"))
        if (!strncasecmp(p + 2, name, n) && p[2 + n] == ':') {
            const char *v = p + 3 + n;
            while (*v == ' ') v++;
            size_t len = strcspn(v, "\r\n");
            snprintf(value, sizeof value, "%.*s", (int)len, v);
            return value;
        }
    return NULL;
}

/* Reads one response (Content-Length framed) within timeout_ms. */
/* Reads one answer; with head_only (an answer to HEAD) no body follows its headers. */
static int read_reply_ex(int fd, reply *r, int timeout_ms, int head_only) {
    memset(r, 0, sizeof *r);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    int64_t end = clock_mono_us() + (int64_t)timeout_ms * 1000;
    size_t head_len = 0, want = 0;
    for (;;) {
        if (head_len && len >= head_len + want) break;
        int left = (int)((end - clock_mono_us()) / 1000);
        struct pollfd p = {fd, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, left) <= 0) {
            free(buf);
            return -1;
        }
        if (len + 4096 > cap) buf = realloc(buf, cap *= 2);
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n <= 0) {
            if (head_len) break;
            free(buf);
            return -1;
        }
        len += (size_t)n;
        buf[len] = 0;
        if (!head_len) {
            char *e = strstr(buf, "\r\n\r\n");
            if (!e) continue;
            head_len = (size_t)(e - buf) + 4;
            snprintf(r->head, sizeof r->head, "%.*s", (int)head_len, buf);
            r->status = atoi(buf + 9);
            const char *cl = header_value(r, "Content-Length");
            want = cl && !head_only ? (size_t)atol(cl) : 0;
        }
    }
    r->body_len = len - head_len;
    r->body = malloc(r->body_len + 1);
    memcpy(r->body, buf + head_len, r->body_len);
    r->body[r->body_len] = 0;
    free(buf);
    r->json = cJSON_Parse(r->body);
    return 0;
}

static int read_reply(int fd, reply *r, int timeout_ms) { return read_reply_ex(fd, r, timeout_ms, 0); }

static int http_raw(int port, const char *request, size_t len, reply *r) {
    int fd = http_connect(port);
    if (fd < 0) return -1;
    int rc = send_all(fd, request, len) == 0 ? read_reply(fd, r, 15000) : -1;
    close(fd);
    return rc;
}

static char *format_request(const char *method, const char *path, const char *body, size_t *len) {
    size_t blen = body ? strlen(body) : 0;
    char *req = malloc(blen + 512);
    int n = snprintf(req, 512, "%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, blen);
    if (body) memcpy(req + n, body, blen);
    *len = (size_t)n + blen;
    return req;
}

static int http(int port, const char *method, const char *path, const char *body, reply *r) {
    size_t len;
    char *req = format_request(method, path, body, &len);
    int rc = http_raw(port, req, len, r);
    free(req);
    if (rc) memset(r, 0, sizeof *r);
    return rc;
}

static const char *json_str(const cJSON *o, const char *path) {
    /* "a.b.0.c": object keys and array indexes */
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *cur = o;
    for (char *tok = strtok(buf, "."); tok && cur; tok = strtok(NULL, "."))
        cur = isdigit((unsigned char)tok[0]) ? cJSON_GetArrayItem(cur, atoi(tok)) : cJSON_GetObjectItemCaseSensitive(cur, tok);
    return cJSON_IsString(cur) ? cur->valuestring : NULL;
}

static const cJSON *json_at(const cJSON *o, const char *path) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *cur = o;
    for (char *tok = strtok(buf, "."); tok && cur; tok = strtok(NULL, "."))
        cur = isdigit((unsigned char)tok[0]) ? cJSON_GetArrayItem(cur, atoi(tok)) : cJSON_GetObjectItemCaseSensitive(cur, tok);
    return cur;
}

/* Waits until GET /readyz answers want_status with a body containing want. */
static int wait_ready(int port, int want_status, const char *want, int timeout_ms) {
    int64_t end = clock_mono_us() + (int64_t)timeout_ms * 1000;
    while (clock_mono_us() < end) {
        reply r;
        if (http(port, "GET", "/readyz", NULL, &r) == 0) {
            int ok = r.status == want_status && strstr(r.body, want);
            reply_free(&r);
            if (ok) return 0;
        }
        sleep_ms(50);
    }
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* the image and its expected answers                                                          */

static unsigned char image[300];
static char *image_b64;
static unsigned image_sum;

static void make_image(void) {
    static const unsigned char png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(image, png, 8);
    for (size_t i = 8; i < sizeof image; i++) image[i] = (unsigned char)(i * 7 + 3);
    for (size_t i = 0; i < sizeof image; i++) image_sum += image[i];
    image_b64 = calloc(BASE64_ENCODE_RAW_LENGTH(sizeof image) + 1, 1);
    base64_encode_raw(image_b64, sizeof image, image);
}

/* What the stub llm answers for this pipeline. */
static void expected_text(char *out, size_t cap, const char *instruction, const char *tags, const char *type,
                          unsigned attempt, unsigned seq) {
    snprintf(out, cap, "%s|%s|%s|%g,%g,%g|a%u|s%u", instruction, tags, type, (double)sizeof image,
             (double)(image_sum % 997), (double)strlen(instruction), attempt, seq);
}

static char *generate_body(const char *instruction, const char *extra) {
    size_t n = strlen(image_b64) + strlen(instruction) + (extra ? strlen(extra) : 0) + 128;
    char *b = malloc(n);
    snprintf(b, n, "{\"image\":\"%s\",\"instruction\":\"%s\"%s%s}", image_b64, instruction, extra ? "," : "",
             extra ? extra : "");
    return b;
}

/* ---------------------------------------------------------------------------------------- */
/* Prometheus text format                                                                      */

static int metric_name_ok(const char *s, size_t n) {
    if (!n || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':')) return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':')) return 0;
    return 1;
}

/* Checks the exposition rules we rely on; returns the number of violations (printed). */
static int check_prometheus(const char *text) {
    int bad = 0;
    char typed[64][80];
    int n_typed = 0;
    char line[1024];
    double last_bucket = -1;
    char bucket_series[512] = "";
    for (const char *p = text; *p;) {
        size_t n = strcspn(p, "\n");
        if (p[n] != '\n') {
            fprintf(stderr, "prometheus: last line without a newline\n");
            bad++;
        }
        snprintf(line, sizeof line, "%.*s", (int)n, p);
        p += n + (p[n] == '\n');
        if (!line[0]) continue;
        if (line[0] == '#') {
            char name[80], type[32];
            if (!strncmp(line, "# TYPE ", 7)) {
                if (sscanf(line + 7, "%79s %31s", name, type) != 2 ||
                    (strcmp(type, "counter") && strcmp(type, "gauge") && strcmp(type, "histogram"))) {
                    fprintf(stderr, "prometheus: bad TYPE line '%s'\n", line);
                    bad++;
                }
                for (int i = 0; i < n_typed; i++)
                    if (!strcmp(typed[i], name)) {
                        fprintf(stderr, "prometheus: second TYPE for %s\n", name);
                        bad++;
                    }
                if (n_typed < 64) snprintf(typed[n_typed++], 80, "%s", name);
            }
            continue;
        }
        size_t name_len = strcspn(line, "{ ");
        if (!metric_name_ok(line, name_len)) {
            fprintf(stderr, "prometheus: bad metric name in '%s'\n", line);
            bad++;
            continue;
        }
        /* the family must have been typed before its samples */
        int found = 0;
        for (int i = 0; i < n_typed; i++) {
            size_t tl = strlen(typed[i]);
            if (!strncmp(line, typed[i], tl) &&
                (tl == name_len || !strncmp(line + tl, "_bucket", 7) || !strncmp(line + tl, "_sum", 4) ||
                 !strncmp(line + tl, "_count", 6)))
                found = 1;
        }
        if (!found) {
            fprintf(stderr, "prometheus: sample before its TYPE: '%s'\n", line);
            bad++;
        }
        const char *value = line + name_len;
        if (*value == '{') {
            const char *close = strchr(value, '}');
            if (!close) {
                fprintf(stderr, "prometheus: unclosed labels in '%s'\n", line);
                bad++;
                continue;
            }
            /* labels: name="value" pairs separated by commas */
            for (const char *l = value + 1; l < close;) {
                size_t ln = strcspn(l, "=");
                if (!metric_name_ok(l, ln) || l[ln + 1] != '"') {
                    fprintf(stderr, "prometheus: bad label in '%s'\n", line);
                    bad++;
                    break;
                }
                const char *q = strchr(l + ln + 2, '"');
                if (!q || q > close) {
                    fprintf(stderr, "prometheus: unterminated label value in '%s'\n", line);
                    bad++;
                    break;
                }
                l = q + 1;
                if (*l == ',') l++;
            }
            value = close + 1;
        }
        if (*value != ' ') {
            fprintf(stderr, "prometheus: no space before the value in '%s'\n", line);
            bad++;
            continue;
        }
        char *end;
        double v = strtod(value + 1, &end);
        if (end == value + 1 || *end) {
            fprintf(stderr, "prometheus: bad value in '%s'\n", line);
            bad++;
        }
        /* histogram buckets are cumulative within one series */
        const char *b = strstr(line, "_bucket{");
        if (b) {
            char series[512];
            const char *le = strstr(line, "le=\"");
            snprintf(series, sizeof series, "%.*s", (int)(le - line), line);
            if (!strcmp(series, bucket_series) && v < last_bucket) {
                fprintf(stderr, "prometheus: bucket count falls in '%s'\n", line);
                bad++;
            }
            snprintf(bucket_series, sizeof bucket_series, "%s", series);
            last_bucket = v;
        }
    }
    return bad;
}

static double metric_value(const char *text, const char *series) {
    const char *p = text;
    size_t n = strlen(series);
    while ((p = strstr(p, series))) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ') return atof(p + n + 1);
        p += n;
    }
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* the base64 payload decoder, directly                                                        */

static void check_base64(void) {
    unsigned char *out;
    size_t len;
    lion_status st;
    CHECK(base64_decode_payload("aGVsbG8=", 8, 100, &out, &len, &st) == 0);
    CHECK(len == 5 && !memcmp(out, "hello", 5));
    free(out);
    static const char wrapped[] = "aGVs\r\nbG8g\n d29y bGQ=";
    CHECK(base64_decode_payload(wrapped, sizeof wrapped - 1, 100, &out, &len, &st) == 0);
    CHECK(len == 11 && !memcmp(out, "hello world", 11));
    free(out);
    static const char uri[] = "data:image/png;base64,aGk=";
    CHECK(base64_decode_payload(uri, sizeof uri - 1, 100, &out, &len, &st) == 0);
    CHECK(len == 2 && !memcmp(out, "hi", 2));
    free(out);
    CHECK(base64_decode_payload("data:image/png,aGk=", 19, 100, &out, &len, &st) == -1);
    CHECK_CONTAINS(st.msg, "data URI is not base64");
    CHECK(!out);
    CHECK(base64_decode_payload("data:aGk=", 9, 100, &out, &len, &st) == -1);
    CHECK_CONTAINS(st.msg, "data URI without a comma");
    CHECK(base64_decode_payload("", 0, 100, &out, &len, &st) == -1);
    CHECK_CONTAINS(st.msg, "empty base64 payload");
    CHECK(base64_decode_payload("aGVsbG8=", 8, 4, &out, &len, &st) == -1);
    CHECK_EQ_INT(st.code, LION_ETOOBIG);
    CHECK_CONTAINS(st.msg, "image of 5 bytes exceeds the limit of 4 bytes");
    CHECK(base64_decode_payload("aG=sbG8=", 8, 100, &out, &len, &st) == -1);
    CHECK_CONTAINS(st.msg, "not valid base64");
    CHECK(base64_decode_payload("aGVsbG", 6, 100, &out, &len, &st) == -1);
    CHECK_CONTAINS(st.msg, "truncated");
    CHECK(base64_decode_payload("aGV\x80sbG8=", 9, 100, &out, &len, &st) == -1);
    CHECK_CONTAINS(st.msg, "character 0x80 at offset 3");
}

/* Mutated requests (bytes flipped, cut, duplicated) never take the gateway down: each gets
 * an answer or a closed connection, and /healthz still answers afterwards. */
static void check_fuzz(int port) {
    size_t len;
    char *body = generate_body("fuzz", "\"tags\":[\"a\"],\"num_beams\":2");
    char *valid = format_request("POST", "/v1/generate", body, &len);
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    char *buf = malloc(len * 2 + 16);
    int answered = 0;
    for (int i = 0; i < 120; i++) {
        memcpy(buf, valid, len);
        size_t n = len;
        int edits = 1 + i % 4;
        for (int e = 0; e < edits; e++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(rng >> 33) % n;
            switch ((rng >> 20) % 4) {
            case 0: buf[at] = (char)(rng >> 8); break;              /* flip a byte */
            case 1: n = at + 1; break;                                /* cut */
            case 2: buf[at] = i % 2 ? '\r' : '\n'; break;             /* a stray line end */
            default: buf[at] = (char)(at < 120 ? ':' : '"'); break;  /* a stray delimiter */
            }
        }
        int fd = http_connect(port);
        if (fd < 0) continue;
        send_all(fd, buf, n);
        shutdown(fd, SHUT_WR); /* a cut request ends here */
        reply r;
        if (read_reply(fd, &r, 3000) == 0) {
            answered++;
            CHECK_MSG(r.status == 200 || r.status == 503 || r.json, "fuzz %d: status %d without JSON", i, r.status);
            reply_free(&r);
        }
        close(fd);
    }
    CHECK(answered > 60);
    reply r;
    CHECK(http(port, "GET", "/healthz", NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    reply_free(&r);
    free(buf);
    free(valid);
    free(body);
}

/* ---------------------------------------------------------------------------------------- */
/* scenario 1: the whole API on a healthy pipeline                                             */

static void check_generate(int port) {
    char *body = generate_body("describe the picture", NULL);
    reply r;
    CHECK(http(port, "POST", "/v1/generate", body, &r) == 0);
    free(body);
    CHECK_EQ_INT(r.status, 200);
    char want[512];
    expected_text(want, sizeof want, "describe the picture", "dog,cat", "image", 0, 0);
    const char *text = json_str(r.json, "text");
    CHECK_MSG(text && !strcmp(text, want), "text '%s', expected '%s'", text ? text : "(none)", want);
    CHECK(json_str(r.json, "request_id") && !strncmp(json_str(r.json, "request_id"), "req-", 4));
    CHECK(json_str(r.json, "tags.0") && !strcmp(json_str(r.json, "tags.0"), "dog"));
    CHECK(json_str(r.json, "tags.1") && !strcmp(json_str(r.json, "tags.1"), "cat"));
    CHECK(cJSON_GetNumberValue(json_at(r.json, "tokens")) == 3);
    CHECK(cJSON_GetNumberValue(json_at(r.json, "prompt_tokens")) > (double)strlen("describe the picture"));
    CHECK_EQ_INT(cJSON_GetArraySize(json_at(r.json, "boxes")), 0);
    static const char *const stages[] = {"vision", "tagger", "aggregator", "llm", "total"};
    for (int i = 0; i < 5; i++) {
        char path[64];
        snprintf(path, sizeof path, "timings_ms.%s", stages[i]);
        CHECK_MSG(cJSON_IsNumber(json_at(r.json, path)) && cJSON_GetNumberValue(json_at(r.json, path)) >= 0,
                  "no %s timing", stages[i]);
    }
    CHECK(json_str(r.json, "model") && !strcmp(json_str(r.json, "model"), "tiny-test"));
    reply_free(&r);

    /* user tags skip the tagger; region-level answers carry boxes */
    body = generate_body("where is the red box", "\"task\":\"region_level\",\"tags\":[\"red\",\"box\"],\"num_beams\":2");
    CHECK(http(port, "POST", "/v1/generate", body, &r) == 0);
    free(body);
    CHECK_EQ_INT(r.status, 200);
    expected_text(want, sizeof want, "where is the red box", "red,box", "region", 0, 0);
    text = json_str(r.json, "text");
    CHECK_MSG(text && !strcmp(text, want), "text '%s', expected '%s'", text ? text : "(none)", want);
    const cJSON *box = json_at(r.json, "boxes.0");
    CHECK(cJSON_GetArraySize(box) == 4 && cJSON_GetNumberValue(cJSON_GetArrayItem(box, 0)) == 0.125 &&
          cJSON_GetNumberValue(cJSON_GetArrayItem(box, 3)) == 0.75);
    CHECK(!json_at(r.json, "timings_ms.tagger"));
    reply_free(&r);
}

static void check_chat(int port) {
    size_t n = strlen(image_b64) + 1024;
    char *body = malloc(n);
    snprintf(body, n,
             "{\"model\":\"tiny-test-region\",\"n\":2,\"max_tokens\":20,\"temperature\":0,"
             "\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
             "{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,%s\"}},"
             "{\"type\":\"text\",\"text\":\"find the cat\"}]}]}",
             image_b64);
    reply r;
    CHECK(http(port, "POST", "/v1/chat/completions", body, &r) == 0);
    free(body);
    CHECK_EQ_INT(r.status, 200);
    CHECK(json_str(r.json, "object") && !strcmp(json_str(r.json, "object"), "chat.completion"));
    CHECK(json_str(r.json, "id") && !strncmp(json_str(r.json, "id"), "chatcmpl-req-", 13));
    CHECK_EQ_INT(cJSON_GetArraySize(json_at(r.json, "choices")), 2);
    char want[512];
    expected_text(want, sizeof want, "find the cat", "dog,cat", "region", 0, 1);
    const char *text = json_str(r.json, "choices.1.message.content");
    CHECK_MSG(text && !strcmp(text, want), "content '%s', expected '%s'", text ? text : "(none)", want);
    CHECK(json_str(r.json, "choices.0.message.role") && !strcmp(json_str(r.json, "choices.0.message.role"), "assistant"));
    CHECK(json_str(r.json, "choices.0.finish_reason") && !strcmp(json_str(r.json, "choices.0.finish_reason"), "stop"));
    CHECK(cJSON_GetNumberValue(json_at(r.json, "usage.completion_tokens")) == 6);
    /* the stub llm reports visual rows + instruction length as its prompt */
    const double prompt = cJSON_GetNumberValue(json_at(r.json, "usage.prompt_tokens"));
    CHECK_MSG(prompt > (double)strlen("find the cat"), "usage.prompt_tokens %g", prompt);
    CHECK(cJSON_GetNumberValue(json_at(r.json, "usage.total_tokens")) == prompt + 6);
    CHECK_EQ_INT(cJSON_GetArraySize(json_at(r.json, "lion.boxes.0")), 4);
    reply_free(&r);
}

static void check_tags(int port) {
    size_t n = strlen(image_b64) + 128;
    char *body = malloc(n);
    snprintf(body, n, "{\"image\":\"data:image/png;base64,%s\",\"top_k\":2}", image_b64);
    reply r;
    CHECK(http(port, "POST", "/v1/tags", body, &r) == 0);
    free(body);
    CHECK_EQ_INT(r.status, 200);
    CHECK(json_str(r.json, "prompt") && !strcmp(json_str(r.json, "prompt"), "dog, cat"));
    CHECK(json_str(r.json, "tags.1.name") && !strcmp(json_str(r.json, "tags.1.name"), "cat"));
    CHECK(fabs(cJSON_GetNumberValue(json_at(r.json, "tags.0.score")) - 0.9) < 1e-6);
    CHECK_EQ_INT(cJSON_GetArraySize(json_at(r.json, "top_tags")), 2);
    CHECK(!json_at(r.json, "timings_ms.vision"));
    CHECK(cJSON_IsNumber(json_at(r.json, "timings_ms.tagger")));
    reply_free(&r);
}

static void check_error(int port, const char *method, const char *path, const char *body, int status,
                        const char *code, const char *message) {
    reply r;
    CHECK(http(port, method, path, body, &r) == 0);
    CHECK_MSG(r.status == status, "%s %s: status %d, expected %d (%s)", method, path, r.status, status,
              r.body ? r.body : "");
    CHECK_MSG(json_str(r.json, "error.code") && !strcmp(json_str(r.json, "error.code"), code), "%s: code %s, expected %s",
              path, json_str(r.json, "error.code") ? json_str(r.json, "error.code") : "(none)", code);
    CHECK_CONTAINS(json_str(r.json, "error.message"), message);
    reply_free(&r);
}

static void check_errors(int port) {
    check_error(port, "POST", "/v1/generate", "{\"image\": ", 400, "invalid_argument", "not valid JSON");
    check_error(port, "POST", "/v1/generate", "[1,2]", 400, "invalid_argument", "must be a JSON object");
    check_error(port, "POST", "/v1/generate", "", 400, "invalid_argument", "empty body");
    check_error(port, "POST", "/v1/generate", "{\"instruction\":\"hi\"}", 400, "invalid_argument", "missing 'image'");
    check_error(port, "POST", "/v1/generate", "{\"image\":\"aGVsbG8=\"}", 400, "invalid_argument",
                "missing 'instruction'");
    check_error(port, "POST", "/v1/generate", "{\"image\":\"aGV*bG8=\",\"instruction\":\"hi\"}", 400,
                "invalid_argument", "not valid base64: character 0x2a at offset 3");
    check_error(port, "POST", "/v1/generate", "{\"image\":\"aGVsbG8\",\"instruction\":\"hi\"}", 400, "invalid_argument",
                "truncated");
    check_error(port, "POST", "/v1/generate", "{\"image\":\"aGVsbG8=\",\"instruction\":\"hi\"}", 400, "bad_format",
                "5 bytes that are neither JPEG nor PNG");
    char *body = generate_body("hi", "\"task\":\"poem\"");
    check_error(port, "POST", "/v1/generate", body, 400, "invalid_argument", "not \"poem\"");
    free(body);
    body = generate_body("hi", "\"num_beams\":0");
    check_error(port, "POST", "/v1/generate", body, 400, "invalid_argument", "'num_beams' must be an integer from 1");
    free(body);
    char longp[400];
    memset(longp, 'x', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    body = generate_body(longp, NULL);
    check_error(port, "POST", "/v1/generate", body, 413, "too_large", "the instruction is 399 bytes, the limit is 256");
    free(body);
    char *big = malloc(80000);
    memset(big, ' ', 79999);
    big[0] = '{';
    big[79998] = '}';
    big[79999] = 0;
    check_error(port, "POST", "/v1/generate", big, 413, "too_large", "the limit is 65536");
    free(big);
    check_error(port, "GET", "/v1/nothing", NULL, 404, "not_found", "no route GET /v1/nothing");
    check_error(port, "GET", "/v1/generate", NULL, 405, "invalid_argument", "GET is not allowed on /v1/generate");
    check_error(port, "POST", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 400,
                "invalid_argument", "no image");
    check_error(port, "POST", "/v1/chat/completions",
                "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"http://x/a.png\"}}]}]}",
                400, "invalid_argument", "must be a data URI");
    check_error(port, "POST", "/v1/tags", "{}", 400, "invalid_argument", "missing 'image'");

    /* malformed HTTP: a JSON error, then the connection closes */
    static const char garbage[] = "GARBAGE \x01\x02 NOT HTTP\r\n\r\n";
    reply r;
    CHECK(http_raw(port, garbage, sizeof garbage - 1, &r) == 0);
    CHECK_EQ_INT(r.status, 400);
    CHECK_CONTAINS(json_str(r.json, "error.message"), "malformed HTTP request");
    CHECK_CONTAINS(header_value(&r, "Connection"), "close");
    reply_free(&r);
    static const char bad_length[] = "POST /v1/generate HTTP/1.1\r\nContent-Length: -5\r\n\r\n";
    CHECK(http_raw(port, bad_length, sizeof bad_length - 1, &r) == 0);
    CHECK_EQ_INT(r.status, 400);
    reply_free(&r);
    /* a declared body over the limit is refused before it is read */
    static const char huge[] = "POST /v1/generate HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n{";
    CHECK(http_raw(port, huge, sizeof huge - 1, &r) == 0);
    CHECK_EQ_INT(r.status, 413);
    CHECK_CONTAINS(json_str(r.json, "error.message"), "the body is 999999999 bytes, the limit is 65536");
    reply_free(&r);
}

/* A multipart/form-data upload: the raw image as a file part, the rest as fields. */
static void check_multipart(int port) {
    static const char boundary[] = "----lionTestBoundary7MA4YWxk";
    char *req = malloc(sizeof image + 4096);
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "--%s\r\nContent-Disposition: form-data; name=\"instruction\"\r\n\r\nupload test\r\n"
                     "--%s\r\nContent-Disposition: form-data; name=\"task\"\r\n\r\nregion_level\r\n"
                     "--%s\r\nContent-Disposition: form-data; name=\"tags\"\r\n\r\nred, box\r\n"
                     "--%s\r\nContent-Disposition: form-data; name=\"num_beams\"\r\n\r\n2\r\n"
                     "--%s\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
                     "Content-Type: image/png\r\n\r\n",
                     boundary, boundary, boundary, boundary, boundary);
    char tail[128];
    int t = snprintf(tail, sizeof tail, "\r\n--%s--\r\n", boundary);
    size_t body_len = (size_t)n + sizeof image + (size_t)t;
    int h = snprintf(req, 512,
                     "POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=%s\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     boundary, body_len);
    memcpy(req + h, head, (size_t)n);
    memcpy(req + h + n, image, sizeof image);
    memcpy(req + h + n + sizeof image, tail, (size_t)t);
    reply r;
    CHECK(http_raw(port, req, (size_t)h + body_len, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    char want[512];
    expected_text(want, sizeof want, "upload test", "red,box", "region", 0, 0);
    const char *text = json_str(r.json, "text");
    CHECK_MSG(text && !strcmp(text, want), "multipart: text '%s', expected '%s'", text ? text : "(none)", want);
    reply_free(&r);

    /* the same upload cut before its closing boundary */
    int cl = snprintf(req, 512,
                      "POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=%s\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      boundary, (size_t)n + 10);
    memcpy(req + cl, head, (size_t)n);
    memcpy(req + cl + n, image, 10);
    CHECK(http_raw(port, req, (size_t)cl + (size_t)n + 10, &r) == 0);
    CHECK_EQ_INT(r.status, 400);
    CHECK_CONTAINS(json_str(r.json, "error.message"), "multipart part 'image' is not terminated by the boundary");
    reply_free(&r);
    static const char no_boundary[] =
        "POST /v1/tags HTTP/1.1\r\nContent-Type: multipart/form-data\r\nContent-Length: 2\r\n\r\nxx";
    CHECK(http_raw(port, no_boundary, sizeof no_boundary - 1, &r) == 0);
    CHECK_EQ_INT(r.status, 400);
    CHECK_CONTAINS(json_str(r.json, "error.message"), "multipart Content-Type without a boundary");
    reply_free(&r);
    static const char chat_form[] =
        "POST /v1/chat/completions HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 2\r\n\r\nxx";
    CHECK(http_raw(port, chat_form, sizeof chat_form - 1, &r) == 0);
    CHECK_EQ_INT(r.status, 415);
    CHECK_CONTAINS(json_str(r.json, "error.message"), "this route takes JSON only");
    reply_free(&r);
    free(req);
}

/* Two requests pipelined on one connection: two answers, in order, connection kept. */
static void check_keep_alive(int port) {
    int fd = http_connect(port);
    CHECK(fd >= 0);
    if (fd < 0) return;
    size_t l1, l2;
    char *a = format_request("GET", "/healthz", NULL, &l1);
    char *body = generate_body("one", NULL);
    char *b = format_request("POST", "/v1/generate", body, &l2);
    char *both = malloc(l1 + l2);
    memcpy(both, a, l1);
    memcpy(both + l1, b, l2);
    CHECK(send_all(fd, both, l1 + l2) == 0);
    reply r1, r2;
    CHECK(read_reply(fd, &r1, 10000) == 0);
    CHECK_EQ_INT(r1.status, 200);
    CHECK(json_str(r1.json, "status") && !strcmp(json_str(r1.json, "status"), "ok"));
    CHECK_CONTAINS(header_value(&r1, "Connection"), "keep-alive");
    CHECK(read_reply(fd, &r2, 10000) == 0);
    CHECK_EQ_INT(r2.status, 200);
    CHECK(json_str(r2.json, "text") && !strncmp(json_str(r2.json, "text"), "one|dog,cat|", 12));
    reply_free(&r1);
    reply_free(&r2);
    /* and the connection still serves */
    CHECK(send_all(fd, a, l1) == 0);
    CHECK(read_reply(fd, &r1, 10000) == 0);
    CHECK_EQ_INT(r1.status, 200);
    reply_free(&r1);
    free(a);
    free(b);
    free(body);
    free(both);
    close(fd);
}

/* --max-connections: one connection over the cap is answered 503 and closed; the open
 * ones still serve, and once they close new connections are taken again. */
static void check_connection_cap(int port, int cap) {
    reply r;
    /* wait until only the asking connection is open (earlier checks' closes are seen) */
    double open = -1;
    for (int i = 0; i < 100 && open != 1; i++) {
        if (http(port, "GET", "/metrics", NULL, &r) == 0) open = metric_value(r.body, "lion_http_connections");
        reply_free(&r);
        if (open != 1) sleep_ms(50);
    }
    CHECK_MSG(open == 1, "lion_http_connections %g with one client", open);
    int fds[64], n = 0, rejected = 0;
    for (; n <= cap && n < 64; n++) fds[n] = http_connect(port);
    /* the last one is over the cap whatever the gateway saw of the /metrics connection's
     * close; the first cap - 1 are served */
    for (int i = 0; i < n; i++) {
        if (fds[i] < 0) continue;
        if (read_reply(fds[i], &r, i == n - 1 ? 5000 : 100) == 0) {
            CHECK_EQ_INT(r.status, 503);
            CHECK_CONTAINS(json_str(r.json, "error.message"), "--max-connections");
            CHECK(json_str(r.json, "error.code") && !strcmp(json_str(r.json, "error.code"), "unavailable"));
            CHECK(header_value(&r, "Retry-After") != NULL);
            rejected += 1;
            CHECK_MSG(i >= cap - 1, "connection %d of %d rejected under the cap %d", i + 1, n, cap);
        } else {
            CHECK_MSG(i < n - 1, "connection %d of %d (cap %d) was not answered 503", i + 1, n, cap);
        }
        reply_free(&r);
    }
    CHECK(rejected >= 1 && rejected <= 2);
    /* an open connection still serves */
    size_t len;
    char *req = format_request("GET", "/healthz", NULL, &len);
    CHECK(send_all(fds[0], req, len) == 0);
    CHECK(read_reply(fds[0], &r, 5000) == 0);
    CHECK_EQ_INT(r.status, 200);
    reply_free(&r);
    free(req);
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0) close(fds[i]);
    int ok = 0;
    for (int i = 0; i < 100 && !ok; i++) {
        ok = http(port, "GET", "/metrics", NULL, &r) == 0 && r.status == 200 &&
             metric_value(r.body, "lion_http_connections_rejected_total") >= 1;
        reply_free(&r);
        if (!ok) sleep_ms(50);
    }
    CHECK_MSG(ok, "no connection is served after the others closed, or the rejection was not counted");
}

/* HEAD on a GET route: GET's status and headers (its Content-Length), no body, and the
 * connection goes on; HEAD on a POST route is 405 without a body; a 405 says Allow. */
static void check_head(int port) {
    int fd = http_connect(port);
    CHECK(fd >= 0);
    if (fd < 0) return;
    static const char head[] = "HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    static const char get[] = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    static const char head_post[] = "HEAD /v1/generate HTTP/1.1\r\nHost: t\r\n\r\n";
    reply r;
    CHECK(send_all(fd, head, sizeof head - 1) == 0);
    CHECK(read_reply_ex(fd, &r, 5000, 1) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(header_value(&r, "Content-Length") && atoi(header_value(&r, "Content-Length")) == 15);
    CHECK_EQ_INT(r.body_len, 0);
    reply_free(&r);
    /* had a body been sent, it would be read as the start of this answer */
    CHECK(send_all(fd, get, sizeof get - 1) == 0);
    CHECK(read_reply(fd, &r, 5000) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(r.body && !strcmp(r.body, "{\"status\":\"ok\"}"));
    reply_free(&r);
    CHECK(send_all(fd, head_post, sizeof head_post - 1) == 0);
    CHECK(read_reply_ex(fd, &r, 5000, 1) == 0);
    CHECK_EQ_INT(r.status, 405);
    CHECK_EQ_INT(r.body_len, 0);
    CHECK(header_value(&r, "Allow") && !strcmp(header_value(&r, "Allow"), "POST"));
    reply_free(&r);
    static const char post_get[] = "POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n";
    CHECK(send_all(fd, post_get, sizeof post_get - 1) == 0);
    CHECK(read_reply(fd, &r, 5000) == 0);
    CHECK_EQ_INT(r.status, 405);
    CHECK(header_value(&r, "Allow") && !strcmp(header_value(&r, "Allow"), "GET, HEAD"));
    reply_free(&r);
    CHECK(send_all(fd, get, sizeof get - 1) == 0);
    CHECK(read_reply(fd, &r, 5000) == 0);
    CHECK_EQ_INT(r.status, 200);
    reply_free(&r);
    close(fd);
}

/* Receives tap messages for up to timeout_ms; counts topics that match. */
static int tap_collect(void *sub, const char *request_id, char topics[][320], int max, int *data_frames, int timeout_ms) {
    int n = 0;
    int64_t end = clock_mono_us() + (int64_t)timeout_ms * 1000;
    while (n < max && clock_mono_us() < end) {
        zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0) continue;
        char topic[128] = "";
        int nf = 0, more = 1;
        Lion__Envelope *env = NULL;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            zmq_msg_recv(&m, sub, 0);
            if (nf == 0) snprintf(topic, sizeof topic, "%.*s", (int)zmq_msg_size(&m), (char *)zmq_msg_data(&m));
            if (nf == 1) env = lion__envelope__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
            nf++;
            more = zmq_msg_more(&m);
            zmq_msg_close(&m);
        }
        const char *last = strrchr(topic, '/');
        if (env && last && !strcmp(last + 1, request_id) && env->request_id && !strcmp(env->request_id, request_id)) {
            /* every JOB carries the gateway's hop first */
            int gw_hop = env->n_trace > 0 && env->trace[0]->service && !strcmp(env->trace[0]->service, "gateway");
            snprintf(topics[n], 320, "%s %s %d%s", topic, envelope_kind_name(env->kind), nf,
                     env->kind == LION__KIND__JOB && !gw_hop ? " (no gateway hop)" : "");
            if (!strncmp(topic, "data/", 5) && data_frames) *data_frames += nf - 2;
            n++;
        }
        if (env) lion__envelope__free_unpacked(env, NULL);
    }
    return n;
}

static int has_topic(char topics[][320], int n, const char *want) {
    for (int i = 0; i < n; i++)
        if (!strcmp(topics[i], want)) return 1;
    return 0;
}

static void check_taps(int port, const char *tap_ep) {
    void *zctx = zmq_ctx_new();
    void *sub = zmq_socket(zctx, ZMQ_SUB);
    int zero = 0;
    zmq_setsockopt(sub, ZMQ_LINGER, &zero, sizeof zero);
    zmq_connect(sub, tap_ep);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "meta/", 5);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "data/aggregator/out/", 20);
    sleep_ms(300); /* subscriptions travel to the XPUB */
    char *body = generate_body("tap me", NULL);
    reply r;
    CHECK(http(port, "POST", "/v1/generate", body, &r) == 0);
    free(body);
    CHECK_EQ_INT(r.status, 200);
    const char *id = json_str(r.json, "request_id");
    char topics[16][320];
    int data_frames = 0;
    int n = id ? tap_collect(sub, id, topics, 9, &data_frames, 3000) : 0;
    CHECK_EQ_INT(n, 9);
    char want[256];
    static const char *const stages[] = {"vision", "tagger", "aggregator", "llm"};
    for (int s = 0; s < 4 && id; s++) {
        snprintf(want, sizeof want, "meta/%s/out/%s JOB 2", stages[s], id);
        CHECK_MSG(has_topic(topics, n, want), "no tap message '%s'", want);
        snprintf(want, sizeof want, "meta/%s/in/%s RESULT 2", stages[s], id);
        CHECK_MSG(has_topic(topics, n, want), "no tap message '%s'", want);
    }
    if (id) {
        snprintf(want, sizeof want, "data/aggregator/out/%s JOB 4", id); /* topic, envelope, 2 ViT layers */
        CHECK_MSG(has_topic(topics, n, want), "no tap message '%s'", want);
    }
    CHECK_EQ_INT(data_frames, 2);
    reply_free(&r);
    zmq_close(sub);
    zmq_ctx_term(zctx);
}

static void check_metrics(int port) {
    reply r;
    CHECK(http(port, "GET", "/metrics", NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_CONTAINS(header_value(&r, "Content-Type"), "text/plain; version=0.0.4");
    CHECK_EQ_INT(check_prometheus(r.body ? r.body : ""), 0);
    const char *t = r.body ? r.body : "";
    CHECK(metric_value(t, "lion_workers{stage=\"llm\"}") == 1);
    CHECK(metric_value(t, "lion_http_requests_total{route=\"/v1/generate\",status=\"200\"}") >= 3);
    CHECK(metric_value(t, "lion_errors_total{code=\"invalid_argument\"}") >= 10);
    CHECK(metric_value(t, "lion_queue_depth{stage=\"vision\"}") == 0);
    CHECK(metric_value(t, "lion_tap_messages_total") >= 9);
    CHECK(metric_value(t, "lion_stage_duration_seconds_count{stage=\"aggregator\"}") >= 3);
    CHECK(metric_value(t, "lion_stage_duration_seconds_bucket{stage=\"aggregator\",le=\"+Inf\"}") ==
          metric_value(t, "lion_stage_duration_seconds_count{stage=\"aggregator\"}"));
    reply_free(&r);
    /* the checker itself must catch broken text */
    CHECK(check_prometheus("lion_x 1\n") > 0);
    CHECK(check_prometheus("# TYPE lion_y gauge\nlion_y{a=\"1\" 2\n") > 0);
    CHECK(check_prometheus("# TYPE lion_z histogram\nlion_z_bucket{le=\"1\"} 5\nlion_z_bucket{le=\"+Inf\"} 3\n") > 0);
}

static void scenario_pipeline(void) {
    int port = free_port();
    char listen[64], ep[5][64], tap_ep[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    for (int s = 1; s <= 4; s++) snprintf(ep[s], sizeof ep[s], "tcp://127.0.0.1:%d", free_port());
    snprintf(tap_ep, sizeof tap_ep, "tcp://127.0.0.1:%d", free_port());
    char gw_bin[4096];
    const char *bin_dir = getenv("LION_BIN_DIR");
    snprintf(gw_bin, sizeof gw_bin, "%s/lion-gateway", bin_dir ? bin_dir : "build/services");
    const char *argv[] = {gw_bin, "--listen", listen, "--vision", ep[1], "--tagger", ep[2], "--aggregator", ep[3],
                          "--llm", ep[4], "--tap", tap_ep, "--model-name", "tiny-test", "--max-body-bytes", "65536",
                          "--max-prompt-bytes", "256", "--heartbeat-ms", "100", "--max-connections", "16", NULL};
    CHECK(spawn(argv) > 0);
    static const char *const names[] = {"", "vision", "tagger", "aggregator", "llm"};
    for (int s = 1; s <= 4; s++) {
        char replica[32];
        snprintf(replica, sizeof replica, "%s-1", names[s]);
        spawn_stub(names[s], ep[s], replica, "0", "4");
    }
    if (wait_ready(port, 200, "\"llm\":1", 15000) != 0) {
        CHECK_MSG(0, "the gateway did not become ready");
        stop_all();
        return;
    }
    reply r;
    CHECK(http(port, "GET", "/healthz", NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    reply_free(&r);
    CHECK(http(port, "GET", "/v1/models", NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(json_str(r.json, "data.0.id") && !strcmp(json_str(r.json, "data.0.id"), "tiny-test"));
    CHECK(json_str(r.json, "data.1.id") && !strcmp(json_str(r.json, "data.1.id"), "tiny-test-region"));
    reply_free(&r);
    check_generate(port);
    check_chat(port);
    check_tags(port);
    check_errors(port);
    check_keep_alive(port);
    check_head(port);
    check_multipart(port);
    check_fuzz(port);
    check_taps(port, tap_ep);
    check_metrics(port);
    check_connection_cap(port, 16);
    CHECK_EQ_INT(stop_all(), 0);
}

/* ---------------------------------------------------------------------------------------- */
/* scenario 2: no worker, overload, deadline, a killed worker                                   */

typedef struct pending_call {
    int fd;
    reply r;
    int got;
} pending_call;

static void scenario_failures(void) {
    int port = free_port();
    char listen[64], ep[5][64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    for (int s = 1; s <= 4; s++) snprintf(ep[s], sizeof ep[s], "tcp://127.0.0.1:%d", free_port());
    char gw_bin[4096];
    const char *bin_dir = getenv("LION_BIN_DIR");
    snprintf(gw_bin, sizeof gw_bin, "%s/lion-gateway", bin_dir ? bin_dir : "build/services");
    const char *argv[] = {gw_bin, "--listen", listen, "--vision", ep[1], "--tagger", ep[2], "--aggregator", ep[3],
                          "--llm", ep[4], "--max-queue", "1", "--heartbeat-ms", "100", "--worker-timeout-ms", "600",
                          "--retry-after-s", "2", "--idle-timeout-ms", "400", NULL};
    CHECK(spawn(argv) > 0);
    spawn_stub("vision", ep[1], "vision-slow", "300", "1");
    spawn_stub("tagger", ep[2], "tagger-1", "0", "4");
    spawn_stub("aggregator", ep[3], "aggregator-1", "0", "4");
    if (wait_ready(port, 503, "no live llm worker", 15000) != 0) {
        CHECK_MSG(0, "the gateway did not see the first three stages");
        stop_all();
        return;
    }
    /* a stage without workers: 503 at once */
    char *body = generate_body("anyone", NULL);
    reply r;
    CHECK(http(port, "POST", "/v1/generate", body, &r) == 0);
    CHECK_EQ_INT(r.status, 503);
    CHECK_CONTAINS(json_str(r.json, "error.message"), "no live llm worker");
    CHECK_CONTAINS(header_value(&r, "Retry-After"), "2");
    reply_free(&r);

    pid_t slow_llm = spawn_stub("llm", ep[4], "llm-slow", "2000", "4");
    if (wait_ready(port, 200, "\"llm\":1", 10000) != 0) {
        CHECK_MSG(0, "the llm worker did not register");
        stop_all();
        return;
    }
    /* overload: vision takes one job at a time and the queue holds one more */
    pending_call calls[4];
    size_t len;
    char *req = format_request("POST", "/v1/generate", body, &len);
    for (int i = 0; i < 4; i++) {
        calls[i].fd = http_connect(port);
        calls[i].got = 0;
        CHECK(calls[i].fd >= 0 && send_all(calls[i].fd, req, len) == 0);
        sleep_ms(20);
    }
    int n429 = 0;
    for (int i = 2; i < 4; i++) {
        calls[i].got = read_reply(calls[i].fd, &calls[i].r, 5000) == 0;
        if (calls[i].got && calls[i].r.status == 429) {
            n429++;
            CHECK_CONTAINS(json_str(calls[i].r.json, "error.message"), "the vision queue is full");
            CHECK_CONTAINS(header_value(&calls[i].r, "Retry-After"), "2");
        }
    }
    CHECK_EQ_INT(n429, 2);
    /* the first two reach the slow llm worker (the gateway's metrics say when); a second
     * replica joins and the first dies */
    int at_llm = 0;
    for (int i = 0; i < 200 && !at_llm; i++) {
        reply m;
        if (http(port, "GET", "/metrics", NULL, &m) == 0)
            at_llm = metric_value(m.body ? m.body : "", "lion_jobs_outstanding{stage=\"llm\"}") == 2;
        reply_free(&m);
        if (!at_llm) sleep_ms(20);
    }
    CHECK_MSG(at_llm, "the two requests did not reach the slow llm worker");
    spawn_stub("llm", ep[4], "llm-fast", "0", "4");
    if (wait_ready(port, 200, "\"llm\":2", 5000) != 0) CHECK_MSG(0, "the second llm worker did not register");
    stop_child(slow_llm, SIGKILL);
    char want[512];
    expected_text(want, sizeof want, "anyone", "dog,cat", "image", 1, 0);
    for (int i = 0; i < 2; i++) {
        calls[i].got = read_reply(calls[i].fd, &calls[i].r, 10000) == 0;
        CHECK_MSG(calls[i].got, "request %d: no answer after the worker was killed", i);
        CHECK_EQ_INT(calls[i].r.status, 200);
        const char *text = json_str(calls[i].r.json, "text");
        CHECK_MSG(text && !strcmp(text, want), "request %d: text '%s', expected '%s'", i, text ? text : "(none)", want);
        /* answered exactly once: nothing more arrives on the connection */
        reply extra;
        CHECK(read_reply(calls[i].fd, &extra, 300) != 0);
    }
    for (int i = 0; i < 4; i++) {
        if (calls[i].got) reply_free(&calls[i].r);
        close(calls[i].fd);
    }
    free(req);
    CHECK(http(port, "GET", "/metrics", NULL, &r) == 0);
    CHECK(metric_value(r.body ? r.body : "", "lion_redispatches_total{stage=\"llm\"}") == 2);
    CHECK(metric_value(r.body ? r.body : "", "lion_workers{stage=\"llm\"}") == 1);
    CHECK(metric_value(r.body ? r.body : "", "lion_http_requests_total{route=\"/v1/generate\",status=\"429\"}") == 2);
    reply_free(&r);
    free(body);

    /* an idle connection is closed; one waiting for its answer is not (above) */
    int idle = http_connect(port);
    CHECK(idle >= 0);
    struct pollfd pfd = {idle, POLLIN, 0};
    CHECK(poll(&pfd, 1, 3000) == 1);
    char byte;
    CHECK(recv(idle, &byte, 1, 0) == 0);
    close(idle);

    /* a deadline shorter than the vision stage: 504 */
    body = generate_body("too slow", "\"deadline_ms\":100");
    CHECK(http(port, "POST", "/v1/generate", body, &r) == 0);
    CHECK_EQ_INT(r.status, 504);
    CHECK(json_str(r.json, "error.code") && !strcmp(json_str(r.json, "error.code"), "deadline_exceeded"));
    CHECK_CONTAINS(json_str(r.json, "error.message"), "deadline of 100 ms exceeded waiting for vision");
    reply_free(&r);
    free(body);
    /* the gateway still serves afterwards (the late vision answer is dropped) */
    sleep_ms(400);
    body = generate_body("after", NULL);
    CHECK(http(port, "POST", "/v1/generate", body, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    reply_free(&r);

    /* SIGTERM with a request in flight: it is answered 503, then the gateway exits cleanly */
    size_t rlen;
    char *inflight = format_request("POST", "/v1/generate", body, &rlen);
    int fd = http_connect(port);
    CHECK(fd >= 0 && send_all(fd, inflight, rlen) == 0);
    sleep_ms(100);
    CHECK_EQ_INT(stop_child(children[0], SIGTERM), 0);
    CHECK(read_reply(fd, &r, 3000) == 0);
    CHECK_EQ_INT(r.status, 503);
    CHECK_CONTAINS(json_str(r.json, "error.message"), "the gateway is shutting down");
    reply_free(&r);
    close(fd);
    free(inflight);
    free(body);
    stop_all();
}

/* ---------------------------------------------------------------------------------------- */
/* scenario 3: the real workers on the tiny model, against lion_ref                             */

static void scenario_real_workers(void) {
    char dir[2048], path[2200], model[2200];
    snprintf(dir, sizeof dir, "%s", testing_fixture("gateway"));
    snprintf(path, sizeof path, "%s/expected.json", dir);
    size_t len = 0;
    unsigned char *text = testing_read_file(path, &len);
    snprintf(path, sizeof path, "%s/image.png", dir);
    size_t png_len = 0;
    unsigned char *png = testing_read_file(path, &png_len);
    CHECK_MSG(text && png, "no fixture in %s (tests/fixtures/gen_gateway.py)", dir);
    if (!text || !png) {
        free(text);
        free(png);
        return;
    }
    cJSON *expected = cJSON_ParseWithLength((const char *)text, len);
    free(text);
    char *b64 = calloc(BASE64_ENCODE_RAW_LENGTH(png_len) + 1, 1);
    base64_encode_raw(b64, png_len, png);
    free(png);
    snprintf(model, sizeof model, "%s/model", dir);

    int port = free_port();
    char listen[64], ep[5][64], gw_bin[4096], bins[5][4096];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    const char *bin_dir = getenv("LION_BIN_DIR");
    snprintf(gw_bin, sizeof gw_bin, "%s/lion-gateway", bin_dir ? bin_dir : "build/services");
    static const char *const names[] = {"", "vision", "tagger", "aggregator", "llm"};
    for (int s = 1; s <= 4; s++) {
        snprintf(ep[s], sizeof ep[s], "tcp://127.0.0.1:%d", free_port());
        snprintf(bins[s], sizeof bins[s], "%s/lion-%s", bin_dir ? bin_dir : "build/services", names[s]);
    }
    const char *argv[] = {gw_bin, "--listen", listen, "--vision", ep[1], "--tagger", ep[2], "--aggregator", ep[3],
                          "--llm", ep[4], "--model-name", "tiny-lion", NULL};
    CHECK(spawn(argv) > 0);
    for (int s = 1; s <= 4; s++) {
        const char *wargv[] = {bins[s], "--gateway", ep[s], "--model", model, "--threads", "1", "--heartbeat-ms", "200",
                               NULL};
        CHECK_MSG(spawn(wargv) > 0, "cannot start %s", bins[s]);
    }
    if (wait_ready(port, 200, "\"llm\":1", 60000) != 0) {
        CHECK_MSG(0, "the real workers did not all register");
        stop_all();
        cJSON_Delete(expected);
        free(b64);
        return;
    }
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(expected, "cases");
    size_t cap = strlen(b64) + 1024;
    char *body = malloc(cap);
    reply r;

    /* image-level through /v1/generate: the tagger's tags go into the prompt */
    const cJSON *c0 = cJSON_GetArrayItem(cases, 0);
    snprintf(body, cap, "{\"image\":\"%s\",\"instruction\":\"%s\",\"task\":\"image_level\"}", b64,
             json_str(c0, "instruction"));
    CHECK(http(port, "POST", "/v1/generate", body, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    const char *got = json_str(r.json, "text"), *want = json_str(c0, "text");
    CHECK_MSG(got && want && !strcmp(got, want), "generate: '%s', lion_ref says '%s'", got ? got : "(none)",
              want ? want : "?");
    for (int i = 0; i < 2; i++) {
        char key[16];
        snprintf(key, sizeof key, "tags.%d", i);
        const char *g = json_str(r.json, key), *w = json_str(expected, key);
        CHECK_MSG(g && w && !strcmp(g, w), "tag %d: '%s', expected '%s'", i, g ? g : "(none)", w ? w : "?");
    }
    reply_free(&r);

    /* region-level with the user's tags through the OpenAI route */
    const cJSON *c1 = cJSON_GetArrayItem(cases, 1);
    snprintf(body, cap,
             "{\"model\":\"tiny-lion-region\",\"lion_tags\":[\"%s\",\"%s\"],\"messages\":[{\"role\":\"user\",\"content\":["
             "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,%s\"}},"
             "{\"type\":\"text\",\"text\":\"%s\"}]}]}",
             json_str(c1, "tags.0"), json_str(c1, "tags.1"), b64, json_str(c1, "instruction"));
    CHECK(http(port, "POST", "/v1/chat/completions", body, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    got = json_str(r.json, "choices.0.message.content");
    want = json_str(c1, "text");
    CHECK_MSG(got && want && !strcmp(got, want), "chat: '%s', lion_ref says '%s'", got ? got : "(none)",
              want ? want : "?");
    reply_free(&r);

    /* RAM alone */
    snprintf(body, cap, "{\"image\":\"%s\"}", b64);
    CHECK(http(port, "POST", "/v1/tags", body, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    got = json_str(r.json, "prompt");
    want = json_str(expected, "tags_prompt");
    CHECK_MSG(got && want && !strcmp(got, want), "tags: '%s', lion_ref says '%s'", got ? got : "(none)",
              want ? want : "?");
    reply_free(&r);

    /* the chat request sent the same image again: the vision worker's feature cache hit,
     * which its next heartbeat reports and /metrics shows */
    int hit = 0;
    for (int tries = 0; tries < 40 && !hit; tries++) {
        if (http(port, "GET", "/metrics", NULL, &r) == 0) {
            hit = r.body && strstr(r.body, "lion_cache_hits_total{stage=\"vision\"} 1\n") &&
                  strstr(r.body, "lion_cache_misses_total{stage=\"vision\"} 1\n");
            reply_free(&r);
        }
        if (!hit) sleep_ms(100);
    }
    CHECK_MSG(hit, "/metrics never showed the vision worker's one cache hit and one miss");
    free(body);
    free(b64);
    cJSON_Delete(expected);
    CHECK_EQ_INT(stop_all(), 0);
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "--stub")) return run_stub(argc, argv);
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (n <= 0) {
        CHECK_MSG(0, "cannot find this executable");
        return testing_finish();
    }
    self_exe[n] = 0;
    make_image();
    check_base64();
    scenario_pipeline();
    scenario_failures();
    scenario_real_workers();
    free(image_b64);
    return testing_finish();
}
