/* The vision service as a separate process over ZeroMQ: it answers jobs with the
 * reference's ViT outputs (PIL preprocessing + EVA ViT, <= 1e-4 relative), in f32 and f16,
 * serves a repeated image from its feature cache, answers bad images and malformed frames
 * with errors and stays up, and exits cleanly on SIGTERM. */
#include <stdlib.h>
#include <string.h>

#include "fake_gateway.h"
#include "safetensors.h"
#include "testing.h"

static char dir[2048];

static const char *path_of(const char *name) {
    static char p[4096 + 64];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

/* Sends one vision job with the bytes of file name; the reply goes to *reply. */
static int send_image(fake_gateway *g, const char *id, const unsigned char *bytes, size_t len, int out_dtype,
                      envelope_msg *reply) {
    lion_status st;
    Lion__Envelope *job = envelope_new(LION__KIND__JOB, LION__STAGE__VISION, id, &st);
    job->task = malloc(sizeof *job->task);
    lion__task__init(job->task);
    if (out_dtype >= 0) {
        job->task->has_output_dtype = 1;
        job->task->output_dtype = (Lion__DType)out_dtype;
    }
    int64_t shape[] = {(int64_t)len};
    tensor t = tensor_view(DTYPE_U8, (void *)bytes, 1, shape);
    envelope_tensor et = {"image", &t, NULL};
    int rc = fake_gateway_call(g, job, &et, 1, reply, 60000);
    envelope_free(job);
    return rc;
}

static void check_layers(envelope_msg *m, safetensors_file *expected, const char *image, int f16) {
    static const int layers[] = {1, 2, 3};
    for (int k = 0; k < 3; k++) {
        char name[64], key[96];
        snprintf(name, sizeof name, "vit_layer_%d", layers[k]);
        snprintf(key, sizeof key, "%s.%s", image, name);
        int i = envelope_msg_find(m, name);
        CHECK_MSG(i >= 0, "%s: no output %s", image, name);
        if (i < 0) continue;
        tensor want;
        lion_status st;
        CHECK(safetensors_get(expected, key, &want, &st) == 0);
        const tensor *got = &m->tensors[i];
        CHECK_EQ_INT(got->ndim, 2);
        CHECK_EQ_INT(tensor_numel(got), tensor_numel(&want));
        CHECK_EQ_INT(got->dtype, f16 ? DTYPE_F16 : DTYPE_F32);
        if (tensor_numel(got) != tensor_numel(&want)) continue;
        size_t n = (size_t)tensor_numel(got);
        float *f = malloc(n * sizeof(float));
        convert_to_f32(f, got->data, got->dtype, n, &st);
        CHECK_CLOSE(f, (const float *)want.data, n, f16 ? 2e-3 : 1e-4, key);
        free(f);
    }
}

int main(void) {
    snprintf(dir, sizeof dir, "%s", testing_fixture("vision_service"));
    const char *bin_dir = getenv("LION_BIN_DIR");
    char bin[4096], model[4096 + 64];
    snprintf(bin, sizeof bin, "%s/lion-vision", bin_dir ? bin_dir : "build/services");
    snprintf(model, sizeof model, "%s", path_of("model"));
    const char *argv[] = {bin, "--model", model, "--threads", "1", "--replica", "vision-test", NULL};
    fake_gateway g;
    if (fake_gateway_start(&g, argv, 30000) != 0) {
        CHECK_MSG(0, "vision service did not start");
        fake_gateway_stop(&g);
        return testing_finish();
    }
    lion_status st;
    safetensors_file *expected;
    if (safetensors_open(&expected, path_of("expected.safetensors"), &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return testing_finish();
    }
    size_t len_a, len_b, len_t;
    unsigned char *a = testing_read_file(path_of("a.png"), &len_a);
    unsigned char *b = testing_read_file(path_of("b.jpg"), &len_b);
    unsigned char *trunc = testing_read_file(path_of("truncated.jpg"), &len_t);
    CHECK(a && b && trunc);

    envelope_msg m;
    CHECK(send_image(&g, "req-a", a, len_a, -1, &m) == 0);
    CHECK_EQ_INT(m.env->kind, LION__KIND__RESULT);
    CHECK(strcmp(m.env->request_id, "req-a") == 0);
    CHECK_MSG(m.env->n_trace >= 1 && strcmp(m.env->trace[m.env->n_trace - 1]->service, "vision") == 0,
              "the worker appends its trace hop");
    check_layers(&m, expected, "a.png", 0);
    envelope_msg_close(&m);

    CHECK(send_image(&g, "req-b", b, len_b, LION__DTYPE__F16, &m) == 0);
    CHECK_EQ_INT(m.env->kind, LION__KIND__RESULT);
    check_layers(&m, expected, "b.jpg", 1);
    envelope_msg_close(&m);

    /* the same bytes again: answered from the cache, identical values */
    CHECK(send_image(&g, "req-a2", a, len_a, -1, &m) == 0);
    CHECK_EQ_INT(m.env->kind, LION__KIND__RESULT);
    check_layers(&m, expected, "a.png", 0);
    envelope_msg_close(&m);

    /* a truncated JPEG and garbage bytes: an ERROR naming the problem, the worker stays up */
    CHECK(send_image(&g, "req-trunc", trunc, len_t, -1, &m) == 0);
    CHECK_EQ_INT(m.env->kind, LION__KIND__ERROR);
    CHECK(m.env->error && m.env->error->code == LION_EFORMAT);
    if (m.env->error) CHECK_CONTAINS(m.env->error->message, "truncated JPEG");
    envelope_msg_close(&m);
    CHECK(send_image(&g, "req-junk", (const unsigned char *)"not an image", 12, -1, &m) == 0);
    CHECK_EQ_INT(m.env->kind, LION__KIND__ERROR);
    if (m.env->error) CHECK_CONTAINS(m.env->error->message, "unknown image format");
    envelope_msg_close(&m);

    /* an unsupported output dtype is the caller's error */
    CHECK(send_image(&g, "req-i8", a, len_a, LION__DTYPE__I8, &m) == 0);
    CHECK_EQ_INT(m.env->kind, LION__KIND__ERROR);
    if (m.env->error) CHECK_CONTAINS(m.env->error->message, "output_dtype");
    envelope_msg_close(&m);

    /* a malformed frame at the socket: garbage envelope bytes, then a valid job still works */
    static const char garbage[] = "\xff\xff\xff garbage";
    const void *frames[] = {garbage};
    size_t lens[] = {sizeof garbage - 1};
    CHECK(fake_gateway_send_raw(&g, frames, lens, 1) == 0);
    CHECK(send_image(&g, "req-after", b, len_b, -1, &m) == 0);
    CHECK(m.env && m.env->kind == LION__KIND__RESULT && strcmp(m.env->request_id, "req-after") == 0);
    envelope_msg_close(&m);

    CHECK_EQ_INT(fake_gateway_stop(&g), 0);
    free(a), free(b), free(trunc);
    safetensors_close(expected);
    return testing_finish();
}
