/* Pink's image encoder (services/vision/clip.h: CLIP ViT + Pink's adapters + mm_projector)
 * against the PyTorch reference (fixtures/gen_clip.py, tools/reference/pink_ref/clip.py): tiny
 * dims (adapters in attention and MLP; a non-negative clip_select_layer with exact GELU; no
 * adapters) and true CLIP ViT-L/14 widths with 2 layers run. Both outputs, the selected hidden
 * state without the class token and its projection, within 1e-4 relative (max |diff| /
 * max |reference|), in f32. Also that the comparison can fail (q/k swapped, out_proj transposed,
 * adapter up-projection dropped: far outside the tolerance), and the errors of a wrong
 * configuration. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip.h"
#include "clock.h"
#include "testing.h"
#include "threads.h"

#define TOL 1e-4

/* Worst relative error of features and tokens of m on the fixture's pixels (INFINITY on failure). */
static double forward_error(const clip_model *m, const float *pixels, int batch, const float *want_f,
                            const float *want_t, float *feat, float *tok, arena *a) {
    lion_status st;
    const size_t nf = (size_t)batch * m->patches * m->cfg.dim, nt = (size_t)batch * m->patches * m->cfg.proj_dim;
    if (clip_forward(m, pixels, batch, feat, tok, a, &st)) {
        testing_fail(__FILE__, __LINE__, "%s", st.msg);
        return INFINITY;
    }
    return fmax(testing_rel_err(feat, want_f, nf), testing_rel_err(tok, want_t, nt));
}

static void run_case(const char *name, clip_config cfg, int batch, int check_wrong) {
    char what[128];
    lion_status st;
    weights w;
    safetensors_file *io;
    if (testing_open_model(name, "", &w, &io)) return;
    clip_model m;
    if (clip_load(&m, &cfg, &w, &st)) {
        CHECK_MSG(0, "%s: %s", name, st.msg);
        safetensors_close(io);
        weights_close(&w);
        return;
    }
    const int d = cfg.dim, P = m.patches, S = cfg.image_size;
    const size_t nf = (size_t)batch * P * d, nt = (size_t)batch * P * cfg.proj_dim;
    const float *pixels = testing_floats(io, "pixels", (size_t)batch * 3 * S * S);
    const float *want_f = testing_floats(io, "features", nf), *want_t = testing_floats(io, "tokens", nt);
    float *feat = malloc(nf * sizeof(float)), *tok = malloc(nt * sizeof(float));
    arena a;
    arena_init(&a, 0);
    if (pixels && want_f && want_t && feat && tok) {
        int64_t t0 = clock_mono_us();
        CHECK_MSG(clip_forward(&m, pixels, batch, feat, tok, &a, &st) == 0, "%s: %s", name, st.msg);
        double secs = (double)(clock_mono_us() - t0) / 1e6;
        double ef = testing_rel_err(feat, want_f, nf), et = testing_rel_err(tok, want_t, nt);
        printf("%s: %d layers run, batch %d: features %.2e, tokens %.2e relative error (%.2f s)\n", name, m.run, batch,
               ef, et, secs);
        snprintf(what, sizeof what, "%s features", name);
        CHECK_CLOSE(feat, want_f, nf, TOL, what);
        snprintf(what, sizeof what, "%s tokens", name);
        CHECK_CLOSE(tok, want_t, nt, TOL, what);
        /* either output alone */
        memset(tok, 0, nt * sizeof(float));
        CHECK(clip_forward(&m, pixels, batch, NULL, tok, &a, &st) == 0);
        CHECK_CLOSE(tok, want_t, nt, TOL, "tokens without features");

        if (check_wrong) {
            /* the comparison can fail: each wrong model below misses by far */
            clip_model wrong = m;
            clip_layer *layers = malloc((size_t)m.run * sizeof *layers);
            float *t = malloc((size_t)d * d * sizeof(float));
            if (layers && t) {
                memcpy(layers, m.layer, (size_t)m.run * sizeof *layers);
                wrong.layer = layers;
                /* shallow copies of the f32 Linears (views of the file): never freed */
                layers[0].q = m.layer[0].k, layers[0].k = m.layer[0].q;
                double e_swap = forward_error(&wrong, pixels, batch, want_f, want_t, feat, tok, &a);
                layers[0] = m.layer[0];
                for (int i = 0; i < d; i++)
                    for (int j = 0; j < d; j++) t[(size_t)i * d + j] = m.layer[0].o.w[(size_t)j * d + i];
                CHECK(linear_from_f32(&layers[0].o, t, d, d, PRECISION_F32, 0, &st) == 0);
                double e_trans = forward_error(&wrong, pixels, batch, want_f, want_t, feat, tok, &a);
                layers[0] = m.layer[0];
                double e_adapter = 0;
                if (cfg.adapter_dim && cfg.adapter_attn) {
                    layers[m.run - 1].adapter_attn.down_b = NULL; /* the last layer's adapter skipped */
                    e_adapter = forward_error(&wrong, pixels, batch, want_f, want_t, feat, tok, &a);
                    CHECK_MSG(e_adapter > 100 * TOL, "%s: a missing adapter passes (%.3g)", name, e_adapter);
                }
                printf("%s: q/k swapped %.2e, out_proj transposed %.2e, last attention adapter dropped %.2e\n", name,
                       e_swap, e_trans, e_adapter);
                CHECK_MSG(e_swap > 100 * TOL, "%s: swapped q/k pass the comparison (%.3g)", name, e_swap);
                CHECK_MSG(e_trans > 100 * TOL, "%s: a transposed out_proj passes the comparison (%.3g)", name, e_trans);
            }
            free(layers);
            free(t);
        }
    }
    free(feat);
    free(tok);
    arena_free(&a);
    clip_free(&m);
    safetensors_close(io);
    weights_close(&w);
}

static void test_errors(void) {
    lion_status st;
    weights w;
    if (weights_open(&w, testing_fixture("clip_tiny.safetensors"), "", &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return;
    }
    const clip_config tiny = {28, 7, 48, 4, 4, 100, 1e-5f, 1, -2, 6, 1, 1, 40};
    clip_model m;
    clip_config c = tiny;
    c.mlp_hidden = 64;
    CHECK(clip_load(&m, &c, &w, &st) == -1);
    CHECK_CONTAINS(st.msg, "vision_model.vision_model.encoder.layers.0.mlp.fc1.weight");
    c = tiny;
    c.proj_dim = 4096;
    CHECK(clip_load(&m, &c, &w, &st) == -1);
    CHECK_CONTAINS(st.msg, "mm_projector.weight");
    c = tiny;
    c.adapter_dim = 8;
    CHECK(clip_load(&m, &c, &w, &st) == -1);
    CHECK_CONTAINS(st.msg, "adapter_attn.tune_adapter_a.weight");
    c = tiny;
    c.select_layer = -6; /* 4 layers have 5 hidden states */
    CHECK(clip_load(&m, &c, &w, &st) == -1);
    CHECK_CONTAINS(st.msg, "select_layer -6");
    c = tiny;
    c.image_size = 30;
    CHECK(clip_load(&m, &c, &w, &st) == -1);
    CHECK_CONTAINS(st.msg, "do not fit");
    CHECK_EQ_INT(clip_layers_run(24, -2), 23);
    CHECK_EQ_INT(clip_layers_run(24, -1), 24);
    CHECK_EQ_INT(clip_layers_run(24, 0), 0);
    CHECK_EQ_INT(clip_layers_run(24, 25), -1);
    /* without a projector: features only */
    c = tiny;
    c.proj_dim = 0;
    if (clip_load(&m, &c, &w, &st) == 0) {
        float px[3 * 28 * 28] = {0}, out[16 * 40];
        arena a;
        arena_init(&a, 0);
        CHECK(clip_forward(&m, px, 1, NULL, out, &a, &st) == -1);
        CHECK_CONTAINS(st.msg, "without mm_projector");
        arena_free(&a);
        clip_free(&m);
    } else {
        CHECK_MSG(0, "%s", st.msg);
    }
    weights_close(&w);
}

int main(void) {
    threads_init(2);
    /* image, patch, dim, layers, heads, mlp, eps, quick_gelu, select, adapter dim/attn/mlp, proj */
    run_case("clip_tiny", (clip_config){28, 7, 48, 4, 4, 100, 1e-5f, 1, -2, 6, 1, 1, 40}, 2, 1);
    run_case("clip_tiny_sel", (clip_config){30, 6, 32, 3, 2, 64, 1e-5f, 0, 2, 8, 1, 0, 24}, 1, 1);
    run_case("clip_plain", (clip_config){16, 4, 48, 2, 6, 80, 1e-5f, 1, -1, 0, 0, 0, 32}, 1, 1);
    run_case("clip_vitl", (clip_config){224, 14, 1024, 3, 16, 4096, 1e-5f, 1, -2, 8, 1, 0, 4096}, 1, 0);
    test_errors();
    return testing_finish();
}
