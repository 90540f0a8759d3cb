#include "tagging_head.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tagging_head_load(tagging_head *t, weights *w, const char *prefix, int hidden, int heads, int layers,
                      int intermediate, int kv_width, float ln_eps, lion_precision p, lion_status *st) {
    memset(t, 0, sizeof *t);
    if (hidden <= 0 || heads <= 0 || hidden % heads || layers <= 0 || intermediate <= 0 || kv_width <= 0)
        return lion_fail(st, LION_EINVAL,
                         "tagging head: hidden %d, heads %d, layers %d, intermediate %d, kv_width %d do not fit",
                         hidden, heads, layers, intermediate, kv_width);
    *t = (tagging_head){.hidden = hidden, .heads = heads, .layers = layers, .intermediate = intermediate,
                        .kv_width = kv_width, .ln_eps = ln_eps};
    t->layer = calloc((size_t)layers, sizeof *t->layer);
    if (!t->layer) return lion_fail(st, LION_ENOMEM, "tagging head: out of memory");
    for (int i = 0; i < layers; i++) {
        char attn[256], inter[256], out[256];
        snprintf(attn, sizeof attn, "%sencoder.layer.%d.crossattention", prefix, i);
        snprintf(inter, sizeof inter, "%sencoder.layer.%d.intermediate", prefix, i);
        snprintf(out, sizeof out, "%sencoder.layer.%d.output", prefix, i);
        if (bert_attention_load(&t->layer[i].cross, w, attn, hidden, heads, kv_width, ln_eps, p, st) ||
            bert_ffn_load(&t->layer[i].ffn, w, inter, out, hidden, intermediate, ln_eps, p, st)) {
            tagging_head_free(t);
            return -1;
        }
    }
    return 0;
}

void tagging_head_free(tagging_head *t) {
    for (int i = 0; t->layer && i < t->layers; i++) {
        bert_attention_free(&t->layer[i].cross);
        bert_ffn_free(&t->layer[i].ffn);
    }
    free(t->layer);
    memset(t, 0, sizeof *t);
}

size_t tagging_head_matrix_bytes(const tagging_head *t) {
    size_t n = 0;
    for (int i = 0; t->layer && i < t->layers; i++)
        n += bert_attention_bytes(&t->layer[i].cross) + bert_ffn_bytes(&t->layer[i].ffn);
    return n;
}

int tagging_head_forward(const tagging_head *t, float *x, int q_len, const float *image, int k_len,
                         const float *first_query, arena *a, lion_status *st) {
    for (int i = 0; i < t->layers; i++) {
        const tagging_layer *l = &t->layer[i];
        if (bert_attention_forward(&l->cross, x, i == 0 ? first_query : NULL, 1, q_len, image, k_len, NULL, a, st) ||
            bert_ffn_forward(&l->ffn, x, q_len, a, st))
            return -1;
    }
    return 0;
}
