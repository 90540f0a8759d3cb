/* test_pink_model.c - a Pink model directory converted from the released layouts
 * (tests/fixtures/gen_pink_model.py: make_fake_pink_upstream.py, then pink_convert.py), loaded
 * as the stages would load it: model_config_load, pink_clip_config + clip_load on vision.safetensors,
 * pink_tokenizer_load + pink_prompt_build, pink_llama_config + llama_load on llm.safetensors; then
 * one REC request end to end against pink_ref computed from the upstream files: the CLIP features
 * and vision tokens, the prompt ids and image offset (exact), and a greedy decode with the image
 * tokens spliced into the prompt (same tokens, logits within 1e-4 relative in f32). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "clip.h"
#include "llama.h"
#include "model_config.h"
#include "pink_clip_config.h"
#include "pink_config.h"
#include "pink_prompt.h"
#include "safetensors.h"
#include "testing.h"
#include "weights.h"

#define TOL 1e-4
#define REC_TEXT "the red dog"

int main(void) {
    lion_status st = {0};
    model_config cfg;
    char io_path[512];
    snprintf(io_path, sizeof io_path, "%s", testing_fixture("pink_model/io.safetensors"));
    if (model_config_load(&cfg, testing_fixture("pink_model/model"), &st)) {
        CHECK_MSG(0, "model_config_load: %s", st.msg);
        return testing_finish();
    }
    CHECK_EQ_INT(cfg.family, MODEL_FAMILY_PINK);
    CHECK(strcmp(cfg.name, "tiny-pink-test") == 0);
    const pink_config *pk = &cfg.pink;
    safetensors_file *io = NULL;
    weights vw = {0}, lw = {0};
    clip_model cm = {0};
    llama_model lm = {0};
    llama_tok *tok = NULL;
    pink_prompt pp = {0};
    llama_cache cache = {0};
    arena a;
    arena_init(&a, 0);
    float *features = NULL, *vtokens = NULL, *x = NULL, *logits = NULL;
    clip_config cc;
    llama_config lc;
    pink_clip_config(&pk->vision, &cc);
    pink_llama_config(&pk->llm, &lc);
    safetensors_file *stage = NULL;
    if (safetensors_open(&io, io_path, &st) || model_config_open_stage(&cfg, "llm", &stage, &st)) {
        CHECK_MSG(0, "open: %s", st.msg);
        goto out;
    }
    CHECK(safetensors_has(stage, "model.layers.1.adapter_attn.tune_adapter_b.weight"));
    safetensors_close(stage);
    if (weights_open(&vw, model_config_stage_file(&cfg, "vision"), "", &st) || clip_load(&cm, &cc, &vw, &st) ||
        weights_open(&lw, model_config_stage_file(&cfg, "llm"), "", &st) || llama_load(&lm, &lc, &lw, &st) ||
        pink_tokenizer_load(&pk->tokenizer, pk->llm.vocab_size, &tok, &st)) {
        CHECK_MSG(0, "load: %s", st.msg);
        goto out;
    }
    CHECK_EQ_INT(cm.patches, pk->prompt.image_tokens);
    CHECK_EQ_INT(cm.run, 2); /* select_layer -2 of 3 layers */

    /* vision: features and tokens */
    const int P = cm.patches, D = cc.dim, E = lc.dim, V = lc.vocab_size;
    const float *pixels = testing_tensor(io, "pixels", DTYPE_F32, (size_t)3 * cc.image_size * cc.image_size);
    const float *want_f = testing_tensor(io, "features", DTYPE_F32, (size_t)P * D);
    const float *want_t = testing_tensor(io, "vision_tokens", DTYPE_F32, (size_t)P * E);
    features = malloc((size_t)P * D * sizeof *features);
    vtokens = malloc((size_t)P * E * sizeof *vtokens);
    if (!pixels || !want_f || !want_t) goto out;
    CHECK_MSG(clip_forward(&cm, pixels, 1, features, vtokens, &a, &st) == 0, "clip_forward: %s", st.msg);
    CHECK_CLOSE(features, want_f, (size_t)P * D, TOL, "CLIP features (hidden_states[-2] without the class token)");
    CHECK_CLOSE(vtokens, want_t, (size_t)P * E, TOL, "vision tokens (mm_projector)");

    /* the REC prompt */
    CHECK_MSG(pink_prompt_build(&pk->prompt, tok, PINK_TASK_REC, REC_TEXT, NULL, (size_t)pk->llm.max_positions, &pp,
                                &st) == 0,
              "pink_prompt_build: %s", st.msg);
    const int32_t *off = testing_tensor(io, "image_offset", DTYPE_I32, 1);
    tensor ids_t;
    if (!off || safetensors_get(io, "ids", &ids_t, &st)) goto out;
    size_t n_ids = (size_t)tensor_numel(&ids_t);
    CHECK_EQ_INT(pp.n_ids, n_ids);
    CHECK(pp.n_ids == n_ids && memcmp(pp.ids, ids_t.data, n_ids * sizeof(int32_t)) == 0);
    CHECK_EQ_INT(pp.image_offset, off[0]);
    CHECK_EQ_INT(pp.image_tokens, P);
    if (pp.n_ids != n_ids) goto out;

    /* prefill with the image spliced in, then greedy steps */
    tensor tk;
    if (safetensors_get(io, "tokens", &tk, &st)) goto out;
    const int steps = (int)tensor_numel(&tk);
    const int32_t *want_tokens = tk.data;
    const float *want_logits = testing_tensor(io, "logits", DTYPE_F32, (size_t)steps * V);
    x = malloc(n_ids * E * sizeof *x);
    logits = malloc((size_t)V * sizeof *logits);
    if (!want_logits || !x || !logits || llama_cache_init(&cache, &lm, 1, (int)n_ids + steps, &st) ||
        llama_embed(&lm, pp.ids, (int)n_ids, x, &st)) {
        CHECK_MSG(0, "setup: %s", st.msg);
        goto out;
    }
    memcpy(x + pp.image_offset * E, vtokens, (size_t)P * E * sizeof *x);
    const int slot = 0, n = (int)n_ids;
    CHECK_MSG(llama_forward(&lm, &cache, 1, &slot, &n, x, logits, &a, &st) == 0, "llama_forward: %s", st.msg);
    double worst = 0;
    int same = 1;
    for (int s = 0; s < steps; s++) {
        char what[64];
        snprintf(what, sizeof what, "logits of step %d", s);
        CHECK_CLOSE(logits, want_logits + (size_t)s * V, V, TOL, what);
        worst = fmax(worst, testing_rel_err(logits, want_logits + (size_t)s * V, V));
        int32_t next = testing_argmax(logits, V);
        if (next != want_tokens[s]) {
            same = 0;
            testing_fail(__FILE__, __LINE__, "greedy token %d is %d, the reference's %d", s, (int)next,
                         (int)want_tokens[s]);
            break;
        }
        if (s + 1 < steps)
            CHECK_MSG(llama_step(&lm, &cache, 1, &slot, &next, logits, &a, &st) == 0, "llama_step: %s", st.msg);
    }
    CHECK(same);
    printf("converted tiny Pink: CLIP + mm_projector, %zu prompt ids (image at %zu), %d greedy tokens %s the "
           "reference's, max logits error %.2e\n", n_ids, pp.image_offset, steps, same ? "==" : "!=", worst);

    /* the answer's text through the tokenizer's decode (no check of content: random weights) */
    char *text = NULL;
    CHECK_MSG(llama_tok_decode(tok, want_tokens, (size_t)steps, &text, &st) == 0, "decode: %s", st.msg);
    free(text);
out:
    llama_cache_free(&cache);
    free(features);
    free(vtokens);
    free(x);
    free(logits);
    pink_prompt_free(&pp);
    llama_tok_free(tok);
    llama_free(&lm);
    clip_free(&cm);
    weights_close(&lw);
    weights_close(&vw);
    safetensors_close(io);
    arena_free(&a);
    model_config_free(&cfg);
    return testing_finish();
}
