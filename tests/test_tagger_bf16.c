/* RAM in bf16 (services/tagger/ram.h) against our own f32 on the same random weights, at
 * Swin-L's true widths as RAM uses it (image 384, patch 4, embed 192, window 12, heads
 * 6/12/24/48) with the depths cut to 1-1-1-1, and RAM's head at its true widths (embed_out
 * 512, hidden 768, 4 heads, intermediate 3072, 2 layers) over 256 classes instead of 4585
 * (the head's work scales with the classes; the runtime stays well under 20 s). Prints
 * the relative errors of the Swin output and of the logits and asserts bounds; counts the tag
 * decisions that flip (printed, not asserted: random weights put many scores next to the
 * threshold); checks that the bf16 matrices take half the f32 bytes. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "ops.h"
#include "ram.h"
#include "testing.h"
#include "threads.h"
#include "weight_builder.h"

/* Measured here (AVX2, no native bf16: widened bf16 panels + sgemm, x kept f32): Swin output
 * 3.4e-3, logits 2.6e-3 relative (max |diff| over max |f32|); with depths 2-1-1-1 and 512
 * classes 3.6e-3 and 1.9e-3. bf16 keeps 8 mantissa bits (a 2^-9 = 2e-3 rounding step) on every
 * weight; the LayerNorms keep it from growing with depth. Bounds: about 3x what was measured
 * (a native CPU also rounds x to bf16). */
#define SWIN_BOUND 1e-2
#define LOGITS_BOUND 8e-3

#define N_TAGS 256

static double now_s(void) { return clock_mono_us() / 1e6; }

#define V(...) ((const int64_t[]){__VA_ARGS__})
/* A Linear's weight and bias; std 0.02 as Swin's and BERT's init (uniform of that std). */
#define W_SCALE 0.0346f
static void add_linear(weight_builder *l, int out, int in, int bias, const char *name) {
    weight_builder_linear(l, out, in, bias, W_SCALE, "%s", name);
}
static void add_norm(weight_builder *l, int n, const char *name) { weight_builder_norm(l, n, "%s", name); }

static void add_bert(weight_builder *l, const char *p, int hidden, int kv, int inter) {
    char n[320];
    const char *parts[] = {"query", "key", "value"};
    for (int i = 0; i < 3; i++) {
        snprintf(n, sizeof n, "%s.crossattention.self.%s", p, parts[i]);
        add_linear(l, hidden, i ? kv : hidden, 1, n);
    }
    snprintf(n, sizeof n, "%s.crossattention.output.dense", p);
    add_linear(l, hidden, hidden, 1, n);
    snprintf(n, sizeof n, "%s.crossattention.output.LayerNorm", p);
    add_norm(l, hidden, n);
    snprintf(n, sizeof n, "%s.intermediate.dense", p);
    add_linear(l, inter, hidden, 1, n);
    snprintf(n, sizeof n, "%s.output.dense", p);
    add_linear(l, hidden, inter, 1, n);
    snprintf(n, sizeof n, "%s.output.LayerNorm", p);
    add_norm(l, hidden, n);
}

/* RAM's keys for cfg, random, written to path. */
static int write_ram(const char *path, const ram_config *c, lion_status *st) {
    weight_builder *l = weight_builder_new(20240611);
    if (!l) return lion_fail(st, LION_ENOMEM, "out of memory");
    const swin_config *s = &c->swin;
    char n[256];
    const int e = s->embed_dim;
    weight_builder_add(l, 0, W_SCALE, 4, V(e, 3, s->patch_size, s->patch_size),
                       "visual_encoder.patch_embed.proj.weight");
    weight_builder_add(l, 0, W_SCALE, 1, V(e), "visual_encoder.patch_embed.proj.bias");
    add_norm(l, e, "visual_encoder.patch_embed.norm");
    int grid = s->image_size / s->patch_size;
    for (int i = 0; i < s->n_stages; i++) {
        const int d = e << i, win = grid <= s->window ? grid : s->window, hidden = (int)(d * s->mlp_ratio);
        for (int k = 0; k < s->depths[i]; k++) {
            char b[128];
            snprintf(b, sizeof b, "visual_encoder.layers.%d.blocks.%d", i, k);
            snprintf(n, sizeof n, "%s.norm1", b), add_norm(l, d, n);
            weight_builder_add(l, 0, W_SCALE, 2, V((2 * win - 1) * (2 * win - 1), s->heads[i]),
                               "%s.attn.relative_position_bias_table", b);
            snprintf(n, sizeof n, "%s.attn.qkv", b), add_linear(l, 3 * d, d, 1, n);
            snprintf(n, sizeof n, "%s.attn.proj", b), add_linear(l, d, d, 1, n);
            snprintf(n, sizeof n, "%s.norm2", b), add_norm(l, d, n);
            snprintf(n, sizeof n, "%s.mlp.fc1", b), add_linear(l, hidden, d, 1, n);
            snprintf(n, sizeof n, "%s.mlp.fc2", b), add_linear(l, d, hidden, 1, n);
        }
        if (i < s->n_stages - 1) {
            snprintf(n, sizeof n, "visual_encoder.layers.%d.downsample.norm", i), add_norm(l, 4 * d, n);
            snprintf(n, sizeof n, "visual_encoder.layers.%d.downsample.reduction", i), add_linear(l, 2 * d, 4 * d, 0, n);
            grid /= 2;
        }
    }
    const int width = e << (s->n_stages - 1);
    add_norm(l, width, "visual_encoder.norm");
    add_linear(l, c->embed_out, width, 1, "image_proj");
    weight_builder_add(l, 0, 1.0f, 2, V(c->num_tags, c->embed_out), "label_embed");
    add_linear(l, c->head_hidden, c->embed_out, 1, "wordvec_proj");
    for (int i = 0; i < c->head_layers; i++) {
        snprintf(n, sizeof n, "tagging_head.encoder.layer.%d", i);
        add_bert(l, n, c->head_hidden, c->embed_out, c->head_intermediate);
    }
    add_linear(l, 1, c->head_hidden, 1, "fc");
    int rc = weight_builder_write(l, path, st);
    weight_builder_free(l);
    return rc;
}

/* ram_logits after its Swin forward, from the visual tokens vis: image_proj, the head, fc
 * (the same calls; the Swin forward is not run a second time). */
static int logits_from_visual(const ram_model *m, const float *vis, float *logits, arena *a, lion_status *st) {
    const int t = m->swin.tokens, n = m->cfg.num_tags, hid = m->cfg.head_hidden;
    float *img = arena_floats(a, (size_t)t * m->cfg.embed_out), *x = arena_floats(a, (size_t)n * hid);
    if (!img || !x) return lion_fail(st, LION_ENOMEM, "out of memory");
    memcpy(x, m->labels, (size_t)n * hid * sizeof(float));
    return linear_apply(&m->image_proj, img, vis, m->image_proj_b, t, a, st) ||
                   tagging_head_forward(&m->head, x, n, img, t, m->first_query, a, st) ||
                   linear_apply(&m->fc, logits, x, m->fc_b, n, a, st)
               ? -1
               : 0;
}

int main(void) {
    threads_init(0);
    ram_config c = {.swin = {384, 4, 192, 4, {1, 1, 1, 1}, {6, 12, 24, 48}, 12, 4.0f, 1e-5f},
                    .embed_out = 512, .head_hidden = 768, .head_heads = 4, .head_layers = 2,
                    .head_intermediate = 3072, .head_ln_eps = 1e-12f, .num_tags = N_TAGS};
    static char names[N_TAGS][16];
    static const char *tags[N_TAGS];
    static float thresholds[N_TAGS];
    for (int i = 0; i < N_TAGS; i++) {
        snprintf(names[i], sizeof names[i], "tag%d", i);
        tags[i] = names[i];
        thresholds[i] = 0.5f;
    }
    c.tags = tags;
    c.thresholds = thresholds;

    char path[256];
    snprintf(path, sizeof path, "/tmp/lion_test_tagger_bf16_%d.safetensors", (int)getpid());
    lion_status st;
    double t0 = now_s();
    if (write_ram(path, &c, &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return testing_finish();
    }
    /* two mappings: the bf16 load gives the f32 file pages back, the f32 model reads them */
    weights w32, w16;
    ram_model m32, m16;
    int ok = weights_open(&w32, path, "", &st) == 0 && weights_open(&w16, path, "", &st) == 0;
    unlink(path); /* the mappings stay */
    CHECK_MSG(ok, "%s", st.msg);
    if (!ok) return testing_finish();
    CHECK_MSG(ram_load(&m32, &c, &w32, PRECISION_F32, &st) == 0, "f32: %s", st.msg);
    CHECK_MSG(ram_load(&m16, &c, &w16, PRECISION_BF16, &st) == 0, "bf16: %s", st.msg);
    double t1 = now_s();

    const size_t b32 = ram_matrix_bytes(&m32), b16 = ram_matrix_bytes(&m16);
    const linear *first = swin_first_matrix(&m16.swin);
    printf("matrices: f32 %.1f MB, bf16 %.1f MB (%s)\n", b32 / 1e6, b16 / 1e6, linear_form(first));
    if (first->packed) /* oneDNN's packed layout may pad a block: half within 1% */
        CHECK_MSG(fabs(2.0 * (double)b16 - (double)b32) <= 0.01 * (double)b32, "bf16 %zu bytes, f32 %zu", b16, b32);
    else
        CHECK_MSG(2 * b16 == b32, "bf16 %zu bytes, f32 %zu", b16, b32);

    /* one image of normalised pixels */
    const int s = c.swin.image_size;
    const size_t npx = (size_t)3 * s * s;
    float *px = malloc(npx * sizeof(float));
    uint64_t seed = 7;
    for (size_t i = 0; i < npx; i++) px[i] = weight_builder_uniform(&seed, 2.0f);
    const size_t nvis = (size_t)m32.swin.tokens * m32.swin.width;
    float *v32 = malloc(nvis * sizeof(float)), *v16 = malloc(nvis * sizeof(float));
    float *l32 = malloc(N_TAGS * sizeof(float)), *l16 = malloc(N_TAGS * sizeof(float));
    arena a;
    arena_init(&a, 0);
    CHECK_MSG(swin_forward(&m32.swin, px, 1, v32, &a, &st) == 0, "%s", st.msg);
    double t2 = now_s();
    CHECK_MSG(swin_forward(&m16.swin, px, 1, v16, &a, &st) == 0, "%s", st.msg);
    double t3 = now_s();
    CHECK_MSG(logits_from_visual(&m32, v32, l32, &a, &st) == 0, "%s", st.msg);
    arena_reset(&a);
    CHECK_MSG(logits_from_visual(&m16, v16, l16, &a, &st) == 0, "%s", st.msg);
    arena_reset(&a);
    double t4 = now_s();

    const double e_vis = testing_rel_err(v16, v32, nvis), e_log = testing_rel_err(l16, l32, N_TAGS);
    printf("Swin-L 1-1-1-1 output [%d, %d]: bf16 vs f32 relative error %.3g (bound %.3g)\n", m32.swin.tokens,
           m32.swin.width, e_vis, SWIN_BOUND);
    printf("logits [%d]: bf16 vs f32 relative error %.3g (bound %.3g), max |diff| %.3g\n", N_TAGS, e_log,
           LOGITS_BOUND, testing_max_abs_err(l16, l32, N_TAGS));
    CHECK_MSG(e_vis > 0 && e_vis <= SWIN_BOUND, "swin: relative error %g", e_vis);
    CHECK_MSG(e_log > 0 && e_log <= LOGITS_BOUND, "logits: relative error %g", e_log);

    /* tag decisions: kept (score over threshold) in one precision and not in the other */
    ram_result r32, r16;
    CHECK(ram_select(&m32, l32, 0, &r32, &st) == 0);
    CHECK(ram_select(&m16, l16, 0, &r16, &st) == 0);
    int flips = 0;
    for (int i = 0; i < N_TAGS; i++) flips += (sigmoidf_stable(l32[i]) > 0.5f) != (sigmoidf_stable(l16[i]) > 0.5f);
    printf("tags kept: f32 %d, bf16 %d; %d of %d decisions flip (threshold 0.5, random weights)\n", r32.n_tags,
           r16.n_tags, flips, N_TAGS);
    printf("times: write+load %.2f s, swin f32 %.2f s, swin bf16 %.2f s, two heads %.2f s\n", t1 - t0, t2 - t1,
           t3 - t2, t4 - t3);
    ram_result_free(&r32);
    ram_result_free(&r16);
    free(px), free(v32), free(v16), free(l32), free(l16);
    arena_free(&a);
    ram_free(&m32);
    ram_free(&m16);
    weights_close(&w32);
    weights_close(&w16);
    return testing_finish();
}
