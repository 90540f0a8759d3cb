#include "boxes.h"

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* A plain decimal ("0", "1.0", ".5", "0.440") at *p, in [0, 1]. Hand-parsed rather than
 * strtod because strtod also takes signs, exponents, hex, "inf" and the locale's decimal
 * point, none of which is a coordinate LION prints. Advances *p past it on success. */
static int read_coordinate(const char **p, float *out) {
    const char *s = *p;
    double v = 0, scale = 1;
    int digits = 0;
    while (*s >= '0' && *s <= '9') {
        if (v <= 10) v = v * 10 + (*s - '0'); /* past 10 it is out of range anyway */
        s++, digits++;
    }
    if (*s == '.') {
        s++;
        while (*s >= '0' && *s <= '9') {
            scale /= 10;
            v += (*s - '0') * scale;
            s++, digits++;
        }
    }
    if (!digits || v > 1.0) return 0;
    *out = (float)v;
    *p = s;
    return 1;
}

/* The box in the bracket opened at p ('['), or 0 when it is not one. */
static int read_box(const char *p, text_box *b) {
    float v[4];
    p++;
    for (int k = 0; k < 4; k++) {
        while (is_space(*p)) p++;
        if (!read_coordinate(&p, &v[k])) return 0;
        while (is_space(*p)) p++;
        if (*p != (k < 3 ? ',' : ']')) return 0;
        p++;
    }
    b->x0 = v[0], b->y0 = v[1], b->x1 = v[2], b->y1 = v[3];
    return 1;
}

size_t boxes_parse(const char *text, text_box *out, size_t max) {
    size_t n = 0;
    if (!text) return 0;
    for (const char *p = text; *p; p++) {
        text_box b;
        if (*p != '[' || !read_box(p, &b)) continue;
        if (n < max) out[n] = b;
        n++;
    }
    return n;
}
