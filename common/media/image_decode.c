/* image_decode.c - JPEG (libjpeg-turbo) and PNG (libpng) bytes to RGB, as Pillow 9.4's
 * Image.open(...).convert("RGB") does.
 *
 * Both libraries report errors by calling a function that must not return; we longjmp
 * out of it back into the decode function, so no bad file can exit the process. Every
 * object touched after setjmp lives in a context struct, not in non-volatile locals. */
#include "image.h"

#include <stdio.h> /* before jpeglib.h, which uses FILE */

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

const float image_clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
const float image_clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
const float image_imagenet_mean[3] = {0.485f, 0.456f, 0.406f};
const float image_imagenet_std[3] = {0.229f, 0.224f, 0.225f};

image_limits image_limits_default(void) {
    image_limits l = {IMAGE_DEFAULT_MAX_BYTES, IMAGE_DEFAULT_MAX_PIXELS};
    return l;
}

image_format image_sniff(const uint8_t *bytes, size_t len) {
    static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len >= 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff) return IMAGE_FORMAT_JPEG;
    if (len >= 8 && memcmp(bytes, png_magic, 8) == 0) return IMAGE_FORMAT_PNG;
    return IMAGE_FORMAT_UNKNOWN;
}

const char *image_format_name(image_format format) {
    switch (format) {
    case IMAGE_FORMAT_JPEG: return "JPEG";
    case IMAGE_FORMAT_PNG: return "PNG";
    default: return "unknown";
    }
}

int image_alloc(image *img, int width, int height, lion_status *st) {
    img->width = img->height = 0;
    img->data = NULL;
    if (width <= 0 || height <= 0)
        return lion_fail(st, LION_EINVAL, "image: invalid size %dx%d", width, height);
    size_t n = (size_t)width * (size_t)height;
    if (n > SIZE_MAX / 3) return lion_fail(st, LION_ETOOBIG, "image: %dx%d is too large", width, height);
    img->data = malloc(n * 3);
    if (!img->data)
        return lion_fail(st, LION_ENOMEM, "image: out of memory for %dx%d RGB pixels", width, height);
    img->width = width;
    img->height = height;
    return 0;
}

void image_free(image *img) {
    if (!img) return;
    free(img->data);
    img->data = NULL;
    img->width = img->height = 0;
}

static int check_pixels(const char *fmt, uint32_t w, uint32_t h, const image_limits *limits,
                        lion_status *st) {
    uint64_t pixels = (uint64_t)w * h;
    if (w == 0 || h == 0) return lion_fail(st, LION_EFORMAT, "corrupt %s: image size %ux%u", fmt, w, h);
    if (pixels > limits->max_pixels || w > INT32_MAX / 4 || h > INT32_MAX / 4)
        return lion_fail(st, LION_ETOOBIG,
                         "%s image is too large: %ux%u = %llu pixels exceeds the limit of %llu pixels",
                         fmt, w, h, (unsigned long long)pixels,
                         (unsigned long long)limits->max_pixels);
    return 0;
}

/* ---- JPEG ---- */

struct jpeg_context {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr err;
    jmp_buf jump;
    int truncated;
    char msg[JMSG_LENGTH_MAX];
    uint8_t *row;
    image img;
};

static void jpeg_on_error(j_common_ptr cinfo) {
    struct jpeg_context *ctx = (struct jpeg_context *)cinfo->client_data;
    cinfo->err->format_message(cinfo, ctx->msg);
    longjmp(ctx->jump, 1);
}

/* Pillow ignores libjpeg's corrupt-data warnings (it decodes what libjpeg recovers) but
 * refuses a file that ends early ("image file is truncated"); so do we. libjpeg reports
 * the early end as the JWRN_JPEG_EOF warning and would pad the image with grey. */
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    struct jpeg_context *ctx = (struct jpeg_context *)cinfo->client_data;
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
        ctx->truncated = 1;
        cinfo->err->format_message(cinfo, ctx->msg);
        longjmp(ctx->jump, 1);
    }
}

/* Pillow's cmyk2rgb after reading "CMYK;I" (inverted) samples. */
static inline uint8_t cmyk_channel(int c, int nk) {
    int t = c * nk + 128;
    int v = nk - (((t >> 8) + t) >> 8);
    return (uint8_t)(v <= 0 ? 0 : v < 256 ? v : 255);
}

static int decode_jpeg(const uint8_t *bytes, size_t len, const image_limits *limits, image *out,
                       lion_status *st) {
    struct jpeg_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return lion_fail(st, LION_ENOMEM, "JPEG: out of memory");
    int rc = -1;
    ctx->cinfo.err = jpeg_std_error(&ctx->err);
    ctx->err.error_exit = jpeg_on_error;
    ctx->err.emit_message = jpeg_on_message;
    ctx->cinfo.client_data = ctx;

    if (setjmp(ctx->jump)) {
        if (ctx->truncated)
            lion_fail(st, LION_EFORMAT, "truncated JPEG: %s", ctx->msg);
        else
            lion_fail(st, LION_EFORMAT, "corrupt JPEG: %s", ctx->msg);
        goto done;
    }
    jpeg_create_decompress(&ctx->cinfo);
    jpeg_mem_src(&ctx->cinfo, bytes, (unsigned long)len);
    jpeg_read_header(&ctx->cinfo, TRUE);

    struct jpeg_decompress_struct *c = &ctx->cinfo;
    if (check_pixels("JPEG", c->image_width, c->image_height, limits, st) != 0) goto done;
    /* Pillow picks the mode from the number of components and asks libjpeg for exactly
     * that colour space; everything else is libjpeg's default (ISLOW DCT, fancy
     * upsampling), as it is in Pillow when no draft mode is requested. */
    switch (c->num_components) {
    case 1: c->out_color_space = JCS_GRAYSCALE; break;
    case 3: c->out_color_space = JCS_RGB; break;
    case 4: c->out_color_space = JCS_CMYK; break;
    default:
        lion_fail(st, LION_EFORMAT, "corrupt JPEG: cannot handle %d-component images", c->num_components);
        goto done;
    }
    jpeg_start_decompress(c);
    if (image_alloc(&ctx->img, (int)c->output_width, (int)c->output_height, st) != 0) goto done;
    int comps = c->output_components;
    ctx->row = malloc((size_t)c->output_width * (size_t)comps);
    if (!ctx->row) {
        lion_fail(st, LION_ENOMEM, "JPEG: out of memory for a row");
        goto done;
    }
    while (c->output_scanline < c->output_height) {
        uint8_t *dst = ctx->img.data + (size_t)c->output_scanline * (size_t)ctx->img.width * 3;
        JSAMPROW rows[1] = {ctx->row};
        jpeg_read_scanlines(c, rows, 1);
        const uint8_t *src = ctx->row;
        for (JDIMENSION x = 0; x < c->output_width; x++, dst += 3, src += comps) {
            if (comps == 1) {
                dst[0] = dst[1] = dst[2] = src[0];
            } else if (comps == 3) {
                dst[0] = src[0], dst[1] = src[1], dst[2] = src[2];
            } else {
                /* Inverted samples c = 255 - s, and Pillow's nk = 255 - k = s[3]. */
                int nk = src[3];
                dst[0] = cmyk_channel(255 - src[0], nk);
                dst[1] = cmyk_channel(255 - src[1], nk);
                dst[2] = cmyk_channel(255 - src[2], nk);
            }
        }
    }
    jpeg_finish_decompress(c);
    *out = ctx->img;
    ctx->img.data = NULL;
    rc = 0;
done:
    jpeg_destroy_decompress(&ctx->cinfo);
    image_free(&ctx->img);
    free(ctx->row);
    free(ctx);
    return rc;
}

/* ---- PNG ---- */

struct png_context {
    const uint8_t *bytes;
    size_t len, pos;
    int truncated;
    char msg[256];
    png_structp png;
    png_infop info;
    int use_palette;        /* palette indices, looked up in palette */
    uint8_t palette[256][3];
    uint8_t *pixels;
    png_bytep *rows;
    image img;
};

static void png_on_error(png_structp png, png_const_charp msg) {
    struct png_context *ctx = png_get_error_ptr(png);
    snprintf(ctx->msg, sizeof ctx->msg, "%s", msg);
    png_longjmp(png, 1);
}

/* Warnings are about ancillary chunks (bad sRGB profiles, text, CRCs of non-critical
 * chunks) that Pillow also skips over. */
static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void png_read_memory(png_structp png, png_bytep dst, size_t n) {
    struct png_context *ctx = png_get_io_ptr(png);
    if (n > ctx->len - ctx->pos) {
        ctx->truncated = 1;
        png_error(png, "premature end of data");
    }
    memcpy(dst, ctx->bytes + ctx->pos, n);
    ctx->pos += n;
}

/* One row of decoded samples (channels x bps bytes per pixel, or palette indices when
 * lookup is set) to RGB. Pillow 9.4 loads 16-bit grey as mode "I" (full 0..65535 values),
 * whose conversion to RGB clips at 255; every other 16-bit PNG is unpacked keeping the
 * high byte. Alpha is dropped. */
static void png_row_to_rgb(const uint8_t *src, uint8_t *dst, png_uint_32 w, int channels,
                           int bps, const uint8_t (*lookup)[3]) {
    size_t step = (size_t)channels * (size_t)bps;
    for (png_uint_32 x = 0; x < w; x++, dst += 3, src += step) {
        if (lookup) {
            memcpy(dst, lookup[src[0]], 3);
        } else if (channels <= 2) {
            uint8_t v = src[0];
            if (bps == 2 && channels == 1) {
                unsigned s = ((unsigned)src[0] << 8) | src[1];
                v = s >= 255 ? 255 : (uint8_t)s;
            }
            dst[0] = dst[1] = dst[2] = v;
        } else {
            dst[0] = src[0];
            dst[1] = src[bps];
            dst[2] = src[2 * bps];
        }
    }
}

/* Pillow's palette: the grey ramp (i, i, i) with PLTE over its first entries. */
static void png_load_palette(struct png_context *ctx) {
    png_colorp plte = NULL;
    int entries = 0;
    for (int i = 0; i < 256; i++) ctx->palette[i][0] = ctx->palette[i][1] = ctx->palette[i][2] = (uint8_t)i;
    if (png_get_PLTE(ctx->png, ctx->info, &plte, &entries) & PNG_INFO_PLTE) {
        for (int i = 0; i < entries && i < 256; i++) {
            ctx->palette[i][0] = plte[i].red;
            ctx->palette[i][1] = plte[i].green;
            ctx->palette[i][2] = plte[i].blue;
        }
    }
}

/* Asks libpng for only the expansions that equal Pillow's unpackers (1/2/4-bit grey scaled by
 * 255/85/17, sub-byte palette indices to bytes); palette lookup, 16-bit samples and alpha are
 * handled by png_row_to_rgb because Pillow treats them its own way. Returns the number of
 * interlace passes. May longjmp (libpng errors). */
static int png_set_transforms(struct png_context *ctx) {
    int color = png_get_color_type(ctx->png, ctx->info);
    int depth = png_get_bit_depth(ctx->png, ctx->info);
    if (color == PNG_COLOR_TYPE_PALETTE) {
        /* Indices are looked up here rather than by libpng: Pillow's palette starts as
         * the grey ramp (i, i, i) and PLTE overwrites its first entries, so an index past
         * the end of PLTE is grey in Pillow where libpng would give black. */
        png_load_palette(ctx);
        ctx->use_palette = 1;
        png_set_packing(ctx->png);
#ifdef PNG_CHECK_FOR_INVALID_INDEX_SUPPORTED
        png_set_check_for_invalid_index(ctx->png, 0);
#endif
    }
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(ctx->png);
    int passes = png_set_interlace_handling(ctx->png);
    png_read_update_info(ctx->png, ctx->info);
    return passes;
}

/* Reads the w x h image, transformed as png_set_transforms set up, into ctx->img as RGB.
 * May longjmp (libpng errors). */
static int png_read_rgb(struct png_context *ctx, png_uint_32 w, png_uint_32 h, int passes, lion_status *st) {
    int channels = png_get_channels(ctx->png, ctx->info);
    int out_depth = png_get_bit_depth(ctx->png, ctx->info);
    size_t rowbytes = png_get_rowbytes(ctx->png, ctx->info);
    if (channels < 1 || channels > 4 || (out_depth != 8 && out_depth != 16) ||
        rowbytes != (size_t)w * (size_t)channels * (size_t)(out_depth / 8))
        return lion_fail(st, LION_EFORMAT, "corrupt PNG: unexpected layout (%d channels, %d bits)", channels,
                         out_depth);
    if (image_alloc(&ctx->img, (int)w, (int)h, st) != 0) return -1;
    const uint8_t(*lookup)[3] = ctx->use_palette ? (const uint8_t(*)[3])ctx->palette : NULL;
    int bps = out_depth / 8;
    if (passes == 1) {
        /* Not interlaced: one row of samples at a time. */
        ctx->pixels = malloc(rowbytes);
        if (!ctx->pixels) return lion_fail(st, LION_ENOMEM, "PNG: out of memory for a row");
        for (png_uint_32 y = 0; y < h; y++) {
            png_read_row(ctx->png, ctx->pixels, NULL);
            png_row_to_rgb(ctx->pixels, ctx->img.data + (size_t)y * w * 3, w, channels, bps, lookup);
        }
        return 0;
    }
    /* Adam7 passes fill the whole image in stages. */
    ctx->pixels = malloc(rowbytes * h);
    ctx->rows = malloc(sizeof(png_bytep) * h);
    if (!ctx->pixels || !ctx->rows) return lion_fail(st, LION_ENOMEM, "PNG: out of memory for %ux%u pixels", w, h);
    for (png_uint_32 y = 0; y < h; y++) ctx->rows[y] = ctx->pixels + rowbytes * y;
    png_read_image(ctx->png, ctx->rows);
    for (png_uint_32 y = 0; y < h; y++)
        png_row_to_rgb(ctx->rows[y], ctx->img.data + (size_t)y * w * 3, w, channels, bps, lookup);
    return 0;
}

/* libpng longjmps here on any error, also from inside the helpers above: they keep all their
 * state in ctx. */
static int decode_png(const uint8_t *bytes, size_t len, const image_limits *limits, image *out,
                      lion_status *st) {
    struct png_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return lion_fail(st, LION_ENOMEM, "PNG: out of memory");
    int rc = -1;
    ctx->bytes = bytes;
    ctx->len = len;
    ctx->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, ctx, png_on_error, png_on_warning);
    if (ctx->png) ctx->info = png_create_info_struct(ctx->png);
    if (!ctx->png || !ctx->info) {
        lion_fail(st, LION_ENOMEM, "PNG: out of memory for the decoder");
        goto done;
    }
    if (setjmp(png_jmpbuf(ctx->png))) {
        if (ctx->truncated)
            lion_fail(st, LION_EFORMAT, "truncated PNG: %s", ctx->msg);
        else
            lion_fail(st, LION_EFORMAT, "corrupt PNG: %s", ctx->msg);
        goto done;
    }
    png_set_read_fn(ctx->png, ctx, png_read_memory);
    /* Our pixel limit decides, not libpng's default 1000000-pixel side. */
    png_set_user_limits(ctx->png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);
    png_read_info(ctx->png, ctx->info);

    png_uint_32 w = png_get_image_width(ctx->png, ctx->info);
    png_uint_32 h = png_get_image_height(ctx->png, ctx->info);
    if (check_pixels("PNG", w, h, limits, st) != 0) goto done;
    int passes = png_set_transforms(ctx);
    if (png_read_rgb(ctx, w, h, passes, st) != 0) goto done;
    *out = ctx->img;
    ctx->img.data = NULL;
    rc = 0;
done:
    if (ctx->png) png_destroy_read_struct(&ctx->png, ctx->info ? &ctx->info : NULL, NULL);
    image_free(&ctx->img);
    free(ctx->pixels);
    free(ctx->rows);
    free(ctx);
    return rc;
}

int image_decode(const uint8_t *bytes, size_t len, const image_limits *limits, image *out,
                 lion_status *st) {
    image_limits defaults = image_limits_default();
    if (!limits) limits = &defaults;
    out->width = out->height = 0;
    out->data = NULL;
    if (!bytes || len == 0) return lion_fail(st, LION_EINVAL, "empty image (0 bytes)");
    if (len > limits->max_bytes)
        return lion_fail(st, LION_ETOOBIG,
                         "image is too large: %zu bytes exceeds the limit of %zu bytes", len,
                         limits->max_bytes);
    switch (image_sniff(bytes, len)) {
    case IMAGE_FORMAT_JPEG: return decode_jpeg(bytes, len, limits, out, st);
    case IMAGE_FORMAT_PNG: return decode_png(bytes, len, limits, out, st);
    default: break;
    }
    char head[3 * 8 + 1] = "";
    for (size_t i = 0; i < len && i < 8; i++) snprintf(head + 3 * i, 4, "%02x ", bytes[i]);
    if (len > 0 && len <= 8) head[3 * len - 1] = '\0';
    else head[3 * 8 - 1] = '\0';
    return lion_fail(st, LION_EFORMAT, "unknown image format (not JPEG or PNG), first bytes: %s", head);
}
