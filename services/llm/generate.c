#include "generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"

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

static int check_params(const t5_model *m, const generate_params *p, lion_status *st) {
    const int V = m->cfg.vocab_size;
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

/* ------------------------------------------------------------------ logits processors */

/* HF RepetitionPenaltyLogitsProcessor: every token present in seq (once, however often it
 * occurs) gets score < 0 ? score * penalty : score / penalty. seen is a V-byte scratch. */
static void repetition_penalty_apply(float *scores, const int32_t *seq, int n, float penalty, uint8_t *seen) {
    if (penalty == 1.0f) return;
    for (int i = 0; i < n; i++) {
        int t = seq[i];
        if (seen[t]) continue;
        seen[t] = 1;
        scores[t] = scores[t] < 0 ? scores[t] * penalty : scores[t] / penalty;
    }
    for (int i = 0; i < n; i++) seen[seq[i]] = 0;
}

static void process_logits(float *scores, const int32_t *seq, int n, const generate_params *p, uint8_t *seen) {
    repetition_penalty_apply(scores, seq, n, p->repetition_penalty, seen);
    if (n < p->min_length) scores[p->eos_id] = -INFINITY;
}

static void log_softmax_row(float *x, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] > mx) mx = x[i];
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += exp((double)(x[i] - mx));
    const float lse = (float)log(sum);
    for (int i = 0; i < n; i++) x[i] = x[i] - mx - lse;
}

static int argmax_row(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* ------------------------------------------------------------------ sampling */

/* splitmix64: a small, well-mixed generator; one per request so that batching does not
 * change a request's draws */
static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double rng_uniform(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

typedef struct scored_token {
    float score;
    int token;
} scored_token;

static int cmp_ascending(const void *a, const void *b) {
    const scored_token *x = a, *y = b;
    if (x->score < y->score) return -1;
    if (x->score > y->score) return 1;
    return x->token - y->token;
}

/* HF's warpers in their order (temperature, top-k, top-p) and one multinomial draw.
 * order: V entries of scratch, probs: V doubles. */
static int sample_row(float *scores, int V, const generate_params *p, uint64_t *rng, scored_token *order,
                      double *probs) {
    if (p->temperature != 1.0f)
        for (int i = 0; i < V; i++) scores[i] /= p->temperature;
    for (int i = 0; i < V; i++) order[i].score = scores[i], order[i].token = i;
    qsort(order, (size_t)V, sizeof *order, cmp_ascending);
    if (p->top_k > 0 && p->top_k < V) {
        /* TopKLogitsWarper removes scores below the k-th largest (ties with it stay) */
        const float kth = order[V - p->top_k].score;
        for (int i = 0; i < V; i++)
            if (order[i].score < kth) order[i].score = -INFINITY;
    }
    const float mx = order[V - 1].score;
    double sum = 0.0;
    for (int i = 0; i < V; i++) sum += probs[i] = exp((double)(order[i].score - mx));
    if (p->top_p < 1.0f) {
        /* TopPLogitsWarper: drop the ascending prefix whose mass is <= 1 - top_p, never the top token */
        double cum = 0.0, total = sum;
        for (int i = 0; i < V - 1; i++) {
            cum += probs[i] / total;
            if (cum > 1.0 - (double)p->top_p) break;
            sum -= probs[i];
            probs[i] = 0.0;
        }
    }
    /* walk from the most likely token, so the draw is stable against tiny mass changes */
    const double u = rng_uniform(rng) * sum;
    double acc = 0.0;
    for (int i = V - 1; i >= 0; i--) {
        acc += probs[i];
        if (u < acc) return order[i].token;
    }
    return order[V - 1].token;
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

/* ------------------------------------------------------------------ greedy / sampling */

/* Asks opts->stop about every request still open (open[b]) of the decoder's elements
 * act[0..*n); the stopped ones are closed, marked in out and dropped from the decoder and
 * from act. Returns how many stopped. */
static int stop_requests(const generate_options *opts, t5_decoder *dec, int *act, int *n, uint8_t *open,
                         uint8_t *keep, generate_result *out) {
    if (!opts || !opts->stop) return 0;
    int stopped = 0;
    for (int e = 0; e < *n; e++) {
        const int b = act[e];
        keep[e] = 1;
        if (!open[b] || !opts->stop(opts->ctx, b)) continue;
        keep[e] = 0, open[b] = 0, out->stopped[b] = 1, stopped++;
        for (int k = 0; k < out->per_request; k++) out->lengths[(size_t)b * out->per_request + k] = 0;
    }
    if (!stopped) return 0;
    t5_decoder_keep(dec, keep);
    int k = 0;
    for (int e = 0; e < *n; e++)
        if (keep[e]) act[k++] = act[e];
    *n = k;
    return stopped;
}

static int generate_single(const t5_model *m, t5_decoder *dec, const generate_params *p, const generate_options *opts,
                           generate_result *out, arena *a, lion_status *st) {
    const int B = dec->batch, V = m->cfg.vocab_size, max_len = p->max_new_tokens + 1;
    float *logits = arena_floats(a, (size_t)B * V);
    int32_t *tokens = arena_alloc(a, (size_t)B * sizeof(int32_t));
    uint8_t *seen = arena_alloc(a, (size_t)V), *unfinished = arena_alloc(a, (size_t)B);
    uint8_t *keep = arena_alloc(a, (size_t)B);
    scored_token *order = arena_alloc(a, (size_t)V * sizeof *order);
    double *probs = arena_alloc(a, (size_t)V * sizeof(double));
    uint64_t *rng = arena_alloc(a, (size_t)B * sizeof(uint64_t));
    int *act = arena_alloc(a, (size_t)B * sizeof(int)); /* decoder row -> request */
    if (!logits || !tokens || !seen || !unfinished || !keep || !order || !probs || !rng || !act)
        return lion_fail(st, LION_ENOMEM, "generate: out of scratch memory");
    memset(seen, 0, (size_t)V);
    for (int b = 0; b < B; b++) {
        unfinished[b] = 1;
        rng[b] = opts && opts->seeds ? opts->seeds[b] : p->seed;
        act[b] = b;
        out->ids[(size_t)b * out->stride] = p->decoder_start_id;
        out->lengths[b] = 1;
    }
    int32_t *seq_all = out->ids;
    for (int cur = 1, left = B, n = B; cur < max_len && left > 0; cur++) {
        left -= stop_requests(opts, dec, act, &n, unfinished, keep, out);
        if (left == 0) break;
        for (int e = 0; e < n; e++) tokens[e] = seq_all[(size_t)act[e] * out->stride + cur - 1];
        if (t5_decoder_step(m, dec, tokens, logits, a, st)) return -1;
        for (int e = 0; e < n; e++) {
            const int b = act[e];
            if (!unfinished[b]) continue;
            float *s = logits + (size_t)e * V;
            int32_t *seq = seq_all + (size_t)b * out->stride;
            process_logits(s, seq, cur, p, seen);
            int next = p->do_sample ? sample_row(s, V, p, &rng[b], order, probs) : argmax_row(s, V);
            seq[cur] = next;
            out->lengths[b] = cur + 1;
            if (next == p->eos_id) unfinished[b] = 0, left--;
            if (opts && opts->step) opts->step(opts->ctx, b, seq, cur + 1, next == p->eos_id || cur + 1 == max_len);
        }
        /* finished rows keep stepping with their last token; their output is not read */
    }
    return 0;
}

/* ------------------------------------------------------------------ beam search */

typedef struct beam_hyps {
    int count;
    double worst;
    double *score; /* num_beams + 1 slots, in insertion order */
    int *len;
    int32_t *seq;  /* slot i at seq + i * max_len */
} beam_hyps;

/* BeamHypotheses.add, keeping Python's list order (the final sort is stable on it) */
static void hyps_add(beam_hyps *h, int nb, int max_len, const int32_t *seq, int len, double sum_logprobs,
                     int gen_len, double length_penalty) {
    const double score = sum_logprobs / pow((double)gen_len, length_penalty);
    if (h->count >= nb && !(score > h->worst)) return;
    h->score[h->count] = score;
    h->len[h->count] = len;
    memcpy(h->seq + (size_t)h->count * max_len, seq, (size_t)len * sizeof *seq);
    h->count++;
    if (h->count > nb) {
        /* drop the lowest (first such by index); worst becomes the second lowest */
        int lo = 0;
        for (int i = 1; i < h->count; i++)
            if (h->score[i] < h->score[lo]) lo = i;
        double second = INFINITY;
        for (int i = 0; i < h->count; i++)
            if (i != lo && h->score[i] < second) second = h->score[i];
        for (int i = lo; i + 1 < h->count; i++) {
            h->score[i] = h->score[i + 1];
            h->len[i] = h->len[i + 1];
            memcpy(h->seq + (size_t)i * max_len, h->seq + (size_t)(i + 1) * max_len, (size_t)max_len * sizeof *seq);
        }
        h->count--;
        h->worst = second;
    } else if (score < h->worst) {
        h->worst = score;
    }
}

static int hyps_is_done(const beam_hyps *h, int nb, double best_sum, int cur_len, double length_penalty) {
    if (h->count < nb) return 0;
    return h->worst >= best_sum / pow((double)cur_len, length_penalty);
}

typedef struct candidate {
    float score;
    int index; /* beam * V + token */
} candidate;

/* candidates kept sorted by score descending, ties by lower index, at most k */
static void candidate_insert(candidate *c, int *n, int k, float score, int index) {
    if (*n == k && !(score > c[k - 1].score)) return;
    int i = *n < k ? (*n)++ : k - 1;
    while (i > 0 && score > c[i - 1].score) {
        c[i] = c[i - 1];
        i--;
    }
    c[i].score = score, c[i].index = index;
}

/* The state of one beam search over rows = batch * num_beams decoder rows. */
typedef struct beam_search {
    int B, nb, rows, V, max_len, k; /* k: candidates kept per request, 2 * num_beams */
    double lp;                      /* length penalty */
    float *logits;                  /* [rows, V] */
    float *beam_score, *next_score; /* [rows] */
    int32_t *seqs, *spare;          /* [rows, max_len]: the sequences, and the next step's */
    int32_t *tokens, *next_token;   /* [rows] */
    int *src;                       /* [rows]: the row each new row continues */
    uint8_t *seen;                  /* [V] repetition penalty scratch */
    uint8_t *done, *open;           /* [B] */
    candidate *cand;                /* [k] */
    beam_hyps *hyps;                /* [B] */
} beam_search;

/* Scratch from a; every sequence starts with the decoder start id, only beam 0 live. */
static int beams_init(beam_search *bs, const t5_model *m, const t5_decoder *dec, const generate_params *p, arena *a,
                      lion_status *st) {
    const int B = dec->batch, nb = p->num_beams, rows = dec->rows, V = m->cfg.vocab_size;
    const int max_len = p->max_new_tokens + 1;
    *bs = (beam_search){.B = B, .nb = nb, .rows = rows, .V = V, .max_len = max_len, .k = 2 * nb,
                        .lp = p->length_penalty};
    bs->logits = arena_floats(a, (size_t)rows * V), bs->beam_score = arena_floats(a, (size_t)rows);
    bs->next_score = arena_floats(a, (size_t)rows);
    bs->seqs = arena_alloc(a, (size_t)rows * max_len * sizeof(int32_t));
    bs->spare = arena_alloc(a, (size_t)rows * max_len * sizeof(int32_t));
    bs->tokens = arena_alloc(a, (size_t)rows * sizeof(int32_t));
    bs->next_token = arena_alloc(a, (size_t)rows * sizeof(int32_t));
    bs->src = arena_alloc(a, (size_t)rows * sizeof(int));
    bs->seen = arena_alloc(a, (size_t)V), bs->done = arena_alloc(a, (size_t)B), bs->open = arena_alloc(a, (size_t)B);
    bs->cand = arena_alloc(a, (size_t)bs->k * sizeof *bs->cand);
    bs->hyps = arena_alloc(a, (size_t)B * sizeof *bs->hyps);
    if (!bs->logits || !bs->beam_score || !bs->next_score || !bs->seqs || !bs->spare || !bs->tokens ||
        !bs->next_token || !bs->src || !bs->seen || !bs->done || !bs->open || !bs->cand || !bs->hyps)
        return lion_fail(st, LION_ENOMEM, "generate: out of scratch memory");
    for (int b = 0; b < B; b++) {
        beam_hyps *h = &bs->hyps[b];
        h->count = 0;
        h->worst = 1e9;
        h->score = arena_alloc(a, (size_t)(nb + 1) * sizeof(double));
        h->len = arena_alloc(a, (size_t)(nb + 1) * sizeof(int));
        h->seq = arena_alloc(a, (size_t)(nb + 1) * max_len * sizeof(int32_t));
        if (!h->score || !h->len || !h->seq) return lion_fail(st, LION_ENOMEM, "generate: out of scratch memory");
        bs->done[b] = 0, bs->open[b] = 1;
    }
    memset(bs->seen, 0, (size_t)V);
    for (int r = 0; r < rows; r++) {
        bs->seqs[(size_t)r * max_len] = p->decoder_start_id;
        /* only beam 0 is live at first, so the first step does not pick one token nb times */
        bs->beam_score[r] = r % nb == 0 ? 0.0f : -1e9f;
    }
    return 0;
}

/* One step of request b from this step's logits, sequences cur ids long: its next beams
 * (src, next_token, beam_score) and finished hypotheses (BeamSearchScorer.process). A closed
 * request keeps its rows with pad. */
static int beams_step_request(beam_search *bs, int b, float *logits, int cur, const generate_params *p,
                              lion_status *st) {
    const int nb = bs->nb, V = bs->V;
    if (!bs->open[b]) {
        for (int j = 0; j < nb; j++) bs->src[b * nb + j] = b * nb + j, bs->next_token[b * nb + j] = p->pad_id;
        return 0;
    }
    int n = 0;
    for (int j = 0; j < nb; j++) {
        const int r = b * nb + j;
        float *s = logits + (size_t)j * V; /* this request's nb rows of this step's logits */
        log_softmax_row(s, V);
        process_logits(s, bs->seqs + (size_t)r * bs->max_len, cur, p, bs->seen);
        for (int t = 0; t < V; t++) candidate_insert(bs->cand, &n, bs->k, s[t] + bs->beam_score[r], j * V + t);
    }
    int kept = 0;
    for (int rank = 0; rank < n && kept < nb; rank++) {
        const int beam = bs->cand[rank].index / V, tok = bs->cand[rank].index % V;
        if (tok == p->eos_id) {
            if (rank >= nb) continue;
            hyps_add(&bs->hyps[b], nb, bs->max_len, bs->seqs + (size_t)(b * nb + beam) * bs->max_len, cur,
                     (double)bs->cand[rank].score, cur, bs->lp);
        } else {
            bs->src[b * nb + kept] = b * nb + beam;
            bs->next_token[b * nb + kept] = tok;
            bs->next_score[b * nb + kept] = bs->cand[rank].score;
            kept++;
        }
    }
    if (kept < nb) return lion_fail(st, LION_EINTERNAL, "generate: request %d kept %d of %d beams", b, kept, nb);
    bs->done[b] = (uint8_t)hyps_is_done(&bs->hyps[b], nb, (double)bs->cand[0].score, cur, bs->lp);
    for (int j = 0; j < nb; j++) bs->beam_score[b * nb + j] = bs->next_score[b * nb + j];
    return 0;
}

/* Row r's sequence becomes row src[r]'s (cur ids) plus next_token[r]. */
static void beams_extend(beam_search *bs, int cur) {
    for (int r = 0; r < bs->rows; r++) {
        memcpy(bs->spare + (size_t)r * bs->max_len, bs->seqs + (size_t)bs->src[r] * bs->max_len,
               (size_t)cur * sizeof(int32_t));
        bs->spare[(size_t)r * bs->max_len + cur] = bs->next_token[r];
    }
    int32_t *t = bs->seqs;
    bs->seqs = bs->spare, bs->spare = t;
}

/* Closes the open requests that are done or out of steps (sequences now cur ids long);
 * returns how many closed. */
static int beams_close(beam_search *bs, int cur) {
    const int nb = bs->nb;
    int closed = 0;
    for (int b = 0; b < bs->B; b++) {
        if (!bs->open[b] || !(bs->done[b] || cur >= bs->max_len)) continue;
        bs->open[b] = 0, closed++;
        if (!bs->done[b]) /* finalize: the open beams compete with the finished hypotheses */
            for (int j = 0; j < nb; j++)
                hyps_add(&bs->hyps[b], nb, bs->max_len, bs->seqs + (size_t)(b * nb + j) * bs->max_len, cur,
                         (double)bs->beam_score[b * nb + j], cur - 1, bs->lp);
    }
    return closed;
}

/* Each request's best num_return_sequences hypotheses, best first (Python's stable ascending
 * sort, popped from the end), with eos appended when shorter than max_len. */
static void beams_output(beam_search *bs, const generate_params *p, generate_result *out) {
    for (int b = 0; b < bs->B; b++) {
        beam_hyps *h = &bs->hyps[b];
        if (out->stopped[b]) continue;
        for (int q = 0; q < p->num_return_sequences; q++) {
            int best = -1;
            for (int i = 0; i < h->count; i++)
                if (h->len[i] >= 0 && (best < 0 || h->score[i] >= h->score[best])) best = i;
            const size_t o = (size_t)b * p->num_return_sequences + q;
            int32_t *dst = out->ids + o * out->stride;
            int len = h->len[best];
            memcpy(dst, h->seq + (size_t)best * bs->max_len, (size_t)len * sizeof *dst);
            if (len < bs->max_len) dst[len++] = p->eos_id;
            out->lengths[o] = len;
            out->scores[o] = h->score[best];
            h->len[best] = -1; /* popped */
        }
    }
}

/* The decoder holds the elements act[0..n) (requests); stopped requests leave it, and the
 * beam state stays indexed by request. */
static int generate_beams(const t5_model *m, t5_decoder *dec, const generate_params *p, const generate_options *opts,
                          generate_result *out, arena *a, lion_status *st) {
    beam_search bs;
    if (beams_init(&bs, m, dec, p, a, st)) return -1;
    const int nb = bs.nb;
    int *act = arena_alloc(a, (size_t)bs.B * sizeof(int)), *at = arena_alloc(a, (size_t)bs.B * sizeof(int));
    int *dsrc = arena_alloc(a, (size_t)bs.rows * sizeof(int));
    uint8_t *keep = arena_alloc(a, (size_t)bs.B);
    if (!act || !at || !dsrc || !keep) return lion_fail(st, LION_ENOMEM, "generate: out of scratch memory");
    for (int b = 0; b < bs.B; b++) act[b] = b;
    int cur = 1, left = bs.B, n = bs.B;
    while (left > 0) {
        left -= stop_requests(opts, dec, act, &n, bs.open, keep, out);
        if (left == 0) break;
        for (int b = 0; b < bs.B; b++) at[b] = -1;
        for (int e = 0; e < n; e++) {
            at[act[e]] = e;
            for (int j = 0; j < nb; j++)
                bs.tokens[e * nb + j] = bs.seqs[(size_t)(act[e] * nb + j) * bs.max_len + cur - 1];
        }
        if (t5_decoder_step(m, dec, bs.tokens, bs.logits, a, st)) return -1;
        for (int b = 0; b < bs.B; b++) {
            float *logits = at[b] >= 0 ? bs.logits + (size_t)at[b] * nb * bs.V : NULL; /* not read when closed */
            if (beams_step_request(&bs, b, logits, cur, p, st)) return -1;
        }
        beams_extend(&bs, cur);
        cur++;
        for (int e = 0; e < n; e++)
            for (int j = 0; j < nb; j++) dsrc[e * nb + j] = bs.src[act[e] * nb + j] - act[e] * nb + e * nb;
        if (t5_decoder_reorder(dec, dsrc, a, st)) return -1;
        left -= beams_close(&bs, cur);
    }
    beams_output(&bs, p, out);
    return 0;
}

/* ------------------------------------------------------------------ entry points */

int generate_from_encoded(const t5_model *m, const float *enc, const uint8_t *mask, int batch, int len,
                          int router_idx, const generate_params *p, const generate_options *opts,
                          generate_result *out, arena *a, lion_status *st) {
    memset(out, 0, sizeof *out);
    if (check_params(m, p, st)) return -1;
    t5_decoder dec;
    if (t5_decoder_init(&dec, m, enc, mask, batch, len, p->num_beams, p->max_new_tokens, router_idx, st)) return -1;
    if (result_alloc(out, batch, p->num_return_sequences, p->max_new_tokens + 1, st)) {
        t5_decoder_free(&dec);
        return -1;
    }
    arena_mark mark = arena_save(a);
    int rc = p->num_beams > 1 ? generate_beams(m, &dec, p, opts, out, a, st)
                              : generate_single(m, &dec, p, opts, out, a, st);
    arena_restore(a, mark);
    t5_decoder_free(&dec);
    if (rc) generate_result_free(out);
    return rc;
}

int generate_run(const t5_model *m, const float *inputs_embeds, const uint8_t *mask, int batch, int len,
                 int router_idx, const generate_params *p, generate_result *out, arena *a, lion_status *st) {
    return generate_run_with(m, inputs_embeds, mask, batch, len, router_idx, p, NULL, out, a, st);
}

int generate_run_with(const t5_model *m, const float *inputs_embeds, const uint8_t *mask, int batch, int len,
                      int router_idx, const generate_params *p, const generate_options *opts, generate_result *out,
                      arena *a, lion_status *st) {
    memset(out, 0, sizeof *out);
    if (check_params(m, p, st)) return -1;
    if (batch <= 0 || len <= 0)
        return lion_fail(st, LION_EINVAL, "generate: empty input (batch %d, length %d)", batch, len);
    float *enc = malloc((size_t)batch * len * m->cfg.d_model * sizeof(float));
    if (!enc) return lion_fail(st, LION_ENOMEM, "generate: out of memory for the encoder output");
    int rc = t5_encode(m, inputs_embeds, mask, batch, len, router_idx, enc, a, st);
    if (!rc) rc = generate_from_encoded(m, enc, mask, batch, len, router_idx, p, opts, out, a, st);
    free(enc);
    return rc;
}
