/* The vision service as a separate process over ZeroMQ: it answers jobs with the
 * reference's ViT outputs (PIL preprocessing + EVA ViT, <= 1e-4 relative), in f32 and f16,
 * serves a repeated image from its feature cache, answers bad images and malformed frames
 * with errors and stays up, runs batches over 64, and exits cleanly on SIGTERM. Started with
 * --precision bf16 (the ViT's matrices in bf16), it answers within bf16's error. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fake_gateway.h"
#include "image.h"
#include "safetensors.h"
#include "testing.h"

/* jobs in the large batch: more than the 64 the stage once had room for */
#define BIG_BATCH 70

static char dir[2048];

static const char *path_of(const char *name) {
    static char p[4096 + 64];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

/* Sends one vision job with these image bytes; out_dtype < 0 leaves output_dtype unset.
 * With reply, waits for the answer; without, returns at once (jobs then queue up). */
static int send_image(fake_gateway *g, const char *id, const unsigned char *bytes, size_t len, int out_dtype,
                      envelope_msg *reply) {
    lion_status st;
    Lion__Envelope *job = envelope_new(LION__KIND__JOB, LION__STAGE__VISION, id, &st);
    job->task = malloc(sizeof *job->task);
    lion__task__init(job->task);
    if (out_dtype >= 0) {
        job->task->has_output_dtype = 1;
        job->task->output_dtype = (Lion__DType)out_dtype;
    }
    int64_t shape[] = {(int64_t)len};
    tensor t = tensor_view(DTYPE_U8, (void *)bytes, 1, shape);
    envelope_tensor et = {"image", &t, NULL};
    int rc = reply ? fake_gateway_call(g, job, &et, 1, reply, 60000)
                   : envelope_send(g->router, &g->worker, job, &et, 1, 0, &st);
    envelope_free(job);
    return rc;
}

/* Checks the job's three block outputs against the reference within tol (relative); returns
 * the largest error. */
static double check_layers_within(envelope_msg *m, safetensors_file *expected, const char *image, int f16, double tol) {
    static const int layers[] = {1, 2, 3};
    double worst = 0;
    for (int k = 0; k < 3; k++) {
        char name[64], key[96];
        snprintf(name, sizeof name, "vit_layer_%d", layers[k]);
        snprintf(key, sizeof key, "%s.%s", image, name);
        int i = envelope_msg_find(m, name);
        CHECK_MSG(i >= 0, "%s: no output %s", image, name);
        if (i < 0) continue;
        tensor want;
        lion_status st;
        CHECK(safetensors_get(expected, key, &want, &st) == 0);
        const tensor *got = &m->tensors[i];
        CHECK_EQ_INT(got->ndim, 2);
        CHECK_EQ_INT(tensor_numel(got), tensor_numel(&want));
        CHECK_EQ_INT(got->dtype, f16 ? DTYPE_F16 : DTYPE_F32);
        if (tensor_numel(got) != tensor_numel(&want)) continue;
        size_t n = (size_t)tensor_numel(got);
        float *f = malloc(n * sizeof(float));
        convert_to_f32(f, got->data, got->dtype, n, &st);
        const double e = testing_rel_err(f, (const float *)want.data, n);
        if (e > worst) worst = e;
        CHECK_CLOSE(f, (const float *)want.data, n, tol, key);
        free(f);
    }
    return worst;
}

static void check_layers(envelope_msg *m, safetensors_file *expected, const char *image, int f16) {
    check_layers_within(m, expected, image, f16, f16 ? 2e-3 : 1e-4);
}

/* The finish time of the worker's trace hop. The worker takes it once per process call
 * (common/worker/worker.c: a batch's finish_us), so every job of one batch carries the same. */
static int64_t hop_finish_us(const envelope_msg *m) {
    if (!m->env || m->env->n_trace < 1) return -1;
    const Lion__Hop *h = m->env->trace[m->env->n_trace - 1];
    return h->has_finish_us ? h->finish_us : -1;
}

/* A 3000 x 3000 JPEG: a job the worker takes a while to decode and resize. */
static unsigned char *slow_image(size_t *len) {
    image img;
    lion_status st;
    uint8_t *out = NULL;
    if (image_alloc(&img, 3000, 3000, &st)) return NULL;
    for (size_t i = 0; i < (size_t)img.width * img.height * 3; i++) img.data[i] = (uint8_t)(i * 7 % 251);
    if (image_encode_jpeg(&img, 90, &out, len, &st)) out = NULL;
    image_free(&img);
    return out;
}

typedef struct test_image {
    const char *name; /* key prefix in expected.safetensors */
    const unsigned char *bytes;
    size_t len;
} test_image;

/* One round of test_big_batch: the slow job, then BIG_BATCH jobs (both images in turn, some
 * asking for F16) sent at once. Every answer is checked; returns 1 when the BIG_BATCH jobs ran
 * as one batch (one finish_us, not the slow job's). */
static int big_batch_round(fake_gateway *g, const test_image *images, const unsigned char *slow, size_t slow_len,
                           safetensors_file *expected, int round) {
    char id[32];
    snprintf(id, sizeof id, "slow%d", round);
    CHECK(send_image(g, id, slow, slow_len, -1, NULL) == 0);
    /* the worker takes the slow job alone and works on it while the others arrive */
    struct timespec pause = {0, 50 * 1000000};
    nanosleep(&pause, NULL);
    for (int i = 0; i < BIG_BATCH; i++) {
        snprintf(id, sizeof id, "big%d-%d", round, i);
        CHECK(send_image(g, id, images[i % 2].bytes, images[i % 2].len, i % 3 == 0 ? LION__DTYPE__F16 : -1, NULL) == 0);
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
        CHECK_MSG(m.env->kind == LION__KIND__RESULT, "%s: %s", rid, m.env->error ? m.env->error->message : "");
        int r, i;
        if (!strncmp(rid, "slow", 4)) {
            slow_finish = hop_finish_us(&m);
        } else if (sscanf(rid, "big%d-%d", &r, &i) == 2 && r == round && i >= 0 && i < BIG_BATCH && !seen[i]) {
            seen[i] = 1;
            finish[i] = hop_finish_us(&m);
            check_layers(&m, expected, images[i % 2].name, i % 3 == 0);
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
 * "internal"): a worker started with --max-batch BIG_BATCH and no feature cache (so that every
 * job runs the ViT) answers BIG_BATCH jobs sent at once, each as the reference says. How the
 * test knows they ran as one batch: the worker stamps its trace hop's finish_us once per
 * process call, so BIG_BATCH answers with one finish_us, not the slow job's, came out of one
 * call. The slow job sent first makes the batch form: the compute thread decodes it while the
 * others queue behind it, then takes them all. A round in which they were split anyway (a
 * very busy machine) is run again. */
static void test_big_batch(const char *bin, const char *model, const test_image *images, safetensors_file *expected) {
    char max_batch[16];
    snprintf(max_batch, sizeof max_batch, "%d", BIG_BATCH);
    const char *argv[] = {bin, "--model", model, "--threads", "1", "--replica", "vision-big", "--max-batch", max_batch,
                          "--capacity", "80", "--cache-mb", "0", NULL};
    size_t slow_len = 0;
    unsigned char *slow = slow_image(&slow_len);
    fake_gateway g;
    if (!slow || fake_gateway_start(&g, argv, 30000) != 0) {
        CHECK_MSG(0, "vision service with --max-batch %d did not start", BIG_BATCH);
        if (slow) fake_gateway_stop(&g);
        free(slow);
        return;
    }
    int one_batch = 0, round = 0;
    while (round < 3 && !one_batch)
        one_batch = big_batch_round(&g, images, slow, slow_len, expected, round++);
    CHECK_MSG(one_batch, "the %d jobs never ran as one batch", BIG_BATCH);
    if (one_batch) printf("%d jobs ran as one batch (round %d of at most 3)\n", BIG_BATCH, round);
    CHECK_EQ_INT(fake_gateway_stop(&g), 0);
    free(slow);
}

/* The worker started with --precision bf16 answers a job within bf16's error of the f32
 * reference. Measured 1.6e-4 on the fixture's tiny ViT (dim 32: short products, and the
 * embeddings dominate the residual stream); the bound allows about 3x. */
#define BF16_TOL 5e-4

static void test_bf16(const char *bin, const char *model, const unsigned char *img, size_t len,
                      safetensors_file *expected) {
    const char *argv[] = {bin, "--model", model, "--threads", "1", "--replica", "vision-bf16", "--precision", "bf16",
                          "--cache-mb", "0", NULL};
    fake_gateway g;
    if (fake_gateway_start(&g, argv, 30000) != 0) {
        CHECK_MSG(0, "vision service with --precision bf16 did not start");
        fake_gateway_stop(&g);
        return;
    }
    envelope_msg m;
    CHECK(send_image(&g, "req-bf16", img, len, -1, &m) == 0);
    CHECK_MSG(m.env && m.env->kind == LION__KIND__RESULT, "bf16: %s",
              m.env && m.env->error ? m.env->error->message : "no result");
    if (m.env && m.env->kind == LION__KIND__RESULT) {
        const double e = check_layers_within(&m, expected, "a.png", 0, BF16_TOL);
        printf("--precision bf16: relative error %.2e against the f32 reference (bound %.1e)\n", e, BF16_TOL);
        /* f32 meets the reference to ~1e-6 here: more says the matrices were rounded */
        CHECK_MSG(e > 1e-5, "--precision bf16 answered as f32 does (%.3g): were the matrices rounded?", e);
    }
    envelope_msg_close(&m);
    CHECK_EQ_INT(fake_gateway_stop(&g), 0);
}

int main(void) {
    snprintf(dir, sizeof dir, "%s", testing_fixture("vision_service"));
    const char *bin_dir = getenv("LION_BIN_DIR");
    char bin[4096], model[4096 + 64];
    snprintf(bin, sizeof bin, "%s/lion-vision", bin_dir ? bin_dir : "build/services");
    snprintf(model, sizeof model, "%s", path_of("model"));
    const char *argv[] = {bin, "--model", model, "--threads", "1", "--replica", "vision-test", NULL};
    fake_gateway g;
    if (fake_gateway_start(&g, argv, 30000) != 0) {
        CHECK_MSG(0, "vision service did not start");
        fake_gateway_stop(&g);
        return testing_finish();
    }
    lion_status st;
    safetensors_file *expected;
    if (safetensors_open(&expected, path_of("expected.safetensors"), &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return testing_finish();
    }
    size_t len_a, len_b, len_t;
    unsigned char *a = testing_read_file(path_of("a.png"), &len_a);
    unsigned char *b = testing_read_file(path_of("b.jpg"), &len_b);
    unsigned char *trunc = testing_read_file(path_of("truncated.jpg"), &len_t);
    CHECK(a && b && trunc);

    envelope_msg m;
    CHECK(send_image(&g, "req-a", a, len_a, -1, &m) == 0);
    CHECK_EQ_INT(m.env->kind, LION__KIND__RESULT);
    CHECK(strcmp(m.env->request_id, "req-a") == 0);
    CHECK_MSG(m.env->n_trace >= 1 && strcmp(m.env->trace[m.env->n_trace - 1]->service, "vision") == 0,
              "the worker appends its trace hop");
    check_layers(&m, expected, "a.png", 0);
    envelope_msg_close(&m);

    CHECK(send_image(&g, "req-b", b, len_b, LION__DTYPE__F16, &m) == 0);
    CHECK_EQ_INT(m.env->kind, LION__KIND__RESULT);
    check_layers(&m, expected, "b.jpg", 1);
    envelope_msg_close(&m);

    /* the same bytes again: answered from the cache, identical values */
    CHECK(send_image(&g, "req-a2", a, len_a, -1, &m) == 0);
    CHECK_EQ_INT(m.env->kind, LION__KIND__RESULT);
    check_layers(&m, expected, "a.png", 0);
    envelope_msg_close(&m);

    /* a truncated JPEG and garbage bytes: an ERROR naming the problem, the worker stays up */
    CHECK(send_image(&g, "req-trunc", trunc, len_t, -1, &m) == 0);
    CHECK_EQ_INT(m.env->kind, LION__KIND__ERROR);
    CHECK(m.env->error && m.env->error->code == LION_EFORMAT);
    if (m.env->error) CHECK_CONTAINS(m.env->error->message, "truncated JPEG");
    envelope_msg_close(&m);
    CHECK(send_image(&g, "req-junk", (const unsigned char *)"not an image", 12, -1, &m) == 0);
    CHECK_EQ_INT(m.env->kind, LION__KIND__ERROR);
    if (m.env->error) CHECK_CONTAINS(m.env->error->message, "unknown image format");
    envelope_msg_close(&m);

    /* an unsupported output dtype is the caller's error */
    CHECK(send_image(&g, "req-i8", a, len_a, LION__DTYPE__I8, &m) == 0);
    CHECK_EQ_INT(m.env->kind, LION__KIND__ERROR);
    if (m.env->error) CHECK_CONTAINS(m.env->error->message, "output_dtype");
    envelope_msg_close(&m);

    /* a malformed frame at the socket: garbage envelope bytes, then a valid job still works */
    static const char garbage[] = "\xff\xff\xff garbage";
    const void *frames[] = {garbage};
    size_t lens[] = {sizeof garbage - 1};
    CHECK(fake_gateway_send_raw(&g, frames, lens, 1) == 0);
    CHECK(send_image(&g, "req-after", b, len_b, -1, &m) == 0);
    CHECK(m.env && m.env->kind == LION__KIND__RESULT && strcmp(m.env->request_id, "req-after") == 0);
    envelope_msg_close(&m);

    CHECK_EQ_INT(fake_gateway_stop(&g), 0);

    const test_image images[2] = {{"a.png", a, len_a}, {"b.jpg", b, len_b}};
    test_big_batch(bin, model, images, expected);
    test_bf16(bin, model, a, len_a, expected);
    free(a), free(b), free(trunc);
    safetensors_close(expected);
    return testing_finish();
}
