/* test_tokenizers.c - the T5 SentencePiece and BERT WordPiece tokenizers against the Python
 * references (tests/fixtures/gen_tokenizers.py): ids identical on every case string, decode
 * identical to sentencepiece's, and clear errors for bad files and inputs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sentencepiece.h"
#include "sentencepiece_model.pb-c.h"
#include "testing.h"
#include "wordpiece.h"

#define MAX_IDS 4096
#define MAX_MISMATCHES_SHOWN 5

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "    %s:", label);
    for (size_t i = 0; i < n && i < 60; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 60 ? " ...\n" : "\n");
}

static void test_t5_model(const char *model) {
    char path[256], cases_name[256];
    snprintf(path, sizeof path, "tokenizers/%s.model", model);
    snprintf(cases_name, sizeof cases_name, "tokenizers/%s_cases.txt", model);
    lion_status st = {0};
    spm_tokenizer *tok = NULL;
    CHECK_MSG(spm_load(testing_fixture(path), &tok, &st) == 0, "spm_load %s: %s", model, st.msg);
    if (!tok) return;
    size_t n_cases;
    testing_text_case *cases = testing_read_text_cases(cases_name, MAX_IDS, &n_cases);
    CHECK_MSG(n_cases > 3000, "%s: only %zu cases", cases_name, n_cases);
    int32_t *ids = malloc(MAX_IDS * sizeof *ids);
    size_t id_mismatch = 0, decode_mismatch = 0;
    for (size_t i = 0; i < n_cases; i++) {
        testing_text_case *c = &cases[i];
        size_t n = 0;
        int rc = t5_tokenize(tok, c->text, ids, MAX_IDS, &n, &st);
        if (rc != 0 || n != c->n_ids || memcmp(ids, c->ids, n * sizeof *ids) != 0) {
            if (id_mismatch++ < MAX_MISMATCHES_SHOWN) {
                fprintf(stderr, "  %s case %zu ids differ for \"%s\" (rc %d %s)\n", model, i, c->text, rc, rc ? st.msg : "");
                print_ids("got ", ids, n);
                print_ids("want", c->ids, c->n_ids);
            }
            continue;
        }
        char *text = NULL;
        rc = spm_decode(tok, ids, n, &text, &st);
        if (rc != 0 || strcmp(text, c->decoded) != 0) {
            if (decode_mismatch++ < MAX_MISMATCHES_SHOWN)
                fprintf(stderr, "  %s case %zu decode of \"%s\": got \"%s\", want \"%s\"\n", model, i, c->text,
                        text ? text : st.msg, c->decoded);
        }
        free(text);
    }
    CHECK_MSG(id_mismatch == 0, "%s: %zu of %zu cases encode differently", model, id_mismatch, n_cases);
    CHECK_MSG(decode_mismatch == 0, "%s: %zu of %zu cases decode differently", model, decode_mismatch, n_cases);

    /* T5 specials: <extra_id_0> is the last id, eos appended, plain encode has no eos. */
    CHECK_EQ_INT(t5_extra_id(tok, 0), (int64_t)t5_vocab_size(tok) - 1);
    CHECK_EQ_INT(t5_extra_id(tok, 99), (int64_t)spm_piece_count(tok));
    CHECK_EQ_INT(t5_extra_id(tok, 100), -1);
    CHECK_EQ_INT(spm_eos_id(tok), 1);
    CHECK_EQ_INT(spm_pad_id(tok), 0);
    CHECK_EQ_INT(spm_unk_id(tok), 2);
    size_t n = 0;
    CHECK(t5_tokenize(tok, "<extra_id_0>", ids, MAX_IDS, &n, &st) == 0);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(ids[0], t5_extra_id(tok, 0));
    CHECK_EQ_INT(ids[1], 1);
    CHECK(spm_encode(tok, "", ids, MAX_IDS, &n, &st) == 0);
    CHECK_EQ_INT(n, 0);

    /* Limits and bad ids. */
    CHECK(t5_tokenize(tok, "a dog on the table", ids, 2, &n, &st) == -1);
    CHECK_EQ_INT(st.code, LION_ETOOBIG);
    CHECK_CONTAINS(st.msg, "more than the 2 allowed");
    int32_t bad[] = {5, -3};
    char *text = NULL;
    CHECK(spm_decode(tok, bad, 2, &text, &st) == -1);
    CHECK_EQ_INT(st.code, LION_EINVAL);
    CHECK_CONTAINS(st.msg, "spm_decode: id -3 at position 1 is negative");
    CHECK(text == NULL);

    /* Ids past the tokenizer (a model's lm_head may have more rows than it has pieces, as
     * FlanT5's 32128 for 32100) and the extra ids decode to nothing, as in HF, wherever
     * they stand; the text around them is what it is without them. */
    CHECK(t5_tokenize(tok, "a dog on the table", ids, MAX_IDS, &n, &st) == 0);
    CHECK(n > 3);
    char *plain = NULL;
    CHECK(spm_decode(tok, ids, n, &plain, &st) == 0);
    int32_t past = (int32_t)t5_vocab_size(tok);
    int32_t *mixed = malloc((2 * n + 4) * sizeof *mixed);
    size_t m = 0;
    mixed[m++] = past + 27; /* first: no leading-space confusion either */
    for (size_t i = 0; i < n; i++) {
        mixed[m++] = ids[i];
        if (i % 2 == 0) mixed[m++] = i % 4 == 0 ? past : t5_extra_id(tok, (int)i % T5_EXTRA_IDS);
    }
    mixed[m++] = INT32_MAX;
    text = NULL;
    CHECK_MSG(spm_decode(tok, mixed, m, &text, &st) == 0, "%s", st.msg);
    CHECK_MSG(plain && text && !strcmp(text, plain), "with ids past the vocabulary: \"%s\", want \"%s\"",
              text ? text : "", plain ? plain : "");
    free(text);
    free(plain);
    int32_t only_past[] = {past, past + 1, past + 1000};
    text = NULL;
    CHECK(spm_decode(tok, only_past, 3, &text, &st) == 0);
    CHECK(text && !strcmp(text, ""));
    free(text);
    free(mixed);

    free(ids);
    testing_free_text_cases(cases, n_cases);
    spm_free(tok);
}

/* Packs a small hand-made model to test validation without a trained file. */
static size_t pack_model(Sentencepiece__ModelProto__SentencePiece **pieces, size_t n_pieces,
                         int byte_fallback, const char *charsmap, size_t charsmap_len, uint8_t **out) {
    Sentencepiece__ModelProto m = SENTENCEPIECE__MODEL_PROTO__INIT;
    Sentencepiece__TrainerSpec ts; /* the init function: its INIT macro sets deprecated fields (clang warns) */
    sentencepiece__trainer_spec__init(&ts);
    Sentencepiece__NormalizerSpec ns = SENTENCEPIECE__NORMALIZER_SPEC__INIT;
    ts.has_byte_fallback = 1;
    ts.byte_fallback = byte_fallback;
    ns.has_precompiled_charsmap = charsmap != NULL;
    ns.precompiled_charsmap.data = (uint8_t *)charsmap;
    ns.precompiled_charsmap.len = charsmap_len;
    m.n_pieces = n_pieces;
    m.pieces = pieces;
    m.trainer_spec = &ts;
    m.normalizer_spec = &ns;
    size_t size = sentencepiece__model_proto__get_packed_size(&m);
    *out = malloc(size);
    sentencepiece__model_proto__pack(&m, *out);
    return size;
}

static void test_spm_errors(void) {
    lion_status st = {0};
    spm_tokenizer *tok = (spm_tokenizer *)1;
    CHECK(spm_load("/nonexistent/spiece.model", &tok, &st) == -1);
    CHECK(tok == NULL);
    CHECK_EQ_INT(st.code, LION_EIO);
    CHECK_CONTAINS(st.msg, "/nonexistent/spiece.model: cannot open");

    const char garbage[] = "\xff\xff\xff\xff this is not a protobuf";
    CHECK(spm_load_buffer(garbage, sizeof garbage - 1, "garbage.model", &tok, &st) == -1);
    CHECK_EQ_INT(st.code, LION_EFORMAT);
    CHECK_CONTAINS(st.msg, "garbage.model: not a SentencePiece model");

    /* A real model cut short does not parse either. */
    FILE *f = fopen(testing_fixture("tokenizers/t5.model"), "rb");
    if (f) {
        char head[5000];
        size_t got = fread(head, 1, sizeof head, f);
        fclose(f);
        CHECK(spm_load_buffer(head, got, "cut.model", &tok, &st) == -1);
        CHECK_CONTAINS(st.msg, "cut.model: not a SentencePiece model");
    }

    Sentencepiece__ModelProto__SentencePiece p[4];
    Sentencepiece__ModelProto__SentencePiece *pp[4] = {&p[0], &p[1], &p[2], &p[3]};
    const char *texts[4] = {"<unk>", ("\xE2\x96\x81" "a"), "a", "<0x41>"};
    const int types[4] = {SENTENCEPIECE__MODEL_PROTO__SENTENCE_PIECE__TYPE__UNKNOWN,
                          SENTENCEPIECE__MODEL_PROTO__SENTENCE_PIECE__TYPE__NORMAL,
                          SENTENCEPIECE__MODEL_PROTO__SENTENCE_PIECE__TYPE__NORMAL,
                          SENTENCEPIECE__MODEL_PROTO__SENTENCE_PIECE__TYPE__BYTE};
    for (int i = 0; i < 4; i++) {
        sentencepiece__model_proto__sentence_piece__init(&p[i]);
        p[i].piece = (char *)texts[i];
        p[i].has_score = 1;
        p[i].score = -1.0f - (float)i;
        p[i].has_type = 1;
        p[i].type = types[i];
    }
    uint8_t *blob;
    size_t size = pack_model(pp, 3, 0, NULL, 0, &blob);
    CHECK_MSG(spm_load_buffer(blob, size, "tiny.model", &tok, &st) == 0, "tiny.model: %s", st.msg);
    free(blob);
    if (tok) {
        int32_t ids[8];
        size_t n = 0;
        /* "a a b": b is unknown; no charsmap, so only whitespace handling applies. */
        CHECK(spm_encode(tok, "  a  ab ", ids, 8, &n, &st) == 0);
        CHECK_EQ_INT(n, 3);
        CHECK_EQ_INT(ids[0], 1);
        CHECK_EQ_INT(ids[1], 1);
        CHECK_EQ_INT(ids[2], 0);
        spm_free(tok);
    }

    size = pack_model(pp, 4, 0, NULL, 0, &blob);
    CHECK(spm_load_buffer(blob, size, "bytes.model", &tok, &st) == -1);
    CHECK_CONTAINS(st.msg, "bytes.model: byte pieces found although byte_fallback is false");
    free(blob);

    size = pack_model(pp, 4, 1, NULL, 0, &blob);
    CHECK(spm_load_buffer(blob, size, "fallback.model", &tok, &st) == -1);
    CHECK_CONTAINS(st.msg, "piece <0x00> is missing");
    free(blob);

    size = pack_model(pp + 1, 2, 0, NULL, 0, &blob);
    CHECK(spm_load_buffer(blob, size, "nounk.model", &tok, &st) == -1);
    CHECK_CONTAINS(st.msg, "nounk.model: model defines no unknown piece");
    free(blob);

    size = pack_model(pp, 3, 0, "\x08\x00", 2, &blob);
    CHECK(spm_load_buffer(blob, size, "map.model", &tok, &st) == -1);
    CHECK_CONTAINS(st.msg, "map.model: precompiled_charsmap of 2 bytes is too short");
    free(blob);

    size = pack_model(pp, 3, 0, "\xff\x00\x00\x00\x01\x02\x03\x04", 8, &blob);
    CHECK(spm_load_buffer(blob, size, "map2.model", &tok, &st) == -1);
    CHECK_CONTAINS(st.msg, "precompiled_charsmap trie size 255 does not fit");
    free(blob);

    p[2].piece = (char *)texts[1];
    size = pack_model(pp, 3, 0, NULL, 0, &blob);
    CHECK(spm_load_buffer(blob, size, "dup.model", &tok, &st) == -1);
    CHECK_CONTAINS(st.msg, "is already defined");
    free(blob);

    /* A WORD model is refused (unigram and BPE are read), and the message names its type:
     * found by fuzz_sentencepiece, the type was read from the freed model
     * (tests/fuzz/regressions/sentencepiece/). */
    Sentencepiece__ModelProto m = SENTENCEPIECE__MODEL_PROTO__INIT;
    Sentencepiece__TrainerSpec ts;
    sentencepiece__trainer_spec__init(&ts);
    ts.has_model_type = 1;
    ts.model_type = SENTENCEPIECE__TRAINER_SPEC__MODEL_TYPE__WORD;
    m.n_pieces = 3;
    m.pieces = pp;
    m.trainer_spec = &ts;
    size = sentencepiece__model_proto__get_packed_size(&m);
    blob = malloc(size);
    sentencepiece__model_proto__pack(&m, blob);
    tok = (spm_tokenizer *)1;
    CHECK(spm_load_buffer(blob, size, "word.model", &tok, &st) == -1);
    CHECK(tok == NULL);
    CHECK_EQ_INT(st.code, LION_EFORMAT);
    CHECK_CONTAINS(st.msg, "word.model: model_type 3 is not unigram (1) or BPE (2), the types supported");
    free(blob);
}

static void test_bert(void) {
    lion_status st = {0};
    wordpiece_tokenizer *tok = NULL;
    CHECK_MSG(wordpiece_load(testing_fixture("tokenizers/vocab.txt"), &tok, &st) == 0, "wordpiece_load: %s", st.msg);
    if (!tok) return;
    size_t n_cases;
    testing_text_case *cases = testing_read_text_cases("tokenizers/bert_cases.txt", MAX_IDS, &n_cases);
    CHECK_MSG(n_cases > 3000, "bert: only %zu cases", n_cases);
    int32_t ids[BERT_MAX_LENGTH], mask[BERT_MAX_LENGTH];
    size_t mismatch = 0, truncated = 0;
    for (size_t i = 0; i < n_cases; i++) {
        testing_text_case *c = &cases[i];
        size_t n = 0;
        int rc = bert_encode(tok, c->text, BERT_MAX_LENGTH, ids, mask, &n, &st);
        int ok = rc == 0 && n == c->n_ids && memcmp(ids, c->ids, n * sizeof *ids) == 0;
        for (size_t k = 0; ok && k < BERT_MAX_LENGTH; k++)
            ok = mask[k] == (k < n) && (k < n || ids[k] == 0);
        if (n == BERT_MAX_LENGTH) truncated++;
        if (!ok && mismatch++ < MAX_MISMATCHES_SHOWN) {
            fprintf(stderr, "  bert case %zu differs for \"%s\" (rc %d %s)\n", i, c->text, rc, rc ? st.msg : "");
            print_ids("got ", ids, n);
            print_ids("want", c->ids, c->n_ids);
        }
    }
    CHECK_MSG(mismatch == 0, "bert: %zu of %zu cases encode differently", mismatch, n_cases);
    CHECK_MSG(truncated > 0, "bert: no case reached max_length, truncation untested");

    /* [DEC] is added after the vocabulary; [CLS]/[SEP] wrap; left truncation keeps the end. */
    CHECK_EQ_INT(wordpiece_token_id(tok, "[DEC]"), (int64_t)wordpiece_vocab_size(tok) - 1);
    int32_t cls = wordpiece_token_id(tok, "[CLS]"), sep = wordpiece_token_id(tok, "[SEP]");
    int32_t dog = wordpiece_token_id(tok, "dog"), cat = wordpiece_token_id(tok, "cat");
    size_t n = 0;
    CHECK(bert_encode(tok, "[DEC] Dog cat CAT", 4, ids, mask, &n, &st) == 0);
    CHECK_EQ_INT(n, 4);
    CHECK_EQ_INT(ids[0], cls);
    CHECK_EQ_INT(ids[1], cat);
    CHECK_EQ_INT(ids[2], cat);
    CHECK_EQ_INT(ids[3], sep);
    CHECK(bert_encode(tok, "[DEC] Dog", 8, ids, mask, &n, &st) == 0);
    CHECK_EQ_INT(n, 4);
    CHECK_EQ_INT(ids[1], wordpiece_token_id(tok, "[DEC]"));
    CHECK_EQ_INT(ids[2], dog);
    CHECK_EQ_INT(mask[3], 1);
    CHECK_EQ_INT(mask[4], 0);

    CHECK(bert_encode(tok, "dog", 1, ids, mask, &n, &st) == -1);
    CHECK_CONTAINS(st.msg, "max_length 1 leaves no room");
    CHECK(bert_encode(tok, "bad \xC3\x28 utf8", 16, ids, mask, &n, &st) == -1);
    CHECK_EQ_INT(st.code, LION_EINVAL);
    CHECK_CONTAINS(st.msg, "not valid UTF-8 at byte 4");
    CHECK(wordpiece_tokenize(tok, "dog cat dog", ids, 2, &n, &st) == -1);
    CHECK_EQ_INT(st.code, LION_ETOOBIG);
    CHECK_EQ_INT(n, 3);

    testing_free_text_cases(cases, n_cases);
    wordpiece_free(tok);

    CHECK(wordpiece_load("/nonexistent/vocab.txt", &tok, &st) == -1);
    CHECK_EQ_INT(st.code, LION_EIO);
    CHECK_CONTAINS(st.msg, "/nonexistent/vocab.txt: cannot open");
    char path[] = "/tmp/lion_vocab_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) {
        FILE *f = fdopen(fd, "w");
        fputs("[PAD]\n[CLS]\n[SEP]\ndog\n", f);
        fclose(f);
        CHECK(wordpiece_load(path, &tok, &st) == -1);
        CHECK_EQ_INT(st.code, LION_EFORMAT);
        CHECK_CONTAINS(st.msg, "vocabulary has no [UNK] token");
        f = fopen(path, "w");
        fputs("[PAD]\n[UNK]\n[CLS]\n[SEP]\n\xff\xfe\n", f);
        fclose(f);
        CHECK(wordpiece_load(path, &tok, &st) == -1);
        CHECK_CONTAINS(st.msg, "line 5 is not valid UTF-8");
        remove(path);
    }
}

/* Random bytes (malformed UTF-8 included) and a random charsmap never crash: sentencepiece
 * text gets U+FFFD for bad bytes, WordPiece rejects it with an error. */
static void test_random_bytes(void) {
    lion_status st = {0};
    spm_tokenizer *spm = NULL;
    wordpiece_tokenizer *wp = NULL;
    spm_load(testing_fixture("tokenizers/t5_bytes.model"), &spm, &st);
    wordpiece_load(testing_fixture("tokenizers/vocab.txt"), &wp, &st);
    if (!spm || !wp) {
        CHECK_MSG(0, "fixtures missing: %s", st.msg);
        spm_free(spm);
        wordpiece_free(wp);
        return;
    }
    unsigned seed = 7;
    char text[200];
    int32_t ids[MAX_IDS];
    int spm_ok = 0;
    for (int round = 0; round < 300; round++) {
        size_t len = (size_t)(rand_r(&seed) % 199);
        for (size_t i = 0; i < len; i++) text[i] = (char)(1 + rand_r(&seed) % 255);
        text[len] = '\0';
        size_t n = 0;
        spm_ok += t5_tokenize(spm, text, ids, MAX_IDS, &n, &st) == 0;
        char *out = NULL;
        if (spm_decode(spm, ids, n, &out, &st) == 0) free(out);
        bert_encode(wp, text, BERT_MAX_LENGTH, ids, NULL, &n, &st);
    }
    CHECK_EQ_INT(spm_ok, 300);
    spm_free(spm);
    wordpiece_free(wp);

    /* A charsmap of random units: lookups stay inside the blob. */
    Sentencepiece__ModelProto__SentencePiece p[2], *pp[2] = {&p[0], &p[1]};
    for (int i = 0; i < 2; i++) {
        sentencepiece__model_proto__sentence_piece__init(&p[i]);
        p[i].piece = (char *)(i ? "a" : "<unk>");
        p[i].has_type = 1;
        p[i].type = i ? SENTENCEPIECE__MODEL_PROTO__SENTENCE_PIECE__TYPE__NORMAL
                      : SENTENCEPIECE__MODEL_PROTO__SENTENCE_PIECE__TYPE__UNKNOWN;
    }
    char map[4 + 1024 + 64];
    for (size_t i = 0; i < sizeof map; i++) map[i] = (char)rand_r(&seed);
    map[0] = 0; map[1] = 4; map[2] = 0; map[3] = 0;
    uint8_t *blob;
    size_t size = pack_model(pp, 2, 0, map, sizeof map, &blob);
    spm_tokenizer *tok = NULL;
    CHECK_MSG(spm_load_buffer(blob, size, "random.model", &tok, &st) == 0, "%s", st.msg);
    free(blob);
    for (int round = 0; tok && round < 100; round++) {
        size_t len = (size_t)(rand_r(&seed) % 64);
        for (size_t i = 0; i < len; i++) text[i] = (char)(1 + rand_r(&seed) % 255);
        text[len] = '\0';
        size_t n = 0;
        t5_tokenize(tok, text, ids, MAX_IDS, &n, &st);
    }
    spm_free(tok);
}

int main(void) {
    test_t5_model("t5");
    test_t5_model("t5_bytes");
    test_t5_model("t5_user");
    test_spm_errors();
    test_bert();
    test_random_bytes();
    return testing_finish();
}
