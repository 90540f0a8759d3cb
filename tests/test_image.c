/* test_image.c - image decoding and preprocessing against Pillow 9.4 (gen_image.py).
 *
 * For every generated image: the decode equals Pillow's convert("RGB") byte for byte (PNG
 * and JPEG alike: Pillow links the same system libjpeg-turbo and asks it for the same
 * colour space with the same defaults, so no tolerance is needed), the 224 bicubic and
 * 384 bilinear resizes equal Pillow's byte for byte, and the normalized tensors are within
 * 1e-6 of torch's. Then every refusal, with the words of its message. */
#include "image.h"
#include "testing.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint8_t *read_file(const char *name, size_t *len) { return testing_read_file(testing_fixture(name), len); }

static uint8_t *read_fixture(const char *stem, const char *suffix, size_t *len) {
    char name[512];
    snprintf(name, sizeof name, "image/%s%s", stem, suffix);
    return read_file(name, len);
}

/* Index of the first differing byte, or -1. */
static long first_diff(const uint8_t *a, const uint8_t *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) return (long)i;
    return -1;
}

static int tensors_checked;

static void check_resize(const char *name, const image *rgb, int size, image_filter filter,
                         const char *suffix, const char *tensor_suffix, const float *mean,
                         const float *std) {
    image out;
    lion_status st = {0};
    size_t want_len = 0, tensor_len = 0;
    uint8_t *want = read_fixture(name, suffix, &want_len);
    /* Only some images carry reference tensors (see gen_image.py). */
    float *want_t = (float *)read_fixture(name, tensor_suffix, &tensor_len);
    CHECK_MSG(want != NULL, "%s: missing fixture %s", name, suffix);
    int rc = image_resize(rgb, size, size, filter, &out, &st);
    CHECK_MSG(rc == 0, "%s: resize failed: %s", name, st.msg);
    if (rc == 0 && want) {
        size_t n = (size_t)size * size * 3;
        CHECK_EQ_INT(want_len, n);
        long d = want_len == n ? first_diff(out.data, want, n) : -1;
        CHECK_MSG(d < 0, "%s%s: byte %ld (pixel %ld, channel %ld) is %d, Pillow has %d", name,
                  suffix, d, d / 3, d % 3, d >= 0 ? out.data[d] : 0, d >= 0 ? want[d] : 0);
    }
    if (rc == 0 && want_t) {
        size_t n = (size_t)size * size * 3;
        float *t = malloc(n * sizeof(float));
        image_normalize(&out, mean, std, t);
        CHECK_EQ_INT(tensor_len, n * sizeof(float));
        double err = tensor_len == n * sizeof(float) ? testing_max_abs_err(t, want_t, n) : 1.0;
        CHECK_MSG(err <= 1e-6, "%s%s: max abs error %.3g > 1e-6", name, tensor_suffix, err);
        free(t);
        tensors_checked++;
    }
    image_free(&out);
    free(want);
    free(want_t);
}

static int check_image(const char *name, const char *file, int w, int h) {
    char rel[512];
    snprintf(rel, sizeof rel, "image/%s", file);
    size_t len = 0, want_len = 0;
    uint8_t *bytes = read_file(rel, &len);
    uint8_t *want = read_fixture(name, ".rgb", &want_len);
    CHECK_MSG(bytes && want, "%s: missing fixture", name);
    if (!bytes || !want) {
        free(bytes);
        free(want);
        return -1;
    }
    image img;
    lion_status st = {0};
    int rc = image_decode(bytes, len, NULL, &img, &st);
    CHECK_MSG(rc == 0, "%s: decode failed: %s", name, st.msg);
    if (rc == 0) {
        CHECK_EQ_INT(img.width, w);
        CHECK_EQ_INT(img.height, h);
        size_t n = (size_t)w * h * 3;
        CHECK_EQ_INT(want_len, n);
        if (img.width == w && img.height == h && want_len == n) {
            long d = first_diff(img.data, want, n);
            CHECK_MSG(d < 0, "%s: decoded byte %ld (x %ld, y %ld, channel %ld) is %d, Pillow has %d",
                      name, d, (d / 3) % w, d / 3 / w, d % 3, d >= 0 ? img.data[d] : 0,
                      d >= 0 ? want[d] : 0);
        }
        check_resize(name, &img, 224, IMAGE_FILTER_BICUBIC, ".bicubic224.rgb", ".clip224.f32",
                     image_clip_mean, image_clip_std);
        check_resize(name, &img, 384, IMAGE_FILTER_BILINEAR, ".bilinear384.rgb",
                     ".imagenet384.f32", image_imagenet_mean, image_imagenet_std);
    }
    image_free(&img);
    free(bytes);
    free(want);
    return 0;
}

static void test_against_pillow(void) {
    size_t len = 0;
    char *manifest = (char *)read_file("image/manifest.txt", &len);
    CHECK_MSG(manifest != NULL, "missing fixture image/manifest.txt (run gen_image.py)");
    if (!manifest) return;
    manifest = realloc(manifest, len + 1);
    manifest[len] = '\0';
    int count = 0;
    for (char *line = strtok(manifest, "\n"); line; line = strtok(NULL, "\n")) {
        char name[256], file[256];
        int w, h;
        if (sscanf(line, "%255s %255s %d %d", name, file, &w, &h) != 4) continue;
        if (check_image(name, file, w, h) == 0) count++;
    }
    CHECK_MSG(count >= 40, "only %d images checked", count);
    CHECK_MSG(tensors_checked >= 16, "only %d normalized tensors checked", tensors_checked);
    free(manifest);
}

static void test_preprocess(void) {
    size_t len = 0, tlen = 0;
    uint8_t *bytes = read_file("image/jpeg_420_500x375.jpg", &len);
    float *want = (float *)read_fixture("jpeg_420_500x375", ".clip224.f32", &tlen);
    CHECK(bytes && want);
    if (bytes && want) {
        float *t = malloc(3 * 224 * 224 * sizeof(float));
        lion_status st = {0};
        int rc = image_preprocess(bytes, len, 224, IMAGE_FILTER_BICUBIC, image_clip_mean,
                                  image_clip_std, t, NULL, &st);
        CHECK_MSG(rc == 0, "preprocess: %s", st.msg);
        if (rc == 0) CHECK(testing_max_abs_err(t, want, 3 * 224 * 224) <= 1e-6);
        free(t);
    }
    free(bytes);
    free(want);
}

static void expect_error(const char *what, const uint8_t *bytes, size_t len,
                         const image_limits *limits, int code, const char *substring) {
    image img = {0};
    lion_status st = {0};
    int rc = image_decode(bytes, len, limits, &img, &st);
    CHECK_MSG(rc == -1, "%s: decode should fail", what);
    CHECK_MSG(img.data == NULL, "%s: no image on failure", what);
    CHECK_MSG(st.code == code, "%s: code %d, expected %d (%s)", what, st.code, code, st.msg);
    CHECK_CONTAINS(st.msg, substring);
    image_free(&img);
}

static void test_errors(void) {
    size_t jlen = 0, plen = 0, len = 0;
    uint8_t *jpg = read_file("image/jpeg_420_500x375.jpg", &jlen);
    uint8_t *png = read_file("image/rgb_640x480.png", &plen);
    CHECK(jpg && png);
    if (!jpg || !png) return;

    expect_error("truncated JPEG", jpg, jlen / 2, NULL, LION_EFORMAT, "truncated JPEG");
    expect_error("JPEG cut after the header", jpg, 700, NULL, LION_EFORMAT, "truncated JPEG");
    expect_error("JPEG magic only", jpg, 3, NULL, LION_EFORMAT, "JPEG");
    expect_error("truncated PNG", png, plen / 2, NULL, LION_EFORMAT, "truncated PNG");
    expect_error("PNG signature only", png, 8, NULL, LION_EFORMAT, "truncated PNG");

    uint8_t *bad = malloc(plen);
    memcpy(bad, png, plen);
    bad[20] ^= 0x55; /* inside IHDR: its CRC no longer matches */
    expect_error("PNG with a bad IHDR CRC", bad, plen, NULL, LION_EFORMAT, "corrupt PNG");
    free(bad);
    bad = malloc(jlen);
    memcpy(bad, jpg, jlen);
    size_t sof = 2;
    while (sof + 4 < jlen && !(bad[sof] == 0xff && bad[sof + 1] == 0xc0)) sof++;
    CHECK(sof + 4 < jlen);
    bad[sof + 4] = 12; /* 12-bit samples: not what this libjpeg decodes */
    expect_error("JPEG with 12-bit precision", bad, jlen, NULL, LION_EFORMAT,
                 "corrupt JPEG: Unsupported JPEG data precision 12");
    free(bad);

    uint8_t garbage[64];
    for (int i = 0; i < 64; i++) garbage[i] = (uint8_t)(i * 37 + 11);
    expect_error("garbage", garbage, sizeof garbage, NULL, LION_EFORMAT, "unknown image format");
    expect_error("garbage", garbage, sizeof garbage, NULL, LION_EFORMAT, "first bytes: 0b 30 55");
    expect_error("GIF", (const uint8_t *)"GIF89a", 6, NULL, LION_EFORMAT, "not JPEG or PNG");
    expect_error("empty", garbage, 0, NULL, LION_EINVAL, "empty image (0 bytes)");
    expect_error("NULL", NULL, 0, NULL, LION_EINVAL, "empty image");

    image_limits small = image_limits_default();
    small.max_pixels = 640 * 480 - 1;
    expect_error("too many pixels (PNG)", png, plen, &small, LION_ETOOBIG,
                 "640x480 = 307200 pixels exceeds the limit of 307199 pixels");
    small.max_pixels = 500 * 375 - 1;
    expect_error("too many pixels (JPEG)", jpg, jlen, &small, LION_ETOOBIG, "pixels exceeds the limit");
    small = image_limits_default();
    small.max_bytes = 1000;
    expect_error("too many bytes", png, plen, &small, LION_ETOOBIG,
                 "bytes exceeds the limit of 1000 bytes");
    /* Exactly at the limits is allowed. */
    image img;
    lion_status st = {0};
    image_limits exact = {plen, 640 * 480};
    CHECK_MSG(image_decode(png, plen, &exact, &img, &st) == 0, "at the limits: %s", st.msg);
    image_free(&img);

    uint8_t *bomb = read_file("image/bomb.png", &len);
    CHECK(bomb != NULL);
    if (bomb)
        expect_error("PNG bomb", bomb, len, NULL, LION_ETOOBIG,
                     "100000x100000 = 10000000000 pixels exceeds the limit");
    free(bomb);
    bomb = read_file("image/bomb.jpg", &len);
    CHECK(bomb != NULL);
    if (bomb) expect_error("JPEG bomb", bomb, len, NULL, LION_ETOOBIG, "60000x60000");
    free(bomb);

    float t[3 * 4];
    CHECK(image_preprocess(garbage, sizeof garbage, 2, IMAGE_FILTER_BICUBIC, image_clip_mean,
                           image_clip_std, t, NULL, &st) == -1);
    CHECK_CONTAINS(st.msg, "unknown image format");
    free(jpg);
    free(png);
}

static void test_resize_args(void) {
    uint8_t px[3] = {1, 2, 3};
    image src = {1, 1, px}, out;
    lion_status st = {0};
    CHECK(image_resize(&src, 0, 5, IMAGE_FILTER_BICUBIC, &out, &st) == -1);
    CHECK_CONTAINS(st.msg, "invalid target size 0x5");
    CHECK(image_resize(&src, 4, 4, (image_filter)7, &out, &st) == -1);
    CHECK_CONTAINS(st.msg, "unknown filter 7");
    /* A 1x1 image upscaled stays one colour (the weights sum to one). */
    CHECK(image_resize(&src, 3, 2, IMAGE_FILTER_BICUBIC, &out, &st) == 0);
    for (int i = 0; i < 6; i++) CHECK(out.data[3 * i] == 1 && out.data[3 * i + 2] == 3);
    image_free(&out);
}

static void test_sniff(void) {
    CHECK(image_sniff((const uint8_t *)"\xff\xd8\xff\xe0", 4) == IMAGE_FORMAT_JPEG);
    CHECK(image_sniff((const uint8_t *)"\x89PNG\r\n\x1a\n", 8) == IMAGE_FORMAT_PNG);
    CHECK(image_sniff((const uint8_t *)"\x89PNG\r\n\x1a", 7) == IMAGE_FORMAT_UNKNOWN);
    CHECK(image_sniff((const uint8_t *)"", 0) == IMAGE_FORMAT_UNKNOWN);
    CHECK(strcmp(image_format_name(IMAGE_FORMAT_PNG), "PNG") == 0);
}

static void test_encode_and_draw(void) {
    image img;
    lion_status st = {0};
    CHECK(image_alloc(&img, 37, 23, &st) == 0);
    for (size_t i = 0; i < (size_t)37 * 23 * 3; i++) img.data[i] = (uint8_t)(i * 7);
    const uint8_t red[3] = {255, 0, 0};
    image_draw_rect(&img, 30, 20, 2, 3, red, 2); /* corners given in reverse order */
    /* The outline: rows 3,4 and 19,20 across x 2..30, columns 2,3 and 29,30. */
    const uint8_t *p = img.data + ((size_t)3 * 37 + 2) * 3;
    CHECK(p[0] == 255 && p[1] == 0 && p[2] == 0);
    p = img.data + ((size_t)20 * 37 + 30) * 3;
    CHECK(p[0] == 255 && p[1] == 0);
    p = img.data + ((size_t)12 * 37 + 29) * 3;
    CHECK(p[0] == 255 && p[1] == 0);
    p = img.data + ((size_t)12 * 37 + 28) * 3; /* inside, untouched */
    CHECK(p[0] == (uint8_t)((12 * 37 + 28) * 3 * 7));
    p = img.data + ((size_t)21 * 37 + 30) * 3; /* below, untouched */
    CHECK(p[1] == (uint8_t)(((21 * 37 + 30) * 3 + 1) * 7));
    /* Boxes far outside or huge never write out of bounds (ASan watches). */
    image_draw_rect(&img, -2147483647, -5, 2147483647, 2147483647, red, 2147483647);
    image_draw_rect(&img, 100, 100, 200, 200, red, 3);

    uint8_t *enc = NULL;
    size_t len = 0;
    CHECK(image_encode_png(&img, &enc, &len, &st) == 0);
    CHECK(image_sniff(enc, len) == IMAGE_FORMAT_PNG);
    image back;
    CHECK(image_decode(enc, len, NULL, &back, &st) == 0);
    CHECK(back.width == 37 && back.height == 23);
    if (back.data) CHECK(memcmp(back.data, img.data, (size_t)37 * 23 * 3) == 0);
    image_free(&back);
    free(enc);

    image flat;
    CHECK(image_alloc(&flat, 40, 24, &st) == 0);
    for (size_t i = 0; i < (size_t)40 * 24; i++) {
        flat.data[3 * i] = 200, flat.data[3 * i + 1] = 100, flat.data[3 * i + 2] = 50;
    }
    CHECK(image_encode_jpeg(&flat, 95, &enc, &len, &st) == 0);
    CHECK(image_sniff(enc, len) == IMAGE_FORMAT_JPEG);
    CHECK(image_decode(enc, len, NULL, &back, &st) == 0);
    CHECK(back.width == 40 && back.height == 24);
    int maxd = 0;
    for (size_t i = 0; back.data && i < (size_t)40 * 24 * 3; i++) {
        int d = abs((int)back.data[i] - (int)flat.data[i]);
        if (d > maxd) maxd = d;
    }
    CHECK_MSG(maxd <= 3, "JPEG round trip of a flat colour off by %d", maxd);
    image_free(&back);
    free(enc);
    CHECK(image_encode_jpeg(&flat, 0, &enc, &len, &st) == -1);
    CHECK_CONTAINS(st.msg, "quality 0 is not in 1..100");
    image empty = {0};
    CHECK(image_encode_png(&empty, &enc, &len, &st) == -1);
    CHECK_CONTAINS(st.msg, "empty image");
    image_free(&flat);
    image_free(&img);

    /* A 1100000 x 1 PNG: past libpng's default 1000000-pixel side, within our limits. */
    image wide;
    CHECK(image_alloc(&wide, 1100000, 1, &st) == 0);
    for (size_t i = 0; i < (size_t)1100000 * 3; i++) wide.data[i] = (uint8_t)(i % 251);
    CHECK_MSG(image_encode_png(&wide, &enc, &len, &st) == 0, "wide PNG encode: %s", st.msg);
    CHECK_MSG(image_decode(enc, len, NULL, &back, &st) == 0, "wide PNG: %s", st.msg);
    if (back.data) CHECK(back.width == 1100000 && memcmp(back.data, wide.data, (size_t)1100000 * 3) == 0);
    image_free(&back);
    free(enc);
    image_free(&wide);
}

/* Damaged files (random bytes changed, or cut anywhere) either decode or fail with a
 * message; ASan and UBSan watch that nothing is read or written out of bounds. */
static void test_damaged_files(void) {
    const char *files[] = {"image/jpeg_cmyk_120x90.jpg", "image/jpeg_progressive_500x375.jpg",
                           "image/rgb_interlaced_97x61.png", "image/p4_trns_50x40.png",
                           "image/rgb16_90x60.png"};
    uint32_t seed = 12345;
    for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
        size_t len = 0;
        uint8_t *orig = read_file(files[f], &len);
        CHECK_MSG(orig != NULL, "missing %s", files[f]);
        if (!orig) continue;
        uint8_t *buf = malloc(len);
        int failed = 0, ok = 0;
        for (int round = 0; round < 60; round++) {
            memcpy(buf, orig, len);
            size_t n = len;
            if (round % 3 == 2) {
                seed = seed * 1103515245u + 12345u;
                n = (seed >> 8) % len;
            } else {
                for (int k = 0; k < 1 + round % 5; k++) {
                    seed = seed * 1103515245u + 12345u;
                    size_t at = 8 + (seed >> 8) % (len - 8); /* keep the magic bytes */
                    buf[at] ^= (uint8_t)(1 + (seed >> 3) % 255);
                }
            }
            image img;
            lion_status st = {0};
            if (image_decode(buf, n, NULL, &img, &st) == 0) {
                ok++;
                CHECK(img.data != NULL && img.width > 0);
                image_free(&img);
            } else {
                failed++;
                CHECK_MSG(st.msg[0] != '\0' && img.data == NULL, "%s: failure without message", files[f]);
            }
        }
        CHECK_MSG(failed > 0, "%s: no damaged copy was refused", files[f]);
        (void)ok;
        free(buf);
        free(orig);
    }
}

int main(void) {
    test_sniff();
    test_resize_args();
    test_encode_and_draw();
    test_errors();
    test_preprocess();
    test_damaged_files();
    test_against_pillow();
    return testing_finish();
}
