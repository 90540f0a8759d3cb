#include "generate.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "decode_batch.h"
#include "protocol.h"
#include "search.h"

void generate_params_default(generate_params *p) {
    memset(p, 0, sizeof *p);
    p->num_beams = 5;
    p->max_new_tokens = 256;
    p->min_length = 1;
    p->repetition_penalty = 1.5f;
    p->length_penalty = 1.0f;
    p->num_return_sequences = 1;
    p->temperature = 1.0f;
    p->top_p = 0.9f;
    p->top_k = 50;
    p->decoder_start_id = 0;
    p->eos_id = 1;
    p->pad_id = 0;
}

void generate_result_free(generate_result *r) {
    free(r->ids);
    free(r->lengths);
    free(r->scores);
    free(r->stopped);
    memset(r, 0, sizeof *r);
}

int generate_params_check(const generate_params *p, int V, lion_status *st) {
    if (p->num_beams < 1 || p->num_beams > LION_MAX_BEAMS)
        return lion_fail(st, LION_EINVAL, "generate: num_beams %d is not in [1, %d]", p->num_beams, LION_MAX_BEAMS);
    if (p->max_new_tokens < 1 || p->max_new_tokens > LION_MAX_NEW_TOKENS)
        return lion_fail(st, LION_EINVAL, "generate: max_new_tokens %d is not in [1, %d]", p->max_new_tokens,
                         LION_MAX_NEW_TOKENS);
    if (p->min_length < 0) return lion_fail(st, LION_EINVAL, "generate: min_length %d is negative", p->min_length);
    if (!(p->repetition_penalty > 0.0f) || !isfinite(p->repetition_penalty))
        return lion_fail(st, LION_EINVAL, "generate: repetition_penalty %g must be positive", p->repetition_penalty);
    if (!isfinite(p->length_penalty))
        return lion_fail(st, LION_EINVAL, "generate: length_penalty is not finite");
    if (p->num_beams > 1 && p->do_sample)
        return lion_fail(st, LION_EINVAL, "generate: sampling with num_beams %d (beam sampling) is not supported",
                         p->num_beams);
    if (p->num_return_sequences < 1 || p->num_return_sequences > p->num_beams)
        return lion_fail(st, LION_EINVAL, "generate: num_return_sequences %d is not in [1, num_beams %d]",
                         p->num_return_sequences, p->num_beams);
    if (p->num_beams > 1 && 2 * p->num_beams > V)
        return lion_fail(st, LION_EINVAL, "generate: %d beams need a vocabulary of at least %d", p->num_beams,
                         2 * p->num_beams);
    if (p->do_sample && (!(p->temperature > 0.0f) || !isfinite(p->temperature)))
        return lion_fail(st, LION_EINVAL, "generate: temperature %g must be positive", p->temperature);
    if (p->do_sample && (!(p->top_p > 0.0f) || p->top_p > 1.0f))
        return lion_fail(st, LION_EINVAL, "generate: top_p %g is not in (0, 1]", p->top_p);
    if (p->top_k < 0) return lion_fail(st, LION_EINVAL, "generate: top_k %d is negative", p->top_k);
    const int ids[3] = {p->decoder_start_id, p->eos_id, p->pad_id};
    const char *names[3] = {"decoder_start_id", "eos_id", "pad_id"};
    for (int i = 0; i < 3; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return lion_fail(st, LION_EINVAL, "generate: %s %d is outside the vocabulary of %d", names[i], ids[i], V);
    return 0;
}

/* ------------------------------------------------------------------ result */

static int result_alloc(generate_result *r, int requests, int per_request, int stride, lion_status *st) {
    memset(r, 0, sizeof *r);
    const size_t n = (size_t)requests * per_request;
    r->requests = requests, r->per_request = per_request, r->stride = stride;
    r->ids = calloc(n * stride, sizeof *r->ids);
    r->lengths = calloc(n, sizeof *r->lengths);
    r->scores = calloc(n, sizeof *r->scores);
    r->stopped = calloc((size_t)requests, sizeof *r->stopped);
    if (!r->ids || !r->lengths || !r->scores || !r->stopped) {
        generate_result_free(r);
        return lion_fail(st, LION_ENOMEM, "generate: out of memory for %zu sequences", n);
    }
    return 0;
}

/* ------------------------------------------------------------------ entry points */

/* Asks opts->stop about every request in the batch; the stopped ones leave it and are
 * marked in out. */
static void stop_requests(const generate_options *opts, decode_batch *db, generate_result *out) {
    if (!opts || !opts->stop) return;
    for (int i = 0; i < db->n; i++) {
        const int b = (int)(intptr_t)db->reqs[i]->user;
        if (!opts->stop(opts->ctx, b)) continue;
        out->stopped[b] = 1;
        for (int k = 0; k < out->per_request; k++) out->lengths[(size_t)b * out->per_request + k] = 0;
        decode_batch_remove(db, i--);
    }
}

/* After a step: greedy and sampling requests show their ids to opts->step; finished ones
 * write their result and leave. */
static void collect_requests(const generate_options *opts, decode_batch *db, generate_result *out) {
    for (int i = 0; i < db->n; i++) {
        search *s = db->reqs[i]->search;
        const int b = (int)(intptr_t)db->reqs[i]->user, finished = search_finished(s);
        int n;
        const int32_t *ids = search_ids(s, &n);
        if (ids && opts && opts->step) opts->step(opts->ctx, b, ids, n, finished);
        if (!finished) continue;
        const size_t o = (size_t)b * out->per_request;
        search_output(s, out->ids + o * out->stride, out->stride, out->lengths + o, out->scores + o);
        decode_batch_remove(db, i--);
    }
}

int generate_from_encoded(const t5_model *m, const float *enc, const uint8_t *mask, int batch, int len,
                          int router_idx, const generate_params *p, const generate_options *opts,
                          generate_result *out, arena *a, lion_status *st) {
    memset(out, 0, sizeof *out);
    if (generate_params_check(p, m->cfg.vocab_size, st)) return -1;
    if (batch <= 0 || len <= 0)
        return lion_fail(st, LION_EINVAL, "generate: empty input (batch %d, length %d)", batch, len);
    if (result_alloc(out, batch, p->num_return_sequences, p->max_new_tokens + 1, st)) return -1;
    decode_batch db;
    decode_batch_init(&db, m);
    const size_t d = (size_t)m->cfg.d_model;
    int rc = 0;
    for (int b = 0; b < batch && !rc; b++) {
        const uint64_t seed = opts && opts->seeds ? opts->seeds[b] : p->seed;
        rc = decode_batch_add(&db, enc + (size_t)b * len * d, mask ? mask + (size_t)b * len : NULL, len, router_idx, p,
                              seed, (void *)(intptr_t)b, st);
        if (rc) lion_fail_prefix(st, "batch row %d: ", b);
    }
    arena_mark mark = arena_save(a);
    while (!rc && db.n > 0) {
        stop_requests(opts, &db, out);
        if (db.n == 0) break;
        rc = decode_batch_step(&db, a, st) < 0;
        if (!rc) collect_requests(opts, &db, out);
    }
    arena_restore(a, mark);
    decode_batch_free(&db);
    if (rc) generate_result_free(out);
    return rc ? -1 : 0;
}

int generate_run(const t5_model *m, const float *inputs_embeds, const uint8_t *mask, int batch, int len,
                 int router_idx, const generate_params *p, generate_result *out, arena *a, lion_status *st) {
    return generate_run_with(m, inputs_embeds, mask, batch, len, router_idx, p, NULL, out, a, st);
}

int generate_run_with(const t5_model *m, const float *inputs_embeds, const uint8_t *mask, int batch, int len,
                      int router_idx, const generate_params *p, const generate_options *opts, generate_result *out,
                      arena *a, lion_status *st) {
    memset(out, 0, sizeof *out);
    if (generate_params_check(p, m->cfg.vocab_size, st)) return -1;
    if (batch <= 0 || len <= 0)
        return lion_fail(st, LION_EINVAL, "generate: empty input (batch %d, length %d)", batch, len);
    float *enc = malloc((size_t)batch * len * m->cfg.d_model * sizeof(float));
    if (!enc) return lion_fail(st, LION_ENOMEM, "generate: out of memory for the encoder output");
    int rc = t5_encode(m, inputs_embeds, mask, batch, len, router_idx, enc, a, st);
    if (!rc) rc = generate_from_encoded(m, enc, mask, batch, len, router_idx, p, opts, out, a, st);
    free(enc);
    return rc;
}
