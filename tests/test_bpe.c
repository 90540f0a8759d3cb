/* test_bpe.c - SentencePiece BPE (LLaMA's tokenizer) and HF's LlamaTokenizer layer with Pink's
 * added tokens, against tests/fixtures/gen_bpe.py: the ids of the Python sentencepiece module on
 * BPE models trained there (byte fallback, charsmap + user-defined symbols, UNUSED pieces), its
 * decoded texts, and pink_ref's LlamaTokenizer (legacy and not) ids and texts; every case
 * must be identical. Then errors and limits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama_tokenizer.h"
#include "sentencepiece.h"
#include "testing.h"

#define MAX_IDS 8192
#define SHOWN 5

static const char *const PINK_ADDED[] = {"<im_patch>", "<des>", "</des>", "<loc>", "</loc>", "<rel>", "</rel>",
                                         "<cls>", "</cls>", "<qes>", "</qes>", "<opt>", "</opt>"};
#define N_PINK_ADDED (sizeof PINK_ADDED / sizeof PINK_ADDED[0])

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "    %s:", label);
    for (size_t i = 0; i < n && i < 60; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 60 ? " ...\n" : "\n");
}

static int same_ids(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    return na == nb && memcmp(a, b, na * sizeof *a) == 0;
}

/* sentencepiece's encode and decode of every case string, and decode of random ids. */
static void test_spm_model(const char *model) {
    char path[256], name[256];
    snprintf(path, sizeof path, "bpe/%s.model", model);
    lion_status st = {0};
    spm_tokenizer *tok = NULL;
    CHECK_MSG(spm_load(testing_fixture(path), &tok, &st) == 0, "spm_load %s: %s", model, st.msg);
    if (!tok) return;
    CHECK_EQ_INT(spm_is_bpe(tok), 1);
    size_t n_cases;
    snprintf(name, sizeof name, "bpe/%s_cases.txt", model);
    testing_text_case *cases = testing_read_text_cases(name, MAX_IDS, &n_cases);
    CHECK_MSG(n_cases > 3000, "%s: only %zu cases", name, n_cases);
    int32_t *ids = malloc(MAX_IDS * sizeof *ids);
    size_t bad_ids = 0, bad_text = 0, bytes_seen = 0;
    for (size_t i = 0; i < n_cases; i++) {
        testing_text_case *c = &cases[i];
        size_t n = 0;
        int rc = spm_encode(tok, c->text, ids, MAX_IDS, &n, &st);
        if (rc || !same_ids(ids, n, c->ids, c->n_ids)) {
            if (bad_ids++ < SHOWN) {
                fprintf(stderr, "  %s case %zu: ids differ for \"%s\" (rc %d %s)\n", model, i, c->text, rc,
                        rc ? st.msg : "");
                print_ids("got ", ids, n);
                print_ids("want", c->ids, c->n_ids);
            }
            continue;
        }
        for (size_t k = 0; k < n; k++) {
            size_t len;
            const char *p = spm_id_to_piece(tok, ids[k], &len);
            bytes_seen += len == 6 && strncmp(p, "<0x", 3) == 0;
        }
        char *text = NULL;
        rc = spm_decode(tok, ids, n, &text, &st);
        if (rc || strcmp(text, c->decoded) != 0) {
            if (bad_text++ < SHOWN)
                fprintf(stderr, "  %s case %zu: decode of \"%s\" gives \"%s\", want \"%s\"\n", model, i, c->text,
                        text ? text : st.msg, c->decoded);
        }
        free(text);
    }
    CHECK_MSG(bad_ids == 0, "%s: %zu of %zu cases encode differently", model, bad_ids, n_cases);
    CHECK_MSG(bad_text == 0, "%s: %zu of %zu cases decode differently", model, bad_text, n_cases);
    /* the byte-fallback models must have exercised it */
    if (strcmp(model, "nfkc") != 0) CHECK_MSG(bytes_seen > 1000, "%s: only %zu byte pieces", model, bytes_seen);
    testing_free_text_cases(cases, n_cases);

    snprintf(name, sizeof name, "bpe/%s_decode.txt", model);
    cases = testing_read_text_cases(name, MAX_IDS, &n_cases);
    CHECK_MSG(n_cases == 1000, "%s: %zu decode cases", name, n_cases);
    bad_text = 0;
    for (size_t i = 0; i < n_cases; i++) {
        char *text = NULL;
        int rc = spm_decode(tok, cases[i].ids, cases[i].n_ids, &text, &st);
        if (rc || strcmp(text, cases[i].decoded) != 0) {
            if (bad_text++ < SHOWN) {
                fprintf(stderr, "  %s decode case %zu: got \"%s\", want \"%s\"\n", model, i, text ? text : st.msg,
                        cases[i].decoded);
                print_ids("ids", cases[i].ids, cases[i].n_ids);
            }
        }
        free(text);
    }
    CHECK_MSG(bad_text == 0, "%s: %zu of %zu id sequences decode differently", model, bad_text, n_cases);
    testing_free_text_cases(cases, n_cases);
    free(ids);
    spm_free(tok);
}

static llama_tok *load_llama(int legacy, lion_status *st) {
    llama_tok_added added[N_PINK_ADDED];
    for (size_t i = 0; i < N_PINK_ADDED; i++) added[i] = (llama_tok_added){PINK_ADDED[i], (int32_t)(1500 + i)};
    llama_tok_options o = {.legacy = legacy, .add_bos = 1, .added = added, .n_added = N_PINK_ADDED};
    llama_tok *t = NULL;
    llama_tok_load(testing_fixture("bpe/llama.model"), &o, &t, st);
    return t;
}

/* HF LlamaTokenizer (pink_ref): encode and decode of every case, legacy and not. */
static void test_hf_layer(const char *file, int legacy) {
    lion_status st = {0};
    llama_tok *t = load_llama(legacy, &st);
    CHECK_MSG(t != NULL, "llama_tok_load: %s", st.msg);
    if (!t) return;
    size_t n_cases;
    testing_text_case *cases = testing_read_text_cases(file, MAX_IDS, &n_cases);
    CHECK_MSG(n_cases > 2000, "%s: only %zu cases", file, n_cases);
    int32_t *ids = malloc(MAX_IDS * sizeof *ids);
    size_t bad_ids = 0, bad_text = 0, added_seen = 0;
    for (size_t i = 0; i < n_cases; i++) {
        testing_text_case *c = &cases[i];
        size_t n = 0;
        int rc = llama_tok_encode(t, c->text, ids, MAX_IDS, &n, &st);
        if (rc || !same_ids(ids, n, c->ids, c->n_ids)) {
            if (bad_ids++ < SHOWN) {
                fprintf(stderr, "  %s case %zu: ids differ for \"%s\" (rc %d %s)\n", file, i, c->text, rc,
                        rc ? st.msg : "");
                print_ids("got ", ids, n);
                print_ids("want", c->ids, c->n_ids);
            }
            continue;
        }
        for (size_t k = 0; k < n; k++) added_seen += ids[k] >= 1500;
        char *text = NULL;
        rc = llama_tok_decode(t, ids, n, &text, &st);
        if (rc || strcmp(text, c->decoded) != 0) {
            if (bad_text++ < SHOWN)
                fprintf(stderr, "  %s case %zu: decode of \"%s\" gives \"%s\", want \"%s\"\n", file, i, c->text,
                        text ? text : st.msg, c->decoded);
        }
        free(text);
    }
    CHECK_MSG(bad_ids == 0, "%s: %zu of %zu cases encode differently", file, bad_ids, n_cases);
    CHECK_MSG(bad_text == 0, "%s: %zu of %zu cases decode differently", file, bad_text, n_cases);
    CHECK_MSG(added_seen > 500, "%s: only %zu added tokens in the ids", file, added_seen);
    testing_free_text_cases(cases, n_cases);

    if (!legacy) {
        cases = testing_read_text_cases("bpe/llama_hf_decode.txt", MAX_IDS, &n_cases);
        CHECK_EQ_INT(n_cases, 1000);
        bad_text = 0;
        for (size_t i = 0; i < n_cases; i++) {
            char *text = NULL;
            int rc = llama_tok_decode(t, cases[i].ids, cases[i].n_ids, &text, &st);
            if ((rc || strcmp(text, cases[i].decoded) != 0) && bad_text++ < SHOWN) {
                fprintf(stderr, "  decode case %zu: got \"%s\", want \"%s\"\n", i, text ? text : st.msg,
                        cases[i].decoded);
                print_ids("ids", cases[i].ids, cases[i].n_ids);
            }
            free(text);
        }
        CHECK_MSG(bad_text == 0, "llama_hf_decode: %zu of %zu id sequences decode differently", bad_text, n_cases);
        testing_free_text_cases(cases, n_cases);
    }
    free(ids);
    llama_tok_free(t);
}

static void test_api_and_errors(void) {
    lion_status st = {0};
    llama_tok *t = load_llama(0, &st);
    if (!t) return;
    CHECK_EQ_INT(llama_tok_vocab_size(t), 1513);
    CHECK_EQ_INT(llama_tok_bos_id(t), 1);
    CHECK_EQ_INT(llama_tok_eos_id(t), 2);
    CHECK_EQ_INT(llama_tok_token_id(t, "<im_patch>"), 1500);
    CHECK_EQ_INT(llama_tok_token_id(t, "</opt>"), 1512);
    CHECK_EQ_INT(llama_tok_token_id(t, "<0x41>"), spm_piece_to_id(llama_tok_spm(t), "<0x41>", 6));
    CHECK_EQ_INT(llama_tok_token_id(t, "no such piece"), -1);
    int32_t ids[64];
    size_t n = 0;
    /* bos + the added tokens whole, however they touch the text around them */
    CHECK_EQ_INT(llama_tok_encode(t, "<im_patch><im_patch>", ids, 64, &n, &st), 0);
    CHECK_EQ_INT(n, 4);
    CHECK(ids[0] == 1 && ids[2] == 1500 && ids[3] == 1500);
    CHECK_EQ_INT(llama_tok_encode(t, "", ids, 64, &n, &st), 0);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_INT(ids[0], 1);
    /* limits */
    CHECK_EQ_INT(llama_tok_encode(t, "where is the dog", ids, 2, &n, &st), -1);
    CHECK_EQ_INT(st.code, LION_ETOOBIG);
    CHECK_CONTAINS(st.msg, "more than the 2 allowed");
    CHECK(n > 2);
    int32_t bad[] = {5, 1513};
    char *text = NULL;
    CHECK_EQ_INT(llama_tok_decode(t, bad, 2, &text, &st), -1);
    CHECK_CONTAINS(st.msg, "id 1513 at position 1 is not in the vocabulary of 1513");
    CHECK(text == NULL);
    llama_tok_free(t);

    /* bad added tokens */
    static const struct {
        llama_tok_added a[2];
        const char *msg;
    } cases[] = {
        {{{"<x>", 1500}, {"<x>", 1501}}, "added token 1 (\"<x>\", id 1501) is repeated"},
        {{{"<x>", 1500}, {"<y>", 1500}}, "added token 1 (\"<y>\", id 1500) is repeated"},
        {{{"<x>", 1500}, {"", 1501}}, "added token 1 (\"\", id 1501) is empty"},
        {{{"<x>", -4}, {"<y>", 1501}}, "added token 0 (\"<x>\", id -4) has a negative id"},
        {{{"<x>", 5}, {"<y>", 1501}}, "added token 0 (\"<x>\", id 5) has the id of a different piece"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        llama_tok_options o = {.legacy = 0, .add_bos = 1, .added = cases[i].a, .n_added = 2};
        CHECK_EQ_INT(llama_tok_load(testing_fixture("bpe/llama.model"), &o, &t, &st), -1);
        CHECK(t == NULL);
        CHECK_EQ_INT(st.code, LION_EFORMAT);
        CHECK_CONTAINS(st.msg, cases[i].msg);
    }
    /* an added token re-declaring a piece of the model keeps its id */
    llama_tok_added same[1] = {{"<0x41>", 0}};
    same[0].id = 0;
    spm_tokenizer *sp = NULL;
    CHECK_EQ_INT(spm_load(testing_fixture("bpe/llama.model"), &sp, &st), 0);
    if (sp) {
        same[0].id = spm_piece_to_id(sp, "<0x41>", 6);
        llama_tok_options o = {.legacy = 0, .add_bos = 0, .added = same, .n_added = 1};
        CHECK_EQ_INT(llama_tok_load(testing_fixture("bpe/llama.model"), &o, &t, &st), 0);
        if (t) {
            CHECK_EQ_INT(llama_tok_vocab_size(t), 1500);
            CHECK_EQ_INT(llama_tok_encode(t, "<0x41>", ids, 64, &n, &st), 0);
            CHECK(n >= 1 && ids[n - 1] == same[0].id);
            llama_tok_free(t);
        }
        spm_free(sp);
    }
    /* word and char models are refused */
    CHECK_EQ_INT(spm_load(testing_fixture("bpe/word.model"), &sp, &st), -1);
    CHECK(sp == NULL);
    CHECK_CONTAINS(st.msg, "word.model: model_type 3 is not unigram (1) or BPE (2), the types supported");
}

int main(void) {
    test_spm_model("llama");
    test_spm_model("nfkc");
    test_spm_model("unused");
    test_hf_layer("bpe/llama_hf_legacy.txt", 1);
    test_hf_layer("bpe/llama_hf.txt", 0);
    test_api_and_errors();
    return testing_finish();
}
