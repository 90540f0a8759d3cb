/* The LLaMA decoder with Pink's adapters (services/llm/llama.h) against the PyTorch reference
 * (fixtures/gen_llama.py, tools/reference/pink_ref/llama.py): at tiny dims (MHA with both
 * adapters and SiLU, GQA with Pink's released adapters, plain LLaMA) and at true Llama-2-7B
 * widths truncated to one layer.
 *
 * Per case, two prompts (one as input embeddings, one as token ids) are prefilled together in one
 * llama_forward call, then decoded greedily together, one llama_step per token, each sequence on
 * its own KV cache slot. The C decode picks its own tokens (argmax of its own logits); they must
 * be the reference's, whose every step was a full forward without a cache; and every step's
 * logits must be within 1e-4 relative (max |diff| / max |reference|) of the reference's.
 * Also: a prompt prefilled in two chunks, a forked slot (llama_cache_copy), and that the
 * comparison can fail: a model with two weights swapped, or one transposed, misses by far. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "llama.h"
#include "testing.h"
#include "threads.h"

#define TOL 1e-4

typedef struct fixture {
    weights w;
    safetensors_file *io;
    llama_model m;
    int lens[2], steps;
    const float *prompt0;                     /* [lens[0], dim] */
    const int32_t *prompt1;                   /* [lens[1]] */
    const int32_t *tokens[2];                 /* [steps] */
    const float *logits[2];                   /* [steps, vocab] */
} fixture;

static int fixture_open(fixture *fx, const char *name, const llama_config *cfg, int len0, int len1, int steps) {
    lion_status st;
    memset(fx, 0, sizeof *fx);
    if (testing_open_model(name, "", &fx->w, &fx->io)) return -1;
    if (llama_load(&fx->m, cfg, &fx->w, &st)) {
        CHECK_MSG(0, "%s: %s", name, st.msg);
        safetensors_close(fx->io);
        weights_close(&fx->w);
        return -1;
    }
    const size_t V = (size_t)cfg->vocab_size;
    fx->lens[0] = len0, fx->lens[1] = len1, fx->steps = steps;
    fx->prompt0 = testing_floats(fx->io, "prompt_embeds_0", (size_t)len0 * cfg->dim);
    fx->prompt1 = testing_ints(fx->io, "prompt_ids_1", (size_t)len1);
    fx->tokens[0] = testing_ints(fx->io, "tokens_0", (size_t)steps);
    fx->tokens[1] = testing_ints(fx->io, "tokens_1", (size_t)steps);
    fx->logits[0] = testing_floats(fx->io, "logits_0", (size_t)steps * V);
    fx->logits[1] = testing_floats(fx->io, "logits_1", (size_t)steps * V);
    if (!fx->prompt0 || !fx->prompt1 || !fx->tokens[0] || !fx->tokens[1] || !fx->logits[0] || !fx->logits[1]) {
        llama_free(&fx->m);
        safetensors_close(fx->io);
        weights_close(&fx->w);
        return -1;
    }
    return 0;
}

static void fixture_close(fixture *fx) {
    llama_free(&fx->m);
    safetensors_close(fx->io);
    weights_close(&fx->w);
}

/* Both prompts' embeddings, one after the other: the x of one llama_forward. */
static float *prompt_rows(const fixture *fx, lion_status *st) {
    const int d = fx->m.cfg.dim;
    float *x = malloc((size_t)(fx->lens[0] + fx->lens[1]) * d * sizeof(float));
    if (!x) return NULL;
    memcpy(x, fx->prompt0, (size_t)fx->lens[0] * d * sizeof(float));
    if (llama_embed(&fx->m, fx->prompt1, fx->lens[1], x + (size_t)fx->lens[0] * d, st)) {
        free(x);
        return NULL;
    }
    return x;
}

/* Prefill of both prompts in one call; the worst relative error of the two sequences' logits. */
static double prefill_error(const llama_model *m, const fixture *fx, const float *x, arena *a) {
    lion_status st;
    llama_cache c;
    const int V = m->cfg.vocab_size, slots[2] = {1, 0};
    float *logits = malloc((size_t)2 * V * sizeof(float));
    double worst = INFINITY;
    if (logits && llama_cache_init(&c, m, 2, fx->lens[0] + fx->lens[1], &st) == 0) {
        if (llama_forward(m, &c, 2, slots, fx->lens, x, logits, a, &st) == 0)
            worst = fmax(testing_rel_err(logits, fx->logits[0], V), testing_rel_err(logits + V, fx->logits[1], V));
        llama_cache_free(&c);
    }
    free(logits);
    return worst;
}

static void run_case(const char *name, llama_config cfg, int len0, int len1, int steps, int check_wrong) {
    fixture fx;
    if (fixture_open(&fx, name, &cfg, len0, len1, steps)) return;
    const llama_model *m = &fx.m;
    const int V = cfg.vocab_size, d = cfg.dim;
    lion_status st;
    arena a;
    arena_init(&a, 0);
    char what[128];
    double t0 = (double)clock_mono_us(), worst = 0;
    float *x = prompt_rows(&fx, &st), *logits = malloc((size_t)2 * V * sizeof(float));
    llama_cache c;
    /* slots 2 and 0 of 3: a sequence's slot is its own, whatever the others */
    const int slots[2] = {2, 0};
    if (!x || !logits || llama_cache_init(&c, m, 3, len0 + len1 + steps, &st)) {
        CHECK_MSG(0, "%s: setup: %s", name, st.msg);
        goto out;
    }
    CHECK_MSG(llama_forward(m, &c, 2, slots, fx.lens, x, logits, &a, &st) == 0, "%s: %s", name, st.msg);
    CHECK_EQ_INT(c.len[2], len0);
    CHECK_EQ_INT(c.len[0], len1);
    int same_tokens = 1;
    for (int s = 0; s < steps; s++) {
        int32_t next[2];
        for (int q = 0; q < 2; q++) {
            const float *want = fx.logits[q] + (size_t)s * V;
            double e = testing_rel_err(logits + (size_t)q * V, want, V);
            worst = fmax(worst, e);
            snprintf(what, sizeof what, "%s sequence %d, %s %d", name, q, s ? "step" : "prefill", s);
            CHECK_CLOSE(logits + (size_t)q * V, want, V, TOL, what);
            next[q] = testing_argmax(logits + (size_t)q * V, V);
            if (next[q] != fx.tokens[q][s]) {
                same_tokens = 0;
                testing_fail(__FILE__, __LINE__, "%s sequence %d: greedy token %d is %d, the reference's %d", name, q,
                             s, (int)next[q], (int)fx.tokens[q][s]);
            }
        }
        if (s + 1 < steps)
            CHECK_MSG(llama_step(m, &c, 2, slots, next, logits, &a, &st) == 0, "%s: %s", name, st.msg);
    }
    CHECK(same_tokens);
    printf("%s: prefill + %d greedy steps of 2 sequences: max relative error %.2e, tokens %s the reference's "
           "(%.2f s)\n", name, steps - 1, worst, same_tokens ? "==" : "!=", ((double)clock_mono_us() - t0) / 1e6);

    /* sequence 0's prompt in two chunks into the free slot: the same logits */
    const int first = len0 / 2, rest = len0 - first, slot1 = 1;
    CHECK(llama_forward(m, &c, 1, &slot1, &first, fx.prompt0, logits, &a, &st) == 0);
    CHECK(llama_forward(m, &c, 1, &slot1, &rest, fx.prompt0 + (size_t)first * d, logits, &a, &st) == 0);
    snprintf(what, sizeof what, "%s sequence 0 prefilled in chunks of %d + %d", name, first, rest);
    CHECK_CLOSE(logits, fx.logits[0], V, TOL, what);

    /* a fork: slot 1 becomes a copy of slot 2 (sequence 0 and its steps); both then take the same
     * token and must give the same logits */
    CHECK(llama_cache_copy(&c, 1, 2, &st) == 0);
    CHECK_EQ_INT(c.len[1], c.len[2]);
    const int fork[2] = {1, 2};
    const int32_t same[2] = {3, 3};
    if (c.len[2] < c.capacity) {
        CHECK(llama_step(m, &c, 2, fork, same, logits, &a, &st) == 0);
        CHECK_CLOSE(logits, logits + V, V, 1e-6, "forked slot == its source");
    }
    /* the cache refuses what it cannot hold, and the errors name the cause */
    llama_cache_reset(&c, 1);
    CHECK_EQ_INT(c.len[1], 0);
    const int too_many = c.capacity + 1;
    CHECK(llama_forward(m, &c, 1, &slot1, &too_many, x, logits, &a, &st) == -1);
    CHECK_CONTAINS(st.msg, "cache full");
    const int twice[2] = {0, 0};
    CHECK(llama_step(m, &c, 2, twice, same, logits, &a, &st) == -1);
    CHECK_CONTAINS(st.msg, "slot 0 given twice");
    const int32_t bad[2] = {3, (int32_t)V};
    CHECK(llama_step(m, &c, 2, fork, bad, logits, &a, &st) == -1);
    CHECK_CONTAINS(st.msg, "outside the vocabulary");

    if (check_wrong) {
        /* the test can fail: q_proj and k_proj of layer 0 swapped (same shape without GQA), and
         * o_proj of layer 0 transposed, each miss the reference by far more than the tolerance */
        llama_model wrong = *m;
        llama_layer *layers = malloc((size_t)cfg.layers * sizeof *layers);
        const int n = m->q_dim; /* o_proj is [dim, q_dim] = square here */
        float *t = malloc((size_t)n * n * sizeof(float));
        if (layers && t && m->q_dim == m->kv_dim && m->q_dim == d) {
            memcpy(layers, m->layer, (size_t)cfg.layers * sizeof *layers);
            wrong.layer = layers;
            layers[0].wq = m->layer[0].wk, layers[0].wk = m->layer[0].wq;
            double e_swap = prefill_error(&wrong, &fx, x, &a);
            layers[0] = m->layer[0];
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) t[(size_t)i * n + j] = m->layer[0].wo.w[(size_t)j * n + i];
            lion_status unused;
            linear_from_f32(&layers[0].wo, t, d, n, PRECISION_F32, LINEAR_STEP, &unused);
            double e_trans = prefill_error(&wrong, &fx, x, &a);
            double e_right = prefill_error(m, &fx, x, &a);
            printf("%s: prefill error %.2e; with q/k swapped %.2e, with o_proj transposed %.2e\n", name, e_right,
                   e_swap, e_trans);
            CHECK_MSG(e_right <= TOL, "%s: the right weights miss (%.3g)", name, e_right);
            CHECK_MSG(e_swap > 100 * TOL, "%s: swapped q/k pass the comparison (%.3g)", name, e_swap);
            CHECK_MSG(e_trans > 100 * TOL, "%s: a transposed o_proj passes the comparison (%.3g)", name, e_trans);
        } else {
            CHECK_MSG(0, "%s: wrong-weight check needs MHA with square o_proj", name);
        }
        free(layers);
        free(t);
    }
    llama_cache_free(&c);
out:
    free(x);
    free(logits);
    arena_free(&a);
    fixture_close(&fx);
}

static void test_load_errors(void) {
    lion_status st;
    weights w;
    if (weights_open(&w, testing_fixture("llama_tiny.safetensors"), "", &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return;
    }
    const llama_config tiny = {64, 96, 2, 4, 4, 101, 1e-5f, 10000.0f, 8, 1, 1, 1};
    llama_model m;
    llama_config c = tiny;
    c.hidden = 128;
    CHECK(llama_load(&m, &c, &w, &st) == -1);
    CHECK_CONTAINS(st.msg, "model.layers.0.mlp.gate_proj.weight");
    c = tiny;
    c.layers = 3;
    CHECK(llama_load(&m, &c, &w, &st) == -1);
    CHECK_CONTAINS(st.msg, "model.layers.2.");
    c = tiny;
    c.kv_heads = 2; /* k_proj would be [32, 64]; the file's is [64, 64] */
    CHECK(llama_load(&m, &c, &w, &st) == -1);
    CHECK_CONTAINS(st.msg, "model.layers.0.self_attn.k_proj.weight");
    c = tiny;
    c.adapter_dim = 4;
    CHECK(llama_load(&m, &c, &w, &st) == -1);
    CHECK_CONTAINS(st.msg, "adapter_attn.tune_adapter_a.weight");
    c = tiny;
    c.kv_heads = 3;
    CHECK(llama_load(&m, &c, &w, &st) == -1);
    CHECK_CONTAINS(st.msg, "kv_heads 3");
    weights_close(&w);
}

int main(void) {
    threads_init(2);
    /* dim, hidden, layers, heads, kv_heads, vocab, rms_eps, rope_theta, adapter dim/attn/mlp/silu */
    run_case("llama_tiny", (llama_config){64, 96, 2, 4, 4, 101, 1e-5f, 10000.0f, 8, 1, 1, 1}, 9, 6, 6, 1);
    run_case("llama_gqa", (llama_config){96, 160, 3, 6, 2, 131, 1e-6f, 500000.0f, 8, 1, 0, 0}, 300, 5, 5, 0);
    run_case("llama_plain", (llama_config){40, 72, 1, 5, 5, 77, 1e-5f, 10000.0f, 0, 0, 0, 0}, 4, 7, 4, 1);
    run_case("llama_7b", (llama_config){4096, 11008, 1, 32, 32, 32000, 1e-5f, 10000.0f, 8, 1, 0, 0}, 11, 7, 4, 0);
    test_load_errors();
    return testing_finish();
}
