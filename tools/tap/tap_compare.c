#include "tap_compare.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int differ(char *diff, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int differ(char *diff, size_t len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(diff, len, fmt, ap);
    va_end(ap);
    return 1;
}

static const char *str_or_empty(const char *s) { return s ? s : ""; }

/* The element at byte offset off, as a number for the message. */
static double element_at(const tensor *t, size_t off) {
    size_t i = off / dtype_size(t->dtype);
    lion_status st;
    float f = 0;
    switch (t->dtype) {
    case DTYPE_F32: case DTYPE_F16: case DTYPE_BF16:
        convert_to_f32(&f, (const char *)t->data + i * dtype_size(t->dtype), t->dtype, 1, &st);
        return f;
    case DTYPE_I8: return ((const int8_t *)t->data)[i];
    case DTYPE_U8: return ((const uint8_t *)t->data)[i];
    case DTYPE_I32: return ((const int32_t *)t->data)[i];
    case DTYPE_I64: return (double)((const int64_t *)t->data)[i];
    default: return 0;
    }
}

static int compare_tensor(const envelope_msg *got, const envelope_msg *want, int i, char *diff, size_t len) {
    const tensor *g = &got->tensors[i], *w = &want->tensors[i];
    const char *gname = got->env->tensors[i]->name, *wname = want->env->tensors[i]->name;
    if (strcmp(gname, wname) != 0)
        return differ(diff, len, "tensor %d: got '%.64s', dumped '%.64s'", i, gname, wname);
    if (g->dtype != w->dtype)
        return differ(diff, len, "tensor '%.64s': dtype %s, dumped %s", gname, dtype_name(g->dtype),
                      dtype_name(w->dtype));
    char gs[160], ws[160];
    shape_str(g->ndim, g->shape, gs, sizeof gs);
    shape_str(w->ndim, w->shape, ws, sizeof ws);
    if (strcmp(gs, ws) != 0) return differ(diff, len, "tensor '%.64s': shape %s, dumped %s", gname, gs, ws);
    size_t n = tensor_nbytes(g);
    const unsigned char *a = g->data, *b = w->data;
    for (size_t off = 0; off < n; off++)
        if (a[off] != b[off]) {
            size_t el = off / dtype_size(g->dtype);
            return differ(diff, len, "tensor '%.64s': first difference at byte %zu (element %zu: %.9g, dumped %.9g)",
                          gname, off, el, element_at(g, off), element_at(w, off));
        }
    return 0;
}

static int compare_sequences(const Lion__Result *g, const Lion__Result *w, char *diff, size_t len) {
    if (g->n_sequences != w->n_sequences)
        return differ(diff, len, "result: %zu sequences, dumped %zu", g->n_sequences, w->n_sequences);
    for (size_t i = 0; i < g->n_sequences; i++) {
        const Lion__Sequence *a = g->sequences[i], *b = w->sequences[i];
        if (strcmp(str_or_empty(a->text), str_or_empty(b->text)) != 0)
            return differ(diff, len, "result: sequence %zu text \"%.100s\", dumped \"%.100s\"", i,
                          str_or_empty(a->text), str_or_empty(b->text));
        if (a->n_token_ids != b->n_token_ids ||
            (a->n_token_ids && memcmp(a->token_ids, b->token_ids, a->n_token_ids * sizeof *a->token_ids)))
            return differ(diff, len, "result: sequence %zu token ids differ", i);
    }
    return 0;
}

static int compare_tags(const char *what, Lion__Tag **g, size_t ng, Lion__Tag **w, size_t nw, char *diff,
                        size_t len) {
    if (ng != nw) return differ(diff, len, "result: %zu %s, dumped %zu", ng, what, nw);
    for (size_t i = 0; i < ng; i++)
        if (strcmp(str_or_empty(g[i]->name), str_or_empty(w[i]->name)) != 0)
            return differ(diff, len, "result: %s %zu is '%.64s', dumped '%.64s'", what, i, str_or_empty(g[i]->name),
                          str_or_empty(w[i]->name));
    return 0;
}

/* Field by field first, for a readable difference; then the packed bytes, so that
 * nothing the named checks skip (scores, boxes) can differ unseen. */
static int compare_result(const Lion__Result *gr, const Lion__Result *wr, char *diff, size_t len) {
    /* whether a cache answered, and when the first token came, are how, not what: a replay
     * into a fresh worker misses where the dumped answer may have hit, and runs later */
    Lion__Result empty = LION__RESULT__INIT, gc = gr ? *gr : empty, wc = wr ? *wr : empty;
    gc.has_cache_hit = wc.has_cache_hit = 0;
    gc.has_first_token_us = wc.has_first_token_us = 0;
    const Lion__Result *g = &gc, *w = &wc;
    if (compare_sequences(g, w, diff, len) || compare_tags("tags", g->tags, g->n_tags, w->tags, w->n_tags, diff, len) ||
        compare_tags("top tags", g->top_tags, g->n_top_tags, w->top_tags, w->n_top_tags, diff, len))
        return 1;
    size_t gn = lion__result__get_packed_size(g), wn = lion__result__get_packed_size(w);
    uint8_t *gb = malloc(gn ? gn : 1), *wb = malloc(wn ? wn : 1);
    int same = gb && wb;
    if (same) {
        lion__result__pack(g, gb);
        lion__result__pack(w, wb);
        same = gn == wn && memcmp(gb, wb, gn) == 0;
    }
    free(gb);
    free(wb);
    return same ? 0 : differ(diff, len, "result: scores or boxes differ");
}

int tap_compare_replies(const envelope_msg *got, const envelope_msg *want, char *diff, size_t len) {
    const Lion__Envelope *g = got->env, *w = want->env;
    if (g->kind != w->kind) {
        if (g->error)
            return differ(diff, len, "kind: got %s (%s: %.200s), dumped %s", lion_kind_name(g->kind),
                          lion_code_name(g->error->code), str_or_empty(g->error->message), lion_kind_name(w->kind));
        return differ(diff, len, "kind: got %s, dumped %s", lion_kind_name(g->kind), lion_kind_name(w->kind));
    }
    if (g->error && w->error &&
        (g->error->code != w->error->code || strcmp(str_or_empty(g->error->message), str_or_empty(w->error->message))))
        return differ(diff, len, "error: got %s: %.200s, dumped %s: %.200s", lion_code_name(g->error->code),
                      str_or_empty(g->error->message), lion_code_name(w->error->code), str_or_empty(w->error->message));
    if (got->n_tensors != want->n_tensors)
        return differ(diff, len, "%d tensors, dumped %d", got->n_tensors, want->n_tensors);
    for (int i = 0; i < got->n_tensors; i++)
        if (compare_tensor(got, want, i, diff, len)) return 1;
    return compare_result(g->result, w->result, diff, len);
}
