/* sentencepiece.h - SentencePiece tokenizers read from their model protobuf: T5's unigram
 * spiece.model and LLaMA's BPE tokenizer.model.
 *
 * Encoding follows the sentencepiece library v0.1.97 (normalizer with the model's precompiled
 * charsmap and whitespace handling; unigram Viterbi or BPE merges by piece score; unknown
 * merging, byte fallback), so ids are identical to the Python `sentencepiece` module's. On top
 * of it t5_tokenize() places T5's specials as HF's T5Tokenizer does: 100 `<extra_id_N>` ids
 * appended after the model's pieces with `<extra_id_0>` the last id, recognised whole inside
 * the text, eos appended. LLaMA's HF layer (added tokens, bos) is llama_tokenizer.h. */
#ifndef LION_SENTENCEPIECE_H
#define LION_SENTENCEPIECE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define T5_EXTRA_IDS 100

typedef struct spm_tokenizer spm_tokenizer;

/* Reads and validates a SentencePiece model file (model_type unigram or BPE). */
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

/* The model's normalizer adds a dummy prefix ('▁' before the text) or not: what
 * spm_encode_span's dummy_prefix asks for. */
#define SPM_MODEL_PREFIX (-1)

/* spm_encode of text[0..len) (no NUL needed), with the normalizer's add_dummy_prefix taken
 * from the model (SPM_MODEL_PREFIX) or forced on (1) or off (0): HF's LlamaTokenizer with
 * legacy=False encodes with a copy of the model whose add_dummy_prefix is off. */
int spm_encode_span(const spm_tokenizer *tok, const char *text, size_t len, int dummy_prefix, int32_t *ids,
                    size_t max_ids, size_t *n_ids, lion_status *st);

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

/* sentencepiece's DecodePieces: pieces given as text (lens[i] bytes each), each looked up as
 * the library does (a text that is no piece is the unknown id and shows as itself), the
 * unknown piece as unk_surface (" ⁇ "), byte pieces gathered into UTF-8, the leading '▁' of
 * the text dropped when the model (or dummy_prefix 1) adds a dummy prefix. This is what HF's
 * LlamaTokenizer.convert_tokens_to_string calls. */
int spm_decode_pieces(const spm_tokenizer *tok, const char *const *pieces, const size_t *lens, size_t n,
                      int dummy_prefix, char **text, lion_status *st);

/* upstream's PieceToId: the id of the piece with this text, else the unknown id. */
int32_t spm_piece_to_id(const spm_tokenizer *tok, const char *s, size_t n);
/* The NUL-terminated text of piece id (*len, if not NULL, its bytes), NULL when id is out
 * of range. */
const char *spm_id_to_piece(const spm_tokenizer *tok, int32_t id, size_t *len);
/* 1 for a BPE model, 0 for unigram. */
int spm_is_bpe(const spm_tokenizer *tok);

/* Pieces in the model file. */
size_t spm_piece_count(const spm_tokenizer *tok);
/* T5 vocabulary size: the pieces plus the extra ids. */
size_t t5_vocab_size(const spm_tokenizer *tok);
/* Id of `<extra_id_n>` (0 <= n < T5_EXTRA_IDS), -1 otherwise. */
int32_t t5_extra_id(const spm_tokenizer *tok, int n);
int32_t spm_eos_id(const spm_tokenizer *tok);
int32_t spm_pad_id(const spm_tokenizer *tok);
int32_t spm_unk_id(const spm_tokenizer *tok);
/* bos of the trainer spec (LLaMA: 1), -1 when the model has none. */
int32_t spm_bos_id(const spm_tokenizer *tok);

#endif
