/* lion-tap as a separate process against a stand-in tap publisher (an XPUB socket here
 * that sends meta/ and data/ messages as docs/wire-protocol.md specifies them): watch
 * prints the fields (PARTIAL and CANCEL too), filters by stage and request, dump then show
 * round-trips, damaged dumps are refused with a message; and a JOB/RESULT pair of the real
 * vision worker, dumped, replays into a fresh lion-vision with identical bytes, also from a
 * dump where a CANCEL precedes the JOB and a PARTIAL the RESULT (replay skips both). */
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "fake_gateway.h"
#include "testing.h"

extern char **environ;

static char tap_bin[4096], work[4096];

static const char *work_path(const char *name) {
    static char p[8][4096 + 64];
    static int next;
    char *s = p[next++ % 8];
    snprintf(s, sizeof p[0], "%s/%s", work, name);
    return s;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Starts argv with stdout and stderr into files. */
static pid_t spawn_to(const char *const *argv, const char *out, const char *err) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (out) posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (err) posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid = 0;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "cannot start %s: %s\n", argv[0], strerror(rc));
        return 0;
    }
    return pid;
}

/* Exit code, or -1 after killing a child that ran past timeout_ms. */
static int wait_exit(pid_t pid, int timeout_ms) {
    if (pid <= 0) return -1;
    int status;
    for (int waited = 0; waited < timeout_ms; waited += 20) {
        if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        sleep_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    fprintf(stderr, "child %d ran past %d ms\n", (int)pid, timeout_ms);
    return -1;
}

static char *slurp(const char *path) {
    size_t len = 0;
    unsigned char *b = testing_read_file(path, &len);
    char *s = malloc(len + 1);
    if (b) memcpy(s, b, len);
    s[b ? len : 0] = '\0';
    free(b);
    return s;
}

/* Runs lion-tap with args to its end; *out and *err get its output. */
static int run_tap(const char *const *args, char **out, char **err, int timeout_ms) {
    const char *argv[32] = {tap_bin};
    int n = 1;
    while (args[n - 1] && n < 31) argv[n] = args[n - 1], n++;
    argv[n] = NULL;
    int rc = wait_exit(spawn_to(argv, work_path("out.txt"), work_path("err.txt")), timeout_ms);
    *out = slurp(work_path("out.txt"));
    *err = slurp(work_path("err.txt"));
    return rc;
}

/* --- the stand-in publisher ---------------------------------------------------------- */

typedef struct publisher {
    void *ctx, *xpub;
    char endpoint[64];
} publisher;

static void publisher_open(publisher *p) {
    p->ctx = zmq_ctx_new();
    p->xpub = zmq_socket(p->ctx, ZMQ_XPUB);
    int linger = 0;
    zmq_setsockopt(p->xpub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_bind(p->xpub, "tcp://127.0.0.1:*");
    size_t len = sizeof p->endpoint;
    zmq_getsockopt(p->xpub, ZMQ_LAST_ENDPOINT, p->endpoint, &len);
}

static void publisher_close(publisher *p) {
    zmq_close(p->xpub);
    zmq_ctx_term(p->ctx);
}

/* Waits for the subscriber's subscription (XPUB hands it up); returns its prefix. */
static const char *wait_subscription(publisher *p, int timeout_ms) {
    static char prefix[128];
    prefix[0] = '\0';
    zmq_pollitem_t item = {p->xpub, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, timeout_ms) <= 0) return prefix;
    char buf[128];
    int n = zmq_recv(p->xpub, buf, sizeof buf - 1, 0);
    if (n >= 1 && n < (int)sizeof buf && buf[0] == 1) {
        memcpy(prefix, buf + 1, (size_t)n - 1);
        prefix[n - 1] = '\0';
    }
    return prefix;
}

static void send_raw(void *sock, const char *topic, const void *const *frames, const size_t *lens, int n) {
    zmq_send(sock, topic, strlen(topic), n ? ZMQ_SNDMORE : 0);
    for (int i = 0; i < n; i++) zmq_send(sock, frames[i], lens[i], i + 1 < n ? ZMQ_SNDMORE : 0);
}

/* Publishes env as meta/ (envelope alone) and data/ (with tensor frames). */
static void publish(publisher *p, Lion__Envelope *env, const char *dir, envelope_tensor *tensors, int n) {
    for (int data = 0; data <= 1; data++) {
        zmq_msg_t frames[8];
        lion_status st;
        if (envelope_encode(env, tensors, n, frames, &st) != 0) {
            CHECK_MSG(0, "envelope_encode: %s", st.msg);
            return;
        }
        char topic[256];
        snprintf(topic, sizeof topic, "%s/%s/%s/%s", data ? "data" : "meta", lion_stage_name(env->stage), dir,
                 env->request_id);
        zmq_send(p->xpub, topic, strlen(topic), ZMQ_SNDMORE);
        int last = data ? n : 0;
        for (int i = 0; i <= n; i++) {
            if (i <= last) zmq_msg_send(&frames[i], p->xpub, i < last ? ZMQ_SNDMORE : 0);
            zmq_msg_close(&frames[i]);
        }
    }
}

static const float layer1[6] = {1, -2, 3.5f, 0 /* NaN */, 0, 4};

/* A malformed pair, then a vision JOB and RESULT of req-1, an llm ERROR of req-2, and an llm
 * PARTIAL and CANCEL of req-3. */
static void publish_flow(publisher *p) {
    const void *junk[] = {"not a protobuf"};
    size_t junk_len[] = {14};
    send_raw(p->xpub, "meta/vision/in/req-bad", junk, junk_len, 1);
    send_raw(p->xpub, "data/vision/in/req-bad", junk, junk_len, 1);

    lion_status st;
    Lion__Envelope *job = envelope_new(LION__KIND__JOB, LION__STAGE__VISION, "req-1", &st);
    job->has_attempt = 1;
    envelope_add_hop(job, "gateway", "gw-1", 1000000, 1000250, &st);
    uint8_t image[6] = {0, 1, 2, 3, 4, 250};
    int64_t shape6[] = {6};
    tensor ti = tensor_view(DTYPE_U8, image, 1, shape6);
    envelope_tensor et = {"image", &ti, NULL};
    publish(p, job, "out", &et, 1);

    Lion__Envelope *res = envelope_reply(job, LION__KIND__RESULT, &st);
    envelope_add_hop(res, "vision", "vision-test", 2000000, 2001500, &st);
    float l1[6];
    memcpy(l1, layer1, sizeof l1);
    l1[3] = NAN;
    uint16_t l2[2] = {f32_to_f16(0.5f), f32_to_f16(1.5f)};
    int64_t shape23[] = {2, 3}, shape2[] = {2};
    tensor t1 = tensor_view(DTYPE_F32, l1, 2, shape23), t2 = tensor_view(DTYPE_F16, l2, 1, shape2);
    envelope_tensor outs[] = {{"vit_layer_1", &t1, NULL}, {"vit_layer_2", &t2, NULL}};
    publish(p, res, "in", outs, 2);

    Lion__Envelope *err = envelope_new(LION__KIND__ERROR, LION__STAGE__LLM, "req-2", &st);
    envelope_set_error(err, LION_ETIMEOUT, "deadline passed in queue", &st);
    publish(p, err, "in", NULL, 0);

    Lion__Envelope *llm_job = envelope_new(LION__KIND__JOB, LION__STAGE__LLM, "req-3", &st);
    llm_job->has_attempt = 1, llm_job->attempt = 2;
    int32_t ids[2] = {9, 4};
    Lion__Envelope *part = envelope_partial(llm_job, "a do", ids, 2, &st);
    part->has_sent_us = 1, part->sent_us = 3000000;
    publish(p, part, "in", NULL, 0);
    Lion__Envelope *cancel = envelope_cancel("req-3", LION__STAGE__LLM, 2, &st);
    publish(p, cancel, "out", NULL, 0);
    envelope_free(job);
    envelope_free(res);
    envelope_free(err);
    envelope_free(llm_job);
    envelope_free(part);
    envelope_free(cancel);
}

/* Starts lion-tap with args, publishes the flow once it subscribed, waits for its end. */
static int tap_against_flow(const char *const *args, const char *want_prefix, char **out, char **err) {
    publisher p;
    publisher_open(&p);
    const char *argv[32] = {tap_bin};
    int n = 1;
    for (; args[n - 1] && n < 29; n++) argv[n] = args[n - 1];
    argv[n++] = "--tap";
    argv[n++] = p.endpoint;
    argv[n] = NULL;
    pid_t pid = spawn_to(argv, work_path("out.txt"), work_path("err.txt"));
    const char *prefix = wait_subscription(&p, 10000);
    CHECK_MSG(strcmp(prefix, want_prefix) == 0, "subscribed to '%s', expected '%s'", prefix, want_prefix);
    publish_flow(&p);
    int rc = wait_exit(pid, 10000);
    publisher_close(&p);
    *out = slurp(work_path("out.txt"));
    *err = slurp(work_path("err.txt"));
    return rc;
}

static void test_watch(void) {
    char *out, *err;
    const char *meta[] = {"watch", "--count", "5", "--timeout-ms", "10000", NULL};
    CHECK_EQ_INT(tap_against_flow(meta, "meta/", &out, &err), 0);
    CHECK_CONTAINS(out, "req-1 vision out JOB attempt=0 hops=[gateway@gw-1 0.250 ms] tensors=[image U8 [6]]");
    CHECK_CONTAINS(out, "req-1 vision in RESULT attempt=0 hops=[gateway@gw-1 0.250 ms, vision@vision-test 1.500 ms]");
    CHECK_CONTAINS(out, "tensors=[vit_layer_1 F32 [2, 3]; vit_layer_2 F16 [2]]");
    CHECK_CONTAINS(out, "req-2 llm in ERROR attempt=0 hops=[] error=deadline_exceeded: deadline passed in queue");
    CHECK_CONTAINS(out, "req-3 llm in PARTIAL attempt=2 hops=[] text=\"a do\" tensors=[]");
    CHECK_CONTAINS(out, "req-3 llm out CANCEL attempt=2 hops=[] tensors=[]");
    CHECK_MSG(!strstr(out, "min="), "meta/ messages have no values to summarize");
    CHECK_MSG(!strstr(out, "req-bad"), "malformed messages are not printed");
    CHECK_CONTAINS(err, "bad envelope: envelope frame (14 bytes) is not a valid lion.Envelope");
    free(out), free(err);

    const char *data[] = {"watch", "--data", "--request", "req-1", "--count", "2", "--timeout-ms", "10000", NULL};
    CHECK_EQ_INT(tap_against_flow(data, "data/", &out, &err), 0);
    CHECK_CONTAINS(out, "image U8 [6] min=0 max=250 mean=43.3333 nan=0");
    CHECK_CONTAINS(out, "vit_layer_1 F32 [2, 3] min=-2 max=4 mean=1.3 nan=1");
    CHECK_CONTAINS(out, "vit_layer_2 F16 [2] min=0.5 max=1.5 mean=1 nan=0");
    CHECK_MSG(!strstr(out, "req-2"), "--request req-1 leaves req-2 out");
    free(out), free(err);

    const char *stage[] = {"watch", "--stage", "llm", "--count", "1", "--timeout-ms", "10000", NULL};
    CHECK_EQ_INT(tap_against_flow(stage, "meta/llm/", &out, &err), 0);
    CHECK_CONTAINS(out, "req-2 llm in ERROR");
    CHECK_MSG(!strstr(out, "vision"), "--stage llm leaves vision out: %s", out);
    free(out), free(err);

    /* fewer messages than --count before the timeout */
    const char *few[] = {"watch", "--tap", "tcp://127.0.0.1:1", "--count", "5", "--timeout-ms", "300", NULL};
    CHECK_EQ_INT(run_tap(few, &out, &err, 10000), 1);
    CHECK_CONTAINS(err, "0 of 5 messages before the timeout");
    free(out), free(err);
    const char *bad_stage[] = {"watch", "--tap", "tcp://127.0.0.1:1", "--stage", "ocr", NULL};
    CHECK_EQ_INT(run_tap(bad_stage, &out, &err, 10000), 2);
    CHECK_CONTAINS(err, "unknown stage 'ocr'");
    free(out), free(err);
}

static void write_bytes(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (len) fwrite(data, 1, len, f);
    fclose(f);
}

static void test_dump_show(void) {
    char *out, *err;
    const char *dump[] = {"dump", "--out", work_path("flow.dump"), "--count", "5", "--timeout-ms", "10000", NULL};
    CHECK_EQ_INT(tap_against_flow(dump, "data/", &out, &err), 0);
    free(out), free(err);

    const char *show[] = {"show", work_path("flow.dump"), NULL};
    CHECK_EQ_INT(run_tap(show, &out, &err, 10000), 0);
    CHECK_CONTAINS(out, "req-1 vision out JOB attempt=0 hops=[gateway@gw-1 0.250 ms] tensors=[image U8 [6] min=0 max=250");
    CHECK_CONTAINS(out, "vit_layer_1 F32 [2, 3] min=-2 max=4 mean=1.3 nan=1");
    CHECK_CONTAINS(out, "error=deadline_exceeded: deadline passed in queue");
    /* show's time comes from the envelope: the last hop's finish */
    CHECK_CONTAINS(out, "1970-01-01T00:00:02.001500Z req-1 vision in RESULT");
    CHECK_CONTAINS(out, "1970-01-01T00:00:03.000000Z req-3 llm in PARTIAL attempt=2 hops=[] text=\"a do\"");
    CHECK_CONTAINS(out, "req-3 llm out CANCEL attempt=2");
    free(out), free(err);
    const char *show_llm[] = {"show", work_path("flow.dump"), "--stage", "llm", NULL};
    CHECK_EQ_INT(run_tap(show_llm, &out, &err, 10000), 0);
    CHECK_CONTAINS(out, "req-2 llm in ERROR");
    CHECK_MSG(!strstr(out, "vision"), "show --stage llm leaves vision out");
    free(out), free(err);

    /* damaged dumps */
    size_t len;
    unsigned char *good = testing_read_file(work_path("flow.dump"), &len);
    CHECK(good && len > 100);
    if (!good) return;
    struct {
        const char *what;
        const void *bytes;
        size_t len;
        const char *msg;
    } cases[] = {
        {"cut", good, len - 3, "record 5 (offset "},
        {"cut", good, len - 3, "truncated record: frame 1 says"},
        {"count", "\x40\x42\x0f\x00", 4, "record 1 (offset 0): frame count 1000000 is too large, at most 66"},
        {"short count", "\x02\x00", 2, "truncated record: frame count needs 4 bytes, 2 left"},
        {"huge length", "\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10", 12,
         "truncated record: frame 0 says 1152921504606846976 bytes, 0 left"},
        {"bad envelope",
         "\x02\x00\x00\x00\x11\x00\x00\x00\x00\x00\x00\x00" "data/vision/out/r"
         "\x08\x00\x00\x00\x00\x00\x00\x00" "garbage!",
         4 + 8 + 17 + 8 + 8, "bad envelope: envelope frame (8 bytes) is not a valid lion.Envelope"},
        {"bad topic", "\x02\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00" "abc" "\x00\x00\x00\x00\x00\x00\x00\x00",
         4 + 8 + 3 + 8, "bad topic 'abc': it must start with meta/ or data/"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_bytes(work_path("bad.dump"), cases[i].bytes, cases[i].len);
        const char *args[] = {"show", work_path("bad.dump"), NULL};
        CHECK_EQ_INT(run_tap(args, &out, &err, 10000), 2);
        CHECK_CONTAINS(err, cases[i].msg);
        free(out), free(err);
    }
    /* every cut of a valid dump is refused or read cleanly, never a crash */
    for (size_t cut = 1; cut < len; cut += len / 7) {
        write_bytes(work_path("bad.dump"), good, cut);
        const char *args[] = {"show", work_path("bad.dump"), NULL};
        int rc = run_tap(args, &out, &err, 10000);
        CHECK_MSG(rc == 0 || rc == 2, "show of a cut dump exited %d", rc);
        if (rc != 0) CHECK_CONTAINS(err, "truncated record"); /* 0: the cut fell between records */
        free(out), free(err);
    }
    free(good);

    const char *nojob[] = {"replay", work_path("flow.dump"), "--request", "nope", "--stage", "vision",
                           "--bind", "tcp://127.0.0.1:1", NULL};
    CHECK_EQ_INT(run_tap(nojob, &out, &err, 10000), 2);
    CHECK_CONTAINS(err, "no JOB of request nope for stage vision");
    free(out), free(err);
    /* req-3 has a CANCEL in the dump but no JOB: nothing to replay */
    const char *cancel_only[] = {"replay", work_path("flow.dump"), "--request", "req-3", "--stage", "llm",
                                 "--bind", "tcp://127.0.0.1:1", NULL};
    CHECK_EQ_INT(run_tap(cancel_only, &out, &err, 10000), 2);
    CHECK_CONTAINS(err, "no JOB of request req-3 for stage llm");
    free(out), free(err);
}

/* --- replay against the real vision worker ------------------------------------------- */

static void write_record(FILE *f, const char *topic, zmq_msg_t *frames, int n) {
    uint32_t count = (uint32_t)n + 1; /* the test machines are little-endian, as the format */
    uint64_t len = strlen(topic);
    fwrite(&count, 4, 1, f);
    fwrite(&len, 8, 1, f);
    fwrite(topic, 1, len, f);
    for (int i = 0; i < n; i++) {
        len = zmq_msg_size(&frames[i]);
        fwrite(&len, 8, 1, f);
        fwrite(zmq_msg_data(&frames[i]), 1, len, f);
    }
}

static int free_port(void) {
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_ROUTER);
    zmq_bind(s, "tcp://127.0.0.1:*");
    char ep[64];
    size_t len = sizeof ep;
    zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &len);
    zmq_close(s);
    zmq_ctx_term(ctx);
    const char *colon = strrchr(ep, ':');
    return colon ? atoi(colon + 1) : 0;
}

/* A record of env alone (a data/ message without tensors). */
static void write_envelope_record(FILE *f, const char *topic, Lion__Envelope *env) {
    zmq_msg_t frame;
    lion_status st;
    if (envelope_encode(env, NULL, 0, &frame, &st) != 0) {
        CHECK_MSG(0, "%s", st.msg);
        return;
    }
    write_record(f, topic, &frame, 1);
    zmq_msg_close(&frame);
}

/* Dumps one vision JOB/RESULT pair of the real worker into good.dump, into flipped.dump
 * with one byte of vit_layer_1 changed, and into streamed.dump with a CANCEL before the JOB
 * and a PARTIAL before the RESULT. */
static int record_vision_pair(const char *bin, const char *model, const char *image_path) {
    const char *argv[] = {bin, "--model", model, "--threads", "1", "--replica", "vision-rec", NULL};
    fake_gateway g;
    if (fake_gateway_start(&g, argv, 30000) != 0) {
        fake_gateway_stop(&g);
        return -1;
    }
    size_t len;
    unsigned char *image = testing_read_file(image_path, &len);
    lion_status st;
    Lion__Envelope *job = envelope_new(LION__KIND__JOB, LION__STAGE__VISION, "req-v", &st);
    int64_t now = clock_unix_us();
    envelope_add_hop(job, "gateway", "gw-test", now, now + 100, &st);
    int64_t shape[] = {(int64_t)len};
    tensor t = tensor_view(DTYPE_U8, image, 1, shape);
    envelope_tensor et = {"image", &t, NULL};
    zmq_msg_t job_frames[2];
    envelope_msg reply;
    int rc = envelope_encode(job, &et, 1, job_frames, &st);
    if (rc == 0) rc = fake_gateway_call(&g, job, &et, 1, &reply, 60000);
    if (rc == 0 && reply.env->kind == LION__KIND__RESULT && reply.n_tensors > 0) {
        FILE *f = fopen(work_path("good.dump"), "wb");
        write_record(f, "data/vision/out/req-v", job_frames, 2);
        write_record(f, "data/vision/in/req-v", reply.frames, reply.n_frames);
        fclose(f);
        int i = envelope_msg_find(&reply, "vit_layer_1");
        if (i >= 0) ((unsigned char *)zmq_msg_data(&reply.frames[1 + i]))[0] ^= 1;
        f = fopen(work_path("flipped.dump"), "wb");
        write_record(f, "data/vision/out/req-v", job_frames, 2);
        write_record(f, "data/vision/in/req-v", reply.frames, reply.n_frames);
        fclose(f);
        if (i >= 0) ((unsigned char *)zmq_msg_data(&reply.frames[1 + i]))[0] ^= 1; /* back */
        Lion__Envelope *cancel = envelope_cancel("req-v", LION__STAGE__VISION, 0, &st);
        Lion__Envelope *part = envelope_partial(job, "part", NULL, 0, &st);
        f = fopen(work_path("streamed.dump"), "wb");
        write_envelope_record(f, "data/vision/out/req-v", cancel);
        write_record(f, "data/vision/out/req-v", job_frames, 2);
        write_envelope_record(f, "data/vision/in/req-v", part);
        write_record(f, "data/vision/in/req-v", reply.frames, reply.n_frames);
        fclose(f);
        envelope_free(cancel);
        envelope_free(part);
    } else {
        rc = -1;
    }
    if (rc == 0) envelope_msg_close(&reply);
    zmq_msg_close(&job_frames[0]);
    zmq_msg_close(&job_frames[1]);
    envelope_free(job);
    free(image);
    CHECK_EQ_INT(fake_gateway_stop(&g), 0);
    return rc;
}

static void test_replay(void) {
    char dir[4096], model[4096 + 64], image[4096 + 64], bin[4096];
    snprintf(dir, sizeof dir, "%s", testing_fixture("tap/vision_service"));
    snprintf(model, sizeof model, "%s/model", dir);
    snprintf(image, sizeof image, "%s/a.png", dir);
    const char *bin_dir = getenv("LION_BIN_DIR");
    snprintf(bin, sizeof bin, "%s/lion-vision", bin_dir ? bin_dir : "build/services");
    if (record_vision_pair(bin, model, image) != 0) {
        CHECK_MSG(0, "could not record a vision JOB/RESULT pair");
        return;
    }
    char bind[64], gateway[64];
    int port = free_port();
    snprintf(bind, sizeof bind, "tcp://127.0.0.1:%d", port);
    snprintf(gateway, sizeof gateway, "tcp://127.0.0.1:%d", port);
    const char *replay[] = {tap_bin, "replay", work_path("good.dump"), "--request", "req-v", "--stage", "vision",
                            "--bind", bind, "--out", work_path("result.dump"), "--timeout-ms", "30000", NULL};
    pid_t tap = spawn_to(replay, work_path("replay.txt"), work_path("replay.err"));
    const char *worker_argv[] = {bin, "--model", model, "--threads", "1", "--replica", "vision-fresh",
                                 "--heartbeat-ms", "200", "--gateway", gateway, NULL};
    pid_t worker = spawn_to(worker_argv, NULL, work_path("worker.err"));
    CHECK_EQ_INT(wait_exit(tap, 60000), 0);
    char *out = slurp(work_path("replay.txt")), *err = slurp(work_path("replay.err"));
    CHECK_CONTAINS(out, "worker vision-fresh connected; sending JOB req-v");
    CHECK_CONTAINS(out, "identical");
    free(out), free(err);

    const char *show[] = {"show", work_path("result.dump"), NULL};
    CHECK_EQ_INT(run_tap(show, &out, &err, 10000), 0);
    CHECK_CONTAINS(out, "req-v vision in RESULT attempt=1");
    CHECK_CONTAINS(out, "vit_layer_1 F32 [");
    free(out), free(err);

    /* the same worker, a dump whose answer has one byte changed: the difference is named
     * (the worker finds the new ROUTER by itself and heartbeats into it) */
    const char *flipped[] = {"replay", work_path("flipped.dump"), "--request", "req-v", "--stage", "vision",
                             "--bind", bind, "--timeout-ms", "30000", NULL};
    CHECK_EQ_INT(run_tap(flipped, &out, &err, 60000), 1);
    CHECK_CONTAINS(out, "differs: tensor 'vit_layer_1': first difference at byte 0 (element 0: ");
    free(out), free(err);

    /* CANCEL and PARTIAL records are neither the JOB nor its answer */
    const char *streamed[] = {"replay", work_path("streamed.dump"), "--request", "req-v", "--stage", "vision",
                              "--bind", bind, "--timeout-ms", "30000", NULL};
    CHECK_EQ_INT(run_tap(streamed, &out, &err, 60000), 0);
    CHECK_CONTAINS(out, "sending JOB req-v");
    CHECK_CONTAINS(out, "identical");
    free(out), free(err);

    kill(worker, SIGTERM);
    CHECK_EQ_INT(wait_exit(worker, 10000), 0);
}

int main(void) {
    const char *build = getenv("LION_BUILD_DIR");
    snprintf(tap_bin, sizeof tap_bin, "%s/tools/tap/lion-tap", build ? build : "build");
    snprintf(work, sizeof work, "%s", testing_fixture("tap"));
    mkdir(work, 0755);
    test_watch();
    test_dump_show();
    test_replay();
    return testing_finish();
}
