/* wordpiece.h - BERT's uncased WordPiece tokenizer, as the Q-Former's instruction text uses it.
 *
 * Matches HF's BertTokenizer (the Python one, not the Rust fast one) as LION builds it:
 * do_lower_case, `[DEC]` added as bos with the id after the vocabulary, truncation from the
 * left. Special tokens written in the text ([CLS] [SEP] [PAD] [MASK] [UNK] [DEC]) are kept
 * whole; everything else is lower-cased, cleaned, split around CJK characters, whitespace
 * and punctuation, stripped of accents, and cut into greedy longest-match word pieces. */
#ifndef LION_WORDPIECE_H
#define LION_WORDPIECE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define BERT_MAX_LENGTH 128 /* LION's max_length for the Q-Former instruction */

typedef struct wordpiece_tokenizer wordpiece_tokenizer;

/* Reads a vocab.txt: one token a line, the line number its id. */
int wordpiece_load(const char *vocab_path, wordpiece_tokenizer **out, lion_status *st);
void wordpiece_free(wordpiece_tokenizer *tok);

/* Token ids of UTF-8 text without [CLS]/[SEP] or truncation. Fails with LION_ETOOBIG when
 * more than max_ids are needed (*n_ids then holds the count), LION_EINVAL on bad UTF-8. */
int wordpiece_tokenize(const wordpiece_tokenizer *tok, const char *text, int32_t *ids,
                       size_t max_ids, size_t *n_ids, lion_status *st);

/* [CLS] tokens [SEP], dropping tokens from the left of the text when longer than
 * max_length (>= 2). ids and attention_mask have max_length entries: the first *n_ids are
 * the sequence with mask 1, the rest are [PAD] with mask 0. attention_mask may be NULL. */
int bert_encode(const wordpiece_tokenizer *tok, const char *text, size_t max_length,
                int32_t *ids, int32_t *attention_mask, size_t *n_ids, lion_status *st);

/* Vocabulary size including the added [DEC] token. */
size_t wordpiece_vocab_size(const wordpiece_tokenizer *tok);
/* Id of a token ("[CLS]", "##ing", ...), or -1 if absent. */
int32_t wordpiece_token_id(const wordpiece_tokenizer *tok, const char *token);

#endif
