#include "qformer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

/* ln_vision is a plain nn.LayerNorm upstream: torch's default eps, not BERT's 1e-12. */
#define LN_VISION_EPS 1e-5f

int qformer_load(qformer_model *m, const qformer_config *cfg, int vision_width, int d_model, weights *w,
                 lion_precision p, lion_status *st) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->cfg.vocab = NULL;
    m->vision_width = vision_width;
    m->d_model = d_model;
    const qformer_config *c = &m->cfg;
    if (c->hidden <= 0 || c->layers <= 0 || c->intermediate <= 0 || c->num_query_tokens <= 0 || c->vocab_size <= 0 ||
        c->max_position <= 0 || c->cross_attention_freq <= 0 || vision_width <= 0 || d_model <= 0)
        return lion_fail(st, LION_EINVAL, "qformer: every dimension must be positive");
    const int64_t h = c->hidden, s_query[] = {1, c->num_query_tokens, h}, s_w[] = {vision_width},
                  s_word[] = {c->vocab_size, h}, s_pos[] = {c->max_position, h}, s_h[] = {h},
                  s_d[] = {d_model};
    if (!(m->query_tokens = weights_get(w, st, 3, s_query, "query_tokens")) ||
        !(m->ln_vision_w = weights_get(w, st, 1, s_w, "ln_vision.weight")) ||
        !(m->ln_vision_b = weights_get(w, st, 1, s_w, "ln_vision.bias")) ||
        !(m->word_emb = weights_get(w, st, 2, s_word, "Qformer.bert.embeddings.word_embeddings.weight")) ||
        !(m->pos_emb = weights_get(w, st, 2, s_pos, "Qformer.bert.embeddings.position_embeddings.weight")) ||
        !(m->emb_ln_w = weights_get(w, st, 1, s_h, "Qformer.bert.embeddings.LayerNorm.weight")) ||
        !(m->emb_ln_b = weights_get(w, st, 1, s_h, "Qformer.bert.embeddings.LayerNorm.bias")) ||
        linear_bind(&m->proj, w, p, 0, d_model, c->hidden, st, "t5_proj.weight") ||
        !(m->proj_b = weights_get(w, st, 1, s_d, "t5_proj.bias"))) {
        linear_free(&m->proj);
        return -1;
    }
    m->layers = calloc((size_t)c->layers, sizeof *m->layers);
    if (!m->layers) {
        linear_free(&m->proj);
        return lion_fail(st, LION_ENOMEM, "qformer: out of memory");
    }
    for (int i = 0; i < c->layers; i++) {
        qformer_layer *l = &m->layers[i];
        char name[96], name2[96];
        snprintf(name, sizeof name, "Qformer.bert.encoder.layer.%d.attention", i);
        if (bert_attention_load(&l->self_attn, w, name, c->hidden, c->heads, c->hidden, c->ln_eps, p, st)) goto fail;
        l->has_cross = i % c->cross_attention_freq == 0;
        snprintf(name, sizeof name, "Qformer.bert.encoder.layer.%d.crossattention", i);
        if (l->has_cross &&
            bert_attention_load(&l->cross_attn, w, name, c->hidden, c->heads, vision_width, c->ln_eps, p, st))
            goto fail;
        snprintf(name, sizeof name, "Qformer.bert.encoder.layer.%d.intermediate", i);
        snprintf(name2, sizeof name2, "Qformer.bert.encoder.layer.%d.output", i);
        if (bert_ffn_load(&l->ffn_text, w, name, name2, c->hidden, c->intermediate, c->ln_eps, p, st)) goto fail;
        snprintf(name, sizeof name, "Qformer.bert.encoder.layer.%d.intermediate_query", i);
        snprintf(name2, sizeof name2, "Qformer.bert.encoder.layer.%d.output_query", i);
        if (bert_ffn_load(&l->ffn_query, w, name, name2, c->hidden, c->intermediate, c->ln_eps, p, st)) goto fail;
    }
    return 0;
fail:
    qformer_free(m);
    return -1;
}

void qformer_free(qformer_model *m) {
    for (int i = 0; m->layers && i < m->cfg.layers; i++) {
        qformer_layer *l = &m->layers[i];
        bert_attention_free(&l->self_attn);
        bert_attention_free(&l->cross_attn);
        bert_ffn_free(&l->ffn_text);
        bert_ffn_free(&l->ffn_query);
    }
    free(m->layers);
    linear_free(&m->proj);
    memset(m, 0, sizeof *m);
}

size_t qformer_matrix_bytes(const qformer_model *m) {
    size_t n = linear_bytes(&m->proj);
    for (int i = 0; m->layers && i < m->cfg.layers; i++) {
        const qformer_layer *l = &m->layers[i];
        n += bert_attention_bytes(&l->self_attn) + bert_ffn_bytes(&l->ffn_text) + bert_ffn_bytes(&l->ffn_query);
        if (l->has_cross) n += bert_attention_bytes(&l->cross_attn);
    }
    return n;
}

/* Rows [first, first + count) of every batch of a [batch, len, h] buffer to or from a packed
 * [batch * count, h] one: the query and text parts take different weights after attention. */
static void rows_gather(float *packed, const float *x, int batch, int len, int first, int count, int h) {
    for (int b = 0; b < batch; b++)
        memcpy(packed + (size_t)b * count * h, x + ((size_t)b * len + first) * h, (size_t)count * h * sizeof(float));
}

static void rows_scatter(float *x, const float *packed, int batch, int len, int first, int count, int h) {
    for (int b = 0; b < batch; b++)
        memcpy(x + ((size_t)b * len + first) * h, packed + (size_t)b * count * h, (size_t)count * h * sizeof(float));
}

int qformer_forward(const qformer_model *m, const float *image, int batch, int tokens, const int32_t *ids,
                    const uint8_t *mask, int text_len, float *out, arena *scratch, lion_status *st) {
    const qformer_config *c = &m->cfg;
    const int h = c->hidden, nq = c->num_query_tokens, len = nq + text_len;
    if (batch <= 0 || tokens <= 0 || text_len < 0 || !image || !out || (text_len > 0 && !ids))
        return lion_fail(st, LION_EINVAL, "qformer: batch %d, %d image tokens, text length %d%s", batch, tokens,
                         text_len, !image || !out || (text_len > 0 && !ids) ? ", a buffer missing" : "");
    if (text_len > c->max_position)
        return lion_fail(st, LION_ETOOBIG, "qformer: text of %d tokens, the position table holds %d", text_len,
                         c->max_position);
    for (int b = 0; b < batch; b++)
        for (int t = 0; t < text_len; t++) {
            int32_t id = ids[(size_t)b * text_len + t];
            if (id < 0 || id >= c->vocab_size)
                return lion_fail(st, LION_EINVAL, "qformer: request %d, text token %d: id %d outside the vocabulary of %d",
                                 b, t, (int)id, c->vocab_size);
        }

    arena_mark mark = arena_save(scratch);
    const size_t img_rows = (size_t)batch * tokens, rows = (size_t)batch * len;
    float *img = arena_floats(scratch, img_rows * m->vision_width);
    float *x = arena_floats(scratch, rows * h);
    float *part = arena_floats(scratch, rows * h); /* packed query or text rows */
    uint8_t *key_mask = arena_alloc(scratch, rows);
    if (!img || !x || !part || !key_mask) goto oom;

    layernorm_forward(img, image, m->ln_vision_w, m->ln_vision_b, (int)img_rows, m->vision_width, LN_VISION_EPS);

    for (int b = 0; b < batch; b++) {
        float *xb = x + (size_t)b * len * h;
        memcpy(xb, m->query_tokens, (size_t)nq * h * sizeof(float));
        if (text_len > 0) {
            float *text = xb + (size_t)nq * h;
            embedding_forward(text, m->word_emb, ids + (size_t)b * text_len, text_len, h);
            add_forward(text, m->pos_emb, (size_t)text_len * h); /* positions 0..T-1: text only */
        }
        memset(key_mask + (size_t)b * len, 1, (size_t)nq);
        for (int t = 0; t < text_len; t++)
            key_mask[(size_t)b * len + nq + t] = mask ? mask[(size_t)b * text_len + t] != 0 : 1;
    }
    layernorm_forward(x, x, m->emb_ln_w, m->emb_ln_b, (int)rows, h, c->ln_eps);

    for (int i = 0; i < c->layers; i++) {
        const qformer_layer *l = &m->layers[i];
        if (bert_attention_forward(&l->self_attn, x, NULL, batch, len, NULL, len, key_mask, scratch, st)) goto fail;
        rows_gather(part, x, batch, len, 0, nq, h);
        if (l->has_cross &&
            bert_attention_forward(&l->cross_attn, part, NULL, batch, nq, img, tokens, NULL, scratch, st))
            goto fail;
        if (bert_ffn_forward(&l->ffn_query, part, batch * nq, scratch, st)) goto fail;
        rows_scatter(x, part, batch, len, 0, nq, h);
        /* The text rows only feed later layers' self-attention: the last layer skips them. */
        if (text_len > 0 && i + 1 < c->layers) {
            rows_gather(part, x, batch, len, nq, text_len, h);
            if (bert_ffn_forward(&l->ffn_text, part, batch * text_len, scratch, st)) goto fail;
            rows_scatter(x, part, batch, len, nq, text_len, h);
        }
    }
    rows_gather(part, x, batch, len, 0, nq, h);
    if (linear_apply(&m->proj, out, part, m->proj_b, batch * nq, scratch, st)) goto fail;
    arena_restore(scratch, mark);
    return 0;
oom:
    lion_fail(st, LION_ENOMEM, "qformer: out of scratch memory for batch %d", batch);
fail:
    arena_restore(scratch, mark);
    return -1;
}
