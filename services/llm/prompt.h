/* prompt.h - the T5 encoder input of a batch of requests, assembled as upstream LION does
 * (LIONT5InstructAdapter.generate / lion_ref LionModel.prepare_inputs).
 *
 * Each request is its visual tokens [n_visual, d_model] (Q-Former then aggregator) followed
 * by the embeddings of its token ids (tag prompt + question, eos included; the tokenizer is
 * common/sentencepiece.h). Where an id is the soft prompt token (`<extra_id_0>`), its
 * embedding is replaced by the learned soft_prompt_hint. Requests shorter than the batch's
 * longest are padded at the end with the pad token's embedding and masked out, which is
 * where upstream's right-padded text puts them. */
#ifndef LION_PROMPT_H
#define LION_PROMPT_H

#include <stdint.h>

#include "status.h"

typedef struct prompt_embedder {
    const float *table; /* shared.weight [vocab, d_model] */
    int vocab, d_model;
    const float *soft_prompt_hint; /* [d_model]; NULL = no replacement (tags disabled) */
    int32_t soft_prompt_id;        /* id of `<extra_id_0>` */
    int32_t pad_id;
} prompt_embedder;

typedef struct prompt_request {
    const float *visual; /* [n_visual, d_model] */
    int n_visual;
    const int32_t *ids;
    int n_ids;
} prompt_request;

typedef struct prompt_batch {
    int batch, len;
    float *embeds; /* [batch, len, d_model] */
    uint8_t *mask; /* [batch, len], 1 = real token */
} prompt_batch;

/* Allocates and fills out (prompt_batch_free). Fails on ids outside the vocabulary and on
 * a request with no tokens at all; max_len (0 = none) bounds len with LION_ETOOBIG. */
int prompt_batch_build(prompt_batch *out, const prompt_embedder *e, const prompt_request *reqs, int n, int max_len,
                       lion_status *st);
void prompt_batch_free(prompt_batch *b);

#endif
