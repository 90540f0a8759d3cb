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
 * architecture.md, "Continuous batching"). */
#ifndef LION_DECODE_BATCH_H
#define LION_DECODE_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "generate.h"
#include "search.h"
#include "t5.h"

typedef struct decode_request {
    search *search;
    t5_cross cross;
    int beams;
    t5_seq *store; /* [beams]: the caches */
    t5_seq **seq;  /* [beams]: row j's cache (beam search reorders these) */
    size_t bytes;  /* what the caches and the cross-attention keys/values hold */
    void *user;    /* the caller's */
} decode_request;

typedef struct decode_batch {
    const t5_model *m;
    decode_request **reqs; /* in the order they joined */
    int n, cap;
    size_t bytes; /* held by every request's caches: the sum of their bytes */
    int rows;     /* rows of the last step */
    /* per-step arrays, grown as rows grow */
    int rows_cap;
    t5_seq **seqs;
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

#endif
