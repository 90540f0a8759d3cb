#include "decode_batch.h"

#include <stdlib.h>
#include <string.h>

void decode_batch_init(decode_batch *b, const t5_model *m) {
    memset(b, 0, sizeof *b);
    b->m = m;
}

/* Frees r; its LLaMA slots go back to b's pool. */
static void request_free(decode_batch *b, decode_request *r) {
    if (!r) return;
    search_free(r->search);
    for (int j = 0; r->store && j < r->beams; j++) t5_seq_free(&r->store[j]);
    free(r->store);
    free(r->seq);
    t5_cross_free(&r->cross);
    for (int j = 0; r->slot && j < r->beams; j++)
        if (r->slot[j] >= 0) {
            llama_cache_reset(&b->cache, r->slot[j]);
            b->free_slot[b->n_free++] = r->slot[j];
        }
    free(r->slot);
    free(r);
}

void decode_batch_free(decode_batch *b) {
    for (int i = 0; i < b->n; i++) request_free(b, b->reqs[i]);
    free(b->reqs);
    llama_cache_free(&b->cache);
    free(b->free_slot);
    free(b->slots);
    free(b->seqs);
    free(b->tokens);
    free(b->src);
    free(b->logits);
    memset(b, 0, sizeof *b);
}

static int reorder_slots(decode_batch *b, decode_request *r, const int *src, arena *a, lion_status *st);

static int vocab_of(const decode_batch *b) { return b->lm ? b->lm->cfg.vocab_size : b->m->cfg.vocab_size; }

/* Room in the request array for one more. */
static int room_for_one(decode_batch *b, lion_status *st) {
    if (b->n < b->cap) return 0;
    int cap = b->cap ? 2 * b->cap : 16;
    decode_request **grown = realloc(b->reqs, (size_t)cap * sizeof *grown);
    if (!grown) return lion_fail(st, LION_ENOMEM, "decode batch: out of memory");
    b->reqs = grown, b->cap = cap;
    return 0;
}

size_t decode_request_bytes(const t5_model *m, const generate_params *p, int enc_len) {
    return t5_cross_bytes(m, enc_len) + (size_t)p->num_beams * t5_seq_bytes(m, p->max_new_tokens);
}

int decode_batch_add(decode_batch *b, const float *enc, const uint8_t *mask, int enc_len, int router_idx,
                     const generate_params *p, uint64_t seed, void *user, lion_status *st) {
    if (generate_params_check(p, b->m->cfg.vocab_size, st) || room_for_one(b, st)) return -1;
    decode_request *r = calloc(1, sizeof *r);
    if (!r) return lion_fail(st, LION_ENOMEM, "decode batch: out of memory");
    r->user = user;
    r->beams = p->num_beams;
    r->store = calloc((size_t)r->beams, sizeof *r->store);
    r->seq = calloc((size_t)r->beams, sizeof *r->seq);
    if (!r->store || !r->seq) {
        request_free(b, r);
        return lion_fail(st, LION_ENOMEM, "decode batch: out of memory");
    }
    if (t5_cross_init(&r->cross, b->m, enc, mask, enc_len, router_idx, st) ||
        search_create(&r->search, p, b->m->cfg.vocab_size, seed, st)) {
        request_free(b, r);
        return -1;
    }
    for (int j = 0; j < r->beams; j++) {
        if (t5_seq_init(&r->store[j], b->m, &r->cross, p->max_new_tokens, st)) {
            request_free(b, r);
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
    request_free(b, b->reqs[i]);
    memmove(b->reqs + i, b->reqs + i + 1, (size_t)(b->n - i - 1) * sizeof *b->reqs);
    b->n--;
}

static int reserve_rows(decode_batch *b, int rows, lion_status *st) {
    if (rows <= b->rows_cap) return 0;
    const size_t V = (size_t)vocab_of(b);
    free(b->seqs), free(b->slots), free(b->tokens), free(b->src), free(b->logits);
    b->seqs = malloc((size_t)rows * sizeof *b->seqs);
    b->slots = malloc((size_t)rows * sizeof *b->slots);
    b->tokens = malloc((size_t)rows * sizeof *b->tokens);
    b->src = malloc((size_t)rows * sizeof *b->src);
    b->logits = malloc((size_t)rows * V * sizeof *b->logits);
    if (!b->seqs || !b->slots || !b->tokens || !b->src || !b->logits) {
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
        if (b->lm) memcpy(b->slots + at, r->slot, (size_t)n * sizeof *r->slot);
        else memcpy(b->seqs + at, r->seq, (size_t)n * sizeof *r->seq);
        at += n;
    }
    if (b->lm ? llama_step(b->lm, &b->cache, rows, b->slots, b->tokens, b->logits, a, st)
              : t5_step(b->m, b->seqs, rows, b->tokens, b->logits, a, st))
        return -1;
    const size_t V = (size_t)vocab_of(b);
    at = 0;
    for (int i = 0; i < b->n; i++) {
        decode_request *r = b->reqs[i];
        const int n = search_rows(r->search);
        if (!n) continue;
        if (search_advance(r->search, b->logits + (size_t)at * V, b->src, a, st)) return -1;
        at += n;
        if (n > 1 && !search_finished(r->search) &&
            (b->lm ? reorder_slots(b, r, b->src, a, st) : t5_seqs_reorder(r->seq, n, b->src, a, st)))
            return -1;
    }
    return rows;
}

/* ------------------------------------------------------------------ LLaMA */

size_t decode_llama_slot_bytes(const llama_model *lm, int capacity) {
    return 2 * (size_t)lm->cfg.layers * capacity * lm->kv_dim * sizeof(float);
}

int decode_batch_init_llama(decode_batch *b, const llama_model *lm, int slots, int capacity, lion_status *st) {
    memset(b, 0, sizeof *b);
    b->lm = lm;
    if (llama_cache_init(&b->cache, lm, slots, capacity, st)) return -1;
    b->free_slot = malloc((size_t)slots * sizeof *b->free_slot);
    if (!b->free_slot) {
        decode_batch_free(b);
        return lion_fail(st, LION_ENOMEM, "decode batch: out of memory");
    }
    /* handed out from the end: slot 0 first */
    for (int i = 0; i < slots; i++) b->free_slot[i] = slots - 1 - i;
    b->n_free = slots;
    return 0;
}

int decode_batch_has_slots(const decode_batch *b, int beams) { return b->n_free >= beams; }

/* Beam search's reorder of r's rows: row j continues former row src[j]. A slot continued once
 * keeps its cache (the index moves); one continued by several rows is copied into the slot of
 * a row continued by none. */
static int reorder_slots(decode_batch *b, decode_request *r, const int *src, arena *a, lion_status *st) {
    const int n = r->beams;
    arena_mark mark = arena_save(a);
    int *old = arena_alloc(a, (size_t)n * sizeof *old);
    uint8_t *taken = arena_alloc(a, (size_t)n);
    if (!old || !taken) {
        arena_restore(a, mark);
        return lion_fail(st, LION_ENOMEM, "decode batch: out of scratch memory");
    }
    memcpy(old, r->slot, (size_t)n * sizeof *old);
    memset(taken, 0, (size_t)n);
    for (int j = 0; j < n; j++) {
        if (taken[src[j]]) {
            r->slot[j] = -1;
            continue;
        }
        taken[src[j]] = 1;
        r->slot[j] = old[src[j]];
    }
    int rc = 0;
    for (int j = 0, spare = 0; j < n && !rc; j++) {
        if (r->slot[j] >= 0) continue;
        while (taken[spare]) spare++;
        taken[spare] = 1;
        rc = llama_cache_copy(&b->cache, old[spare], old[src[j]], st);
        r->slot[j] = old[spare];
    }
    arena_restore(a, mark);
    return rc;
}

int decode_batch_add_llama(decode_batch *b, const float *x, const int32_t *ids, int n, const generate_params *p,
                           uint64_t seed, void *user, arena *a, lion_status *st) {
    if (generate_params_check(p, b->lm->cfg.vocab_size, st) || room_for_one(b, st)) return -1;
    if (n < 1 || n + p->max_new_tokens > b->cache.capacity)
        return lion_fail(st, LION_ETOOBIG, "decode batch: a prompt of %d positions and %d new tokens do not fit %d",
                         n, p->max_new_tokens, b->cache.capacity);
    if (b->n_free < p->num_beams)
        return lion_fail(st, LION_EUNAVAILABLE, "decode batch: %d beams need slots, %d free", p->num_beams, b->n_free);
    decode_request *r = calloc(1, sizeof *r);
    if (!r) return lion_fail(st, LION_ENOMEM, "decode batch: out of memory");
    r->user = user;
    r->beams = p->num_beams;
    r->slot = malloc((size_t)r->beams * sizeof *r->slot);
    if (!r->slot) {
        free(r);
        return lion_fail(st, LION_ENOMEM, "decode batch: out of memory");
    }
    for (int j = 0; j < r->beams; j++) r->slot[j] = b->free_slot[--b->n_free];
    int rc = search_create(&r->search, p, b->lm->cfg.vocab_size, seed, st);
    if (!rc && ids) rc = search_set_prompt(r->search, ids, n - 1, st);
    if (!rc && n > 1) {
        /* every position but the last, whose token the first step feeds; its logits are not needed */
        arena_mark mark = arena_save(a);
        float *logits = arena_floats(a, (size_t)b->lm->cfg.vocab_size);
        const int prefill = n - 1;
        rc = logits ? llama_forward(b->lm, &b->cache, 1, r->slot, &prefill, x, logits, a, st)
                    : lion_fail(st, LION_ENOMEM, "decode batch: out of scratch memory");
        arena_restore(a, mark);
        for (int j = 1; j < r->beams && !rc; j++) rc = llama_cache_copy(&b->cache, r->slot[j], r->slot[0], st);
    }
    if (rc) {
        request_free(b, r);
        return -1;
    }
    r->bytes = (size_t)r->beams * decode_llama_slot_bytes(b->lm, b->cache.capacity);
    b->bytes += r->bytes;
    b->reqs[b->n++] = r;
    return 0;
}
