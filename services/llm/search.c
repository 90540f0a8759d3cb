#include "search.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ logits processors */

/* HF RepetitionPenaltyLogitsProcessor: every token present in the context (once, however
 * often it occurs) gets score < 0 ? score * penalty : score / penalty. The context is HF's
 * input_ids: the prompt before the start id (a decoder-only model's; empty for T5, whose
 * decoder input_ids start at the start id) and then seq. seen is a V-byte scratch, all zero. */
static void repetition_penalty_apply(float *scores, const int32_t *prompt, int n_prompt, const int32_t *seq, int n,
                                     float penalty, uint8_t *seen) {
    if (penalty == 1.0f) return;
    for (int part = 0; part < 2; part++) {
        const int32_t *ids = part ? seq : prompt;
        for (int i = 0, m = part ? n : n_prompt; i < m; i++) {
            int t = ids[i];
            if (seen[t]) continue;
            seen[t] = 1;
            scores[t] = scores[t] < 0 ? scores[t] * penalty : scores[t] / penalty;
        }
    }
    for (int i = 0; i < n_prompt; i++) seen[prompt[i]] = 0;
    for (int i = 0; i < n; i++) seen[seq[i]] = 0;
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

/* ------------------------------------------------------------------ the search */

struct search {
    generate_params p;
    int32_t *prompt; /* a decoder-only model's prompt before the start id (search_set_prompt) */
    int n_prompt;
    int V, nb, max_len, k; /* k: beam candidates kept, 2 * num_beams */
    int cur;               /* ids per sequence so far (the start id included) */
    int finished;
    uint64_t rng;
    /* greedy and sampling: one sequence */
    int32_t *seq;
    /* beam search: nb live sequences and the finished hypotheses */
    int32_t *seqs, *spare; /* [nb, max_len] */
    float *beam_score, *next_score;
    int32_t *next_token;
    int *beam_src;
    int done;              /* BeamHypotheses.is_done said so */
    candidate *cand;
    beam_hyps hyps;
};

/* The processors of HF generate on one sequence's logits: the penalty over its input_ids,
 * then min_length, which HF counts over input_ids too (the prompt of a decoder-only model
 * included). */
static void process_logits(const search *s, float *scores, const int32_t *seq, int n, uint8_t *seen) {
    const generate_params *p = &s->p;
    repetition_penalty_apply(scores, s->prompt, s->n_prompt, seq, n, p->repetition_penalty, seen);
    if (s->n_prompt + n < p->min_length) scores[p->eos_id] = -INFINITY;
}

void search_free(search *s) {
    if (!s) return;
    free(s->prompt);
    free(s->seq);
    free(s->seqs);
    free(s->spare);
    free(s->beam_score);
    free(s->next_score);
    free(s->next_token);
    free(s->beam_src);
    free(s->cand);
    free(s->hyps.score);
    free(s->hyps.len);
    free(s->hyps.seq);
    free(s);
}

int search_create(search **out, const generate_params *p, int vocab, uint64_t seed, lion_status *st) {
    *out = NULL;
    search *s = calloc(1, sizeof *s);
    if (!s) return lion_fail(st, LION_ENOMEM, "generate: out of memory for a search");
    s->p = *p;
    s->V = vocab, s->nb = p->num_beams, s->max_len = p->max_new_tokens + 1, s->k = 2 * p->num_beams;
    s->cur = 1, s->rng = seed;
    const size_t L = (size_t)s->max_len, nb = (size_t)s->nb;
    int ok;
    if (s->nb == 1) {
        ok = (s->seq = malloc(L * sizeof *s->seq)) != NULL;
        if (ok) s->seq[0] = p->decoder_start_id;
    } else {
        s->seqs = malloc(nb * L * sizeof *s->seqs), s->spare = malloc(nb * L * sizeof *s->spare);
        s->beam_score = malloc(nb * sizeof *s->beam_score), s->next_score = malloc(nb * sizeof *s->next_score);
        s->next_token = malloc(nb * sizeof *s->next_token), s->beam_src = malloc(nb * sizeof *s->beam_src);
        s->cand = malloc((size_t)s->k * sizeof *s->cand);
        s->hyps.score = malloc((nb + 1) * sizeof *s->hyps.score), s->hyps.len = malloc((nb + 1) * sizeof *s->hyps.len);
        s->hyps.seq = malloc((nb + 1) * L * sizeof *s->hyps.seq);
        ok = s->seqs && s->spare && s->beam_score && s->next_score && s->next_token && s->beam_src && s->cand &&
             s->hyps.score && s->hyps.len && s->hyps.seq;
        if (ok) {
            s->hyps.worst = 1e9;
            for (int j = 0; j < s->nb; j++) {
                s->seqs[(size_t)j * L] = p->decoder_start_id;
                /* only beam 0 is live at first, so the first step does not pick one token nb times */
                s->beam_score[j] = j == 0 ? 0.0f : -1e9f;
            }
        }
    }
    if (!ok) {
        search_free(s);
        return lion_fail(st, LION_ENOMEM, "generate: out of memory for a search of %d beams x %d tokens", p->num_beams,
                         s->max_len);
    }
    *out = s;
    return 0;
}

int search_set_prompt(search *s, const int32_t *ids, int n, lion_status *st) {
    free(s->prompt);
    s->prompt = NULL, s->n_prompt = 0;
    if (n <= 0) return 0;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= s->V)
            return lion_fail(st, LION_EINVAL, "generate: prompt id %d at %d outside the vocabulary of %d", ids[i], i,
                             s->V);
    if (!(s->prompt = malloc((size_t)n * sizeof *s->prompt)))
        return lion_fail(st, LION_ENOMEM, "generate: out of memory for a prompt of %d ids", n);
    memcpy(s->prompt, ids, (size_t)n * sizeof *ids);
    s->n_prompt = n;
    return 0;
}

int search_rows(const search *s) { return s->finished ? 0 : s->nb; }

int search_finished(const search *s) { return s->finished; }

void search_inputs(const search *s, int32_t *tokens) {
    if (s->nb == 1) tokens[0] = s->seq[s->cur - 1];
    else
        for (int j = 0; j < s->nb; j++) tokens[j] = s->seqs[(size_t)j * s->max_len + s->cur - 1];
}

const int32_t *search_ids(const search *s, int *n) {
    *n = s->cur;
    return s->nb == 1 ? s->seq : NULL;
}

static int advance_single(search *s, float *logits, arena *a, lion_status *st) {
    const generate_params *p = &s->p;
    const int V = s->V;
    arena_mark mark = arena_save(a);
    uint8_t *seen = arena_alloc(a, (size_t)V);
    scored_token *order = p->do_sample ? arena_alloc(a, (size_t)V * sizeof *order) : NULL;
    double *probs = p->do_sample ? arena_alloc(a, (size_t)V * sizeof *probs) : NULL;
    if (!seen || (p->do_sample && (!order || !probs))) {
        arena_restore(a, mark);
        return lion_fail(st, LION_ENOMEM, "generate: out of scratch memory");
    }
    memset(seen, 0, (size_t)V);
    process_logits(s, logits, s->seq, s->cur, seen);
    const int next = p->do_sample ? sample_row(logits, V, p, &s->rng, order, probs) : argmax_row(logits, V);
    arena_restore(a, mark);
    s->seq[s->cur++] = next;
    if (next == p->eos_id || s->cur == s->max_len) s->finished = 1;
    return 0;
}

/* BeamSearchScorer.process for this step's logits (sequences cur ids long), then the
 * sequences extended, then finalize when done or out of steps. */
static int advance_beams(search *s, float *logits, int *src, arena *a, lion_status *st) {
    const generate_params *p = &s->p;
    const int nb = s->nb, V = s->V, L = s->max_len, cur = s->cur;
    uint8_t *seen = arena_alloc(a, (size_t)V);
    if (!seen) return lion_fail(st, LION_ENOMEM, "generate: out of scratch memory");
    memset(seen, 0, (size_t)V);
    int n = 0;
    for (int j = 0; j < nb; j++) {
        float *sc = logits + (size_t)j * V;
        log_softmax_row(sc, V);
        process_logits(s, sc, s->seqs + (size_t)j * L, cur, seen);
        for (int t = 0; t < V; t++) candidate_insert(s->cand, &n, s->k, sc[t] + s->beam_score[j], j * V + t);
    }
    int kept = 0;
    for (int rank = 0; rank < n && kept < nb; rank++) {
        const int beam = s->cand[rank].index / V, tok = s->cand[rank].index % V;
        if (tok == p->eos_id) {
            if (rank >= nb) continue;
            hyps_add(&s->hyps, nb, L, s->seqs + (size_t)beam * L, cur, (double)s->cand[rank].score, cur,
                     p->length_penalty);
        } else {
            s->beam_src[kept] = beam;
            s->next_token[kept] = tok;
            s->next_score[kept] = s->cand[rank].score;
            kept++;
        }
    }
    if (kept < nb) return lion_fail(st, LION_EINTERNAL, "generate: kept %d of %d beams", kept, nb);
    s->done = hyps_is_done(&s->hyps, nb, (double)s->cand[0].score, cur, p->length_penalty);
    for (int j = 0; j < nb; j++) {
        s->beam_score[j] = s->next_score[j];
        memcpy(s->spare + (size_t)j * L, s->seqs + (size_t)s->beam_src[j] * L, (size_t)cur * sizeof(int32_t));
        s->spare[(size_t)j * L + cur] = s->next_token[j];
        src[j] = s->beam_src[j];
    }
    int32_t *t = s->seqs;
    s->seqs = s->spare, s->spare = t;
    s->cur++;
    if (s->done || s->cur >= L) {
        s->finished = 1;
        if (!s->done) /* finalize: the open beams compete with the finished hypotheses */
            for (int j = 0; j < nb; j++)
                hyps_add(&s->hyps, nb, L, s->seqs + (size_t)j * L, s->cur, (double)s->beam_score[j], s->cur - 1,
                         p->length_penalty);
    }
    return 0;
}

int search_advance(search *s, float *logits, int *src, arena *a, lion_status *st) {
    if (s->finished) return lion_fail(st, LION_EINTERNAL, "generate: a finished search was stepped");
    if (s->nb == 1) {
        src[0] = 0;
        return advance_single(s, logits, a, st);
    }
    arena_mark mark = arena_save(a);
    int rc = advance_beams(s, logits, src, a, st);
    arena_restore(a, mark);
    return rc;
}

/* Beam search: the best num_return_sequences hypotheses, best first (Python's stable
 * ascending sort, popped from the end), with eos appended when shorter than max_len. */
void search_output(search *s, int32_t *ids, int stride, int *lengths, double *scores) {
    if (s->nb == 1) {
        memcpy(ids, s->seq, (size_t)s->cur * sizeof *ids);
        lengths[0] = s->cur;
        scores[0] = 0.0;
        return;
    }
    beam_hyps *h = &s->hyps;
    for (int q = 0; q < s->p.num_return_sequences; q++) {
        int best = -1;
        for (int i = 0; i < h->count; i++)
            if (h->len[i] >= 0 && (best < 0 || h->score[i] >= h->score[best])) best = i;
        int32_t *dst = ids + (size_t)q * stride;
        int len = h->len[best];
        memcpy(dst, h->seq + (size_t)best * s->max_len, (size_t)len * sizeof *dst);
        if (len < s->max_len) dst[len++] = s->p.eos_id;
        lengths[q] = len;
        scores[q] = h->score[best];
        h->len[best] = -1; /* popped */
    }
}
