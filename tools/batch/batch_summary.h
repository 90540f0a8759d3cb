/* batch_summary.h - what a batch run counts, and the summary it prints at the end.
 *
 * The summary is plain lines on stderr, whatever --progress says, so that a log of a long
 * run ends with its figures:
 *
 *     lion-batch: 3000 requests in 41.20s: 72.8 requests/s, 3000 answered, 0 failed
 *     lion-batch: tokens: 24012 generated, 582.8 tokens/s
 *     lion-batch: latency ms: p50 52.1, p99 140.3 (3000 answers)
 *     lion-batch: mean stage ms: vision 20.3, tagger 8.1, aggregator 5.2, llm 18.0, total 51.9
 *     lion-batch: retries: 31 after transport errors, 4 after 429/503
 *
 * The figures are of this run's answers (--resume: not of those already in --out). The
 * tokens are each answer's "generated_tokens" ("tokens" from a gateway without it); the
 * latency is the client's, from sending the attempt that got the answer to its end; the
 * stage times are the answers' "timings_ms" (the workers' own), averaged over the answers
 * that have the stage (a request that brought its tags skips the tagger). */
#ifndef LION_BATCH_SUMMARY_H
#define LION_BATCH_SUMMARY_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define BATCH_STAGES 5 /* vision, tagger, aggregator, llm, total */

/* Per-task accounting of --check. */
typedef struct batch_tally {
    char label[64];
    int passed, failed;
} batch_tally;

typedef struct batch_stats {
    int64_t start_us;
    size_t requests, answers, errors; /* finished in this run; answers: HTTP 200 */
    double tokens;
    double *latency_ms; /* one per answer */
    size_t latency_cap;
    double stage_sum_ms[BATCH_STAGES];
    size_t stage_n[BATCH_STAGES];
    long transport_retries, busy_retries;
    batch_tally *tallies; /* --check, answers of earlier runs (--resume) included */
    int n_tallies, tallies_cap, passed, failed;
} batch_stats;

void batch_stats_init(batch_stats *s);
void batch_stats_free(batch_stats *s);
/* An answer (HTTP 200 with JSON) of this run, latency_ms after its attempt was sent. */
void batch_stats_answer(batch_stats *s, const cJSON *answer, double latency_ms);
/* The --check verdict of a request labelled label. */
void batch_stats_check(batch_stats *s, const char *label, int pass);
/* The value at quantile q (0..1) of n sorted values, nearest rank; 0 when n is 0. */
double batch_quantile(const double *sorted, size_t n, double q);
/* The summary lines above; then, with check, the accuracy per task and "N passed, N failed". */
void batch_stats_print(FILE *out, batch_stats *s, int check);

#endif
