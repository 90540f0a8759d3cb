/* decode_batch.h - the running decode batch: requests join and leave between decoder
 * steps, and one step runs every live row of every request (each beam a row) through
 * t5_step at once, so each weight is read once per step however many requests decode.
 *
 * A request is its encoder side (t5_cross, from its encoder output), one cache per beam
 * (t5_seq, sized for max_new_tokens positions) and its search (search.h) with its own
 * parameters: greedy, sampling and beam requests, different adapter routes, encoder lengths
 * and positions all share a step. A request's result is what it would be alone: its rows'
 * products are computed with other rows beside them, which can change the last bits of a
 * float sum (OpenBLAS picks kernels by the number of rows), and nothing else (docs/
 * architecture.md, "Continuous batching").
 *
 * The same batch runs Pink's LLaMA decoder (decode_batch_init_llama): a request is then its
 * beams' slots in one shared KV cache (llama.h), its prompt prefilled when it joins; its
 * search starts from the prompt's last id (the step feeds it), so search.h is the same for
 * both models. */
#ifndef LION_DECODE_BATCH_H
#define LION_DECODE_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "generate.h"
#include "llama.h"
#include "search.h"
#include "t5.h"

typedef struct decode_request {
    search *search;
    int beams;
    /* T5 */
    t5_cross cross;
    t5_seq *store; /* [beams]: the caches */
    t5_seq **seq;  /* [beams]: row j's cache (beam search reorders these) */
    /* LLaMA */
    int *slot;     /* [beams]: row j's slot of the shared cache (beam search reorders these) */
    size_t bytes;  /* what the caches and the cross-attention keys/values hold */
    void *user;    /* the caller's */
} decode_request;

typedef struct decode_batch {
    const t5_model *m;     /* the decoder: T5 ... */
    const llama_model *lm; /* ... or LLaMA, with its cache's slots shared by the requests */
    llama_cache cache;
    int *free_slot, n_free;
    decode_request **reqs; /* in the order they joined */
    int n, cap;
    size_t bytes; /* held by every request's caches: the sum of their bytes */
    int rows;     /* rows of the last step */
    /* per-step arrays, grown as rows grow */
    int rows_cap;
    t5_seq **seqs;
    int *slots;
    int32_t *tokens;
    int *src;
    float *logits;
} decode_batch;

void decode_batch_init(decode_batch *b, const t5_model *m);
/* Frees every request still in the batch. */
void decode_batch_free(decode_batch *b);

/* The bytes a request with these parameters and encoder length holds while it decodes
 * (decode_request.bytes), known before it is encoded: for admission under a memory budget. */
size_t decode_request_bytes(const t5_model *m, const generate_params *p, int enc_len);

/* A new request from its encoder output enc [enc_len, d_model] (mask as for t5_encode;
 * NULL = all real) with parameters p (generate_params_check'ed) and sampling seed; it takes
 * part in the next step. user is the caller's, read back through b->reqs[i]->user. */
int decode_batch_add(decode_batch *b, const float *enc, const uint8_t *mask, int enc_len, int router_idx,
                     const generate_params *p, uint64_t seed, void *user, lion_status *st);

/* One decoder step of every unfinished request. Afterwards a request whose search_finished
 * holds its answer (search_output) and should leave (decode_batch_remove). Returns the rows
 * stepped (0: nothing to step), or -1 with st filled (the batch's state is then undefined:
 * fail its requests). Scratch from a. */
int decode_batch_step(decode_batch *b, arena *a, lion_status *st);

/* Frees request i; the others keep their order. */
void decode_batch_remove(decode_batch *b, int i);

/* A batch on a LLaMA decoder whose requests share a cache of `slots` sequences of up to
 * `capacity` positions (prompt + answer). */
int decode_batch_init_llama(decode_batch *b, const llama_model *lm, int slots, int capacity, lion_status *st);
/* The bytes one slot of such a cache holds. */
size_t decode_llama_slot_bytes(const llama_model *lm, int capacity);
/* Whether a request of `beams` beams finds free slots now. */
int decode_batch_has_slots(const decode_batch *b, int beams);
/* A new LLaMA request: prompt embeddings x [n, dim], of which the first n - 1 are prefilled
 * into its beams' slots now; its search starts from p->decoder_start_id, the prompt's last
 * id, which the next step feeds. ids [n] (NULL: none) are the prompt's ids, as HF's
 * input_ids (image positions hold the image token): the repetition penalty and min_length
 * cover them (search_set_prompt). n + max_new_tokens must fit the cache's capacity. */
int decode_batch_add_llama(decode_batch *b, const float *x, const int32_t *ids, int n, const generate_params *p,
                           uint64_t seed, void *user, arena *a, lion_status *st);

#endif
