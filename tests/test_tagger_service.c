/* The tagger service as a separate process over ZeroMQ: it answers jobs with the reference's
 * tags (RAM's order, identical names, scores within 1e-4), the LION prompt string and the
 * top-k scores when asked (a top-k over the tag count gives every tag), also for jobs that
 * arrive together and run as one batch, in batches over 64 too; a truncated image, garbage
 * bytes and a top-k over LION_MAX_TOP_TAGS get ERRORs naming the problem, a malformed frame
 * is survived, and SIGTERM gives a clean exit. The tag cache: the same image again is a hit
 * (the worker's heartbeat credit counts it) with a byte-identical answer, whatever top-k is
 * asked, a batch mixing cached, new and repeated-new images answers each right, and
 * --cache-mb 0 turns it off. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
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

/* A 3000 x 3000 JPEG: a job the worker takes a while to decode and resize; another seed
 * gives other bytes (a new image for the tag cache). */
static unsigned char *slow_image(size_t *len, int seed) {
    image img;
    lion_status st;
    uint8_t *out = NULL;
    if (image_alloc(&img, 3000, 3000, &st)) return NULL;
    for (size_t i = 0; i < (size_t)img.width * img.height * 3; i++) img.data[i] = (uint8_t)((i + seed) * 7 % 251);
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
 * "internal"): a worker started with --max-batch BIG_BATCH and no tag cache (so that every
 * job is decoded and run, not answered as a repeat of the three images) answers BIG_BATCH jobs sent at once,
 * each as the reference says. How the test knows they ran as one batch: the worker stamps its
 * trace hop's finish_us once per process call, so BIG_BATCH answers with one finish_us, not the
 * slow job's, came out of one call. The slow job sent first makes the batch form: the compute
 * thread decodes it while the others queue behind it, then takes them all. A round in which
 * they were split anyway (a very busy machine) is run again. */
static void test_big_batch(const char *bin, const char *model, const test_image *images, const cJSON *expected) {
    char max_batch[16];
    snprintf(max_batch, sizeof max_batch, "%d", BIG_BATCH);
    const char *argv[] = {bin, "--model", model, "--threads", "1", "--replica", "tagger-big", "--max-batch", max_batch,
                          "--capacity", "80", "--cache-mb", "0", NULL};
    size_t slow_len = 0;
    unsigned char *slow = slow_image(&slow_len, 0);
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

/* The worker's tag cache counts as its heartbeats report them (credit.cache_hits and
 * cache_misses): waits up to 5 s for exactly these. Nothing may be outstanding meanwhile. */
static void check_cache_counts(fake_gateway *g, long long hits, long long misses, const char *what) {
    int64_t end = clock_mono_us() + 5000000;
    long long got_hits = -1, got_misses = -1;
    while (clock_mono_us() < end) {
        zmq_pollitem_t item = {g->router, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, 100) <= 0) continue;
        envelope_msg m;
        lion_status st;
        memset(&m, 0, sizeof m);
        if (envelope_recv(g->router, &m, ENVELOPE_ROUTED, NULL, &st) != 0 || !m.env) {
            CHECK_MSG(0, "%s: bad message from the worker: %s", what, st.msg);
            envelope_msg_close(&m);
            return;
        }
        const Lion__Credit *c = m.env->credit;
        if ((m.env->kind == LION__KIND__HEARTBEAT || m.env->kind == LION__KIND__READY) && c) {
            got_hits = c->has_cache_hits ? (long long)c->cache_hits : -1;
            got_misses = c->has_cache_misses ? (long long)c->cache_misses : -1;
        } else if (m.env->kind == LION__KIND__RESULT || m.env->kind == LION__KIND__ERROR) {
            CHECK_MSG(0, "%s: unexpected answer '%s'", what, m.env->request_id ? m.env->request_id : "");
        }
        envelope_msg_close(&m);
        if (got_hits == hits && got_misses == misses) break;
    }
    CHECK_MSG(got_hits == hits && got_misses == misses,
              "%s: the credit says %lld cache hits, %lld misses; want %lld, %lld", what, got_hits, got_misses, hits,
              misses);
}

/* Two answers' RESULTs, packed, are the same bytes (tags, scores, top tags, prompt), all but
 * the cache flag, which says how each was answered. */
static void check_same_answer(const envelope_msg *x, const envelope_msg *y, const char *what) {
    const Lion__Result *px = x->env ? x->env->result : NULL, *py = y->env ? y->env->result : NULL;
    CHECK_MSG(px && py, "%s: two RESULTs", what);
    if (!px || !py) return;
    CHECK_MSG(px->has_cache_hit && py->has_cache_hit, "%s: the answers do not say whether the cache answered", what);
    Lion__Result rx = *px, ry = *py;
    rx.has_cache_hit = ry.has_cache_hit = 0;
    size_t nx = lion__result__get_packed_size(&rx), ny = lion__result__get_packed_size(&ry);
    uint8_t *bx = malloc(nx + 1), *by = malloc(ny + 1);
    lion__result__pack(&rx, bx);
    lion__result__pack(&ry, by);
    CHECK_MSG(nx == ny && !memcmp(bx, by, nx), "%s: the answers differ (%zu and %zu bytes)", what, nx, ny);
    free(bx), free(by);
}

/* The first n entries of two tag lists are the same names with the same float bits. */
static int same_tags(Lion__Tag *const *x, size_t nx, Lion__Tag *const *y, size_t ny, size_t n) {
    if (nx < n || ny < n) return 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(x[i]->name, y[i]->name) || x[i]->has_score != y[i]->has_score ||
            memcmp(&x[i]->score, &y[i]->score, sizeof x[i]->score))
            return 0;
    return 1;
}

/* A hit asking another top-k than the miss that filled the entry: the same tags and prompt,
 * and its top tags are the miss's, cut or extended from the same scores. */
static void check_same_tags(const envelope_msg *miss, const envelope_msg *hit, const char *what) {
    const Lion__Result *a = miss->env ? miss->env->result : NULL, *b = hit->env ? hit->env->result : NULL;
    CHECK_MSG(a && b, "%s: two RESULTs", what);
    if (!a || !b) return;
    CHECK_MSG(a->n_tags == b->n_tags && same_tags(a->tags, a->n_tags, b->tags, b->n_tags, a->n_tags),
              "%s: the same tags and scores", what);
    CHECK_MSG(a->n_sequences == 1 && b->n_sequences == 1 && !strcmp(a->sequences[0]->text, b->sequences[0]->text),
              "%s: the same prompt", what);
    size_t n = a->n_top_tags < b->n_top_tags ? a->n_top_tags : b->n_top_tags;
    CHECK_MSG(same_tags(a->top_tags, a->n_top_tags, b->top_tags, b->n_top_tags, n), "%s: the same top tags", what);
}

static double hop_ms(const envelope_msg *m) {
    if (!m->env || m->env->n_trace < 1) return -1;
    const Lion__Hop *h = m->env->trace[m->env->n_trace - 1];
    return (h->finish_us - h->receive_us) / 1000.0;
}

/* One round of the mixed batch: a slow new image (the worker decodes it alone while the
 * others queue), then the cached image a, a new image and that new image again, which the
 * worker takes as one batch: RAM runs on the new image once. Every answer is checked;
 * new_answer keeps the new image's (top-k 5) answer. Returns 1 when the three ran as one
 * batch. Either way the counts grow by 2 hits (a, the repeat) and 2 misses. */
static int mixed_round(fake_gateway *g, const test_image *a, const test_image *fresh, const unsigned char *slow,
                       size_t slow_len, const cJSON *expected, const envelope_msg *a_answer, envelope_msg *new_answer,
                       double *slow_ms) {
    post_image(g, "mix-slow", slow, slow_len, -1);
    struct timespec pause = {0, 50 * 1000000};
    nanosleep(&pause, NULL);
    post_image(g, "mix-cached", a->bytes, a->len, 5);
    post_image(g, "mix-new", fresh->bytes, fresh->len, 5);
    post_image(g, "mix-new-again", fresh->bytes, fresh->len, 2);
    envelope_msg got[4];
    int seen = 0;
    for (int k = 0; k < 4; k++) {
        envelope_msg m;
        if (fake_gateway_recv(g, &m, 60000) != 0) {
            CHECK_MSG(0, "mixed batch: answer %d of 4 did not come", k);
            break;
        }
        static const char *const ids[] = {"mix-slow", "mix-cached", "mix-new", "mix-new-again"};
        int i = 0;
        while (i < 4 && strcmp(m.env->request_id ? m.env->request_id : "", ids[i])) i++;
        if (i == 4 || seen & (1 << i)) {
            CHECK_MSG(0, "mixed batch: unexpected answer '%s'", m.env->request_id ? m.env->request_id : "");
            envelope_msg_close(&m);
            continue;
        }
        seen |= 1 << i;
        got[i] = m;
    }
    if (seen != 15) {
        for (int i = 0; i < 4; i++)
            if (seen & (1 << i)) envelope_msg_close(&got[i]);
        return 0;
    }
    CHECK_MSG(got[0].env->kind == LION__KIND__RESULT, "mix-slow: a RESULT");
    *slow_ms = hop_ms(&got[0]);
    check_result(&got[1], expected, a->name, 5);
    check_same_answer(a_answer, &got[1], "the cached image in a mixed batch");
    check_result(&got[2], expected, fresh->name, 5);
    check_result(&got[3], expected, fresh->name, 2);
    check_same_tags(&got[2], &got[3], "a new image twice in one batch");
    int64_t f = hop_finish_us(&got[1]);
    int one_batch = f >= 0 && f == hop_finish_us(&got[2]) && f == hop_finish_us(&got[3]) && f != hop_finish_us(&got[0]);
    *new_answer = got[2];
    envelope_msg_close(&got[0]), envelope_msg_close(&got[1]), envelope_msg_close(&got[3]);
    return one_batch;
}

/* The tag cache, on by default: a repeat is a hit, counted in the heartbeat credit, with the
 * miss's answer byte for byte (another top-k: the same tags, top tags from the same
 * scores); a batch mixing a cached image, a new one and the new one again answers each as
 * the reference does and runs RAM on the new image alone; the new image's entry then answers
 * it alone, byte-identical to its batched answer. */
static void test_cache(const char *bin, const char *model, const test_image *images, const cJSON *expected) {
    const char *argv[] = {bin, "--model", model, "--threads", "1", "--replica", "tagger-cache", "--max-batch", "8",
                          "--capacity", "8", "--heartbeat-ms", "100", NULL};
    fake_gateway g;
    if (fake_gateway_start(&g, argv, 30000) != 0) {
        CHECK_MSG(0, "tagger service with the tag cache did not start");
        fake_gateway_stop(&g);
        return;
    }
    const test_image *a = &images[0];
    check_cache_counts(&g, 0, 0, "at start");
    envelope_msg first, m;
    CHECK(send_image(&g, "cache-a", a->bytes, a->len, 5, &first) == 0);
    check_result(&first, expected, a->name, 5);
    check_cache_counts(&g, 0, 1, "a new image");
    CHECK(send_image(&g, "cache-a-again", a->bytes, a->len, 5, &m) == 0);
    check_result(&m, expected, a->name, 5);
    check_same_answer(&first, &m, "the same image again");
    envelope_msg_close(&m);
    check_cache_counts(&g, 1, 1, "the same image again");
    CHECK(send_image(&g, "cache-a-top0", a->bytes, a->len, -1, &m) == 0);
    check_result(&m, expected, a->name, 0);
    check_same_tags(&first, &m, "a hit without top-k");
    envelope_msg_close(&m);
    CHECK(send_image(&g, "cache-a-all", a->bytes, a->len, N_TAGS + 1, &m) == 0);
    check_result(&m, expected, a->name, N_TAGS);
    check_same_tags(&first, &m, "a hit with every tag");
    envelope_msg_close(&m);
    check_cache_counts(&g, 3, 1, "two more hits");

    /* the mixed batch; a round split by a busy machine is run again with other new images */
    long long hits = 3, misses = 1;
    int one_batch = 0, round = 0;
    envelope_msg new_answer;
    const test_image *fresh = NULL;
    double slow_ms = -1;
    size_t slow_len = 0;
    unsigned char *slow = NULL;
    for (; round < 2 && !one_batch; round++) {
        if (round) envelope_msg_close(&new_answer);
        free(slow);
        slow = slow_image(&slow_len, round + 1);
        fresh = &images[1 + round];
        memset(&new_answer, 0, sizeof new_answer);
        one_batch = mixed_round(&g, a, fresh, slow, slow_len, expected, &first, &new_answer, &slow_ms);
        hits += 2, misses += 2;
        check_cache_counts(&g, hits, misses, "after a mixed batch");
    }
    CHECK_MSG(one_batch, "the cached image, the new one and its repeat never ran as one batch");
    if (one_batch) printf("mixed batch ran as one (round %d of at most 2)\n", round);
    /* the new image's entry, filled by the batch: the same answer alone */
    CHECK(send_image(&g, "cache-new-alone", fresh->bytes, fresh->len, 5, &m) == 0);
    check_same_answer(&new_answer, &m, "a batched miss, then the same image alone");
    envelope_msg_close(&m);
    envelope_msg_close(&new_answer);
    /* the slow 9 MP JPEG again: no decode this time */
    CHECK(send_image(&g, "cache-slow-again", slow, slow_len, -1, &m) == 0);
    CHECK_MSG(m.env && m.env->kind == LION__KIND__RESULT, "the slow image again: a RESULT");
    printf("3000x3000 JPEG (%zu bytes) at the worker: %.1f ms new, %.2f ms cached\n", slow_len, slow_ms, hop_ms(&m));
    envelope_msg_close(&m);
    check_cache_counts(&g, hits + 2, misses, "the last two hits");
    envelope_msg_close(&first);
    free(slow);
    CHECK_EQ_INT(fake_gateway_stop(&g), 0);
}

/* --cache-mb 0: every image is decoded and run (a miss), the answers stay right, and an
 * image run in a batch with others gets the bytes it gets alone (one forward per image: what
 * makes a cache hit equal to any miss). */
static void test_cache_off(const char *bin, const char *model, const test_image *images, const cJSON *expected) {
    const char *argv[] = {bin, "--model", model, "--threads", "1", "--replica", "tagger-nocache", "--max-batch", "4",
                          "--capacity", "8", "--heartbeat-ms", "100", "--cache-mb", "0", NULL};
    fake_gateway g;
    if (fake_gateway_start(&g, argv, 30000) != 0) {
        CHECK_MSG(0, "tagger service with --cache-mb 0 did not start");
        fake_gateway_stop(&g);
        return;
    }
    const test_image *b = &images[1];
    envelope_msg first, m;
    CHECK(send_image(&g, "off-b", b->bytes, b->len, 5, &first) == 0);
    check_result(&first, expected, b->name, 5);
    CHECK(send_image(&g, "off-b-again", b->bytes, b->len, 5, &m) == 0);
    check_result(&m, expected, b->name, 5);
    check_same_answer(&first, &m, "the same image again without a cache");
    envelope_msg_close(&m);
    check_cache_counts(&g, 0, 2, "no cache");

    /* b in a batch with a and c (behind a slow job, so that the three queue up) */
    size_t slow_len = 0;
    unsigned char *slow = slow_image(&slow_len, 7);
    CHECK(slow != NULL);
    if (slow) post_image(&g, "off-slow", slow, slow_len, -1);
    struct timespec pause = {0, 50 * 1000000};
    nanosleep(&pause, NULL);
    post_image(&g, "off-a", images[0].bytes, images[0].len, 1);
    post_image(&g, "off-c", images[2].bytes, images[2].len, 1);
    post_image(&g, "off-b-batched", b->bytes, b->len, 5);
    int64_t finish[3] = {-1, -2, -3};
    for (int k = 0; k < (slow ? 4 : 3); k++) {
        if (fake_gateway_recv(&g, &m, 60000) != 0) {
            CHECK_MSG(0, "no cache: answer %d did not come", k);
            break;
        }
        const char *id = m.env->request_id ? m.env->request_id : "";
        if (!strcmp(id, "off-a")) check_result(&m, expected, images[0].name, 1), finish[0] = hop_finish_us(&m);
        else if (!strcmp(id, "off-c")) check_result(&m, expected, images[2].name, 1), finish[1] = hop_finish_us(&m);
        else if (!strcmp(id, "off-b-batched")) {
            check_result(&m, expected, b->name, 5);
            check_same_answer(&first, &m, "an image alone, then in a batch");
            finish[2] = hop_finish_us(&m);
        } else CHECK_MSG(!strcmp(id, "off-slow") && m.env->kind == LION__KIND__RESULT, "no cache: answer '%s'", id);
        envelope_msg_close(&m);
    }
    printf("no cache: a, c and b %s\n",
           finish[0] == finish[1] && finish[1] == finish[2] ? "ran as one batch" : "were split (a busy machine)");
    check_cache_counts(&g, 0, slow ? 6 : 5, "no cache, after a batch");
    envelope_msg_close(&first);
    free(slow);
    CHECK_EQ_INT(fake_gateway_stop(&g), 0);
}

/* --precision bf16: the worker opens RAM with bf16 matrices and answers a job: a RESULT with
 * the prompt string, its top-5 scores near the f32 reference's (sigmoid scores within 3e-3,
 * measured 7.3e-4 here; tests/test_tagger_bf16.c measures Swin-L's widths). Tag decisions may flip next to a
 * threshold: they are printed, not asserted. */
static void test_bf16(const char *bin, const char *model, const test_image *images, const cJSON *expected) {
    const char *argv[] = {bin, "--model", model, "--threads", "1", "--replica", "tagger-bf16", "--cache-mb", "0",
                          "--precision", "bf16", NULL};
    fake_gateway g;
    if (fake_gateway_start(&g, argv, 30000) != 0) {
        CHECK_MSG(0, "tagger service with --precision bf16 did not start");
        fake_gateway_stop(&g);
        return;
    }
    const test_image *b = &images[1];
    envelope_msg m;
    CHECK(send_image(&g, "bf16-b", b->bytes, b->len, 5, &m) == 0);
    const cJSON *want = cJSON_GetObjectItem(expected, b->name);
    CHECK_MSG(m.env && m.env->kind == LION__KIND__RESULT && m.env->result, "bf16: a RESULT (%s)",
              m.env && m.env->error ? m.env->error->message : "");
    if (want && m.env && m.env->result) {
        const Lion__Result *r = m.env->result;
        CHECK_EQ_INT((int)r->n_sequences, 1);
        CHECK_EQ_INT((int)r->n_top_tags, 5);
        const cJSON *top = cJSON_GetObjectItem(want, "top");
        double worst = 0;
        for (size_t i = 0; i < r->n_top_tags && (int)i < cJSON_GetArraySize(top); i++) {
            const cJSON *w = cJSON_GetArrayItem(top, (int)i);
            /* the same tag at rank i, unless two scores swapped places (then compared by name) */
            for (int j = 0; j < cJSON_GetArraySize(top); j++) {
                const cJSON *wj = cJSON_GetArrayItem(top, j);
                if (strcmp(cJSON_GetArrayItem(wj, 0)->valuestring, r->top_tags[i]->name) == 0) w = wj;
            }
            double d = fabs(r->top_tags[i]->score - cJSON_GetArrayItem(w, 1)->valuedouble);
            if (d > worst) worst = d;
        }
        CHECK_MSG(worst <= 3e-3, "bf16: a top-5 score %.4g from the reference", worst);
        printf("bf16: %zu tags kept (reference %d), top-5 scores within %.3g, prompt '%s'\n", r->n_tags,
               cJSON_GetArraySize(cJSON_GetObjectItem(want, "tags")), worst,
               r->n_sequences ? r->sequences[0]->text : "");
    }
    envelope_msg_close(&m);
    CHECK_EQ_INT(fake_gateway_stop(&g), 0);
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
    test_cache(bin, model, images, expected);
    test_cache_off(bin, model, images, expected);
    test_bf16(bin, model, images, expected);
    cJSON_Delete(expected);
    free(json), free(a), free(b), free(c), free(trunc);
    return testing_finish();
}
