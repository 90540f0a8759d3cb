#include "fusion.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

/* ln_adapter is a plain nn.LayerNorm upstream: torch's default eps, not BERT's 1e-12. */
#define LN_ADAPTER_EPS 1e-5f

int fusion_load(fusion_model *m, const fusion_config *cfg, int width, int proj_hidden, int d_model, weights *w,
                lion_precision p, lion_status *st) {
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
    const int64_t s_w[] = {width}, s_ph[] = {proj_hidden}, s_d[] = {d_model};
    if (!(m->ln_w = weights_get(w, st, 1, s_w, "ln_adapter.weight")) ||
        !(m->ln_b = weights_get(w, st, 1, s_w, "ln_adapter.bias")) ||
        linear_bind(&m->proj1, w, p, 0, proj_hidden, width, st, "adapter_proj.0.weight") ||
        !(m->proj1_b = weights_get(w, st, 1, s_ph, "adapter_proj.0.bias")) ||
        linear_bind(&m->proj2, w, p, 0, d_model, proj_hidden, st, "adapter_proj.2.weight") ||
        !(m->proj2_b = weights_get(w, st, 1, s_d, "adapter_proj.2.bias")))
        goto fail;
    m->blocks = calloc((size_t)c->blocks, sizeof *m->blocks);
    if (!m->blocks) {
        lion_fail(st, LION_ENOMEM, "fusion: out of memory");
        goto fail;
    }
    for (int i = 0; i < c->blocks; i++) {
        fusion_block *b = &m->blocks[i];
        char name[96], name2[96];
        snprintf(name, sizeof name, "fusion_adapter.blocks.%d.attention", i);
        if (bert_attention_load(&b->self_attn, w, name, width, c->heads, width, c->ln_eps, p, st)) goto fail;
        snprintf(name, sizeof name, "fusion_adapter.blocks.%d.crossattention", i);
        if (bert_attention_load(&b->cross_attn, w, name, width, c->heads, width, c->ln_eps, p, st)) goto fail;
        snprintf(name, sizeof name, "fusion_adapter.blocks.%d.intermediate", i);
        snprintf(name2, sizeof name2, "fusion_adapter.blocks.%d.output", i);
        if (bert_ffn_load(&b->ffn, w, name, name2, width, c->intermediate, c->ln_eps, p, st)) goto fail;
    }
    return 0;
fail:
    fusion_free(m);
    return -1;
}

void fusion_free(fusion_model *m) {
    for (int i = 0; m->blocks && i < m->cfg.blocks; i++) {
        bert_attention_free(&m->blocks[i].self_attn);
        bert_attention_free(&m->blocks[i].cross_attn);
        bert_ffn_free(&m->blocks[i].ffn);
    }
    free(m->blocks);
    linear_free(&m->proj1);
    linear_free(&m->proj2);
    memset(m, 0, sizeof *m);
}

size_t fusion_matrix_bytes(const fusion_model *m) {
    size_t n = linear_bytes(&m->proj1) + linear_bytes(&m->proj2);
    for (int i = 0; m->blocks && i < m->cfg.blocks; i++)
        n += bert_attention_bytes(&m->blocks[i].self_attn) + bert_attention_bytes(&m->blocks[i].cross_attn) +
             bert_ffn_bytes(&m->blocks[i].ffn);
    return n;
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
    /* GELU as a post-op: in f32 the same linear_forward + gelu_forward as before, to the bit */
    const linear_post gelu = {.act = LINEAR_ACT(ACT_GELU)};
    int rc = linear_forward_post(&m->proj1, mid, x, m->proj1_b, (int)rows, &gelu, scratch, st) ||
             linear_apply(&m->proj2, out, mid, m->proj2_b, (int)rows, scratch, st);
    arena_restore(scratch, mark);
    return rc ? -1 : 0;
}
