/* gateway_harness.c - see gateway_harness.h. */
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
#include "log.h"
#include "gateway_harness.h"
#include "testing.h"
#include "worker.h"

extern char **environ;
/* ---------------------------------------------------------------------------------------- */
/* stub workers                                                                              */

static int stub_stage;
static int stub_delay_ms;
/* --announce-model NAME, --announce-family FAMILY: what the stub says it serves in its credit
 * (none by default: a gateway takes it for its default model). A "pink" vision stub answers as
 * Pink's vision stage does, with visual_tokens for the llm; an llm stub that announces a model
 * ends its text with "|llm=MODEL", so an answer tells which model's llm made it. */
static const char *stub_model, *stub_family;

static int stub_is_pink(void) { return stub_family && !strcmp(stub_family, "pink"); }

void sleep_ms(int ms) {
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

#define STUB_CANCELLED "cancelled by the gateway"

/* --delay-ms in 10 ms slices, cut short once every job of the batch is cancelled. */
static void stub_delay(worker_job *jobs, int n) {
    for (int waited = 0; waited < stub_delay_ms; waited += 10) {
        int live = 0;
        for (int j = 0; j < n; j++) live += !worker_job_cancelled(&jobs[j]);
        if (!live) return;
        sleep_ms(stub_delay_ms - waited < 10 ? stub_delay_ms - waited : 10);
    }
}

/* A streamed llm answer: text as PARTIALs of 4 bytes (a UTF-8 character is never split, so a
 * piece may be longer), 3 ms apart. -1 when the job was cancelled meanwhile or a PARTIAL
 * could not be sent (the job then failed). */
static int stub_stream(worker_job *job, const char *text) {
    size_t len = strlen(text);
    for (size_t at = 0; at < len;) {
        if (worker_job_cancelled(job)) return worker_job_fail(job, LION_ECANCELED, STUB_CANCELLED);
        size_t n = len - at < 4 ? len - at : 4;
        while (at + n < len && ((unsigned char)text[at + n] & 0xC0) == 0x80) n++;
        char piece[16];
        memcpy(piece, text + at, n);
        piece[n] = '\0';
        lion_status st;
        if (worker_job_send_partial(job, piece, NULL, 0, &st)) return worker_job_fail(job, st.code, "%s", st.msg);
        at += n;
        sleep_ms(3);
    }
    return 0;
}

static int stub_process(void *ctx, worker_job *jobs, int n, lion_status *st) {
    stub_delay(jobs, n);
    for (int j = 0; j < n; j++) {
        worker_job *job = &jobs[j];
        lion_status js;
        if (worker_job_cancelled(job)) {
            worker_job_fail(job, LION_ECANCELED, STUB_CANCELLED);
            continue;
        }
        if (stub_stage == LION__STAGE__VISION) {
            const tensor *img = worker_job_input(job, "image", &js);
            if (!img) {
                worker_job_fail(job, js.code, "%s", js.msg);
                continue;
            }
            size_t len = (size_t)img->shape[0];
            unsigned sum = 0;
            for (size_t i = 0; i < len; i++) sum += ((const unsigned char *)img->data)[i];
            if (stub_is_pink()) {
                /* Pink's vision stage: the visual tokens themselves; -1 marks them as its own */
                float v[4] = {(float)len, (float)(sum % 997), -1, 0};
                if (stub_output(job, "visual_tokens", 2, 2, v, &js)) worker_job_fail(job, js.code, "%s", js.msg);
                continue;
            }
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
            /* two tokens generated ({5, 6, 1}: the start id first), unless max_new_tokens is
             * below: then the answer stopped at that length */
            const Lion__GenerationParams *gen = task->generation;
            int short_answer = gen && gen->has_max_new_tokens && gen->max_new_tokens < 3;
            for (unsigned s = 0; s < nseq; s++) {
                char text[512];
                snprintf(text, sizeof text, "%s|%s|%s|%g,%g,%g|a%u|s%u%s%s", task->instruction ? task->instruction : "",
                         tags, region ? "region" : "image", v[0], v[1], v[2], job->env->attempt, s,
                         stub_model ? "|llm=" : "", stub_model ? stub_model : "");
                /* the best sequence is the one streamed, before the RESULT */
                if (s == 0 && task->has_stream && task->stream && stub_stream(job, text)) break;
                int32_t ids[3] = {5, 6, 1};
                Lion__Sequence *seq = envelope_add_sequence(job->reply, text, ids, 3, -0.5f * (float)(s + 1), &js);
                if (seq && region) envelope_add_box(seq, 0.125f, 0.25f, 0.5f, 0.75f, &js);
                if (seq)
                    envelope_sequence_set_finish(seq, short_answer ? LION__FINISH_REASON__LENGTH : LION__FINISH_REASON__STOP,
                                                 short_answer ? gen->max_new_tokens : 2);
            }
        }
    }
    return 0;
}

static int run_stub(int argc, char **argv) {
    stub_stage = lion_stage_from_name(argv[2]);
    int wargc = 0;
    char **wargv = calloc((size_t)argc + 1, sizeof *wargv);
    wargv[wargc++] = argv[0];
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--delay-ms") && i + 1 < argc) stub_delay_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--announce-model") && i + 1 < argc) stub_model = argv[++i];
        else if (!strcmp(argv[i], "--announce-family") && i + 1 < argc) stub_family = argv[++i];
        else wargv[wargc++] = argv[i];
    }
    worker_config cfg;
    lion_status st;
    log_init(argv[2], LOG_WARN);
    if (!stub_stage || worker_config_parse(&cfg, argv[2], wargc, wargv, &st)) {
        fprintf(stderr, "stub: bad arguments\n");
        return 2;
    }
    worker_stage ws = {.stage = stub_stage, .process = stub_process, .ctx = NULL, .model = stub_model,
                       .family = stub_family};
    int rc = worker_run(&cfg, &ws, &st);
    free(wargv);
    return rc ? 1 : 0;
}

/* ---------------------------------------------------------------------------------------- */
/* processes and ports                                                                       */

static char self_exe[4096];
static pid_t children[32];
static int n_children;

pid_t spawn(const char *const *argv) {
    pid_t pid;
    if (posix_spawn(&pid, argv[0], NULL, NULL, (char *const *)argv, environ) != 0) return -1;
    children[n_children++] = pid;
    return pid;
}

pid_t spawn_stub(const char *stage, const char *endpoint, const char *replica, const char *delay_ms,
                        const char *capacity) {
    const char *argv[] = {self_exe, "--stub", stage, "--gateway", endpoint, "--replica", replica, "--heartbeat-ms",
                          "100", "--delay-ms", delay_ms, "--capacity", capacity, "--max-batch", "1", NULL};
    return spawn(argv);
}

pid_t spawn_stub_with(const char *stage, const char *endpoint, const char *replica, const char *const *extra) {
    const char *argv[32] = {self_exe, "--stub", stage, "--gateway", endpoint, "--replica", replica, "--heartbeat-ms",
                            "100", "--delay-ms", "0", "--capacity", "4", "--max-batch", "1"};
    int n = 15;
    for (int i = 0; extra && extra[i] && n < 31; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    return spawn(argv);
}

/* Signals a child and reaps it; its exit status, or -1 when it died by a signal or had
 * to be killed. Reaped children leave the list, so that no pid is signalled twice. */
int stop_child(pid_t pid, int sig) {
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
int stop_all(void) {
    for (int i = n_children - 1; i >= 1; i--)
        if (children[i]) stop_child(children[i], SIGTERM);
    int rc = children[0] ? stop_child(children[0], SIGTERM) : -1;
    n_children = 0;
    return rc;
}

/* A port the kernel gives for bind(0), closed again: free now. The kernel may give the same
 * port to the next bind(0) as well (a gateway once got one endpoint twice and refused to
 * start), so the ports handed out lately in this process are not handed out again. */
int free_port(void) {
    static int recent[256], n_recent;
    for (int tries = 0;; tries++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof a;
        bind(fd, (struct sockaddr *)&a, sizeof a);
        getsockname(fd, (struct sockaddr *)&a, &len);
        close(fd);
        const int port = ntohs(a.sin_port);
        int seen = 0;
        for (int i = 0; i < n_recent && i < 256; i++) seen |= recent[i] == port;
        if (!seen || tries >= 100) {
            recent[n_recent++ % 256] = port;
            return port;
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* a small HTTP client                                                                        */


void reply_free(reply *r) {
    free(r->body);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof *r);
}

int http_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int send_all(int fd, const char *data, size_t len) {
    while (len) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n <= 0) return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

const char *header_value(const reply *r, const char *name) {
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
int read_reply_ex(int fd, reply *r, int timeout_ms, int head_only) {
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

int read_reply(int fd, reply *r, int timeout_ms) { return read_reply_ex(fd, r, timeout_ms, 0); }

int http_raw(int port, const char *request, size_t len, reply *r) {
    int fd = http_connect(port);
    if (fd < 0) return -1;
    int rc = send_all(fd, request, len) == 0 ? read_reply(fd, r, 15000) : -1;
    close(fd);
    return rc;
}

char *format_request(const char *method, const char *path, const char *body, size_t *len) {
    size_t blen = body ? strlen(body) : 0;
    char *req = malloc(blen + 512);
    int n = snprintf(req, 512, "%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, blen);
    if (body) memcpy(req + n, body, blen);
    *len = (size_t)n + blen;
    return req;
}

int http(int port, const char *method, const char *path, const char *body, reply *r) {
    size_t len;
    char *req = format_request(method, path, body, &len);
    int rc = http_raw(port, req, len, r);
    free(req);
    if (rc) memset(r, 0, sizeof *r);
    return rc;
}

const char *json_str(const cJSON *o, const char *path) {
    /* "a.b.0.c": object keys and array indexes */
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *cur = o;
    for (char *tok = strtok(buf, "."); tok && cur; tok = strtok(NULL, "."))
        cur = isdigit((unsigned char)tok[0]) ? cJSON_GetArrayItem(cur, atoi(tok)) : cJSON_GetObjectItemCaseSensitive(cur, tok);
    return cJSON_IsString(cur) ? cur->valuestring : NULL;
}

const cJSON *json_at(const cJSON *o, const char *path) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *cur = o;
    for (char *tok = strtok(buf, "."); tok && cur; tok = strtok(NULL, "."))
        cur = isdigit((unsigned char)tok[0]) ? cJSON_GetArrayItem(cur, atoi(tok)) : cJSON_GetObjectItemCaseSensitive(cur, tok);
    return cur;
}

/* Waits until GET /readyz answers want_status with a body containing want. */
int wait_ready(int port, int want_status, const char *want, int timeout_ms) {
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

unsigned char test_image[GATEWAY_TEST_IMAGE_BYTES];
char *image_b64;
static unsigned image_sum;

static void make_image(void) {
    static const unsigned char png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(test_image, png, 8);
    for (size_t i = 8; i < sizeof test_image; i++) test_image[i] = (unsigned char)(i * 7 + 3);
    for (size_t i = 0; i < sizeof test_image; i++) image_sum += test_image[i];
    image_b64 = calloc(BASE64_ENCODE_RAW_LENGTH(sizeof test_image) + 1, 1);
    base64_encode_raw(image_b64, sizeof test_image, test_image);
}

/* What the stub llm answers for this pipeline. */
void expected_text(char *out, size_t cap, const char *instruction, const char *tags, const char *type,
                          unsigned attempt, unsigned seq) {
    snprintf(out, cap, "%s|%s|%s|%g,%g,%g|a%u|s%u", instruction, tags, type, (double)sizeof test_image,
             (double)(image_sum % 997), (double)strlen(instruction), attempt, seq);
}

void expected_pink_text(char *out, size_t cap, const char *instruction, const char *type, const char *llm_model) {
    snprintf(out, cap, "%s||%s|%g,%g,-1|a0|s0|llm=%s", instruction, type, (double)sizeof test_image,
             (double)(image_sum % 997), llm_model);
}

char *generate_body(const char *instruction, const char *extra) {
    size_t n = strlen(image_b64) + strlen(instruction) + (extra ? strlen(extra) : 0) + 128;
    char *b = malloc(n);
    snprintf(b, n, "{\"image\":\"%s\",\"instruction\":\"%s\"%s%s}", image_b64, instruction, extra ? "," : "",
             extra ? extra : "");
    return b;
}

/* The value of one Prometheus series ("name{labels}") in text, -1 when absent. */
double metric_value(const char *text, const char *series) {
    const char *p = text;
    size_t n = strlen(series);
    while ((p = strstr(p, series))) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ') return atof(p + n + 1);
        p += n;
    }
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* start and end of a test binary                                                            */

pid_t spawned(int i) { return i >= 0 && i < n_children ? children[i] : 0; }

int gateway_harness_main(int argc, char **argv, void (*run)(void)) {
    if (argc >= 3 && !strcmp(argv[1], "--stub")) return run_stub(argc, argv);
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (n <= 0) {
        CHECK_MSG(0, "cannot find this executable");
        return testing_finish();
    }
    self_exe[n] = 0;
    make_image();
    run();
    free(image_b64);
    image_b64 = NULL;
    return testing_finish();
}
