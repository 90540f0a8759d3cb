/* image_encode.c - RGB images to PNG (libpng) or JPEG (libjpeg-turbo) bytes in memory,
 * for answers that return an image (boxes drawn on the input).
 *
 * As in image_decode.c, library errors longjmp back here instead of exiting. */
#include "image.h"

#include <stdio.h> /* before jpeglib.h, which uses FILE */

#include <jpeglib.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

static int check_image(const image *img, const char *what, lion_status *st) {
    if (!img || !img->data || img->width <= 0 || img->height <= 0)
        return lion_fail(st, LION_EINVAL, "%s: empty image", what);
    return 0;
}

/* ---- PNG ---- */

struct png_sink {
    uint8_t *data;
    size_t len, cap;
    int oom;
    char msg[256];
    png_bytep *rows;
};

static void png_sink_write(png_structp png, png_bytep src, size_t n) {
    struct png_sink *s = png_get_io_ptr(png);
    if (n > s->cap - s->len) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap - s->len < n) cap *= 2;
        uint8_t *grown = realloc(s->data, cap);
        if (!grown) {
            s->oom = 1;
            png_error(png, "out of memory for the encoded image");
        }
        s->data = grown;
        s->cap = cap;
    }
    memcpy(s->data + s->len, src, n);
    s->len += n;
}

static void png_sink_flush(png_structp png) { (void)png; }

static void png_encode_on_error(png_structp png, png_const_charp msg) {
    struct png_sink *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

int image_encode_png(const image *img, uint8_t **out, size_t *out_len, lion_status *st) {
    *out = NULL;
    *out_len = 0;
    if (check_image(img, "PNG encode", st) != 0) return -1;
    struct png_sink *s = calloc(1, sizeof *s);
    if (!s) return lion_fail(st, LION_ENOMEM, "PNG encode: out of memory");
    int rc = -1;
    png_infop info = NULL;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, s, png_encode_on_error, NULL);
    if (png) info = png_create_info_struct(png);
    s->rows = malloc(sizeof(png_bytep) * (size_t)img->height);
    if (!png || !info || !s->rows) {
        lion_fail(st, LION_ENOMEM, "PNG encode: out of memory for the encoder");
        goto done;
    }
    if (setjmp(png_jmpbuf(png))) {
        lion_fail(st, s->oom ? LION_ENOMEM : LION_EINTERNAL, "PNG encode: %s", s->msg);
        goto done;
    }
    png_set_write_fn(png, s, png_sink_write, png_sink_flush);
    png_set_user_limits(png, PNG_UINT_31_MAX, PNG_UINT_31_MAX); /* as the decoder allows */
    png_set_IHDR(png, info, (png_uint_32)img->width, (png_uint_32)img->height, 8,
                 PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    for (int y = 0; y < img->height; y++) s->rows[y] = img->data + (size_t)y * img->width * 3;
    png_set_rows(png, info, s->rows);
    png_write_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
    *out = s->data;
    *out_len = s->len;
    s->data = NULL;
    rc = 0;
done:
    if (png) png_destroy_write_struct(&png, info ? &info : NULL);
    free(s->data);
    free(s->rows);
    free(s);
    return rc;
}

/* ---- JPEG ---- */

struct jpeg_encode_context {
    struct jpeg_compress_struct cinfo;
    struct jpeg_error_mgr err;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
    unsigned char *data;
    unsigned long len;
};

static void jpeg_encode_on_error(j_common_ptr cinfo) {
    struct jpeg_encode_context *ctx = (struct jpeg_encode_context *)cinfo->client_data;
    cinfo->err->format_message(cinfo, ctx->msg);
    longjmp(ctx->jump, 1);
}

int image_encode_jpeg(const image *img, int quality, uint8_t **out, size_t *out_len,
                      lion_status *st) {
    *out = NULL;
    *out_len = 0;
    if (check_image(img, "JPEG encode", st) != 0) return -1;
    if (quality < 1 || quality > 100)
        return lion_fail(st, LION_EINVAL, "JPEG encode: quality %d is not in 1..100", quality);
    if (img->width > JPEG_MAX_DIMENSION || img->height > JPEG_MAX_DIMENSION)
        return lion_fail(st, LION_EINVAL, "JPEG encode: %dx%d exceeds JPEG's %d pixel side",
                         img->width, img->height, (int)JPEG_MAX_DIMENSION);
    struct jpeg_encode_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return lion_fail(st, LION_ENOMEM, "JPEG encode: out of memory");
    int rc = -1;
    ctx->cinfo.err = jpeg_std_error(&ctx->err);
    ctx->err.error_exit = jpeg_encode_on_error;
    ctx->cinfo.client_data = ctx;
    if (setjmp(ctx->jump)) {
        lion_fail(st, LION_EINTERNAL, "JPEG encode: %s", ctx->msg);
        goto done;
    }
    jpeg_create_compress(&ctx->cinfo);
    jpeg_mem_dest(&ctx->cinfo, &ctx->data, &ctx->len);
    ctx->cinfo.image_width = (JDIMENSION)img->width;
    ctx->cinfo.image_height = (JDIMENSION)img->height;
    ctx->cinfo.input_components = 3;
    ctx->cinfo.in_color_space = JCS_RGB;
    jpeg_set_defaults(&ctx->cinfo);
    jpeg_set_quality(&ctx->cinfo, quality, TRUE);
    jpeg_start_compress(&ctx->cinfo, TRUE);
    while (ctx->cinfo.next_scanline < ctx->cinfo.image_height) {
        JSAMPROW row = img->data + (size_t)ctx->cinfo.next_scanline * img->width * 3;
        jpeg_write_scanlines(&ctx->cinfo, &row, 1);
    }
    jpeg_finish_compress(&ctx->cinfo);
    /* jpeg_mem_dest's buffer is malloc'ed by libjpeg-turbo, so free() releases it. */
    *out = ctx->data;
    *out_len = ctx->len;
    ctx->data = NULL;
    rc = 0;
done:
    jpeg_destroy_compress(&ctx->cinfo);
    free(ctx->data);
    free(ctx);
    return rc;
}
