/* fuzz_model_config.c - the model.json reader (common/model/model_config.h).
 *
 * Input: a whole model.json. model_config_load reads DIR/model.json, so the input is written
 * to model.json in this process's temporary directory. The reader promises that an accepted
 * config needs no further checks (docs/model-format.md): the relations the services rely on
 * without checking are checked here again on every accepted input (widths divisible by heads,
 * layer indices inside the ViT, one threshold per tag in [0, 1], tag indices in range, the
 * resolved file paths present, the floats in their ranges once stored as floats). */
#include <math.h>

#include "fuzz_util.h"
#include "model_config.h"

/* A float the reader took as positive (its range FLOAT_POSITIVE) is still positive and finite
 * once stored as a float. */
static int positive(float v) { return isfinite(v) && v > 0; }

static void check_floats(const model_config *cfg) {
    for (int c = 0; c < 3; c++) {
        FUZZ_CHECK(isfinite(cfg->vision.mean[c]) && positive(cfg->vision.std[c]));
        FUZZ_CHECK(isfinite(cfg->tagger.mean[c]) && positive(cfg->tagger.std[c]));
    }
    FUZZ_CHECK(positive(cfg->vision.ln_eps) && positive(cfg->tagger.ln_eps) && positive(cfg->tagger.mlp_ratio));
    FUZZ_CHECK(positive(cfg->tagger.head.ln_eps) && positive(cfg->llm.ln_eps));
    if (cfg->visual_input != VISUAL_INPUT_AGGREGATOR) FUZZ_CHECK(positive(cfg->aggregator.qformer.ln_eps));
    if (cfg->visual_input != VISUAL_INPUT_QFORMER) FUZZ_CHECK(positive(cfg->aggregator.fusion.ln_eps));
    const generation_config *g = &cfg->llm.generation;
    FUZZ_CHECK(positive(g->repetition_penalty) && positive(g->temperature) && isfinite(g->length_penalty));
    FUZZ_CHECK(g->top_p > 0 && g->top_p <= 1);
}

static void check_accepted(const model_config *cfg) {
    check_floats(cfg);
    const vision_config *v = &cfg->vision;
    FUZZ_CHECK(v->file && v->dim > 0 && v->heads > 0 && v->dim % v->heads == 0 && v->patch_size > 0);
    FUZZ_CHECK(v->image_size > 0 && v->image_size % v->patch_size == 0 && v->depth > 0);
    FUZZ_CHECK(v->n_intermediate > 0 && v->n_intermediate <= MODEL_MAX_INTERMEDIATE);
    for (int i = 0; i < v->n_intermediate; i++)
        FUZZ_CHECK(v->intermediate_layers[i] >= 0 && v->intermediate_layers[i] < v->depth);
    const tagger_config *t = &cfg->tagger;
    FUZZ_CHECK(t->file && t->num_tags >= 0 && t->n_stages > 0 && t->n_stages <= MODEL_MAX_STAGES);
    for (int i = 0; i < t->num_tags; i++) {
        FUZZ_CHECK(t->tags[i] != NULL);
        FUZZ_CHECK(t->thresholds[i] >= 0 && t->thresholds[i] <= 1);
    }
    for (int i = 0; i < t->n_delete_tags; i++) FUZZ_CHECK(t->delete_tags[i] >= 0 && t->delete_tags[i] < t->num_tags);
    const llm_config *l = &cfg->llm;
    FUZZ_CHECK(l->file && l->spiece && l->d_model > 0 && l->heads > 0 && l->vocab_size > 0);
    FUZZ_CHECK(l->tag_prompt && strstr(l->tag_prompt, "{}") != NULL);
    FUZZ_CHECK(cfg->aggregator.file != NULL);
    if (cfg->visual_input != VISUAL_INPUT_AGGREGATOR) FUZZ_CHECK(cfg->aggregator.qformer.vocab != NULL);
    static const char *const stages[] = {"vision", "tagger", "aggregator", "llm"};
    for (int i = 0; i < 4; i++) FUZZ_CHECK(model_config_stage_file(cfg, stages[i]) != NULL);
    FUZZ_CHECK(model_config_stage_file(cfg, "gateway") == NULL);
    FUZZ_CHECK(visual_input_name(cfg->visual_input) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_write_file("model.json", data, size);
    model_config cfg;
    lion_status st = {0};
    if (model_config_load(&cfg, fuzz_dir(), &st) != 0) {
        FUZZ_CHECK(st.msg[0] != 0);
        return 0;
    }
    check_accepted(&cfg);
    model_config_free(&cfg);
    return 0;
}
