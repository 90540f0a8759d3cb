/* The gateway end to end with the real workers (lion-vision, lion-tagger, lion-aggregator,
 * lion-llm) on the tiny model of tests/fixtures/gen_gateway_workers.py: the gateway's
 * answers are lion_ref's LionModel answers, and the vision worker's feature cache hits. */
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
#include "gateway_harness.h"
#include "testing.h"
#include "worker.h"

extern char **environ;
/* ---------------------------------------------------------------------------------------- */
/* scenario 3: the real workers on the tiny model, against lion_ref                             */

/* The sum of a per-replica series over the stage's replicas ("name{stage=\"vision\",replica=").
 * -1 when absent. */
static double replica_sum(const char *text, const char *prefix, int *replicas) {
    double sum = 0;
    *replicas = 0;
    for (const char *p = strstr(text, prefix); p; p = strstr(p + 1, prefix)) {
        const char *v = strchr(p, '}');
        if (!v) break;
        sum += strtod(v + 1, NULL);
        ++*replicas;
    }
    return *replicas ? sum : -1;
}

/* Cache-aware routing: three distinct images, each sent several times, with two vision
 * replicas: every image is computed once (3 misses in all), the repeats hit, whichever
 * replica an image hashes to. Dispatch that ignored the image would compute each image on
 * both replicas (about 6 misses). */
static void check_cache_routing(int port, const char *dir) {
    static const char *const files[] = {"image_1.png", "image_2.png", "image.png"};
    static const int repeats[] = {4, 4, 2};
    char path[2300];
    reply r;
    for (int f = 0; f < 3; f++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[f]);
        size_t png_len = 0;
        unsigned char *png = testing_read_file(path, &png_len);
        CHECK_MSG(png, "no %s", path);
        if (!png) return;
        char *b64 = calloc(BASE64_ENCODE_RAW_LENGTH(png_len) + 1, 1);
        base64_encode_raw(b64, png_len, png);
        free(png);
        size_t cap = strlen(b64) + 256;
        char *body = malloc(cap);
        snprintf(body, cap, "{\"image\":\"%s\",\"instruction\":\"what is it\",\"tags\":[\"x\"]}", b64);
        for (int k = 0; k < repeats[f]; k++) {
            CHECK(http(port, "POST", "/v1/generate", body, &r) == 0);
            CHECK_EQ_INT(r.status, 200);
            /* the answer says whether vision's cache answered: the first sight of a new image
             * is a miss, every repeat (and image.png, seen before) a hit */
            const char *want_cache = k > 0 || f == 2 ? "hit" : "miss";
            const char *got_cache = json_str(r.json, "cache.vision");
            CHECK_MSG(got_cache && !strcmp(got_cache, want_cache), "%s #%d: cache.vision '%s', expected '%s'", files[f],
                      k, got_cache ? got_cache : "(none)", want_cache);
            reply_free(&r);
        }
        free(body);
        free(b64);
    }
    /* image.png was seen twice before: 1 miss, 1 hit; now 2 new images and 8 repeats */
    double hits = -1, misses = -1;
    int n_hits = 0, n_misses = 0;
    for (int tries = 0; tries < 40 && !(hits == 9 && misses == 3); tries++) {
        if (tries) sleep_ms(100);
        if (http(port, "GET", "/metrics", NULL, &r) != 0) continue;
        const char *t = r.body ? r.body : "";
        hits = replica_sum(t, "lion_worker_cache_hits_total{stage=\"vision\",replica=", &n_hits);
        misses = replica_sum(t, "lion_worker_cache_misses_total{stage=\"vision\",replica=", &n_misses);
        reply_free(&r);
    }
    CHECK_MSG(hits == 9 && misses == 3, "two vision replicas: %g hits, %g misses (want 9 and 3)", hits, misses);
    CHECK_EQ_INT(n_hits, 2);
    CHECK_EQ_INT(n_misses, 2);
}

static void scenario_real_workers(void) {
    char dir[2048], path[2200], model[2200];
    snprintf(dir, sizeof dir, "%s", testing_fixture("gateway"));
    snprintf(path, sizeof path, "%s/expected.json", dir);
    size_t len = 0;
    unsigned char *text = testing_read_file(path, &len);
    snprintf(path, sizeof path, "%s/image.png", dir);
    size_t png_len = 0;
    unsigned char *png = testing_read_file(path, &png_len);
    CHECK_MSG(text && png, "no fixture in %s (tests/fixtures/gen_gateway_workers.py)", dir);
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
                               "--replica", s == 1 ? "vision-a" : names[s], NULL};
        CHECK_MSG(spawn(wargv) > 0, "cannot start %s", bins[s]);
    }
    /* a second vision replica: an image's jobs must find the replica that cached it */
    const char *second[] = {bins[1], "--gateway", ep[1], "--model", model, "--threads", "1", "--heartbeat-ms", "200",
                            "--replica", "vision-b", NULL};
    CHECK(spawn(second) > 0);
    if (wait_ready(port, 200, "\"vision\":2", 60000) != 0 || wait_ready(port, 200, "\"llm\":1", 60000) != 0) {
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
            hit = r.body && strstr(r.body, "lion_cache_hits_total{stage=\"vision\",model=\"tiny-lion\"} 1\n") &&
                  strstr(r.body, "lion_cache_misses_total{stage=\"vision\",model=\"tiny-lion\"} 1\n");
            reply_free(&r);
        }
        if (!hit) sleep_ms(100);
    }
    CHECK_MSG(hit, "/metrics never showed the vision worker's one cache hit and one miss");
    check_cache_routing(port, dir);
    free(body);
    free(b64);
    cJSON_Delete(expected);
    CHECK_EQ_INT(stop_all(), 0);
}


int main(int argc, char **argv) { return gateway_harness_main(argc, argv, scenario_real_workers); }
