/* llm_job.h - one llm job as the stage prepared it, and what becomes of it: the prompt
 * (llm_job_prepare), its streamed text (llm_job_stream), its RESULT (llm_job_answer).
 * Private to the llm service: llm_stage.c opens the stage, llm_batching.c runs the jobs. */
#ifndef LION_LLM_JOB_H
#define LION_LLM_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "generate.h"
#include "llm_stage.h"
#include "search.h"
#include "worker.h"

typedef struct llm_job {
    worker_job *job;
    generate_params params;
    int router_idx;
    uint64_t seed; /* sampling: the task's seed, or llm_request_seed */
    float *visual; /* [n_visual, d_model] f32 copy */
    int n_visual;
    int32_t *ids;  /* [n_ids]: the prompt's token ids */
    int n_ids;
    float *embeds; /* Pink: [n_ids, dim] the prompt's input embeddings, the image's in place */
    /* streaming (task.stream, greedy or sampling) */
    int stream;
    char *sent;       /* the text sent in PARTIALs so far (malloc'ed, NULL: none) */
    size_t sent_len;
    int ids_sent;     /* generated ids that went out in PARTIALs */
    int failed;       /* the job failed on its own (a PARTIAL could not be sent): its rows stop */
    int64_t first_token_us; /* unix microseconds of its first generated token; 0: none yet */
    struct llm_job *next;   /* the stage's queue of jobs waiting to be encoded */
} llm_job;

/* Validates job and fills j (zeroed first; j->job = job); on failure st names the tensor or
 * field. Uses the stage's tokenizer buffer: compute thread only. */
int llm_job_prepare(llm_stage *s, worker_job *job, llm_job *j, lion_status *st);
/* Frees what j holds (not j, not its worker_job). */
void llm_job_release(llm_job *j);

/* A streamed job's new text, after a step that gave it a token: a PARTIAL of the text
 * decoded so far minus what was sent (held back while it does not extend what was sent, or
 * ends in a character whose bytes are not all generated), with the ids generated since the
 * previous PARTIAL. ids: the sequence so far, decoder start id first. A PARTIAL that cannot
 * be sent fails the job (j->failed). */
void llm_job_stream(const llm_stage *s, llm_job *j, const int32_t *ids, int n_ids, int finished);

/* The finished search's sequences into the job's RESULT: text, ids, score, boxes,
 * finish_reason, generated_tokens; prompt_tokens and first_token_us. */
int llm_job_answer(const llm_stage *s, llm_job *j, search *sr, lion_status *st);

#endif
