/* generate.h - text generation on the T5 decoder, with HF 4.42 semantics as
 * tools/reference/lion_ref/lion.py implements them (generate_ids).
 *
 *  - greedy (num_beams 1): repetition penalty and min_length on the raw logits, argmax;
 *    rows that produced eos are fed pad afterwards;
 *  - beam search (num_beams > 1): log-softmax, then repetition penalty (HF's
 *    RepetitionPenaltyLogitsProcessor over the decoder sequence, the start token included)
 *    and min_length, plus the beam's running score; the top 2 * num_beams candidates feed
 *    BeamSearchScorer (eos ranked below num_beams is ignored, finished hypotheses scored
 *    sum_logprobs / generated_len ^ length_penalty, early_stopping False), finalized with
 *    the open beams when max_new_tokens is reached; the best num_return_sequences hypotheses
 *    get an eos appended when shorter than max_new_tokens + 1;
 *  - nucleus sampling (do_sample, num_beams 1): temperature, top-k, top-p, then a draw from
 *    a per-request generator seeded with `seed` (or the request's own seed, generate_options:
 *    the same seed gives the same text whatever the request is batched with; the draws
 *    cannot equal torch's generator).
 * Several requests run as one batch (decode_batch.h: a request that finishes leaves it at
 * once); each request's result is what it would be alone. Between decoder steps the caller
 * may stop requests (they leave the decoder batch, the others go on unchanged) and, in
 * greedy and sampling, see each request's ids so far (generate_options). The search
 * itself, one request's, is search.h. */
#ifndef LION_GENERATE_H
#define LION_GENERATE_H

#include <stdint.h>

#include "arena.h"
#include "status.h"
#include "t5.h"

typedef struct generate_params {
    int num_beams;      /* 1: greedy or sampling */
    int max_new_tokens; /* decoder steps; sequences hold at most max_new_tokens + 1 ids */
    int min_length;     /* HF min_length: eos is forbidden while the sequence (start token
                           included) is shorter */
    float repetition_penalty; /* 1 = off */
    float length_penalty;
    int num_return_sequences; /* beam search: 1..num_beams; otherwise 1 */
    int do_sample;
    float temperature, top_p; /* sampling only */
    int top_k;                /* sampling only; 0 = off */
    uint64_t seed;
    int decoder_start_id, eos_id, pad_id;
} generate_params;

/* Upstream LION's defaults: 5 beams, 256 new tokens, min_length 1, repetition penalty 1.5,
 * length penalty 1, top_p 0.9, temperature 1, top_k 50, no sampling; T5's ids 0 / 1 / 0. */
void generate_params_default(generate_params *p);
/* LION_EINVAL naming the parameter that is out of range for a vocabulary of V ids. */
int generate_params_check(const generate_params *p, int V, lion_status *st);

/* Request-major: request i's k-th sequence is ids + (i * per_request + k) * stride, with
 * lengths[...] ids, starting with the decoder start id (as HF returns them). Greedy and
 * sampled sequences end at their first eos (HF pads them to the batch's longest instead). */
typedef struct generate_result {
    int requests, per_request, stride;
    int32_t *ids;
    int *lengths;
    double *scores;   /* beam search: each sequence's final hypothesis score; else 0 */
    uint8_t *stopped; /* [requests]: stopped by generate_options.stop (its lengths are 0) */
} generate_result;

void generate_result_free(generate_result *r);

/* Per-request seeds and the caller's hooks between decoder steps; every field is optional. */
typedef struct generate_options {
    /* [batch]: request i samples with its own generator seeded with seeds[i]; NULL: every
     * request's is seeded with the params' seed */
    const uint64_t *seeds;
    void *ctx;
    /* Asked before every decoder step for each request still generating: non-zero stops
     * request r now. Its rows leave the decoder batch (the other requests' results are what
     * they would be without it); its result has lengths 0 and stopped[r] set. */
    int (*stop)(void *ctx, int request);
    /* Greedy and sampling only (beam search has no answer before its end): after each
     * decoder step, for each request that took a token in it, its ids so far (the decoder
     * start id first, n_ids of them) and whether that token ended it (eos, or the last step
     * max_new_tokens allows). */
    void (*step)(void *ctx, int request, const int32_t *ids, int n_ids, int finished);
} generate_options;
/* Generation from encoder output enc [batch, len, d_model] with its mask (NULL = none
 * padded); opts may be NULL. */
int generate_from_encoded(const t5_model *m, const float *enc, const uint8_t *mask, int batch, int len,
                          int router_idx, const generate_params *p, const generate_options *opts,
                          generate_result *out, arena *a, lion_status *st);

/* t5_encode then generate_from_encoded. */
int generate_run(const t5_model *m, const float *inputs_embeds, const uint8_t *mask, int batch, int len,
                 int router_idx, const generate_params *p, generate_result *out, arena *a, lion_status *st);
/* The same with per-request seeds and hooks (opts may be NULL). */
int generate_run_with(const t5_model *m, const float *inputs_embeds, const uint8_t *mask, int batch, int len,
                      int router_idx, const generate_params *p, const generate_options *opts, generate_result *out,
                      arena *a, lion_status *st);

#endif
