/* safetensors reader and writer: files written by Python (tests/fixtures/gen_safetensors.py),
 * one corrupted file per error the reader must report, and a write/read round trip. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "testing.h"

static char *read_whole(const char *path, size_t *len) { return (char *)testing_read_file(path, len); }

static const char *fx(const char *name) {
    static char path[4096];
    snprintf(path, sizeof path, "%s", testing_fixture(name));
    return path;
}

/* Conversion must be exact: equal values, NaN where torch has NaN, and the sign of zero. */
static void check_same_floats(const float *got, const float *want, size_t n, const char *what) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        int same = isnan(want[i]) ? isnan(got[i]) : (got[i] == want[i] && signbit(got[i]) == signbit(want[i]));
        if (!same && bad++ == 0)
            testing_fail(__FILE__, __LINE__, "%s[%zu] = %.9g, torch says %.9g", what, i, got[i], want[i]);
    }
    if (bad == 0) testing_passed++;
}

static void check_f32_values(safetensors_file *f, const char *name) {
    char file[256];
    snprintf(file, sizeof file, "safetensors/%s.f32", name);
    size_t len = 0;
    float *want = (float *)read_whole(fx(file), &len);
    CHECK_MSG(want != NULL, "missing fixture %s", file);
    if (!want) return;
    tensor t;
    lion_status st = {0};
    CHECK_EQ_INT(safetensors_load_f32(f, name, 0, NULL, &t, &st), 0);
    CHECK_EQ_INT(t.dtype, DTYPE_F32);
    CHECK_EQ_INT(t.owns_data, 1);
    CHECK_EQ_INT(tensor_nbytes(&t), len);
    if (tensor_nbytes(&t) == len) check_same_floats(t.data, want, len / 4, name);
    tensor_free(&t);
    free(want);
}

static void check_int_payload(safetensors_file *f, const char *name, dtype dt) {
    char file[256];
    snprintf(file, sizeof file, "safetensors/%s.bin", name);
    size_t len = 0;
    char *want = read_whole(fx(file), &len);
    CHECK_MSG(want != NULL, "missing fixture %s", file);
    if (!want) return;
    tensor t;
    lion_status st = {0};
    CHECK_EQ_INT(safetensors_get_checked(f, name, (int)dt, 0, NULL, &t, &st), 0);
    CHECK_EQ_INT(t.owns_data, 0);
    CHECK_EQ_INT(tensor_nbytes(&t), len);
    CHECK(tensor_nbytes(&t) == len && memcmp(t.data, want, len) == 0);
    free(want);
}

static void test_valid_file(void) {
    lion_status st = {0};
    safetensors_file *f = NULL;
    CHECK_EQ_INT(safetensors_open(&f, fx("safetensors/valid.safetensors"), &st), 0);
    CHECK_MSG(f != NULL, "open failed: %s", st.msg);
    if (!f) return;

    static const char *names[] = {"bytes_u8", "empty", "ids_i32", "ids_i64", "ids_i8",
                                  "model.blocks.0.attn.qkv.weight", "scalar", "w_bf16", "w_f16", "w_f32"};
    CHECK_EQ_INT(safetensors_count(f), 10);
    for (size_t i = 0; i < 10 && i < safetensors_count(f); i++)
        CHECK_MSG(strcmp(safetensors_name_at(f, i), names[i]) == 0, "name %zu: %s, expected %s", i,
                  safetensors_name_at(f, i), names[i]);
    CHECK(safetensors_name_at(f, 10) == NULL);
    CHECK(safetensors_has(f, "w_f16"));
    CHECK(!safetensors_has(f, "w_f6"));

    CHECK_EQ_INT(safetensors_metadata_count(f), 2);
    CHECK(safetensors_metadata_get(f, "format") && strcmp(safetensors_metadata_get(f, "format"), "pt") == 0);
    CHECK(safetensors_metadata_get(f, "stage") && strcmp(safetensors_metadata_get(f, "stage"), "vision") == 0);
    CHECK(safetensors_metadata_get(f, "nope") == NULL);
    const char *k, *v;
    safetensors_metadata_at(f, 1, &k, &v);
    CHECK(k && v && strcmp(k, "stage") == 0 && strcmp(v, "vision") == 0);

    /* zero-copy view */
    tensor t;
    int64_t shape34[] = {3, 4};
    CHECK_EQ_INT(safetensors_get_checked(f, "w_f32", DTYPE_F32, 2, shape34, &t, &st), 0);
    CHECK_EQ_INT(t.owns_data, 0);
    CHECK_EQ_INT(t.ndim, 2);
    CHECK_EQ_INT(t.shape[1], 4);
    CHECK_EQ_INT((uintptr_t)t.data % 4, 0);

    check_f32_values(f, "w_f32");
    check_f32_values(f, "w_f16");
    check_f32_values(f, "w_bf16");
    check_f32_values(f, "scalar");
    check_f32_values(f, "model.blocks.0.attn.qkv.weight");
    check_int_payload(f, "ids_i8", DTYPE_I8);
    check_int_payload(f, "bytes_u8", DTYPE_U8);
    check_int_payload(f, "ids_i32", DTYPE_I32);
    check_int_payload(f, "ids_i64", DTYPE_I64);

    CHECK_EQ_INT(safetensors_get(f, "scalar", &t, &st), 0);
    CHECK_EQ_INT(t.ndim, 0);
    CHECK_EQ_INT(tensor_numel(&t), 1);
    CHECK(*(const float *)t.data == 3.5f);

    int64_t shape_any5[] = {-1, 5};
    CHECK_EQ_INT(safetensors_load_f32(f, "empty", 2, shape_any5, &t, &st), 0);
    CHECK_EQ_INT(t.shape[0], 0);
    CHECK_EQ_INT(tensor_numel(&t), 0);
    tensor_free(&t);

    /* the expected-shape variants and their messages */
    int64_t shape43[] = {4, 3}, shape_any4[] = {-1, 4};
    CHECK_EQ_INT(safetensors_get_checked(f, "w_f32", SAFETENSORS_ANY_DTYPE, 2, shape_any4, &t, &st), 0);
    CHECK_EQ_INT(safetensors_get_checked(f, "w_f32", DTYPE_F32, 2, shape43, &t, &st), -1);
    CHECK_EQ_INT(st.code, LION_EFORMAT);
    CHECK_CONTAINS(st.msg, "valid.safetensors: tensor 'w_f32': expected shape [4, 3], found [3, 4]");
    CHECK_EQ_INT(safetensors_get_checked(f, "w_f32", DTYPE_F32, 1, shape43, &t, &st), -1);
    CHECK_CONTAINS(st.msg, "tensor 'w_f32': expected shape [4], found [3, 4]");
    CHECK_EQ_INT(safetensors_get_checked(f, "w_f32", DTYPE_F16, 2, shape34, &t, &st), -1);
    CHECK_CONTAINS(st.msg, "valid.safetensors: tensor 'w_f32': expected dtype F16, found F32");
    CHECK_EQ_INT(safetensors_get(f, "w_f64", &t, &st), -1);
    CHECK_EQ_INT(st.code, LION_ENOTFOUND);
    CHECK_CONTAINS(st.msg, "valid.safetensors: tensor 'w_f64' not found");
    CHECK_EQ_INT(safetensors_load_f32(f, "ids_i32", 0, NULL, &t, &st), -1);
    CHECK_CONTAINS(st.msg, "tensor 'ids_i32': dtype I32 cannot be loaded as F32");
    CHECK_EQ_INT(safetensors_load_f32(f, "w_f16", 2, shape34, &t, &st), -1);
    CHECK_CONTAINS(st.msg, "tensor 'w_f16': expected shape [3, 4], found [5, 7]");
    CHECK(t.data == NULL);

    safetensors_close(f);
}

static void test_small_valid_files(void) {
    lion_status st = {0};
    safetensors_file *f = NULL;
    CHECK_EQ_INT(safetensors_open(&f, fx("safetensors/empty_header.safetensors"), &st), 0);
    if (f) {
        CHECK_EQ_INT(safetensors_count(f), 0);
        CHECK_EQ_INT(safetensors_metadata_count(f), 0);
        CHECK(!safetensors_has(f, "x"));
        safetensors_close(f);
    }
    CHECK_EQ_INT(safetensors_open(&f, fx("safetensors/no_metadata.safetensors"), &st), 0);
    if (f) {
        tensor t;
        CHECK_EQ_INT(safetensors_load_f32(f, "x", 0, NULL, &t, &st), 0);
        CHECK(t.data && ((float *)t.data)[0] == 1.0f && ((float *)t.data)[1] == 1.0f);
        tensor_free(&t);
        safetensors_close(f);
    }
}

static void check_open_fails(const char *file, int code, const char *needle) {
    lion_status st = {0};
    safetensors_file *f = (safetensors_file *)1;
    int rc = safetensors_open(&f, file, &st);
    CHECK_MSG(rc == -1, "%s: opened, expected an error containing \"%s\"", file, needle);
    CHECK(f == NULL);
    CHECK_MSG(st.code == code, "%s: code %s, expected %s (%s)", file, lion_code_name(st.code),
              lion_code_name(code), st.msg);
    CHECK_CONTAINS(st.msg, needle);
    /* every message starts with the file's path */
    CHECK_MSG(strncmp(st.msg, file, strlen(file)) == 0, "message does not start with the path: %s", st.msg);
    if (rc == 0) safetensors_close(f);
}

static void test_corrupt_files(void) {
    static const struct {
        const char *name;
        int code;
        const char *needle;
    } cases[] = {
        {"short", LION_EFORMAT, ": file is 5 bytes, too short for the 8-byte header length"},
        {"header_len_past_file", LION_EFORMAT, ": header length 1000 runs past the end of the file (66 bytes)"},
        {"header_len_huge", LION_ETOOBIG, ": header length 9223372036854775808 exceeds the limit of 100000000 bytes"},
        {"header_empty", LION_EFORMAT, ": header is not a JSON object"},
        {"not_json", LION_EFORMAT, ": header is not valid JSON (near byte"},
        {"not_object", LION_EFORMAT, ": header is not a JSON object"},
        {"trailing_bytes", LION_EFORMAT, ": unexpected bytes after the JSON header (at byte 55)"},
        {"entry_not_object", LION_EFORMAT, ": tensor 'a': entry is not an object"},
        {"offsets_out_of_file", LION_EFORMAT,
         ": tensor 'b': data_offsets [8, 24] run past the end of the data section (16 bytes)"},
        {"offsets_reversed", LION_EFORMAT, ": tensor 'a': data_offsets [8, 4] end before they begin"},
        {"offsets_not_pair", LION_EFORMAT, ": tensor 'a': \"data_offsets\" must be [begin, end]"},
        {"overlap", LION_EFORMAT, ": tensors 'a' [0, 16) and 'b' [8, 16) overlap"},
        {"size_mismatch", LION_EFORMAT, ": tensor 'a': F32 [2, 3] needs 24 bytes but data_offsets [0, 20] hold 20"},
        {"unknown_dtype", LION_EFORMAT, ": tensor 'a': unknown dtype 'Q4'"},
        {"unsupported_dtype", LION_EFORMAT, ": tensor 'a': dtype F64 is not supported"},
        {"negative_dim", LION_EFORMAT, ": tensor 'a': shape[0] is -1, expected a non-negative integer"},
        {"fractional_dim", LION_EFORMAT, ": tensor 'a': shape[0] is 2.5, expected a non-negative integer"},
        {"too_many_dims", LION_EFORMAT, ": tensor 'a': 9 dimensions, at most 8 are supported"},
        {"shape_overflow", LION_EFORMAT,
         ": tensor 'a': shape [1099511627776, 1099511627776] overflows the element count"},
        {"duplicate_name", LION_EFORMAT, ": tensor 'a' appears twice in the header"},
        {"missing_offsets", LION_EFORMAT, ": tensor 'a': missing \"data_offsets\""},
        {"missing_dtype", LION_EFORMAT, ": tensor 'a': missing \"dtype\""},
        {"missing_shape", LION_EFORMAT, ": tensor 'a': missing \"shape\""},
        {"misaligned", LION_EFORMAT, ": tensor 'a': data starts at file offset"},
        {"metadata_not_string", LION_EFORMAT, ": __metadata__ 'k' is not a string"},
        {"metadata_not_object", LION_EFORMAT, ": \"__metadata__\" is not an object"},
        {"truncated", LION_EFORMAT, ": tensor 'bytes_u8': data_offsets"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[256];
        snprintf(name, sizeof name, "safetensors/bad_%s.safetensors", cases[i].name);
        check_open_fails(fx(name), cases[i].code, cases[i].needle);
    }
    check_open_fails(fx("safetensors/bad_truncated.safetensors"), LION_EFORMAT, "run past the end of the data section");
    check_open_fails(fx("safetensors/no_such_file.safetensors"), LION_EIO, ": cannot open: No such file or directory");
    check_open_fails(fx("safetensors"), LION_EIO, ": not a regular file");
}

static void test_write_round_trip(void) {
    lion_status st = {0};
    float a[6] = {1, -2, 3.25f, 0, -0.0f, 1e-20f};
    uint16_t h[3] = {f32_to_f16(0.5f), f32_to_f16(-1024), f32_to_f16(65504)};
    uint16_t b[2] = {f32_to_bf16(3.0f), f32_to_bf16(-1e30f)};
    int64_t ids[2] = {INT64_MIN, 42};
    uint8_t u[3] = {1, 2, 3};
    float s = 7;
    int64_t sa[] = {2, 3}, sh[] = {3}, sb[] = {1, 2}, si[] = {2}, su[] = {3}, se[] = {4, 0};
    tensor ta = tensor_view(DTYPE_F32, a, 2, sa), th = tensor_view(DTYPE_F16, h, 1, sh),
           tb = tensor_view(DTYPE_BF16, b, 2, sb), ti = tensor_view(DTYPE_I64, ids, 1, si),
           tu = tensor_view(DTYPE_U8, u, 1, su), ts = tensor_view(DTYPE_F32, &s, 0, NULL),
           te = tensor_view(DTYPE_F32, NULL, 2, se);
    /* u8 first and odd sizes: the writer must still align the wider dtypes */
    safetensors_item items[] = {{"u", &tu}, {"half", &th}, {"a", &ta}, {"bf", &tb}, {"ids", &ti}, {"s", &ts},
                                {"empty", &te}};
    safetensors_kv meta[] = {{"format", "pt"}, {"note", "written by \"test\"\n"}};
    const char *path = fx("safetensors/written.safetensors");
    CHECK_EQ_INT(safetensors_write(path, items, 7, meta, 2, &st), 0);
    CHECK_MSG(st.msg[0] == 0, "%s", st.msg);

    size_t len = 0;
    char *raw = read_whole(path, &len);
    CHECK(raw != NULL && len > 8);
    if (raw && len > 8) {
        uint64_t n = 0;
        for (int i = 7; i >= 0; i--) n = n << 8 | (uint8_t)raw[i];
        CHECK_EQ_INT(n % 8, 0);
        CHECK(n + 8 <= len && raw[8] == '{' && (raw[8 + n - 1] == '}' || raw[8 + n - 1] == ' '));
        /* header + 24 + 16 + 4 + 6 + 4 + 3 data bytes */
        CHECK_EQ_INT(len, 8 + n + 16 + 24 + 4 + 0 + 6 + 4 + 3);
    }
    free(raw);

    safetensors_file *f = NULL;
    CHECK_EQ_INT(safetensors_open(&f, path, &st), 0);
    CHECK_MSG(f != NULL, "%s", st.msg);
    if (!f) return;
    CHECK_EQ_INT(safetensors_count(f), 7);
    CHECK(safetensors_metadata_get(f, "note") && strcmp(safetensors_metadata_get(f, "note"), "written by \"test\"\n") == 0);
    tensor t;
    CHECK_EQ_INT(safetensors_get_checked(f, "a", DTYPE_F32, 2, sa, &t, &st), 0);
    CHECK(memcmp(t.data, a, sizeof a) == 0);
    CHECK_EQ_INT(safetensors_get_checked(f, "half", DTYPE_F16, 1, sh, &t, &st), 0);
    CHECK(memcmp(t.data, h, sizeof h) == 0);
    CHECK_EQ_INT(safetensors_get_checked(f, "ids", DTYPE_I64, 1, si, &t, &st), 0);
    CHECK(memcmp(t.data, ids, sizeof ids) == 0);
    CHECK_EQ_INT(safetensors_get_checked(f, "u", DTYPE_U8, 1, su, &t, &st), 0);
    CHECK(memcmp(t.data, u, sizeof u) == 0);
    CHECK_EQ_INT(safetensors_get_checked(f, "s", DTYPE_F32, 0, NULL, &t, &st), 0);
    CHECK_EQ_INT(t.ndim, 0);
    CHECK(*(float *)t.data == 7.0f);
    CHECK_EQ_INT(safetensors_get_checked(f, "empty", DTYPE_F32, 2, se, &t, &st), 0);
    CHECK_EQ_INT(safetensors_load_f32(f, "bf", 2, sb, &t, &st), 0);
    CHECK(t.data && ((float *)t.data)[0] == 3.0f && ((float *)t.data)[1] == bf16_to_f32(f32_to_bf16(-1e30f)));
    tensor_free(&t);
    safetensors_close(f);

    /* writer refusals */
    safetensors_item dup[] = {{"a", &ta}, {"a", &th}};
    CHECK_EQ_INT(safetensors_write(path, dup, 2, NULL, 0, &st), -1);
    CHECK_CONTAINS(st.msg, "tensor 'a' given twice");
    safetensors_item reserved[] = {{"__metadata__", &ta}};
    CHECK_EQ_INT(safetensors_write(path, reserved, 1, NULL, 0, &st), -1);
    CHECK_CONTAINS(st.msg, "tensor name '__metadata__' is not allowed");
    safetensors_kv dupmeta[] = {{"k", "1"}, {"k", "2"}};
    CHECK_EQ_INT(safetensors_write(path, items, 1, dupmeta, 2, &st), -1);
    CHECK_CONTAINS(st.msg, "metadata key 'k' given twice");
    CHECK_EQ_INT(safetensors_write("/nonexistent-dir/x.safetensors", items, 1, NULL, 0, &st), -1);
    CHECK_EQ_INT(st.code, LION_EIO);
    CHECK_CONTAINS(st.msg, "/nonexistent-dir/x.safetensors.tmp: cannot create");
    /* the earlier good file is still intact after refused writes */
    CHECK_EQ_INT(safetensors_open(&f, path, &st), 0);
    if (f) {
        CHECK_EQ_INT(safetensors_count(f), 7);
        safetensors_close(f);
    }

    /* a file with no tensors and no metadata is the smallest valid one */
    const char *empty_path = fx("safetensors/written_empty.safetensors");
    CHECK_EQ_INT(safetensors_write(empty_path, NULL, 0, NULL, 0, &st), 0);
    CHECK_EQ_INT(safetensors_open(&f, empty_path, &st), 0);
    if (f) {
        CHECK_EQ_INT(safetensors_count(f), 0);
        safetensors_close(f);
    }
}

static void write_bytes(const char *path, const char *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

/* Every prefix of a valid file, and the valid file with each header byte replaced: open
 * either succeeds or fails with a message that starts with the path; never a crash (the
 * sanitizer build checks every read). */
static void test_mutations(void) {
    size_t len = 0;
    char *whole = read_whole(fx("safetensors/valid.safetensors"), &len);
    CHECK(whole != NULL && len > 8);
    if (!whole) return;
    char path[4096];
    snprintf(path, sizeof path, "%s", fx("safetensors/mutated.safetensors"));
    int opened = 0, refused = 0, unnamed = 0;
    for (size_t cut = 0; cut < len; cut++) {
        write_bytes(path, whole, cut);
        safetensors_file *f = NULL;
        lion_status st = {0};
        if (safetensors_open(&f, path, &st) == 0) {
            opened++;
            safetensors_close(f);
        } else {
            refused++;
            unnamed += strncmp(st.msg, path, strlen(path)) != 0;
        }
    }
    CHECK_EQ_INT(opened, 0);
    CHECK_EQ_INT(refused, len);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = header_len << 8 | (uint8_t)whole[i];
    static const char replacements[] = {'9', '-', '"', '}', 0, (char)0xff};
    for (size_t at = 0; at < 8 + header_len && at < len; at++)
        for (size_t r = 0; r < sizeof replacements; r++) {
            char saved = whole[at];
            whole[at] = replacements[r];
            write_bytes(path, whole, len);
            whole[at] = saved;
            safetensors_file *f = NULL;
            lion_status st = {0};
            if (safetensors_open(&f, path, &st) == 0) {
                /* still valid: every tensor must be usable */
                for (size_t i = 0; i < safetensors_count(f); i++) {
                    tensor t;
                    if (safetensors_get(f, safetensors_name_at(f, i), &t, &st) == 0 && tensor_nbytes(&t) > 0) {
                        volatile char last = ((const char *)t.data)[tensor_nbytes(&t) - 1];
                        (void)last;
                    }
                }
                safetensors_close(f);
            } else {
                unnamed += strncmp(st.msg, path, strlen(path)) != 0;
            }
        }
    CHECK_EQ_INT(unnamed, 0);
    free(whole);
    remove(path);
}

int main(void) {
    test_valid_file();
    test_small_valid_files();
    test_corrupt_files();
    test_write_round_trip();
    test_mutations();
    return testing_finish();
}
