#include "aggregate.h"

#include <stdio.h>
#include <string.h>

int aggregate_load(aggregate_model *m, const model_config *cfg, weights *w, lion_status *st) {
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
        if (qformer_load(&m->qformer, &a->qformer, a->vision_width, m->d_model, w, st)) return -1;
        m->num_visual += a->qformer.num_query_tokens;
    }
    if (m->use_fusion) {
        if (fusion_load(&m->fusion, &a->fusion, a->vision_width, a->proj_hidden, m->d_model, w, st)) {
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

/* The data of ViT layer `layer` from the input, checked to be F32 [batch, tokens, width]. */
static const float *vit_layer_find(const aggregate_model *m, const aggregate_input *in, int layer,
                                   lion_status *st) {
    for (int k = 0; k < in->n_layers; k++) {
        if (in->layers[k] != layer) continue;
        const tensor *t = &in->vit_outs[k];
        const int64_t want[] = {in->batch, m->vision_tokens, m->vision_width};
        char got_s[96], want_s[96];
        if (t->dtype != DTYPE_F32) {
            lion_fail(st, LION_EINVAL, "aggregator: ViT layer %d is %s, expected F32", layer, dtype_name(t->dtype));
            return NULL;
        }
        if (t->ndim != 3 || t->shape[0] != want[0] || t->shape[1] != want[1] || t->shape[2] != want[2] || !t->data) {
            lion_fail(st, LION_EINVAL, "aggregator: ViT layer %d has shape %s, expected %s", layer,
                      shape_str(t->ndim, t->shape, got_s, sizeof got_s), shape_str(3, want, want_s, sizeof want_s));
            return NULL;
        }
        return t->data;
    }
    char have[256] = "";
    size_t used = 0;
    for (int k = 0; k < in->n_layers && used < sizeof have; k++)
        used += (size_t)snprintf(have + used, sizeof have - used, "%s%d", k ? ", " : "", in->layers[k]);
    lion_fail(st, LION_EINVAL, "aggregator: ViT layer %d missing from the input (it has layers [%s])", layer, have);
    return NULL;
}

/* The instructions right-padded to the longest one, with the padding mask, in scratch. */
static int text_pack(const aggregate_model *m, const aggregate_input *in, int32_t **ids_out, uint8_t **mask_out,
                     int *len_out, arena *scratch, lion_status *st) {
    if (!in->text_ids || !in->text_lens)
        return lion_fail(st, LION_EINVAL, "aggregator: the Q-Former needs each request's instruction ids");
    int len = 0;
    for (int b = 0; b < in->batch; b++) {
        int n = in->text_lens[b];
        if (n < 0 || (n > 0 && !in->text_ids[b]))
            return lion_fail(st, LION_EINVAL, "aggregator: request %d: instruction of %d ids%s", b, n,
                             n > 0 ? " given no ids" : "");
        if (n > m->qformer.cfg.max_position)
            return lion_fail(st, LION_ETOOBIG, "aggregator: request %d: instruction of %d tokens, the Q-Former takes %d",
                             b, n, m->qformer.cfg.max_position);
        if (n > len) len = n;
    }
    int32_t *ids = arena_alloc(scratch, (size_t)in->batch * len * sizeof *ids + 1);
    uint8_t *mask = arena_alloc(scratch, (size_t)in->batch * len + 1);
    if (!ids || !mask) return lion_fail(st, LION_ENOMEM, "aggregator: out of scratch memory");
    memset(ids, 0, (size_t)in->batch * len * sizeof *ids); /* [PAD] = 0; masked anyway */
    memset(mask, 0, (size_t)in->batch * len);
    for (int b = 0; b < in->batch; b++) {
        if (in->text_lens[b] > 0)
            memcpy(ids + (size_t)b * len, in->text_ids[b], (size_t)in->text_lens[b] * sizeof *ids);
        memset(mask + (size_t)b * len, 1, (size_t)in->text_lens[b]);
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

int aggregate_forward(const aggregate_model *m, const aggregate_input *in, float *out, arena *scratch,
                      lion_status *st) {
    if (in->batch <= 0) return lion_fail(st, LION_EINVAL, "aggregator: batch of %d requests", in->batch);
    if (in->n_layers < 0 || (in->n_layers > 0 && (!in->layers || !in->vit_outs)))
        return lion_fail(st, LION_EINVAL, "aggregator: %d ViT layers given without their data", in->n_layers);
    const float *hidden = vit_layer_find(m, in, m->hidden_layer, st);
    if (!hidden) return -1;
    const float *cross[MODEL_MAX_INTERMEDIATE];
    if (m->use_fusion)
        for (int i = 0; i < m->fusion.cfg.blocks; i++)
            if (!(cross[i] = vit_layer_find(m, in, m->fusion.cfg.cross_layers[i], st))) return -1;

    const int batch = in->batch, d = m->d_model, tokens = m->vision_tokens;
    arena_mark mark = arena_save(scratch);
    int first = 0;
    if (m->use_qformer) {
        const int nq = m->qformer.cfg.num_query_tokens;
        int32_t *ids = NULL;
        uint8_t *mask = NULL;
        int len = 0;
        float *q_out;
        if (text_pack(m, in, &ids, &mask, &len, scratch, st)) goto fail;
        if (!(q_out = arena_floats(scratch, (size_t)batch * nq * d))) goto oom;
        if (qformer_forward(&m->qformer, hidden, batch, tokens, ids, mask, len, q_out, scratch, st)) goto fail;
        tokens_place(out, q_out, batch, m->num_visual, first, nq, d);
        first += nq;
    }
    if (m->use_fusion) {
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
