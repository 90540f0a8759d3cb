/* image_normalize.c - torchvision's ToTensor + Normalize on a resized image, and the
 * one-call preprocessing (decode, resize, normalize) the vision and tagger services use.
 *
 * ToTensor divides the uint8 values by 255 in float32 and Normalize computes
 * (x - mean) / std in float32 per channel; doing the same float operations in the same
 * order gives the same values as PyTorch. */
#include "image.h"

void image_normalize(const image *img, const float mean[3], const float std[3], float *out_chw) {
    size_t plane = (size_t)img->width * (size_t)img->height;
    for (int c = 0; c < 3; c++) {
        float *dst = out_chw + (size_t)c * plane;
        const uint8_t *src = img->data + c;
        for (size_t i = 0; i < plane; i++, src += 3) {
            float x = (float)*src / 255.0f;
            dst[i] = (x - mean[c]) / std[c];
        }
    }
}

int image_preprocess(const uint8_t *bytes, size_t len, int size, image_filter filter,
                     const float mean[3], const float std[3], float *out_chw,
                     const image_limits *limits, lion_status *st) {
    if (size <= 0) return lion_fail(st, LION_EINVAL, "preprocess: invalid target size %d", size);
    image decoded, resized;
    if (image_decode(bytes, len, limits, &decoded, st) != 0) return -1;
    int rc = image_resize(&decoded, size, size, filter, &resized, st);
    image_free(&decoded);
    if (rc != 0) return -1;
    image_normalize(&resized, mean, std, out_chw);
    image_free(&resized);
    return 0;
}
