/* llm_batching.c - the llm stage's continuous (iteration-level) batching.
 *
 * The stage holds one running decode batch (decode_batch.h). Each step:
 *  1. jobs the gateway cancelled, or whose stream broke, leave (their rows with them);
 *  2. jobs waiting since they arrived are encoded and join, in arrival order, as long as
 *     (a) the encoder tokens of this step stay within prefill_tokens (at least one job is
 *     taken whatever its size: one prompt is bounded by protocol.h), so the jobs already
 *     decoding wait at most one bounded encoder pass per token, and (b) the decoding state
 *     of all running jobs stays within kv_budget (a job that does not fit waits for others
 *     to finish; one that could never fit was failed on arrival);
 *  3. one decoder step runs every row of every running job; a job that finished is answered
 *     at once (worker_job_done) and leaves; streamed jobs get their PARTIALs.
 * A job's answer is what it would be alone (decode_batch.h says what batching can change).
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "decode_batch.h"
#include "llm_job.h"
#include "llm_stage.h"
#include "log.h"
#include "prompt.h"

/* The job's answer (RESULT, or the failure worker_job_fail set) goes out; j is freed. */
static void job_finish(llm_job *j) {
    lion_status st;
    if (worker_job_done(j->job, &st)) log_warn("%s", st.msg);
    llm_job_release(j);
    free(j);
}

static size_t job_bytes(const llm_stage *s, const llm_job *j) {
    if (s->cfg.family == MODEL_FAMILY_PINK)
        return (size_t)j->params.num_beams * decode_llama_slot_bytes(&s->llama, s->running.cache.capacity);
    return decode_request_bytes(&s->t5, &j->params, j->n_visual + j->n_ids);
}

void llm_stage_admit(void *ctx, worker_job *jobs, int n) {
    llm_stage *s = ctx;
    for (int i = 0; i < n; i++) {
        llm_job *j = calloc(1, sizeof *j);
        lion_status st;
        if (!j) {
            worker_job_fail(&jobs[i], LION_ENOMEM, "llm: out of memory for a job");
            if (worker_job_done(&jobs[i], &st)) log_warn("%s", st.msg);
            continue;
        }
        if (llm_job_prepare(s, &jobs[i], j, &st)) {
            worker_job_fail(&jobs[i], st.code, "%s", st.msg);
            job_finish(j);
            continue;
        }
        const size_t need = job_bytes(s, j);
        if (s->kv_budget && need > s->kv_budget) {
            worker_job_fail(&jobs[i], LION_ETOOBIG,
                            "llm: %d beams x %d new tokens over %d prompt tokens need %.1f MB of decoding state, over "
                            "this worker's --kv-budget-mb of %.0f",
                            j->params.num_beams, j->params.max_new_tokens, j->n_visual + j->n_ids, need / 1048576.0,
                            s->kv_budget / 1048576.0);
            job_finish(j);
            continue;
        }
        *(s->waiting_tail ? &s->waiting_tail->next : &s->waiting) = j;
        s->waiting_tail = j;
        s->n_waiting++;
    }
}

/* Step 1: cancelled jobs and jobs whose stream broke leave, running or waiting (the worker
 * answers a cancelled job ECANCELED whatever its status). */
static void drop_stopped(llm_stage *s) {
    for (int i = 0; i < s->running.n; i++) {
        llm_job *j = s->running.reqs[i]->user;
        if (!worker_job_cancelled(j->job) && !j->failed) continue;
        decode_batch_remove(&s->running, i--);
        job_finish(j);
    }
    for (llm_job **at = &s->waiting, *prev = NULL; *at;) {
        llm_job *j = *at;
        if (!worker_job_cancelled(j->job)) {
            prev = j;
            at = &j->next;
            continue;
        }
        *at = j->next;
        if (s->waiting_tail == j) s->waiting_tail = prev;
        s->n_waiting--;
        job_finish(j);
    }
}

/* Encodes jobs js[0..n) (one adapter route) as one padded batch and adds each to the
 * running batch with its own encoder positions; a job that cannot join fails alone. */
static void encode_and_join(llm_stage *s, llm_job **js, int n, int route) {
    prompt_request *reqs = malloc((size_t)n * sizeof *reqs);
    prompt_batch b = {0};
    float *enc = NULL;
    lion_status st;
    int rc = -1;
    if (!reqs) {
        lion_fail(&st, LION_ENOMEM, "llm: out of memory for a batch of %d prompts", n);
        goto fail;
    }
    for (int k = 0; k < n; k++) reqs[k] = (prompt_request){js[k]->visual, js[k]->n_visual, js[k]->ids, js[k]->n_ids};
    if (prompt_batch_build(&b, &s->embedder, reqs, n, 0, &st)) goto fail;
    const size_t d = (size_t)s->t5.cfg.d_model;
    enc = malloc((size_t)b.batch * b.len * d * sizeof *enc);
    if (!enc) {
        lion_fail(&st, LION_ENOMEM, "llm: out of memory for the encoder output of %d x %d tokens", b.batch, b.len);
        goto fail;
    }
    if (t5_encode(&s->t5, b.embeds, b.mask, b.batch, b.len, route, enc, &s->scratch, &st)) goto fail;
    rc = 0;
    for (int k = 0; k < n; k++) {
        llm_job *j = js[k];
        /* its own positions only: the padding after them is masked out anyway */
        if (decode_batch_add(&s->running, enc + (size_t)k * b.len * d, NULL, j->n_visual + j->n_ids, route, &j->params,
                             j->seed, j, &st)) {
            worker_job_fail(j->job, st.code, "%s", st.msg);
            job_finish(j);
        }
    }
fail:
    if (rc)
        for (int k = 0; k < n; k++) {
            worker_job_fail(js[k]->job, st.code, "%s", st.msg);
            job_finish(js[k]);
        }
    prompt_batch_free(&b);
    free(enc);
    free(reqs);
    arena_reset(&s->scratch);
}

/* A Pink job joins: its prompt is prefilled into its beams' slots of the shared cache. */
static void prefill_and_join(llm_stage *s, llm_job *j) {
    lion_status st;
    if (decode_batch_add_llama(&s->running, j->embeds, j->ids, j->n_ids, &j->params, j->seed, j, &s->scratch, &st)) {
        worker_job_fail(j->job, st.code, "%s", st.msg);
        job_finish(j);
    }
    arena_reset(&s->scratch);
}

/* Step 2: waiting jobs join, in arrival order, within the prefill and memory budgets. */
static void admit_waiting(llm_stage *s) {
    llm_job *order[LLM_MAX_ADMIT];
    int taken = 0, tokens = 0, beams = 0;
    size_t bytes = s->running.bytes;
    while (s->waiting && taken < LLM_MAX_ADMIT) {
        llm_job *j = s->waiting;
        const int len = j->n_visual + j->n_ids;
        const size_t need = job_bytes(s, j);
        if (taken > 0 && tokens + len > s->prefill_tokens) break;
        if (s->kv_budget && bytes + need > s->kv_budget) break; /* no overtaking: it waits for room */
        if (s->running.lm && !decode_batch_has_slots(&s->running, beams + j->params.num_beams)) break;
        s->waiting = j->next;
        if (!s->waiting) s->waiting_tail = NULL;
        s->n_waiting--;
        j->next = NULL;
        order[taken++] = j;
        tokens += len, bytes += need, beams += j->params.num_beams;
    }
    if (s->running.lm) { /* Pink: each prompt prefilled into its own slots */
        for (int k = 0; k < taken; k++) prefill_and_join(s, order[k]);
        return;
    }
    /* T5: one padded encoder batch per adapter route */
    for (int route = 0; route < 2; route++) {
        llm_job *group[LLM_MAX_ADMIT];
        int n = 0;
        for (int k = 0; k < taken; k++)
            if (order[k]->router_idx == route) group[n++] = order[k];
        if (n) encode_and_join(s, group, n, route);
    }
}

/* Step 3: one decoder step; finished jobs are answered and leave. */
static void decode_step(llm_stage *s) {
    lion_status st;
    if (decode_batch_step(&s->running, &s->scratch, &st) < 0) {
        log_error("llm: decoder step failed for %d jobs: %s", s->running.n, st.msg);
        while (s->running.n > 0) {
            llm_job *j = s->running.reqs[0]->user;
            decode_batch_remove(&s->running, 0);
            worker_job_fail(j->job, st.code, "%s", st.msg);
            job_finish(j);
        }
        return;
    }
    const int64_t now = clock_unix_us();
    for (int i = 0; i < s->running.n; i++) {
        decode_request *r = s->running.reqs[i];
        llm_job *j = r->user;
        if (!j->first_token_us) j->first_token_us = now;
        int n_ids;
        const int32_t *ids = search_ids(r->search, &n_ids);
        const int finished = search_finished(r->search);
        if (ids) llm_job_stream(s, j, ids, n_ids, finished);
        if (!finished) continue;
        if (!j->failed && llm_job_answer(s, j, r->search, &st)) worker_job_fail(j->job, st.code, "%s", st.msg);
        decode_batch_remove(&s->running, i--);
        job_finish(j);
    }
}

int llm_stage_step(void *ctx) {
    llm_stage *s = ctx;
    arena_reset(&s->scratch);
    drop_stopped(s);
    admit_waiting(s);
    if (s->running.n > 0) decode_step(s);
    uint32_t rows = 0;
    for (int i = 0; i < s->running.n; i++) rows += (uint32_t)search_rows(s->running.reqs[i]->search);
    atomic_store(&s->stat_rows, rows);
    atomic_store(&s->stat_kv_bytes, (uint64_t)s->running.bytes);
    return s->n_waiting + s->running.n;
}

void llm_stage_decode_stats(void *ctx, uint32_t *running_rows, uint64_t *kv_bytes, uint64_t *kv_budget_bytes) {
    llm_stage *s = ctx;
    *running_rows = atomic_load(&s->stat_rows);
    *kv_bytes = atomic_load(&s->stat_kv_bytes);
    *kv_budget_bytes = (uint64_t)s->kv_budget;
}
