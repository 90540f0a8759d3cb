/* gateway_harness.h - what the gateway tests share: this test binary re-run as a stub
 * worker of any stage ("--stub STAGE": toy process functions on common/worker.h whose
 * outputs show what each stage received, so that an answer's text proves the whole path:
 * image bytes -> vision -> ViT frames forwarded to the aggregator -> visual tokens to the
 * llm, tagger tags into the llm's task, attempt numbers; a Pink stub set: vision's visual
 * tokens straight to the llm), child processes, a small HTTP
 * client over loopback, and the test image with the stub pipeline's expected answers. */
#ifndef LION_GATEWAY_HARNESS_H
#define LION_GATEWAY_HARNESS_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <sys/types.h>

/* A gateway test's main(): runs as a stub worker when asked ("--stub STAGE ..."), else
 * finds this executable (for spawn_stub), makes the test image, runs run() and returns
 * testing_finish(). */
int gateway_harness_main(int argc, char **argv, void (*run)(void));

void sleep_ms(int ms);

/* children: spawned(0) is the first one spawned (the gateway, by convention) */
pid_t spawn(const char *const *argv);
pid_t spawn_stub(const char *stage, const char *endpoint, const char *replica, const char *delay_ms,
                 const char *capacity);
/* A stub with more worker options (NULL-terminated), e.g. CURVE keys, or what it announces:
 * "--announce-model", NAME, "--announce-family", "pink" (a Pink vision stub returns
 * visual_tokens; an llm stub that announces a model ends its text with "|llm=NAME"). */
pid_t spawn_stub_with(const char *stage, const char *endpoint, const char *replica, const char *const *extra);
pid_t spawned(int i);
/* Signals a child and reaps it: its exit status, -1 when it died by a signal or was killed. */
int stop_child(pid_t pid, int sig);
/* Stops the others, then spawned(0): its exit status (0 only after a clean shutdown). */
int stop_all(void);
int free_port(void);

/* HTTP/1.1 over loopback */
typedef struct reply {
    int status;
    char head[4096];
    char *body;
    size_t body_len;
    cJSON *json; /* the body parsed, NULL when it is not JSON */
} reply;
void reply_free(reply *r);
int http_connect(int port);
int send_all(int fd, const char *data, size_t len);
const char *header_value(const reply *r, const char *name);
/* One answer within timeout_ms; head_only: an answer to HEAD (no body follows). */
int read_reply_ex(int fd, reply *r, int timeout_ms, int head_only);
int read_reply(int fd, reply *r, int timeout_ms);
int http_raw(int port, const char *request, size_t len, reply *r);
char *format_request(const char *method, const char *path, const char *body, size_t *len);
int http(int port, const char *method, const char *path, const char *body, reply *r);
/* "a.b.0.c" paths into JSON */
const char *json_str(const cJSON *o, const char *path);
const cJSON *json_at(const cJSON *o, const char *path);
int wait_ready(int port, int want_status, const char *want, int timeout_ms);
double metric_value(const char *text, const char *series);

/* the test image (PNG signature + pattern bytes) and what the stub pipeline answers for it */
#define GATEWAY_TEST_IMAGE_BYTES 300
extern unsigned char test_image[GATEWAY_TEST_IMAGE_BYTES];
extern char *image_b64;
void expected_text(char *out, size_t cap, const char *instruction, const char *tags, const char *type,
                   unsigned attempt, unsigned seq);
/* What a Pink pipeline of stubs answers (the "pink" vision stub's visual tokens, no tags), the
 * llm stub announcing llm_model. */
void expected_pink_text(char *out, size_t cap, const char *instruction, const char *type, const char *llm_model);
char *generate_body(const char *instruction, const char *extra);

#endif
