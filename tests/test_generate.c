/* Generation against lion_ref's generate_ids (fixtures/gen_generate.py): greedy and beam
 * search token sequences identical to the reference's for hundreds of prompts run in padded
 * groups, with upstream's settings and variants (min_length, max_new_tokens, length
 * penalty, num_return_sequences, router 0). Sampling cannot match torch's generator, so its
 * properties are tested: the same seed gives the same text alone or batched, top_p -> 0
 * is greedy, different seeds differ, per-request seeds are each request's own. The hooks
 * between steps: requests stopped mid-generation (greedy and beam search) leave the batch
 * and the others' sequences stay what they are without the stop; the step hook sees each
 * request's ids grow by one per step up to its end. */
#include <stdlib.h>
#include <string.h>

#include "generate.h"
#include "search.h"
#include "testing.h"
#include "threads.h"

enum { N_PROMPTS = 300, LMAX = 24, GROUP = 6, D = 32, V = 128 };

typedef struct variant {
    const char *name;
    int prompts, router, num_beams, max_new_tokens, min_length, num_return_sequences;
    float repetition_penalty, length_penalty;
} variant;

/* mirrors VARIANTS in gen_generate.py */
static const variant VARIANTS[] = {
    {"greedy", 300, 1, 1, 24, 1, 1, 1.5f, 1.0f},
    {"greedy_plain", 60, 0, 1, 24, 1, 1, 1.0f, 1.0f},
    {"beam", 300, 1, 5, 24, 1, 1, 1.5f, 1.0f},
    {"beam_minlen", 60, 1, 5, 24, 12, 1, 1.5f, 1.0f},
    {"beam_lp2", 60, 0, 5, 24, 1, 1, 1.5f, 2.0f},
    {"beam_lp03", 60, 1, 5, 24, 1, 1, 1.5f, 0.3f},
    {"beam_short", 60, 1, 5, 5, 1, 1, 1.5f, 1.0f},
    {"beam3_rep12", 60, 0, 3, 24, 1, 1, 1.2f, 1.0f},
    {"beam_nrs3", 60, 1, 5, 24, 1, 3, 1.5f, 1.0f},
};

static t5_model model;
static const float *embeds;
static const int32_t *lengths;
static arena scratch;

/* prompts [first, first + n) as a padded batch */
static int group_inputs(int first, int n, float *x, uint8_t *mask) {
    int L = 0;
    for (int i = 0; i < n; i++)
        if (lengths[first + i] > L) L = lengths[first + i];
    for (int i = 0; i < n; i++)
        for (int t = 0; t < L; t++) {
            memcpy(x + ((size_t)i * L + t) * D, embeds + ((size_t)(first + i) * LMAX + t) * D, D * sizeof(float));
            mask[(size_t)i * L + t] = t < lengths[first + i];
        }
    return L;
}

static void run_variant(safetensors_file *io, const variant *v) {
    char key[64];
    lion_status st;
    tensor tids, tlen;
    snprintf(key, sizeof key, "%s_ids", v->name);
    const int stride = v->max_new_tokens + 1, nrs = v->num_return_sequences;
    CHECK(safetensors_get(io, key, &tids, &st) == 0 && tids.shape[0] == v->prompts * nrs && tids.shape[1] == stride);
    snprintf(key, sizeof key, "%s_len", v->name);
    CHECK(safetensors_get(io, key, &tlen, &st) == 0 && tlen.shape[0] == v->prompts * nrs);
    const int32_t *want = tids.data, *want_len = tlen.data;
    generate_params p;
    generate_params_default(&p);
    p.num_beams = v->num_beams, p.max_new_tokens = v->max_new_tokens, p.min_length = v->min_length;
    p.num_return_sequences = nrs, p.repetition_penalty = v->repetition_penalty, p.length_penalty = v->length_penalty;
    float x[GROUP * LMAX * D];
    uint8_t mask[GROUP * LMAX];
    int differ = 0;
    for (int first = 0; first < v->prompts; first += GROUP) {
        int n = v->prompts - first < GROUP ? v->prompts - first : GROUP;
        int L = group_inputs(first, n, x, mask);
        generate_result r;
        if (generate_run(&model, x, mask, n, L, v->router, &p, &r, &scratch, &st)) {
            CHECK_MSG(0, "%s: %s", v->name, st.msg);
            return;
        }
        for (int i = 0; i < n * nrs; i++) {
            const size_t s = (size_t)first * nrs + i;
            const int32_t *got = r.ids + (size_t)i * r.stride;
            int same = r.lengths[i] == want_len[s] && !memcmp(got, want + s * stride, (size_t)want_len[s] * 4);
            if (!same && differ++ < 3) {
                char a[512] = "", b[512] = "";
                for (int t = 0; t < r.lengths[i]; t++) snprintf(a + strlen(a), sizeof a - strlen(a), " %d", got[t]);
                for (int t = 0; t < want_len[s]; t++)
                    snprintf(b + strlen(b), sizeof b - strlen(b), " %d", want[s * stride + t]);
                testing_fail(__FILE__, __LINE__, "%s: prompt %d seq %d:\n  got %s\n want %s", v->name,
                             first + i / nrs, i % nrs, a, b);
            }
        }
        generate_result_free(&r);
    }
    CHECK_MSG(differ == 0, "%s: %d of %d sequences differ from the reference", v->name, differ, v->prompts * nrs);
}

static int same_sequence(const generate_result *a, int i, const generate_result *b, int j) {
    return a->lengths[i] == b->lengths[j] &&
           !memcmp(a->ids + (size_t)i * a->stride, b->ids + (size_t)j * b->stride, (size_t)a->lengths[i] * 4);
}

static void test_sampling(void) {
    lion_status st;
    float x[GROUP * LMAX * D], x1[LMAX * D];
    uint8_t mask[GROUP * LMAX], mask1[LMAX];
    int L = group_inputs(0, GROUP, x, mask);
    generate_params p;
    generate_params_default(&p);
    p.num_beams = 1, p.do_sample = 1, p.max_new_tokens = 20, p.top_p = 0.95f, p.temperature = 1.3f, p.seed = 42;
    generate_result a, b, c, alone, greedy, nucleus;
    CHECK(generate_run(&model, x, mask, GROUP, L, 1, &p, &a, &scratch, &st) == 0);
    CHECK(generate_run(&model, x, mask, GROUP, L, 1, &p, &b, &scratch, &st) == 0);
    p.seed = 43;
    CHECK(generate_run(&model, x, mask, GROUP, L, 1, &p, &c, &scratch, &st) == 0);
    int same_ab = 0, same_ac = 0;
    for (int i = 0; i < GROUP; i++) same_ab += same_sequence(&a, i, &b, i), same_ac += same_sequence(&a, i, &c, i);
    CHECK_EQ_INT(same_ab, GROUP);
    CHECK_MSG(same_ac < GROUP, "seeds 42 and 43 gave identical samples for all %d prompts", GROUP);
    /* a request's sample does not depend on what it is batched with */
    p.seed = 42;
    int L1 = group_inputs(3, 1, x1, mask1);
    CHECK(generate_run(&model, x1, mask1, 1, L1, 1, &p, &alone, &scratch, &st) == 0);
    CHECK(same_sequence(&alone, 0, &a, 3));
    /* top_p -> 0 keeps only the best token: greedy */
    p.top_p = 1e-6f, p.temperature = 1.0f;
    CHECK(generate_run(&model, x, mask, GROUP, L, 1, &p, &nucleus, &scratch, &st) == 0);
    p.do_sample = 0;
    CHECK(generate_run(&model, x, mask, GROUP, L, 1, &p, &greedy, &scratch, &st) == 0);
    for (int i = 0; i < GROUP; i++) CHECK_MSG(same_sequence(&nucleus, i, &greedy, i), "top_p 1e-6 != greedy, prompt %d", i);
    generate_result_free(&a), generate_result_free(&b), generate_result_free(&c);
    generate_result_free(&alone), generate_result_free(&greedy), generate_result_free(&nucleus);
}

/* What the hooks saw, and whom they stop: request r stops before step stop_at[r] (0: never;
 * 1: before the first). */
typedef struct hook_log {
    int stop_at[GROUP];
    int asked[GROUP];      /* stop calls per request */
    int steps[GROUP];      /* step calls per request */
    int last_n[GROUP], last_finished[GROUP], bad_order[GROUP];
    int32_t last_ids[GROUP][32];
} hook_log;

static int hook_stop(void *ctx, int r) {
    hook_log *h = ctx;
    h->asked[r]++;
    return h->stop_at[r] && h->asked[r] >= h->stop_at[r];
}

static void hook_step(void *ctx, int r, const int32_t *ids, int n_ids, int finished) {
    hook_log *h = ctx;
    h->steps[r]++;
    /* one more id each step, the earlier ones unchanged, nothing after the end */
    if (n_ids != h->steps[r] + 1 || h->last_finished[r] ||
        (h->last_n[r] && memcmp(ids, h->last_ids[r], (size_t)h->last_n[r] * sizeof *ids)))
        h->bad_order[r]++;
    h->last_n[r] = n_ids < 32 ? n_ids : 32;
    memcpy(h->last_ids[r], ids, (size_t)h->last_n[r] * sizeof *ids);
    h->last_finished[r] = finished;
}

static void test_hooks(void) {
    lion_status st;
    float x[GROUP * LMAX * D];
    uint8_t mask[GROUP * LMAX];
    int L = group_inputs(12, GROUP, x, mask);
    for (int beams = 1; beams <= 5; beams += 4) {
        generate_params p;
        generate_params_default(&p);
        p.num_beams = beams, p.max_new_tokens = 24;
        generate_result base, r;
        CHECK(generate_run(&model, x, mask, GROUP, L, 1, &p, &base, &scratch, &st) == 0);
        hook_log h = {.stop_at = {0, 0, 4, 0, 1, 0}};
        generate_options opts = {.ctx = &h, .stop = hook_stop, .step = hook_step};
        CHECK_MSG(generate_run_with(&model, x, mask, GROUP, L, 1, &p, &opts, &r, &scratch, &st) == 0, "%s", st.msg);
        for (int i = 0; i < GROUP; i++) {
            int stopped = h.stop_at[i] != 0;
            CHECK_EQ_INT(r.stopped[i], stopped);
            if (stopped) {
                CHECK_EQ_INT(r.lengths[i], 0);
                CHECK_EQ_INT(h.asked[i], h.stop_at[i]); /* not asked again once stopped */
            } else {
                CHECK_MSG(same_sequence(&r, i, &base, i), "beams %d: request %d changed when others stopped", beams, i);
            }
            if (beams > 1) {
                CHECK_EQ_INT(h.steps[i], 0); /* beam search has no answer before its end */
                continue;
            }
            CHECK_EQ_INT(h.bad_order[i], 0);
            CHECK_EQ_INT(h.steps[i], stopped ? h.stop_at[i] - 1 : base.lengths[i] - 1);
            if (!stopped) {
                CHECK_EQ_INT(h.last_finished[i], 1);
                CHECK(!memcmp(h.last_ids[i], base.ids + (size_t)i * base.stride,
                              (size_t)h.last_n[i] * sizeof(int32_t)));
            }
        }
        generate_result_free(&r);
        /* all stopped at once: nothing runs, every result empty */
        hook_log all = {.stop_at = {1, 1, 1, 1, 1, 1}};
        opts.ctx = &all;
        CHECK(generate_run_with(&model, x, mask, GROUP, L, 1, &p, &opts, &r, &scratch, &st) == 0);
        for (int i = 0; i < GROUP; i++) CHECK(r.stopped[i] && r.lengths[i] == 0 && all.steps[i] == 0);
        generate_result_free(&r);
        generate_result_free(&base);
    }

    /* per-request seeds: each request samples with its own, as alone with that seed */
    generate_params p;
    generate_params_default(&p);
    p.num_beams = 1, p.do_sample = 1, p.max_new_tokens = 20, p.top_p = 0.95f, p.temperature = 1.3f;
    const uint64_t seeds[GROUP] = {42, 7, 42, 9, 42, 11};
    generate_options opts = {.seeds = seeds};
    generate_result mixed, one;
    CHECK(generate_run_with(&model, x, mask, GROUP, L, 1, &p, &opts, &mixed, &scratch, &st) == 0);
    for (int i = 0; i < GROUP; i++) {
        float x1[LMAX * D];
        uint8_t mask1[LMAX];
        int L1 = group_inputs(12 + i, 1, x1, mask1);
        p.seed = seeds[i];
        CHECK(generate_run(&model, x1, mask1, 1, L1, 1, &p, &one, &scratch, &st) == 0);
        CHECK_MSG(same_sequence(&mixed, i, &one, 0), "request %d with seed %llu differs from alone", i,
                  (unsigned long long)seeds[i]);
        generate_result_free(&one);
    }
    generate_result_free(&mixed);
}

static void test_errors(void) {
    lion_status st;
    float x[LMAX * D];
    uint8_t mask[LMAX];
    int L = group_inputs(0, 1, x, mask);
    generate_result r;
    generate_params p;
    generate_params_default(&p);
    p.num_beams = 0;
    CHECK(generate_run(&model, x, mask, 1, L, 1, &p, &r, &scratch, &st) == -1);
    CHECK_CONTAINS(st.msg, "num_beams 0 is not in [1, 16]");
    p.num_beams = 17; /* protocol.h's LION_MAX_BEAMS + 1 */
    CHECK(generate_run(&model, x, mask, 1, L, 1, &p, &r, &scratch, &st) == -1);
    CHECK_CONTAINS(st.msg, "num_beams 17 is not in [1, 16]");
    generate_params_default(&p);
    p.num_return_sequences = 6;
    CHECK(generate_run(&model, x, mask, 1, L, 1, &p, &r, &scratch, &st) == -1);
    CHECK_CONTAINS(st.msg, "num_return_sequences 6 is not in [1, num_beams 5]");
    generate_params_default(&p);
    p.do_sample = 1;
    CHECK(generate_run(&model, x, mask, 1, L, 1, &p, &r, &scratch, &st) == -1);
    CHECK_CONTAINS(st.msg, "beam sampling");
    generate_params_default(&p);
    p.num_beams = 1, p.do_sample = 1, p.top_p = 0.0f;
    CHECK(generate_run(&model, x, mask, 1, L, 1, &p, &r, &scratch, &st) == -1);
    CHECK_CONTAINS(st.msg, "top_p 0 is not in (0, 1]");
    generate_params_default(&p);
    p.eos_id = 128;
    CHECK(generate_run(&model, x, mask, 1, L, 1, &p, &r, &scratch, &st) == -1);
    CHECK_CONTAINS(st.msg, "eos_id 128 is outside the vocabulary of 128");
    generate_params_default(&p);
    p.max_new_tokens = 0;
    CHECK(generate_run(&model, x, mask, 1, L, 1, &p, &r, &scratch, &st) == -1);
    CHECK_CONTAINS(st.msg, "max_new_tokens 0");
    p.max_new_tokens = 513; /* LION_MAX_NEW_TOKENS + 1 */
    CHECK(generate_run(&model, x, mask, 1, L, 1, &p, &r, &scratch, &st) == -1);
    CHECK_CONTAINS(st.msg, "max_new_tokens 513 is not in [1, 512]");
    generate_params_default(&p);
    CHECK(generate_run(&model, x, mask, 1, L, 3, &p, &r, &scratch, &st) == -1);
    CHECK_CONTAINS(st.msg, "router index 3");
    CHECK(r.ids == NULL && r.lengths == NULL);
}

/* One greedy step of a search on fixed logits: the id it picks. */
static int greedy_pick(search *s, const float *logits_in) {
    float logits[V];
    memcpy(logits, logits_in, sizeof logits);
    int src[1];
    lion_status st;
    CHECK_MSG(search_advance(s, logits, src, &scratch, &st) == 0, "%s", st.msg);
    int n;
    const int32_t *ids = search_ids(s, &n);
    return ids[n - 1];
}

/* A decoder-only model's prompt (search_set_prompt) is part of HF's input_ids: the repetition
 * penalty covers its ids and min_length counts them (HF 4.42: RepetitionPenaltyLogitsProcessor
 * gathers over input_ids; MinLengthLogitsProcessor compares input_ids.shape[-1]). */
static void test_decoder_only_prompt(void) {
    generate_params p;
    generate_params_default(&p);
    p.num_beams = 1, p.max_new_tokens = 4, p.repetition_penalty = 2.0f, p.min_length = 0;
    p.decoder_start_id = 9, p.eos_id = 2;
    float logits[V];
    for (int i = 0; i < V; i++) logits[i] = 0.1f;
    logits[40] = 3.0f; /* the best, but in the prompt: 3 / 2 = 1.5 */
    logits[41] = 2.0f; /* second, not in the prompt */
    const int32_t prompt[] = {1, 40, 7, 40};
    lion_status st;
    search *with, *without;
    CHECK(search_create(&with, &p, V, 1, &st) == 0 && search_set_prompt(with, prompt, 4, &st) == 0);
    CHECK(search_create(&without, &p, V, 1, &st) == 0);
    CHECK_EQ_INT(greedy_pick(with, logits), 41);
    CHECK_EQ_INT(greedy_pick(without, logits), 40);
    search_free(with);
    search_free(without);
    /* min_length over HF's input_ids, prompt + start id + generated: 4 + 1 < 6 forbids eos at
     * the first step only (then 4 + 1 + 1 = 6); without the prompt 1 + 1 < 6 still forbids it */
    p.repetition_penalty = 1.0f, p.min_length = 6;
    for (int i = 0; i < V; i++) logits[i] = 0.1f;
    logits[p.eos_id] = 5.0f, logits[41] = 1.0f;
    CHECK(search_create(&with, &p, V, 1, &st) == 0 && search_set_prompt(with, prompt, 4, &st) == 0);
    CHECK_EQ_INT(greedy_pick(with, logits), 41);
    CHECK_EQ_INT(greedy_pick(with, logits), p.eos_id);
    CHECK(search_finished(with));
    search_free(with);
    CHECK(search_create(&without, &p, V, 1, &st) == 0);
    CHECK_EQ_INT(greedy_pick(without, logits), 41);
    CHECK_EQ_INT(greedy_pick(without, logits), 41);
    search_free(without);
    /* an id outside the vocabulary is refused, naming it */
    const int32_t bad[] = {3, V};
    CHECK(search_create(&with, &p, V, 1, &st) == 0);
    CHECK(search_set_prompt(with, bad, 2, &st) != 0 && strstr(st.msg, "outside the vocabulary"));
    search_free(with);
}

int main(void) {
    threads_init(2);
    lion_status st;
    weights w;
    safetensors_file *io;
    if (weights_open(&w, testing_fixture("generate_t5.safetensors"), "t5_model.", &st) ||
        safetensors_open(&io, testing_fixture("generate_io.safetensors"), &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return testing_finish();
    }
    t5_config cfg = {D, 64, 8, 4, 2, 2, V, 8, 16, 1e-6f, ACT_GELU, 2, 4, 0};
    CHECK_MSG(t5_load(&model, &cfg, &w, &st) == 0, "%s", st.msg);
    tensor te, tl;
    CHECK(safetensors_get(io, "embeds", &te, &st) == 0 && te.shape[0] == N_PROMPTS && te.shape[1] == LMAX);
    CHECK(safetensors_get(io, "lengths", &tl, &st) == 0 && tl.shape[0] == N_PROMPTS);
    embeds = te.data, lengths = tl.data;
    arena_init(&scratch, 0);
    for (size_t i = 0; i < sizeof VARIANTS / sizeof VARIANTS[0]; i++) run_variant(io, &VARIANTS[i]);
    test_sampling();
    test_hooks();
    test_errors();
    test_decoder_only_prompt();
    arena_free(&scratch);
    t5_free(&model);
    safetensors_close(io);
    weights_close(&w);
    return testing_finish();
}
