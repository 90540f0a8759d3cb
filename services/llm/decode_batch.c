#include "decode_batch.h"

#include <stdlib.h>
#include <string.h>

void decode_batch_init(decode_batch *b, const t5_model *m) {
    memset(b, 0, sizeof *b);
    b->m = m;
}

static void request_free(decode_request *r) {
    if (!r) return;
    search_free(r->search);
    for (int j = 0; r->store && j < r->beams; j++) t5_seq_free(&r->store[j]);
    free(r->store);
    free(r->seq);
    t5_cross_free(&r->cross);
    free(r);
}

void decode_batch_free(decode_batch *b) {
    for (int i = 0; i < b->n; i++) request_free(b->reqs[i]);
    free(b->reqs);
    free(b->seqs);
    free(b->tokens);
    free(b->src);
    free(b->logits);
    memset(b, 0, sizeof *b);
}

size_t decode_request_bytes(const t5_model *m, const generate_params *p, int enc_len) {
    return t5_cross_bytes(m, enc_len) + (size_t)p->num_beams * t5_seq_bytes(m, p->max_new_tokens);
}

int decode_batch_add(decode_batch *b, const float *enc, const uint8_t *mask, int enc_len, int router_idx,
                     const generate_params *p, uint64_t seed, void *user, lion_status *st) {
    if (generate_params_check(p, b->m->cfg.vocab_size, st)) return -1;
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 16;
        decode_request **grown = realloc(b->reqs, (size_t)cap * sizeof *grown);
        if (!grown) return lion_fail(st, LION_ENOMEM, "decode batch: out of memory");
        b->reqs = grown, b->cap = cap;
    }
    decode_request *r = calloc(1, sizeof *r);
    if (!r) return lion_fail(st, LION_ENOMEM, "decode batch: out of memory");
    r->user = user;
    r->beams = p->num_beams;
    r->store = calloc((size_t)r->beams, sizeof *r->store);
    r->seq = calloc((size_t)r->beams, sizeof *r->seq);
    if (!r->store || !r->seq) {
        request_free(r);
        return lion_fail(st, LION_ENOMEM, "decode batch: out of memory");
    }
    if (t5_cross_init(&r->cross, b->m, enc, mask, enc_len, router_idx, st) ||
        search_create(&r->search, p, b->m->cfg.vocab_size, seed, st)) {
        request_free(r);
        return -1;
    }
    for (int j = 0; j < r->beams; j++) {
        if (t5_seq_init(&r->store[j], b->m, &r->cross, p->max_new_tokens, st)) {
            request_free(r);
            return -1;
        }
        r->seq[j] = &r->store[j];
    }
    r->bytes = decode_request_bytes(b->m, p, enc_len);
    b->bytes += r->bytes;
    b->reqs[b->n++] = r;
    return 0;
}

void decode_batch_remove(decode_batch *b, int i) {
    b->bytes -= b->reqs[i]->bytes;
    request_free(b->reqs[i]);
    memmove(b->reqs + i, b->reqs + i + 1, (size_t)(b->n - i - 1) * sizeof *b->reqs);
    b->n--;
}

static int reserve_rows(decode_batch *b, int rows, lion_status *st) {
    if (rows <= b->rows_cap) return 0;
    const size_t V = (size_t)b->m->cfg.vocab_size;
    free(b->seqs), free(b->tokens), free(b->src), free(b->logits);
    b->seqs = malloc((size_t)rows * sizeof *b->seqs);
    b->tokens = malloc((size_t)rows * sizeof *b->tokens);
    b->src = malloc((size_t)rows * sizeof *b->src);
    b->logits = malloc((size_t)rows * V * sizeof *b->logits);
    if (!b->seqs || !b->tokens || !b->src || !b->logits) {
        b->rows_cap = 0;
        return lion_fail(st, LION_ENOMEM, "decode batch: out of memory for %d rows", rows);
    }
    b->rows_cap = rows;
    return 0;
}

int decode_batch_step(decode_batch *b, arena *a, lion_status *st) {
    int rows = 0;
    for (int i = 0; i < b->n; i++) rows += search_rows(b->reqs[i]->search);
    b->rows = rows;
    if (rows == 0) return 0;
    if (reserve_rows(b, rows, st)) return -1;
    int at = 0;
    for (int i = 0; i < b->n; i++) {
        decode_request *r = b->reqs[i];
        const int n = search_rows(r->search);
        if (!n) continue;
        search_inputs(r->search, b->tokens + at);
        memcpy(b->seqs + at, r->seq, (size_t)n * sizeof *r->seq);
        at += n;
    }
    if (t5_step(b->m, b->seqs, rows, b->tokens, b->logits, a, st)) return -1;
    const size_t V = (size_t)b->m->cfg.vocab_size;
    at = 0;
    for (int i = 0; i < b->n; i++) {
        decode_request *r = b->reqs[i];
        const int n = search_rows(r->search);
        if (!n) continue;
        if (search_advance(r->search, b->logits + (size_t)at * V, b->src, a, st)) return -1;
        at += n;
        if (n > 1 && !search_finished(r->search) && t5_seqs_reorder(r->seq, n, b->src, a, st)) return -1;
    }
    return rows;
}
