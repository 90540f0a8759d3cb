/* One gateway serving two models at once, with stub workers (gateway_harness.h): a LION set
 * (vision, tagger, aggregator, llm) and a Pink set (vision, llm) on the same stage endpoints.
 * Requests go by their "model" to that model's workers only (a Pink request touches only its
 * vision and llm stubs, and the llm gets the Pink vision stub's visual tokens, no tags);
 * /v1/models, /readyz, /metrics and /v1/pipeline per model; an unknown model is 404; workers
 * the gateway cannot use (a model it does not serve, the model as another family, a stage the
 * model's pipeline lacks) are refused. Also --model-name's list, a gateway of one model,
 * which takes every worker of its family whatever model it announces, and a real worker
 * announcing its model directory's name. */
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "gateway_impl.h"
#include "gateway_harness.h"
#include "testing.h"

/* --- --model-name ------------------------------------------------------------------------- */

static void check_model_list(void) {
    gateway_config cfg;
    lion_status st;
    char *two[] = {"gw", "--model-name", "tiny-lion,tiny-pink=pink"};
    CHECK_EQ_INT(gateway_config_parse(&cfg, 3, two, &st), 0);
    CHECK_EQ_INT(cfg.n_models, 2);
    CHECK(!strcmp(cfg.models[0].name, "tiny-lion") && cfg.models[0].family == GATEWAY_FAMILY_LION);
    CHECK(!strcmp(cfg.models[1].name, "tiny-pink") && cfg.models[1].family == GATEWAY_FAMILY_PINK);
    int region = -1;
    CHECK_EQ_INT(models_find(&cfg, "tiny-pink", &region), 1);
    CHECK_EQ_INT(region, 0);
    CHECK_EQ_INT(models_find(&cfg, "tiny-lion-region", &region), 0);
    CHECK_EQ_INT(region, 1);
    CHECK_EQ_INT(models_find(&cfg, "tiny", &region), -1);
    CHECK_EQ_INT(models_find(&cfg, "-region", &region), -1);
    CHECK(model_has_stage(&cfg, 0, LION__STAGE__TAGGER) && model_has_stage(&cfg, 0, LION__STAGE__AGGREGATOR));
    CHECK(model_has_stage(&cfg, 1, LION__STAGE__VISION) && model_has_stage(&cfg, 1, LION__STAGE__LLM));
    CHECK(!model_has_stage(&cfg, 1, LION__STAGE__TAGGER) && !model_has_stage(&cfg, 1, LION__STAGE__AGGREGATOR));
    char text[256];
    models_list(&cfg, text, sizeof text);
    CHECK(!strcmp(text, "'tiny-lion', 'tiny-lion-region', 'tiny-pink' and 'tiny-pink-region'"));

    /* the default: one LION model, as before */
    char *none[] = {"gw"};
    CHECK_EQ_INT(gateway_config_parse(&cfg, 1, none, &st), 0);
    CHECK_EQ_INT(cfg.n_models, 1);
    CHECK(!strcmp(cfg.models[0].name, "lion-flant5") && cfg.models[0].family == GATEWAY_FAMILY_LION);
    models_list(&cfg, text, sizeof text);
    CHECK(!strcmp(text, "'lion-flant5' and 'lion-flant5-region'"));

    static const struct {
        const char *list, *want;
    } refused[] = {
        {"a,a", "--model-name: 'a' is listed twice"},
        {"a=gpt", "--model-name: a: unknown family 'gpt' (lion, pink)"},
        {"a,,b", "--model-name: an empty model name in the list"},
        {"a,=pink", "--model-name: an empty model name in the list"},
        {"a b", "--model-name: 'a b' has a ' ' (names use A-Z a-z 0-9 . _ : + @ / -)"},
        {"a,b,c,d,e,f,g,h,i", "--model-name: more than 8 models"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char *argv[] = {"gw", "--model-name", (char *)refused[i].list};
        CHECK_EQ_INT(gateway_config_parse(&cfg, 3, argv, &st), -1);
        CHECK_MSG(!strcmp(st.msg, refused[i].want), "%s: \"%s\", expected \"%s\"", refused[i].list, st.msg,
                  refused[i].want);
    }
}

/* --- helpers ------------------------------------------------------------------------------ */

/* A gateway on fresh loopback ports; ep[1..4] its stage endpoints. */
static int start_gateway(const char *models, char ep[5][64]) {
    int port = free_port();
    static char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    for (int s = 1; s <= 4; s++) snprintf(ep[s], sizeof ep[s], "tcp://127.0.0.1:%d", free_port());
    static char gw_bin[4096];
    const char *bin_dir = getenv("LION_BIN_DIR");
    snprintf(gw_bin, sizeof gw_bin, "%s/lion-gateway", bin_dir ? bin_dir : "build/services");
    const char *argv[] = {gw_bin, "--listen", listen, "--vision", ep[1], "--tagger", ep[2], "--aggregator", ep[3],
                          "--llm", ep[4], "--model-name", models, "--heartbeat-ms", "100",
                          "--worker-timeout-ms", "1000", NULL};
    return spawn(argv) > 0 ? port : -1;
}

/* A stub of stage that announces model and family (NULL: says nothing). */
static pid_t stub(const char *stage, const char *endpoint, const char *replica, const char *model,
                  const char *family) {
    const char *extra[5] = {NULL};
    int n = 0;
    if (model) extra[n++] = "--announce-model", extra[n++] = model;
    if (family) extra[n++] = "--announce-family", extra[n++] = family;
    return spawn_stub_with(stage, endpoint, replica, extra);
}

static double metric_now(int port, const char *series) {
    reply m;
    double v = -1;
    if (http(port, "GET", "/metrics", NULL, &m) == 0) v = metric_value(m.body ? m.body : "", series);
    reply_free(&m);
    return v;
}

/* The metric's value, polled until it equals want or timeout_ms pass. */
static int metric_reaches(int port, const char *series, double want, int timeout_ms) {
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        if (metric_now(port, series) == want) return 1;
        sleep_ms(20);
    }
    return 0;
}

static int str_is(const char *s, const char *want) { return s && !strcmp(s, want); }

/* POST /v1/generate of instruction with extra fields; the reply in r. */
static void generate(int port, const char *instruction, const char *extra, reply *r) {
    char *body = generate_body(instruction, extra);
    if (http(port, "POST", "/v1/generate", body, r) != 0) memset(r, 0, sizeof *r);
    free(body);
}

static char *chat_body(const char *instruction, const char *model) {
    size_t n = strlen(image_b64) + strlen(instruction) + strlen(model) + 512;
    char *body = malloc(n);
    snprintf(body, n,
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":"
             "{\"url\":\"data:image/png;base64,%s\"}},{\"type\":\"text\",\"text\":\"%s\"}]}]}",
             model, image_b64, instruction);
    return body;
}

static void check_error(const reply *r, int status, const char *code, const char *message) {
    CHECK_EQ_INT(r->status, status);
    CHECK_MSG(str_is(json_str(r->json, "error.code"), code), "code %s, expected %s",
              json_str(r->json, "error.code") ? json_str(r->json, "error.code") : "(none)", code);
    CHECK_CONTAINS(json_str(r->json, "error.message"), message);
}

/* --- two models at once -------------------------------------------------------------------- */

static void check_models_listed(int port) {
    reply r;
    CHECK(http(port, "GET", "/v1/models", NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(cJSON_GetArraySize(json_at(r.json, "data")), 4);
    static const char *const ids[] = {"tiny-lion", "tiny-lion-region", "tiny-pink", "tiny-pink-region"};
    static const char *const families[] = {"lion", "lion", "pink", "pink"};
    for (int i = 0; i < 4; i++) {
        char key[32];
        snprintf(key, sizeof key, "data.%d.id", i);
        CHECK_MSG(str_is(json_str(r.json, key), ids[i]), "%s is not %s", key, ids[i]);
        snprintf(key, sizeof key, "data.%d.family", i);
        CHECK(str_is(json_str(r.json, key), families[i]));
        snprintf(key, sizeof key, "data.%d.object", i);
        CHECK(str_is(json_str(r.json, key), "model"));
    }
    reply_free(&r);
}

/* A form upload names its model as a field (kept a string, as the instruction is). */
static void check_form(int port) {
    static const char boundary[] = "----lionModelsBoundary";
    char head[1024], tail[128], *req = malloc(sizeof test_image + 4096);
    int n = snprintf(head, sizeof head,
                     "--%s\r\nContent-Disposition: form-data; name=\"instruction\"\r\n\r\nform pink\r\n"
                     "--%s\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ntiny-pink\r\n"
                     "--%s\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
                     "Content-Type: image/png\r\n\r\n",
                     boundary, boundary, boundary);
    int t = snprintf(tail, sizeof tail, "\r\n--%s--\r\n", boundary);
    size_t body_len = (size_t)n + sizeof test_image + (size_t)t;
    int h = snprintf(req, 512,
                     "POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=%s\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     boundary, body_len);
    memcpy(req + h, head, (size_t)n);
    memcpy(req + h + n, test_image, sizeof test_image);
    memcpy(req + h + n + sizeof test_image, tail, (size_t)t);
    reply r;
    CHECK(http_raw(port, req, (size_t)h + body_len, &r) == 0);
    free(req);
    CHECK_EQ_INT(r.status, 200);
    char want[512];
    expected_pink_text(want, sizeof want, "form pink", "image", "tiny-pink");
    CHECK_MSG(str_is(json_str(r.json, "text"), want), "form: text '%s', expected '%s'",
              json_str(r.json, "text") ? json_str(r.json, "text") : "(none)", want);
    reply_free(&r);
}

/* Each model's requests reach that model's workers: the LION answer went through the tagger
 * and the aggregator and the LION llm; the Pink answer through Pink's vision (its visual
 * tokens, marked -1) and Pink's llm only, with no tags. */
static void check_routing(int port) {
    char want[512];
    reply r;
    generate(port, "lion default", NULL, &r);
    CHECK_EQ_INT(r.status, 200);
    expected_text(want, sizeof want, "lion default", "dog,cat", "image", 0, 0);
    strcat(want, "|llm=tiny-lion");
    CHECK_MSG(str_is(json_str(r.json, "text"), want), "text '%s', expected '%s'",
              json_str(r.json, "text") ? json_str(r.json, "text") : "", want);
    CHECK(str_is(json_str(r.json, "model"), "tiny-lion"));
    CHECK(cJSON_IsNumber(json_at(r.json, "timings_ms.tagger")) && cJSON_IsNumber(json_at(r.json, "timings_ms.aggregator")));
    reply_free(&r);

    const double lion_vision_jobs = metric_now(port, "lion_jobs_total{stage=\"vision\",model=\"tiny-lion\"}");
    const double lion_llm_jobs = metric_now(port, "lion_jobs_total{stage=\"llm\",model=\"tiny-lion\"}");
    CHECK(lion_vision_jobs >= 1 && lion_llm_jobs >= 1);
    for (int i = 0; i < 3; i++) {
        generate(port, "pink one", "\"model\":\"tiny-pink\"", &r);
        CHECK_EQ_INT(r.status, 200);
        expected_pink_text(want, sizeof want, "pink one", "image", "tiny-pink");
        CHECK_MSG(str_is(json_str(r.json, "text"), want), "text '%s', expected '%s'",
                  json_str(r.json, "text") ? json_str(r.json, "text") : "", want);
        CHECK(str_is(json_str(r.json, "model"), "tiny-pink"));
        CHECK(cJSON_IsNumber(json_at(r.json, "timings_ms.vision")) && cJSON_IsNumber(json_at(r.json, "timings_ms.llm")));
        CHECK_MSG(!json_at(r.json, "timings_ms.tagger") && !json_at(r.json, "timings_ms.aggregator"),
                  "a Pink request went through a tagger or an aggregator: %s", r.body ? r.body : "");
        CHECK_EQ_INT(cJSON_GetArraySize(json_at(r.json, "tags")), 0);
        reply_free(&r);
    }
    /* not one job of them at a LION worker */
    CHECK(metric_now(port, "lion_jobs_total{stage=\"vision\",model=\"tiny-lion\"}") == lion_vision_jobs);
    CHECK(metric_now(port, "lion_jobs_total{stage=\"llm\",model=\"tiny-lion\"}") == lion_llm_jobs);
    CHECK(metric_now(port, "lion_jobs_total{stage=\"vision\",model=\"tiny-pink\"}") == 3);
    CHECK(metric_now(port, "lion_jobs_total{stage=\"llm\",model=\"tiny-pink\"}") == 3);
    /* Pink has no tagger or aggregator pools to show */
    CHECK(metric_now(port, "lion_jobs_total{stage=\"tagger\",model=\"tiny-pink\"}") == -1);
    CHECK(metric_now(port, "lion_workers{stage=\"aggregator\",model=\"tiny-pink\"}") == -1);

    /* the OpenAI route: NAME-region is the region-level task of that model */
    char *body = chat_body("where is it", "tiny-pink-region");
    CHECK(http(port, "POST", "/v1/chat/completions", body, &r) == 0);
    free(body);
    CHECK_EQ_INT(r.status, 200);
    expected_pink_text(want, sizeof want, "where is it", "region", "tiny-pink");
    CHECK(str_is(json_str(r.json, "choices.0.message.content"), want));
    CHECK(str_is(json_str(r.json, "model"), "tiny-pink"));
    CHECK_EQ_INT(cJSON_GetArraySize(json_at(r.json, "lion.boxes")), 1);
    reply_free(&r);
    body = chat_body("and the lion", "tiny-lion");
    CHECK(http(port, "POST", "/v1/chat/completions", body, &r) == 0);
    free(body);
    expected_text(want, sizeof want, "and the lion", "dog,cat", "image", 0, 0);
    strcat(want, "|llm=tiny-lion");
    CHECK(str_is(json_str(r.json, "choices.0.message.content"), want));
    reply_free(&r);
    /* /v1/generate takes the suffix too */
    generate(port, "pink region", "\"model\":\"tiny-pink-region\"", &r);
    expected_pink_text(want, sizeof want, "pink region", "region", "tiny-pink");
    CHECK(str_is(json_str(r.json, "text"), want));
    reply_free(&r);
    check_form(port);
}

/* What a model cannot do is refused before any stage works on it; an unknown model is 404. */
static void check_refusals(int port) {
    reply r;
    generate(port, "x", "\"model\":\"gpt-4o\"", &r);
    check_error(&r, 404, "model_not_found",
                "'gpt-4o' does not exist: this gateway serves 'tiny-lion', 'tiny-lion-region', 'tiny-pink' and "
                "'tiny-pink-region'");
    CHECK(str_is(json_str(r.json, "error.param"), "model"));
    reply_free(&r);
    char *body = chat_body("x", "tiny-pink-regional");
    CHECK(http(port, "POST", "/v1/chat/completions", body, &r) == 0);
    free(body);
    check_error(&r, 404, "model_not_found", "'tiny-pink-regional' does not exist");
    reply_free(&r);
    generate(port, "x", "\"model\":7", &r);
    check_error(&r, 400, "invalid_argument", "'model' must be a string");
    reply_free(&r);
    generate(port, "x", "\"model\":\"tiny-pink\",\"tags\":[\"dog\"]", &r);
    check_error(&r, 400, "invalid_argument", "'tags': model tiny-pink (pink) takes no tags");
    reply_free(&r);
    char tags_body[1024];
    snprintf(tags_body, sizeof tags_body, "{\"image\":\"%s\",\"model\":\"tiny-pink\"}", image_b64);
    CHECK(http(port, "POST", "/v1/tags", tags_body, &r) == 0);
    check_error(&r, 400, "invalid_argument", "model tiny-pink (pink) has no tagger");
    reply_free(&r);
    snprintf(tags_body, sizeof tags_body, "{\"image\":\"%s\",\"model\":\"tiny-lion\"}", image_b64);
    CHECK(http(port, "POST", "/v1/tags", tags_body, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(str_is(json_str(r.json, "model"), "tiny-lion"));
    reply_free(&r);
}

/* Workers the gateway cannot use: refused, counted, given nothing. */
static void check_refused_workers(int port) {
    CHECK_MSG(metric_reaches(port, "lion_workers_refused{stage=\"vision\"}", 1, 5000),
              "the worker of a model not served was not refused");
    CHECK_MSG(metric_reaches(port, "lion_workers_refused{stage=\"tagger\"}", 1, 5000),
              "a tagger for the Pink model was not refused");
    CHECK_MSG(metric_reaches(port, "lion_workers_refused{stage=\"llm\"}", 1, 5000),
              "a worker of tiny-pink as a LION model was not refused");
    CHECK(metric_now(port, "lion_workers_refused{stage=\"aggregator\"}") == 0);
    CHECK(metric_now(port, "lion_workers{stage=\"vision\",model=\"tiny-lion\"}") == 1);
    CHECK(metric_now(port, "lion_workers{stage=\"vision\",model=\"tiny-pink\"}") == 1);
    CHECK(metric_now(port, "lion_workers{stage=\"tagger\",model=\"tiny-lion\"}") == 1);
    CHECK(metric_now(port, "lion_workers{stage=\"llm\",model=\"tiny-pink\"}") == 1);
    CHECK(metric_now(port, "lion_workers{stage=\"llm\",model=\"tiny-lion\"}") == 1);
    CHECK(metric_now(port, "lion_worker_info{stage=\"llm\",replica=\"llm-pink\",precision=\"unknown\",isa=\"unknown\","
                           "model=\"tiny-pink\"}") == 1);
    /* each pool's replicas: the refused ones in none */
    reply r;
    CHECK(http(port, "GET", "/v1/pipeline", NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(!strstr(r.body ? r.body : "", "vision-other") && !strstr(r.body ? r.body : "", "tagger-pink") &&
          !strstr(r.body ? r.body : "", "llm-wrong-family"));
    reply_free(&r);
}

/* /readyz: every model ready, or ?model=NAME one; /v1/pipeline: every model's stages. */
static void check_views(int port, pid_t pink_llm) {
    reply r;
    CHECK(http(port, "GET", "/readyz", NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(cJSON_GetNumberValue(json_at(r.json, "workers.vision")) == 2);
    CHECK(cJSON_GetNumberValue(json_at(r.json, "models.tiny-pink.workers.llm")) == 1);
    CHECK(str_is(json_str(r.json, "models.tiny-pink.family"), "pink"));
    CHECK(!json_at(r.json, "models.tiny-pink.workers.tagger"));
    CHECK(cJSON_GetNumberValue(json_at(r.json, "models.tiny-lion.workers.aggregator")) == 1);
    reply_free(&r);

    /* watched from now: the next request is listed with its model */
    CHECK(http(port, "GET", "/v1/pipeline", NULL, &r) == 0);
    CHECK(str_is(json_str(r.json, "model"), "tiny-lion"));
    CHECK_EQ_INT(cJSON_GetArraySize(json_at(r.json, "models")), 2);
    CHECK(str_is(json_str(r.json, "models.1.name"), "tiny-pink") && str_is(json_str(r.json, "models.1.family"), "pink"));
    CHECK_EQ_INT(cJSON_GetArraySize(json_at(r.json, "stages")), 6);
    CHECK(str_is(json_str(r.json, "stages.3.name"), "llm") && str_is(json_str(r.json, "stages.3.model"), "tiny-lion"));
    CHECK(str_is(json_str(r.json, "stages.4.name"), "vision") && str_is(json_str(r.json, "stages.4.model"), "tiny-pink"));
    CHECK(str_is(json_str(r.json, "stages.5.workers.0.replica"), "llm-pink"));
    reply_free(&r);
    generate(port, "watched", "\"model\":\"tiny-pink\"", &r);
    CHECK_EQ_INT(r.status, 200);
    reply_free(&r);
    CHECK(http(port, "GET", "/v1/pipeline", NULL, &r) == 0);
    CHECK(str_is(json_str(r.json, "recent.0.model"), "tiny-pink"));
    CHECK_EQ_INT(cJSON_GetArraySize(json_at(r.json, "recent.0.stages")), 2);
    CHECK(str_is(json_str(r.json, "recent.0.stages.0.tensors.0.name"), "visual_tokens"));
    reply_free(&r);

    /* the Pink llm leaves: Pink is not ready, LION still is and still answers */
    CHECK_EQ_INT(stop_child(pink_llm, SIGTERM), 0);
    CHECK(wait_ready(port, 503, "no live llm worker for model tiny-pink", 5000) == 0);
    CHECK(http(port, "GET", "/readyz?model=tiny-lion", NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(json_at(r.json, "models.tiny-lion") && !json_at(r.json, "models.tiny-pink"));
    reply_free(&r);
    CHECK(http(port, "GET", "/readyz?model=tiny%2Dpink", NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 503);
    reply_free(&r);
    CHECK(http(port, "GET", "/readyz?model=nope", NULL, &r) == 0);
    check_error(&r, 404, "model_not_found", "'nope' does not exist");
    reply_free(&r);
    generate(port, "pink again", "\"model\":\"tiny-pink\"", &r);
    check_error(&r, 503, "unavailable", "no live llm worker for model tiny-pink");
    reply_free(&r);
    generate(port, "lion again", NULL, &r);
    CHECK_EQ_INT(r.status, 200);
    reply_free(&r);
}

static void scenario_two_models(void) {
    char ep[5][64];
    int port = start_gateway("tiny-lion,tiny-pink=pink", ep);
    /* LION: the first three announce nothing (the default model, as workers did before they
     * announced one), its llm announces itself */
    stub("vision", ep[1], "vision-lion", NULL, NULL);
    stub("tagger", ep[2], "tagger-lion", NULL, NULL);
    stub("aggregator", ep[3], "aggregator-lion", NULL, NULL);
    stub("llm", ep[4], "llm-lion", "tiny-lion", "lion");
    /* Pink: vision and llm on the same endpoints */
    stub("vision", ep[1], "vision-pink", "tiny-pink", "pink");
    pid_t pink_llm = stub("llm", ep[4], "llm-pink", "tiny-pink", "pink");
    /* refused: a model not served, a stage Pink has not, Pink's name as a LION model */
    stub("vision", ep[1], "vision-other", "other-model", "lion");
    stub("tagger", ep[2], "tagger-pink", "tiny-pink", "pink");
    stub("llm", ep[4], "llm-wrong-family", "tiny-pink", "lion");
    if (port < 0 || wait_ready(port, 200, "\"tiny-pink\":{\"family\":\"pink\",\"workers\":{\"vision\":1,\"llm\":1}}",
                               15000) != 0) {
        CHECK_MSG(0, "the gateway did not become ready with both models");
        stop_all();
        return;
    }
    check_models_listed(port);
    check_refused_workers(port);
    check_routing(port);
    check_refusals(port);
    check_views(port, pink_llm);
    CHECK_EQ_INT(stop_all(), 0);
}

/* A gateway of one model takes every worker of its family, whatever model it announces (its
 * name was only what the API reports before workers announced theirs); another family is
 * still refused. */
static void scenario_one_model(void) {
    char ep[5][64];
    int port = start_gateway("solo", ep);
    static const char *const stages[] = {"vision", "tagger", "aggregator", "llm"};
    for (int s = 0; s < 4; s++) {
        char replica[32];
        snprintf(replica, sizeof replica, "%s-1", stages[s]);
        stub(stages[s], ep[s + 1], replica, "tiny-lion", "lion");
    }
    stub("vision", ep[1], "vision-pink", "tiny-pink", "pink");
    if (port < 0 || wait_ready(port, 200, "\"llm\":1", 15000) != 0) {
        CHECK_MSG(0, "the gateway of one model did not take workers announcing another name");
        stop_all();
        return;
    }
    reply r;
    generate(port, "solo", NULL, &r);
    CHECK_EQ_INT(r.status, 200);
    CHECK(str_is(json_str(r.json, "model"), "solo"));
    reply_free(&r);
    CHECK(metric_reaches(port, "lion_workers_refused{stage=\"vision\"}", 1, 5000));
    CHECK(metric_now(port, "lion_workers{stage=\"vision\",model=\"solo\"}") == 1);
    CHECK_EQ_INT(stop_all(), 0);
}

/* A real worker (worker_main) announces its model directory's name and family: with the
 * default model a Pink one, models/tiny-lion's tagger joins tiny-lion only because it says
 * so (announcing nothing, it would go to the default model, which has no tagger). */
static void scenario_real_worker(void) {
    char ep[5][64];
    int port = start_gateway("pinky=pink,tiny-lion", ep);
    char bin[4096];
    const char *bin_dir = getenv("LION_BIN_DIR");
    snprintf(bin, sizeof bin, "%s/lion-tagger", bin_dir ? bin_dir : "build/services");
    const char *argv[] = {bin, "--gateway", ep[2], "--model", "models/tiny-lion", "--threads", "1",
                          "--heartbeat-ms", "100", "--replica", "tagger-real", NULL};
    CHECK(port > 0 && spawn(argv) > 0);
    CHECK_MSG(metric_reaches(port, "lion_workers{stage=\"tagger\",model=\"tiny-lion\"}", 1, 15000),
              "the tiny-lion tagger did not join tiny-lion's pool");
    CHECK(metric_now(port, "lion_workers_refused{stage=\"tagger\"}") == 0);
    CHECK_EQ_INT(stop_all(), 0);
}

static void run_all(void) {
    check_model_list();
    scenario_two_models();
    scenario_one_model();
    scenario_real_worker();
}

int main(int argc, char **argv) { return gateway_harness_main(argc, argv, run_all); }
