/* The tagger service as a separate process over ZeroMQ: it answers jobs with the reference's
 * tags (RAM's order, identical names, scores within 1e-4), the LION prompt string and the
 * top-k scores when asked (a top-k over the tag count gives every tag), also for jobs that
 * arrive together and share one forward, in batches over 64 too; a truncated image, garbage
 * bytes and a top-k over LION_MAX_TOP_TAGS get ERRORs naming the problem, a malformed frame
 * is survived, and SIGTERM gives a clean exit. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fake_gateway.h"
#include "image.h"
#include "protocol.h"
#include "testing.h"

/* jobs in the large batch: more than the 64 the stage once had room for */
#define BIG_BATCH 70
#define N_TAGS 12

static char dir[2048];

static const char *path_of(const char *name) {
    static char p[4096 + 64];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

/* A tagger JOB for these bytes; top_k < 0 leaves debug_tags_top_k unset. */
static Lion__Envelope *tagger_job(const char *id, int top_k) {
    lion_status st;
    Lion__Envelope *job = envelope_new(LION__KIND__JOB, LION__STAGE__TAGGER, id, &st);
    job->task = malloc(sizeof *job->task);
    lion__task__init(job->task);
    if (top_k >= 0) {
        job->task->has_debug_tags_top_k = 1;
        job->task->debug_tags_top_k = (uint32_t)top_k;
    }
    return job;
}

static int send_image(fake_gateway *g, const char *id, const unsigned char *bytes, size_t len, int top_k,
                      envelope_msg *reply) {
    Lion__Envelope *job = tagger_job(id, top_k);
    int64_t shape[] = {(int64_t)len};
    tensor t = tensor_view(DTYPE_U8, (void *)bytes, 1, shape);
    envelope_tensor et = {"image", &t, NULL};
    int rc = fake_gateway_call(g, job, &et, 1, reply, 60000);
    envelope_free(job);
    return rc;
}

/* Sends without waiting, so that several jobs queue up and can form one batch. */
static void post_image(fake_gateway *g, const char *id, const unsigned char *bytes, size_t len, int top_k) {
    Lion__Envelope *job = tagger_job(id, top_k);
    int64_t shape[] = {(int64_t)len};
    tensor t = tensor_view(DTYPE_U8, (void *)bytes, 1, shape);
    envelope_tensor et = {"image", &t, NULL};
    lion_status st;
    CHECK_MSG(envelope_send(g->router, &g->worker, job, &et, 1, 0, &st) == 0, "send %s", id);
    envelope_free(job);
}

static void check_tag_list(Lion__Tag **got, size_t n_got, const cJSON *want, const char *what) {
    CHECK_MSG((int)n_got == cJSON_GetArraySize(want), "%s: %zu tags, want %d", what, n_got,
              cJSON_GetArraySize(want));
    for (size_t i = 0; i < n_got && (int)i < cJSON_GetArraySize(want); i++) {
        const cJSON *w = cJSON_GetArrayItem(want, (int)i);
        const char *name = cJSON_GetArrayItem(w, 0)->valuestring;
        double score = cJSON_GetArrayItem(w, 1)->valuedouble;
        CHECK_MSG(got[i]->name && strcmp(got[i]->name, name) == 0, "%s[%zu]: '%s', want '%s'", what, i,
                  got[i]->name ? got[i]->name : "(none)", name);
        CHECK_MSG(got[i]->has_score && fabs(got[i]->score - score) <= 1e-4, "%s[%zu] %s: score %.6f, want %.6f",
                  what, i, name, got[i]->score, score);
    }
}

/* The RESULT for image against expected.json; top_k 0: no top_tags expected. */
static void check_result(const envelope_msg *m, const cJSON *expected, const char *image, int top_k) {
    const cJSON *want = cJSON_GetObjectItem(expected, image);
    CHECK_MSG(m->env && m->env->kind == LION__KIND__RESULT, "%s: a RESULT (%s)", image,
              m->env && m->env->error ? m->env->error->message : "");
    if (!want || !m->env || m->env->kind != LION__KIND__RESULT || !m->env->result) return;
    const Lion__Result *r = m->env->result;
    CHECK_EQ_INT(m->n_tensors, 0);
    check_tag_list(r->tags, r->n_tags, cJSON_GetObjectItem(want, "tags"), image);
    CHECK_EQ_INT((int)r->n_sequences, 1);
    if (r->n_sequences == 1) {
        const char *prompt = cJSON_GetObjectItem(want, "prompt")->valuestring;
        CHECK_MSG(r->sequences[0]->text && strcmp(r->sequences[0]->text, prompt) == 0, "%s: prompt '%s', want '%s'",
                  image, r->sequences[0]->text ? r->sequences[0]->text : "(none)", prompt);
        CHECK_EQ_INT((int)r->sequences[0]->n_token_ids, 0);
    }
    CHECK_EQ_INT((int)r->n_top_tags, top_k);
    if (top_k > 0) {
        /* the reference's top 5, cut to what was asked */
        cJSON *top = cJSON_Duplicate(cJSON_GetObjectItem(want, "top"), 1);
        while (cJSON_GetArraySize(top) > top_k) cJSON_DeleteItemFromArray(top, cJSON_GetArraySize(top) - 1);
        char what[64];
        snprintf(what, sizeof what, "%s top", image);
        check_tag_list(r->top_tags, r->n_top_tags, top, what);
        cJSON_Delete(top);
    }
}

static void check_error(const envelope_msg *m, int code, const char *message) {
    CHECK(m->env && m->env->kind == LION__KIND__ERROR && m->env->error);
    if (!m->env || !m->env->error) return;
    CHECK_EQ_INT(m->env->error->code, code);
    CHECK_CONTAINS(m->env->error->message, message);
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
    const char *name; /* in expected.json */
    const unsigned char *bytes;
    size_t len;
} test_image;

/* One round of test_big_batch: the slow job, then BIG_BATCH jobs (the three images in turn,
 * various top-k) sent at once. Every answer is checked; returns 1 when the BIG_BATCH jobs ran
 * as one batch (one finish_us, not the slow job's). */
static int big_batch_round(fake_gateway *g, const test_image *images, const unsigned char *slow, size_t slow_len,
                           const cJSON *expected, int round) {
    char id[32];
    snprintf(id, sizeof id, "slow%d", round);
    post_image(g, id, slow, slow_len, -1);
    /* the worker takes the slow job alone and works on it while the others arrive */
    struct timespec pause = {0, 50 * 1000000};
    nanosleep(&pause, NULL);
    for (int i = 0; i < BIG_BATCH; i++) {
        snprintf(id, sizeof id, "big%d-%d", round, i);
        post_image(g, id, images[i % 3].bytes, images[i % 3].len, i % 4 == 0 ? -1 : i % 6);
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
            int top_k = i % 4 == 0 ? 0 : i % 6;
            check_result(&m, expected, images[i % 3].name, top_k);
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
 * slow job's, came out of one call. The slow job sent first makes the batch form: the compute
 * thread decodes it while the others queue behind it, then takes them all. A round in which
 * they were split anyway (a very busy machine) is run again. */
static void test_big_batch(const char *bin, const char *model, const test_image *images, const cJSON *expected) {
    char max_batch[16];
    snprintf(max_batch, sizeof max_batch, "%d", BIG_BATCH);
    const char *argv[] = {bin, "--model", model, "--threads", "1", "--replica", "tagger-big", "--max-batch", max_batch,
                          "--capacity", "80", NULL};
    size_t slow_len = 0;
    unsigned char *slow = slow_image(&slow_len);
    fake_gateway g;
    if (!slow || fake_gateway_start(&g, argv, 30000) != 0) {
        CHECK_MSG(0, "tagger service with --max-batch 70 did not start");
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

int main(void) {
    snprintf(dir, sizeof dir, "%s", testing_fixture("tagger_service"));
    const char *bin_dir = getenv("LION_BIN_DIR");
    char bin[4096], model[4096 + 64];
    snprintf(bin, sizeof bin, "%s/lion-tagger", bin_dir ? bin_dir : "build/services");
    snprintf(model, sizeof model, "%s", path_of("model"));
    const char *argv[] = {bin, "--model", model, "--threads", "1", "--replica", "tagger-test", "--max-batch", "4", "--capacity", "8", NULL};
    size_t len_a, len_b, len_c, len_t, len_j;
    unsigned char *a = testing_read_file(path_of("a.png"), &len_a);
    unsigned char *b = testing_read_file(path_of("b.jpg"), &len_b);
    unsigned char *c = testing_read_file(path_of("c.png"), &len_c);
    unsigned char *trunc = testing_read_file(path_of("truncated.jpg"), &len_t);
    char *json = (char *)testing_read_file(path_of("expected.json"), &len_j);
    cJSON *expected = json ? cJSON_ParseWithLength(json, len_j) : NULL;
    CHECK(a && b && c && trunc && expected);
    fake_gateway g;
    if (!expected || fake_gateway_start(&g, argv, 30000) != 0) {
        CHECK_MSG(0, "tagger service did not start");
        if (expected) fake_gateway_stop(&g);
        return testing_finish();
    }

    envelope_msg m;
    CHECK(send_image(&g, "req-a", a, len_a, -1, &m) == 0);
    CHECK(m.env && strcmp(m.env->request_id, "req-a") == 0);
    CHECK_MSG(m.env && m.env->n_trace >= 1 && strcmp(m.env->trace[m.env->n_trace - 1]->service, "tagger") == 0,
              "the worker appends its trace hop");
    check_result(&m, expected, "a.png", 0);
    envelope_msg_close(&m);

    CHECK(send_image(&g, "req-b", b, len_b, 5, &m) == 0);
    check_result(&m, expected, "b.jpg", 5);
    envelope_msg_close(&m);

    /* jobs arriving together: good and bad images side by side, each answered on its own */
    post_image(&g, "batch-c", c, len_c, 3);
    post_image(&g, "batch-trunc", trunc, len_t, -1);
    post_image(&g, "batch-a", a, len_a, 1);
    post_image(&g, "batch-junk", (const unsigned char *)"not an image", 12, -1);
    post_image(&g, "batch-b", b, len_b, 0);
    int seen = 0;
    for (int k = 0; k < 5; k++) {
        if (fake_gateway_recv(&g, &m, 60000) != 0) {
            CHECK_MSG(0, "batch: answer %d did not come", k);
            break;
        }
        const char *id = m.env ? m.env->request_id : "";
        if (!strcmp(id, "batch-c")) check_result(&m, expected, "c.png", 3), seen |= 1;
        else if (!strcmp(id, "batch-a")) check_result(&m, expected, "a.png", 1), seen |= 2;
        else if (!strcmp(id, "batch-b")) check_result(&m, expected, "b.jpg", 0), seen |= 4;
        else if (!strcmp(id, "batch-trunc")) check_error(&m, LION_EFORMAT, "truncated JPEG"), seen |= 8;
        else if (!strcmp(id, "batch-junk")) check_error(&m, LION_EFORMAT, "unknown image format"), seen |= 16;
        else CHECK_MSG(0, "unexpected answer '%s'", id);
        envelope_msg_close(&m);
    }
    CHECK_EQ_INT(seen, 31);

    /* top-k over the tag count gives every tag (the gateway cannot know the count); over
     * LION_MAX_TOP_TAGS, and a job without its image: the caller's errors */
    CHECK(send_image(&g, "req-k", a, len_a, N_TAGS + 1, &m) == 0);
    check_result(&m, expected, "a.png", N_TAGS);
    envelope_msg_close(&m);
    CHECK(send_image(&g, "req-k-max", b, len_b, LION_MAX_TOP_TAGS, &m) == 0);
    check_result(&m, expected, "b.jpg", N_TAGS);
    envelope_msg_close(&m);
    CHECK(send_image(&g, "req-k-big", a, len_a, LION_MAX_TOP_TAGS + 1, &m) == 0);
    check_error(&m, LION_EINVAL, "debug_tags_top_k 10001 is over the limit of 10000");
    envelope_msg_close(&m);
    Lion__Envelope *job = tagger_job("req-none", -1);
    CHECK(fake_gateway_call(&g, job, NULL, 0, &m, 60000) == 0);
    envelope_free(job);
    check_error(&m, LION_EINVAL, "no input tensor 'image'");
    envelope_msg_close(&m);

    /* a malformed frame at the socket: garbage envelope bytes, then a valid job still works */
    static const char garbage[] = "\xff\xff\xff garbage";
    const void *frames[] = {garbage};
    size_t lens[] = {sizeof garbage - 1};
    CHECK(fake_gateway_send_raw(&g, frames, lens, 1) == 0);
    CHECK(send_image(&g, "req-after", c, len_c, -1, &m) == 0);
    CHECK(m.env && strcmp(m.env->request_id, "req-after") == 0);
    check_result(&m, expected, "c.png", 0);
    envelope_msg_close(&m);

    CHECK_EQ_INT(fake_gateway_stop(&g), 0);

    const test_image images[3] = {{"a.png", a, len_a}, {"b.jpg", b, len_b}, {"c.png", c, len_c}};
    test_big_batch(bin, model, images, expected);
    cJSON_Delete(expected);
    free(json), free(a), free(b), free(c), free(trunc);
    return testing_finish();
}
