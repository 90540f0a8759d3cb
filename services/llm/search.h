/* search.h - one request's decoding search, stepped by its caller: greedy, nucleus
 * sampling or beam search, with the HF 4.42 semantics generate.h states.
 *
 * The search says how many decoder rows it needs (search_rows) and their input tokens
 * (search_inputs); the caller runs them through the decoder, any number of other requests'
 * rows beside them, and hands back their logits (search_advance), which picks the next
 * tokens and, in beam search, which former row each row continues (src: the caller reorders
 * the rows' caches so). The search owns its sequences and scores only; the decoder state
 * and scratch are the caller's, which is what lets requests with different parameters share
 * one running batch (decode_batch.h). */
#ifndef LION_SEARCH_H
#define LION_SEARCH_H

#include <stdint.h>

#include "arena.h"
#include "generate.h"
#include "status.h"

typedef struct search search;

/* p as checked by generate_params_check; seed: the request's sampling generator. */
int search_create(search **out, const generate_params *p, int vocab, uint64_t seed, lion_status *st);
void search_free(search *s);

/* For a decoder-only model (LLaMA): its prompt's ids before the start id (ids[0..n); the
 * start id, p->decoder_start_id, is the prompt's last). HF generate's input_ids hold them, so
 * the repetition penalty covers them and min_length counts them; T5's decoder has none. 0, or
 * -1 with st filled (an id outside the vocabulary, out of memory). */
int search_set_prompt(search *s, const int32_t *ids, int n, lion_status *st);

/* Decoder rows to run for the next step: num_beams (1 for greedy and sampling), 0 once the
 * search has finished. */
int search_rows(const search *s);
/* The rows' input tokens [search_rows]: each row's last id. */
void search_inputs(const search *s, int32_t *tokens);
/* The rows' next-token logits [search_rows, vocab] (changed in place). src [search_rows]:
 * row r continues the former row src[r] (0..rows-1; the identity unless beam search moved
 * rows). Scratch from a. */
int search_advance(search *s, float *logits, int *src, arena *a, lion_status *st);
int search_finished(const search *s);

/* Greedy and sampling: the ids so far (the decoder start id first, *n of them) and whether
 * the last one ended the sequence. Beam search: NULL (its answer is known at its end). */
const int32_t *search_ids(const search *s, int *n);

/* A finished search's num_return_sequences sequences, best first, as generate_result holds
 * them: sequence k at ids + k * stride (stride >= max_new_tokens + 1), lengths[k], scores[k]. */
void search_output(search *s, int32_t *ids, int stride, int *lengths, double *scores);

#endif
