#include "testing.h"

#include <math.h>
#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "weights.h"

int testing_passed, testing_failed;

void testing_fail(const char *file, int line, const char *fmt, ...) {
    testing_failed++;
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int testing_finish(void) {
    printf("%d passed, %d failed\n", testing_passed, testing_failed);
    if (testing_failed) return 1;
    if (testing_passed == 0) {
        fprintf(stderr, "FAIL: no check ran: the test returned before checking anything "
                        "(a test that cannot run here must call testing_skip(\"why\"))\n");
        return 1;
    }
    return 0;
}

void testing_skip(const char *fmt, ...) {
    fflush(stdout);
    fprintf(stderr, "SKIP: ");
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    printf("%d passed, %d failed, skipped\n", testing_passed, testing_failed);
    fflush(stdout);
    exit(testing_failed ? 1 : TESTING_SKIP);
}

const char *testing_fixture(const char *name) {
    static char path[4096];
    const char *dir = getenv("LION_BUILD_DIR");
    snprintf(path, sizeof path, "%s/fixtures/%s", dir ? dir : "build", name);
    return path;
}

double testing_max_abs_err(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (isnan(d)) return INFINITY;
        if (d > m) m = d;
    }
    return m;
}

double testing_rel_err(const float *a, const float *b, size_t n) {
    double scale = 1e-12;
    for (size_t i = 0; i < n; i++)
        if (fabs(b[i]) > scale) scale = fabs(b[i]);
    return testing_max_abs_err(a, b, n) / scale;
}

unsigned char *testing_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0) {
        fclose(f);
        return NULL;
    }
    unsigned char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf) buf[n] = '\0'; /* callers parse text files (JSON) as strings */
    fclose(f);
    *len = (size_t)n;
    return buf;
}

const void *testing_tensor_at(const char *file, int line, safetensors_file *f, const char *key, int dtype, size_t n) {
    lion_status st;
    tensor t;
    if (!f || safetensors_get(f, key, &t, &st) || (int)t.dtype != dtype || (size_t)tensor_numel(&t) != n) {
        testing_fail(file, line, "fixture tensor %s missing, or not %zu values of dtype %d", key, n, dtype);
        return NULL;
    }
    return t.data;
}

int testing_argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

int testing_open_model(const char *name, const char *prefix, weights *w, safetensors_file **io) {
    char path[4200], io_path[4200];
    lion_status st;
    const char *base = testing_fixture(name);
    const int n = snprintf(path, sizeof path, "%s.safetensors", base);
    const int n_io = snprintf(io_path, sizeof io_path, "%s_io.safetensors", base);
    if (n < 0 || n_io < 0 || (size_t)n >= sizeof path || (size_t)n_io >= sizeof io_path) {
        testing_fail(__FILE__, __LINE__, "fixture %s: path too long", name);
        return -1;
    }
    if (weights_open(w, path, prefix, &st)) {
        testing_fail(__FILE__, __LINE__, "%s", st.msg);
        return -1;
    }
    if (safetensors_open(io, io_path, &st)) {
        testing_fail(__FILE__, __LINE__, "%s", st.msg);
        weights_close(w);
        return -1;
    }
    return 0;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static char *unhex(const char *h, size_t n) {
    char *s = malloc(n / 2 + 1);
    if (!s) return NULL;
    for (size_t i = 0; i + 1 < n; i += 2) s[i / 2] = (char)(hex_value(h[i]) * 16 + hex_value(h[i + 1]));
    s[n / 2] = '\0';
    return s;
}

testing_text_case *testing_read_text_cases(const char *fixture_name, size_t max_ids, size_t *n) {
    FILE *f = fopen(testing_fixture(fixture_name), "r");
    *n = 0;
    if (!f) return NULL;
    size_t cap = 0, line_cap = 0;
    testing_text_case *cases = NULL;
    char *line = NULL;
    while (getline(&line, &line_cap, f) > 0) {
        char *t1 = strchr(line, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        if (!t2) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 256;
            testing_text_case *grown = realloc(cases, cap * sizeof *cases);
            if (!grown) break;
            cases = grown;
        }
        testing_text_case *c = &cases[(*n)++];
        c->text = unhex(line, (size_t)(t1 - line));
        c->decoded = unhex(t2 + 1, strcspn(t2 + 1, "\n"));
        c->ids = malloc((max_ids ? max_ids : 1) * sizeof *c->ids);
        c->n_ids = 0;
        for (char *p = t1 + 1, *end; c->ids && p < t2 && c->n_ids < max_ids; p = end) {
            long v = strtol(p, &end, 10);
            if (end == p) break;
            c->ids[c->n_ids++] = (int32_t)v;
        }
    }
    free(line);
    fclose(f);
    return cases;
}

void testing_free_text_cases(testing_text_case *cases, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(cases[i].text);
        free(cases[i].decoded);
        free(cases[i].ids);
    }
    free(cases);
}
