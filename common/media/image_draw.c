/* image_draw.c - rectangle outlines on an RGB image, for answers that are boxes.
 *
 * Coordinates come from model output, so anything goes: they are clipped to the image and
 * computed in long long so that no value can overflow. */
#include "image.h"

static void fill_area(image *img, long long x0, long long x1, long long y0, long long y1,
                      const uint8_t rgb[3]) {
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 >= img->width) x1 = img->width - 1;
    if (y1 >= img->height) y1 = img->height - 1;
    for (long long y = y0; y <= y1; y++) {
        uint8_t *p = img->data + ((size_t)y * (size_t)img->width + (size_t)x0) * 3;
        for (long long x = x0; x <= x1; x++, p += 3) p[0] = rgb[0], p[1] = rgb[1], p[2] = rgb[2];
    }
}

static long long min_ll(long long a, long long b) { return a < b ? a : b; }
static long long max_ll(long long a, long long b) { return a > b ? a : b; }

void image_draw_rect(image *img, int x0, int y0, int x1, int y1, const uint8_t rgb[3],
                     int line_width) {
    if (!img || !img->data || line_width <= 0) return;
    long long l = min_ll(x0, x1), r = max_ll(x0, x1);
    long long t = min_ll(y0, y1), b = max_ll(y0, y1);
    long long w = line_width;
    /* Lines grow inwards and stop at the opposite edge, so a thick outline on a small box
     * fills it, as Pillow's ImageDraw.rectangle(width=) does. */
    fill_area(img, l, r, t, min_ll(t + w - 1, b), rgb);
    fill_area(img, l, r, max_ll(b - w + 1, t), b, rgb);
    fill_area(img, l, min_ll(l + w - 1, r), t, b, rgb);
    fill_area(img, max_ll(r - w + 1, l), r, t, b, rgb);
}
