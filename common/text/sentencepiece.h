/* sentencepiece.h - T5's SentencePiece unigram tokenizer, read from spiece.model.
 *
 * Encoding follows the sentencepiece library (normalizer with the model's precompiled
 * charsmap, whitespace handling, unigram Viterbi, unknown merging, byte fallback), so ids
 * are identical to the Python `sentencepiece` module's. On top of it t5_tokenize() places
 * T5's specials as HF's T5Tokenizer does: 100 `<extra_id_N>` ids appended after the model's
 * pieces with `<extra_id_0>` the last id, recognised whole inside the text, eos appended. */
#ifndef LION_SENTENCEPIECE_H
#define LION_SENTENCEPIECE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define T5_EXTRA_IDS 100

typedef struct spm_tokenizer spm_tokenizer;

/* Reads and validates a SentencePiece model file (unigram only). */
int spm_load(const char *path, spm_tokenizer **out, lion_status *st);
/* The same from bytes in memory; name is used in error messages. */
int spm_load_buffer(const void *data, size_t size, const char *name, spm_tokenizer **out,
                    lion_status *st);
void spm_free(spm_tokenizer *tok);

/* Plain sentencepiece encoding of UTF-8 text (no specials, no eos): what
 * SentencePieceProcessor.encode returns. Fails with LION_ETOOBIG when more than max_ids
 * ids would be needed (*n_ids then holds the count needed). */
int spm_encode(const spm_tokenizer *tok, const char *text, int32_t *ids, size_t max_ids,
               size_t *n_ids, lion_status *st);

/* T5 encoding: `<extra_id_N>`, `</s>`, `<pad>`, `<unk>` in the text become their ids, the
 * text between them is encoded with spm_encode, and eos is appended. */
int t5_tokenize(const spm_tokenizer *tok, const char *text, int32_t *ids, size_t max_ids,
                size_t *n_ids, lion_status *st);

/* Ids to text with special tokens skipped (HF's skip_special_tokens): pad, eos, unk,
 * control ids, the extra ids and any id past them (a model's output layer may be wider
 * than its tokenizer, as FlanT5's is: those ids decode to nothing) are skipped; '▁' becomes
 * a space and the leading one is dropped. A negative id fails (LION_EINVAL). *text is
 * malloc'ed and NUL-terminated; caller frees. */
int spm_decode(const spm_tokenizer *tok, const int32_t *ids, size_t n_ids, char **text,
               lion_status *st);

/* Pieces in the model file. */
size_t spm_piece_count(const spm_tokenizer *tok);
/* T5 vocabulary size: the pieces plus the extra ids. */
size_t t5_vocab_size(const spm_tokenizer *tok);
/* Id of `<extra_id_n>` (0 <= n < T5_EXTRA_IDS), -1 otherwise. */
int32_t t5_extra_id(const spm_tokenizer *tok, int n);
int32_t spm_eos_id(const spm_tokenizer *tok);
int32_t spm_pad_id(const spm_tokenizer *tok);
int32_t spm_unk_id(const spm_tokenizer *tok);

#endif
