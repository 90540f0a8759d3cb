/* EVA ViT forward against the PyTorch reference (fixtures/gen_vit.py): tiny dims, tiny
 * with bf16-stored weights, and true ViT-g dims truncated to two blocks. Tolerance 1e-4
 * relative (f32 compute; the bf16 case compares against the reference on the same
 * rounded weights). */
#include <stdlib.h>
#include <string.h>

#include "testing.h"
#include "threads.h"
#include "vit.h"

static void run_case(const char *name, int image, int patch, int dim, int depth, int heads, int mlp, int batch,
                     const int *layers, int n_out) {
    char key[32];
    lion_status st;
    weights w;
    safetensors_file *io;
    if (testing_open_model(name, "visual_encoder.", &w, &io)) return;
    vit_config cfg = {image, patch, dim, depth, heads, mlp, 1e-6f};
    vit_model m;
    CHECK_MSG(vit_load(&m, &cfg, &w, &st) == 0, "%s: %s", name, st.msg);
    tensor pixels;
    CHECK(safetensors_get(io, "pixels", &pixels, &st) == 0);
    size_t per = (size_t)batch * m.tokens * dim;
    float *outs[4];
    for (int k = 0; k < n_out; k++) outs[k] = calloc(per, sizeof(float));
    arena a;
    arena_init(&a, 0);
    CHECK_MSG(vit_forward(&m, pixels.data, batch, layers, n_out, outs, &a, &st) == 0, "%s", st.msg);
    for (int k = 0; k < n_out; k++) {
        tensor want;
        snprintf(key, sizeof key, "block%d", layers[k]);
        CHECK(safetensors_get(io, key, &want, &st) == 0 && (size_t)tensor_numel(&want) == per);
        char what[96];
        snprintf(what, sizeof what, "%s block %d", name, layers[k]);
        CHECK_CLOSE(outs[k], (const float *)want.data, per, 1e-4, what);
        free(outs[k]);
    }
    /* asking for a block the model does not have is an error, not a crash */
    int bad = depth;
    CHECK(vit_forward(&m, pixels.data, batch, &bad, 1, outs, &a, &st) == -1);
    CHECK_CONTAINS(st.msg, "requested block");
    arena_free(&a);
    vit_free(&m);
    safetensors_close(io);
    weights_close(&w);
}

static void test_shape_errors(void) {
    lion_status st;
    weights w;
    if (weights_open(&w, testing_fixture("vit_tiny.safetensors"), "visual_encoder.", &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return;
    }
    vit_config wrong = {32, 8, 64, 4, 4, 256, 1e-6f}; /* MLP width differs from the file */
    vit_model m;
    CHECK(vit_load(&m, &wrong, &w, &st) == -1);
    CHECK_CONTAINS(st.msg, "blocks.0.mlp.fc1.weight");
    CHECK_CONTAINS(st.msg, "[256, 64]");
    vit_config deeper = {32, 8, 64, 9, 4, 172, 1e-6f}; /* more blocks than the file holds */
    CHECK(vit_load(&m, &deeper, &w, &st) == -1);
    CHECK_CONTAINS(st.msg, "blocks.4.");
    weights_close(&w);
}

int main(void) {
    threads_init(2);
    const int tiny_layers[] = {1, 2, 3}, bf16_layers[] = {0, 2}, g_layers[] = {0, 1};
    run_case("vit_tiny", 32, 8, 64, 4, 4, 172, 2, tiny_layers, 3);
    run_case("vit_tiny_bf16", 32, 8, 64, 3, 4, 172, 1, bf16_layers, 2);
    run_case("vit_vitg", 224, 14, 1408, 2, 16, 6144, 1, g_layers, 2);
    test_shape_errors();
    return testing_finish();
}
