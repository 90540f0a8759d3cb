/* spm_bpe.c - SentencePiece BPE segmentation (model_type BPE: LLaMA's tokenizer), as the
 * sentencepiece library v0.1.97 does it (bpe_model.cc Model::SampleEncode without dropout,
 * then sentencepiece_processor.cc PopulateSentencePieceText), so that ids match.
 *
 * The normalized text starts as one symbol per UTF-8 character (a user-defined piece is one
 * frozen symbol that never merges). Every pair of neighbours whose concatenation is a piece
 * is a candidate; the candidate with the highest piece score is merged first, ties going to
 * the leftmost, and the new neighbours become candidates, until none is left. A merge result
 * that is an UNUSED piece is split back into the two symbols that made it (recursively). A
 * symbol that is no piece is unknown: with byte fallback it becomes its UTF-8 bytes as
 * <0xXX> pieces, otherwise a run of unknown symbols becomes one unk id. */
#include <stdlib.h>
#include <string.h>

#include "spm_internal.h"

struct symbol {
    size_t start, len; /* bytes of the normalized text; len 0: merged into its left neighbour */
    int prev, next;    /* neighbours, -1 at the ends */
    int freeze;        /* a user-defined piece: never merged */
};

struct pair {
    int left, right;
    float score;
    size_t size; /* bytes of the merged piece: a pair whose symbols changed since is stale */
};

/* Upstream's agenda is a std::priority_queue ordered by score, then by the smaller left
 * index; a binary max-heap with the same order gives the same merges. */
struct agenda {
    struct pair *v;
    size_t n, cap;
};

static int pair_before(const struct pair *a, const struct pair *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static int agenda_push(struct agenda *h, struct pair p) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 64;
        struct pair *v = realloc(h->v, cap * sizeof *v);
        if (!v) return -1;
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0 && pair_before(&p, &h->v[(i - 1) / 2])) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = p;
    return 0;
}

static struct pair agenda_pop(struct agenda *h) {
    struct pair top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && pair_before(&h->v[c + 1], &h->v[c])) c++;
        if (!pair_before(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

/* How an UNUSED piece was made, for resegmentation: upstream's rev_merge map, keyed by the
 * piece's text, the last merge of that text winning. */
struct rev_merge {
    size_t key_start, key_len, left_start, left_len, right_start, right_len;
};

struct bpe_state {
    const spm_tokenizer *tok;
    const char *s;
    struct symbol *sym;
    struct agenda agenda;
    struct rev_merge *rev;
    size_t n_rev, cap_rev;
};

static int maybe_add_pair(struct bpe_state *b, int left, int right) {
    if (left < 0 || right < 0 || b->sym[left].freeze || b->sym[right].freeze) return 0;
    const struct symbol *l = &b->sym[left], *r = &b->sym[right];
    size_t size = l->len + r->len; /* neighbours are contiguous in the text */
    int32_t id = spm_piece_find(b->tok, b->s + l->start, size);
    if (id < 0) return 0;
    struct pair p = {left, right, b->tok->pieces[id].score, size};
    if (agenda_push(&b->agenda, p)) return -1;
    if (b->tok->pieces[id].type == PT(UNUSED)) {
        if (b->n_rev == b->cap_rev) {
            size_t cap = b->cap_rev ? 2 * b->cap_rev : 16;
            struct rev_merge *v = realloc(b->rev, cap * sizeof *v);
            if (!v) return -1;
            b->rev = v;
            b->cap_rev = cap;
        }
        b->rev[b->n_rev++] = (struct rev_merge){l->start, size, l->start, l->len, r->start, r->len};
    }
    return 0;
}

/* Where unknown symbols go (PopulateSentencePieceText): bytes with byte fallback, else one unk
 * for a run of them. */
static void emit(const struct bpe_state *b, size_t start, size_t len, int32_t id, int *prev_unk,
                 struct ids_out *out) {
    const spm_tokenizer *tok = b->tok;
    int is_unk = id == tok->unk_id;
    if (is_unk && tok->byte_fallback) {
        for (size_t i = 0; i < len; i++) ids_push(out, tok->byte_ids[(unsigned char)b->s[start + i]]);
    } else if (!(is_unk && *prev_unk)) {
        ids_push(out, id);
    }
    *prev_unk = is_unk;
}

static void resegment(const struct bpe_state *b, size_t start, size_t len, int depth, int *prev_unk,
                      struct ids_out *out) {
    int32_t id = spm_piece_to_id(b->tok, b->s + start, len);
    if (b->tok->pieces[id].type == PT(UNUSED) && depth < 64) {
        for (size_t i = b->n_rev; i-- > 0;) {
            const struct rev_merge *m = &b->rev[i];
            if (m->key_len == len && memcmp(b->s + m->key_start, b->s + start, len) == 0) {
                resegment(b, m->left_start, m->left_len, depth + 1, prev_unk, out);
                resegment(b, m->right_start, m->right_len, depth + 1, prev_unk, out);
                return;
            }
        }
    }
    emit(b, start, len, id, prev_unk, out);
}

int spm_bpe_segment(const spm_tokenizer *tok, const char *s, size_t n, struct ids_out *out) {
    if (n == 0) return 0;
    struct bpe_state b = {.tok = tok, .s = s};
    b.sym = malloc(n * sizeof *b.sym);
    if (!b.sym) return -1;
    int count = 0, rc = -1;
    for (size_t at = 0; at < n; count++) {
        size_t len = spm_user_defined_prefix(tok, s + at, n - at);
        int freeze = len > 0;
        if (!freeze) len = spm_char_len(s + at, n - at);
        b.sym[count] = (struct symbol){at, len, count - 1, at + len < n ? count + 1 : -1, freeze};
        at += len;
    }
    for (int i = 1; i < count; i++)
        if (maybe_add_pair(&b, i - 1, i)) goto done;
    while (b.agenda.n > 0) {
        struct pair top = agenda_pop(&b.agenda);
        struct symbol *l = &b.sym[top.left], *r = &b.sym[top.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != top.size) continue; /* stale */
        l->len += r->len;
        l->next = r->next;
        if (r->next >= 0) b.sym[r->next].prev = top.left;
        r->len = 0;
        if (maybe_add_pair(&b, l->prev, top.left) || maybe_add_pair(&b, top.left, l->next)) goto done;
    }
    int prev_unk = 0;
    for (int i = 0; i != -1; i = b.sym[i].next) resegment(&b, b.sym[i].start, b.sym[i].len, 0, &prev_unk, out);
    rc = 0;
done:
    free(b.sym);
    free(b.agenda.v);
    free(b.rev);
    return rc;
}
