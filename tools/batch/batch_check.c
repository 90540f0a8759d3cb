/* batch_check.c - see batch_check.h. */
#include "batch_check.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "boxes.h"
#include "image.h"

const unsigned char batch_answer_rgb[3] = {255, 0, 0};
const unsigned char batch_expected_rgb[3] = {0, 255, 0};

double batch_iou(const float a[4], const float b[4]) {
    double ix = (a[2] < b[2] ? a[2] : b[2]) - (a[0] > b[0] ? a[0] : b[0]);
    double iy = (a[3] < b[3] ? a[3] : b[3]) - (a[1] > b[1] ? a[1] : b[1]);
    double inter = (ix > 0 ? ix : 0) * (iy > 0 ? iy : 0);
    double uni = (double)(a[2] - a[0]) * (a[3] - a[1]) + (double)(b[2] - b[0]) * (b[3] - b[1]) - inter;
    return uni > 0 ? inter / uni : 0.0;
}

/* The first box of the answer's "boxes" array. */
static int answer_box(const cJSON *answer, float out[4]) {
    const cJSON *box = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(answer, "boxes"), 0);
    if (cJSON_GetArraySize(box) != 4) return 0;
    for (int i = 0; i < 4; i++) {
        const cJSON *v = cJSON_GetArrayItem(box, i);
        if (!cJSON_IsNumber(v)) return 0;
        out[i] = (float)v->valuedouble;
    }
    return 1;
}

static int expected_box(const batch_request *r, float out[4]) {
    text_box b;
    if (!r->expected || boxes_parse(r->expected, &b, 1) < 1) return 0;
    out[0] = b.x0, out[1] = b.y0, out[2] = b.x1, out[3] = b.y1;
    return 1;
}

/* Trimmed, lower case, trailing periods dropped: evaluate.py's norm(). */
static void normalise(const char *s, char *out, size_t size) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = 0;
    for (; *s && n + 1 < size; s++) out[n++] = (char)tolower((unsigned char)*s);
    while (n && (isspace((unsigned char)out[n - 1]) || out[n - 1] == '.')) n--;
    out[n] = 0;
}

int batch_answer_matches(const batch_request *r, const cJSON *answer) {
    if (!r->expected) return 1;
    if (r->match_iou) {
        float a[4], e[4];
        return answer_box(answer, a) && expected_box(r, e) && batch_iou(a, e) >= 0.5;
    }
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(answer, "text");
    if (!cJSON_IsString(text)) return 0;
    char got[2048], want[2048];
    normalise(text->valuestring, got, sizeof got);
    normalise(r->expected, want, sizeof want);
    return !strcmp(got, want);
}

static void draw(image *img, const float b[4], const unsigned char rgb[3]) {
    int lw = (img->width < img->height ? img->width : img->height) / 100 + 1;
    image_draw_rect(img, (int)(b[0] * img->width), (int)(b[1] * img->height), (int)(b[2] * img->width) - 1,
                    (int)(b[3] * img->height) - 1, rgb, lw);
}

int batch_draw_boxes(const batch_request *r, const cJSON *answer, const char *dir, lion_status *st) {
    FILE *f = fopen(r->image_path, "rb");
    if (!f) return lion_fail(st, LION_EIO, "%s: cannot open", r->image_path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *bytes = len > 0 ? malloc((size_t)len) : NULL;
    size_t got = bytes ? fread(bytes, 1, (size_t)len, f) : 0;
    fclose(f);
    image img = {0};
    int rc = image_decode(bytes, got, NULL, &img, st);
    free(bytes);
    if (rc) return lion_fail_prefix(st, "%s: ", r->image_path);
    float b[4];
    if (expected_box(r, b)) draw(&img, b, batch_expected_rgb);
    const cJSON *boxes = cJSON_GetObjectItemCaseSensitive(answer, "boxes");
    for (int i = 0; i < cJSON_GetArraySize(boxes); i++) {
        const cJSON *box = cJSON_GetArrayItem(boxes, i);
        int ok = cJSON_GetArraySize(box) == 4;
        for (int k = 0; ok && k < 4; k++) {
            const cJSON *v = cJSON_GetArrayItem(box, k);
            ok = cJSON_IsNumber(v);
            if (ok) b[k] = (float)v->valuedouble;
        }
        if (ok) draw(&img, b, batch_answer_rgb);
    }
    uint8_t *png = NULL;
    size_t png_len = 0;
    rc = image_encode_png(&img, &png, &png_len, st);
    image_free(&img);
    if (rc) return -1;
    char path[4300];
    snprintf(path, sizeof path, "%s/%s.png", dir, r->id);
    f = fopen(path, "wb");
    if (!f || fwrite(png, 1, png_len, f) != png_len) rc = lion_fail(st, LION_EIO, "%s: cannot write", path);
    if (f && fclose(f) != 0 && rc == 0) rc = lion_fail(st, LION_EIO, "%s: cannot write", path);
    free(png);
    return rc;
}
