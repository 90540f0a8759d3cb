/* batch_summary.c - see batch_summary.h. */
#include "batch_summary.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"

static const char *const stage_names[BATCH_STAGES] = {"vision", "tagger", "aggregator", "llm", "total"};

void batch_stats_init(batch_stats *s) {
    memset(s, 0, sizeof *s);
    s->start_us = clock_mono_us();
}

void batch_stats_free(batch_stats *s) {
    free(s->latency_ms);
    free(s->tallies);
    memset(s, 0, sizeof *s);
}

void batch_stats_answer(batch_stats *s, const cJSON *answer, double latency_ms) {
    const cJSON *tokens = cJSON_GetObjectItemCaseSensitive(answer, "generated_tokens");
    if (!cJSON_IsNumber(tokens)) tokens = cJSON_GetObjectItemCaseSensitive(answer, "tokens");
    if (cJSON_IsNumber(tokens)) s->tokens += tokens->valuedouble;
    const cJSON *timings = cJSON_GetObjectItemCaseSensitive(answer, "timings_ms");
    for (int i = 0; i < BATCH_STAGES; i++) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(timings, stage_names[i]);
        if (cJSON_IsNumber(t)) s->stage_sum_ms[i] += t->valuedouble, s->stage_n[i]++;
    }
    if (s->answers == s->latency_cap) {
        size_t cap = s->latency_cap ? s->latency_cap * 2 : 1024;
        double *l = realloc(s->latency_ms, cap * sizeof *l);
        if (l) s->latency_ms = l, s->latency_cap = cap;
    }
    /* without memory for the sample the answer still counts; the percentiles miss it */
    if (s->answers < s->latency_cap) s->latency_ms[s->answers] = latency_ms;
    s->answers++;
}

void batch_stats_check(batch_stats *s, const char *label, int pass) {
    batch_tally *t = NULL;
    for (int i = 0; i < s->n_tallies && !t; i++)
        if (!strncmp(s->tallies[i].label, label, sizeof t->label - 1)) t = &s->tallies[i];
    if (!t && s->n_tallies == s->tallies_cap) {
        int cap = s->tallies_cap ? s->tallies_cap * 2 : 16;
        batch_tally *b = realloc(s->tallies, (size_t)cap * sizeof *b);
        if (b) s->tallies = b, s->tallies_cap = cap;
    }
    if (!t && s->n_tallies < s->tallies_cap) {
        t = &s->tallies[s->n_tallies++];
        memset(t, 0, sizeof *t);
        snprintf(t->label, sizeof t->label, "%s", label);
    }
    if (pass) s->passed++;
    else s->failed++;
    if (t && pass) t->passed++;
    else if (t) t->failed++;
}

double batch_quantile(const double *sorted, size_t n, double q) {
    if (!n) return 0;
    double want = q * (double)n;
    size_t rank = (size_t)want; /* ceil(q n): the nearest rank */
    if ((double)rank < want) rank++;
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return sorted[rank - 1];
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void batch_stats_print(FILE *out, batch_stats *s, int check) {
    double elapsed = (double)(clock_mono_us() - s->start_us) / 1e6;
    double per_s = elapsed > 0 ? 1.0 / elapsed : 0;
    fprintf(out, "lion-batch: %zu requests in %.2fs: %.1f requests/s, %zu answered, %zu failed\n", s->requests,
            elapsed, (double)s->requests * per_s, s->answers, s->errors);
    fprintf(out, "lion-batch: tokens: %.0f generated, %.1f tokens/s\n", s->tokens, s->tokens * per_s);
    size_t n = s->answers < s->latency_cap ? s->answers : s->latency_cap;
    if (n) qsort(s->latency_ms, n, sizeof *s->latency_ms, compare_doubles);
    fprintf(out, "lion-batch: latency ms: p50 %.1f, p99 %.1f (%zu answers)\n", batch_quantile(s->latency_ms, n, 0.5),
            batch_quantile(s->latency_ms, n, 0.99), n);
    fprintf(out, "lion-batch: mean stage ms:");
    for (int i = 0; i < BATCH_STAGES; i++) {
        const char *sep = i ? "," : "";
        if (s->stage_n[i]) fprintf(out, "%s %s %.1f", sep, stage_names[i], s->stage_sum_ms[i] / (double)s->stage_n[i]);
        else fprintf(out, "%s %s -", sep, stage_names[i]);
    }
    fprintf(out, "\nlion-batch: retries: %ld after transport errors, %ld after 429/503\n", s->transport_retries,
            s->busy_retries);
    if (!check) return;
    for (int i = 0; i < s->n_tallies; i++) {
        int total = s->tallies[i].passed + s->tallies[i].failed;
        fprintf(out, "%-16s %d/%d (%.0f%%)\n", s->tallies[i].label, s->tallies[i].passed, total,
                total ? 100.0 * s->tallies[i].passed / total : 0.0);
    }
    fprintf(out, "%d passed, %d failed\n", s->passed, s->failed);
}
