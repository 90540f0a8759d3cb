#include "aggregate.h"

#include <stdio.h>
#include <string.h>

int aggregate_load(aggregate_model *m, const model_config *cfg, weights *w, lion_precision p, lion_status *st) {
    memset(m, 0, sizeof *m);
    const aggregator_config *a = &cfg->aggregator;
    const vision_config *v = &cfg->vision;
    if (v->patch_size <= 0 || v->image_size % v->patch_size)
        return lion_fail(st, LION_EINVAL, "aggregator: vision image_size %d is not a multiple of patch_size %d",
                         v->image_size, v->patch_size);
    const int grid = v->image_size / v->patch_size;
    m->visual_input = cfg->visual_input;
    m->use_qformer = cfg->visual_input != VISUAL_INPUT_AGGREGATOR;
    m->use_fusion = cfg->visual_input != VISUAL_INPUT_QFORMER;
    m->vision_width = a->vision_width;
    m->vision_tokens = 1 + grid * grid; /* CLS + patches */
    m->d_model = cfg->llm.d_model;
    m->hidden_layer = a->fusion.hidden_layer;
    if (m->use_qformer) {
        if (qformer_load(&m->qformer, &a->qformer, a->vision_width, m->d_model, w, p, st)) {
            memset(m, 0, sizeof *m);
            return -1;
        }
        m->num_visual += a->qformer.num_query_tokens;
    }
    if (m->use_fusion) {
        if (fusion_load(&m->fusion, &a->fusion, a->vision_width, a->proj_hidden, m->d_model, w, p, st)) {
            aggregate_free(m);
            return -1;
        }
        m->num_visual += m->vision_tokens;
    }
    return 0;
}

void aggregate_free(aggregate_model *m) {
    if (m->use_qformer) qformer_free(&m->qformer);
    if (m->use_fusion) fusion_free(&m->fusion);
    memset(m, 0, sizeof *m);
}

size_t aggregate_matrix_bytes(const aggregate_model *m) {
    return (m->use_qformer ? qformer_matrix_bytes(&m->qformer) : 0) +
           (m->use_fusion ? fusion_matrix_bytes(&m->fusion) : 0);
}

const linear *aggregate_first_matrix(const aggregate_model *m) {
    return m->use_qformer ? &m->qformer.layers[0].self_attn.query : &m->fusion.proj1;
}

/* Request's tensor of ViT layer `layer`, checked for shape and dtype; NULL with st filled. */
static const tensor *vit_layer_find(const aggregate_model *m, const aggregate_request *r, int layer,
                                    lion_status *st) {
    for (int k = 0; k < r->n_layers; k++) {
        if (r->layers[k] != layer) continue;
        const tensor *t = &r->vit_outs[k];
        const int64_t want[] = {m->vision_tokens, m->vision_width};
        char got_s[96], want_s[96];
        if (t->dtype != DTYPE_F32 && t->dtype != DTYPE_F16 && t->dtype != DTYPE_BF16) {
            lion_fail(st, LION_EINVAL, "ViT layer %d is %s, expected F32, F16 or BF16", layer, dtype_name(t->dtype));
            return NULL;
        }
        if (t->ndim != 2 || t->shape[0] != want[0] || t->shape[1] != want[1] || !t->data) {
            lion_fail(st, LION_EINVAL, "ViT layer %d has shape %s, expected %s%s", layer,
                      shape_str(t->ndim, t->shape, got_s, sizeof got_s), shape_str(2, want, want_s, sizeof want_s),
                      t->data ? "" : " with data");
            return NULL;
        }
        return t;
    }
    char have[256] = "";
    size_t used = 0;
    for (int k = 0; k < r->n_layers && used < sizeof have; k++)
        used += (size_t)snprintf(have + used, sizeof have - used, "%s%d", k ? ", " : "", r->layers[k]);
    lion_fail(st, LION_EINVAL, "ViT layer %d missing from the request (it has layers [%s])", layer, have);
    return NULL;
}

int aggregate_request_check(const aggregate_model *m, const aggregate_request *r, lion_status *st) {
    if (r->n_layers < 0 || (r->n_layers > 0 && (!r->layers || !r->vit_outs)))
        return lion_fail(st, LION_EINVAL, "%d ViT layers given without their data", r->n_layers);
    if (!vit_layer_find(m, r, m->hidden_layer, st)) return -1;
    for (int i = 0; m->use_fusion && i < m->fusion.cfg.blocks; i++)
        if (!vit_layer_find(m, r, m->fusion.cfg.cross_layers[i], st)) return -1;
    if (!m->use_qformer) return 0;
    const qformer_config *q = &m->qformer.cfg;
    if (r->text_len < 0 || (r->text_len > 0 && !r->text_ids))
        return lion_fail(st, LION_EINVAL, "the Q-Former needs the instruction ids (%d given%s)", r->text_len,
                         r->text_len > 0 ? " without data" : "");
    if (r->text_len > q->max_position)
        return lion_fail(st, LION_ETOOBIG, "instruction of %d tokens, the Q-Former takes %d", r->text_len,
                         q->max_position);
    for (int t = 0; t < r->text_len; t++)
        if (r->text_ids[t] < 0 || r->text_ids[t] >= q->vocab_size)
            return lion_fail(st, LION_EINVAL, "instruction token %d: id %d outside the vocabulary of %d", t,
                             (int)r->text_ids[t], q->vocab_size);
    return 0;
}

/* ViT layer `layer` of every request, as f32, into one [batch, tokens, width] buffer. */
static int vit_layer_pack(float *dst, const aggregate_model *m, const aggregate_request *reqs, int batch, int layer,
                          lion_status *st) {
    const size_t per = (size_t)m->vision_tokens * m->vision_width;
    for (int b = 0; b < batch; b++) {
        const tensor *t = vit_layer_find(m, &reqs[b], layer, st);
        if (!t || convert_to_f32(dst + b * per, t->data, t->dtype, per, st)) return -1;
    }
    return 0;
}

/* The instructions right-padded to the longest one, with the padding mask. */
static int text_pack(const aggregate_request *reqs, int batch, int32_t **ids_out, uint8_t **mask_out,
                     int *len_out, arena *scratch) {
    int len = 0;
    for (int b = 0; b < batch; b++)
        if (reqs[b].text_len > len) len = reqs[b].text_len;
    /* +1: a batch of empty instructions still gets valid (unused) pointers */
    int32_t *ids = arena_alloc(scratch, (size_t)batch * len * sizeof *ids + 1);
    uint8_t *mask = arena_alloc(scratch, (size_t)batch * len + 1);
    if (!ids || !mask) return -1;
    memset(ids, 0, (size_t)batch * len * sizeof *ids); /* [PAD] = 0; masked anyway */
    memset(mask, 0, (size_t)batch * len);
    for (int b = 0; b < batch; b++) {
        if (reqs[b].text_len > 0)
            memcpy(ids + (size_t)b * len, reqs[b].text_ids, (size_t)reqs[b].text_len * sizeof *ids);
        memset(mask + (size_t)b * len, 1, (size_t)reqs[b].text_len);
    }
    *ids_out = ids;
    *mask_out = mask;
    *len_out = len;
    return 0;
}

/* The `count` rows per request of a branch's output into out, at row `first` of each request. */
static void tokens_place(float *out, const float *src, int batch, int num_visual, int first, int count, int d) {
    for (int b = 0; b < batch; b++)
        memcpy(out + ((size_t)b * num_visual + first) * d, src + (size_t)b * count * d,
               (size_t)count * d * sizeof(float));
}

int aggregate_forward(const aggregate_model *m, const aggregate_request *reqs, int batch, float *out,
                      arena *scratch, lion_status *st) {
    if (batch <= 0 || !reqs || !out)
        return lion_fail(st, LION_EINVAL, "aggregator: batch of %d requests%s", batch,
                         batch > 0 ? ", a buffer missing" : "");
    for (int b = 0; b < batch; b++)
        if (aggregate_request_check(m, &reqs[b], st)) return lion_fail_prefix(st, "request %d: ", b);

    const int d = m->d_model, tokens = m->vision_tokens;
    const size_t per = (size_t)batch * tokens * m->vision_width;
    arena_mark mark = arena_save(scratch);
    float *hidden = arena_floats(scratch, per);
    if (!hidden) goto oom;
    if (vit_layer_pack(hidden, m, reqs, batch, m->hidden_layer, st)) goto fail;
    int first = 0;
    if (m->use_qformer) {
        const int nq = m->qformer.cfg.num_query_tokens;
        int32_t *ids = NULL;
        uint8_t *mask = NULL;
        int len = 0;
        float *q_out = arena_floats(scratch, (size_t)batch * nq * d);
        if (!q_out || text_pack(reqs, batch, &ids, &mask, &len, scratch)) goto oom;
        if (qformer_forward(&m->qformer, hidden, batch, tokens, ids, mask, len, q_out, scratch, st)) goto fail;
        tokens_place(out, q_out, batch, m->num_visual, first, nq, d);
        first += nq;
    }
    if (m->use_fusion) {
        const float *cross[MODEL_MAX_INTERMEDIATE];
        for (int i = 0; i < m->fusion.cfg.blocks; i++) {
            float *c = arena_floats(scratch, per);
            if (!c) goto oom;
            if (vit_layer_pack(c, m, reqs, batch, m->fusion.cfg.cross_layers[i], st)) goto fail;
            cross[i] = c;
        }
        float *f_out = arena_floats(scratch, (size_t)batch * tokens * d);
        if (!f_out) goto oom;
        if (fusion_forward(&m->fusion, hidden, cross, batch, tokens, f_out, scratch, st)) goto fail;
        tokens_place(out, f_out, batch, m->num_visual, first, tokens, d);
    }
    arena_restore(scratch, mark);
    return 0;
oom:
    lion_fail(st, LION_ENOMEM, "aggregator: out of scratch memory for batch %d", batch);
fail:
    arena_restore(scratch, mark);
    return -1;
}
