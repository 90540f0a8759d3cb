/* The aggregator stage in bf16 (services/aggregator/aggregate.h) against our own f32 on the
 * same random weights, at LION-XL's true widths: the Q-Former as InstructBLIP has it (hidden
 * 768, 12 heads, intermediate 3072, 32 query tokens, cross-attention to 1408-wide ViT features
 * of 257 tokens, t5_proj to d_model 2048) with 2 layers (layer 0 cross-attends), and the
 * vision aggregator (fusion width 1408, 16 heads, intermediate 3072, adapter_proj 5632) with 1
 * block instead of 2; a batch of 2 requests with instructions of different lengths. The
 * vocabulary and position tables are cut (looked up, not multiplied). Prints the relative
 * errors of the Q-Former tokens and the aggregator tokens, asserts bounds, and checks that
 * the bf16 matrices take half the f32 bytes. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aggregate.h"
#include "testing.h"
#include "threads.h"
#include "weight_builder.h"

/* Measured here (AVX2, no native bf16: widened bf16 panels + sgemm, x kept f32): Q-Former
 * tokens 2.1e-3, aggregator tokens 2.7e-3 relative (max |diff| over max |f32|). bf16 keeps 8
 * mantissa bits (a 2^-9 = 2e-3 rounding step) on every weight; the post-norm LayerNorms keep
 * it from growing. Bounds: about 3x what was measured (a native CPU also rounds x to bf16). */
#define QFORMER_BOUND 7e-3
#define FUSION_BOUND 8e-3

#define W 1408
#define TOKENS 257
#define D_MODEL 2048
#define VOCAB 1000
#define MAX_POS 64
#define BATCH 2

#define V(...) ((const int64_t[]){__VA_ARGS__})
/* A Linear's weight and bias; std 0.02 as Swin's and BERT's init (uniform of that std). */
#define W_SCALE 0.0346f
static void add_linear(weight_builder *l, int out, int in, int bias, const char *name) {
    weight_builder_linear(l, out, in, bias, W_SCALE, "%s", name);
}
static void add_norm(weight_builder *l, int n, const char *name) { weight_builder_norm(l, n, "%s", name); }

static void add_attention(weight_builder *l, const char *p, int hidden, int kv) {
    char n[320];
    const char *parts[] = {"query", "key", "value"};
    for (int i = 0; i < 3; i++) {
        snprintf(n, sizeof n, "%s.self.%s", p, parts[i]);
        add_linear(l, hidden, i ? kv : hidden, 1, n);
    }
    snprintf(n, sizeof n, "%s.output.dense", p);
    add_linear(l, hidden, hidden, 1, n);
    snprintf(n, sizeof n, "%s.output.LayerNorm", p);
    add_norm(l, hidden, n);
}

static void add_ffn(weight_builder *l, const char *inter, const char *out, int hidden, int mid) {
    char n[320];
    snprintf(n, sizeof n, "%s.dense", inter);
    add_linear(l, mid, hidden, 1, n);
    snprintf(n, sizeof n, "%s.dense", out);
    add_linear(l, hidden, mid, 1, n);
    snprintf(n, sizeof n, "%s.LayerNorm", out);
    add_norm(l, hidden, n);
}

/* The aggregator stage file's keys for cfg, random, written to path. */
static int write_aggregator(const char *path, const model_config *cfg, lion_status *st) {
    weight_builder *l = weight_builder_new(20240612);
    if (!l) return lion_fail(st, LION_ENOMEM, "out of memory");
    const qformer_config *q = &cfg->aggregator.qformer;
    const fusion_config *f = &cfg->aggregator.fusion;
    const int h = q->hidden;
    char n[256], n2[256];
    weight_builder_add(l, 0, W_SCALE, 3, V(1, q->num_query_tokens, h), "query_tokens");
    add_norm(l, W, "ln_vision");
    weight_builder_add(l, 0, W_SCALE, 2, V(q->vocab_size, h), "Qformer.bert.embeddings.word_embeddings.weight");
    weight_builder_add(l, 0, W_SCALE, 2, V(q->max_position, h), "Qformer.bert.embeddings.position_embeddings.weight");
    add_norm(l, h, "Qformer.bert.embeddings.LayerNorm");
    for (int i = 0; i < q->layers; i++) {
        snprintf(n, sizeof n, "Qformer.bert.encoder.layer.%d.attention", i), add_attention(l, n, h, h);
        if (i % q->cross_attention_freq == 0)
            snprintf(n, sizeof n, "Qformer.bert.encoder.layer.%d.crossattention", i), add_attention(l, n, h, W);
        snprintf(n, sizeof n, "Qformer.bert.encoder.layer.%d.intermediate", i);
        snprintf(n2, sizeof n2, "Qformer.bert.encoder.layer.%d.output", i);
        add_ffn(l, n, n2, h, q->intermediate);
        snprintf(n, sizeof n, "Qformer.bert.encoder.layer.%d.intermediate_query", i);
        snprintf(n2, sizeof n2, "Qformer.bert.encoder.layer.%d.output_query", i);
        add_ffn(l, n, n2, h, q->intermediate);
    }
    add_linear(l, D_MODEL, h, 1, "t5_proj");
    for (int i = 0; i < f->blocks; i++) {
        snprintf(n, sizeof n, "fusion_adapter.blocks.%d.attention", i), add_attention(l, n, W, W);
        snprintf(n, sizeof n, "fusion_adapter.blocks.%d.crossattention", i), add_attention(l, n, W, W);
        snprintf(n, sizeof n, "fusion_adapter.blocks.%d.intermediate", i);
        snprintf(n2, sizeof n2, "fusion_adapter.blocks.%d.output", i);
        add_ffn(l, n, n2, W, f->intermediate);
    }
    add_norm(l, W, "ln_adapter");
    add_linear(l, cfg->aggregator.proj_hidden, W, 1, "adapter_proj.0");
    add_linear(l, D_MODEL, cfg->aggregator.proj_hidden, 1, "adapter_proj.2");
    int rc = weight_builder_write(l, path, st);
    weight_builder_free(l);
    return rc;
}

int main(void) {
    threads_init(0);
    model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.visual_input = VISUAL_INPUT_ALL;
    cfg.vision.image_size = 224;
    cfg.vision.patch_size = 14;
    cfg.llm.d_model = D_MODEL;
    cfg.aggregator.vision_width = W;
    cfg.aggregator.proj_hidden = 5632;
    cfg.aggregator.qformer = (qformer_config){.hidden = 768, .layers = 2, .heads = 12, .intermediate = 3072,
                                              .ln_eps = 1e-12f, .cross_attention_freq = 2, .num_query_tokens = 32,
                                              .vocab_size = VOCAB, .max_position = MAX_POS, .max_text_len = MAX_POS};
    cfg.aggregator.fusion = (fusion_config){.blocks = 1, .heads = 16, .intermediate = 3072, .ln_eps = 1e-12f,
                                            .hidden_layer = 38, .cross_layers = {28}};

    char path[256];
    snprintf(path, sizeof path, "/tmp/lion_test_aggregator_bf16_%d.safetensors", (int)getpid());
    lion_status st;
    if (write_aggregator(path, &cfg, &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return testing_finish();
    }
    /* two mappings: the bf16 load gives the f32 file pages back, the f32 model reads them */
    weights w32, w16;
    aggregate_model m32, m16;
    int ok = weights_open(&w32, path, "", &st) == 0 && weights_open(&w16, path, "", &st) == 0;
    unlink(path); /* the mappings stay */
    CHECK_MSG(ok, "%s", st.msg);
    if (!ok) return testing_finish();
    ok = aggregate_load(&m32, &cfg, &w32, PRECISION_F32, &st) == 0;
    CHECK_MSG(ok, "f32: %s", st.msg);
    ok = ok && aggregate_load(&m16, &cfg, &w16, PRECISION_BF16, &st) == 0;
    CHECK_MSG(ok, "bf16: %s", st.msg);
    if (!ok) return testing_finish();

    const size_t b32 = aggregate_matrix_bytes(&m32), b16 = aggregate_matrix_bytes(&m16);
    const linear *first = aggregate_first_matrix(&m16);
    printf("matrices: f32 %.1f MB, bf16 %.1f MB (%s)\n", b32 / 1e6, b16 / 1e6, linear_form(first));
    if (first->packed) /* oneDNN's packed layout may pad a block: half within 1% */
        CHECK_MSG(fabs(2.0 * (double)b16 - (double)b32) <= 0.01 * (double)b32, "bf16 %zu bytes, f32 %zu", b16, b32);
    else
        CHECK_MSG(2 * b16 == b32, "bf16 %zu bytes, f32 %zu", b16, b32);

    /* two requests: ViT layers 38 and 28 (about unit scale, as LayerNorm'd ViT features), and
     * instructions of 9 and 17 ids ([CLS] ... [SEP] shaped) */
    uint64_t seed = 11;
    const size_t per = (size_t)TOKENS * W;
    float *vit = malloc(sizeof(float) * per * 2 * BATCH);
    for (size_t i = 0; i < per * 2 * BATCH; i++) vit[i] = weight_builder_uniform(&seed, 1.7f);
    int layers[2] = {38, 28};
    tensor outs[BATCH][2];
    int32_t ids[BATCH][MAX_POS];
    const int lens[BATCH] = {9, 17};
    aggregate_request reqs[BATCH];
    for (int b = 0; b < BATCH; b++) {
        for (int k = 0; k < 2; k++) outs[b][k] = tensor_view(DTYPE_F32, vit + (size_t)(2 * b + k) * per, 2, V(TOKENS, W));
        for (int t = 0; t < lens[b]; t++) ids[b][t] = t == 0 ? 101 : t == lens[b] - 1 ? 102 : 200 + (t * 37 + b) % 700;
        reqs[b] = (aggregate_request){.n_layers = 2, .layers = layers, .vit_outs = outs[b], .text_ids = ids[b],
                                      .text_len = lens[b]};
    }
    const int nv = m32.num_visual, nq = cfg.aggregator.qformer.num_query_tokens;
    CHECK_EQ_INT(nv, 32 + TOKENS);
    float *o32 = calloc((size_t)BATCH * nv * D_MODEL, sizeof(float)), *o16 = calloc((size_t)BATCH * nv * D_MODEL, sizeof(float));
    arena a;
    arena_init(&a, 0);
    CHECK_MSG(aggregate_forward(&m32, reqs, BATCH, o32, &a, &st) == 0, "f32: %s", st.msg);
    CHECK_MSG(aggregate_forward(&m16, reqs, BATCH, o16, &a, &st) == 0, "bf16: %s", st.msg);

    /* the Q-Former's tokens and the aggregator's, each over both requests */
    const size_t nqf = (size_t)nq * D_MODEL, nfu = (size_t)TOKENS * D_MODEL;
    float *q32 = malloc(sizeof(float) * nqf * BATCH), *q16 = malloc(sizeof(float) * nqf * BATCH);
    float *f32 = malloc(sizeof(float) * nfu * BATCH), *f16 = malloc(sizeof(float) * nfu * BATCH);
    for (int b = 0; b < BATCH; b++) {
        const size_t at = (size_t)b * nv * D_MODEL;
        memcpy(q32 + b * nqf, o32 + at, nqf * sizeof(float));
        memcpy(q16 + b * nqf, o16 + at, nqf * sizeof(float));
        memcpy(f32 + b * nfu, o32 + at + nqf, nfu * sizeof(float));
        memcpy(f16 + b * nfu, o16 + at + nqf, nfu * sizeof(float));
    }
    const double eq = testing_rel_err(q16, q32, nqf * BATCH), ef = testing_rel_err(f16, f32, nfu * BATCH);
    printf("Q-Former (2 layers) tokens [%d, %d, %d]: bf16 vs f32 relative error %.3g (bound %.3g)\n", BATCH, nq,
           D_MODEL, eq, QFORMER_BOUND);
    printf("aggregator (1 block) tokens [%d, %d, %d]: bf16 vs f32 relative error %.3g (bound %.3g)\n", BATCH,
           TOKENS, D_MODEL, ef, FUSION_BOUND);
    CHECK_MSG(eq > 0 && eq <= QFORMER_BOUND, "Q-Former: relative error %g", eq);
    CHECK_MSG(ef > 0 && ef <= FUSION_BOUND, "aggregator: relative error %g", ef);

    free(q32), free(q16), free(f32), free(f16), free(o32), free(o16), free(vit);
    arena_free(&a);
    aggregate_free(&m32);
    aggregate_free(&m16);
    weights_close(&w32);
    weights_close(&w16);
    return testing_finish();
}
