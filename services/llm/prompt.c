#include "prompt.h"

#include <stdlib.h>
#include <string.h>

void prompt_batch_free(prompt_batch *b) {
    free(b->embeds);
    free(b->mask);
    memset(b, 0, sizeof *b);
}

int prompt_batch_build(prompt_batch *out, const prompt_embedder *e, const prompt_request *reqs, int n, int max_len,
                       lion_status *st) {
    memset(out, 0, sizeof *out);
    if (n <= 0) return lion_fail(st, LION_EINVAL, "prompt: empty batch");
    if (e->pad_id < 0 || e->pad_id >= e->vocab)
        return lion_fail(st, LION_EINVAL, "prompt: pad id %d is outside the vocabulary of %d", (int)e->pad_id, e->vocab);
    const size_t d = (size_t)e->d_model;
    int len = 0;
    for (int i = 0; i < n; i++) {
        const prompt_request *r = &reqs[i];
        if (r->n_visual < 0 || r->n_ids < 0 || (r->n_visual > 0 && !r->visual) || (r->n_ids > 0 && !r->ids))
            return lion_fail(st, LION_EINVAL, "prompt: request %d has %d visual tokens and %d ids without data", i,
                             r->n_visual, r->n_ids);
        if (r->n_visual + r->n_ids == 0) return lion_fail(st, LION_EINVAL, "prompt: request %d has no tokens", i);
        for (int t = 0; t < r->n_ids; t++)
            if (r->ids[t] < 0 || r->ids[t] >= e->vocab)
                return lion_fail(st, LION_EINVAL, "prompt: request %d: token id %d at %d is outside the vocabulary of %d",
                                 i, (int)r->ids[t], t, e->vocab);
        if (r->n_visual + r->n_ids > len) len = r->n_visual + r->n_ids;
    }
    if (max_len > 0 && len > max_len)
        return lion_fail(st, LION_ETOOBIG, "prompt: %d tokens exceed the limit of %d", len, max_len);
    out->embeds = malloc((size_t)n * len * d * sizeof(float));
    out->mask = calloc((size_t)n * len, 1);
    if (!out->embeds || !out->mask) {
        prompt_batch_free(out);
        return lion_fail(st, LION_ENOMEM, "prompt: out of memory for %d x %d tokens", n, len);
    }
    out->batch = n, out->len = len;
    for (int i = 0; i < n; i++) {
        const prompt_request *r = &reqs[i];
        float *row = out->embeds + (size_t)i * len * d;
        if (r->n_visual) memcpy(row, r->visual, (size_t)r->n_visual * d * sizeof(float));
        for (int t = 0; t < len - r->n_visual; t++) {
            int32_t id = t < r->n_ids ? r->ids[t] : e->pad_id;
            const float *src = e->table + (size_t)id * d;
            if (t < r->n_ids && id == e->soft_prompt_id && e->soft_prompt_hint) src = e->soft_prompt_hint;
            memcpy(row + (size_t)(r->n_visual + t) * d, src, d * sizeof(float));
        }
        memset(out->mask + (size_t)i * len, 1, (size_t)(r->n_visual + r->n_ids));
    }
    return 0;
}
