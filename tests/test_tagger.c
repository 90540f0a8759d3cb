/* RAM tagging (services/tagger) against the PyTorch reference (fixtures/gen_tagger.py):
 * the Swin output and the logits to 1e-4 relative, identical tags, prompt strings and top-5,
 * on a tiny net (shifted, unshifted and shrunken windows), one whose head needs no
 * wordvec_proj, and Swin-L dims with RAM's full head and 4585 classes. Then the edges:
 * strict ">" at the threshold, delete_tags, and bad configs, weights and inputs. */
#include <stdlib.h>
#include <string.h>

#include "ram.h"
#include "testing.h"
#include "threads.h"

typedef struct fixture {
    weights w;
    safetensors_file *io;
    char *tag_text; /* the names, "\n" turned into NULs */
    const char **tags;
    int num_tags, delete[16], n_delete, batch;
    tensor thresholds;
} fixture;

static int fixture_open(fixture *f, const char *name) {
    lion_status st;
    memset(f, 0, sizeof *f);
    if (testing_open_model(name, "", &f->w, &f->io)) return -1;
    if (safetensors_get(f->io, "thresholds", &f->thresholds, &st)) {
        CHECK_MSG(0, "%s", st.msg);
        safetensors_close(f->io);
        weights_close(&f->w);
        return -1;
    }
    f->tag_text = strdup(safetensors_metadata_get(f->io, "tags"));
    f->num_tags = 1;
    for (char *p = f->tag_text; *p; p++) f->num_tags += *p == '\n';
    f->tags = malloc((size_t)f->num_tags * sizeof *f->tags);
    char *p = f->tag_text;
    for (int i = 0; i < f->num_tags; i++) {
        f->tags[i] = p;
        p += strcspn(p, "\n");
        if (*p) *p++ = '\0';
    }
    for (const char *d = safetensors_metadata_get(f->io, "delete_tags"); *d && f->n_delete < 16;) {
        f->delete[f->n_delete++] = (int)strtol(d, (char **)&d, 10);
        if (*d == ',') d++;
    }
    f->batch = atoi(safetensors_metadata_get(f->io, "batch"));
    return 0;
}

static void fixture_close(fixture *f) {
    free(f->tags);
    free(f->tag_text);
    safetensors_close(f->io);
    weights_close(&f->w);
}

static ram_config config_of(const fixture *f, int image, int embed, int n_stages, const int *depths, const int *heads,
                            int window, float mlp_ratio, int embed_out, int hidden, int head_heads, int layers,
                            int inter) {
    ram_config c = {.swin = {image, 4, embed, n_stages, {0}, {0}, window, mlp_ratio, 1e-5f},
                    .embed_out = embed_out, .head_hidden = hidden, .head_heads = head_heads,
                    .head_layers = layers, .head_intermediate = inter, .head_ln_eps = 1e-12f,
                    .num_tags = f->num_tags, .tags = f->tags, .thresholds = f->thresholds.data,
                    .n_delete_tags = f->n_delete, .delete_tags = f->delete};
    for (int i = 0; i < n_stages; i++) c.swin.depths[i] = depths[i], c.swin.heads[i] = heads[i];
    return c;
}

static void run_case(const char *name, const ram_config *cfg_in, fixture *f) {
    lion_status st;
    ram_model m;
    if (ram_load(&m, cfg_in, &f->w, PRECISION_F32, &st)) {
        CHECK_MSG(0, "%s: %s", name, st.msg);
        return;
    }
    tensor pixels, visual, want;
    CHECK(safetensors_get(f->io, "pixels", &pixels, &st) == 0);
    CHECK(safetensors_get(f->io, "visual", &visual, &st) == 0);
    CHECK(safetensors_get(f->io, "logits", &want, &st) == 0);
    CHECK_EQ_INT(visual.shape[1], m.swin.tokens);
    CHECK_EQ_INT(visual.shape[2], m.swin.width);
    arena a;
    arena_init(&a, 0);
    char what[96];

    size_t n_vis = (size_t)tensor_numel(&visual), n_log = (size_t)f->batch * f->num_tags;
    float *vis = calloc(n_vis, sizeof(float)), *logits = calloc(n_log, sizeof(float));
    CHECK_MSG(swin_forward(&m.swin, pixels.data, f->batch, vis, &a, &st) == 0, "%s", st.msg);
    snprintf(what, sizeof what, "%s swin", name);
    CHECK_CLOSE(vis, (const float *)visual.data, n_vis, 1e-4, what);
    CHECK_MSG(ram_logits(&m, &pixels, logits, &a, &st) == 0, "%s", st.msg);
    snprintf(what, sizeof what, "%s logits", name);
    CHECK_EQ_INT(tensor_numel(&want), n_log);
    CHECK_CLOSE(logits, (const float *)want.data, n_log, 1e-4, what);

    ram_result res[4];
    CHECK_MSG(ram_tag_images(&m, &pixels, 5, res, &a, &st) == 0, "%s", st.msg);
    for (int b = 0; b < f->batch; b++) {
        char key[32];
        snprintf(key, sizeof key, "prompt%d", b);
        const char *prompt = safetensors_metadata_get(f->io, key);
        CHECK_MSG(strcmp(res[b].prompt, prompt) == 0, "%s image %d: prompt \"%.80s\" != \"%.80s\"", name, b,
                  res[b].prompt, prompt);
        snprintf(key, sizeof key, "kept%d", b);
        CHECK_EQ_INT(res[b].n_tags, atoi(safetensors_metadata_get(f->io, key)));
        snprintf(key, sizeof key, "top%d", b);
        const char *top = safetensors_metadata_get(f->io, key);
        CHECK_EQ_INT(res[b].n_top, 5);
        for (int k = 0; k < 5; k++) {
            CHECK_EQ_INT(res[b].top[k].index, strtol(top, (char **)&top, 10));
            if (*top == ',') top++;
        }
        int ordered = 1;
        for (int k = 0; k < res[b].n_tags; k++) {
            const ram_tag *t = &res[b].tags[k];
            ordered &= (k == 0 || t->index > res[b].tags[k - 1].index) && t->score > m.thresholds[t->index];
        }
        CHECK_MSG(ordered, "%s image %d: kept tags not in class order or not above threshold", name, b);
        ram_result_free(&res[b]);
    }
    free(vis);
    free(logits);
    arena_free(&a);
    ram_free(&m);
}

/* Strict ">" at the threshold, delete_tags, the prompt of nothing, top_k bounds. */
static void test_select(const ram_config *cfg, fixture *f) {
    lion_status st;
    ram_model m;
    if (ram_load(&m, cfg, &f->w, PRECISION_F32, &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return;
    }
    const int n = m.cfg.num_tags;
    float *logits = calloc((size_t)n, sizeof(float)); /* every score exactly 0.5 */
    for (int i = 0; i < n; i++) m.thresholds[i] = 0.5f;
    m.thresholds[1] = 0.4999f;
    m.thresholds[3] = 0.1f; /* tag 3 is in delete_tags: never kept */
    m.thresholds[5] = 0.0f;
    ram_result r;
    CHECK(ram_select(&m, logits, 0, &r, &st) == 0);
    CHECK_EQ_INT(r.n_tags, 2);
    CHECK_EQ_INT(r.tags[0].index, 1);
    CHECK_EQ_INT(r.tags[1].index, 5);
    CHECK(r.tags[0].score == 0.5f);
    CHECK(strcmp(r.prompt, "man, tree") == 0);
    CHECK(r.top == NULL && r.n_top == 0);
    ram_result_free(&r);
    for (int i = 0; i < n; i++) m.thresholds[i] = 1.0f;
    logits[2] = 30.0f;
    CHECK(ram_select(&m, logits, 2, &r, &st) == 0);
    CHECK_EQ_INT(r.n_tags, 0);
    CHECK(strcmp(r.prompt, "") == 0);
    CHECK_EQ_INT(r.top[0].index, 2);
    CHECK_EQ_INT(r.top[1].index, 0); /* ties: lower class first */
    ram_result_free(&r);
    CHECK(ram_select(&m, logits, n + 1, &r, &st) == -1);
    CHECK_CONTAINS(st.msg, "top_k 51 is outside 0..50");
    CHECK(ram_select(&m, logits, -1, &r, &st) == -1);
    free(logits);

    /* inputs that are not [batch, 3, 64, 64] F32 */
    arena a;
    arena_init(&a, 0);
    float px[3 * 64 * 68] = {0}, out[50];
    int64_t wide[] = {1, 3, 64, 68}, flat[] = {3, 64, 64}, empty[] = {0, 3, 64, 64};
    tensor t = tensor_view(DTYPE_F32, px, 4, wide);
    CHECK(ram_logits(&m, &t, out, &a, &st) == -1);
    CHECK_CONTAINS(st.msg, "pixels have shape [1, 3, 64, 68], expected [batch, 3, 64, 64]");
    t = tensor_view(DTYPE_F32, px, 3, flat);
    CHECK(ram_logits(&m, &t, out, &a, &st) == -1);
    CHECK_CONTAINS(st.msg, "pixels have shape [3, 64, 64]");
    t = tensor_view(DTYPE_F32, px, 4, empty);
    CHECK(ram_logits(&m, &t, out, &a, &st) == -1);
    CHECK_CONTAINS(st.msg, "[0, 3, 64, 64]");
    t = tensor_view(DTYPE_F16, px, 4, (int64_t[]){1, 3, 64, 64});
    CHECK(ram_logits(&m, &t, out, &a, &st) == -1);
    CHECK_CONTAINS(st.msg, "pixels are F16, expected F32");
    ram_result res;
    t = tensor_view(DTYPE_F32, px, 4, (int64_t[]){1, 3, 64, 64});
    CHECK(ram_tag_images(&m, &t, 99, &res, &a, &st) == -1);
    CHECK_CONTAINS(st.msg, "top_k 99");
    arena_free(&a);
    ram_free(&m);
}

/* Configs that do not fit, tensors that are missing or of another shape. */
static void test_load_errors(const ram_config *good, fixture *f) {
    lion_status st;
    ram_model m;
    ram_config c = *good;
    c.swin.depths[3] = 3; /* the file has 2 blocks in the last stage */
    CHECK(ram_load(&m, &c, &f->w, PRECISION_F32, &st) == -1);
    CHECK_CONTAINS(st.msg, "visual_encoder.layers.3.blocks.2.norm1.weight");
    c = *good;
    c.swin.heads[1] = 3; /* 64 wide */
    CHECK(ram_load(&m, &c, &f->w, PRECISION_F32, &st) == -1);
    CHECK_CONTAINS(st.msg, "stage 1: depth 2, heads 3 do not fit width 64");
    c = *good;
    c.swin.window = 3;
    CHECK(ram_load(&m, &c, &f->w, PRECISION_F32, &st) == -1);
    CHECK_CONTAINS(st.msg, "window 3 does not divide the 16x16 grid");
    c = *good;
    c.swin.image_size = 66;
    CHECK(ram_load(&m, &c, &f->w, PRECISION_F32, &st) == -1);
    CHECK_CONTAINS(st.msg, "patch_size 4 does not divide image_size 66");
    c = *good;
    c.swin.mlp_ratio = 2.0f;
    CHECK(ram_load(&m, &c, &f->w, PRECISION_F32, &st) == -1);
    CHECK_CONTAINS(st.msg, "visual_encoder.layers.0.blocks.0.mlp.fc1.weight");
    c = *good;
    c.head_intermediate = 64;
    CHECK(ram_load(&m, &c, &f->w, PRECISION_F32, &st) == -1);
    CHECK_CONTAINS(st.msg, "tagging_head.encoder.layer.0.intermediate.dense.weight");
    c = *good;
    c.head_layers = 3;
    CHECK(ram_load(&m, &c, &f->w, PRECISION_F32, &st) == -1);
    CHECK_CONTAINS(st.msg, "tagging_head.encoder.layer.2.crossattention");
    c = *good;
    c.num_tags = 49;
    CHECK(ram_load(&m, &c, &f->w, PRECISION_F32, &st) == -1);
    CHECK_CONTAINS(st.msg, "label_embed");
    c = *good;
    c.embed_out = 48; /* as wide as the head: wordvec_proj is then optional, but it is there at 40 */
    CHECK(ram_load(&m, &c, &f->w, PRECISION_F32, &st) == -1);
    CHECK_CONTAINS(st.msg, "tagging_head.encoder.layer.0.crossattention.self.key.weight");
    c = *good;
    int bad_delete[] = {3, 50};
    c.delete_tags = bad_delete;
    c.n_delete_tags = 2;
    CHECK(ram_load(&m, &c, &f->w, PRECISION_F32, &st) == -1);
    CHECK_CONTAINS(st.msg, "delete_tags[1] = 50 is not a tag index (0..49)");
    c = *good;
    float th[50];
    memcpy(th, good->thresholds, sizeof th);
    th[7] = 1.5f;
    c.thresholds = th;
    CHECK(ram_load(&m, &c, &f->w, PRECISION_F32, &st) == -1);
    CHECK_CONTAINS(st.msg, "threshold 7 (1.5) is not in [0, 1]");
    c = *good;
    c.tags = NULL;
    CHECK(ram_load(&m, &c, &f->w, PRECISION_F32, &st) == -1);
    CHECK_CONTAINS(st.msg, "tag names and thresholds are required");

    /* a file without the head */
    weights w;
    if (weights_open(&w, testing_fixture("tagger_tiny.safetensors"), "nothing.", &st) == 0) {
        c = *good;
        CHECK(ram_load(&m, &c, &w, PRECISION_F32, &st) == -1);
        CHECK_CONTAINS(st.msg, "nothing.visual_encoder.patch_embed.proj.weight");
        weights_close(&w);
    }
}

/* model.json's tagger section maps field by field onto ram_config. */
static void test_config_from_model(void) {
    model_config mc;
    lion_status st;
    if (model_config_load(&mc, "tests/data/tiny-model", &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return;
    }
    ram_config c;
    ram_config_from_model(&c, &mc.tagger);
    CHECK_EQ_INT(c.swin.image_size, 32);
    CHECK_EQ_INT(c.swin.patch_size, 4);
    CHECK_EQ_INT(c.swin.embed_dim, 16);
    CHECK_EQ_INT(c.swin.n_stages, 2);
    CHECK_EQ_INT(c.swin.depths[1], 1);
    CHECK_EQ_INT(c.swin.heads[1], 4);
    CHECK_EQ_INT(c.swin.window, 4);
    CHECK(c.swin.mlp_ratio == 4.0f && c.swin.ln_eps == 1e-5f);
    CHECK_EQ_INT(c.embed_out, 24);
    CHECK_EQ_INT(c.head_hidden, 16);
    CHECK_EQ_INT(c.head_heads, 2);
    CHECK_EQ_INT(c.head_layers, 1);
    CHECK_EQ_INT(c.head_intermediate, 32);
    CHECK(c.head_ln_eps == 1e-12f);
    CHECK_EQ_INT(c.num_tags, 4);
    CHECK(strcmp(c.tags[3], "tree") == 0);
    CHECK(c.thresholds[0] == 0.68f);
    CHECK_EQ_INT(c.n_delete_tags, 1);
    CHECK_EQ_INT(c.delete_tags[0], 3);
    model_config_free(&mc);
}

int main(void) {
    threads_init(2);
    test_config_from_model();
    fixture f;
    if (fixture_open(&f, "tagger_tiny") == 0) {
        const int depths[] = {2, 2, 2, 2}, heads[] = {1, 2, 4, 8};
        ram_config c = config_of(&f, 64, 32, 4, depths, heads, 4, 4.0f, 40, 48, 4, 2, 96);
        CHECK_EQ_INT(f.num_tags, 50);
        CHECK_EQ_INT(f.n_delete, 2);
        run_case("tiny", &c, &f);
        test_select(&c, &f);
        test_load_errors(&c, &f);
        fixture_close(&f);
    }
    if (fixture_open(&f, "tagger_identity") == 0) {
        const int depths[] = {2, 2}, heads[] = {2, 4};
        ram_config c = config_of(&f, 32, 16, 2, depths, heads, 4, 2.5f, 24, 24, 2, 1, 40);
        run_case("identity", &c, &f);
        fixture_close(&f);
    }
    if (fixture_open(&f, "tagger_swinl") == 0) {
        const int depths[] = {2, 2, 2, 1}, heads[] = {6, 12, 24, 48};
        ram_config c = config_of(&f, 384, 192, 4, depths, heads, 12, 4.0f, 512, 768, 4, 2, 3072);
        CHECK_EQ_INT(f.num_tags, 4585);
        run_case("swinl", &c, &f);
        fixture_close(&f);
    }
    return testing_finish();
}
