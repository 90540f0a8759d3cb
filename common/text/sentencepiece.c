/* sentencepiece.c - SentencePiece models: loading, normalization, unigram segmentation
 * (spm_bpe.c has BPE's), T5's specials and decoding, mirroring the sentencepiece library
 * v0.1.97 (normalizer.cc, unigram_model.cc, sentencepiece_processor.cc) so that ids match. */
#include "sentencepiece.h"

#include <errno.h>
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file_read.h"
#include "spm_internal.h"
#include "unicode.h"

#define UNK_PENALTY 10.0f            /* unknown pieces score min_score - 10, as upstream */
#define CHARSMAP_MAX_RESULTS 32      /* upstream keeps at most 32 prefix matches */
#define MAX_MODEL_BYTES (1u << 30)
#define DEFAULT_UNK_SURFACE " \xE2\x81\x87 " /* TrainerSpec.unk_surface's default, " ⁇ " */

/* ------------------------------------------------------------------ growable buffers */

struct buf {
    char *data;
    size_t len, cap;
};

static int buf_append(struct buf *b, const char *s, size_t n) {
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

/* ------------------------------------------------------------------ piece lookup */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

int32_t spm_piece_find(const spm_tokenizer *tok, const char *s, size_t n) {
    size_t i = hash_bytes(s, n) & (tok->n_slots - 1);
    for (;;) {
        int32_t id = tok->slots[i];
        if (id < 0) return -1;
        const struct piece *p = &tok->pieces[id];
        if (p->len == n && memcmp(p->text, s, n) == 0) return id;
        i = (i + 1) & (tok->n_slots - 1);
    }
}

static int is_segmentable(piece_type t) {
    return t == PT(NORMAL) || t == PT(USER_DEFINED) || t == PT(UNUSED);
}

/* Upstream's PieceToId: a segmentable piece, else a reserved one (control, unknown, byte: few,
 * so a scan), else unk. */
int32_t spm_piece_to_id(const spm_tokenizer *tok, const char *s, size_t n) {
    int32_t id = spm_piece_find(tok, s, n);
    if (id >= 0) return id;
    for (size_t i = 0; i < tok->n_pieces; i++) {
        const struct piece *p = &tok->pieces[i];
        if (!is_segmentable(p->type) && p->len == n && memcmp(p->text, s, n) == 0) return (int32_t)i;
    }
    return tok->unk_id;
}

size_t spm_user_defined_prefix(const spm_tokenizer *tok, const char *s, size_t n) {
    size_t best = 0;
    for (size_t k = 0; k < tok->n_user_defined; k++) {
        const struct piece *p = &tok->pieces[tok->user_defined[k]];
        if (p->len > best && p->len <= n && memcmp(p->text, s, p->len) == 0) best = p->len;
    }
    return best;
}

/* ------------------------------------------------------------------ precompiled charsmap */

/* darts-clone unit fields. */
static uint32_t unit_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }
static uint32_t unit_label(uint32_t u) { return u & ((1u << 31) | 0xFFu); }
static int unit_has_leaf(uint32_t u) { return (u >> 8) & 1; }
static uint32_t unit_value(uint32_t u) { return u & ((1u << 31) - 1); }

/* Longest charsmap rule matching a prefix of s: returns the matched length (0: none) and
 * sets *value to the offset of its replacement in norm_strings. Corrupt tries end the
 * search rather than read out of bounds. */
static size_t charsmap_longest(const spm_tokenizer *tok, const char *s, size_t n, uint32_t *value) {
    if (!tok->trie) return 0;
    size_t found = 0, n_results = 0;
    uint32_t pos = unit_offset(tok->trie[0]);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        pos ^= c;
        if (pos >= tok->trie_units) break;
        uint32_t u = tok->trie[pos];
        if (unit_label(u) != c) break;
        pos ^= unit_offset(u);
        if (pos >= tok->trie_units) break;
        if (unit_has_leaf(u)) {
            if (n_results < CHARSMAP_MAX_RESULTS) {
                found = i + 1;
                *value = unit_value(tok->trie[pos]);
            }
            n_results++;
        }
    }
    return found;
}

/* One normalization step at the head of s (upstream NormalizePrefix): a user-defined
 * symbol passes through, else the longest charsmap rule, else one character unchanged, or
 * U+FFFD for one malformed byte. */
static void normalize_prefix(const spm_tokenizer *tok, const char *s, size_t n,
                             const char **out, size_t *out_len, size_t *consumed) {
    size_t best = spm_user_defined_prefix(tok, s, n);
    if (best) {
        *out = s;
        *out_len = *consumed = best;
        return;
    }
    uint32_t value = 0;
    size_t len = charsmap_longest(tok, s, n, &value);
    if (len && value < tok->norm_strings_len) {
        const char *r = tok->norm_strings + value;
        const char *end = memchr(r, '\0', tok->norm_strings_len - value);
        *out = r;
        *out_len = end ? (size_t)(end - r) : tok->norm_strings_len - value;
        *consumed = len;
        return;
    }
    uint32_t cp;
    size_t clen = utf8_decode(s, n, &cp);
    if (clen == 0) {
        *out = "\xEF\xBF\xBD";
        *out_len = 3;
        *consumed = 1;
    } else {
        *out = s;
        *out_len = *consumed = clen;
    }
}

static int ends_with_space(const struct buf *b, const char *space, size_t n) {
    return b->len >= n && memcmp(b->data + b->len - n, space, n) == 0;
}

/* Upstream Normalizer::Normalize: drop leading spaces, add the dummy prefix (when
 * dummy_prefix), collapse runs of spaces, escape spaces as '▁', drop trailing spaces. */
static int normalize(const spm_tokenizer *tok, const char *s, size_t n, int dummy_prefix, struct buf *out) {
    const char *r;
    size_t rlen, used;
    out->len = 0;
    if (buf_append(out, "", 0)) return -1;
    if (tok->remove_extra_whitespaces) {
        while (n > 0) {
            normalize_prefix(tok, s, n, &r, &rlen, &used);
            if (!(rlen == 1 && r[0] == ' ')) break;
            s += used;
            n -= used;
        }
    }
    if (n == 0) return 0;
    const char *space = tok->escape_whitespaces ? SPACE_SYMBOL : " ";
    size_t space_len = tok->escape_whitespaces ? SPACE_SYMBOL_LEN : 1;
    if (dummy_prefix && buf_append(out, space, space_len)) return -1;
    int prev_space = tok->remove_extra_whitespaces;
    while (n > 0) {
        normalize_prefix(tok, s, n, &r, &rlen, &used);
        if (prev_space && tok->remove_extra_whitespaces)
            while (rlen > 0 && r[0] == ' ') { r++; rlen--; }
        if (rlen > 0) {
            for (size_t i = 0; i < rlen; i++) {
                if (tok->escape_whitespaces && r[i] == ' ') {
                    if (buf_append(out, SPACE_SYMBOL, SPACE_SYMBOL_LEN)) return -1;
                } else if (buf_append(out, &r[i], 1)) {
                    return -1;
                }
            }
            prev_space = r[rlen - 1] == ' ';
        }
        s += used;
        n -= used;
        if (!tok->remove_extra_whitespaces) prev_space = 0;
    }
    if (tok->remove_extra_whitespaces)
        while (ends_with_space(out, space, space_len)) out->data[out->len -= space_len] = '\0';
    return 0;
}

/* ------------------------------------------------------------------ unigram segmentation */

struct best_path {
    int32_t id;
    float score;
    long start; /* -1: no path ends here yet */
};

size_t spm_char_len(const char *s, size_t n) {
    static const unsigned char lens[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    size_t l = lens[(unsigned char)s[0] >> 4];
    return l < n ? l : n;
}

/* Upstream's optimized Viterbi (Model::EncodeOptimized): best path score per end byte,
 * candidate scores in double as upstream's mixed float/double arithmetic computes them. */
static int segment(const spm_tokenizer *tok, const char *s, size_t n, struct ids_out *out) {
    if (n == 0) return 0;
    struct best_path *best = malloc((n + 1) * sizeof *best);
    long *ends = malloc((n + 1) * sizeof *ends);
    if (!best || !ends) {
        free(best);
        free(ends);
        return -1;
    }
    for (size_t i = 0; i <= n; i++) best[i] = (struct best_path){-1, 0.0f, -1};
    const float unk_score = tok->min_score - UNK_PENALTY;
    for (size_t start = 0; start < n;) {
        const float till_here = best[start].score;
        const size_t mblen = spm_char_len(s + start, n - start);
        int has_single = 0;
        for (size_t len = 1; len <= tok->max_piece_len && start + len <= n; len++) {
            int32_t id = spm_piece_find(tok, s + start, len);
            if (id < 0 || tok->pieces[id].type == PT(UNUSED)) continue;
            double score = tok->pieces[id].type == PT(USER_DEFINED)
                               ? (double)((float)len * tok->max_score) - 0.1
                               : (double)tok->pieces[id].score;
            double cand = score + till_here;
            struct best_path *t = &best[start + len];
            if (t->start == -1 || cand > t->score) {
                t->score = (float)cand;
                t->start = (long)start;
                t->id = id;
            }
            if (len == mblen) has_single = 1;
        }
        if (!has_single) {
            struct best_path *t = &best[start + mblen];
            float cand = unk_score + till_here;
            if (t->start == -1 || cand > t->score) {
                t->score = cand;
                t->start = (long)start;
                t->id = tok->unk_id;
            }
        }
        start += mblen;
    }
    /* Backtrack into ends[] (piece end offsets, reversed), then emit front to back. */
    size_t k = 0;
    for (long e = (long)n; e > 0; e = best[e].start) ends[k++] = e;
    long prev_end = 0;
    int prev_unk = 0;
    size_t unk_from = 0;
    for (size_t j = k; j-- > 0;) {
        long e = ends[j];
        int32_t id = best[e].id;
        int is_unk = id == tok->unk_id;
        /* Consecutive unknown pieces merge into one, as upstream returns them. */
        if (is_unk && prev_unk) {
            prev_end = e;
            continue;
        }
        if (prev_unk) {
            if (tok->byte_fallback)
                for (long b = (long)unk_from; b < prev_end; b++)
                    ids_push(out, tok->byte_ids[(unsigned char)s[b]]);
            else
                ids_push(out, tok->unk_id);
        }
        if (is_unk) unk_from = (size_t)prev_end;
        else ids_push(out, id);
        prev_unk = is_unk;
        prev_end = e;
    }
    if (prev_unk) {
        if (tok->byte_fallback)
            for (long b = (long)unk_from; b < prev_end; b++) ids_push(out, tok->byte_ids[(unsigned char)s[b]]);
        else
            ids_push(out, tok->unk_id);
    }
    free(best);
    free(ends);
    return 0;
}

static int encode_into(const spm_tokenizer *tok, const char *text, size_t len, int dummy_prefix, struct buf *norm,
                       struct ids_out *out, lion_status *st) {
    int rc = normalize(tok, text, len, dummy_prefix, norm);
    if (rc == 0)
        rc = tok->model_type == SPM_BPE ? spm_bpe_segment(tok, norm->data, norm->len, out)
                                        : segment(tok, norm->data, norm->len, out);
    if (rc) return lion_fail(st, LION_ENOMEM, "sentencepiece: out of memory encoding %zu bytes", len);
    return 0;
}

static int finish_ids(const struct ids_out *out, size_t *n_ids, lion_status *st) {
    *n_ids = out->n;
    if (out->n > out->max)
        return lion_fail(st, LION_ETOOBIG, "sentencepiece: text needs %zu tokens, more than the %zu allowed",
                         out->n, out->max);
    return 0;
}

int spm_encode(const spm_tokenizer *tok, const char *text, int32_t *ids, size_t max_ids,
               size_t *n_ids, lion_status *st) {
    if (!tok || !text || (!ids && max_ids) || !n_ids)
        return lion_fail(st, LION_EINVAL, "spm_encode: NULL argument");
    return spm_encode_span(tok, text, strlen(text), SPM_MODEL_PREFIX, ids, max_ids, n_ids, st);
}

int spm_encode_span(const spm_tokenizer *tok, const char *text, size_t len, int dummy_prefix, int32_t *ids,
                    size_t max_ids, size_t *n_ids, lion_status *st) {
    if (!tok || (!text && len) || (!ids && max_ids) || !n_ids)
        return lion_fail(st, LION_EINVAL, "spm_encode: NULL argument");
    struct buf norm = {0};
    struct ids_out out = {ids, max_ids, 0};
    int rc = encode_into(tok, text ? text : "", len, dummy_prefix < 0 ? tok->add_dummy_prefix : dummy_prefix, &norm,
                         &out, st);
    free(norm.data);
    return rc ? rc : finish_ids(&out, n_ids, st);
}

/* ------------------------------------------------------------------ T5 specials */

/* If text starts with a T5 special token, returns its length and id. `<extra_id_N>` only in
 * its canonical spelling (no leading zeros) and N < 100, as HF's added tokens match. */
static size_t t5_special_at(const spm_tokenizer *tok, const char *s, int32_t *id) {
    static const char extra[] = "<extra_id_";
    if (strncmp(s, extra, sizeof extra - 1) == 0) {
        const char *d = s + sizeof extra - 1;
        size_t nd = 0;
        while (nd < 3 && d[nd] >= '0' && d[nd] <= '9') nd++;
        if (nd == 0 || nd > 2 || d[nd] != '>' || (nd == 2 && d[0] == '0')) return 0;
        int n = nd == 1 ? d[0] - '0' : (d[0] - '0') * 10 + (d[1] - '0');
        *id = t5_extra_id(tok, n);
        return sizeof extra - 1 + nd + 1;
    }
    static const char *const names[] = {"</s>", "<pad>", "<unk>"};
    const int32_t name_ids[] = {tok->eos_id, tok->pad_id, tok->unk_id};
    for (int i = 0; i < 3; i++) {
        size_t l = strlen(names[i]);
        if (name_ids[i] >= 0 && strncmp(s, names[i], l) == 0) {
            *id = name_ids[i];
            return l;
        }
    }
    return 0;
}

int t5_tokenize(const spm_tokenizer *tok, const char *text, int32_t *ids, size_t max_ids,
                size_t *n_ids, lion_status *st) {
    if (!tok || !text || (!ids && max_ids) || !n_ids)
        return lion_fail(st, LION_EINVAL, "t5_tokenize: NULL argument");
    struct buf norm = {0};
    struct ids_out out = {ids, max_ids, 0};
    const char *seg = text;
    int rc = 0;
    for (const char *p = text;; p++) {
        int32_t id = -1;
        size_t l = *p == '<' ? t5_special_at(tok, p, &id) : 0;
        if (l == 0 && *p != '\0') continue;
        if (p > seg && (rc = encode_into(tok, seg, (size_t)(p - seg), tok->add_dummy_prefix, &norm, &out, st))) break;
        if (*p == '\0') break;
        ids_push(&out, id);
        p += l - 1;
        seg = p + 1;
    }
    free(norm.data);
    if (rc) return rc;
    if (tok->eos_id >= 0) ids_push(&out, tok->eos_id);
    return finish_ids(&out, n_ids, st);
}

/* ------------------------------------------------------------------ decoding */

/* Appends pending fallback bytes as text: valid UTF-8 characters as they are, each
 * malformed byte as U+FFFD (upstream's decoding of byte pieces). */
static int flush_bytes(struct buf *out, const char *bytes, size_t n) {
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = utf8_decode(bytes + i, n - i, &cp);
        if (l == 0) {
            if (buf_append(out, "\xEF\xBF\xBD", 3)) return -1;
            i++;
        } else {
            if (buf_append(out, bytes + i, l)) return -1;
            i += l;
        }
    }
    return 0;
}

/* One piece to decode: its text (possibly not the model's: HF strips a '▁') and its id. */
struct dec_item {
    const char *text;
    size_t len;
    int32_t id;
};

/* Upstream's DecodePieces (sentencepiece_processor.cc): byte pieces gather into bytes decoded
 * as UTF-8 when the next other piece comes; control pieces vanish; the unknown piece shows as
 * unk_surface (another text with the unknown id as itself); '▁' becomes a space. The first
 * '▁' of the text is the dummy prefix and is dropped: only while nothing was output yet and no
 * earlier piece already dropped one, and only for models that add a dummy prefix or remove
 * extra whitespace (the latter drops every leading one). */
static int decode_items(const spm_tokenizer *tok, const struct dec_item *items, size_t n, int dummy_prefix,
                        struct buf *out) {
    struct buf bytes = {0};
    const Sentencepiece__TrainerSpec *ts = tok->proto->trainer_spec;
    const char *unk_surface = ts && ts->unk_surface ? ts->unk_surface : DEFAULT_UNK_SURFACE;
    int is_bos_ws = 1, bos_ws_seen = 0, oom = buf_append(out, "", 0);
    for (size_t i = 0; i < n && !oom; i++) {
        const struct dec_item *it = &items[i];
        piece_type type = tok->pieces[it->id].type;
        if (type == PT(BYTE)) {
            char b = 0;
            for (int v = 0; v < 256; v++)
                if (tok->byte_ids[v] == it->id) b = (char)v;
            oom = buf_append(&bytes, &b, 1);
            continue;
        }
        if (bytes.len) {
            oom = flush_bytes(out, bytes.data, bytes.len);
            bytes.len = 0;
        }
        if (bos_ws_seen || out->len > 0) is_bos_ws = 0;
        bos_ws_seen = 0;
        if (type == PT(CONTROL)) continue;
        if (type == PT(UNKNOWN)) {
            const struct piece *unk = &tok->pieces[it->id];
            if (it->len == unk->len && memcmp(it->text, unk->text, unk->len) == 0)
                oom = buf_append(out, unk_surface, strlen(unk_surface));
            else
                oom = buf_append(out, it->text, it->len);
            continue;
        }
        const char *s = it->text;
        size_t len = it->len;
        if (is_bos_ws && (dummy_prefix || tok->remove_extra_whitespaces) && len >= SPACE_SYMBOL_LEN &&
            memcmp(s, SPACE_SYMBOL, SPACE_SYMBOL_LEN) == 0) {
            s += SPACE_SYMBOL_LEN;
            len -= SPACE_SYMBOL_LEN;
            bos_ws_seen = !tok->remove_extra_whitespaces;
        }
        for (size_t k = 0; k < len && !oom;) {
            if (k + SPACE_SYMBOL_LEN <= len && memcmp(s + k, SPACE_SYMBOL, SPACE_SYMBOL_LEN) == 0) {
                oom = buf_append(out, " ", 1);
                k += SPACE_SYMBOL_LEN;
            } else {
                oom = buf_append(out, s + k, 1);
                k++;
            }
        }
    }
    if (!oom && bytes.len) oom = flush_bytes(out, bytes.data, bytes.len);
    free(bytes.data);
    return oom ? -1 : 0;
}

int spm_decode(const spm_tokenizer *tok, const int32_t *ids, size_t n_ids, char **text,
               lion_status *st) {
    if (!tok || (!ids && n_ids) || !text) return lion_fail(st, LION_EINVAL, "spm_decode: NULL argument");
    *text = NULL;
    struct dec_item *items = malloc((n_ids ? n_ids : 1) * sizeof *items);
    if (!items) return lion_fail(st, LION_ENOMEM, "spm_decode: out of memory");
    size_t n = 0;
    for (size_t i = 0; i < n_ids; i++) {
        int32_t id = ids[i];
        if (id < 0) {
            free(items);
            return lion_fail(st, LION_EINVAL, "spm_decode: id %d at position %zu is negative", id, i);
        }
        /* the extra ids are special; ids past them (a model's lm_head may be wider than its
         * tokenizer: FlanT5's 32128 rows for 32100 pieces) decode to nothing, as in HF; so does
         * the unknown piece (HF's skip_special_tokens) */
        if ((size_t)id >= tok->n_pieces || tok->pieces[id].type == PT(UNKNOWN)) continue;
        items[n++] = (struct dec_item){tok->pieces[id].text, tok->pieces[id].len, id};
    }
    struct buf out = {0};
    int rc = decode_items(tok, items, n, tok->add_dummy_prefix, &out);
    free(items);
    if (rc) {
        free(out.data);
        return lion_fail(st, LION_ENOMEM, "spm_decode: out of memory");
    }
    *text = out.data;
    return 0;
}

int spm_decode_pieces(const spm_tokenizer *tok, const char *const *pieces, const size_t *lens, size_t n,
                      int dummy_prefix, char **text, lion_status *st) {
    if (!tok || (!pieces && n) || (!lens && n) || !text)
        return lion_fail(st, LION_EINVAL, "spm_decode_pieces: NULL argument");
    *text = NULL;
    struct dec_item *items = malloc((n ? n : 1) * sizeof *items);
    if (!items) return lion_fail(st, LION_ENOMEM, "spm_decode_pieces: out of memory");
    for (size_t i = 0; i < n; i++) items[i] = (struct dec_item){pieces[i], lens[i], spm_piece_to_id(tok, pieces[i], lens[i])};
    struct buf out = {0};
    int rc = decode_items(tok, items, n, dummy_prefix < 0 ? tok->add_dummy_prefix : dummy_prefix, &out);
    free(items);
    if (rc) {
        free(out.data);
        return lion_fail(st, LION_ENOMEM, "spm_decode_pieces: out of memory");
    }
    *text = out.data;
    return 0;
}

/* ------------------------------------------------------------------ loading */

size_t spm_piece_count(const spm_tokenizer *tok) { return tok->n_pieces; }
size_t t5_vocab_size(const spm_tokenizer *tok) { return tok->n_pieces + T5_EXTRA_IDS; }
int32_t spm_eos_id(const spm_tokenizer *tok) { return tok->eos_id; }
int32_t spm_pad_id(const spm_tokenizer *tok) { return tok->pad_id; }
int32_t spm_unk_id(const spm_tokenizer *tok) { return tok->unk_id; }
int32_t spm_bos_id(const spm_tokenizer *tok) { return tok->bos_id; }
int spm_is_bpe(const spm_tokenizer *tok) { return tok->model_type == SPM_BPE; }

const char *spm_id_to_piece(const spm_tokenizer *tok, int32_t id, size_t *len) {
    if (id < 0 || (size_t)id >= tok->n_pieces) return NULL;
    if (len) *len = tok->pieces[id].len;
    return tok->pieces[id].text;
}

int32_t t5_extra_id(const spm_tokenizer *tok, int n) {
    if (n < 0 || n >= T5_EXTRA_IDS) return -1;
    return (int32_t)(t5_vocab_size(tok) - 1 - (size_t)n);
}

void spm_free(spm_tokenizer *tok) {
    if (!tok) return;
    if (tok->proto) sentencepiece__model_proto__free_unpacked(tok->proto, NULL);
    free(tok->pieces);
    free(tok->slots);
    free(tok->user_defined);
    free(tok->trie);
    free(tok);
}

/* Precompiled charsmap blob: <uint32 LE trie size><double-array trie><normalized strings>. */
static int load_charsmap(spm_tokenizer *tok, const ProtobufCBinaryData *blob, const char *name,
                         lion_status *st) {
    if (blob->len == 0) return 0;
    if (blob->len <= 4)
        return lion_fail(st, LION_EFORMAT, "%s: precompiled_charsmap of %zu bytes is too short", name, blob->len);
    const unsigned char *b = blob->data;
    uint32_t trie_size = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    if (trie_size >= blob->len - 4 || trie_size % 4 != 0 || trie_size == 0)
        return lion_fail(st, LION_EFORMAT, "%s: precompiled_charsmap trie size %u does not fit its %zu bytes",
                         name, trie_size, blob->len);
    tok->trie_units = trie_size / 4;
    tok->trie = malloc(trie_size);
    if (!tok->trie) return lion_fail(st, LION_ENOMEM, "%s: out of memory for the charsmap", name);
    for (size_t i = 0; i < tok->trie_units; i++) {
        const unsigned char *u = b + 4 + 4 * i;
        tok->trie[i] = (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
    }
    tok->norm_strings = (const char *)b + 4 + trie_size;
    tok->norm_strings_len = blob->len - 4 - trie_size;
    return 0;
}

static int build_pieces(spm_tokenizer *tok, const char *name, lion_status *st) {
    const Sentencepiece__ModelProto *m = tok->proto;
    tok->n_pieces = m->n_pieces;
    if (m->n_pieces == 0) return lion_fail(st, LION_EFORMAT, "%s: model has no pieces", name);
    if (m->n_pieces > INT32_MAX / 4) return lion_fail(st, LION_EFORMAT, "%s: %zu pieces is too many", name, m->n_pieces);
    tok->n_slots = 16;
    while (tok->n_slots < 2 * m->n_pieces) tok->n_slots *= 2;
    tok->pieces = calloc(m->n_pieces, sizeof *tok->pieces);
    tok->slots = malloc(tok->n_slots * sizeof *tok->slots);
    tok->user_defined = malloc(m->n_pieces * sizeof *tok->user_defined);
    if (!tok->pieces || !tok->slots || !tok->user_defined)
        return lion_fail(st, LION_ENOMEM, "%s: out of memory for %zu pieces", name, m->n_pieces);
    memset(tok->slots, 0xFF, tok->n_slots * sizeof *tok->slots);
    for (int v = 0; v < 256; v++) tok->byte_ids[v] = -1;
    tok->unk_id = -1;
    tok->min_score = FLT_MAX;
    tok->max_score = FLT_MIN; /* as upstream: user-defined scores use max(FLT_MIN, normal max) */
    int has_bytes = 0;
    for (size_t i = 0; i < m->n_pieces; i++) {
        const Sentencepiece__ModelProto__SentencePiece *sp = m->pieces[i];
        struct piece *p = &tok->pieces[i];
        p->text = sp->piece ? sp->piece : "";
        p->len = strlen(p->text);
        p->score = sp->score;
        p->type = sp->type;
        if (p->len == 0) return lion_fail(st, LION_EFORMAT, "%s: piece %zu is empty", name, i);
        switch (p->type) {
        case PT(NORMAL):
            if (p->score < tok->min_score) tok->min_score = p->score;
            if (p->score > tok->max_score) tok->max_score = p->score;
            break;
        case PT(USER_DEFINED): tok->user_defined[tok->n_user_defined++] = (int32_t)i; break;
        case PT(UNKNOWN):
            if (tok->unk_id >= 0) return lion_fail(st, LION_EFORMAT, "%s: unknown piece defined twice (ids %d and %zu)", name, tok->unk_id, i);
            tok->unk_id = (int32_t)i;
            break;
        case PT(BYTE): {
            unsigned v;
            char tail;
            if (p->len != 6 || sscanf(p->text, "<0x%2X%c", &v, &tail) != 2 || tail != '>')
                return lion_fail(st, LION_EFORMAT, "%s: byte piece %zu \"%s\" is not <0xXX>", name, i, p->text);
            tok->byte_ids[v] = (int32_t)i;
            has_bytes = 1;
            break;
        }
        default: break;
        }
        if (!is_segmentable(p->type)) continue;
        if (spm_piece_find(tok, p->text, p->len) >= 0)
            return lion_fail(st, LION_EFORMAT, "%s: piece \"%s\" (id %zu) is already defined", name, p->text, i);
        size_t h = hash_bytes(p->text, p->len) & (tok->n_slots - 1);
        while (tok->slots[h] >= 0) h = (h + 1) & (tok->n_slots - 1);
        tok->slots[h] = (int32_t)i;
        if (p->len > tok->max_piece_len) tok->max_piece_len = p->len;
    }
    if (tok->unk_id < 0) return lion_fail(st, LION_EFORMAT, "%s: model defines no unknown piece", name);
    const Sentencepiece__TrainerSpec *ts = m->trainer_spec;
    tok->byte_fallback = ts && ts->byte_fallback;
    if (has_bytes && !tok->byte_fallback)
        return lion_fail(st, LION_EFORMAT, "%s: byte pieces found although byte_fallback is false", name);
    if (tok->byte_fallback)
        for (int v = 0; v < 256; v++)
            if (tok->byte_ids[v] < 0)
                return lion_fail(st, LION_EFORMAT, "%s: byte_fallback is set but piece <0x%02X> is missing", name, v);
    if (tok->min_score == FLT_MAX) tok->min_score = 0.0f;
    tok->eos_id = ts && ts->eos_id >= 0 && (size_t)ts->eos_id < m->n_pieces ? ts->eos_id : -1;
    tok->pad_id = ts && ts->pad_id >= 0 && (size_t)ts->pad_id < m->n_pieces ? ts->pad_id : -1;
    tok->bos_id = ts && ts->bos_id >= 0 && (size_t)ts->bos_id < m->n_pieces ? ts->bos_id : -1;
    return 0;
}

int spm_load_buffer(const void *data, size_t size, const char *name, spm_tokenizer **out,
                    lion_status *st) {
    if (!data || !out) return lion_fail(st, LION_EINVAL, "spm_load_buffer: NULL argument");
    if (!name) name = "sentencepiece model";
    *out = NULL;
    spm_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) return lion_fail(st, LION_ENOMEM, "%s: out of memory", name);
    tok->proto = sentencepiece__model_proto__unpack(NULL, size, data);
    if (!tok->proto) {
        spm_free(tok);
        return lion_fail(st, LION_EFORMAT, "%s: not a SentencePiece model (protobuf ModelProto does not parse)", name);
    }
    const Sentencepiece__TrainerSpec *ts = tok->proto->trainer_spec;
    const int model_type = ts ? (int)ts->model_type : SPM_UNIGRAM;
    if (model_type != SPM_UNIGRAM && model_type != SPM_BPE) {
        spm_free(tok);
        return lion_fail(st, LION_EFORMAT, "%s: model_type %d is not unigram (1) or BPE (2), the types supported",
                         name, model_type);
    }
    tok->model_type = (enum spm_model_type)model_type;
    const Sentencepiece__NormalizerSpec *ns = tok->proto->normalizer_spec;
    tok->add_dummy_prefix = ns ? ns->add_dummy_prefix : 1;
    tok->remove_extra_whitespaces = ns ? ns->remove_extra_whitespaces : 1;
    tok->escape_whitespaces = ns ? ns->escape_whitespaces : 1;
    if (build_pieces(tok, name, st) ||
        (ns && ns->has_precompiled_charsmap && load_charsmap(tok, &ns->precompiled_charsmap, name, st))) {
        spm_free(tok);
        return -1;
    }
    *out = tok;
    return 0;
}

int spm_load(const char *path, spm_tokenizer **out, lion_status *st) {
    if (!path || !out) return lion_fail(st, LION_EINVAL, "spm_load: NULL argument");
    *out = NULL;
    char *data;
    size_t size;
    if (file_read_all(path, MAX_MODEL_BYTES, "a tokenizer model", &data, &size, st)) return -1;
    int rc = spm_load_buffer(data, size, path, out, st);
    free(data);
    return rc;
}
