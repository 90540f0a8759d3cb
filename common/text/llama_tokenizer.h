/* llama_tokenizer.h - LLaMA's tokenizer as HF's slow LlamaTokenizer (transformers 4.38, what
 * Pink runs) applies it on top of the SentencePiece BPE model (tokenizer.model): added tokens
 * matched whole before BPE, bos prepended, and HF's `legacy` flag.
 *
 * Encoding (LlamaTokenizer.tokenize / _tokenize, PreTrainedTokenizer.tokenize):
 *   - the text is cut at every added token and special token (<s>, </s>, <unk>), taking at
 *     each position the leftmost, then longest, token (HF's Trie.split; the two agree for
 *     token sets where no token overlaps another, as Pink's); each token is one id;
 *   - legacy: every piece of text between them is encoded by sentencepiece as it is (so each
 *     gets the dummy prefix '▁');
 *   - not legacy (legacy=False): '▁' in the text becomes a space, the whole text gets one '▁'
 *     in front, and every piece of text is encoded with the dummy prefix off; a piece that
 *     starts with '▁' or ' ' is encoded as "<unk>" + piece with the ids of "<unk>" dropped
 *     (HF's way to keep sentencepiece from eating the leading '▁'); a leading lone '▁' before
 *     a special token is dropped;
 *   - bos in front (add_bos_token), eos at the end when add_eos_token.
 * Decoding (PreTrainedTokenizer._decode with skip_special_tokens=True, the default
 * spaces_between_special_tokens=True): bos, eos and unk ids are skipped; each added token is
 * its text; the runs of pieces between them go through convert_tokens_to_string (the first
 * piece loses one leading '▁', then sentencepiece's DecodePieces with the model as HF loaded
 * it: dummy prefix off when not legacy); the parts are joined with single spaces (an empty run
 * before an added token is left out); clean_up_tokenization_spaces when asked. */
#ifndef LION_LLAMA_TOKENIZER_H
#define LION_LLAMA_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "sentencepiece.h"
#include "status.h"

/* A token added to the tokenizer (HF add_tokens): its text and id. Ids past the model's
 * pieces extend the vocabulary; an id inside it must name a piece with the same text. */
typedef struct llama_tok_added {
    const char *content;
    int32_t id;
} llama_tok_added;

typedef struct llama_tok_options {
    int legacy;     /* tokenizer_config.json "legacy" (HF's default when absent: true) */
    int add_bos;    /* add_bos_token (LLaMA: true) */
    int add_eos;    /* add_eos_token (LLaMA: false) */
    int clean_up_tokenization_spaces; /* LLaMA: false */
    const llama_tok_added *added;
    size_t n_added;
} llama_tok_options;

typedef struct llama_tok llama_tok;

/* Loads tokenizer.model (a SentencePiece model, BPE for LLaMA) and the options (copied). Fails
 * on a model without bos, eos or unk, an added token that is empty, repeated, or whose id is
 * negative or names a different piece. */
int llama_tok_load(const char *path, const llama_tok_options *opt, llama_tok **out, lion_status *st);
void llama_tok_free(llama_tok *t);

/* Text to ids as tokenizer(text).input_ids. Fails with LION_ETOOBIG when more than max_ids ids
 * are needed (*n_ids then holds the count). */
int llama_tok_encode(const llama_tok *t, const char *text, int32_t *ids, size_t max_ids, size_t *n_ids,
                     lion_status *st);

/* Ids to text as tokenizer.decode(ids, skip_special_tokens=True). An id outside the vocabulary
 * fails (LION_EINVAL). *text is malloc'ed and NUL-terminated; caller frees. */
int llama_tok_decode(const llama_tok *t, const int32_t *ids, size_t n_ids, char **text, lion_status *st);

/* The id of an added token or of a piece with exactly this text, -1 if neither. */
int32_t llama_tok_token_id(const llama_tok *t, const char *token);
/* Pieces plus the added tokens past them (HF's len(tokenizer)). */
size_t llama_tok_vocab_size(const llama_tok *t);
int32_t llama_tok_bos_id(const llama_tok *t);
int32_t llama_tok_eos_id(const llama_tok *t);
const spm_tokenizer *llama_tok_spm(const llama_tok *t);

#endif
