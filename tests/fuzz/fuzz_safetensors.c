/* fuzz_safetensors.c - the safetensors reader (common/model/safetensors.h) on hostile files.
 *
 * Input: a whole .safetensors file (8-byte little-endian header length, JSON header, data).
 * safetensors_open reads from a path (it maps the file), so the input is written to a file
 * in this process's temporary directory first. An accepted file is used the way the stages
 * bind weights: every tensor looked up by name and by index, its view read end to end,
 * floating ones converted with safetensors_load_f32, the metadata iterated; then written back
 * with safetensors_write and read again, which must give the same tensors and metadata. */
#include "fuzz_util.h"
#include "safetensors.h"

static void read_all(const tensor *t) {
    const uint8_t *b = t->data;
    uint8_t x = 0;
    for (size_t i = 0, n = tensor_nbytes(t); i < n; i++) x ^= b[i];
    (void)x;
}

static void round_trip(const safetensors_file *f) {
    const size_t n = safetensors_count(f), n_meta = safetensors_metadata_count(f);
    safetensors_item *items = calloc(n + 1, sizeof *items);
    tensor *views = calloc(n + 1, sizeof *views);
    safetensors_kv *meta = calloc(n_meta + 1, sizeof *meta);
    if (!items || !views || !meta) abort();
    lion_status st;
    for (size_t i = 0; i < n; i++) {
        items[i].name = safetensors_name_at(f, i);
        FUZZ_CHECK(safetensors_get(f, items[i].name, &views[i], &st) == 0);
        items[i].t = &views[i];
    }
    for (size_t i = 0; i < n_meta; i++) safetensors_metadata_at(f, i, &meta[i].key, &meta[i].value);
    char path[512];
    snprintf(path, sizeof path, "%s/back.safetensors", fuzz_dir());
    /* the writer refuses names the reader takes ("" for one): nothing to compare then */
    if (safetensors_write(path, items, n, meta, n_meta, &st) == 0) {
        safetensors_file *g = NULL;
        int rc = safetensors_open(&g, path, &st);
        if (rc != 0) fprintf(stderr, "reading back a written file failed: %s\n", st.msg);
        FUZZ_CHECK(rc == 0);
        FUZZ_CHECK(safetensors_count(g) == n && safetensors_metadata_count(g) == n_meta);
        for (size_t i = 0; i < n; i++) {
            tensor t;
            FUZZ_CHECK(strcmp(safetensors_name_at(g, i), items[i].name) == 0);
            FUZZ_CHECK(safetensors_get(g, items[i].name, &t, &st) == 0);
            FUZZ_CHECK(t.dtype == views[i].dtype && t.ndim == views[i].ndim);
            for (int d = 0; d < t.ndim; d++) FUZZ_CHECK(t.shape[d] == views[i].shape[d]);
            size_t bytes = tensor_nbytes(&t);
            FUZZ_CHECK(bytes == tensor_nbytes(&views[i]));
            if (bytes) FUZZ_CHECK(memcmp(t.data, views[i].data, bytes) == 0);
        }
        for (size_t i = 0; i < n_meta; i++) {
            const char *v = safetensors_metadata_get(g, meta[i].key);
            FUZZ_CHECK(v && strcmp(v, meta[i].value) == 0);
        }
        safetensors_close(g);
    }
    remove(path);
    free(items);
    free(views);
    free(meta);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file("in.safetensors", data, size);
    safetensors_file *f = NULL;
    lion_status st = {0};
    if (safetensors_open(&f, path, &st) != 0) {
        FUZZ_CHECK(f == NULL && st.msg[0] != 0);
        return 0;
    }
    const size_t n = safetensors_count(f);
    for (size_t i = 0; i < n; i++) {
        const char *name = safetensors_name_at(f, i);
        FUZZ_CHECK(name && safetensors_has(f, name));
        if (i) FUZZ_CHECK(strcmp(safetensors_name_at(f, i - 1), name) < 0);
        tensor t;
        FUZZ_CHECK(safetensors_get_checked(f, name, SAFETENSORS_ANY_DTYPE, 0, NULL, &t, &st) == 0);
        FUZZ_CHECK(tensor_nbytes(&t) <= size);
        read_all(&t);
        tensor f32;
        if (safetensors_load_f32(f, name, t.ndim, t.shape, &f32, &st) == 0) {
            FUZZ_CHECK(tensor_numel(&f32) == tensor_numel(&t));
            read_all(&f32);
            tensor_free(&f32);
        }
    }
    FUZZ_CHECK(safetensors_name_at(f, n) == NULL);
    for (size_t i = 0; i < safetensors_metadata_count(f); i++) {
        const char *k, *v;
        safetensors_metadata_at(f, i, &k, &v);
        FUZZ_CHECK(k && v && safetensors_metadata_get(f, k) != NULL);
    }
    round_trip(f);
    safetensors_close(f);
    return 0;
}
