/* test_batch: lion-batch against lion-gateway and the four real workers on a random tiny
 * model (tests/fixtures/gen_batch.py): every answer gets a JSON line with the request's
 * fields and lion_ref's answer, --check counts the request whose expected answer is wrong on
 * purpose as failed (and exits 1), --draw writes the region answer's PNG with the expected
 * box in green, plain progress lines go to stderr; the evaluate.py examples format passes. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
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

    /* --draw: the region request's image with the expected box in green along its top edge */
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

static void check_errors(const char *dir, const char *batch, int dead_port) {
    char cmd[16384], path[4400];
    /* nobody listens: a transport error per request, exit 1 */
    snprintf(cmd, sizeof cmd,
             "%s --gateway http://127.0.0.1:%d --progress none %s/requests.json > /dev/null 2> %s/dead.txt", batch,
             dead_port, dir, dir);
    CHECK_EQ_INT(run(cmd), 1);
    snprintf(path, sizeof path, "%s/dead.txt", dir);
    char *err = read_text(path);
    CHECK_CONTAINS(err, "lion-batch: request a: http://127.0.0.1:");
    CHECK_CONTAINS(err, "Couldn't connect to server");
    free(err);
    /* a broken requests file is named with its line */
    snprintf(path, sizeof path, "%s/bad.jsonl", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"id\":1,\"image\":\"img_0.png\",\"instruction\":\"hi\"}\n{\"id\":2,\"image\":\"img_0.png\"}\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s %s 2> %s/bad.txt", batch, path, dir);
    CHECK_EQ_INT(run(cmd), 2);
    snprintf(path, sizeof path, "%s/bad.txt", dir);
    err = read_text(path);
    CHECK_CONTAINS(err, "bad.jsonl:2: missing 'instruction'");
    free(err);
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

int main(void) {
    char dir[2048], model[2200], path[2200], batch[4096], gw[4096], bins[5][4096];
    snprintf(dir, sizeof dir, "%s", testing_fixture("batch"));
    snprintf(path, sizeof path, "%s/meta.json", dir);
    char *meta_text = read_text(path);
    cJSON *meta = meta_text ? cJSON_Parse(meta_text) : NULL;
    free(meta_text);
    CHECK_MSG(meta != NULL, "no fixture in %s (tests/fixtures/gen_batch.py)", dir);
    if (!meta) return testing_finish();
    snprintf(model, sizeof model, "%s/model", dir);
    const char *bin_dir = getenv("LION_BIN_DIR"), *build = getenv("LION_BUILD_DIR");
    snprintf(gw, sizeof gw, "%s/lion-gateway", bin_dir ? bin_dir : "build/services");
    snprintf(batch, sizeof batch, "%s/tools/batch/lion-batch", build ? build : "build");

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
    }
    stop_all();
    check_retries(dir, batch, gw);
    check_errors(dir, batch, free_port());
    cJSON_Delete(meta);
    return testing_finish();
}
