/* llama_tokenizer.c - HF's slow LlamaTokenizer (transformers 4.38) over the SentencePiece
 * model: see llama_tokenizer.h for the rules, followed step by step so that ids match. */
#include "llama_tokenizer.h"

#include <stdlib.h>
#include <string.h>

#define SPACE_SYMBOL "\xE2\x96\x81" /* '▁' */
#define SPACE_SYMBOL_LEN 3

/* A string the text is cut at: a special token (bos, eos, unk) or an added token. */
struct cut_token {
    const char *text;
    size_t len;
    int32_t id;
    int special; /* bos/eos/unk: skipped by decode, and what drops a leading lone '▁' */
};

struct llama_tok {
    spm_tokenizer *spm;
    llama_tok_options opt; /* added points into `added` below */
    llama_tok_added *added;
    char **added_text;
    struct cut_token *cuts;
    size_t n_cuts;
    size_t vocab;
    int32_t bos, eos, unk;
    size_t unk_ids; /* ids of "<unk>" encoded without dummy prefix: what legacy=False drops */
};

/* ------------------------------------------------------------------ id vectors */

struct idvec {
    int32_t *v;
    size_t n, cap;
};

static int idvec_push(struct idvec *a, int32_t id) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 64;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return 0;
}

/* sentencepiece ids of text[0..len) appended to out. Every id covers at least one byte of the
 * normalized text, which is at most 3 bytes per input byte (' ' -> '▁') plus the prefix. */
static int encode_text(const llama_tok *t, const char *text, size_t len, int dummy_prefix, size_t drop,
                       struct idvec *out, lion_status *st) {
    size_t cap = 3 * len + 4, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) return lion_fail(st, LION_ENOMEM, "llama tokenizer: out of memory");
    int rc = spm_encode_span(t->spm, text, len, dummy_prefix, ids, cap, &n, st);
    /* HF: tokens[unk_token_length:] if len(tokens) >= unk_token_length else tokens */
    for (size_t i = n >= drop ? drop : 0; rc == 0 && i < n; i++)
        if (idvec_push(out, ids[i])) rc = lion_fail(st, LION_ENOMEM, "llama tokenizer: out of memory");
    free(ids);
    return rc;
}

/* ------------------------------------------------------------------ loading */

void llama_tok_free(llama_tok *t) {
    if (!t) return;
    spm_free(t->spm);
    for (size_t i = 0; t->added_text && i < t->opt.n_added; i++) free(t->added_text[i]);
    free(t->added_text);
    free(t->added);
    free(t->cuts);
    free(t);
}

static int add_cut(llama_tok *t, const char *text, int32_t id, int special) {
    t->cuts[t->n_cuts++] = (struct cut_token){text, strlen(text), id, special};
    return 0;
}

int llama_tok_load(const char *path, const llama_tok_options *opt, llama_tok **out, lion_status *st) {
    if (!path || !opt || !out || (opt->n_added && !opt->added))
        return lion_fail(st, LION_EINVAL, "llama_tok_load: NULL argument");
    *out = NULL;
    llama_tok *t = calloc(1, sizeof *t);
    if (!t) return lion_fail(st, LION_ENOMEM, "%s: out of memory", path);
    if (spm_load(path, &t->spm, st)) {
        free(t);
        return -1;
    }
    t->opt = *opt;
    t->bos = spm_bos_id(t->spm);
    t->eos = spm_eos_id(t->spm);
    t->unk = spm_unk_id(t->spm);
    size_t pieces = spm_piece_count(t->spm);
    t->vocab = pieces;
    t->added = calloc(opt->n_added + 1, sizeof *t->added);
    t->added_text = calloc(opt->n_added + 1, sizeof *t->added_text);
    t->cuts = calloc(opt->n_added + 3, sizeof *t->cuts);
    if (!t->added || !t->added_text || !t->cuts) {
        llama_tok_free(t);
        return lion_fail(st, LION_ENOMEM, "%s: out of memory", path);
    }
    if (t->bos < 0 || t->eos < 0) {
        llama_tok_free(t);
        return lion_fail(st, LION_EFORMAT, "%s: the model defines no bos or eos piece (LLaMA's are <s> and </s>)",
                         path);
    }
    t->opt.added = t->added;
    for (size_t i = 0; i < opt->n_added; i++) {
        const llama_tok_added *a = &opt->added[i];
        size_t len = 0;
        const char *piece = a->id >= 0 ? spm_id_to_piece(t->spm, a->id, &len) : NULL;
        const char *why = NULL;
        if (!a->content || !a->content[0]) why = "is empty";
        else if (a->id < 0) why = "has a negative id";
        else if (piece && strcmp(piece, a->content) != 0) why = "has the id of a different piece";
        for (size_t j = 0; !why && j < i; j++)
            if (strcmp(opt->added[j].content, a->content) == 0 || opt->added[j].id == a->id) why = "is repeated";
        if (why) {
            lion_fail(st, LION_EFORMAT, "%s: added token %zu (\"%s\", id %d) %s", path, i,
                      a->content ? a->content : "", a->id, why);
            llama_tok_free(t);
            return -1;
        }
        t->added_text[i] = strdup(a->content);
        if (!t->added_text[i]) {
            llama_tok_free(t);
            return lion_fail(st, LION_ENOMEM, "%s: out of memory", path);
        }
        t->added[i] = (llama_tok_added){t->added_text[i], a->id};
        if ((size_t)a->id + 1 > t->vocab) t->vocab = (size_t)a->id + 1;
    }
    /* specials first: HF registers them as added tokens too, so the text is cut at them */
    const int32_t special[3] = {t->bos, t->eos, t->unk};
    for (int k = 0; k < 3; k++) add_cut(t, spm_id_to_piece(t->spm, special[k], NULL), special[k], 1);
    for (size_t i = 0; i < opt->n_added; i++)
        if (t->added[i].id != t->bos && t->added[i].id != t->eos && t->added[i].id != t->unk)
            add_cut(t, t->added[i].content, t->added[i].id, 0);
    struct idvec unk = {0};
    const char *unk_text = spm_id_to_piece(t->spm, t->unk, NULL);
    if (encode_text(t, unk_text, strlen(unk_text), 0, 0, &unk, st)) {
        free(unk.v);
        llama_tok_free(t);
        return -1;
    }
    t->unk_ids = unk.n;
    free(unk.v);
    *out = t;
    return 0;
}

size_t llama_tok_vocab_size(const llama_tok *t) { return t->vocab; }
int32_t llama_tok_bos_id(const llama_tok *t) { return t->bos; }
int32_t llama_tok_eos_id(const llama_tok *t) { return t->eos; }
const spm_tokenizer *llama_tok_spm(const llama_tok *t) { return t->spm; }

int32_t llama_tok_token_id(const llama_tok *t, const char *token) {
    for (size_t i = 0; i < t->opt.n_added; i++)
        if (strcmp(t->added[i].content, token) == 0) return t->added[i].id;
    int32_t id = spm_piece_to_id(t->spm, token, strlen(token));
    size_t len;
    const char *piece = spm_id_to_piece(t->spm, id, &len);
    return piece && strcmp(piece, token) == 0 ? id : -1;
}

/* ------------------------------------------------------------------ encoding */

/* The cut token at s (leftmost-longest: the caller scans left to right), NULL if none. */
static const struct cut_token *cut_at(const llama_tok *t, const char *s, size_t n) {
    const struct cut_token *best = NULL;
    for (size_t i = 0; i < t->n_cuts; i++) {
        const struct cut_token *c = &t->cuts[i];
        if (c->len <= n && (!best || c->len > best->len) && memcmp(c->text, s, c->len) == 0) best = c;
    }
    return best;
}

/* HF's _tokenize of one piece of text between cut tokens. */
static int encode_segment(const llama_tok *t, const char *s, size_t n, struct idvec *out, lion_status *st) {
    if (t->opt.legacy) return encode_text(t, s, n, SPM_MODEL_PREFIX, 0, out, st);
    int lead_space = n > 0 && (s[0] == ' ' || (n >= SPACE_SYMBOL_LEN && memcmp(s, SPACE_SYMBOL, SPACE_SYMBOL_LEN) == 0));
    if (!lead_space) return encode_text(t, s, n, 0, 0, out, st);
    const char *unk = spm_id_to_piece(t->spm, t->unk, NULL);
    size_t ul = strlen(unk);
    char *joined = malloc(ul + n + 1);
    if (!joined) return lion_fail(st, LION_ENOMEM, "llama tokenizer: out of memory");
    memcpy(joined, unk, ul);
    memcpy(joined + ul, s, n);
    int rc = encode_text(t, joined, ul + n, 0, t->unk_ids, out, st);
    free(joined);
    return rc;
}

/* legacy=False rewrites the text first: '▁' -> ' ', and one '▁' in front. */
static char *prefix_text(const char *text, size_t *len) {
    size_t n = strlen(text);
    char *s = malloc(SPACE_SYMBOL_LEN + n + 1);
    if (!s) return NULL;
    memcpy(s, SPACE_SYMBOL, SPACE_SYMBOL_LEN);
    size_t o = SPACE_SYMBOL_LEN;
    for (size_t i = 0; i < n;) {
        if (i + SPACE_SYMBOL_LEN <= n && memcmp(text + i, SPACE_SYMBOL, SPACE_SYMBOL_LEN) == 0) {
            s[o++] = ' ';
            i += SPACE_SYMBOL_LEN;
        } else {
            s[o++] = text[i++];
        }
    }
    s[o] = '\0';
    *len = o;
    return s;
}

int llama_tok_encode(const llama_tok *t, const char *text, int32_t *ids, size_t max_ids, size_t *n_ids,
                     lion_status *st) {
    if (!t || !text || (!ids && max_ids) || !n_ids) return lion_fail(st, LION_EINVAL, "llama_tok_encode: NULL argument");
    *n_ids = 0;
    size_t n = strlen(text);
    /* HF: `if self.legacy or len(text) == 0: return super().tokenize(text)` */
    int rewrite = !t->opt.legacy && n > 0;
    char *owned = rewrite ? prefix_text(text, &n) : NULL;
    if (rewrite && !owned) return lion_fail(st, LION_ENOMEM, "llama tokenizer: out of memory");
    const char *s = rewrite ? owned : text;
    struct idvec body = {0};
    int rc = 0, first_is_lone_space = 0, second_is_special = 0;
    size_t seg = 0;
    for (size_t i = 0; rc == 0 && i <= n;) {
        const struct cut_token *c = i < n ? cut_at(t, s + i, n - i) : NULL;
        if (!c && i < n) {
            i++;
            continue;
        }
        if (i > seg) {
            size_t before = body.n;
            rc = encode_segment(t, s + seg, i - seg, &body, st);
            size_t len;
            const char *piece = before == 0 && body.n == 1 ? spm_id_to_piece(t->spm, body.v[0], &len) : NULL;
            if (piece && len == SPACE_SYMBOL_LEN && memcmp(piece, SPACE_SYMBOL, len) == 0) first_is_lone_space = 1;
        }
        if (!c) break;
        if (body.n == 1 && first_is_lone_space) second_is_special = c->special;
        if (rc == 0 && idvec_push(&body, c->id)) rc = lion_fail(st, LION_ENOMEM, "llama tokenizer: out of memory");
        i += c->len;
        seg = i;
    }
    free(owned);
    if (rc) {
        free(body.v);
        return rc;
    }
    /* HF (legacy=False): `if tokens[0] == SPIECE_UNDERLINE and tokens[1] in all_special_tokens:
     * tokens = tokens[1:]` */
    size_t skip = rewrite && first_is_lone_space && second_is_special ? 1 : 0;
    size_t total = (t->opt.add_bos ? 1 : 0) + body.n - skip + (t->opt.add_eos ? 1 : 0), k = 0;
    *n_ids = total;
    if (total > max_ids) {
        free(body.v);
        return lion_fail(st, LION_ETOOBIG, "llama tokenizer: text needs %zu tokens, more than the %zu allowed", total,
                         max_ids);
    }
    if (t->opt.add_bos) ids[k++] = t->bos;
    for (size_t i = skip; i < body.n; i++) ids[k++] = body.v[i];
    if (t->opt.add_eos) ids[k++] = t->eos;
    free(body.v);
    return 0;
}

/* ------------------------------------------------------------------ decoding */

struct strbuf {
    char *data;
    size_t len, cap;
};

static int sb_append(struct strbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/* convert_tokens_to_string of a run of piece ids: the first loses one leading '▁', then
 * sentencepiece decodes the piece texts with the model as HF loaded it. */
static int decode_run(const llama_tok *t, const int32_t *run, size_t n, char **text, lion_status *st) {
    const char **pieces = malloc(n * sizeof *pieces);
    size_t *lens = malloc(n * sizeof *lens);
    if (!pieces || !lens) {
        free(pieces);
        free(lens);
        return lion_fail(st, LION_ENOMEM, "llama tokenizer: out of memory");
    }
    for (size_t i = 0; i < n; i++) pieces[i] = spm_id_to_piece(t->spm, run[i], &lens[i]);
    if (lens[0] >= SPACE_SYMBOL_LEN && memcmp(pieces[0], SPACE_SYMBOL, SPACE_SYMBOL_LEN) == 0) {
        pieces[0] += SPACE_SYMBOL_LEN;
        lens[0] -= SPACE_SYMBOL_LEN;
    }
    int rc = spm_decode_pieces(t->spm, pieces, lens, n, t->opt.legacy ? SPM_MODEL_PREFIX : 0, text, st);
    free(pieces);
    free(lens);
    return rc;
}

/* HF's clean_up_tokenization: these replacements, in this order, each over the whole text. */
static int clean_up(struct strbuf *b) {
    static const char *const from[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're"};
    static const char *const to[] = {".", "?", "!", ",", "'", "n't", "'m", "'s", "'ve", "'re"};
    for (size_t r = 0; r < sizeof from / sizeof from[0]; r++) {
        size_t fl = strlen(from[r]), tl = strlen(to[r]), o = 0;
        for (size_t i = 0; i < b->len;) {
            if (i + fl <= b->len && memcmp(b->data + i, from[r], fl) == 0) {
                memmove(b->data + o, to[r], tl); /* tl < fl and o <= i: never past the read point */
                o += tl;
                i += fl;
            } else {
                b->data[o++] = b->data[i++];
            }
        }
        b->len = o;
        b->data[o] = '\0';
    }
    return 0;
}

static const llama_tok_added *added_of(const llama_tok *t, int32_t id) {
    for (size_t i = 0; i < t->opt.n_added; i++)
        if (t->added[i].id == id) return &t->added[i];
    return NULL;
}

int llama_tok_decode(const llama_tok *t, const int32_t *ids, size_t n_ids, char **text, lion_status *st) {
    if (!t || (!ids && n_ids) || !text) return lion_fail(st, LION_EINVAL, "llama_tok_decode: NULL argument");
    *text = NULL;
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i] < 0 || (size_t)ids[i] >= t->vocab ||
            ((size_t)ids[i] >= spm_piece_count(t->spm) && !added_of(t, ids[i])))
            return lion_fail(st, LION_EINVAL, "llama_tok_decode: id %d at position %zu is not in the vocabulary of %zu",
                             ids[i], i, t->vocab);
    struct strbuf out = {0};
    int32_t *run = malloc((n_ids ? n_ids : 1) * sizeof *run);
    if (!run || sb_append(&out, "", 0)) {
        free(run);
        free(out.data);
        return lion_fail(st, LION_ENOMEM, "llama tokenizer: out of memory");
    }
    size_t n_run = 0, parts = 0;
    int rc = 0;
    for (size_t i = 0; i <= n_ids && rc == 0; i++) {
        int32_t id = i < n_ids ? ids[i] : -1;
        if (id == t->bos || id == t->eos || id == t->unk) continue; /* skip_special_tokens */
        const llama_tok_added *a = id >= 0 ? added_of(t, id) : NULL;
        if (id >= 0 && !a) {
            run[n_run++] = id;
            continue;
        }
        /* an added token, or the end: the run before it is one part (kept before an added token
         * only when it decodes to something, as HF's `if len(string) > 0`) */
        if (n_run > 0) {
            char *s = NULL;
            rc = decode_run(t, run, n_run, &s, st);
            if (rc == 0 && (s[0] || !a)) {
                if ((parts++ && sb_append(&out, " ", 1)) || sb_append(&out, s, strlen(s)))
                    rc = lion_fail(st, LION_ENOMEM, "llama tokenizer: out of memory");
            }
            free(s);
            n_run = 0;
        }
        if (rc == 0 && a && ((parts++ && sb_append(&out, " ", 1)) || sb_append(&out, a->content, strlen(a->content))))
            rc = lion_fail(st, LION_ENOMEM, "llama tokenizer: out of memory");
    }
    free(run);
    if (rc == 0 && t->opt.clean_up_tokenization_spaces) clean_up(&out);
    if (rc) {
        free(out.data);
        return rc;
    }
    *text = out.data;
    return 0;
}
