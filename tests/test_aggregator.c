/* The aggregator stage (Q-Former + vision aggregator) against the PyTorch reference
 * (fixtures/gen_aggregator.py): the tiny test model through LionModel.encode_img, and true
 * LION-XL dims with truncated Q-Former depth on bf16-stored weights; both with a batch of
 * instructions of different lengths. Tolerance 1e-4 relative. Then visual_input variants,
 * and malformed inputs and weights, which must fail with messages naming what was wrong. */
#include <stdlib.h>
#include <string.h>

#include "aggregate.h"
#include "testing.h"
#include "threads.h"

#define TINY_DIR "tests/data/tiny-model"

/* One fixture case: weights, io file, and the request batch built from the io file. */
typedef struct agg_case {
    weights w;
    safetensors_file *io;
    int batch, n_layers;
    int layers[MODEL_MAX_INTERMEDIATE];
    tensor vit[MODEL_MAX_INTERMEDIATE];          /* [batch, tokens, width] as stored */
    tensor vit_req[8][MODEL_MAX_INTERMEDIATE];   /* per request [tokens, width] views */
    aggregate_request reqs[8];
    tensor visual; /* expected [batch, Q + N, d_model] */
} agg_case;

static int case_open(agg_case *c, const char *name, const int *layers, int n_layers, lion_status *st) {
    char path[4096], key[32];
    memset(c, 0, sizeof *c);
    snprintf(path, sizeof path, "%s", testing_fixture(name));
    strncat(path, ".safetensors", sizeof path - strlen(path) - 1);
    if (weights_open(&c->w, path, "", st)) return -1;
    snprintf(path, sizeof path, "%s", testing_fixture(name));
    strncat(path, "_io.safetensors", sizeof path - strlen(path) - 1);
    if (safetensors_open(&c->io, path, st)) return -1;
    tensor ids, lens;
    const int64_t any_len[] = {-1};
    if (safetensors_get_checked(c->io, "lens", DTYPE_I32, 1, any_len, &lens, st) ||
        safetensors_get(c->io, "ids", &ids, st) || safetensors_get(c->io, "visual", &c->visual, st))
        return -1;
    c->batch = (int)lens.shape[0];
    c->n_layers = n_layers;
    for (int k = 0; k < n_layers; k++) {
        c->layers[k] = layers[k];
        snprintf(key, sizeof key, "vit%d", layers[k]);
        if (safetensors_get(c->io, key, &c->vit[k], st)) return -1;
    }
    for (int b = 0; b < c->batch; b++) {
        for (int k = 0; k < n_layers; k++) {
            const int64_t *s = c->vit[k].shape;
            c->vit_req[b][k] = tensor_view(DTYPE_F32, (float *)c->vit[k].data + b * s[1] * s[2], 2, s + 1);
        }
        c->reqs[b] = (aggregate_request){.n_layers = n_layers, .layers = c->layers, .vit_outs = c->vit_req[b],
                                         .text_ids = (const int32_t *)ids.data + b * ids.shape[1],
                                         .text_len = ((const int32_t *)lens.data)[b]};
    }
    return 0;
}

static void case_close(agg_case *c) {
    if (c->io) safetensors_close(c->io);
    weights_close(&c->w);
}

/* Runs cfg's visual_input on the case and compares with the tokens [first, first + count)
 * of each request's expected ALL output. */
static void check_variant(const char *what, const model_config *cfg, agg_case *c, int first, int count,
                          arena *a) {
    lion_status st;
    aggregate_model m;
    if (aggregate_load(&m, cfg, &c->w, PRECISION_F32, &st)) {
        CHECK_MSG(0, "%s: load: %s", what, st.msg);
        return;
    }
    CHECK_EQ_INT(m.num_visual, count);
    const int d = m.d_model, all = (int)c->visual.shape[1];
    CHECK_EQ_INT(c->visual.shape[2], d);
    float *got = calloc((size_t)c->batch * count * d, sizeof(float));
    float *want = calloc((size_t)c->batch * count * d, sizeof(float));
    for (int b = 0; b < c->batch; b++)
        memcpy(want + (size_t)b * count * d, (const float *)c->visual.data + ((size_t)b * all + first) * d,
               (size_t)count * d * sizeof(float));
    CHECK_MSG(aggregate_forward(&m, c->reqs, c->batch, got, a, &st) == 0, "%s: %s", what, st.msg);
    CHECK_CLOSE(got, want, (size_t)c->batch * count * d, 1e-4, what);
    /* request 0, padded inside the batch (both fixtures give it the shorter instruction), gives
     * the same tokens alone */
    CHECK_MSG(aggregate_forward(&m, &c->reqs[0], 1, got, a, &st) == 0, "%s alone: %s", what, st.msg);
    char alone[96];
    snprintf(alone, sizeof alone, "%s, request 0 alone", what);
    CHECK_CLOSE(got, want, (size_t)count * d, 1e-4, alone);
    free(got);
    free(want);
    aggregate_free(&m);
}

static void test_tiny(arena *a) {
    lion_status st;
    model_config cfg;
    agg_case c;
    if (model_config_load(&cfg, TINY_DIR, &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return;
    }
    if (case_open(&c, "agg_tiny", cfg.vision.intermediate_layers, cfg.vision.n_intermediate, &st)) {
        CHECK_MSG(0, "%s", st.msg);
        model_config_free(&cfg);
        case_close(&c);
        return;
    }
    CHECK_EQ_INT(c.batch, 3);
    const int nq = cfg.aggregator.qformer.num_query_tokens, nv = (int)c.visual.shape[1];
    check_variant("tiny ALL", &cfg, &c, 0, nv, a);
    cfg.visual_input = VISUAL_INPUT_QFORMER;
    check_variant("tiny QFORMER", &cfg, &c, 0, nq, a);
    cfg.visual_input = VISUAL_INPUT_AGGREGATOR;
    check_variant("tiny AGGREGATOR", &cfg, &c, nq, nv - nq, a);

    /* the aggregator branch alone loads from a file without the Q-Former, and needs no text */
    weights fw;
    if (weights_open(&fw, testing_fixture("agg_tiny_fusion.safetensors"), "", &st) == 0) {
        aggregate_model m;
        CHECK_MSG(aggregate_load(&m, &cfg, &fw, PRECISION_F32, &st) == 0, "%s", st.msg);
        float *got = calloc((size_t)c.batch * (nv - nq) * cfg.llm.d_model, sizeof(float));
        aggregate_request no_text[8];
        memcpy(no_text, c.reqs, sizeof no_text);
        for (int b = 0; b < c.batch; b++) {
            no_text[b].text_ids = NULL;
            no_text[b].text_len = -1;
        }
        CHECK_MSG(aggregate_forward(&m, no_text, c.batch, got, a, &st) == 0, "%s", st.msg);
        free(got);
        aggregate_free(&m);
        cfg.visual_input = VISUAL_INPUT_ALL;
        CHECK(aggregate_load(&m, &cfg, &fw, PRECISION_F32, &st) == -1);
        CHECK_CONTAINS(st.msg, "query_tokens");
        weights_close(&fw);
    } else {
        CHECK_MSG(0, "%s", st.msg);
    }
    model_config_free(&cfg);
    case_close(&c);
}

static void test_xl(arena *a) {
    model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.visual_input = VISUAL_INPUT_ALL;
    cfg.vision.image_size = 224;
    cfg.vision.patch_size = 14;
    cfg.vision.dim = 1408;
    cfg.aggregator.vision_width = 1408;
    cfg.aggregator.qformer = (qformer_config){.hidden = 768, .layers = 2, .heads = 12, .intermediate = 3072,
                                              .ln_eps = 1e-12f, .cross_attention_freq = 2, .num_query_tokens = 32,
                                              .vocab_size = 8192, .max_position = 512, .max_text_len = 128};
    cfg.aggregator.fusion = (fusion_config){.blocks = 2, .heads = 16, .intermediate = 3072, .ln_eps = 1e-12f,
                                            .hidden_layer = 38, .cross_layers = {28, 18}};
    cfg.aggregator.proj_hidden = 5632;
    cfg.llm.d_model = 2048;
    const int layers[] = {18, 28, 38};
    lion_status st;
    agg_case c;
    if (case_open(&c, "agg_xl", layers, 3, &st)) {
        CHECK_MSG(0, "%s", st.msg);
        case_close(&c);
        return;
    }
    CHECK_EQ_INT(c.visual.shape[1], 32 + 257);
    check_variant("LION-XL dims ALL", &cfg, &c, 0, 32 + 257, a);
    case_close(&c);
}

/* Malformed requests and weights on the tiny model. */
static void test_errors(arena *a) {
    lion_status st;
    model_config cfg;
    agg_case c;
    if (model_config_load(&cfg, TINY_DIR, &st) ||
        case_open(&c, "agg_tiny", cfg.vision.intermediate_layers, cfg.vision.n_intermediate, &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return;
    }
    aggregate_model m;
    if (aggregate_load(&m, &cfg, &c.w, PRECISION_F32, &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return;
    }
    float *out = calloc((size_t)c.batch * m.num_visual * m.d_model, sizeof(float));
    aggregate_request r[3];
    tensor bad[MODEL_MAX_INTERMEDIATE];
#define RESET() (memcpy(r, c.reqs, sizeof r), memcpy(bad, c.vit_req[1], sizeof bad), r[1].vit_outs = bad)

    RESET();
    r[1].n_layers = 2; /* layers 1, 2: the hidden layer 3 is absent */
    CHECK(aggregate_forward(&m, r, 3, out, a, &st) == -1);
    CHECK_EQ_INT(st.code, LION_EINVAL);
    CHECK_CONTAINS(st.msg, "request 1: ViT layer 3 missing from the request (it has layers [1, 2])");
    RESET();
    int only_hidden[] = {3};
    r[0].layers = only_hidden;
    r[0].vit_outs = &c.vit_req[0][2];
    r[0].n_layers = 1;
    CHECK(aggregate_forward(&m, r, 3, out, a, &st) == -1);
    CHECK_CONTAINS(st.msg, "request 0: ViT layer 2 missing"); /* the first fusion block's cross layer */
    CHECK(aggregate_request_check(&m, &r[0], &st) == -1);
    CHECK_CONTAINS(st.msg, "ViT layer 2 missing from the request (it has layers [3])");
    CHECK(aggregate_request_check(&m, &r[1], &st) == 0);

    RESET();
    bad[1].shape[0] = 4; /* layer 2 with a token short */
    CHECK(aggregate_forward(&m, r, 3, out, a, &st) == -1);
    CHECK_CONTAINS(st.msg, "request 1: ViT layer 2 has shape [4, 32], expected [5, 32]");
    RESET();
    bad[2] = c.vit[2]; /* the batched tensor where one request's is expected */
    CHECK(aggregate_forward(&m, r, 3, out, a, &st) == -1);
    CHECK_CONTAINS(st.msg, "ViT layer 3 has shape [3, 5, 32], expected [5, 32]");
    RESET();
    bad[0].dtype = DTYPE_I32;
    CHECK(aggregate_forward(&m, r, 3, out, a, &st) == -1);
    CHECK_CONTAINS(st.msg, "ViT layer 1 is I32, expected F32, F16 or BF16");

    /* ViT layers stored bf16 (as the vision stage may send them) give the bf16-rounded result */
    RESET();
    const size_t per = (size_t)5 * 32;
    uint16_t half[3][5 * 32];
    for (int k = 0; k < 3; k++) {
        convert_from_f32(half[k], DTYPE_BF16, c.vit_req[1][k].data, per, &st);
        bad[k].dtype = DTYPE_BF16;
        bad[k].data = half[k];
    }
    float *ref = calloc((size_t)m.num_visual * m.d_model, sizeof(float));
    CHECK_MSG(aggregate_forward(&m, &r[1], 1, out, a, &st) == 0, "%s", st.msg);
    CHECK_MSG(aggregate_forward(&m, &c.reqs[1], 1, ref, a, &st) == 0, "%s", st.msg);
    double e = testing_rel_err(out, ref, (size_t)m.num_visual * m.d_model);
    CHECK_MSG(e > 0 && e < 3e-2, "bf16 ViT layers: relative error %g", e);
    free(ref);

    RESET();
    r[2].text_ids = NULL;
    CHECK(aggregate_forward(&m, r, 3, out, a, &st) == -1);
    CHECK_CONTAINS(st.msg, "request 2: the Q-Former needs the instruction ids (9 given without data)");
    RESET();
    int32_t ids[80];
    for (int i = 0; i < 80; i++) ids[i] = i % 50;
    ids[3] = 100; /* vocab_size is 100 */
    r[1].text_ids = ids;
    r[1].text_len = 6;
    CHECK(aggregate_forward(&m, r, 3, out, a, &st) == -1);
    CHECK_CONTAINS(st.msg, "request 1: instruction token 3: id 100 outside the vocabulary of 100");
    ids[3] = -1;
    CHECK(aggregate_forward(&m, r, 3, out, a, &st) == -1);
    CHECK_CONTAINS(st.msg, "id -1 outside");
    ids[3] = 7;
    r[1].text_len = 65; /* max_position is 64 */
    CHECK(aggregate_forward(&m, r, 3, out, a, &st) == -1);
    CHECK_EQ_INT(st.code, LION_ETOOBIG);
    CHECK_CONTAINS(st.msg, "request 1: instruction of 65 tokens, the Q-Former takes 64");
    r[1].text_len = -2;
    CHECK(aggregate_forward(&m, r, 3, out, a, &st) == -1);
    CHECK_CONTAINS(st.msg, "request 1: the Q-Former needs the instruction ids (-2 given)");
    r[1].text_len = 0; /* an empty instruction is valid: queries alone for that request */
    CHECK_MSG(aggregate_forward(&m, r, 3, out, a, &st) == 0, "%s", st.msg);
    CHECK(aggregate_forward(&m, r, 0, out, a, &st) == -1);
    CHECK_CONTAINS(st.msg, "batch of 0 requests");
#undef RESET

    /* the branch entry points check their buffers too */
    CHECK(qformer_forward(&m.qformer, c.vit[2].data, 1, 5, NULL, NULL, 3, out, a, &st) == -1);
    CHECK_CONTAINS(st.msg, "qformer: batch 1, 5 image tokens, text length 3, a buffer missing");
    const float *no_cross[2] = {c.vit[1].data, NULL};
    CHECK(fusion_forward(&m.fusion, c.vit[2].data, no_cross, 1, 5, out, a, &st) == -1);
    CHECK_CONTAINS(st.msg, "fusion: batch 1, 5 tokens, a buffer missing");
    free(out);
    aggregate_free(&m);

    /* weights that do not fit the config name the tensor and its shapes */
    model_config wrong = cfg;
    wrong.aggregator.qformer.layers = 3;
    CHECK(aggregate_load(&m, &wrong, &c.w, PRECISION_F32, &st) == -1);
    CHECK_CONTAINS(st.msg, "Qformer.bert.encoder.layer.2.attention.self.query.weight");
    wrong = cfg;
    wrong.llm.d_model = 48;
    CHECK(aggregate_load(&m, &wrong, &c.w, PRECISION_F32, &st) == -1);
    CHECK_CONTAINS(st.msg, "t5_proj.weight");
    wrong.visual_input = VISUAL_INPUT_AGGREGATOR;
    CHECK(aggregate_load(&m, &wrong, &c.w, PRECISION_F32, &st) == -1);
    CHECK_CONTAINS(st.msg, "adapter_proj.2.weight");
    wrong = cfg;
    wrong.aggregator.fusion.intermediate = 64;
    CHECK(aggregate_load(&m, &wrong, &c.w, PRECISION_F32, &st) == -1);
    CHECK_CONTAINS(st.msg, "fusion_adapter.blocks.0.intermediate.dense.weight");
    wrong = cfg;
    wrong.aggregator.fusion.blocks = 3;
    wrong.aggregator.fusion.cross_layers[2] = 1;
    CHECK(aggregate_load(&m, &wrong, &c.w, PRECISION_F32, &st) == -1);
    CHECK_CONTAINS(st.msg, "fusion_adapter.blocks.2.");
    wrong = cfg;
    wrong.aggregator.qformer.heads = 3;
    CHECK(aggregate_load(&m, &wrong, &c.w, PRECISION_F32, &st) == -1);
    CHECK_CONTAINS(st.msg, "3 heads do not divide width 16");
    model_config_free(&cfg);
    case_close(&c);
}

int main(void) {
    threads_init(2);
    arena a;
    arena_init(&a, 0);
    test_tiny(&a);
    test_xl(&a);
    test_errors(&a);
    arena_free(&a);
    return testing_finish();
}
