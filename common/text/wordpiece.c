/* wordpiece.c - BERT BasicTokenizer + WordPiece, following HF's BertTokenizer step by step. */
#include "wordpiece.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file_read.h"
#include "unicode.h"

#define MAX_WORD_CHARS 100 /* longer words become [UNK], as BERT's max_input_chars_per_word */
#define MAX_VOCAB_BYTES (64u << 20)

struct vocab_entry {
    char *text;
    size_t len;
    int32_t id;
};

struct wordpiece_tokenizer {
    char *file; /* vocab file contents, tokens point into it */
    struct vocab_entry *entries;
    size_t n_entries;
    int32_t *slots; /* open addressing: index into entries, -1 empty */
    size_t n_slots;
    size_t vocab_size;
    int32_t unk_id, cls_id, sep_id, pad_id, dec_id;
};

/* The special tokens HF splits the text on before any other processing. */
static const char *const SPECIALS[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"};
#define N_SPECIALS (sizeof SPECIALS / sizeof SPECIALS[0])

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static int32_t *vocab_slot(const wordpiece_tokenizer *tok, const char *s, size_t n) {
    size_t i = hash_bytes(s, n) & (tok->n_slots - 1);
    for (;;) {
        int32_t e = tok->slots[i];
        if (e < 0) return &tok->slots[i];
        const struct vocab_entry *v = &tok->entries[e];
        if (v->len == n && memcmp(v->text, s, n) == 0) return &tok->slots[i];
        i = (i + 1) & (tok->n_slots - 1);
    }
}

static int32_t vocab_find(const wordpiece_tokenizer *tok, const char *s, size_t n) {
    int32_t e = *vocab_slot(tok, s, n);
    return e < 0 ? -1 : tok->entries[e].id;
}

int32_t wordpiece_token_id(const wordpiece_tokenizer *tok, const char *token) {
    if (!tok || !token) return -1;
    if (strcmp(token, "[DEC]") == 0) return tok->dec_id;
    return vocab_find(tok, token, strlen(token));
}

size_t wordpiece_vocab_size(const wordpiece_tokenizer *tok) { return tok->vocab_size; }

void wordpiece_free(wordpiece_tokenizer *tok) {
    if (!tok) return;
    free(tok->file);
    free(tok->entries);
    free(tok->slots);
    free(tok);
}


int wordpiece_load(const char *vocab_path, wordpiece_tokenizer **out, lion_status *st) {
    if (!vocab_path || !out) return lion_fail(st, LION_EINVAL, "wordpiece_load: NULL argument");
    *out = NULL;
    wordpiece_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) return lion_fail(st, LION_ENOMEM, "%s: out of memory", vocab_path);
    size_t size = 0;
    if (file_read_all(vocab_path, MAX_VOCAB_BYTES, "a vocabulary", &tok->file, &size, st)) {
        free(tok);
        return -1;
    }
    /* Lines as Python's universal newlines read them: \n, \r\n and \r all end a line. */
    size_t lines = 0;
    for (size_t i = 0; i < size; i++)
        if (tok->file[i] == '\n' || (tok->file[i] == '\r' && tok->file[i + 1] != '\n')) lines++;
    if (size > 0 && tok->file[size - 1] != '\n' && tok->file[size - 1] != '\r') lines++;
    tok->n_slots = 16;
    while (tok->n_slots < 2 * lines) tok->n_slots *= 2;
    tok->entries = malloc((lines ? lines : 1) * sizeof *tok->entries);
    tok->slots = malloc(tok->n_slots * sizeof *tok->slots);
    if (!tok->entries || !tok->slots) {
        wordpiece_free(tok);
        return lion_fail(st, LION_ENOMEM, "%s: out of memory for %zu tokens", vocab_path, lines);
    }
    memset(tok->slots, 0xFF, tok->n_slots * sizeof *tok->slots);
    char *p = tok->file, *end = tok->file + size;
    int32_t line = 0;
    while (p < end) {
        char *e = p;
        while (e < end && *e != '\n' && *e != '\r') e++;
        size_t len = (size_t)(e - p);
        for (size_t k = 0; k < len;) {
            uint32_t cp;
            size_t l = utf8_decode(p + k, len - k, &cp);
            if (l == 0) {
                wordpiece_free(tok);
                return lion_fail(st, LION_EFORMAT, "%s: line %d is not valid UTF-8", vocab_path, line + 1);
            }
            k += l;
        }
        /* A repeated token keeps its last line's id, as HF's load_vocab does. */
        int32_t *slot = vocab_slot(tok, p, len);
        if (*slot >= 0) {
            tok->entries[*slot].id = line;
        } else {
            tok->entries[tok->n_entries] = (struct vocab_entry){p, len, line};
            *slot = (int32_t)tok->n_entries++;
        }
        line++;
        if (e < end && *e == '\r' && e + 1 < end && e[1] == '\n') e++;
        p = e + 1;
    }
    tok->unk_id = vocab_find(tok, "[UNK]", 5);
    tok->cls_id = vocab_find(tok, "[CLS]", 5);
    tok->sep_id = vocab_find(tok, "[SEP]", 5);
    tok->pad_id = vocab_find(tok, "[PAD]", 5);
    const char *missing = tok->unk_id < 0 ? "[UNK]" : tok->cls_id < 0 ? "[CLS]" : tok->sep_id < 0 ? "[SEP]"
                        : tok->pad_id < 0 ? "[PAD]" : NULL;
    if (missing) {
        wordpiece_free(tok);
        return lion_fail(st, LION_EFORMAT, "%s: vocabulary has no %s token", vocab_path, missing);
    }
    /* [DEC] is added as a special token after the vocabulary (len(vocab)), as upstream's
     * add_special_tokens({"bos_token": "[DEC]"}) does, unless the file already has it. */
    tok->vocab_size = tok->n_entries;
    tok->dec_id = vocab_find(tok, "[DEC]", 5);
    if (tok->dec_id < 0) tok->dec_id = (int32_t)tok->vocab_size++;
    *out = tok;
    return 0;
}

/* ------------------------------------------------------------------ tokenization */

struct cps {
    uint32_t *v;
    size_t n, cap;
};

static int cps_push(struct cps *c, uint32_t cp) {
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        uint32_t *v = realloc(c->v, cap * sizeof *v);
        if (!v) return -1;
        c->v = v;
        c->cap = cap;
    }
    c->v[c->n++] = cp;
    return 0;
}

struct ids_out {
    int32_t *ids;
    size_t max, n;
};

static void ids_push(struct ids_out *o, int32_t id) {
    if (o->n < o->max) o->ids[o->n] = id;
    o->n++;
}

static int is_cjk(uint32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

static int is_whitespace(uint32_t cp) {
    return cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' || unicode_class(cp) == UCLASS_ZS;
}

static int is_control(uint32_t cp) {
    return cp != '\t' && cp != '\n' && cp != '\r' && unicode_class(cp) == UCLASS_C;
}

/* BERT counts all non-alphanumeric ASCII as punctuation ("$", "^", "`"), not only P*. */
static int is_punctuation(uint32_t cp) {
    return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
           (cp >= 123 && cp <= 126) || unicode_class(cp) == UCLASS_P;
}

/* Greedy longest-match-first WordPiece of one word (code points w[0..n)). */
static int wordpiece_word(const wordpiece_tokenizer *tok, const uint32_t *w, size_t n,
                          struct ids_out *out) {
    if (n > MAX_WORD_CHARS) {
        ids_push(out, tok->unk_id);
        return 0;
    }
    char buf[2 + 4 * MAX_WORD_CHARS];
    size_t off[MAX_WORD_CHARS + 1];
    char utf8[4 * MAX_WORD_CHARS];
    off[0] = 0;
    for (size_t i = 0; i < n; i++) off[i + 1] = off[i] + utf8_encode(w[i], utf8 + off[i]);
    int32_t found[MAX_WORD_CHARS];
    size_t n_found = 0;
    for (size_t start = 0; start < n;) {
        int32_t id = -1;
        size_t end = n;
        for (; end > start; end--) {
            size_t len = off[end] - off[start];
            if (start > 0) {
                buf[0] = buf[1] = '#';
                memcpy(buf + 2, utf8 + off[start], len);
                id = vocab_find(tok, buf, len + 2);
            } else {
                id = vocab_find(tok, utf8, len);
            }
            if (id >= 0) break;
        }
        if (id < 0) { /* a remainder no piece covers makes the whole word unknown */
            ids_push(out, tok->unk_id);
            return 0;
        }
        found[n_found++] = id;
        start = end;
    }
    for (size_t i = 0; i < n_found; i++) ids_push(out, found[i]);
    return 0;
}

/* Accent stripping and punctuation split of one whitespace-separated, lower-cased token,
 * then WordPiece of each resulting word. */
static int basic_token(const wordpiece_tokenizer *tok, const uint32_t *t, size_t n,
                       struct cps *scratch, struct ids_out *out) {
    scratch->n = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t d[UNICODE_NFD_MAX];
        int nd = unicode_decompose(t[i], d);
        for (int k = 0; k < nd; k++)
            if (cps_push(scratch, d[k])) return -1;
    }
    unicode_canonical_order(scratch->v, scratch->n);
    size_t m = 0;
    for (size_t i = 0; i < scratch->n; i++)
        if (unicode_class(scratch->v[i]) != UCLASS_MN) scratch->v[m++] = scratch->v[i];
    size_t word = 0;
    for (size_t i = 0; i < m; i++) {
        if (!is_punctuation(scratch->v[i])) continue;
        if (i > word) wordpiece_word(tok, scratch->v + word, i - word, out);
        wordpiece_word(tok, scratch->v + i, 1, out);
        word = i + 1;
    }
    if (m > word) wordpiece_word(tok, scratch->v + word, m - word, out);
    return 0;
}

/* BasicTokenizer on one segment between special tokens: HF first lower-cases character by
 * character (so no context-dependent rule such as final sigma applies), then drops NUL,
 * U+FFFD and control characters, maps whitespace to ' ', isolates CJK ideographs and
 * splits on whitespace. */
static int basic_segment(const wordpiece_tokenizer *tok, const uint32_t *s, size_t n,
                         struct cps *text, struct cps *scratch, struct ids_out *out) {
    text->n = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t low[3];
        int nl = unicode_lower(s[i], low);
        for (int k = 0; k < nl; k++) {
            uint32_t cp = low[k];
            if (cp == 0 || cp == 0xFFFD || is_control(cp)) continue;
            if (is_whitespace(cp)) cp = ' ';
            int cjk = is_cjk(cp);
            if ((cjk && cps_push(text, ' ')) || cps_push(text, cp) || (cjk && cps_push(text, ' ')))
                return -1;
        }
    }
    size_t start = 0;
    for (size_t i = 0; i <= text->n; i++) {
        if (i < text->n && text->v[i] != ' ') continue;
        if (i > start && basic_token(tok, text->v + start, i - start, scratch, out)) return -1;
        start = i + 1;
    }
    return 0;
}

static size_t special_at(const wordpiece_tokenizer *tok, const uint32_t *s, size_t n, int32_t *id) {
    for (size_t k = 0; k < N_SPECIALS; k++) {
        size_t len = strlen(SPECIALS[k]);
        if (len > n) continue;
        size_t j = 0;
        while (j < len && s[j] == (unsigned char)SPECIALS[k][j]) j++;
        if (j == len) {
            int32_t v = wordpiece_token_id(tok, SPECIALS[k]);
            *id = v >= 0 ? v : tok->unk_id;
            return len;
        }
    }
    return 0;
}

static int tokenize_into(const wordpiece_tokenizer *tok, const char *text, struct ids_out *out,
                         lion_status *st) {
    struct cps all = {0}, seg = {0}, scratch = {0};
    size_t len = strlen(text);
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t l = utf8_decode(text + i, len - i, &cp);
        if (l == 0) {
            free(all.v);
            return lion_fail(st, LION_EINVAL, "wordpiece: text is not valid UTF-8 at byte %zu", i);
        }
        if (cps_push(&all, cp)) goto oom;
        i += l;
    }
    size_t seg_start = 0;
    for (size_t i = 0; i <= all.n; i++) {
        int32_t id = -1;
        size_t l = i < all.n && all.v[i] == '[' ? special_at(tok, all.v + i, all.n - i, &id) : 0;
        if (l == 0 && i < all.n) continue;
        if (i > seg_start && basic_segment(tok, all.v + seg_start, i - seg_start, &seg, &scratch, out))
            goto oom;
        if (i == all.n) break;
        ids_push(out, id);
        i += l - 1;
        seg_start = i + 1;
    }
    free(all.v);
    free(seg.v);
    free(scratch.v);
    return 0;
oom:
    free(all.v);
    free(seg.v);
    free(scratch.v);
    return lion_fail(st, LION_ENOMEM, "wordpiece: out of memory tokenizing %zu bytes", len);
}

int wordpiece_tokenize(const wordpiece_tokenizer *tok, const char *text, int32_t *ids,
                       size_t max_ids, size_t *n_ids, lion_status *st) {
    if (!tok || !text || (!ids && max_ids) || !n_ids)
        return lion_fail(st, LION_EINVAL, "wordpiece_tokenize: NULL argument");
    struct ids_out out = {ids, max_ids, 0};
    if (tokenize_into(tok, text, &out, st)) return -1;
    *n_ids = out.n;
    if (out.n > max_ids)
        return lion_fail(st, LION_ETOOBIG, "wordpiece: text needs %zu tokens, more than the %zu allowed",
                         out.n, max_ids);
    return 0;
}

int bert_encode(const wordpiece_tokenizer *tok, const char *text, size_t max_length,
                int32_t *ids, int32_t *attention_mask, size_t *n_ids, lion_status *st) {
    if (!tok || !text || !ids || !n_ids) return lion_fail(st, LION_EINVAL, "bert_encode: NULL argument");
    if (max_length < 2)
        return lion_fail(st, LION_EINVAL, "bert_encode: max_length %zu leaves no room for [CLS] and [SEP]",
                         max_length);
    /* Count first, then keep only the last max_length - 2 tokens (truncation_side left). */
    struct ids_out count = {NULL, 0, 0};
    if (tokenize_into(tok, text, &count, st)) return -1;
    int32_t *all = malloc((count.n ? count.n : 1) * sizeof *all);
    if (!all) return lion_fail(st, LION_ENOMEM, "bert_encode: out of memory for %zu tokens", count.n);
    struct ids_out out = {all, count.n, 0};
    if (tokenize_into(tok, text, &out, st)) {
        free(all);
        return -1;
    }
    size_t keep = out.n < max_length - 2 ? out.n : max_length - 2;
    size_t n = 0;
    ids[n++] = tok->cls_id;
    memcpy(ids + n, all + (out.n - keep), keep * sizeof *ids);
    n += keep;
    ids[n++] = tok->sep_id;
    free(all);
    for (size_t i = 0; i < max_length; i++) {
        if (i >= n) ids[i] = tok->pad_id;
        if (attention_mask) attention_mask[i] = i < n;
    }
    *n_ids = n;
    return 0;
}
