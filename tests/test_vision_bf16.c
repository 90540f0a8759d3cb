/* The vision stage's bf16 path (vit.h, clip.h) at true widths with truncated depth, on random
 * weights written to an f32 safetensors file and bound from it as lion-vision binds them:
 *   EVA ViT-g (224/14, dim 1408, 16 heads, MLP 6144), 2 blocks, both blocks' outputs;
 *   CLIP ViT-L/14 (224/14, dim 1024, 16 heads, MLP 4096, quick_gelu), 2 layers run
 *   (select_layer -2 of 3), Pink's adapters (8) in attention and MLP, mm_projector to 4096.
 * For each:
 *   f32   bit-identical to the forward composed of plain ops.h calls, the sequence the stage
 *         ran before its matrices became linear.h Linears (product, bias, activation, residual
 *         add as separate passes): f32 results are unchanged;
 *   bf16  against f32 on the same weights, within the relative errors stated at VIT_BF16_TOL and
 *         CLIP_BF16_TOL (and not equal to it: the matrices were rounded);
 *   bytes the bf16 matrices take half the f32 ones (linear_bytes). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clip.h"
#include "clock.h"
#include "ops.h"
#include "safetensors.h"
#include "testing.h"
#include "threads.h"
#include "vit.h"

/* Bounds on testing_rel_err (max |diff| / max |f32|) of the bf16 forward against f32. bf16
 * keeps 8 mantissa bits (a weight rounds by up to 2^-9 = 2e-3 of itself); the errors of a
 * product's K terms partly cancel, and LayerNorm, attention and the residual adds of two
 * blocks carry them on. Measured here (weights bf16, x f32: widened panels + sgemm): ViT-g
 * blocks 0 and 1: 1.2e-3 and 1.9e-3; CLIP-L features 4.8e-3, tokens 5.2e-3. The bounds are
 * about 2.5-3x those. Where oneDNN runs bf16 natively, x is rounded to bf16 too
 * (onednn_matmul.h), about doubling the rounding noise: that path gets twice the bound (not
 * measured: this CPU lacks it). */
#define VIT_BF16_TOL 5e-3
#define CLIP_BF16_TOL 1.5e-2

#define MAX_TENSORS 64

/* Random tensors to be written as one f32 safetensors file. */
typedef struct builder {
    tensor t[MAX_TENSORS];
    char *name[MAX_TENSORS];
    safetensors_item items[MAX_TENSORS];
    int n;
    unsigned seed;
} builder;

static float frand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* offset + uniform(-scale, scale) of this shape, named by a printf format. */
static void add(builder *b, int ndim, const int64_t *shape, float offset, float scale, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void add(builder *b, int ndim, const int64_t *shape, float offset, float scale, const char *fmt, ...) {
    lion_status st;
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (b->n == MAX_TENSORS || tensor_alloc(&b->t[b->n], DTYPE_F32, ndim, shape, &st)) {
        testing_fail(__FILE__, __LINE__, "builder: %s", name);
        return;
    }
    float *p = b->t[b->n].data;
    for (int64_t i = 0; i < tensor_numel(&b->t[b->n]); i++) p[i] = offset + scale * frand(&b->seed);
    b->name[b->n] = strdup(name);
    b->items[b->n] = (safetensors_item){b->name[b->n], &b->t[b->n]};
    b->n++;
}

/* A Linear's weight [out, in] with unit-variance products of unit inputs, and its bias. */
static void add_linear(builder *b, int out, int in, int bias, const char *prefix, int i, const char *name) {
    const int64_t s_w[] = {out, in}, s_b[] = {out};
    add(b, 2, s_w, 0, sqrtf(3.0f / (float)in), "%s%d.%s.weight", prefix, i, name);
    if (bias) add(b, 1, s_b, 0, 0.1f, "%s%d.%s.bias", prefix, i, name);
}

static void add_norm(builder *b, int d, const char *prefix, int i, const char *name) {
    const int64_t s[] = {d};
    add(b, 1, s, 1.0f, 0.1f, "%s%d.%s.weight", prefix, i, name);
    add(b, 1, s, 0.0f, 0.1f, "%s%d.%s.bias", prefix, i, name);
}

static int write_file(builder *b, const char *path) {
    lion_status st;
    int rc = safetensors_write(path, b->items, (size_t)b->n, NULL, 0, &st);
    CHECK_MSG(rc == 0, "write %s: %s", path, st.msg);
    for (int i = 0; i < b->n; i++) tensor_free(&b->t[i]), free(b->name[i]);
    b->n = 0;
    return rc;
}

static float *random_pixels(size_t n, unsigned seed) {
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; p && i < n; i++) p[i] = 2.0f * frand(&seed);
    return p;
}

static double seconds_since(int64_t t0) { return (double)(clock_mono_us() - t0) / 1e6; }

/* ------------------------------------------------------------------ EVA ViT-g */

/* The ViT forward of one image as vit.c ran it before linear.h, by ops.h calls on the f32
 * model's matrices: outs[i] gets block i's output. */
static void vit_reference(const vit_model *m, const float *pixels, float **outs, arena *a) {
    const vit_config *c = &m->cfg;
    const int d = c->dim, n = m->tokens, hd = d / c->heads;
    arena_mark mark = arena_save(a);
    float *x = arena_floats(a, (size_t)n * d), *h = arena_floats(a, (size_t)n * d);
    float *qkv = arena_floats(a, (size_t)n * 3 * d), *ff = arena_floats(a, (size_t)n * c->mlp_hidden);
    memcpy(x, m->cls_token, (size_t)d * sizeof(float));
    patch_embed_forward(x + d, pixels, m->patch_w, m->patch_b, 3, c->image_size, c->image_size, c->patch_size, d, a);
    add_forward(x, m->pos_embed, (size_t)n * d);
    for (int i = 0; i < c->depth; i++) {
        const vit_block *bl = &m->blocks[i];
        layernorm_forward(h, x, bl->norm1_w, bl->norm1_b, n, d, c->ln_eps);
        linear_forward(qkv, h, bl->qkv.w, bl->qkv_b, n, d, 3 * d);
        attention_args at = {.batch = 1, .heads = c->heads, .head_dim = hd, .q_len = n, .k_len = n, .q = qkv,
                             .k = qkv + d, .v = qkv + 2 * d, .out = h, .q_stride = 3 * d, .k_stride = 3 * d,
                             .v_stride = 3 * d, .out_stride = d, .scale = 1.0f / sqrtf((float)hd)};
        attention_forward(&at, a);
        linear_forward(qkv, h, bl->proj.w, bl->proj_b, n, d, d);
        add_forward(x, qkv, (size_t)n * d);
        layernorm_forward(h, x, bl->norm2_w, bl->norm2_b, n, d, c->ln_eps);
        linear_forward(ff, h, bl->fc1.w, bl->fc1_b, n, d, c->mlp_hidden);
        gelu_forward(ff, (size_t)n * c->mlp_hidden);
        linear_forward(h, ff, bl->fc2.w, bl->fc2_b, n, c->mlp_hidden, d);
        add_forward(x, h, (size_t)n * d);
        memcpy(outs[i], x, (size_t)n * d * sizeof(float));
    }
    arena_restore(a, mark);
}

static void test_vit_g(const char *dir) {
    const vit_config c = {224, 14, 1408, 2, 16, 6144, 1e-6f};
    const int d = c.dim, f = c.mlp_hidden, g = c.image_size / c.patch_size, n = 1 + g * g;
    char path[512];
    snprintf(path, sizeof path, "%s/vit.safetensors", dir);
    builder b = {.seed = 1};
    const int64_t s_patch[] = {d, 3, c.patch_size, c.patch_size}, s_d[] = {d}, s_cls[] = {1, 1, d},
                  s_pos[] = {1, n, d};
    add(&b, 4, s_patch, 0, sqrtf(3.0f / (3 * 14 * 14)), "patch_embed.proj.weight");
    add(&b, 1, s_d, 0, 0.1f, "patch_embed.proj.bias");
    add(&b, 3, s_cls, 0, 0.5f, "cls_token");
    add(&b, 3, s_pos, 0, 0.5f, "pos_embed");
    for (int i = 0; i < c.depth; i++) {
        add_norm(&b, d, "blocks.", i, "norm1");
        add_linear(&b, 3 * d, d, 0, "blocks.", i, "attn.qkv");
        add(&b, 1, s_d, 0, 0.1f, "blocks.%d.attn.q_bias", i);
        add(&b, 1, s_d, 0, 0.1f, "blocks.%d.attn.v_bias", i);
        add_linear(&b, d, d, 1, "blocks.", i, "attn.proj");
        add_norm(&b, d, "blocks.", i, "norm2");
        add_linear(&b, f, d, 1, "blocks.", i, "mlp.fc1");
        add_linear(&b, d, f, 1, "blocks.", i, "mlp.fc2");
    }
    if (write_file(&b, path)) return;

    lion_status st;
    weights w32, w16;
    vit_model m32, m16;
    if (weights_open(&w32, path, "", &st) || weights_open(&w16, path, "", &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return;
    }
    int64_t t0 = clock_mono_us();
    CHECK_MSG(vit_load_with(&m32, &c, &w32, PRECISION_F32, &st) == 0, "f32 load: %s", st.msg);
    CHECK_MSG(vit_load_with(&m16, &c, &w16, PRECISION_BF16, &st) == 0, "bf16 load: %s", st.msg);
    const double load_s = seconds_since(t0);
    const size_t bytes32 = vit_matrix_bytes(&m32), bytes16 = vit_matrix_bytes(&m16);
    printf("ViT-g: matrices f32 %.1f MB, bf16 %.1f MB (%s); loads %.2f s\n", bytes32 / 1e6, bytes16 / 1e6,
           linear_form(&m16.blocks[0].fc1), load_s);
    CHECK_EQ_INT(bytes32, (size_t)c.depth * 4 * ((size_t)4 * d * d + (size_t)2 * d * f));
    /* half; oneDNN's packed layout may pad a little */
    CHECK_MSG(2 * bytes16 >= bytes32 && 2 * bytes16 <= bytes32 + bytes32 / 50, "bf16 matrices %zu bytes, f32 %zu",
              bytes16, bytes32);
    CHECK(strcmp(linear_form(&m32.blocks[0].qkv), "f32") == 0 && m16.blocks[1].fc2.w == NULL);

    const size_t per = (size_t)n * d;
    float *pixels = random_pixels((size_t)3 * c.image_size * c.image_size, 5);
    float *ref[2], *o32[2], *o16[2];
    for (int k = 0; k < 2; k++) {
        ref[k] = malloc(per * sizeof(float));
        o32[k] = malloc(per * sizeof(float));
        o16[k] = malloc(per * sizeof(float));
    }
    const int layers[] = {0, 1};
    arena a;
    arena_init(&a, 0);
    t0 = clock_mono_us();
    vit_reference(&m32, pixels, ref, &a);
    const double ref_s = seconds_since(t0);
    t0 = clock_mono_us();
    CHECK_MSG(vit_forward(&m32, pixels, 1, layers, 2, o32, &a, &st) == 0, "f32: %s", st.msg);
    const double f32_s = seconds_since(t0);
    t0 = clock_mono_us();
    CHECK_MSG(vit_forward(&m16, pixels, 1, layers, 2, o16, &a, &st) == 0, "bf16: %s", st.msg);
    const double bf16_s = seconds_since(t0);
    const double tol = m16.blocks[0].fc1.packed ? 2 * VIT_BF16_TOL : VIT_BF16_TOL;
    for (int k = 0; k < 2; k++) {
        CHECK_MSG(memcmp(o32[k], ref[k], per * sizeof(float)) == 0,
                  "ViT-g f32 block %d differs from the plain-ops forward (max |diff| %.3g)", k,
                  testing_max_abs_err(o32[k], ref[k], per));
        const double e = testing_rel_err(o16[k], o32[k], per);
        printf("ViT-g block %d: bf16 against f32 relative error %.2e (bound %.1e)\n", k, e, tol);
        char what[64];
        snprintf(what, sizeof what, "ViT-g bf16 block %d", k);
        CHECK_CLOSE(o16[k], o32[k], per, tol, what);
        CHECK_MSG(e > 1e-5, "ViT-g bf16 block %d equals f32 (%.3g): were the matrices rounded?", k, e);
    }
    printf("ViT-g forward: reference %.2f s, f32 %.2f s, bf16 %.2f s\n", ref_s, f32_s, bf16_s);
    for (int k = 0; k < 2; k++) free(ref[k]), free(o32[k]), free(o16[k]);
    free(pixels);
    arena_free(&a);
    vit_free(&m32);
    vit_free(&m16);
    weights_close(&w32);
    weights_close(&w16);
    unlink(path);
}

/* ------------------------------------------------------------------ CLIP ViT-L/14 + Pink */

#define TOWER "vision_model.vision_model."
#define LAYERS TOWER "encoder.layers."

/* Pink's linear AdapterLayer as vit.c and clip.c ran it before linear.h: ops.h's adapter_forward. */
static void adapter_reference(const clip_adapter *ad, float *h, int rows, int d, int bn, arena *a) {
    if (ad->down_b) adapter_forward(h, rows, d, bn, ad->down.w, ad->down_b, ad->up.w, ad->up_b, 0, a);
}

/* The CLIP forward of one image as clip.c ran it before linear.h, on the f32 model. */
static void clip_reference(const clip_model *m, const float *pixels, float *features, float *tokens, arena *a) {
    const clip_config *c = &m->cfg;
    const int d = c->dim, n = m->tokens, hd = d / c->heads, f = c->mlp_hidden;
    const size_t nd = (size_t)n * d;
    arena_mark mark = arena_save(a);
    float *x = arena_floats(a, nd), *h = arena_floats(a, nd), *q = arena_floats(a, nd), *k = arena_floats(a, nd);
    float *v = arena_floats(a, nd), *ff = arena_floats(a, (size_t)n * f);
    memcpy(x, m->class_emb, (size_t)d * sizeof(float));
    patch_embed_forward(x + d, pixels, m->patch_w, NULL, 3, c->image_size, c->image_size, c->patch_size, d, a);
    add_forward(x, m->pos_emb, nd);
    layernorm_forward(x, x, m->pre_ln_w, m->pre_ln_b, n, d, c->ln_eps);
    for (int i = 0; i < m->run; i++) {
        const clip_layer *l = &m->layer[i];
        layernorm_forward(h, x, l->ln1_w, l->ln1_b, n, d, c->ln_eps);
        adapter_reference(&l->adapter_attn, h, n, d, c->adapter_dim, a);
        linear_forward(q, h, l->q.w, l->q_b, n, d, d);
        linear_forward(k, h, l->k.w, l->k_b, n, d, d);
        linear_forward(v, h, l->v.w, l->v_b, n, d, d);
        attention_args at = {.batch = 1, .heads = c->heads, .head_dim = hd, .q_len = n, .k_len = n, .q = q, .k = k,
                             .v = v, .out = h, .q_stride = d, .k_stride = d, .v_stride = d, .out_stride = d,
                             .scale = 1.0f / sqrtf((float)hd)};
        attention_forward(&at, a);
        linear_forward(q, h, l->o.w, l->o_b, n, d, d);
        add_forward(x, q, nd);
        layernorm_forward(h, x, l->ln2_w, l->ln2_b, n, d, c->ln_eps);
        adapter_reference(&l->adapter_mlp, h, n, d, c->adapter_dim, a);
        linear_forward(ff, h, l->fc1.w, l->fc1_b, n, d, f);
        quick_gelu_forward(ff, (size_t)n * f);
        linear_forward(h, ff, l->fc2.w, l->fc2_b, n, f, d);
        add_forward(x, h, nd);
    }
    memcpy(features, x + d, (size_t)m->patches * d * sizeof(float));
    linear_forward(tokens, x + d, m->proj.w, m->proj_b, m->patches, d, c->proj_dim);
    arena_restore(a, mark);
}

static void add_adapter(builder *b, int d, int bn, int i, const char *which) {
    const int64_t s_down[] = {bn, d}, s_bn[] = {bn}, s_up[] = {d, bn}, s_d[] = {d};
    add(b, 2, s_down, 0, sqrtf(3.0f / (float)d), LAYERS "%d.%s.tune_adapter_a.weight", i, which);
    add(b, 1, s_bn, 0, 0.1f, LAYERS "%d.%s.tune_adapter_a.bias", i, which);
    add(b, 2, s_up, 0, sqrtf(3.0f / (float)bn), LAYERS "%d.%s.tune_adapter_b.weight", i, which);
    add(b, 1, s_d, 0, 0.1f, LAYERS "%d.%s.tune_adapter_b.bias", i, which);
}

static void test_clip_l(const char *dir) {
    /* image, patch, dim, layers, heads, mlp, eps, quick_gelu, select_layer, adapter dim/attn/mlp, proj */
    const clip_config c = {224, 14, 1024, 3, 16, 4096, 1e-5f, 1, -2, 8, 1, 1, 4096};
    const int d = c.dim, f = c.mlp_hidden, g = c.image_size / c.patch_size, n = 1 + g * g, run = 2;
    char path[512];
    snprintf(path, sizeof path, "%s/clip.safetensors", dir);
    builder b = {.seed = 2};
    const int64_t s_d[] = {d}, s_patch[] = {d, 3, c.patch_size, c.patch_size}, s_pos[] = {n, d},
                  s_proj[] = {c.proj_dim, d}, s_pb[] = {c.proj_dim};
    add(&b, 1, s_d, 0, 0.5f, TOWER "embeddings.class_embedding");
    add(&b, 4, s_patch, 0, sqrtf(3.0f / (3 * 14 * 14)), TOWER "embeddings.patch_embedding.weight");
    add(&b, 2, s_pos, 0, 0.5f, TOWER "embeddings.position_embedding.weight");
    add(&b, 1, s_d, 1.0f, 0.1f, TOWER "pre_layrnorm.weight");
    add(&b, 1, s_d, 0, 0.1f, TOWER "pre_layrnorm.bias");
    add(&b, 2, s_proj, 0, sqrtf(3.0f / (float)d), "mm_projector.weight");
    add(&b, 1, s_pb, 0, 0.1f, "mm_projector.bias");
    for (int i = 0; i < run; i++) { /* the third layer is never read: Pink's files omit it */
        add_norm(&b, d, LAYERS, i, "layer_norm1");
        add_linear(&b, d, d, 1, LAYERS, i, "self_attn.q_proj");
        add_linear(&b, d, d, 1, LAYERS, i, "self_attn.k_proj");
        add_linear(&b, d, d, 1, LAYERS, i, "self_attn.v_proj");
        add_linear(&b, d, d, 1, LAYERS, i, "self_attn.out_proj");
        add_norm(&b, d, LAYERS, i, "layer_norm2");
        add_linear(&b, f, d, 1, LAYERS, i, "mlp.fc1");
        add_linear(&b, d, f, 1, LAYERS, i, "mlp.fc2");
        add_adapter(&b, d, c.adapter_dim, i, "adapter_attn");
        add_adapter(&b, d, c.adapter_dim, i, "adapter_mlp");
    }
    if (write_file(&b, path)) return;

    lion_status st;
    weights w32, w16;
    clip_model m32, m16;
    if (weights_open(&w32, path, "", &st) || weights_open(&w16, path, "", &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return;
    }
    CHECK_MSG(clip_load_with(&m32, &c, &w32, PRECISION_F32, &st) == 0, "f32 load: %s", st.msg);
    CHECK_MSG(clip_load_with(&m16, &c, &w16, PRECISION_BF16, &st) == 0, "bf16 load: %s", st.msg);
    CHECK_EQ_INT(m32.run, run);
    const size_t bytes32 = clip_matrix_bytes(&m32), bytes16 = clip_matrix_bytes(&m16);
    const size_t per_layer = (size_t)4 * d * d + (size_t)2 * d * f + (size_t)2 * 2 * d * c.adapter_dim;
    printf("CLIP-L: matrices f32 %.1f MB, bf16 %.1f MB (%s)\n", bytes32 / 1e6, bytes16 / 1e6,
           linear_form(&m16.layer[0].fc1));
    CHECK_EQ_INT(bytes32, 4 * (run * per_layer + (size_t)c.proj_dim * d));
    CHECK_MSG(2 * bytes16 >= bytes32 && 2 * bytes16 <= bytes32 + bytes32 / 50, "bf16 matrices %zu bytes, f32 %zu",
              bytes16, bytes32);

    const size_t nf = (size_t)m32.patches * d, nt = (size_t)m32.patches * c.proj_dim;
    float *pixels = random_pixels((size_t)3 * c.image_size * c.image_size, 6);
    float *rf = malloc(nf * sizeof(float)), *rt = malloc(nt * sizeof(float));
    float *f32f = malloc(nf * sizeof(float)), *f32t = malloc(nt * sizeof(float));
    float *bff = malloc(nf * sizeof(float)), *bft = malloc(nt * sizeof(float));
    arena a;
    arena_init(&a, 0);
    int64_t t0 = clock_mono_us();
    clip_reference(&m32, pixels, rf, rt, &a);
    const double ref_s = seconds_since(t0);
    t0 = clock_mono_us();
    CHECK_MSG(clip_forward(&m32, pixels, 1, f32f, f32t, &a, &st) == 0, "f32: %s", st.msg);
    const double f32_s = seconds_since(t0);
    t0 = clock_mono_us();
    CHECK_MSG(clip_forward(&m16, pixels, 1, bff, bft, &a, &st) == 0, "bf16: %s", st.msg);
    const double bf16_s = seconds_since(t0);
    CHECK_MSG(memcmp(f32f, rf, nf * sizeof(float)) == 0 && memcmp(f32t, rt, nt * sizeof(float)) == 0,
              "CLIP-L f32 differs from the plain-ops forward (features %.3g, tokens %.3g max |diff|)",
              testing_max_abs_err(f32f, rf, nf), testing_max_abs_err(f32t, rt, nt));
    const double tol = m16.layer[0].fc1.packed ? 2 * CLIP_BF16_TOL : CLIP_BF16_TOL;
    printf("CLIP-L: bf16 against f32 relative error: features %.2e, tokens %.2e (bound %.1e)\n",
           testing_rel_err(bff, f32f, nf), testing_rel_err(bft, f32t, nt), tol);
    CHECK_CLOSE(bff, f32f, nf, tol, "CLIP-L bf16 features");
    CHECK_CLOSE(bft, f32t, nt, tol, "CLIP-L bf16 tokens");
    CHECK_MSG(testing_rel_err(bft, f32t, nt) > 1e-5, "CLIP-L bf16 tokens equal f32: were the matrices rounded?");
    printf("CLIP-L forward: reference %.2f s, f32 %.2f s, bf16 %.2f s\n", ref_s, f32_s, bf16_s);
    free(rf), free(rt), free(f32f), free(f32t), free(bff), free(bft), free(pixels);
    arena_free(&a);
    clip_free(&m32);
    clip_free(&m16);
    weights_close(&w32);
    weights_close(&w16);
    unlink(path);
}

int main(void) {
    threads_init(2);
    char dir[] = "/tmp/lion-test-vision-bf16-XXXXXX";
    if (!mkdtemp(dir)) testing_skip("no temporary directory");
    test_vit_g(dir);
    test_clip_l(dir);
    rmdir(dir);
    return testing_finish();
}
