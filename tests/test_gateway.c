/* The gateway as a separate process with stub workers of every stage (gateway_harness.h):
 * real HTTP over loopback on a healthy pipeline: native and OpenAI answers, error JSON for
 * malformed requests, keep-alive, HEAD, multipart, fuzzed requests, taps that see meta/ and
 * data/ messages, /metrics as Prometheus text, the connection cap; and the base64 payload
 * decoder directly. Failures: test_gateway_failures.c; the real workers:
 * test_gateway_workers.c. */
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
#include "protocol.h"
#include "testing.h"
#include "worker.h"

extern char **environ;
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
    CHECK(cJSON_GetNumberValue(json_at(r.json, "usage.completion_tokens")) == 4); /* 2 sequences of 2 generated tokens (the start id is not one) */
    /* the stub llm reports visual rows + instruction length as its prompt */
    const double prompt = cJSON_GetNumberValue(json_at(r.json, "usage.prompt_tokens"));
    CHECK_MSG(prompt > (double)strlen("find the cat"), "usage.prompt_tokens %g", prompt);
    CHECK(cJSON_GetNumberValue(json_at(r.json, "usage.total_tokens")) == prompt + 4);
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

/* Jobs sent to workers so far, all stages. */
static double jobs_sent(int port) {
    reply r;
    double total = 0;
    CHECK(http(port, "GET", "/metrics", NULL, &r) == 0);
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++) {
        char series[96];
        snprintf(series, sizeof series, "lion_jobs_total{stage=\"%s\",model=\"tiny-test\"}", lion_stage_name(s));
        total += metric_value(r.body ? r.body : "", series);
    }
    reply_free(&r);
    return total;
}

/* protocol.h's limits: what the llm would refuse is refused here with a 400 naming the
 * field, before any stage gets a job; values at the limits go through. */
static void check_protocol_limits(int port) {
    char extra[160];
    const double before = jobs_sent(port);
    static const struct {
        const char *fmt;
        double value;
        const char *message;
    } over[] = {
        {"\"num_beams\":%.0f", LION_MAX_BEAMS + 1, "'num_beams' must be an integer from 1 to 16"},
        {"\"max_new_tokens\":%.0f", LION_MAX_NEW_TOKENS + 1, "'max_new_tokens' must be an integer from 1 to 512"},
        {"\"min_length\":%.0f", LION_MAX_MIN_LENGTH + 1, "'min_length' must be an integer from 0 to 513"},
        {"\"num_return_sequences\":%.0f", LION_MAX_RETURN_SEQUENCES + 1, "'num_return_sequences' must be an integer"},
        {"\"repetition_penalty\":%g", LION_MAX_REPETITION_PENALTY * 2, "'repetition_penalty' must be a number"},
        {"\"length_penalty\":%g", -LION_MAX_ABS_LENGTH_PENALTY * 2, "'length_penalty' must be a number"},
        {"\"temperature\":%g", LION_MAX_TEMPERATURE * 2, "'temperature' must be a number"},
        {"\"do_sample\":true,\"num_beams\":%.0f", 2, "sampling with num_beams 2 is not supported"},
        {"\"num_beams\":2,\"num_return_sequences\":%.0f", 3, "'num_return_sequences' 3 is more than num_beams 2"},
        {"\"do_sample\":true,\"temperature\":%.0f", 0, "'temperature' must be above 0 when sampling"},
    };
    for (size_t i = 0; i < sizeof over / sizeof over[0]; i++) {
        snprintf(extra, sizeof extra, over[i].fmt, over[i].value);
        char *body = generate_body("hi", extra);
        check_error(port, "POST", "/v1/generate", body, 400, "invalid_argument", over[i].message);
        free(body);
    }
    char tags[LION_MAX_TAG_BYTES + 32];
    snprintf(tags, sizeof tags, "\"tags\":[\"%0*d\"]", LION_MAX_TAG_BYTES + 1, 0);
    char *body = generate_body("hi", tags);
    check_error(port, "POST", "/v1/generate", body, 400, "invalid_argument", "must be a non-empty string of at most 128");
    free(body);
    body = generate_body("hi", "\"top_k\":10001");
    check_error(port, "POST", "/v1/tags", body, 400, "invalid_argument", "'top_k' must be an integer from 0 to 10000");
    free(body);
    CHECK_MSG(jobs_sent(port) == before, "a refused request reached a stage: %g jobs before, %g after", before,
              jobs_sent(port));
    /* at the limits: answered */
    snprintf(extra, sizeof extra, "\"num_beams\":%d,\"max_new_tokens\":%d,\"num_return_sequences\":%d", LION_MAX_BEAMS,
             LION_MAX_NEW_TOKENS, LION_MAX_RETURN_SEQUENCES);
    body = generate_body("hi", extra);
    reply r;
    CHECK(http(port, "POST", "/v1/generate", body, &r) == 0);
    CHECK_MSG(r.status == 200, "a request at the limits: %d %s", r.status, r.body ? r.body : "");
    reply_free(&r);
    free(body);
}

/* A chat request body: the test image as a data URI of media type `type`, the instruction,
 * and extra top-level fields. */
static char *chat_body(const char *type, const char *instruction, const char *extra) {
    size_t n = strlen(image_b64) + strlen(instruction) + (extra ? strlen(extra) : 0) + 512;
    char *body = malloc(n);
    snprintf(body, n,
             "{%s%s\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":"
             "{\"url\":\"data:%s;base64,%s\"}},{\"type\":\"text\",\"text\":\"%s\"}]}]}",
             extra ? extra : "", extra ? "," : "", type, image_b64, instruction);
    return body;
}

/* The events of a streamed (chunked, text/event-stream) answer: the raw body de-chunked
 * into out, 0 when the stream ended with its last chunk. */
static int read_event_stream(int fd, reply *head, char **out, size_t *out_len, int timeout_ms) {
    size_t cap = 1 << 16, len = 0;
    char *raw = malloc(cap);
    int64_t until = clock_mono_us() + (int64_t)timeout_ms * 1000;
    char *body = NULL;
    while (clock_mono_us() < until) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        if (len + 4096 > cap) raw = realloc(raw, cap *= 2);
        ssize_t n = recv(fd, raw + len, cap - len - 1, 0);
        if (n <= 0) break;
        len += (size_t)n;
        raw[len] = 0;
        if ((body = strstr(raw, "\r\n\r\n")) && strstr(body, "\r\n0\r\n\r\n")) break;
        body = NULL;
    }
    memset(head, 0, sizeof *head);
    if (!body) {
        free(raw);
        return -1;
    }
    sscanf(raw, "HTTP/1.1 %d", &head->status);
    size_t hl = (size_t)(body - raw) + 4;
    memcpy(head->head, raw, hl < sizeof head->head ? hl : sizeof head->head - 1);
    /* de-chunk */
    char *p = body + 4, *dst = malloc(len + 1);
    size_t dl = 0;
    for (;;) {
        size_t size = strtoul(p, &p, 16);
        p += 2;
        if (size == 0) break;
        memcpy(dst + dl, p, size);
        dl += size;
        p += size + 2;
    }
    dst[dl] = 0;
    *out = dst;
    *out_len = dl;
    free(raw);
    return 0;
}

/* stream: true on /v1/chat/completions: OpenAI's chunks, the text assembled from the
 * content deltas equals the non-streamed answer; /v1/generate's events likewise. */
static void check_streaming(int port) {
    char want[512];
    expected_text(want, sizeof want, "stream it", "dog,cat", "image", 0, 0);
    char *body = chat_body("image/png", "stream it",
                           "\"model\":\"tiny-test\",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    size_t len;
    char *req = format_request("POST", "/v1/chat/completions", body, &len);
    int fd = http_connect(port);
    CHECK(fd >= 0 && send_all(fd, req, len) == 0);
    reply head;
    char *events = NULL;
    size_t n_events = 0;
    CHECK(read_event_stream(fd, &head, &events, &n_events, 10000) == 0);
    close(fd);
    free(req);
    free(body);
    if (!events) return;
    CHECK_EQ_INT(head.status, 200);
    CHECK_CONTAINS(header_value(&head, "Content-Type"), "text/event-stream");
    char text[1024] = "";
    int chunks = 0, role_first = 0, finish = 0, usage = 0, done = 0, content_deltas = 0;
    char *save = NULL; /* strtok_r: json_str walks its paths with strtok */
    for (char *line = strtok_r(events, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "data: ", 6) != 0) continue;
        if (!strcmp(line + 6, "[DONE]")) {
            done = 1;
            continue;
        }
        cJSON *j = cJSON_Parse(line + 6);
        CHECK_MSG(j, "event not JSON: %s", line);
        if (!j) continue;
        CHECK(json_str(j, "object") && !strcmp(json_str(j, "object"), "chat.completion.chunk"));
        if (chunks++ == 0) role_first = json_str(j, "choices.0.delta.role") != NULL;
        const char *content = json_str(j, "choices.0.delta.content");
        if (content && *content) {
            content_deltas++;
            strncat(text, content, sizeof text - strlen(text) - 1);
        }
        const char *fr = json_str(j, "choices.0.finish_reason");
        if (fr) finish = !strcmp(fr, "stop");
        if (cJSON_IsObject(json_at(j, "usage"))) usage = cJSON_GetArraySize(json_at(j, "choices")) == 0 &&
                                                         json_at(j, "usage.completion_tokens")->valuedouble == 2;
        cJSON_Delete(j);
    }
    CHECK_MSG(!strcmp(text, want), "streamed text '%s', expected '%s'", text, want);
    CHECK_MSG(content_deltas >= 3, "%d content deltas: the text did not come in pieces", content_deltas);
    CHECK(role_first);
    CHECK(finish);
    CHECK(usage);
    CHECK(done);
    free(events);

    body = generate_body("stream it", "\"stream\":true");
    req = format_request("POST", "/v1/generate", body, &len);
    fd = http_connect(port);
    CHECK(fd >= 0 && send_all(fd, req, len) == 0);
    CHECK(read_event_stream(fd, &head, &events, &n_events, 10000) == 0);
    close(fd);
    free(req);
    free(body);
    if (!events) return;
    text[0] = 0;
    int done_ok = 0;
    const char *event = "";
    save = NULL;
    for (char *line = strtok_r(events, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(line, "event: ", 7)) {
            event = line + 7;
            continue;
        }
        if (strncmp(line, "data: ", 6) != 0) continue;
        cJSON *j = cJSON_Parse(line + 6);
        if (!strcmp(event, "text") && json_str(j, "text")) strncat(text, json_str(j, "text"), sizeof text - strlen(text) - 1);
        if (!strcmp(event, "done"))
            done_ok = json_str(j, "text") && !strcmp(json_str(j, "text"), want) && json_str(j, "finish_reason");
        cJSON_Delete(j);
    }
    CHECK_MSG(!strcmp(text, want), "generate stream text '%s', expected '%s'", text, want);
    CHECK(done_ok);
    free(events);
}

/* What OpenAI clients meet: finish_reason and usage as the llm reports them, the newer
 * max_completion_tokens, an unknown model, refused fields, media types, HTTP versions. */
static void check_openai_conformance(int port) {
    /* cut by max_completion_tokens: "length", completion_tokens = the limit */
    char *body = chat_body("image/png", "cut me", "\"model\":\"tiny-test\",\"max_completion_tokens\":2");
    reply r;
    CHECK(http(port, "POST", "/v1/chat/completions", body, &r) == 0);
    free(body);
    CHECK_EQ_INT(r.status, 200);
    CHECK(json_str(r.json, "choices.0.finish_reason") && !strcmp(json_str(r.json, "choices.0.finish_reason"), "length"));
    CHECK(json_at(r.json, "usage.completion_tokens") && json_at(r.json, "usage.completion_tokens")->valuedouble == 2);
    reply_free(&r);
    body = chat_body("image/png", "whole", "\"model\":\"tiny-test\"");
    CHECK(http(port, "POST", "/v1/chat/completions", body, &r) == 0);
    free(body);
    CHECK(json_str(r.json, "choices.0.finish_reason") && !strcmp(json_str(r.json, "choices.0.finish_reason"), "stop"));
    CHECK(json_at(r.json, "usage.completion_tokens") && json_at(r.json, "usage.completion_tokens")->valuedouble == 2);
    reply_free(&r);

    body = chat_body("image/png", "hi", "\"model\":\"gpt-4o\"");
    check_error(port, "POST", "/v1/chat/completions", body, 404, "model_not_found", "'gpt-4o' does not exist");
    free(body);
    CHECK(http(port, "POST", "/v1/chat/completions", (body = chat_body("image/png", "hi", "\"model\":\"gpt-4o\"")), &r) == 0);
    CHECK(json_str(r.json, "error.param") && !strcmp(json_str(r.json, "error.param"), "model"));
    CHECK(json_str(r.json, "error.type") && !strcmp(json_str(r.json, "error.type"), "invalid_request_error"));
    reply_free(&r);
    free(body);
    static const struct {
        const char *extra, *message;
    } refused[] = {
        {"\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]", "'tools' is not supported"},
        {"\"response_format\":{\"type\":\"json_object\"}", "'response_format': only {\"type\": \"text\"}"},
        {"\"logprobs\":true", "'logprobs' is not supported"},
        {"\"stop\":[\"\\n\"]", "'stop' is not supported"},
        {"\"presence_penalty\":0.5", "'presence_penalty' is not supported"},
        {"\"n\":2,\"temperature\":0.7", "'n' above 1 needs beam search"},
        {"\"stream\":\"yes\"", "'stream' must be true or false"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        body = chat_body("image/png", "hi", refused[i].extra);
        check_error(port, "POST", "/v1/chat/completions", body, 400, "invalid_argument", refused[i].message);
        free(body);
    }
    /* fields that change nothing are taken */
    body = chat_body("image/png", "fine", "\"response_format\":{\"type\":\"text\"},\"logprobs\":false,\"user\":\"u1\"");
    CHECK(http(port, "POST", "/v1/chat/completions", body, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    reply_free(&r);
    free(body);
    body = chat_body("text/plain", "hi", NULL);
    check_error(port, "POST", "/v1/chat/completions", body, 400, "invalid_argument", "media type 'text/plain' is not an image");
    free(body);

    /* HTTP versions other than 1.0 and 1.1: 505 */
    static const char v2[] = "GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n";
    CHECK(http_raw(port, v2, sizeof v2 - 1, &r) == 0);
    CHECK_EQ_INT(r.status, 505);
    CHECK_CONTAINS(json_str(r.json, "error.message"), "HTTP/2.0 is not supported");
    reply_free(&r);
    /* a chunked body over the limit: 413, readable (no reset), while the client still sends */
    int fd = http_connect(port);
    static const char head[] = "POST /v1/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    CHECK(fd >= 0 && send_all(fd, head, sizeof head - 1) == 0);
    char chunk[4096 + 16];
    int n = snprintf(chunk, sizeof chunk, "1000\r\n");
    memset(chunk + n, 'x', 4096);
    memcpy(chunk + n + 4096, "\r\n", 2);
    for (int i = 0; i < 24; i++) send_all(fd, chunk, (size_t)n + 4098); /* 96 KiB, the limit is 64 */
    CHECK(read_reply(fd, &r, 5000) == 0);
    CHECK_EQ_INT(r.status, 413);
    CHECK_CONTAINS(json_str(r.json, "error.message"), "the limit is 65536");
    reply_free(&r);
    close(fd);
}

/* GET /v1/pipeline (the web page's Watch view): every stage with its live worker, and, once
 * watched, the requests that finish with their hops and tensor shapes; GET / the page. */
static void check_pipeline_view(int port) {
    reply r;
    CHECK(http(port, "GET", "/v1/pipeline", NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(cJSON_GetArraySize(json_at(r.json, "stages")), 4);
    static const char *const names[] = {"vision", "tagger", "aggregator", "llm"};
    for (int s = 0; s < 4; s++) {
        char key[64];
        snprintf(key, sizeof key, "stages.%d.name", s);
        CHECK(json_str(r.json, key) && !strcmp(json_str(r.json, key), names[s]));
        snprintf(key, sizeof key, "stages.%d.workers.0.replica", s);
        CHECK_MSG(json_str(r.json, key), "stage %s shows no worker", names[s]);
    }
    reply_free(&r);
    /* watched now: a request that finishes is listed, newest first, with its hops */
    char *body = generate_body("watch me", "\"tags\":[\"a\"]");
    CHECK(http(port, "POST", "/v1/generate", body, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    char id[64];
    snprintf(id, sizeof id, "%s", json_str(r.json, "request_id") ? json_str(r.json, "request_id") : "?");
    reply_free(&r);
    free(body);
    CHECK(http(port, "GET", "/v1/pipeline", NULL, &r) == 0);
    CHECK_MSG(json_str(r.json, "recent.0.id") && !strcmp(json_str(r.json, "recent.0.id"), id), "recent: %s",
              r.body ? r.body : "");
    CHECK_EQ_INT((int)cJSON_GetNumberValue(json_at(r.json, "recent.0.status")), 200);
    CHECK(json_str(r.json, "recent.0.stages.0.stage") && !strcmp(json_str(r.json, "recent.0.stages.0.stage"), "vision"));
    CHECK(json_str(r.json, "recent.0.stages.0.replica") &&
          !strcmp(json_str(r.json, "recent.0.stages.0.replica"), "vision-1"));
    CHECK(json_str(r.json, "recent.0.stages.0.tensors.0.name") &&
          !strcmp(json_str(r.json, "recent.0.stages.0.tensors.0.name"), "vit_layer_1"));
    CHECK_EQ_INT((int)cJSON_GetNumberValue(json_at(r.json, "recent.0.stages.0.tensors.0.shape.1")), 3);
    CHECK(cJSON_IsNumber(json_at(r.json, "stages.0.busy_fraction")));
    CHECK(cJSON_IsNumber(json_at(r.json, "requests.per_second")));
    reply_free(&r);
    /* the page: only plain file names, never a path out of its folder */
    CHECK(http(port, "GET", "/../CMakeLists.txt", NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    reply_free(&r);
    CHECK(http(port, "GET", "/.gitignore", NULL, &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    reply_free(&r);
}

/* A multipart/form-data upload: the raw image as a file part, the rest as fields. */
static void check_multipart(int port) {
    static const char boundary[] = "----lionTestBoundary7MA4YWxk";
    char *req = malloc(sizeof test_image + 4096);
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
    memcpy(req + cl + n, test_image, 10);
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
            snprintf(topics[n], 320, "%s %s %d%s", topic, lion_kind_name(env->kind), nf,
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
    CHECK(metric_value(t, "lion_workers{stage=\"llm\",model=\"tiny-test\"}") == 1);
    CHECK(metric_value(t, "lion_http_requests_total{route=\"/v1/generate\",status=\"200\"}") >= 3);
    CHECK(metric_value(t, "lion_errors_total{code=\"invalid_argument\"}") >= 10);
    CHECK(metric_value(t, "lion_queue_depth{stage=\"vision\",model=\"tiny-test\"}") == 0);
    CHECK(metric_value(t, "lion_tap_messages_total") >= 9);
    CHECK(metric_value(t, "lion_stage_duration_seconds_count{stage=\"aggregator\",model=\"tiny-test\"}") >= 3);
    CHECK(metric_value(t, "lion_stage_duration_seconds_bucket{stage=\"aggregator\",model=\"tiny-test\",le=\"+Inf\"}") ==
          metric_value(t, "lion_stage_duration_seconds_count{stage=\"aggregator\",model=\"tiny-test\"}"));
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
    check_protocol_limits(port);
    check_openai_conformance(port);
    check_streaming(port);
    check_pipeline_view(port);
    check_keep_alive(port);
    check_head(port);
    check_multipart(port);
    check_fuzz(port);
    check_taps(port, tap_ep);
    check_metrics(port);
    check_connection_cap(port, 16);
    CHECK_EQ_INT(stop_all(), 0);
}


static void run_all(void) {
    check_base64();
    scenario_pipeline();
}

int main(int argc, char **argv) { return gateway_harness_main(argc, argv, run_all); }
