/* fuzz_wordpiece.c - BERT's WordPiece tokenizer (common/text/wordpiece.h).
 *
 * Input: [u8 mode][u8 max_length][rest].
 *   mode even: rest is text for the vocabulary the aggregator loads (models/tiny-lion/vocab.txt,
 *              read once).
 *   mode odd:  rest is [u16 vocab length][vocab.txt bytes][text]; wordpiece_load reads a path,
 *              so the vocabulary is written to this process's temporary directory first.
 * The text goes through wordpiece_tokenize (into a buffer of mode >> 1 ids, which may be too
 * small, and a large one: same count) and bert_encode with max_length 2..257 (what the
 * aggregator does with an instruction): [CLS] first, [SEP] last, [PAD] after, mask 1 exactly
 * on the sequence. */
#include "fuzz_util.h"
#include "wordpiece.h"

#define MAX_IDS 8192

static wordpiece_tokenizer *tiny;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    lion_status st;
    if (wordpiece_load(fuzz_source_path("models/tiny-lion/vocab.txt"), &tiny, &st) != 0) {
        fprintf(stderr, "fuzz_wordpiece: %s\n", st.msg);
        abort();
    }
    return 0;
}

static void exercise(const wordpiece_tokenizer *tok, const char *text, size_t small_max, size_t max_length) {
    static int32_t ids[MAX_IDS], small[128], enc[258], mask[258];
    lion_status st;
    size_t n = 0, n_small = 0;
    int rc = wordpiece_tokenize(tok, text, ids, MAX_IDS, &n, &st);
    int rc_small = wordpiece_tokenize(tok, text, small, small_max, &n_small, &st);
    if (rc == 0 || n > MAX_IDS) FUZZ_CHECK(n_small == n);
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0);
        FUZZ_CHECK(rc_small == (n > small_max ? -1 : 0));
        if (rc_small == 0) FUZZ_CHECK(memcmp(small, ids, n * sizeof *ids) == 0);
    }
    size_t n_enc = 0;
    int rc_enc = bert_encode(tok, text, max_length, enc, mask, &n_enc, &st);
    if (rc_enc != 0) {
        FUZZ_CHECK(st.msg[0] != 0);
        return;
    }
    FUZZ_CHECK(n_enc >= 2 && n_enc <= max_length);
    FUZZ_CHECK(enc[0] == wordpiece_token_id(tok, "[CLS]") && enc[n_enc - 1] == wordpiece_token_id(tok, "[SEP]"));
    for (size_t i = 0; i < max_length; i++) {
        FUZZ_CHECK(mask[i] == (i < n_enc));
        if (i >= n_enc) FUZZ_CHECK(enc[i] == wordpiece_token_id(tok, "[PAD]"));
    }
    /* the tokens kept are the last ones of the text (truncation from the left) */
    if (rc == 0) {
        size_t keep = n_enc - 2;
        FUZZ_CHECK(keep == (n < max_length - 2 ? n : max_length - 2));
        if (keep) FUZZ_CHECK(memcmp(enc + 1, ids + (n - keep), keep * sizeof *ids) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_cursor c = {data, size};
    const uint8_t mode = fuzz_u8(&c);
    const size_t max_length = 2 + fuzz_u8(&c);
    const size_t small_max = (mode >> 1) % 128;
    wordpiece_tokenizer *tok = tiny;
    if (mode & 1) {
        size_t vocab_len;
        const uint8_t *vocab = fuzz_take(&c, fuzz_u16(&c), &vocab_len);
        const char *path = fuzz_write_file("vocab.txt", vocab, vocab_len);
        lion_status st = {0};
        tok = NULL;
        if (wordpiece_load(path, &tok, &st) != 0) {
            FUZZ_CHECK(tok == NULL && st.msg[0] != 0);
            return 0;
        }
        FUZZ_CHECK(wordpiece_vocab_size(tok) > 0 && wordpiece_token_id(tok, "[DEC]") >= 0);
    }
    char *text = fuzz_cstr(c.p, c.left);
    exercise(tok, text, small_max, max_length);
    free(text);
    if (tok != tiny) wordpiece_free(tok);
    return 0;
}
