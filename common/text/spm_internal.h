/* spm_internal.h - what the SentencePiece files of common/text share: the loaded model, the
 * piece lookup and the id sink. Not a public header: sentencepiece.h is the interface.
 *
 * sentencepiece.c loads the model protobuf, normalizes text and runs the unigram segmenter;
 * spm_bpe.c runs the BPE merges (model_type BPE, LLaMA's tokenizer). Both follow the
 * sentencepiece library v0.1.97 (normalizer.cc, unigram_model.cc, bpe_model.cc,
 * sentencepiece_processor.cc) so that ids match the Python module's. */
#ifndef LION_SPM_INTERNAL_H
#define LION_SPM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "sentencepiece.h"
#include "sentencepiece_model.pb-c.h"

typedef Sentencepiece__ModelProto__SentencePiece__Type piece_type;
#define PT(name) SENTENCEPIECE__MODEL_PROTO__SENTENCE_PIECE__TYPE__##name

#define SPACE_SYMBOL "\xE2\x96\x81" /* U+2581 '▁', sentencepiece's escaped whitespace */
#define SPACE_SYMBOL_LEN 3

struct piece {
    const char *text;
    size_t len;
    float score;
    piece_type type;
};

enum spm_model_type { SPM_UNIGRAM = 1, SPM_BPE = 2 }; /* TrainerSpec.ModelType's values */

struct spm_tokenizer {
    Sentencepiece__ModelProto *proto;
    enum spm_model_type model_type;
    struct piece *pieces;
    size_t n_pieces;
    /* Open-addressing hash from piece text to id, for the pieces the segmenter may emit
     * (normal, user-defined, unused), as upstream's `pieces_` map holds. */
    int32_t *slots;
    size_t n_slots;
    size_t max_piece_len;
    int32_t *user_defined; /* ids of user-defined pieces, matched whole before anything else */
    size_t n_user_defined;
    int32_t byte_ids[256];
    int byte_fallback;
    int32_t unk_id, eos_id, pad_id, bos_id;
    float min_score, max_score;
    /* Normalizer spec. */
    int add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
    uint32_t *trie;  /* darts-clone double array units of the precompiled charsmap */
    size_t trie_units;
    const char *norm_strings;
    size_t norm_strings_len;
};

/* Id sink shared by the encoders: counts every id, stores those that fit. */
struct ids_out {
    int32_t *ids;
    size_t max, n;
};

static inline void ids_push(struct ids_out *o, int32_t id) {
    if (o->n < o->max) o->ids[o->n] = id;
    o->n++;
}

/* Id of a segmentable piece (normal, user-defined, unused) with this text, -1 if none. */
int32_t spm_piece_find(const spm_tokenizer *tok, const char *s, size_t n);

/* Length of the longest user-defined piece that s starts with, 0 if none (upstream's
 * PrefixMatcher over the user-defined symbols). */
size_t spm_user_defined_prefix(const spm_tokenizer *tok, const char *s, size_t n);

/* Bytes of the UTF-8 character at s (upstream's OneCharLen: from the lead byte alone), at most n. */
size_t spm_char_len(const char *s, size_t n);

/* BPE segmentation of normalized text s[0..n) into ids (spm_bpe.c): merges by piece score,
 * unknown characters as byte pieces with byte fallback, else one unk id per run. -1: out of
 * memory. */
int spm_bpe_segment(const spm_tokenizer *tok, const char *s, size_t n, struct ids_out *out);

#endif
