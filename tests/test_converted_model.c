/* Model directories written by tools/convert from upstream-format checkpoints (the
 * fixture converts fake ones of the released layouts) load in C: model.json validates,
 * every tensor of every stage file reads as f32 whatever its storage dtype, and the
 * vision, tagger and aggregator models bind all their weights with the right shapes. */
#include <math.h>
#include <string.h>

#include "aggregate.h"
#include "model_config.h"
#include "ram.h"
#include "testing.h"
#include "vit.h"

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
    CHECK_MSG(weights_open(&w, cfg.tagger.file, "", &st) == 0 && ram_load(&ram, &rc, &w, &st) == 0,
              "%s tagger: %s", vi, st.msg);
    ram_free(&ram);
    weights_close(&w);

    aggregate_model agg;
    CHECK_MSG(weights_open(&w, cfg.aggregator.file, "", &st) == 0 && aggregate_load(&agg, &cfg, &w, &st) == 0,
              "%s aggregator: %s", vi, st.msg);
    aggregate_free(&agg);
    weights_close(&w);
    model_config_free(&cfg);
}

int main(void) {
    check_dir("ALL");
    check_dir("QFORMER");
    check_dir("AGGREGATOR");
    return testing_finish();
}
