/* fuzz_image.c - JPEG and PNG decoding (common/media/image.h) of untrusted bytes.
 *
 * Input: the encoded file, as a client uploads it and the vision and tagger stages receive
 * it. It is decoded with the limits those stages use (image_limits_default: 64 MiB, Pillow's
 * 89.5 MP bomb threshold); a decoded image must have the size its pixels say, and then goes
 * through the rest of the stages' transform at small sizes (image_resize with both filters,
 * image_normalize) and a PNG round trip that must give the same pixels back (when it is
 * small: see below). */
#include "fuzz_util.h"
#include "image.h"

static const float mean[3] = {0.5f, 0.5f, 0.5f}, std_[3] = {0.25f, 0.25f, 0.25f};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    image_sniff(data, size);
    image_limits limits = image_limits_default();
    image img = {0};
    lion_status st = {0};
    if (image_decode(data, size, &limits, &img, &st) != 0) {
        FUZZ_CHECK(st.msg[0] != 0 && img.data == NULL);
        return 0;
    }
    FUZZ_CHECK(img.width > 0 && img.height > 0 && img.data != NULL);
    FUZZ_CHECK((uint64_t)img.width * (uint64_t)img.height <= limits.max_pixels);
    /* every pixel is readable (ASan checks the allocation's size) */
    const size_t bytes = (size_t)img.width * (size_t)img.height * 3;
    uint8_t x = 0;
    for (size_t i = 0; i < bytes; i += 61) x ^= img.data[i];
    x ^= img.data[bytes - 1];
    (void)x;

    /* small outputs of both filters: upscales and downscales of odd shapes (of images up to
     * 64K pixels: the resampling loops cost the input's size, many times over with the
     * fuzzer's comparison tracing, and a big image makes no other path) */
    const int w = 1 + img.width % 23, h = 1 + img.height % 19;
    for (int f = 0; f < 2 && (uint64_t)img.width * img.height <= 65536; f++) {
        image out = {0};
        if (image_resize(&img, w, h, f ? IMAGE_FILTER_BICUBIC : IMAGE_FILTER_BILINEAR, &out, &st) == 0) {
            float *chw = malloc((size_t)3 * w * h * sizeof *chw);
            if (!chw) abort();
            image_normalize(&out, mean, std_, chw);
            free(chw);
            image_free(&out);
        }
    }

    if ((uint64_t)img.width * img.height <= 64 * 64) {
        uint8_t *png = NULL;
        size_t png_len = 0;
        FUZZ_CHECK(image_encode_png(&img, &png, &png_len, &st) == 0);
        image back = {0};
        FUZZ_CHECK(image_decode(png, png_len, &limits, &back, &st) == 0);
        FUZZ_CHECK(back.width == img.width && back.height == img.height);
        FUZZ_CHECK(memcmp(back.data, img.data, bytes) == 0);
        image_free(&back);
        free(png);
    }
    image_free(&img);
    return 0;
}
