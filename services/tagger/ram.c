#include "ram.h"

#include <stdlib.h>
#include <string.h>

#include "ops.h"

void ram_config_from_model(ram_config *rc, const tagger_config *tc) {
    memset(rc, 0, sizeof *rc);
    rc->swin = (swin_config){.image_size = tc->image_size, .patch_size = tc->patch_size,
                             .embed_dim = tc->embed_dim, .n_stages = tc->n_stages, .window = tc->window,
                             .mlp_ratio = tc->mlp_ratio, .ln_eps = tc->ln_eps};
    for (int i = 0; i < tc->n_stages && i < SWIN_MAX_STAGES; i++) {
        rc->swin.depths[i] = tc->depths[i];
        rc->swin.heads[i] = tc->heads[i];
    }
    rc->embed_out = tc->embed_out;
    rc->head_hidden = tc->head.hidden;
    rc->head_heads = tc->head.heads;
    rc->head_layers = tc->head.layers;
    rc->head_intermediate = tc->head.intermediate;
    rc->head_ln_eps = tc->head.ln_eps;
    rc->num_tags = tc->num_tags;
    rc->tags = (const char *const *)tc->tags;
    rc->thresholds = tc->thresholds;
    rc->n_delete_tags = tc->n_delete_tags;
    rc->delete_tags = tc->delete_tags;
}

static int tag_list_copy(ram_model *m, const ram_config *c, lion_status *st) {
    const int n = c->num_tags;
    if (n <= 0 || !c->tags || !c->thresholds)
        return lion_fail(st, LION_EINVAL, "ram: %d tags; the tag names and thresholds are required", n);
    if (c->n_delete_tags < 0 || (c->n_delete_tags > 0 && !c->delete_tags))
        return lion_fail(st, LION_EINVAL, "ram: %d delete_tags without a list", c->n_delete_tags);
    m->tags = calloc((size_t)n, sizeof *m->tags);
    m->thresholds = malloc((size_t)n * sizeof *m->thresholds);
    m->deleted = calloc((size_t)n, 1);
    m->delete_tags = malloc((size_t)(c->n_delete_tags + 1) * sizeof *m->delete_tags);
    if (!m->tags || !m->thresholds || !m->deleted || !m->delete_tags)
        return lion_fail(st, LION_ENOMEM, "ram: out of memory for the tag list");
    for (int i = 0; i < n; i++) {
        if (!c->tags[i]) return lion_fail(st, LION_EINVAL, "ram: tag %d has no name", i);
        if (!(c->thresholds[i] >= 0.0f && c->thresholds[i] <= 1.0f))
            return lion_fail(st, LION_EINVAL, "ram: threshold %d (%g) is not in [0, 1]", i, c->thresholds[i]);
        if (!(m->tags[i] = strdup(c->tags[i]))) return lion_fail(st, LION_ENOMEM, "ram: out of memory");
        m->thresholds[i] = c->thresholds[i];
    }
    for (int i = 0; i < c->n_delete_tags; i++) {
        int k = c->delete_tags[i];
        if (k < 0 || k >= n) return lion_fail(st, LION_EINVAL, "ram: delete_tags[%d] = %d is not a tag index (0..%d)", i, k, n - 1);
        m->deleted[k] = 1;
        m->delete_tags[i] = k;
    }
    m->cfg.tags = (const char *const *)m->tags;
    m->cfg.thresholds = m->thresholds;
    m->cfg.delete_tags = m->delete_tags;
    return 0;
}

/* The label queries and layer 0's projection of them: image-independent, so done once here. */
static int label_queries_compute(ram_model *m, weights *w, lion_status *st) {
    const ram_config *c = &m->cfg;
    const int64_t n = c->num_tags, eo = c->embed_out, hid = c->head_hidden;
    int64_t s_embed[] = {n, eo}, s_proj[] = {hid, eo}, s_bias[] = {hid};
    const float *embed = weights_get(w, st, 2, s_embed, "label_embed"), *proj_w = NULL, *proj_b = NULL;
    if (!embed) return -1;
    if (weights_has(w, "wordvec_proj.weight") || hid != eo) {
        if (!(proj_w = weights_get(w, st, 2, s_proj, "wordvec_proj.weight")) ||
            !(proj_b = weights_get(w, st, 1, s_bias, "wordvec_proj.bias")))
            return -1;
    }
    m->labels = malloc((size_t)n * hid * sizeof(float));
    m->first_query = malloc((size_t)n * hid * sizeof(float));
    if (!m->labels || !m->first_query) return lion_fail(st, LION_ENOMEM, "ram: out of memory for the label queries");
    if (proj_w) linear_forward(m->labels, embed, proj_w, proj_b, (int)n, (int)eo, (int)hid);
    else memcpy(m->labels, embed, (size_t)n * hid * sizeof(float));
    relu_forward(m->labels, (size_t)n * hid);
    const tagging_layer *l0 = &m->head.layer[0];
    arena a; /* the bf16 product's panels */
    arena_init(&a, 0);
    int rc = linear_apply(&l0->cross.query, m->first_query, m->labels, l0->cross.query_b, (int)n, &a, st);
    arena_free(&a);
    return rc;
}

int ram_load(ram_model *m, const ram_config *c, weights *w, lion_precision p, lion_status *st) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    if (c->embed_out <= 0) return lion_fail(st, LION_EINVAL, "ram: embed_out %d must be positive", c->embed_out);
    if (tag_list_copy(m, c, st) || swin_load(&m->swin, &c->swin, w, "visual_encoder.", p, st) ||
        tagging_head_load(&m->head, w, "tagging_head.", c->head_hidden, c->head_heads, c->head_layers,
                          c->head_intermediate, c->embed_out, c->head_ln_eps, p, st))
        goto fail;
    const int64_t eo = c->embed_out;
    int64_t s_eo[] = {eo}, s_one[] = {1};
    if (linear_bind(&m->image_proj, w, p, 0, c->embed_out, m->swin.width, st, "image_proj.weight") ||
        !(m->image_proj_b = weights_get(w, st, 1, s_eo, "image_proj.bias")) ||
        linear_bind(&m->fc, w, p, 0, 1, c->head_hidden, st, "fc.weight") ||
        !(m->fc_b = weights_get(w, st, 1, s_one, "fc.bias")) || label_queries_compute(m, w, st))
        goto fail;
    return 0;
fail:
    ram_free(m);
    return -1;
}

void ram_free(ram_model *m) {
    swin_free(&m->swin);
    tagging_head_free(&m->head);
    linear_free(&m->image_proj);
    linear_free(&m->fc);
    if (m->tags)
        for (int i = 0; i < m->cfg.num_tags; i++) free(m->tags[i]);
    free(m->tags);
    free(m->thresholds);
    free(m->delete_tags);
    free(m->deleted);
    free(m->labels);
    free(m->first_query);
    memset(m, 0, sizeof *m);
}

size_t ram_matrix_bytes(const ram_model *m) {
    return swin_matrix_bytes(&m->swin) + tagging_head_matrix_bytes(&m->head) + linear_bytes(&m->image_proj) +
           linear_bytes(&m->fc);
}

static int pixels_check(const ram_model *m, const tensor *p, lion_status *st) {
    const int s = m->cfg.swin.image_size;
    char buf[96];
    if (!p || !p->data) return lion_fail(st, LION_EINVAL, "ram: no pixels");
    if (p->dtype != DTYPE_F32)
        return lion_fail(st, LION_EINVAL, "ram: pixels are %s, expected F32", dtype_name(p->dtype));
    if (p->ndim != 4 || p->shape[0] < 1 || p->shape[0] > 4096 || p->shape[1] != 3 || p->shape[2] != s ||
        p->shape[3] != s)
        return lion_fail(st, LION_EINVAL, "ram: pixels have shape %s, expected [batch, 3, %d, %d]",
                         shape_str(p->ndim, p->shape, buf, sizeof buf), s, s);
    return 0;
}

int ram_logits(const ram_model *m, const tensor *pixels, float *logits, arena *a, lion_status *st) {
    if (pixels_check(m, pixels, st)) return -1;
    const ram_config *c = &m->cfg;
    const int batch = (int)pixels->shape[0], t = m->swin.tokens, n = c->num_tags, hid = c->head_hidden;
    arena_mark mark = arena_save(a);
    float *vis = arena_floats(a, (size_t)batch * t * m->swin.width);
    float *img = arena_floats(a, (size_t)batch * t * c->embed_out);
    float *x = arena_floats(a, (size_t)n * hid);
    if (!vis || !img || !x) {
        arena_restore(a, mark);
        return lion_fail(st, LION_ENOMEM, "ram: out of scratch memory for batch %d", batch);
    }
    if (swin_forward(&m->swin, pixels->data, batch, vis, a, st)) goto fail;
    if (linear_apply(&m->image_proj, img, vis, m->image_proj_b, batch * t, a, st)) goto fail;
    /* one image at a time: the head's activations scale with the tag count, not the batch */
    for (int b = 0; b < batch; b++) {
        memcpy(x, m->labels, (size_t)n * hid * sizeof(float));
        if (tagging_head_forward(&m->head, x, n, img + (size_t)b * t * c->embed_out, t, m->first_query, a, st))
            goto fail;
        if (linear_apply(&m->fc, logits + (size_t)b * n, x, m->fc_b, n, a, st)) goto fail;
    }
    arena_restore(a, mark);
    return 0;
fail:
    arena_restore(a, mark);
    return -1;
}

static int tag_by_score_desc(const void *pa, const void *pb) {
    const ram_tag *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return (a->index > b->index) - (a->index < b->index);
}

/* RAM joins with " | " and LION replaces " |" with ","; done literally so that a tag name
 * holding either sequence comes out as upstream's does. */
static char *prompt_build(const ram_model *m, const ram_tag *tags, int n) {
    size_t len = 1;
    for (int i = 0; i < n; i++) len += strlen(m->tags[tags[i].index]) + 3;
    char *s = malloc(len), *p = s;
    if (!s) return NULL;
    for (int i = 0; i < n; i++) {
        const char *name = m->tags[tags[i].index];
        size_t k = strlen(name);
        if (i) memcpy(p, " | ", 3), p += 3;
        memcpy(p, name, k);
        p += k;
    }
    *p = '\0';
    char *out = s;
    for (const char *r = s; *r;) {
        if (r[0] == ' ' && r[1] == '|') *out++ = ',', r += 2;
        else *out++ = *r++;
    }
    *out = '\0';
    return s;
}

int ram_select(const ram_model *m, const float *logits, int top_k, ram_result *r, lion_status *st) {
    const int n = m->cfg.num_tags;
    memset(r, 0, sizeof *r);
    if (top_k < 0 || top_k > n)
        return lion_fail(st, LION_EINVAL, "ram: top_k %d is outside 0..%d", top_k, n);
    ram_tag *all = malloc((size_t)n * sizeof *all);
    r->tags = malloc((size_t)n * sizeof *r->tags);
    if (!all || !r->tags) goto oom;
    for (int i = 0; i < n; i++) {
        all[i] = (ram_tag){i, sigmoidf_stable(logits[i])};
        if (all[i].score > m->thresholds[i] && !m->deleted[i]) r->tags[r->n_tags++] = all[i];
    }
    if (!(r->prompt = prompt_build(m, r->tags, r->n_tags))) goto oom;
    if (top_k > 0) {
        qsort(all, (size_t)n, sizeof *all, tag_by_score_desc);
        r->n_top = top_k;
        r->top = all;
        all = NULL;
    }
    free(all);
    return 0;
oom:
    free(all);
    ram_result_free(r);
    return lion_fail(st, LION_ENOMEM, "ram: out of memory for the tag list");
}

void ram_result_free(ram_result *r) {
    free(r->tags);
    free(r->prompt);
    free(r->top);
    memset(r, 0, sizeof *r);
}

int ram_tag_images(const ram_model *m, const tensor *pixels, int top_k, ram_result *results, arena *a,
                   lion_status *st) {
    if (pixels_check(m, pixels, st)) return -1;
    const int batch = (int)pixels->shape[0], n = m->cfg.num_tags;
    if (top_k < 0 || top_k > n) return lion_fail(st, LION_EINVAL, "ram: top_k %d is outside 0..%d", top_k, n);
    float *logits = malloc((size_t)batch * n * sizeof(float));
    if (!logits) return lion_fail(st, LION_ENOMEM, "ram: out of memory for the logits");
    int b = 0;
    if (ram_logits(m, pixels, logits, a, st)) goto fail;
    for (; b < batch; b++)
        if (ram_select(m, logits + (size_t)b * n, top_k, &results[b], st)) goto fail;
    free(logits);
    return 0;
fail:
    while (b-- > 0) ram_result_free(&results[b]);
    free(logits);
    return -1;
}
