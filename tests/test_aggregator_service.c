/* The aggregator service as a separate process over ZeroMQ: it answers jobs with the
 * reference's visual tokens (BERT tokenization of the instruction, Q-Former + vision
 * aggregator, <= 1e-4 relative) for F32 and F16 ViT layers, batched jobs each with their own
 * answer (in batches over 64 too), F16 output on request; jobs with a missing layer, a wrong
 * shape or dtype, or a bad layer name get an ERROR naming it while the rest of their batch
 * succeeds; a malformed frame is survived; SIGTERM exits cleanly. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fake_gateway.h"
#include "safetensors.h"
#include "testing.h"

#define N_REQUESTS 4
#define N_LAYERS 3
/* jobs in the large batch: more than the 64 the stage once had room for */
#define BIG_BATCH 70

static char dir[2048];
static safetensors_file *requests;
static char *instructions[N_REQUESTS];

static const char *path_of(const char *name) {
    static char p[4096 + 64];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

/* One job's inputs: request k's ViT layers, which a test may then break. */
typedef struct job_inputs {
    int n;
    char names[N_LAYERS][32];
    tensor t[N_LAYERS];
    envelope_tensor et[N_LAYERS];
} job_inputs;

static void inputs_of(job_inputs *in, int k) {
    static const int layers[N_LAYERS] = {1, 2, 3};
    lion_status st;
    in->n = 0;
    for (int i = 0; i < N_LAYERS; i++) {
        char key[64];
        snprintf(in->names[i], sizeof in->names[i], "vit_layer_%d", layers[i]);
        snprintf(key, sizeof key, "%d.%s", k, in->names[i]);
        if (safetensors_get(requests, key, &in->t[i], &st)) {
            CHECK_MSG(0, "%s", st.msg);
            continue;
        }
        in->n++;
    }
}

/* Sends a job without waiting for its answer; instruction NULL: request k's. */
static int send_job_text(fake_gateway *g, const char *id, int k, job_inputs *in, int out_dtype,
                         const char *instruction) {
    lion_status st;
    Lion__Envelope *job = envelope_new(LION__KIND__JOB, LION__STAGE__AGGREGATOR, id, &st);
    job->task = malloc(sizeof *job->task);
    lion__task__init(job->task);
    job->task->instruction = strdup(instruction ? instruction : instructions[k]);
    if (out_dtype >= 0) {
        job->task->has_output_dtype = 1;
        job->task->output_dtype = (Lion__DType)out_dtype;
    }
    for (int i = 0; i < in->n; i++) in->et[i] = (envelope_tensor){in->names[i], &in->t[i], NULL};
    int rc = envelope_send(g->router, &g->worker, job, in->et, in->n, 0, &st);
    if (rc) fprintf(stderr, "send %s: %s\n", id, st.msg);
    envelope_free(job);
    return rc;
}

static int send_job(fake_gateway *g, const char *id, int k, job_inputs *in, int out_dtype) {
    return send_job_text(g, id, k, in, out_dtype, NULL);
}

/* Relative error allowed to a bf16 worker against the f32 reference. */
#define BF16_TOL 4e-3

static int call(fake_gateway *g, const char *id, int k, job_inputs *in, int out_dtype, envelope_msg *reply) {
    if (send_job(g, id, k, in, out_dtype)) return -1;
    return fake_gateway_recv(g, reply, 60000);
}

/* The reply's visual tokens against request k's reference, within tol relative (< 0: the
 * default for the output dtype). Returns the relative error (-1 when not compared). */
static double check_visual_tol(const envelope_msg *m, int k, int out_dtype, double tol) {
    char key[32];
    snprintf(key, sizeof key, "%d.visual", k);
    CHECK_MSG(m->env->kind == LION__KIND__RESULT, "%s: %s", m->env->request_id,
              m->env->error ? m->env->error->message : "not a RESULT");
    int i = envelope_msg_find(m, "visual_tokens");
    CHECK_MSG(i >= 0, "%s: no visual_tokens", m->env->request_id);
    if (i < 0) return -1;
    tensor want;
    lion_status st;
    CHECK(safetensors_get(requests, key, &want, &st) == 0);
    const tensor *got = &m->tensors[i];
    CHECK_EQ_INT(got->dtype, out_dtype >= 0 ? out_dtype : DTYPE_F32);
    CHECK_EQ_INT(got->ndim, 2);
    CHECK_EQ_INT(got->shape[0], want.shape[0]);
    CHECK_EQ_INT(got->shape[1], want.shape[1]);
    if (tensor_numel(got) != tensor_numel(&want)) return -1;
    size_t n = (size_t)tensor_numel(got);
    float *f = malloc(n * sizeof(float));
    CHECK(convert_to_f32(f, got->data, got->dtype, n, &st) == 0);
    const double e = testing_rel_err(f, (const float *)want.data, n);
    CHECK_CLOSE(f, (const float *)want.data, n, tol >= 0 ? tol : out_dtype == DTYPE_F16 ? 2e-3 : 1e-4, key);
    free(f);
    return e;
}

static void check_visual(const envelope_msg *m, int k, int out_dtype) { check_visual_tol(m, k, out_dtype, -1); }

static void check_error(const envelope_msg *m, const char *id, const char *needle) {
    CHECK(strcmp(m->env->request_id, id) == 0);
    CHECK_EQ_INT(m->env->kind, LION__KIND__ERROR);
    CHECK(m->env->error && m->env->error->code == LION_EINVAL);
    if (m->env->error) CHECK_CONTAINS(m->env->error->message, needle);
}

static int load_instructions(void) {
    size_t len;
    char *text = (char *)testing_read_file(path_of("instructions.txt"), &len);
    if (!text) return -1;
    char *line = text;
    for (int k = 0; k < N_REQUESTS; k++) {
        char *nl = memchr(line, '\n', len - (size_t)(line - text));
        if (!nl) break;
        instructions[k] = strndup(line, (size_t)(nl - line));
        line = nl + 1;
    }
    free(text);
    return instructions[N_REQUESTS - 1] ? 0 : -1;
}

/* Several jobs sent before any answer is read: each answer matches its own request, and a
 * bad job in the middle fails alone. */
static void test_batched(fake_gateway *g) {
    static const char *ids[] = {"batch-0", "batch-1", "batch-bad", "batch-2"};
    static const int req[] = {0, 1, 0, 2};
    job_inputs in[4];
    for (int j = 0; j < 4; j++) inputs_of(&in[j], req[j]);
    in[2].n = 2; /* vit_layer_3, the layer both branches read, left out */
    for (int j = 0; j < 4; j++) CHECK(send_job(g, ids[j], req[j], &in[j], -1) == 0);
    int seen[4] = {0};
    for (int r = 0; r < 4; r++) {
        envelope_msg m;
        if (fake_gateway_recv(g, &m, 60000) != 0) {
            CHECK_MSG(0, "batched answer %d did not come", r);
            return;
        }
        int j = 0;
        while (j < 4 && strcmp(m.env->request_id, ids[j]) != 0) j++;
        CHECK_MSG(j < 4, "answer for unknown request %s", m.env->request_id);
        if (j < 4) {
            seen[j]++;
            if (j == 2) check_error(&m, ids[2], "ViT layer 3 missing from the request (it has layers [1, 2])");
            else check_visual(&m, req[j], -1);
        }
        envelope_msg_close(&m);
    }
    for (int j = 0; j < 4; j++) CHECK_EQ_INT(seen[j], 1);
}

static void test_bad_jobs(fake_gateway *g) {
    envelope_msg m;
    job_inputs in;
    lion_status st;

    /* wrong shape: one token short */
    inputs_of(&in, 0);
    in.t[0].shape[0] -= 1;
    CHECK(call(g, "bad-shape", 0, &in, -1, &m) == 0);
    check_error(&m, "bad-shape", "ViT layer 1 has shape [4, 32], expected [5, 32]");
    envelope_msg_close(&m);

    /* wrong dtype: the f32 bytes sent as I32 */
    inputs_of(&in, 0);
    in.t[1].dtype = DTYPE_I32;
    CHECK(call(g, "bad-dtype", 0, &in, -1, &m) == 0);
    check_error(&m, "bad-dtype", "ViT layer 2 is I32, expected F32, F16 or BF16");
    envelope_msg_close(&m);

    /* a vit_layer_ input without a block index */
    inputs_of(&in, 0);
    snprintf(in.names[0], sizeof in.names[0], "vit_layer_x1");
    CHECK(call(g, "bad-name", 0, &in, -1, &m) == 0);
    check_error(&m, "bad-name", "input 'vit_layer_x1': expected vit_layer_<block index>");
    envelope_msg_close(&m);

    /* an output dtype the stage cannot store */
    inputs_of(&in, 0);
    CHECK(call(g, "bad-out", 0, &in, LION__DTYPE__I8, &m) == 0);
    check_error(&m, "bad-out", "output_dtype");
    envelope_msg_close(&m);

    /* an extra tensor that is not a ViT layer is ignored */
    inputs_of(&in, 0);
    static const uint8_t junk[3] = {1, 2, 3};
    int64_t jshape[] = {3};
    tensor extra = tensor_view(DTYPE_U8, (void *)junk, 1, jshape);
    lion_status_clear(&st);
    Lion__Envelope *job = envelope_new(LION__KIND__JOB, LION__STAGE__AGGREGATOR, "extra", &st);
    job->task = malloc(sizeof *job->task);
    lion__task__init(job->task);
    job->task->instruction = strdup(instructions[0]);
    envelope_tensor et[N_LAYERS + 1];
    for (int i = 0; i < in.n; i++) et[i] = (envelope_tensor){in.names[i], &in.t[i], NULL};
    et[in.n] = (envelope_tensor){"image", &extra, NULL};
    CHECK(fake_gateway_call(g, job, et, in.n + 1, &m, 60000) == 0);
    check_visual(&m, 0, -1);
    envelope_msg_close(&m);
    envelope_free(job);
}

/* The finish time of the worker's trace hop. The worker takes it once per process call
 * (common/worker/worker.c: a batch's finish_us), so every job of one batch carries the same. */
static int64_t hop_finish_us(const envelope_msg *m) {
    if (!m->env || m->env->n_trace < 1) return -1;
    const Lion__Hop *h = m->env->trace[m->env->n_trace - 1];
    return h->has_finish_us ? h->finish_us : -1;
}

/* One round of test_big_batch: the slow job, then BIG_BATCH jobs (the requests in turn, some
 * asking for F16) sent at once. Every answer is checked; returns 1 when the BIG_BATCH jobs ran
 * as one batch (one finish_us, not the slow job's). */
static int big_batch_round(fake_gateway *g, const char *slow_text, int round) {
    char id[32];
    job_inputs in;
    snprintf(id, sizeof id, "slow%d", round);
    inputs_of(&in, 0);
    CHECK(send_job_text(g, id, 0, &in, -1, slow_text) == 0);
    /* the worker takes the slow job alone and works on it while the others arrive */
    struct timespec pause = {0, 50 * 1000000};
    nanosleep(&pause, NULL);
    for (int i = 0; i < BIG_BATCH; i++) {
        snprintf(id, sizeof id, "big%d-%d", round, i);
        inputs_of(&in, i % N_REQUESTS);
        CHECK(send_job(g, id, i % N_REQUESTS, &in, i % 3 == 0 ? LION__DTYPE__F16 : -1) == 0);
    }
    int64_t slow_finish = -1, finish[BIG_BATCH];
    int seen[BIG_BATCH] = {0};
    for (int k = 0; k < BIG_BATCH + 1; k++) {
        envelope_msg m;
        if (fake_gateway_recv(g, &m, 60000) != 0) {
            CHECK_MSG(0, "big batch: answer %d of %d did not come", k, BIG_BATCH + 1);
            return 0;
        }
        const char *rid = m.env->request_id ? m.env->request_id : "";
        int r, i;
        if (!strncmp(rid, "slow", 4)) {
            CHECK_MSG(m.env->kind == LION__KIND__RESULT, "%s: %s", rid, m.env->error ? m.env->error->message : "");
            slow_finish = hop_finish_us(&m);
        } else if (sscanf(rid, "big%d-%d", &r, &i) == 2 && r == round && i >= 0 && i < BIG_BATCH && !seen[i]) {
            seen[i] = 1;
            finish[i] = hop_finish_us(&m);
            check_visual(&m, i % N_REQUESTS, i % 3 == 0 ? DTYPE_F16 : -1);
        } else {
            CHECK_MSG(0, "big batch: unexpected answer '%s'", rid);
        }
        envelope_msg_close(&m);
    }
    int one_batch = slow_finish >= 0;
    for (int i = 0; i < BIG_BATCH; i++) one_batch &= seen[i] && finish[i] == finish[0] && finish[i] != slow_finish;
    return one_batch;
}

/* Batches over 64 (the stage once had arrays of 64 and failed every larger batch as
 * "internal"): a worker started with --max-batch BIG_BATCH answers BIG_BATCH jobs sent at once,
 * each as the reference says. How the test knows they ran as one batch: the worker stamps its
 * trace hop's finish_us once per process call, so BIG_BATCH answers with one finish_us, not the
 * slow job's, came out of one call. The slow job sent first makes the batch form: its
 * instruction of most of a megabyte takes the compute thread a while to tokenize (only the end
 * is kept) while the others queue behind it, then it takes them all. A round in which they were
 * split anyway (a very busy machine) is run again. */
static void test_big_batch(const char *bin, const char *model) {
    char max_batch[16];
    snprintf(max_batch, sizeof max_batch, "%d", BIG_BATCH);
    const char *argv[] = {bin, "--model", model, "--threads", "1", "--replica", "aggregator-big",
                          "--max-batch", max_batch, "--capacity", "80", NULL};
    static const char phrase[] = "a small dog sits on the red mat near the window. ";
    const size_t n_phrases = (900u << 10) / (sizeof phrase - 1);
    char *slow_text = malloc(n_phrases * (sizeof phrase - 1) + 1);
    fake_gateway g;
    if (!slow_text || fake_gateway_start(&g, argv, 30000) != 0) {
        CHECK_MSG(0, "aggregator service with --max-batch %d did not start", BIG_BATCH);
        if (slow_text) fake_gateway_stop(&g);
        free(slow_text);
        return;
    }
    for (size_t i = 0; i < n_phrases; i++) memcpy(slow_text + i * (sizeof phrase - 1), phrase, sizeof phrase - 1);
    slow_text[n_phrases * (sizeof phrase - 1)] = '\0';
    int one_batch = 0, round = 0;
    while (round < 3 && !one_batch) one_batch = big_batch_round(&g, slow_text, round++);
    CHECK_MSG(one_batch, "the %d jobs never ran as one batch", BIG_BATCH);
    if (one_batch) printf("%d jobs ran as one batch (round %d of at most 3)\n", BIG_BATCH, round);
    CHECK_EQ_INT(fake_gateway_stop(&g), 0);
    free(slow_text);
}

/* --precision bf16: the worker opens the stage with bf16 matrices and answers a job with the
 * reference's tokens to bf16's precision (measured 1.1e-3 relative here on the tiny model;
 * bound about 3x; tests/test_aggregator_bf16.c checks LION-XL's widths). */
static void test_bf16(const char *bin, const char *model) {
    const char *argv[] = {bin, "--model", model, "--threads", "1", "--replica", "aggregator-bf16",
                          "--precision", "bf16", NULL};
    fake_gateway g;
    if (fake_gateway_start(&g, argv, 30000) != 0) {
        CHECK_MSG(0, "aggregator service with --precision bf16 did not start");
        fake_gateway_stop(&g);
        return;
    }
    envelope_msg m;
    job_inputs in;
    inputs_of(&in, 0);
    if (call(&g, "req-bf16", 0, &in, -1, &m) == 0) {
        printf("bf16: visual tokens within %.3g of the f32 reference\n", check_visual_tol(&m, 0, -1, BF16_TOL));
        envelope_msg_close(&m);
    } else {
        CHECK_MSG(0, "bf16: no answer");
    }
    CHECK_EQ_INT(fake_gateway_stop(&g), 0);
}

int main(void) {
    snprintf(dir, sizeof dir, "%s", testing_fixture("aggregator_service"));
    lion_status st;
    if (safetensors_open(&requests, path_of("requests.safetensors"), &st) || load_instructions()) {
        CHECK_MSG(0, "fixture: %s", st.msg);
        return testing_finish();
    }
    const char *bin_dir = getenv("LION_BIN_DIR");
    char bin[4096], model[4096 + 64];
    snprintf(bin, sizeof bin, "%s/lion-aggregator", bin_dir ? bin_dir : "build/services");
    snprintf(model, sizeof model, "%s", path_of("model"));
    const char *argv[] = {bin, "--model", model, "--threads", "1", "--replica", "aggregator-test",
                          "--max-batch", "4", "--capacity", "8", NULL};
    fake_gateway g;
    if (fake_gateway_start(&g, argv, 30000) != 0) {
        CHECK_MSG(0, "aggregator service did not start");
        fake_gateway_stop(&g);
        return testing_finish();
    }

    /* one job at a time: f32 layers, f16 layers, an instruction cut from the left, none */
    envelope_msg m;
    job_inputs in;
    for (int k = 0; k < N_REQUESTS; k++) {
        char id[16];
        snprintf(id, sizeof id, "req-%d", k);
        inputs_of(&in, k);
        if (call(&g, id, k, &in, -1, &m) != 0) {
            CHECK_MSG(0, "%s: no answer", id);
            continue;
        }
        CHECK(strcmp(m.env->request_id, id) == 0);
        check_visual(&m, k, -1);
        if (k == 0)
            CHECK_MSG(m.env->n_trace >= 1 && strcmp(m.env->trace[m.env->n_trace - 1]->service, "aggregator") == 0,
                      "the worker appends its trace hop");
        envelope_msg_close(&m);
    }
    CHECK_EQ_INT(in.t[0].dtype, DTYPE_F32);
    inputs_of(&in, 1);
    CHECK_EQ_INT(in.t[0].dtype, DTYPE_F16); /* the fixture really sends request 1 as F16 */

    /* F16 output on request */
    inputs_of(&in, 1);
    CHECK(call(&g, "req-f16-out", 1, &in, LION__DTYPE__F16, &m) == 0);
    check_visual(&m, 1, DTYPE_F16);
    envelope_msg_close(&m);

    test_batched(&g);
    test_bad_jobs(&g);

    /* a malformed frame at the socket, then a valid job still works */
    static const char garbage[] = "\xff\xff\xff garbage";
    const void *frames[] = {garbage};
    size_t lens[] = {sizeof garbage - 1};
    CHECK(fake_gateway_send_raw(&g, frames, lens, 1) == 0);
    inputs_of(&in, 2);
    CHECK(call(&g, "req-after", 2, &in, -1, &m) == 0);
    CHECK(m.env && strcmp(m.env->request_id, "req-after") == 0);
    if (m.env) check_visual(&m, 2, -1);
    envelope_msg_close(&m);

    CHECK_EQ_INT(fake_gateway_stop(&g), 0);

    test_big_batch(bin, model);
    test_bf16(bin, model);
    safetensors_close(requests);
    for (int k = 0; k < N_REQUESTS; k++) free(instructions[k]);
    return testing_finish();
}
