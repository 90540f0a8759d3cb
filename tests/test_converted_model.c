/* Model directories written by tools/convert from upstream-format checkpoints (the
 * fixture converts fake ones of the released layouts) load in C: model.json validates,
 * every tensor of every stage file reads as f32 whatever its storage dtype, and the
 * vision, tagger and aggregator models bind all their weights with the right shapes.
 *
 * The llm stage is opened as lion-llm opens it (llm_stage_open: t5_config_from_llm,
 * weights under "t5_model.", soft_prompt_hint outside that prefix, the tokenizer) and its
 * values are compared with the PyTorch reference on the same (storage-rounded) weights,
 * fixtures/gen_converted_model.py: soft_prompt_hint and the prompt's input embeddings
 * exactly (both sides widen the same stored values), the T5 encoder output and three
 * KV-cached decoder steps' logits on both adapter routes within 1e-4 relative (as
 * test_t5.c). That the comparison can fail is checked too: a transposed attention weight
 * and, with two adapters, the other adapter route both miss the reference by far. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "aggregate.h"
#include "llm_stage.h"
#include "model_config.h"
#include "ram.h"
#include "testing.h"
#include "threads.h"
#include "vit.h"

/* As tests/fixtures/gen_converted_model.py's INSTRUCTION, TAGS, NV and STEPS. */
#define LLM_INSTRUCTION "what is in the image?"
#define LLM_NV 5
#define LLM_STEPS 3
#define LLM_TOL 1e-4
#define LLM_MAX_IDS 256

static void check_stage_tensors(const model_config *cfg, const char *stage) {
    lion_status st;
    safetensors_file *f;
    if (model_config_open_stage(cfg, stage, &f, &st)) {
        CHECK_MSG(0, "%s: %s", stage, st.msg);
        return;
    }
    CHECK_MSG(safetensors_count(f) > 0, "%s: no tensors", stage);
    int finite = 1;
    for (size_t i = 0; i < safetensors_count(f); i++) {
        tensor t;
        const char *name = safetensors_name_at(f, i);
        if (safetensors_load_f32(f, name, 0, NULL, &t, &st)) {
            CHECK_MSG(0, "%s: %s", stage, st.msg);
            continue;
        }
        const float *p = t.data;
        for (int64_t k = 0; k < tensor_numel(&t); k++) finite &= isfinite(p[k]) != 0;
        tensor_free(&t);
    }
    CHECK_MSG(finite, "%s: non-finite weights", stage);
    safetensors_close(f);
}

static void check_dir(const char *vi) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", testing_fixture("converted"), vi);
    model_config cfg;
    lion_status st;
    if (model_config_load(&cfg, dir, &st)) {
        CHECK_MSG(0, "%s: %s", vi, st.msg);
        return;
    }
    CHECK(strcmp(visual_input_name(cfg.visual_input), vi) == 0);
    static const char *stages[] = {"vision", "tagger", "aggregator", "llm"};
    for (int s = 0; s < 4; s++) check_stage_tensors(&cfg, stages[s]);

    weights w;
    const vision_config *v = &cfg.vision;
    vit_config vc = {v->image_size, v->patch_size, v->dim, v->depth, v->heads, v->mlp_hidden, v->ln_eps};
    vit_model vit;
    CHECK_MSG(weights_open(&w, v->file, "visual_encoder.", &st) == 0 && vit_load(&vit, &vc, &w, &st) == 0,
              "%s vision: %s", vi, st.msg);
    vit_free(&vit);
    weights_close(&w);

    ram_config rc;
    ram_model ram;
    ram_config_from_model(&rc, &cfg.tagger);
    CHECK_MSG(weights_open(&w, cfg.tagger.file, "", &st) == 0 && ram_load(&ram, &rc, &w, PRECISION_F32, &st) == 0,
              "%s tagger: %s", vi, st.msg);
    ram_free(&ram);
    weights_close(&w);

    aggregate_model agg;
    CHECK_MSG(weights_open(&w, cfg.aggregator.file, "", &st) == 0 && aggregate_load(&agg, &cfg, &w, PRECISION_F32, &st) == 0,
              "%s aggregator: %s", vi, st.msg);
    aggregate_free(&agg);
    weights_close(&w);
    model_config_free(&cfg);
}

/* A float tensor of the reference file with n values, or NULL (a failed check). */
static const float *ref_floats(safetensors_file *io, const char *vi, const char *key, size_t n) {
    lion_status st;
    tensor t;
    if (safetensors_get(io, key, &t, &st) || t.dtype != DTYPE_F32 || (size_t)tensor_numel(&t) != n) {
        testing_fail(__FILE__, __LINE__, "%s: reference tensor %s missing or not %zu f32 values", vi, key, n);
        return NULL;
    }
    return t.data;
}

/* One prompt (no padding) through the encoder on adapter route `route`, then LLM_STEPS
 * KV-cached decoder steps on tokens: enc [len, d_model], logits [LLM_STEPS, vocab]. */
static int run_t5(const t5_model *m, const float *x, int len, int route, const int32_t *tokens, float *enc,
                  float *logits, arena *a, lion_status *st) {
    const int V = m->cfg.vocab_size;
    if (t5_encode(m, x, NULL, 1, len, route, enc, a, st)) return -1;
    t5_decoder dec;
    if (t5_decoder_init(&dec, m, enc, NULL, 1, len, 1, LLM_STEPS, route, st)) return -1;
    int rc = 0;
    for (int s = 0; s < LLM_STEPS && !rc; s++)
        rc = t5_decoder_step(m, &dec, tokens + s, logits + (size_t)s * V, a, st);
    t5_decoder_free(&dec);
    arena_reset(a);
    return rc;
}

static void check_llm(const char *vi) {
    char dir[4096], ref[4200];
    snprintf(dir, sizeof dir, "%s/%s", testing_fixture("converted"), vi);
    snprintf(ref, sizeof ref, "%s/%s_llm_ref.safetensors", testing_fixture("converted"), vi);
    lion_status st = {0};
    safetensors_file *io;
    if (safetensors_open(&io, ref, &st)) {
        CHECK_MSG(0, "%s llm reference: %s", vi, st.msg);
        return;
    }
    llm_stage s;
    if (llm_stage_open(&s, dir, &st)) {
        CHECK_MSG(0, "%s llm: %s", vi, st.msg);
        safetensors_close(io);
        return;
    }
    const llm_config *l = &s.cfg.llm;
    const int d = l->d_model, V = l->vocab_size;
    char what[128];

    /* the soft prompt vector, bound outside the t5_model. prefix */
    const float *want_hint = ref_floats(io, vi, "soft_prompt_hint", (size_t)d);
    CHECK_MSG(s.embedder.soft_prompt_hint != NULL, "%s: no soft_prompt_hint bound", vi);
    if (want_hint && s.embedder.soft_prompt_hint) {
        snprintf(what, sizeof what, "%s soft_prompt_hint", vi);
        CHECK_CLOSE(s.embedder.soft_prompt_hint, want_hint, (size_t)d, 0, what);
    }

    /* the prompt's tokens, built as the stage builds them */
    tensor tids = {0}, ttok = {0};
    int have_ids = safetensors_get(io, "ids", &tids, &st) == 0 && tids.dtype == DTYPE_I32 && tids.ndim == 1;
    int have_tok = safetensors_get(io, "tokens", &ttok, &st) == 0 && ttok.dtype == DTYPE_I32 &&
                   tensor_numel(&ttok) == LLM_STEPS;
    CHECK_MSG(have_ids && have_tok, "%s: reference ids / tokens missing", vi);
    const char *tags[] = {"dog", "man"};
    char *text = llm_prompt_text(l, tags, 2, LLM_INSTRUCTION);
    int32_t ids[LLM_MAX_IDS];
    size_t n_ids = 0;
    int have_text = text && t5_tokenize(s.tok, text, ids, LLM_MAX_IDS, &n_ids, &st) == 0;
    CHECK_MSG(have_text, "%s: tokenize: %s", vi, text ? st.msg : "out of memory");
    free(text);
    if (have_text && have_ids)
        CHECK_MSG(n_ids == (size_t)tids.shape[0] && !memcmp(ids, tids.data, n_ids * sizeof(int32_t)),
                  "%s: the prompt's %zu token ids differ from the reference's %lld", vi, n_ids,
                  (long long)tids.shape[0]);
    int n_soft = 0;
    for (size_t i = 0; i < n_ids; i++) n_soft += ids[i] == s.embedder.soft_prompt_id;
    CHECK_MSG(n_soft == 1, "%s: the prompt holds the soft prompt token %d times", vi, n_soft);

    /* input embeddings: visual tokens, then the token embeddings with the soft prompt */
    const int len = LLM_NV + (int)n_ids;
    const float *visual = ref_floats(io, vi, "visual", (size_t)LLM_NV * d);
    const float *want_x = ref_floats(io, vi, "inputs_embeds", (size_t)len * d);
    prompt_batch b = {0};
    prompt_request req = {visual, LLM_NV, ids, (int)n_ids};
    int have_x =
        have_text && have_tok && visual && want_x && prompt_batch_build(&b, &s.embedder, &req, 1, 0, &st) == 0;
    CHECK_MSG(have_x, "%s: no input embeddings (%s)", vi, st.msg);
    if (have_x) {
        CHECK_EQ_INT(b.len, len);
        snprintf(what, sizeof what, "%s inputs_embeds", vi);
        CHECK_CLOSE(b.embeds, want_x, (size_t)len * d, 0, what);
    }

    /* encoder and decoder on both routes (the same adapter with one) */
    float *enc = malloc((size_t)len * d * sizeof(float)), *logits = malloc((size_t)LLM_STEPS * V * sizeof(float));
    const int32_t *tokens = ttok.data;
    arena a;
    arena_init(&a, 0);
    const float *want_enc[2] = {0}, *want_logits[2] = {0};
    for (int r = 0; r < 2 && have_x; r++) {
        char key[32];
        snprintf(key, sizeof key, "enc_%d", r);
        want_enc[r] = ref_floats(io, vi, key, (size_t)len * d);
        snprintf(key, sizeof key, "logits_%d", r);
        want_logits[r] = ref_floats(io, vi, key, (size_t)LLM_STEPS * V);
        if (!want_enc[r] || !want_logits[r]) continue;
        if (run_t5(&s.t5, b.embeds, len, r, tokens, enc, logits, &a, &st)) {
            CHECK_MSG(0, "%s route %d: %s", vi, r, st.msg);
            continue;
        }
        snprintf(what, sizeof what, "%s T5 encoder, route %d", vi, r);
        CHECK_CLOSE(enc, want_enc[r], (size_t)len * d, LLM_TOL, what);
        for (int k = 0; k < LLM_STEPS; k++) {
            snprintf(what, sizeof what, "%s decoder step %d logits, route %d", vi, k, r);
            CHECK_CLOSE(logits + (size_t)k * V, want_logits[r] + (size_t)k * V, (size_t)V, LLM_TOL, what);
        }
    }

    /* the comparison can fail: with two adapters the other route, and a transposed weight */
    if (have_x && want_enc[1] && l->adapters_num == 2) {
        CHECK(run_t5(&s.t5, b.embeds, len, 0, tokens, enc, logits, &a, &st) == 0);
        double e = testing_rel_err(enc, want_enc[1], (size_t)len * d);
        CHECK_MSG(e > 100 * LLM_TOL, "%s: route 0 against route 1's reference: relative error only %.3g", vi, e);
    }
    t5_attention *att = &s.t5.encoder.layers[0].self;
    const int inner = s.t5.cfg.heads * s.t5.cfg.d_kv;
    CHECK_MSG(inner == d, "%s: the fixture's attention is not square (heads * d_kv %d, d_model %d)", vi, inner, d);
    if (have_x && want_enc[1] && inner == d) {
        const linear orig = att->q;
        float *tq = malloc((size_t)d * d * sizeof(float));
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++) tq[(size_t)i * d + j] = orig.w[(size_t)j * d + i];
        CHECK(linear_from_f32(&att->q, tq, d, d, PRECISION_F32, 0, &st) == 0);
        CHECK(run_t5(&s.t5, b.embeds, len, 1, tokens, enc, logits, &a, &st) == 0);
        att->q = orig;
        free(tq);
        double e = testing_rel_err(enc, want_enc[1], (size_t)len * d);
        CHECK_MSG(e > 100 * LLM_TOL, "%s: a transposed encoder.block.0 q weight: relative error only %.3g", vi, e);
    }
    arena_free(&a);
    free(enc);
    free(logits);
    prompt_batch_free(&b);
    llm_stage_close(&s);
    safetensors_close(io);
}

int main(void) {
    threads_init(1);
    static const char *const inputs[] = {"ALL", "QFORMER", "AGGREGATOR"};
    for (int i = 0; i < 3; i++) {
        check_dir(inputs[i]);
        check_llm(inputs[i]);
    }
    return testing_finish();
}
