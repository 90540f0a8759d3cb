/* fuzz_sentencepiece.c - T5's SentencePiece tokenizer (common/text/sentencepiece.h).
 *
 * Input: [u8 mode][rest].
 *   mode even: rest is text for the model the llm loads (models/tiny-lion/spiece.model, read
 *              once): spm_encode and t5_tokenize (specials, eos) into a buffer that may be too
 *              small, then spm_decode of the ids and of raw int32 ids cut from the text bytes
 *              (negative and out-of-range ids included).
 *   mode odd:  rest is [u32 model length][model bytes][text]: spm_load_buffer on the model
 *              (a protobuf ModelProto: pieces, byte fallback, precompiled charsmap), then the
 *              same encoding and decoding of the text with it.
 * Every encoding must give ids inside the T5 vocabulary; a buffer too small must fail with
 * the count needed, and the count must equal what a large enough buffer gets (checked on
 * texts up to 256 bytes). */
#include "fuzz_util.h"
#include "sentencepiece.h"

#define MAX_IDS 4096

static spm_tokenizer *tiny;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    lion_status st;
    if (spm_load(fuzz_source_path("models/tiny-lion/spiece.model"), &tiny, &st) != 0) {
        fprintf(stderr, "fuzz_sentencepiece: %s\n", st.msg);
        abort();
    }
    return 0;
}

static void check_ids(const spm_tokenizer *tok, const int32_t *ids, size_t n) {
    for (size_t i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && (size_t)ids[i] < t5_vocab_size(tok));
}

static void decode(const spm_tokenizer *tok, const int32_t *ids, size_t n) {
    char *text = NULL;
    lion_status st;
    int rc = spm_decode(tok, ids, n, &text, &st);
    int negative = 0;
    for (size_t i = 0; i < n; i++) negative |= ids[i] < 0;
    FUZZ_CHECK(rc == (negative ? -1 : 0));
    if (rc == 0) {
        FUZZ_CHECK(text != NULL);
        free(text);
    }
}

/* Encodes text both ways, with a buffer of MAX_IDS ids and, for texts up to 256 bytes (the
 * segmentation costs the text's length times the longest piece's, many times over with the
 * fuzzer's comparison tracing), again with one of small_max. */
static void exercise(const spm_tokenizer *tok, const char *text, size_t small_max) {
    static int32_t ids[MAX_IDS], small[256];
    lion_status st;
    const int short_text = strlen(text) <= 256;
    for (int t5 = 0; t5 < 2; t5++) {
        size_t n = 0, n_small = 0;
        int rc = t5 ? t5_tokenize(tok, text, ids, MAX_IDS, &n, &st) : spm_encode(tok, text, ids, MAX_IDS, &n, &st);
        if (rc == 0) {
            check_ids(tok, ids, n);
            decode(tok, ids, n);
        }
        if (!short_text) continue;
        int rc_small = t5 ? t5_tokenize(tok, text, small, small_max, &n_small, &st)
                          : spm_encode(tok, text, small, small_max, &n_small, &st);
        FUZZ_CHECK(n_small == n);
        if (rc != 0) continue; /* more than MAX_IDS ids */
        FUZZ_CHECK(rc_small == (n > small_max ? -1 : 0));
        if (rc_small == 0) FUZZ_CHECK(memcmp(small, ids, n * sizeof *ids) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_cursor c = {data, size};
    const uint8_t mode = fuzz_u8(&c);
    const size_t small_max = mode >> 1;
    if (mode & 1) {
        size_t model_len;
        const uint8_t *model = fuzz_take(&c, fuzz_u32(&c), &model_len);
        spm_tokenizer *tok = NULL;
        lion_status st = {0};
        if (spm_load_buffer(model, model_len, "fuzz.model", &tok, &st) != 0) {
            FUZZ_CHECK(tok == NULL && st.msg[0] != 0);
            return 0;
        }
        char *text = fuzz_cstr(c.p, c.left);
        exercise(tok, text, small_max);
        free(text);
        spm_free(tok);
        return 0;
    }
    char *text = fuzz_cstr(c.p, c.left);
    exercise(tiny, text, small_max);
    free(text);
    /* raw ids: whatever a stage's output layer could produce, and worse */
    int32_t raw[256];
    size_t n = c.left / 4 < 256 ? c.left / 4 : 256;
    for (size_t i = 0; i < n; i++) raw[i] = (int32_t)fuzz_u32(&c);
    decode(tiny, raw, n);
    return 0;
}
