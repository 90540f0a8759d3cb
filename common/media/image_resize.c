/* image_resize.c - Pillow 9.4's Image.resize for RGB images with BILINEAR and BICUBIC,
 * reproduced to the bit (ImagingResample in Pillow's src/libImaging/Resample.c).
 *
 * The algorithm, as Pillow does it:
 *   - For each output coordinate, a window of input samples around its centre
 *     (in0 + (i + 0.5) * scale), with the filter's support multiplied by the scale when
 *     shrinking (antialiasing). Weights are computed in double, divided by their sum, then
 *     turned into fixed point with PRECISION_BITS = 22 fraction bits, rounding half away
 *     from zero.
 *   - A horizontal pass (only over the rows the vertical pass will read) into an 8-bit
 *     intermediate, then a vertical pass. Each sum starts at 1 << 21 (rounding) and is
 *     shifted and clipped to 0..255 after each pass.
 *   - A pass whose size is unchanged is skipped.
 * The double arithmetic must not be contracted into FMAs (Pillow's build has none): the
 * project compiles as ISO C11, where GCC's default is -ffp-contract=off. */
#include "image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)

struct resample_filter {
    double (*weight)(double x);
    double support;
};

static double bilinear_weight(double x) {
    if (x < 0.0) x = -x;
    if (x < 1.0) return 1.0 - x;
    return 0.0;
}

/* Keys' cubic convolution with a = -0.5, in Pillow's evaluation order. */
static double bicubic_weight(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static const struct resample_filter BILINEAR = {bilinear_weight, 1.0};
static const struct resample_filter BICUBIC = {bicubic_weight, 2.0};

/* Per output coordinate: the first input index, how many inputs, and ksize weights. */
struct resample_coeffs {
    int ksize;
    int *bounds;     /* [out_size][2]: first, count */
    int32_t *weights; /* [out_size][ksize], fixed point */
};

static void coeffs_free(struct resample_coeffs *c) {
    free(c->bounds);
    free(c->weights);
    c->bounds = NULL;
    c->weights = NULL;
}

static int coeffs_compute(int in_size, int out_size, const struct resample_filter *filter,
                          struct resample_coeffs *c, lion_status *st) {
    /* Pillow's box is float (0, 0, in_w, in_h); its width is computed in float. */
    float in0 = 0.0f, in1 = (float)in_size;
    double scale = (double)(in1 - in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = filter->support * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;

    c->ksize = ksize;
    c->bounds = malloc(sizeof(int) * 2 * (size_t)out_size);
    c->weights = malloc(sizeof(int32_t) * (size_t)ksize * (size_t)out_size);
    double *w = malloc(sizeof(double) * (size_t)ksize);
    if (!c->bounds || !c->weights || !w) {
        coeffs_free(c);
        free(w);
        return lion_fail(st, LION_ENOMEM, "resize: out of memory for %d x %d coefficients",
                         out_size, ksize);
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale;
        double ss = 1.0 / filterscale;
        double sum = 0.0;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            w[x] = filter->weight((x + xmin - center + 0.5) * ss);
            sum += w[x];
        }
        int32_t *k = c->weights + (size_t)xx * ksize;
        for (int x = 0; x < ksize; x++) {
            double v = 0.0;
            if (x < xmax) v = sum != 0.0 ? w[x] / sum : w[x];
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                         : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        c->bounds[2 * xx] = xmin;
        c->bounds[2 * xx + 1] = xmax;
    }
    free(w);
    return 0;
}

/* Pillow clips (sum >> 22) through a table covering -640..639; the sums of 8-bit samples
 * with normalised weights stay in that range, so a plain clamp is the same function. The
 * accumulator is 64-bit so that no input can overflow it (Pillow's is int, which the same
 * bound keeps exact). */
static inline uint8_t clip8(int64_t sum) {
    int64_t v = sum >> PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* dst rows are src rows first_row.. ; dst has width out_w. */
static void resample_horizontal(const uint8_t *src, int src_w, int first_row, uint8_t *dst,
                                int out_w, int rows, const struct resample_coeffs *c) {
    for (int y = 0; y < rows; y++) {
        const uint8_t *in = src + (size_t)(y + first_row) * src_w * 3;
        uint8_t *out = dst + (size_t)y * out_w * 3;
        for (int xx = 0; xx < out_w; xx++) {
            const int32_t *k = c->weights + (size_t)xx * c->ksize;
            const uint8_t *p = in + (size_t)c->bounds[2 * xx] * 3;
            int n = c->bounds[2 * xx + 1];
            int64_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < n; x++, p += 3) {
                s0 += p[0] * (int64_t)k[x];
                s1 += p[1] * (int64_t)k[x];
                s2 += p[2] * (int64_t)k[x];
            }
            out[3 * xx + 0] = clip8(s0);
            out[3 * xx + 1] = clip8(s1);
            out[3 * xx + 2] = clip8(s2);
        }
    }
}

/* bounds are relative to src's first row. */
static void resample_vertical(const uint8_t *src, int width, uint8_t *dst, int out_h,
                              const struct resample_coeffs *c, int row_shift) {
    size_t stride = (size_t)width * 3;
    for (int yy = 0; yy < out_h; yy++) {
        const int32_t *k = c->weights + (size_t)yy * c->ksize;
        int ymin = c->bounds[2 * yy] - row_shift;
        int n = c->bounds[2 * yy + 1];
        uint8_t *out = dst + (size_t)yy * stride;
        for (size_t i = 0; i < stride; i++) {
            const uint8_t *p = src + (size_t)ymin * stride + i;
            int64_t s = 1 << (PRECISION_BITS - 1);
            for (int y = 0; y < n; y++, p += stride) s += *p * (int64_t)k[y];
            out[i] = clip8(s);
        }
    }
}

int image_resize(const image *src, int width, int height, image_filter filter, image *out,
                 lion_status *st) {
    out->width = out->height = 0;
    out->data = NULL;
    if (!src || !src->data || src->width <= 0 || src->height <= 0)
        return lion_fail(st, LION_EINVAL, "resize: empty source image");
    if (width <= 0 || height <= 0)
        return lion_fail(st, LION_EINVAL, "resize: invalid target size %dx%d", width, height);
    const struct resample_filter *f;
    switch (filter) {
    case IMAGE_FILTER_BILINEAR: f = &BILINEAR; break;
    case IMAGE_FILTER_BICUBIC: f = &BICUBIC; break;
    default: return lion_fail(st, LION_EINVAL, "resize: unknown filter %d", (int)filter);
    }
    if (image_alloc(out, width, height, st) != 0) return -1;
    if (width == src->width && height == src->height) {
        memcpy(out->data, src->data, (size_t)width * height * 3);
        return 0;
    }

    struct resample_coeffs ch = {0}, cv = {0};
    uint8_t *temp = NULL;
    int rc = -1;
    if (coeffs_compute(src->width, width, f, &ch, st) != 0) goto done;
    if (coeffs_compute(src->height, height, f, &cv, st) != 0) goto done;

    if (width == src->width) {
        resample_vertical(src->data, width, out->data, height, &cv, 0);
    } else {
        int first = cv.bounds[0];
        int last = cv.bounds[2 * height - 2] + cv.bounds[2 * height - 1];
        if (height == src->height) {
            resample_horizontal(src->data, src->width, 0, out->data, width, height, &ch);
        } else {
            temp = malloc((size_t)width * (size_t)(last - first) * 3);
            if (!temp) {
                lion_fail(st, LION_ENOMEM, "resize: out of memory for the intermediate image");
                goto done;
            }
            resample_horizontal(src->data, src->width, first, temp, width, last - first, &ch);
            resample_vertical(temp, width, out->data, height, &cv, first);
        }
    }
    rc = 0;
done:
    coeffs_free(&ch);
    coeffs_free(&cv);
    free(temp);
    if (rc != 0) image_free(out);
    return rc;
}
