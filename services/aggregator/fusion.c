#include "fusion.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

/* ln_adapter is a plain nn.LayerNorm upstream: torch's default eps, not BERT's 1e-12. */
#define LN_ADAPTER_EPS 1e-5f

int fusion_load(fusion_model *m, const fusion_config *cfg, int width, int proj_hidden, int d_model, weights *w,
                lion_status *st) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->width = width;
    m->proj_hidden = proj_hidden;
    m->d_model = d_model;
    const fusion_config *c = &m->cfg;
    if (c->blocks <= 0 || c->blocks > MODEL_MAX_INTERMEDIATE || c->intermediate <= 0 || width <= 0 ||
        proj_hidden <= 0 || d_model <= 0)
        return lion_fail(st, LION_EINVAL, "fusion: %d blocks (at most %d), every dimension positive", c->blocks,
                         MODEL_MAX_INTERMEDIATE);
    const int64_t s_w[] = {width}, s_p1[] = {proj_hidden, width}, s_ph[] = {proj_hidden},
                  s_p2[] = {d_model, proj_hidden}, s_d[] = {d_model};
    if (!(m->ln_w = weights_get(w, st, 1, s_w, "ln_adapter.weight")) ||
        !(m->ln_b = weights_get(w, st, 1, s_w, "ln_adapter.bias")) ||
        !(m->proj1_w = weights_get(w, st, 2, s_p1, "adapter_proj.0.weight")) ||
        !(m->proj1_b = weights_get(w, st, 1, s_ph, "adapter_proj.0.bias")) ||
        !(m->proj2_w = weights_get(w, st, 2, s_p2, "adapter_proj.2.weight")) ||
        !(m->proj2_b = weights_get(w, st, 1, s_d, "adapter_proj.2.bias")))
        return -1;
    m->blocks = calloc((size_t)c->blocks, sizeof *m->blocks);
    if (!m->blocks) return lion_fail(st, LION_ENOMEM, "fusion: out of memory");
    for (int i = 0; i < c->blocks; i++) {
        fusion_block *b = &m->blocks[i];
        char p[96], p2[96];
        snprintf(p, sizeof p, "fusion_adapter.blocks.%d.attention", i);
        if (bert_attention_load(&b->self_attn, w, p, width, c->heads, width, c->ln_eps, st)) goto fail;
        snprintf(p, sizeof p, "fusion_adapter.blocks.%d.crossattention", i);
        if (bert_attention_load(&b->cross_attn, w, p, width, c->heads, width, c->ln_eps, st)) goto fail;
        snprintf(p, sizeof p, "fusion_adapter.blocks.%d.intermediate", i);
        snprintf(p2, sizeof p2, "fusion_adapter.blocks.%d.output", i);
        if (bert_ffn_load(&b->ffn, w, p, p2, width, c->intermediate, c->ln_eps, st)) goto fail;
    }
    return 0;
fail:
    fusion_free(m);
    return -1;
}

void fusion_free(fusion_model *m) {
    free(m->blocks);
    memset(m, 0, sizeof *m);
}

int fusion_forward(const fusion_model *m, const float *hidden, const float *const *cross, int batch, int tokens,
                   float *out, arena *scratch, lion_status *st) {
    const int w = m->width;
    const size_t rows = (size_t)batch * tokens;
    int have_cross = cross != NULL;
    for (int i = 0; have_cross && i < m->cfg.blocks; i++) have_cross = cross[i] != NULL;
    if (batch <= 0 || tokens <= 0 || !hidden || !have_cross || !out)
        return lion_fail(st, LION_EINVAL, "fusion: batch %d, %d tokens%s", batch, tokens,
                         !hidden || !have_cross || !out ? ", a buffer missing" : "");
    arena_mark mark = arena_save(scratch);
    float *x = arena_floats(scratch, rows * w);
    float *mid = arena_floats(scratch, rows * m->proj_hidden);
    if (!x || !mid) {
        arena_restore(scratch, mark);
        return lion_fail(st, LION_ENOMEM, "fusion: out of scratch memory for batch %d", batch);
    }
    memcpy(x, hidden, rows * w * sizeof(float));
    for (int i = 0; i < m->cfg.blocks; i++) {
        const fusion_block *b = &m->blocks[i];
        if (bert_attention_forward(&b->self_attn, x, NULL, batch, tokens, NULL, tokens, NULL, scratch, st) ||
            bert_attention_forward(&b->cross_attn, x, NULL, batch, tokens, cross[i], tokens, NULL, scratch, st) ||
            bert_ffn_forward(&b->ffn, x, (int)rows, scratch, st)) {
            arena_restore(scratch, mark);
            return -1;
        }
    }
    layernorm_forward(x, x, m->ln_w, m->ln_b, (int)rows, w, LN_ADAPTER_EPS);
    linear_forward(mid, x, m->proj1_w, m->proj1_b, (int)rows, w, m->proj_hidden);
    gelu_forward(mid, rows * m->proj_hidden);
    linear_forward(out, mid, m->proj2_w, m->proj2_b, (int)rows, m->proj_hidden, m->d_model);
    arena_restore(scratch, mark);
    return 0;
}
