/* test_batch: lion-batch against lion-gateway.
 *
 * With the four real workers on a random tiny model (tests/fixtures/gen_batch.py): every
 * answer gets a JSON line with the request's fields and lion_ref's answer, --check counts
 * the request whose expected answer is wrong on purpose as failed (and exits 1), --draw
 * writes the region answer's PNG with the expected box in green, plain progress lines go to
 * stderr; the evaluate.py examples format passes; 503s and a dead gateway are reported.
 *
 * With stub workers (tests/gateway_harness.h: fast, and each answer names the instruction
 * it answers): a gateway killed with SIGKILL mid-run and restarted on its port a second
 * later loses no request; lion-batch itself killed with SIGKILL and run again with --resume
 * (a torn last line added, as a kill in the middle of a write would leave) ends with every
 * id once; --resume drops error, duplicate and broken lines; --images over a folder and a
 * glob; two gateways, one of them dead; the summary's figures. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fake_gateway.h"
#include "image.h"
#include "gateway_harness.h"
#include "testing.h"


/* Runs a shell command; its exit status. */
static int run(const char *cmd) {
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* The file as a string (testing_read_file NUL-terminates what it reads). */
static char *read_text(const char *path) {
    size_t len;
    return (char *)testing_read_file(path, &len);
}

/* The answer line of request id in a JSONL file (parsed), or NULL. */
static cJSON *find_line(const char *text, const char *id) {
    for (const char *p = text; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        cJSON *o = cJSON_ParseWithLength(p, len);
        const cJSON *oid = cJSON_GetObjectItemCaseSensitive(o, "id");
        if (cJSON_IsString(oid) && !strcmp(oid->valuestring, id)) return o;
        cJSON_Delete(o);
        p = nl ? nl + 1 : NULL;
    }
    return NULL;
}

static int ready(int port) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "curl -sf http://127.0.0.1:%d/readyz 2>/dev/null | grep -q '\"llm\":1'", port);
    return run(cmd) == 0;
}

/* One line per request, with its fields and lion_ref's answer, and --check's verdict. */
static void check_jsonl_answers(const char *dir, const cJSON *meta, int n) {
    char path[4400];
    snprintf(path, sizeof path, "%s/answers.jsonl", dir);
    char *answers = read_text(path);
    CHECK_MSG(answers != NULL, "no %s", path);
    FILE *f = fopen(path, "r");
    int lines = 0;
    for (int c; f && (c = fgetc(f)) != EOF;) lines += c == '\n';
    if (f) fclose(f);
    CHECK_EQ_INT(lines, n);

    snprintf(path, sizeof path, "%s/requests.jsonl", dir);
    char *reqs = read_text(path);
    static const char *const ids[] = {"a", "b", "c", "wrong"};
    for (int i = 0; i < 4; i++) {
        cJSON *got = find_line(answers, ids[i]), *req = find_line(reqs, ids[i]);
        CHECK_MSG(got && req, "no answer line for request %s", ids[i]);
        if (!got || !req) {
            cJSON_Delete(got);
            cJSON_Delete(req);
            continue;
        }
        const cJSON *status = cJSON_GetObjectItemCaseSensitive(got, "status");
        CHECK_MSG(cJSON_IsNumber(status) && status->valueint == 200, "request %s: status not 200", ids[i]);
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(got, "text");
        const cJSON *ref = cJSON_GetObjectItemCaseSensitive(req, "reference_answer");
        CHECK_MSG(cJSON_IsString(text), "request %s: no text", ids[i]);
        if (cJSON_IsString(text) && cJSON_IsString(ref))
            CHECK_MSG(!strcmp(text->valuestring, ref->valuestring), "request %s: '%s', lion_ref says '%s'", ids[i],
                      text->valuestring, ref->valuestring);
        CHECK(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(got, "boxes")));
        CHECK(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(got, "tags")));
        CHECK(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(got, "timings_ms")));
        CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(got, "request_id")));
        CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(got, "instruction")));
        const cJSON *cat = cJSON_GetObjectItemCaseSensitive(got, "category");
        CHECK(cJSON_IsString(cat) && !strcmp(cat->valuestring, cJSON_GetObjectItemCaseSensitive(req, "task")->valuestring));
        const cJSON *pass = cJSON_GetObjectItemCaseSensitive(got, "pass");
        int want_pass = strcmp(ids[i], "wrong") != 0 &&
                        (strcmp(ids[i], "c") != 0 || cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(meta, "region_has_answer_box")));
        CHECK_MSG(cJSON_IsBool(pass) && cJSON_IsTrue(pass) == want_pass, "request %s: pass should be %d", ids[i],
                  want_pass);
        cJSON_Delete(got);
        cJSON_Delete(req);
    }
    free(reqs);
    free(answers);
}

/* --draw: the region answer's PNG, none for the image-level ones. */
static void check_drawn(const char *dir, const cJSON *meta) {
    /* the region request's image with the expected box in green along its top edge */
    char path[4400];
    snprintf(path, sizeof path, "%s/drawn/c.png", dir);
    size_t len = 0;
    unsigned char *png = testing_read_file(path, &len);
    CHECK_MSG(png != NULL, "--draw wrote no %s", path);
    image img = {0};
    lion_status st = {0};
    if (png && image_decode(png, len, NULL, &img, &st) == 0) {
        CHECK_EQ_INT(img.width, 100);
        CHECK_EQ_INT(img.height, 80);
        const cJSON *box = cJSON_GetObjectItemCaseSensitive(meta, "region_expected_box");
        int x0 = (int)(cJSON_GetArrayItem(box, 0)->valuedouble * img.width);
        int y0 = (int)(cJSON_GetArrayItem(box, 1)->valuedouble * img.height);
        int x1 = (int)(cJSON_GetArrayItem(box, 2)->valuedouble * img.width) - 1;
        int green = 0;
        for (int x = x0; x <= x1; x++) {
            const uint8_t *px = img.data + ((size_t)y0 * img.width + x) * 3;
            green += px[0] == 0 && px[1] == 255 && px[2] == 0;
        }
        CHECK_MSG(green >= (x1 - x0 + 1) / 2, "only %d green pixels on the expected box's top edge", green);
        image_free(&img);
    } else {
        CHECK_MSG(png == NULL, "drawn PNG does not decode: %s", st.msg);
    }
    free(png);
    snprintf(path, sizeof path, "%s/drawn/a.png", dir);
    CHECK_MSG(access(path, F_OK) != 0, "an image-level answer was drawn");
}

static void check_jsonl_run(const char *dir, const char *batch, const char *url, const cJSON *meta) {
    char cmd[16384], path[4400];
    snprintf(cmd, sizeof cmd,
             "%s --gateway %s --concurrency 2 --check --progress plain --draw %s/drawn --out %s/answers.jsonl "
             "%s/requests.jsonl 2> %s/stderr.txt",
             batch, url, dir, dir, dir, dir);
    int rc = run(cmd);
    CHECK_EQ_INT(rc, 1); /* the wrong-on-purpose request fails the run */

    snprintf(path, sizeof path, "%s/stderr.txt", dir);
    char *err = read_text(path);
    char want[128];
    int n = cJSON_GetObjectItemCaseSensitive(meta, "n")->valueint;
    int failed = cJSON_GetObjectItemCaseSensitive(meta, "failed")->valueint;
    snprintf(want, sizeof want, "%d passed, %d failed", n - failed, failed);
    CHECK_CONTAINS(err, want);
    snprintf(want, sizeof want, "lion-batch: %d/%d (100%%), %d failed, ", n, n, failed);
    CHECK_CONTAINS(err, want);
    CHECK_CONTAINS(err, "lion-batch: 1/4 (25%)");
    CHECK_CONTAINS(err, "/s, elapsed ");
    CHECK_CONTAINS(err, "lion-batch: done 4/4 in ");
    CHECK_CONTAINS(err, "image_level      2/3 (67%)");
    CHECK(!err || !strchr(err, '\r')); /* no bar outside a terminal */
    free(err);

    check_jsonl_answers(dir, meta, n);
    check_drawn(dir, meta);
}

/* --params: --images with one generation field for all: every answer stops at 1 token. */
static void check_params_run(const char *dir, const char *batch, const char *url) {
    char cmd[16384], path[4400];
    snprintf(cmd, sizeof cmd,
             "%s --gateway %s --progress none --images '%s/img_*.png' --instruction 'what is in the image' "
             "--params '{\"max_new_tokens\":1,\"num_beams\":1}' --out %s/params.jsonl 2> %s/params.txt",
             batch, url, dir, dir, dir);
    CHECK_EQ_INT(run(cmd), 0);
    snprintf(path, sizeof path, "%s/params.jsonl", dir);
    char *text = read_text(path);
    int lines = 0, one_token = 0;
    for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(line);
        const cJSON *status = cJSON_GetObjectItemCaseSensitive(o, "status");
        const cJSON *tokens = cJSON_GetObjectItemCaseSensitive(o, "generated_tokens");
        lines++;
        one_token += cJSON_IsNumber(status) && status->valueint == 200 && cJSON_IsNumber(tokens) && tokens->valueint == 1;
        cJSON_Delete(o);
    }
    CHECK_MSG(lines >= 2 && one_token == lines, "--params max_new_tokens 1: %d of %d answers have 1 token", one_token,
              lines);
    free(text);
}

static void check_examples_run(const char *dir, const char *batch, const char *url) {
    char cmd[16384], path[4400];
    snprintf(cmd, sizeof cmd, "%s --gateway %s --check --progress plain %s/requests.json > %s/ex.jsonl 2> %s/ex.txt",
             batch, url, dir, dir, dir);
    CHECK_EQ_INT(run(cmd), 0);
    snprintf(path, sizeof path, "%s/ex.txt", dir);
    char *err = read_text(path);
    CHECK_CONTAINS(err, "2 passed, 0 failed");
    CHECK_CONTAINS(err, "caption          1/1 (100%)");
    CHECK_CONTAINS(err, "vqa_colour       1/1 (100%)");
    free(err);
}

/* lion-batch ARGS refuses to run: exit 2 and message on stderr (kept in err_path). */
static void check_refused(const char *batch, const char *args, const char *err_path, const char *message) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "%s %s 2> %s", batch, args, err_path);
    CHECK_MSG(run(cmd) == 2, "lion-batch %s: not refused with exit 2", args);
    char *err = read_text(err_path);
    CHECK_CONTAINS(err, message);
    free(err);
}

static void check_errors(const char *dir, const char *batch, int dead_port) {
    char cmd[16384], path[4400];
    /* nobody listens: each request retried, then a transport error; exit 1 */
    snprintf(cmd, sizeof cmd,
             "%s --gateway http://127.0.0.1:%d --retries 2 --max-retry-wait-ms 50 --progress none %s/requests.json "
             "> %s/dead.jsonl 2> %s/dead.txt",
             batch, dead_port, dir, dir, dir);
    CHECK_EQ_INT(run(cmd), 1);
    snprintf(path, sizeof path, "%s/dead.txt", dir);
    char *err = read_text(path);
    CHECK_CONTAINS(err, "lion-batch: request a: http://127.0.0.1:");
    CHECK_CONTAINS(err, "Couldn't connect to server");
    CHECK_CONTAINS(err, "lion-batch: no gateway reachable after 3 attempts of request ");
    snprintf(path, sizeof path, "%s/dead.jsonl", dir);
    char *text = read_text(path);
    cJSON *a = text ? find_line(text, "a") : NULL;
    const cJSON *attempts = cJSON_GetObjectItemCaseSensitive(a, "attempts");
    CHECK_MSG(cJSON_IsNumber(attempts) && attempts->valueint == 3, "connection refused not retried twice");
    cJSON_Delete(a);
    free(text);
    free(err);
    /* a broken requests file is named with its line */
    snprintf(path, sizeof path, "%s/bad.jsonl", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"id\":1,\"image\":\"img_0.png\",\"instruction\":\"hi\"}\n{\"id\":2,\"image\":\"img_0.png\"}\n", f);
    fclose(f);
    char err_path[4400];
    snprintf(err_path, sizeof err_path, "%s/refused.txt", dir);
    check_refused(batch, path, err_path, "bad.jsonl:2: missing 'instruction'");
    /* --params: an object of fields the input does not give each request */
    static const char *const params[][2] = {{"'[1]'", "--params: not a JSON object"},
                                            {"'{\"image\":\"x.png\"}'", "--params: 'image' is given per request"},
                                            {"'{\"model\":\"m\"}'", "(or by --model)"}};
    for (int i = 0; i < 3; i++) {
        snprintf(cmd, sizeof cmd, "--params %s %s/requests.json", params[i][0], dir);
        check_refused(batch, cmd, err_path, params[i][1]);
    }
}

/* A gateway with no workers answers 503 + Retry-After: retried --retries times, then reported. */
static void check_retries(const char *dir, const char *batch, const char *gw) {
    int port = free_port();
    char listen[64], cmd[16384], path[4400], ep[4][64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    for (int s = 0; s < 4; s++) snprintf(ep[s], sizeof ep[s], "tcp://127.0.0.1:%d", free_port());
    const char *argv[] = {gw, "--listen", listen, "--vision", ep[0], "--tagger", ep[1], "--aggregator", ep[2],
                          "--llm", ep[3], NULL};
    CHECK(spawn(argv) > 0);
    snprintf(cmd, sizeof cmd, "curl -sf http://127.0.0.1:%d/healthz > /dev/null 2>&1", port);
    int up = 0;
    for (int i = 0; i < 200 && !(up = run(cmd) == 0); i++) sleep_ms(50);
    CHECK_MSG(up, "the lone gateway did not start");
    snprintf(cmd, sizeof cmd,
             "%s --gateway http://127.0.0.1:%d --retries 2 --max-retry-wait-ms 50 --progress none "
             "%s/requests.json > %s/retry.jsonl 2> %s/retry.txt",
             batch, port, dir, dir, dir);
    CHECK_EQ_INT(run(cmd), 1);
    stop_all();
    snprintf(path, sizeof path, "%s/retry.jsonl", dir);
    char *text = read_text(path);
    cJSON *a = text ? find_line(text, "a") : NULL;
    const cJSON *attempts = cJSON_GetObjectItemCaseSensitive(a, "attempts");
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(a, "status");
    CHECK_MSG(cJSON_IsNumber(attempts) && attempts->valueint == 3, "503 not retried twice");
    CHECK(cJSON_IsNumber(status) && status->valueint == 503);
    CHECK_CONTAINS(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "error")), "HTTP 503: no live vision worker");
    cJSON_Delete(a);
    free(text);
}

/* ---------------------------------------------------------------------------------------- */
/* stub workers: restarts, kills, --resume, --images, several gateways, the summary          */

static char gateway_bin[4096], batch_bin[4096], work[64];

/* A gateway with stub workers; restartable on the same ports. */
typedef struct stub_pipeline {
    int port;
    char listen[64], url[96], ep[5][64];
    pid_t gateway;
} stub_pipeline;

static pid_t start_gateway(const stub_pipeline *p) {
    const char *argv[] = {gateway_bin, "--listen", p->listen, "--vision", p->ep[1], "--tagger", p->ep[2],
                          "--aggregator", p->ep[3], "--llm", p->ep[4], "--heartbeat-ms", "100",
                          "--worker-timeout-ms", "1000", "--retry-after-s", "1", NULL};
    return spawn(argv);
}

/* The gateway and one stub worker per stage, the llm taking llm_delay_ms per job; 0 once
 * every stage has its worker. */
static int start_stub_pipeline(stub_pipeline *p, const char *llm_delay_ms) {
    memset(p, 0, sizeof *p);
    p->port = free_port();
    snprintf(p->listen, sizeof p->listen, "127.0.0.1:%d", p->port);
    snprintf(p->url, sizeof p->url, "http://127.0.0.1:%d", p->port);
    for (int s = 1; s <= 4; s++) snprintf(p->ep[s], sizeof p->ep[s], "tcp://127.0.0.1:%d", free_port());
    p->gateway = start_gateway(p);
    static const char *const stages[] = {"", "vision", "tagger", "aggregator", "llm"};
    for (int s = 1; s <= 4; s++) spawn_stub(stages[s], p->ep[s], stages[s], s == 4 ? llm_delay_ms : "0", "8");
    int ok = p->gateway > 0 && wait_ready(p->port, 200, "\"llm\":1", 15000) == 0;
    CHECK_MSG(ok, "the stub pipeline did not become ready");
    return ok ? 0 : -1;
}

/* lion-batch (or any command) in the background: sh -c "exec ...", so that its pid is
 * lion-batch's own, for a SIGKILL. */
static pid_t start_command(const char *cmd) {
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Its exit status; -1 when a signal ended it; -2 when it ran past timeout_ms (then killed). */
static int wait_command(pid_t pid, int timeout_ms) {
    int status;
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        sleep_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -2;
}

static int count_lines(const char *path) {
    FILE *f = fopen(path, "r");
    int lines = 0;
    for (int c; f && (c = fgetc(f)) != EOF;) lines += c == '\n';
    if (f) fclose(f);
    return lines;
}

/* Waits until path has at least n lines: 0, or -1 after timeout_ms. */
static int wait_lines(const char *path, int n, int timeout_ms) {
    for (int waited = 0; waited <= timeout_ms; waited += 10) {
        if (count_lines(path) >= n) return 0;
        sleep_ms(10);
    }
    return -1;
}

/* Writes the harness's test image (what the stub pipeline's expected answers are made of). */
static void write_image(const char *path) {
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f && fwrite(test_image, 1, sizeof test_image, f) == sizeof test_image, "cannot write %s", path);
    if (f) fclose(f);
}

/* n JSONL requests "r0000".. on the test image, each with its own instruction (so that its
 * answer names it); with_expected: the stub's answer as "expected", for --check. */
static void write_requests(const char *path, int n, int with_expected) {
    FILE *f = fopen(path, "w");
    CHECK_MSG(f != NULL, "cannot write %s", path);
    if (!f) return;
    for (int i = 0; i < n; i++) {
        char want[512] = "";
        if (with_expected) {
            char instr[64];
            snprintf(instr, sizeof instr, "describe image %d", i);
            expected_text(want, sizeof want, instr, "dog,cat", "image", 0, 0);
        }
        fprintf(f,
                "{\"id\":\"r%04d\",\"image\":\"img.png\",\"instruction\":\"describe image %d\","
                "\"task\":\"image_level\"%s%s%s}\n",
                i, i, with_expected ? ",\"expected\":\"" : "", want, with_expected ? "\"" : "");
    }
    fclose(f);
}

/* The stub answers instruction with attempt 0 (a gateway that retried a stage says a1, a2). */
static int stub_answer_ok(const char *text, const char *instruction, const char *type) {
    for (unsigned attempt = 0; text && attempt < 4; attempt++) {
        char want[512];
        expected_text(want, sizeof want, instruction, "dog,cat", type, attempt, 0);
        if (!strcmp(text, want)) return 1;
    }
    return 0;
}

/* What an --out file says, checked against the requests: n_ids ids, each on exactly one
 * line, answered (status 200, no error) with the text the stub gives for it. instruction:
 * one for all (--images), else "describe image <i>" of request r<i>. ids: NULL for r0000..,
 * else the ids expected. Returns the sum of the lines' generated_tokens. */
typedef struct out_check {
    int lines, ids_once, duplicates, unknown, wrong, errors;
    double tokens;
} out_check;

static out_check check_out(const char *path, int n_ids, const char *const *ids, const char *instruction,
                           const char *type) {
    out_check c = {0};
    int *seen = calloc((size_t)n_ids, sizeof *seen);
    char *text = read_text(path);
    for (const char *p = text; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        cJSON *o = cJSON_ParseWithLength(p, len);
        const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "id"));
        int k = -1;
        for (int i = 0; id && i < n_ids && k < 0; i++) {
            char buf[32];
            const char *want = ids ? ids[i] : (snprintf(buf, sizeof buf, "r%04d", i), buf);
            if (!strcmp(id, want)) k = i;
        }
        c.lines++;
        if (k < 0) {
            c.unknown++;
        } else {
            seen[k]++;
            char instr[64];
            if (!instruction) snprintf(instr, sizeof instr, "describe image %d", k);
            const cJSON *status = cJSON_GetObjectItemCaseSensitive(o, "status");
            if (cJSON_GetObjectItemCaseSensitive(o, "error") || !cJSON_IsNumber(status) || status->valueint != 200) {
                c.errors++;
            } else if (!stub_answer_ok(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "text")),
                                       instruction ? instruction : instr, type)) {
                c.wrong++;
                if (c.wrong < 4) fprintf(stderr, "  wrong answer: %.*s\n", (int)len, p);
            }
            const cJSON *tokens = cJSON_GetObjectItemCaseSensitive(o, "generated_tokens");
            if (cJSON_IsNumber(tokens)) c.tokens += tokens->valuedouble;
        }
        cJSON_Delete(o);
        p = nl ? nl + 1 : NULL;
    }
    for (int i = 0; i < n_ids; i++) {
        c.ids_once += seen[i] == 1;
        c.duplicates += seen[i] > 1;
    }
    free(seen);
    free(text);
    return c;
}

/* Every id once, all answered rightly, nothing else in the file. */
static void check_out_complete(const char *what, const char *path, int n_ids, const char *const *ids,
                               const char *instruction, const char *type) {
    out_check c = check_out(path, n_ids, ids, instruction, type);
    CHECK_MSG(c.ids_once == n_ids && c.lines == n_ids && !c.duplicates && !c.unknown && !c.wrong && !c.errors,
              "%s: %d lines, %d of %d ids once, %d duplicated, %d unknown, %d wrong, %d errors", what, c.lines,
              c.ids_once, n_ids, c.duplicates, c.unknown, c.wrong, c.errors);
    printf("%s: %d of %d ids answered once, %d duplicated, %d wrong, %d errors\n", what, c.ids_once, n_ids,
           c.duplicates, c.wrong, c.errors);
}

/* The summary's lines, read back. */
typedef struct summary {
    int found, requests, answered, failed, answers;
    double seconds, per_s, tokens, tokens_per_s, p50, p99, llm, total, transport_retries;
} summary;

static summary read_summary(const char *err) {
    summary s = {0};
    const char *l = err ? strstr(err, "lion-batch: ") : NULL;
    for (; l; l = strstr(l + 1, "lion-batch: ")) {
        s.found += sscanf(l, "lion-batch: %d requests in %lfs: %lf requests/s, %d answered, %d failed", &s.requests,
                          &s.seconds, &s.per_s, &s.answered, &s.failed) == 5;
        s.found += sscanf(l, "lion-batch: tokens: %lf generated, %lf tokens/s", &s.tokens, &s.tokens_per_s) == 2;
        s.found += sscanf(l, "lion-batch: latency ms: p50 %lf, p99 %lf (%d answers)", &s.p50, &s.p99, &s.answers) == 3;
        const char *llm = strncmp(l, "lion-batch: mean stage ms:", 26) ? NULL : strstr(l, " llm ");
        const char *total = llm ? strstr(l, " total ") : NULL;
        if (llm && total) s.found += sscanf(llm, " llm %lf", &s.llm) + sscanf(total, " total %lf", &s.total) == 2;
        s.found += sscanf(l, "lion-batch: retries: %lf after transport errors", &s.transport_retries) == 1;
    }
    return s;
}

/* Plausible figures: n answered, rates that fit the time, p50 <= p99 <= the run, the llm's
 * mean at least its stub delay and under the mean total. */
static void check_summary(const char *what, const char *err, int n, double tokens, double llm_delay_ms) {
    summary s = read_summary(err);
    CHECK_MSG(s.found == 5, "%s: %d of the 5 summary lines", what, s.found);
    CHECK_MSG(s.requests == n && s.answered == n && s.failed == 0 && s.answers == n, "%s: %d requests, %d answered",
              what, s.requests, s.answered);
    CHECK_MSG(s.seconds > 0 && s.per_s > 0 && fabs(s.per_s * s.seconds - n) <= 0.1 * n + 1,
              "%s: %.1f requests/s over %.1fs for %d", what, s.per_s, s.seconds, n);
    CHECK_MSG(tokens > 0 && s.tokens == tokens && fabs(s.tokens_per_s * s.seconds - tokens) <= 0.1 * tokens + 1,
              "%s: %g tokens (%g/s), the lines say %g", what, s.tokens, s.tokens_per_s, tokens);
    CHECK_MSG(s.p50 > 0 && s.p50 <= s.p99 && s.p99 <= s.seconds * 1000, "%s: latency p50 %g, p99 %g", what, s.p50,
              s.p99);
    CHECK_MSG(s.llm >= llm_delay_ms * 0.9 && s.total >= s.llm, "%s: mean llm %g ms (delay %g), total %g", what, s.llm,
              llm_delay_ms, s.total);
    printf("%s: %d requests in %.1fs, %.1f/s, %g tokens, p50 %.1f ms, p99 %.1f ms, llm %.1f ms, total %.1f ms, "
           "%g transport retries\n",
           what, s.requests, s.seconds, s.per_s, s.tokens, s.p50, s.p99, s.llm, s.total, s.transport_retries);
}

#define RESTART_N 400

/* The gateway dies (SIGKILL) a quarter into the run and is back on its port a second later:
 * every request is answered, once, rightly; the summary shows the transport retries. */
static void scenario_gateway_restart(stub_pipeline *p) {
    char reqs[256], out[256], err[256], cmd[8192];
    snprintf(reqs, sizeof reqs, "%s/restart.jsonl", work);
    snprintf(out, sizeof out, "%s/restart_out.jsonl", work);
    snprintf(err, sizeof err, "%s/restart_err.txt", work);
    write_requests(reqs, RESTART_N, 0);
    snprintf(cmd, sizeof cmd, "exec %s --gateway %s --concurrency 8 --progress none --out %s %s 2> %s", batch_bin,
             p->url, out, reqs, err);
    pid_t batch = start_command(cmd);
    CHECK_MSG(wait_lines(out, RESTART_N / 4, 20000) == 0, "the run did not get a quarter through");
    int before = count_lines(out);
    stop_child(p->gateway, SIGKILL);
    sleep_ms(1000);
    p->gateway = start_gateway(p);
    int rc = wait_command(batch, 60000);
    char *text = read_text(err);
    CHECK_MSG(rc == 0, "lion-batch across a gateway restart: exit %d\n%s", rc, text ? text : "");
    printf("gateway restart: killed after %d of %d answers\n", before, RESTART_N);
    check_out_complete("gateway restart", out, RESTART_N, NULL, NULL, "image");
    out_check c = check_out(out, RESTART_N, NULL, NULL, "image");
    check_summary("gateway restart", text, RESTART_N, c.tokens, 2);
    summary s = read_summary(text);
    CHECK_MSG(s.transport_retries > 0, "no transport retry: the gateway was not killed mid-run?");
    free(text);
}

/* lion-batch dies (SIGKILL) mid-run; a torn line is added at the end of its output, as a
 * kill in the middle of a write would leave; --resume answers the rest: every id once. */
static void scenario_batch_killed(stub_pipeline *p) {
    char reqs[256], out[256], err[256], cmd[8192];
    snprintf(reqs, sizeof reqs, "%s/killed.jsonl", work);
    snprintf(out, sizeof out, "%s/killed_out.jsonl", work);
    snprintf(err, sizeof err, "%s/killed_err.txt", work);
    write_requests(reqs, RESTART_N, 0);
    snprintf(cmd, sizeof cmd, "exec %s --gateway %s --concurrency 8 --progress none --out %s %s 2> %s", batch_bin,
             p->url, out, reqs, err);
    pid_t batch = start_command(cmd);
    CHECK_MSG(wait_lines(out, RESTART_N / 3, 20000) == 0, "the run did not get a third through");
    kill(batch, SIGKILL);
    CHECK_EQ_INT(wait_command(batch, 5000), -1);
    int before = count_lines(out);
    CHECK_MSG(before < RESTART_N, "the run ended before it was killed");
    FILE *f = fopen(out, "a");
    if (f) fputs("{\"id\":\"r0399\",\"task\":\"image_level\",\"status\":200,\"text\":\"descr", f);
    if (f) fclose(f);

    snprintf(cmd, sizeof cmd, "%s --gateway %s --concurrency 8 --progress none --resume --out %s %s 2> %s", batch_bin,
             p->url, out, reqs, err);
    int rc = run(cmd);
    char *text = read_text(err);
    CHECK_MSG(rc == 0, "lion-batch --resume: exit %d\n%s", rc, text ? text : "");
    char want[256];
    snprintf(want, sizeof want, "%d of %d requests answered already; dropped: 0 error lines, 0 duplicates, 0 broken "
             "lines, 1 torn last line\n", before, RESTART_N);
    CHECK_CONTAINS(text, want);
    printf("lion-batch killed after %d of %d answers, then --resume\n", before, RESTART_N);
    check_out_complete("kill -9 + --resume", out, RESTART_N, NULL, NULL, "image");
    summary s = read_summary(text);
    CHECK_MSG(s.requests == RESTART_N - before, "--resume sent %d requests, not the %d unanswered", s.requests,
              RESTART_N - before);
    free(text);
}

/* --resume over a file with an error line, a second line of an answered id, a line that is
 * not JSON and a torn end: the file is rewritten with the answers, the rest is sent again,
 * and --check counts the kept answers too. */
static void scenario_resume_rewrite(stub_pipeline *p) {
    char reqs[256], out[256], err[256], cmd[8192], line0[512], line2[512];
    snprintf(reqs, sizeof reqs, "%s/rewrite.jsonl", work);
    snprintf(out, sizeof out, "%s/rewrite_out.jsonl", work);
    snprintf(err, sizeof err, "%s/rewrite_err.txt", work);
    write_requests(reqs, 5, 1);
    char a0[256], a2[256];
    expected_text(a0, sizeof a0, "describe image 0", "dog,cat", "image", 0, 0);
    expected_text(a2, sizeof a2, "describe image 2", "dog,cat", "image", 0, 0);
    snprintf(line0, sizeof line0, "{\"id\":\"r0000\",\"status\":200,\"text\":\"%s\"}", a0);
    snprintf(line2, sizeof line2, "{\"id\":\"r0002\",\"status\":200,\"text\":\"%s\"}", a2);
    FILE *f = fopen(out, "w");
    if (f) {
        fprintf(f, "%s\n{\"id\":\"r0001\",\"status\":503,\"error\":\"HTTP 503: no live vision worker\"}\n", line0);
        fprintf(f, "{\"id\":\"r0000\",\"status\":200,\"text\":\"a second answer\"}\nnot json\n");
        fprintf(f, "%s\n{\"id\":\"r00", line2); /* the torn end */
        fclose(f);
    }
    snprintf(cmd, sizeof cmd, "%s --gateway %s --check --progress none --resume --out %s %s 2> %s", batch_bin, p->url,
             out, reqs, err);
    int rc = run(cmd);
    char *text = read_text(err);
    CHECK_MSG(rc == 0, "lion-batch --resume --check: exit %d\n%s", rc, text ? text : "");
    CHECK_CONTAINS(text, "2 of 5 requests answered already; dropped: 1 error lines, 1 duplicates, 1 broken lines, "
                         "1 torn last line (file rewritten)");
    CHECK_CONTAINS(text, "5 passed, 0 failed");
    check_out_complete("--resume rewrite", out, 5, NULL, NULL, "image");
    char *o = read_text(out);
    CHECK_MSG(o && !strncmp(o, line0, strlen(line0)) && strstr(o, line2), "the kept lines changed:\n%s", o ? o : "");
    free(o);
    snprintf(cmd, sizeof cmd, "test ! -e %s.resume-tmp", out);
    CHECK_MSG(run(cmd) == 0, "the rewrite left its temporary file");
    /* nothing left to do: a second --resume sends nothing and keeps the file */
    snprintf(cmd, sizeof cmd, "%s --gateway %s --check --progress none --resume --out %s %s 2> %s", batch_bin, p->url,
             out, reqs, err);
    CHECK_EQ_INT(run(cmd), 0);
    check_out_complete("--resume with all answered", out, 5, NULL, NULL, "image");
    free(text);
}

/* --images: a folder's JPEG and PNG files (not its text file, not a folder named x.png), ids
 * their names; a glob with --task region_level. */
static void scenario_images(stub_pipeline *p) {
    char dir[256], path[512], out[256], err[256], cmd[8192];
    snprintf(dir, sizeof dir, "%s/images", work);
    snprintf(out, sizeof out, "%s/images_out.jsonl", work);
    snprintf(err, sizeof err, "%s/images_err.txt", work);
    snprintf(cmd, sizeof cmd, "mkdir -p %s/sub.png && echo notes > %s/notes.txt", dir, dir);
    CHECK_EQ_INT(run(cmd), 0);
    static const char *const names[] = {"a.png", "b.jpg", "c.JPEG", "d.jpeg"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        write_image(path);
    }
    snprintf(cmd, sizeof cmd,
             "%s --gateway %s --progress none --images %s --instruction 'describe the picture' --out %s 2> %s",
             batch_bin, p->url, dir, out, err);
    int rc = run(cmd);
    char *text = read_text(err);
    CHECK_MSG(rc == 0, "lion-batch --images DIR: exit %d\n%s", rc, text ? text : "");
    free(text);
    check_out_complete("--images DIR", out, 4, names, "describe the picture", "image");

    snprintf(cmd, sizeof cmd,
             "%s --gateway %s --progress none --images '%s/*.png' --task region_level --instruction 'find the dog' "
             "--out %s 2> %s",
             batch_bin, p->url, dir, out, err);
    rc = run(cmd);
    text = read_text(err);
    CHECK_MSG(rc == 0, "lion-batch --images GLOB: exit %d\n%s", rc, text ? text : "");
    free(text);
    check_out_complete("--images GLOB --task region_level", out, 1, names, "find the dog", "region");

    /* mistakes are named */
    snprintf(cmd, sizeof cmd, "--images %s", dir);
    check_refused(batch_bin, cmd, err, "--images needs --instruction");
    snprintf(cmd, sizeof cmd, "--images '%s/*.gif' --instruction x", dir);
    check_refused(batch_bin, cmd, err, "no file matches it");
}

/* Two gateways, one of them dead (nobody listens on its port), given both ways (a repeated
 * option, a comma list): everything is answered through the other. */
static void scenario_two_gateways(stub_pipeline *p) {
    char reqs[256], out[256], err[256], cmd[8192], dead[64];
    snprintf(reqs, sizeof reqs, "%s/two.jsonl", work);
    snprintf(out, sizeof out, "%s/two_out.jsonl", work);
    snprintf(err, sizeof err, "%s/two_err.txt", work);
    snprintf(dead, sizeof dead, "http://127.0.0.1:%d", free_port());
    write_requests(reqs, 60, 0);
    for (int form = 0; form < 2; form++) {
        if (form == 0)
            snprintf(cmd, sizeof cmd, "%s --gateway %s --gateway %s/ --concurrency 6 --progress none --out %s %s 2> %s",
                     batch_bin, dead, p->url, out, reqs, err);
        else
            snprintf(cmd, sizeof cmd, "%s --gateway %s,%s --concurrency 6 --progress none --out %s %s 2> %s", batch_bin,
                     p->url, dead, out, reqs, err);
        int rc = run(cmd);
        char *text = read_text(err);
        CHECK_MSG(rc == 0, "two gateways, one dead (form %d): exit %d\n%s", form, rc, text ? text : "");
        check_out_complete(form ? "two gateways (A,B)" : "two gateways (--gateway A --gateway B)", out, 60, NULL, NULL,
                           "image");
        char want[256];
        snprintf(want, sizeof want, "lion-batch: gateway %s: 60 answers, 0 transport errors", p->url);
        CHECK_CONTAINS(text, want);
        snprintf(want, sizeof want, "lion-batch: gateway %s: 0 answers, ", dead);
        CHECK_CONTAINS(text, want);
        if (form == 0) {
            out_check c = check_out(out, 60, NULL, NULL, "image");
            check_summary("two gateways", text, 60, c.tokens, 2);
        }
        free(text);
    }
}

static void run_stub_scenarios(void) {
    stub_pipeline p;
    if (start_stub_pipeline(&p, "2") == 0) {
        char img[256];
        snprintf(img, sizeof img, "%s/img.png", work);
        write_image(img);
        scenario_two_gateways(&p);
        scenario_images(&p);
        scenario_resume_rewrite(&p);
        scenario_batch_killed(&p);
        scenario_gateway_restart(&p);
    }
    stop_all();
}

/* The fixture's runs on the real workers. */
static void run_real_workers(void) {
    char dir[2048], model[2200], path[2200], batch[4096], gw[4096], bins[5][4096];
    snprintf(dir, sizeof dir, "%s", testing_fixture("batch"));
    snprintf(path, sizeof path, "%s/meta.json", dir);
    char *meta_text = read_text(path);
    cJSON *meta = meta_text ? cJSON_Parse(meta_text) : NULL;
    free(meta_text);
    CHECK_MSG(meta != NULL, "no fixture in %s (tests/fixtures/gen_batch.py)", dir);
    if (!meta) return;
    snprintf(model, sizeof model, "%s/model", dir);
    const char *bin_dir = getenv("LION_BIN_DIR");
    snprintf(gw, sizeof gw, "%s", gateway_bin);
    snprintf(batch, sizeof batch, "%s", batch_bin);

    int port = free_port();
    char listen[64], url[96], ep[5][64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    static const char *const names[] = {"", "vision", "tagger", "aggregator", "llm"};
    for (int s = 1; s <= 4; s++) {
        snprintf(ep[s], sizeof ep[s], "tcp://127.0.0.1:%d", free_port());
        snprintf(bins[s], sizeof bins[s], "%s/lion-%s", bin_dir ? bin_dir : "build/services", names[s]);
    }
    const char *argv[] = {gw, "--listen", listen, "--vision", ep[1], "--tagger", ep[2], "--aggregator", ep[3],
                          "--llm", ep[4], NULL};
    CHECK(spawn(argv) > 0);
    for (int s = 1; s <= 4; s++) {
        const char *wargv[] = {bins[s], "--gateway", ep[s], "--model", model, "--threads", "1", NULL};
        CHECK_MSG(spawn(wargv) > 0, "cannot start %s", bins[s]);
    }
    int ok = 0;
    for (int i = 0; i < 1200 && !(ok = ready(port)); i++) sleep_ms(50);
    CHECK_MSG(ok, "the workers did not all register with the gateway");
    if (ok) {
        check_jsonl_run(dir, batch, url, meta);
        check_examples_run(dir, batch, url);
        check_params_run(dir, batch, url);
    }
    stop_all();
    check_retries(dir, batch, gw);
    check_errors(dir, batch, free_port());
    cJSON_Delete(meta);
}

static void run_all(void) {
    const char *bin_dir = getenv("LION_BIN_DIR"), *build = getenv("LION_BUILD_DIR");
    snprintf(gateway_bin, sizeof gateway_bin, "%s/lion-gateway", bin_dir ? bin_dir : "build/services");
    snprintf(batch_bin, sizeof batch_bin, "%s/tools/batch/lion-batch", build ? build : "build");
    snprintf(work, sizeof work, "/tmp/lion-test-batch-XXXXXX");
    CHECK_MSG(mkdtemp(work) != NULL, "no temporary folder");
    run_stub_scenarios();
    run_real_workers();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", work);
    run(cmd);
}

int main(int argc, char **argv) { return gateway_harness_main(argc, argv, run_all); }
