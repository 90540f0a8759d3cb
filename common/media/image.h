/* image.h - decoding, PIL-exact preprocessing, encoding and box drawing of RGB images.
 *
 * The vision and tagger services receive encoded JPEG or PNG bytes and must produce the
 * same input tensor that upstream's PyTorch pipeline produces:
 *
 *     Image.open(f).convert("RGB") -> Resize((s, s), filter) -> ToTensor -> Normalize
 *
 * so every step here matches Pillow 9.4 (Debian's python3-pil) bit for bit:
 *   - image_decode gives the pixels of convert("RGB"): alpha dropped (not composited),
 *     16-bit samples reduced as Pillow loads them, CMYK JPEGs read with Adobe (inverted)
 *     polarity as Pillow always assumes, EXIF orientation not applied.
 *   - image_resize is Pillow's ImagingResample for RGB: two separable passes with the
 *     support widened on downscale (antialiasing) and 8-bit fixed-point coefficients.
 *   - image_normalize is ToTensor (/255) + Normalize in float32, CHW.
 *
 * An image is tightly packed 8-bit RGB, row-major, width * 3 bytes per row. */
#ifndef LION_IMAGE_H
#define LION_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct image {
    int width;
    int height;
    uint8_t *data; /* width * height * 3 bytes, owned (image_free) */
} image;

typedef enum image_format {
    IMAGE_FORMAT_UNKNOWN = 0,
    IMAGE_FORMAT_JPEG,
    IMAGE_FORMAT_PNG
} image_format;

/* The resampling filters upstream's transforms use (Pillow's BILINEAR and BICUBIC). */
typedef enum image_filter {
    IMAGE_FILTER_BILINEAR = 0,
    IMAGE_FILTER_BICUBIC
} image_filter;

/* Refusals applied before any pixel memory is allocated: max_bytes to the encoded input,
 * max_pixels to width * height read from the file header (decompression bombs). */
typedef struct image_limits {
    size_t max_bytes;
    uint64_t max_pixels;
} image_limits;

/* 64 MiB encoded; Pillow's own decompression-bomb warning threshold of pixels. */
#define IMAGE_DEFAULT_MAX_BYTES ((size_t)64 << 20)
#define IMAGE_DEFAULT_MAX_PIXELS ((uint64_t)89478485)

image_limits image_limits_default(void);

/* Normalization constants of the reference sheet: CLIP's for the ViT, ImageNet's for RAM. */
extern const float image_clip_mean[3], image_clip_std[3];
extern const float image_imagenet_mean[3], image_imagenet_std[3];

/* The format named by the magic bytes, IMAGE_FORMAT_UNKNOWN when neither. */
image_format image_sniff(const uint8_t *bytes, size_t len);
const char *image_format_name(image_format format);

/* Decodes JPEG or PNG bytes into RGB as Pillow's convert("RGB") does. limits may be NULL
 * (defaults). Errors: LION_EINVAL for empty input, LION_EFORMAT for an unknown format or a
 * truncated ("truncated JPEG"/"truncated PNG") or corrupt ("corrupt JPEG: ...") file,
 * LION_ETOOBIG ("bytes exceeds the limit", "pixels exceeds the limit"), LION_ENOMEM. */
int image_decode(const uint8_t *bytes, size_t len, const image_limits *limits, image *out,
                 lion_status *st);

/* An owning, uninitialised width x height image. */
int image_alloc(image *img, int width, int height, lion_status *st);
void image_free(image *img);

/* Pillow's Image.resize((width, height), filter) of an RGB image, identical output. */
int image_resize(const image *src, int width, int height, image_filter filter, image *out,
                 lion_status *st);

/* ToTensor + Normalize: out_chw[c][y][x] = (p / 255 - mean[c]) / std[c], float32, 3*H*W. */
void image_normalize(const image *img, const float mean[3], const float std[3], float *out_chw);

/* Decode + resize to size x size + normalize into out_chw (3 * size * size floats): the
 * whole per-image transform of the vision service (224, bicubic, CLIP) and the tagger
 * (384, bilinear, ImageNet). */
int image_preprocess(const uint8_t *bytes, size_t len, int size, image_filter filter,
                     const float mean[3], const float std[3], float *out_chw,
                     const image_limits *limits, lion_status *st);

/* Encoders; *out is malloc'ed, release with free(). quality is 1..100. */
int image_encode_png(const image *img, uint8_t **out, size_t *out_len, lion_status *st);
int image_encode_jpeg(const image *img, int quality, uint8_t **out, size_t *out_len,
                      lion_status *st);

/* Rectangle outline with corners (x0, y0) and (x1, y1) inclusive, line_width pixels drawn
 * inwards, as Pillow's ImageDraw.rectangle(outline=, width=); clipped to the image. */
void image_draw_rect(image *img, int x0, int y0, int x1, int y1, const uint8_t rgb[3],
                     int line_width);

#endif
