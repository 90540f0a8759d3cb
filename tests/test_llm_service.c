/* The llm service as a separate process over ZeroMQ: it answers jobs with the token ids
 * and text lion_ref generates for them (greedy, beam search with the model's defaults and
 * with overrides, both task types, F32 and F16 visual tokens), alone and batched with
 * mixed task types and parameters, with finish_reason and generated_tokens; accepts every
 * parameter at the edges of protocol.h's ranges (what the gateway lets through) and answers
 * jobs past them or otherwise breaking the stage contract with errors naming the field,
 * survives a malformed frame, and exits cleanly on SIGTERM. Streaming: greedy and sampling
 * jobs send PARTIALs whose texts add up to the RESULT's, beam search sends none; a job
 * cancelled mid-generation is answered ERROR cancelled long before its max_new_tokens while
 * the job batched with it answers as alone. Sampling without num_beams samples; without a
 * seed it is reproducible per request id, with one per seed. A model whose lm_head is wider
 * than its tokenizer answers as lion_ref does (ids past the tokenizer decode to nothing).
 * In process: a model whose tag prompt is over LION_MAX_TAG_PROMPT_BYTES does not load. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "boxes.h"
#include "fake_gateway.h"
#include "llm_stage.h"
#include "protocol.h"
#include "safetensors.h"
#include "testing.h"

#define N_CASES_MAX 32

static char dir[2048];

static const char *path_of(const char *name) {
    static char p[4096 + 64];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

typedef struct job_spec {
    const char *instruction; /* NULL: absent */
    const char *tags[LION_MAX_TAGS];
    int n_tags;
    int task_type; /* 0: absent */
    Lion__GenerationParams gen;
    int has_gen;
    const char *tensor_name;
    dtype dt;
    const float *visual; /* [rows, cols] f32, converted to dt */
    int64_t rows, cols;
    int stream;  /* task.stream */
    int attempt; /* envelope attempt (0: absent) */
} job_spec;

static Lion__Envelope *job_new(const char *id, const job_spec *js, tensor *t, void **buf) {
    lion_status st;
    Lion__Envelope *job = envelope_new(LION__KIND__JOB, LION__STAGE__LLM, id, &st);
    job->task = malloc(sizeof *job->task);
    lion__task__init(job->task);
    Lion__Task *task = job->task;
    if (js->instruction) task->instruction = strdup(js->instruction);
    task->n_tags = (size_t)js->n_tags;
    task->tags = calloc((size_t)js->n_tags + 1, sizeof *task->tags);
    for (int i = 0; i < js->n_tags; i++) task->tags[i] = strdup(js->tags[i]);
    if (js->task_type) {
        task->has_task_type = 1;
        task->task_type = (Lion__TaskType)js->task_type;
    }
    if (js->has_gen) {
        task->generation = malloc(sizeof *task->generation);
        *task->generation = js->gen;
    }
    if (js->stream) task->has_stream = task->stream = 1;
    if (js->attempt) job->has_attempt = 1, job->attempt = (uint32_t)js->attempt;
    size_t n = (size_t)(js->cols ? js->rows * js->cols : js->rows);
    *buf = malloc(n * 4 + 4);
    for (size_t i = 0; i < n; i++) {
        if (js->dt == DTYPE_F16) ((uint16_t *)*buf)[i] = f32_to_f16(js->visual[i]);
        else if (js->dt == DTYPE_I32) ((int32_t *)*buf)[i] = (int32_t)js->visual[i];
        else ((float *)*buf)[i] = js->visual[i];
    }
    int64_t shape[] = {js->rows, js->cols};
    *t = tensor_view(js->dt, *buf, js->cols ? 2 : 1, shape);
    return job;
}

/* Sends a job (without waiting for the answer). */
static void send_job(fake_gateway *g, const char *id, const job_spec *js) {
    tensor t;
    void *buf;
    lion_status st;
    Lion__Envelope *job = job_new(id, js, &t, &buf);
    envelope_tensor et = {js->tensor_name ? js->tensor_name : "visual_tokens", &t, NULL};
    CHECK_MSG(envelope_send(g->router, &g->worker, job, &et, js->tensor_name && !*js->tensor_name ? 0 : 1, 0, &st) == 0,
              "%s", st.msg);
    envelope_free(job);
    free(buf);
}

typedef struct expected_case {
    job_spec spec;
    int32_t ids[64];
    int n_ids, n_return, prompt_tokens;
    char text[256];
} expected_case;

static void check_answer(const envelope_msg *m, const expected_case *c, const char *id) {
    CHECK_MSG(m->env->kind == LION__KIND__RESULT, "%s: %s", id,
              m->env->error && m->env->error->message ? m->env->error->message : "not a result");
    const Lion__Result *r = m->env->result;
    if (m->env->kind != LION__KIND__RESULT || !r) return;
    CHECK_EQ_INT(r->n_sequences, c->n_return);
    CHECK_MSG(r->has_prompt_tokens && (int)r->prompt_tokens == c->prompt_tokens, "%s: prompt_tokens %u, want %d", id,
              r->prompt_tokens, c->prompt_tokens);
    if (r->n_sequences < 1) return;
    const Lion__Sequence *s = r->sequences[0];
    int same = (int)s->n_token_ids == c->n_ids && !memcmp(s->token_ids, c->ids, (size_t)c->n_ids * sizeof(int32_t));
    CHECK_MSG(same, "%s: token ids differ from the reference (%zu ids, want %d)", id, s->n_token_ids, c->n_ids);
    CHECK_MSG(s->text && !strcmp(s->text, c->text), "%s: text \"%s\", want \"%s\"", id, s->text ? s->text : "",
              c->text);
    size_t want_boxes = boxes_parse(c->text, NULL, 0);
    CHECK_EQ_INT(s->n_boxes, want_boxes);
    /* every sequence says why it ended and how many tokens it took */
    for (size_t k = 0; k < r->n_sequences; k++) {
        const Lion__Sequence *q = r->sequences[k];
        int eos = q->n_token_ids > 1 && q->token_ids[q->n_token_ids - 1] == 1;
        CHECK_MSG(q->has_finish_reason &&
                      q->finish_reason == (eos ? LION__FINISH_REASON__STOP : LION__FINISH_REASON__LENGTH),
                  "%s: sequence %zu finish_reason %d", id, k, (int)q->finish_reason);
        CHECK_MSG(q->has_generated_tokens && q->generated_tokens == q->n_token_ids - 1, "%s: generated_tokens %u of %zu ids",
                  id, q->generated_tokens, q->n_token_ids);
    }
    int beams = c->spec.gen.has_num_beams ? (int)c->spec.gen.num_beams : 5;
    if (beams > 1) {
        CHECK_MSG(s->has_score && s->score < 0, "%s: a beam score is a log-probability", id);
        for (size_t k = 1; k < r->n_sequences; k++)
            CHECK_MSG(r->sequences[k]->score <= s->score, "%s: sequences best first", id);
    } else {
        CHECK(s->score == 0);
    }
}

static int load_cases(expected_case *cases, safetensors_file *vis, float **visual) {
    size_t len;
    char *json = (char *)testing_read_file(path_of("cases.json"), &len);
    cJSON *root = json ? cJSON_ParseWithLength(json, len) : NULL;
    free(json);
    int n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, root) {
        if (n == N_CASES_MAX) break;
        expected_case *e = &cases[n];
        memset(e, 0, sizeof *e);
        job_spec *js = &e->spec;
        js->instruction = strdup(cJSON_GetObjectItem(c, "instruction")->valuestring);
        const cJSON *t;
        cJSON_ArrayForEach(t, cJSON_GetObjectItem(c, "tags")) js->tags[js->n_tags++] = strdup(t->valuestring);
        int region = cJSON_IsTrue(cJSON_GetObjectItem(c, "region"));
        /* image-level is the default: every fourth image-level job leaves task_type out */
        js->task_type = region ? LION__TASK_TYPE__REGION_LEVEL : (n % 4 == 0 ? 0 : LION__TASK_TYPE__IMAGE_LEVEL);
        js->dt = !strcmp(cJSON_GetObjectItem(c, "dtype")->valuestring, "F16") ? DTYPE_F16 : DTYPE_F32;
        lion__generation_params__init(&js->gen);
        const cJSON *gen = cJSON_GetObjectItem(c, "gen"), *f;
        e->n_return = 1;
        cJSON_ArrayForEach(f, gen) {
            js->has_gen = 1;
            if (!strcmp(f->string, "num_beams")) js->gen.has_num_beams = 1, js->gen.num_beams = (uint32_t)f->valueint;
            if (!strcmp(f->string, "max_new_tokens"))
                js->gen.has_max_new_tokens = 1, js->gen.max_new_tokens = (uint32_t)f->valueint;
            if (!strcmp(f->string, "repetition_penalty"))
                js->gen.has_repetition_penalty = 1, js->gen.repetition_penalty = (float)f->valuedouble;
            if (!strcmp(f->string, "num_return_sequences")) {
                js->gen.has_num_return_sequences = 1, js->gen.num_return_sequences = (uint32_t)f->valueint;
                e->n_return = f->valueint;
            }
        }
        cJSON_ArrayForEach(t, cJSON_GetObjectItem(c, "ids")) if (e->n_ids < 64) e->ids[e->n_ids++] = t->valueint;
        snprintf(e->text, sizeof e->text, "%s", cJSON_GetObjectItem(c, "text")->valuestring);
        e->prompt_tokens = cJSON_GetObjectItem(c, "prompt_tokens")->valueint;
        char key[32];
        snprintf(key, sizeof key, "case%d", n);
        tensor vt;
        lion_status st;
        if (safetensors_get(vis, key, &vt, &st)) break;
        visual[n] = malloc((size_t)tensor_numel(&vt) * sizeof(float));
        convert_to_f32(visual[n], vt.data, vt.dtype, (size_t)tensor_numel(&vt), &st);
        js->visual = visual[n];
        js->rows = vt.shape[0], js->cols = vt.shape[1];
        n++;
    }
    cJSON_Delete(root);
    return n;
}

static void free_cases(expected_case *cases, float **visual, int n) {
    for (int i = 0; i < n; i++) {
        free((void *)cases[i].spec.instruction);
        for (int k = 0; k < cases[i].spec.n_tags; k++) free((void *)cases[i].spec.tags[k]);
        free(visual[i]);
    }
}

/* A job that must fail: its ERROR names what was wrong. */
static void check_error(fake_gateway *g, const char *id, const job_spec *js, const char *needle) {
    envelope_msg m;
    send_job(g, id, js);
    CHECK_MSG(fake_gateway_recv(g, &m, 60000) == 0, "%s: no answer", id);
    CHECK_MSG(m.env->kind == LION__KIND__ERROR, "%s: not an error", id);
    CHECK(m.env->error && m.env->error->code == LION_EINVAL);
    if (m.env->error) CHECK_CONTAINS(m.env->error->message, needle);
    envelope_msg_close(&m);
}

/* A job that must succeed (its answer is not compared: the point is that it is taken). */
static void check_accepted(fake_gateway *g, const char *id, const job_spec *js) {
    envelope_msg m;
    send_job(g, id, js);
    CHECK_MSG(fake_gateway_recv(g, &m, 60000) == 0, "%s: no answer", id);
    CHECK_MSG(m.env->kind == LION__KIND__RESULT, "%s: %s", id,
              m.env->error && m.env->error->message ? m.env->error->message : "not a result");
    envelope_msg_close(&m);
}

/* Every value at the edges of protocol.h's ranges is taken: the gateway lets them through,
 * so the worker must not refuse them (0.01 arrives as the float below the double 0.01). */
static void test_param_edges(fake_gateway *g, const job_spec *base) {
    struct {
        const char *id;
        Lion__GenerationParams gen;
    } edges[] = {
        {"rep-min", {.has_repetition_penalty = 1, .repetition_penalty = (float)LION_MIN_REPETITION_PENALTY}},
        {"rep-max", {.has_repetition_penalty = 1, .repetition_penalty = (float)LION_MAX_REPETITION_PENALTY}},
        {"lp-min", {.has_length_penalty = 1, .length_penalty = (float)-LION_MAX_ABS_LENGTH_PENALTY}},
        {"lp-max", {.has_length_penalty = 1, .length_penalty = (float)LION_MAX_ABS_LENGTH_PENALTY}},
        {"temp-max", {.has_temperature = 1, .temperature = (float)LION_MAX_TEMPERATURE}},
        {"temp-max-sample", {.has_temperature = 1, .temperature = (float)LION_MAX_TEMPERATURE, .has_do_sample = 1,
                             .do_sample = 1, .has_num_beams = 1, .num_beams = 1}},
        {"temp-0", {.has_temperature = 1, .temperature = 0}},
        {"min-length-max", {.has_min_length = 1, .min_length = LION_MAX_MIN_LENGTH}},
        {"beams-max", {.has_num_beams = 1, .num_beams = LION_MAX_BEAMS, .has_num_return_sequences = 1,
                       .num_return_sequences = LION_MAX_RETURN_SEQUENCES}},
        {"tokens-max", {.has_max_new_tokens = 1, .max_new_tokens = LION_MAX_NEW_TOKENS, .has_num_beams = 1,
                        .num_beams = 1}},
    };
    for (size_t k = 0; k < sizeof edges / sizeof *edges; k++) {
        job_spec js = *base;
        js.has_gen = 1;
        lion__generation_params__init(&js.gen);
        Lion__GenerationParams init = js.gen;
        js.gen = edges[k].gen;
        js.gen.base = init.base;
        if (!js.gen.has_max_new_tokens) js.gen.has_max_new_tokens = 1, js.gen.max_new_tokens = 2; /* quick */
        check_accepted(g, edges[k].id, &js);
    }
}

/* The instruction's byte limit is inclusive. A prompt over the token limit, which only text
 * that NFKC makes longer can reach within the byte limits (U+FDFA, 3 bytes, is 18 characters
 * in 4 words: a "▁" and an <unk> each), is refused naming its length. */
static void test_prompt_limits(fake_gateway *g, const job_spec *base) {
    static char text[LION_MAX_INSTRUCTION_BYTES + 1];
    job_spec js = *base;
    js.has_gen = 1;
    lion__generation_params__init(&js.gen);
    js.gen.has_max_new_tokens = 1, js.gen.max_new_tokens = 2;
    js.gen.has_num_beams = 1, js.gen.num_beams = 1;
    for (int i = 0; i < LION_MAX_INSTRUCTION_BYTES; i++) text[i] = "dog a "[i % 6];
    text[LION_MAX_INSTRUCTION_BYTES] = '\0';
    js.instruction = text;
    check_accepted(g, "instruction-max", &js);

    static const char fdfa[] = "\xef\xb7\xba"; /* U+FDFA */
    static char tag[LION_MAX_TAGS][LION_MAX_TAG_BYTES + 1];
    const int per_tag = LION_MAX_TAG_BYTES / 3;
    for (int i = 0; i < LION_MAX_INSTRUCTION_BYTES / 3; i++) memcpy(text + 3 * i, fdfa, 3);
    text[LION_MAX_INSTRUCTION_BYTES / 3 * 3] = '\0';
    js.n_tags = LION_MAX_TAGS;
    for (int t = 0; t < LION_MAX_TAGS; t++) {
        for (int i = 0; i < per_tag; i++) memcpy(tag[t] + 3 * i, fdfa, 3);
        tag[t][per_tag * 3] = '\0';
        js.tags[t] = tag[t];
    }
    char needle[96];
    snprintf(needle, sizeof needle, "tokens, over the limit of %d", LION_MAX_PROMPT_TOKENS);
    check_error(g, "prompt-tokens", &js, needle); /* "task.instruction: the prompt is 24559 tokens, ..." */
}

/* Writes the fixture's model.json with llm.tag_prompt made n bytes long (its "{}" and soft
 * prompt token kept) and the llm's files named by absolute path into dir. */
static int write_tag_prompt_model(const char *dir_out, size_t n) {
    size_t len;
    char *json = (char *)testing_read_file(path_of("model/model.json"), &len);
    cJSON *root = json ? cJSON_ParseWithLength(json, len) : NULL;
    free(json);
    cJSON *llm = cJSON_GetObjectItem(root, "llm");
    static const char head[] = "According to <extra_id_0>, use the tags [{}]. ";
    char *prompt = malloc(n + 1);
    if (!llm || !prompt || n < sizeof head - 1) {
        cJSON_Delete(root);
        free(prompt);
        return -1;
    }
    memcpy(prompt, head, sizeof head - 1);
    memset(prompt + sizeof head - 1, 'x', n - (sizeof head - 1));
    prompt[n] = '\0';
    char file[4096 + 64], spiece[4096 + 64], out[4096 + 64];
    snprintf(file, sizeof file, "%s", path_of("model/llm.safetensors"));
    snprintf(spiece, sizeof spiece, "%s", path_of("model/spiece.model"));
    cJSON_ReplaceItemInObject(llm, "tag_prompt", cJSON_CreateString(prompt));
    cJSON_ReplaceItemInObject(llm, "file", cJSON_CreateString(file));
    cJSON_ReplaceItemInObject(llm, "spiece", cJSON_CreateString(spiece));
    free(prompt);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    snprintf(out, sizeof out, "%s/model.json", dir_out);
    FILE *f = fopen(out, "w");
    int rc = f && text && fputs(text, f) >= 0 ? 0 : -1;
    if (f && fclose(f)) rc = -1;
    free(text);
    return rc;
}

/* The prompt token limit leaves room for LION_MAX_TAG_PROMPT_BYTES of tag prompt: a model
 * with that much loads, one byte more is refused at load. */
static void test_tag_prompt_limit(void) {
    char tmp[] = "/tmp/lion-llm-test-XXXXXX", json[64];
    if (!mkdtemp(tmp)) {
        CHECK_MSG(0, "mkdtemp failed");
        return;
    }
    snprintf(json, sizeof json, "%s/model.json", tmp);
    llm_stage s;
    lion_status st;
    CHECK(write_tag_prompt_model(tmp, LION_MAX_TAG_PROMPT_BYTES) == 0);
    CHECK_MSG(llm_stage_open(&s, tmp, &st) == 0, "a tag prompt of %d bytes: %s", LION_MAX_TAG_PROMPT_BYTES, st.msg);
    llm_stage_close(&s);
    CHECK(write_tag_prompt_model(tmp, LION_MAX_TAG_PROMPT_BYTES + 1) == 0);
    CHECK(llm_stage_open(&s, tmp, &st) == -1);
    CHECK_CONTAINS(st.msg, "llm.tag_prompt is 513 bytes, over the limit of 512");
    unlink(json);
    rmdir(tmp);
}

/* --- streaming, cancellation, sampling, finish reasons ------------------------------------ */

/* One job's flow as the gateway sees it: its PARTIALs added up, and its answer. */
typedef struct streamed {
    char text[16384];
    int32_t ids[1024];
    int n_ids, partials;
    envelope_msg answer;
    int answered;
} streamed;

static void streamed_add(streamed *f, const envelope_msg *m) {
    const Lion__Result *r = m->env->result;
    f->partials++;
    CHECK_MSG(r && r->n_sequences == 1 && r->sequences[0]->text, "%s: a PARTIAL without its sequence",
              m->env->request_id);
    if (!r || r->n_sequences != 1 || !r->sequences[0]->text) return;
    const Lion__Sequence *q = r->sequences[0];
    CHECK_MSG(q->text[0] != '\0', "%s: a PARTIAL with no text", m->env->request_id);
    size_t used = strlen(f->text);
    snprintf(f->text + used, sizeof f->text - used, "%s", q->text);
    for (size_t i = 0; i < q->n_token_ids && f->n_ids < 1024; i++) f->ids[f->n_ids++] = q->token_ids[i];
}

/* Sends one job and follows it to its answer. */
static void run_streamed(fake_gateway *g, const char *id, const job_spec *js, streamed *f) {
    memset(f, 0, sizeof *f);
    g->want_partials = 1;
    send_job(g, id, js);
    envelope_msg m;
    while (!f->answered && fake_gateway_recv(g, &m, 60000) == 0) {
        if (!m.env->request_id || strcmp(m.env->request_id, id) != 0) {
            CHECK_MSG(0, "%s: unexpected message of %s", id, m.env->request_id ? m.env->request_id : "?");
        } else if (m.env->kind == LION__KIND__PARTIAL) {
            streamed_add(f, &m);
        } else {
            f->answer = m;
            f->answered = 1;
            continue;
        }
        envelope_msg_close(&m);
    }
    g->want_partials = 0;
    CHECK_MSG(f->answered, "%s: no answer", id);
}

/* The PARTIALs of a streamed greedy or sampling job add up to its RESULT: the same text, and
 * their ids are the RESULT's generated ids (start id left out) up to the last PARTIAL. A
 * beam search job sends none. Returns the RESULT's first sequence (NULL when none). */
static const Lion__Sequence *check_streamed(const streamed *f, const char *id, int beams) {
    if (!f->answered) return NULL;
    const Lion__Envelope *env = f->answer.env;
    CHECK_MSG(env->kind == LION__KIND__RESULT, "%s: %s", id,
              env->error && env->error->message ? env->error->message : "not a result");
    if (env->kind != LION__KIND__RESULT || !env->result || env->result->n_sequences < 1) return NULL;
    const Lion__Sequence *q = env->result->sequences[0];
    if (beams > 1) {
        CHECK_MSG(f->partials == 0, "%s: beam search sent %d PARTIALs", id, f->partials);
        return q;
    }
    CHECK_MSG(!strcmp(f->text, q->text), "%s: PARTIALs add up to \"%s\", the RESULT says \"%s\"", id, f->text, q->text);
    CHECK_MSG(q->text[0] == '\0' || f->partials >= 1, "%s: no PARTIAL", id);
    CHECK_MSG((size_t)f->n_ids < q->n_token_ids &&
                  !memcmp(f->ids, q->token_ids + 1, (size_t)f->n_ids * sizeof(int32_t)),
              "%s: the PARTIALs' %d ids are not the RESULT's generated ids", id, f->n_ids);
    return q;
}

static int beams_of(const job_spec *js) { return js->gen.has_num_beams ? (int)js->gen.num_beams : 5; }

/* Every case streamed, alone and all at once: the answers are the reference's (check_answer),
 * and the PARTIALs add up to them. */
static void test_streaming(fake_gateway *g, const expected_case *cases, int n) {
    int greedy = 0;
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "stream-%d", i);
        job_spec js = cases[i].spec;
        js.stream = 1;
        streamed f;
        run_streamed(g, id, &js, &f);
        if (!f.answered) continue;
        check_answer(&f.answer, &cases[i], id);
        check_streamed(&f, id, beams_of(&js));
        greedy += beams_of(&js) == 1 && f.partials > 0;
        envelope_msg_close(&f.answer);
    }
    CHECK_MSG(greedy >= 3, "only %d greedy cases streamed", greedy);

    static streamed flows[N_CASES_MAX];
    memset(flows, 0, sizeof flows);
    g->want_partials = 1;
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "sbatch-%d", i);
        job_spec js = cases[i].spec;
        js.stream = 1;
        send_job(g, id, &js);
    }
    for (int answered = 0; answered < n;) {
        envelope_msg m;
        if (fake_gateway_recv(g, &m, 60000)) {
            CHECK_MSG(0, "streamed batch: %d of %d answers", answered, n);
            break;
        }
        const char *rid = m.env->request_id ? m.env->request_id : "?";
        int i = !strncmp(rid, "sbatch-", 7) ? atoi(rid + 7) : -1;
        CHECK_MSG(i >= 0 && i < n && !flows[i].answered, "streamed batch: unexpected %s", rid);
        if (i < 0 || i >= n || flows[i].answered) {
            envelope_msg_close(&m);
        } else if (m.env->kind == LION__KIND__PARTIAL) {
            streamed_add(&flows[i], &m);
            envelope_msg_close(&m);
        } else {
            flows[i].answer = m;
            flows[i].answered = 1;
            answered++;
        }
    }
    g->want_partials = 0;
    for (int i = 0; i < n; i++) {
        if (!flows[i].answered) continue;
        check_answer(&flows[i].answer, &cases[i], flows[i].answer.env->request_id);
        check_streamed(&flows[i], flows[i].answer.env->request_id, beams_of(&cases[i].spec));
        envelope_msg_close(&flows[i].answer);
    }
}

/* A sampled answer's token ids, as a comparable string. */
static void ids_string(const streamed *f, char *out, size_t len) {
    out[0] = '\0';
    if (!f->answered || f->answer.env->kind != LION__KIND__RESULT || !f->answer.env->result ||
        f->answer.env->result->n_sequences < 1)
        return;
    const Lion__Sequence *q = f->answer.env->result->sequences[0];
    for (size_t i = 0; i < q->n_token_ids; i++) {
        size_t used = strlen(out);
        snprintf(out + used, len - used, " %d", q->token_ids[i]);
    }
}

static void sample(fake_gateway *g, const char *id, const job_spec *js, char *ids, size_t len) {
    streamed f;
    run_streamed(g, id, js, &f);
    check_streamed(&f, id, 1);
    ids_string(&f, ids, len);
    if (f.answered) envelope_msg_close(&f.answer);
}

/* do_sample without num_beams samples (one beam, whatever model.json's num_beams); without
 * a seed a request id always gives the same sample (a re-dispatched attempt repeats it),
 * with a seed the seed does, whatever the request id. */
static void test_sampling(fake_gateway *g, const expected_case *cases) {
    job_spec js = cases[0].spec;
    js.has_gen = 1;
    lion__generation_params__init(&js.gen);
    js.gen.has_do_sample = 1, js.gen.do_sample = 1;
    js.gen.has_temperature = 1, js.gen.temperature = 5.0f; /* flat enough for samples to differ */
    js.gen.has_top_p = 1, js.gen.top_p = 1.0f;
    js.stream = 1;
    char first[1024], again[1024], other[1024];
    sample(g, "sample-a", &js, first, sizeof first);
    CHECK_MSG(first[0], "sampling without num_beams was not answered");
    js.attempt = 1; /* the same request dispatched again */
    sample(g, "sample-a", &js, again, sizeof again);
    CHECK_MSG(!strcmp(first, again), "a second attempt sampled%s, the first%s", again, first);
    js.attempt = 0;
    int differ = 0;
    for (int k = 0; k < 4; k++) {
        char id[32];
        snprintf(id, sizeof id, "sample-b%d", k);
        sample(g, id, &js, other, sizeof other);
        differ += strcmp(first, other) != 0;
    }
    CHECK_MSG(differ >= 3, "other request ids sampled the same %d times of 4", 4 - differ);
    js.gen.has_seed = 1, js.gen.seed = 1234;
    sample(g, "seeded-1", &js, first, sizeof first);
    sample(g, "seeded-2", &js, again, sizeof again);
    CHECK_MSG(first[0] && !strcmp(first, again), "seed 1234 sampled%s and%s", first, again);
    js.gen.seed = 1235;
    sample(g, "seeded-3", &js, other, sizeof other);
    CHECK_MSG(strcmp(first, other) != 0, "seeds 1234 and 1235 sampled the same");
    /* explicit beams with sampling are still refused */
    js.gen.has_num_beams = 1, js.gen.num_beams = 5;
    js.stream = 0;
    check_error(g, "sample-5-beams", &js, "task.generation.do_sample: sampling with num_beams 5 is not supported");
}

/* max_new_tokens ends an answer: LENGTH with exactly that many tokens, the first ones of the
 * longer answer; an answer that ends with eos is STOP (check_answer checks every case). */
static void test_finish_reasons(fake_gateway *g, const expected_case *cases, int n) {
    int stops = 0, tested = 0;
    for (int i = 0; i < n; i++) stops += cases[i].n_ids > 1 && cases[i].ids[cases[i].n_ids - 1] == 1;
    CHECK_MSG(stops >= 1, "no reference answer ends with eos");
    for (int i = 0; i < n && !tested; i++) {
        if (beams_of(&cases[i].spec) != 1 || cases[i].n_ids <= 4) continue;
        tested = 1;
        job_spec js = cases[i].spec;
        js.gen.has_max_new_tokens = 1, js.gen.max_new_tokens = 2;
        envelope_msg m;
        send_job(g, "length-2", &js);
        if (fake_gateway_recv(g, &m, 60000)) {
            CHECK_MSG(0, "length-2: no answer");
            break;
        }
        CHECK_EQ_INT(m.env->kind, LION__KIND__RESULT);
        const Lion__Result *r = m.env->result;
        if (m.env->kind == LION__KIND__RESULT && r && r->n_sequences == 1) {
            const Lion__Sequence *q = r->sequences[0];
            CHECK(q->has_finish_reason && q->finish_reason == LION__FINISH_REASON__LENGTH);
            CHECK(q->has_generated_tokens && q->generated_tokens == 2);
            CHECK_EQ_INT(q->n_token_ids, 3);
            CHECK(q->n_token_ids == 3 && !memcmp(q->token_ids, cases[i].ids, 3 * sizeof(int32_t)));
        }
        envelope_msg_close(&m);
    }
    CHECK_MSG(tested, "no greedy case longer than 3 tokens");
}

/* Continuous batching with a cancel: two streamed greedy jobs forced to 512 tokens; the
 * second is sent once the first streams (it joins the running batch), and the first is
 * cancelled once the second streams too (both decoding in one batch): the first is answered
 * ERROR cancelled after a few steps, and the second, which decoded beside it and then on
 * its own, answers what it answers alone. */
static void test_cancel(fake_gateway *g, const expected_case *cases) {
    job_spec a = cases[1].spec, b = cases[3].spec; /* both region-level: one group */
    job_spec *both[2] = {&a, &b};
    /* many visual tokens make each step slow enough (cross-attention) for the cancel to come
     * early in the 512 steps, even on a busy machine */
    enum { ROWS = 2048 };
    static float visual[2][ROWS * 64];
    for (int k = 0; k < 2; k++) {
        job_spec *js = both[k];
        if (js->cols > 64) break;
        for (int r = 0; r < ROWS; r++)
            memcpy(visual[k] + (size_t)r * js->cols, js->visual + (size_t)(r % js->rows) * js->cols,
                   (size_t)js->cols * sizeof(float));
        js->visual = visual[k], js->rows = ROWS;
        js->has_gen = 1;
        lion__generation_params__init(&js->gen);
        js->gen.has_num_beams = 1, js->gen.num_beams = 1;
        js->gen.has_max_new_tokens = 1, js->gen.max_new_tokens = LION_MAX_NEW_TOKENS;
        js->gen.has_min_length = 1, js->gen.min_length = LION_MAX_MIN_LENGTH; /* eos never */
        js->stream = 1;
    }
    streamed alone;
    run_streamed(g, "cancel-b-alone", &b, &alone);
    const Lion__Sequence *want = check_streamed(&alone, "cancel-b-alone", 1);
    CHECK(want && want->generated_tokens == LION_MAX_NEW_TOKENS && want->finish_reason == LION__FINISH_REASON__LENGTH);
    /* a PARTIAL per step that adds text, not the answer at its end */
    CHECK_MSG(alone.partials > LION_MAX_NEW_TOKENS / 4, "512 tokens streamed in %d PARTIALs", alone.partials);

    g->want_partials = 1;
    send_job(g, "cancel-a", &a);
    streamed fa, fb;
    memset(&fa, 0, sizeof fa);
    memset(&fb, 0, sizeof fb);
    int cancelled = 0, b_sent = 0, b_streamed_before_a_answer = 0;
    while (!(fa.answered && fb.answered)) {
        envelope_msg m;
        if (fake_gateway_recv(g, &m, 60000)) {
            CHECK_MSG(0, "cancel: answers missing (a %d, b %d)", fa.answered, fb.answered);
            break;
        }
        const char *id = m.env->request_id ? m.env->request_id : "";
        streamed *f = !strcmp(id, "cancel-a") ? &fa : !strcmp(id, "cancel-b") ? &fb : NULL;
        if (f && m.env->kind == LION__KIND__PARTIAL) {
            streamed_add(f, &m);
            if (f == &fa && !b_sent) { /* a decodes: b joins it */
                send_job(g, "cancel-b", &b);
                b_sent = 1;
            }
            if (f == &fb && !fa.answered) b_streamed_before_a_answer = 1;
            if (f == &fb && !cancelled) cancelled = fake_gateway_cancel(g, "cancel-a", LION__STAGE__LLM, 0) == 0;
        } else if (f) {
            f->answer = m;
            f->answered = 1;
            continue;
        } else {
            CHECK_MSG(0, "cancel: unexpected message of %s", id);
        }
        envelope_msg_close(&m);
    }
    g->want_partials = 0;
    CHECK(cancelled);
    if (fa.answered) {
        CHECK_EQ_INT(fa.answer.env->kind, LION__KIND__ERROR);
        CHECK(fa.answer.env->error && fa.answer.env->error->code == LION_ECANCELED);
        if (fa.answer.env->error) CHECK_CONTAINS(fa.answer.env->error->message, "cancelled by the gateway");
        fprintf(stderr, "the cancelled job streamed %d tokens of its %d\n", fa.n_ids, LION_MAX_NEW_TOKENS);
        /* stopped after a few of its 512 steps */
        CHECK_MSG(fa.n_ids >= 1 && fa.n_ids < LION_MAX_NEW_TOKENS / 2, "the cancelled job streamed %d tokens", fa.n_ids);
        envelope_msg_close(&fa.answer);
    }
    CHECK_MSG(b_streamed_before_a_answer, "the second job did not join the first one's running batch");
    const Lion__Sequence *got = check_streamed(&fb, "cancel-b", 1);
    if (got && want) {
        CHECK_MSG(got->n_token_ids == want->n_token_ids &&
                      !memcmp(got->token_ids, want->token_ids, got->n_token_ids * sizeof(int32_t)),
                  "the job batched with a cancelled one answered differently from alone");
        CHECK(!strcmp(got->text, want->text));
        CHECK(got->finish_reason == LION__FINISH_REASON__LENGTH && got->generated_tokens == LION_MAX_NEW_TOKENS);
    }
    if (fb.answered) envelope_msg_close(&fb.answer);
    if (alone.answered) envelope_msg_close(&alone.answer);
}

/* The model whose lm_head is wider than its tokenizer answers as lion_ref (ids past the
 * tokenizer decode to nothing, and count as generated tokens), streamed too. */
static void test_wide_model(const char *bin, const expected_case *cases, int n) {
    char model[4096 + 64];
    snprintf(model, sizeof model, "%s", path_of("wide"));
    const char *argv[] = {bin, "--model", model, "--threads", "1", "--replica", "llm-wide", NULL};
    size_t len;
    char *json = (char *)testing_read_file(path_of("wide_cases.json"), &len);
    cJSON *root = json ? cJSON_ParseWithLength(json, len) : NULL;
    free(json);
    CHECK_MSG(cJSON_GetArraySize(root) >= 4, "wide_cases.json");
    fake_gateway g;
    if (fake_gateway_start(&g, argv, 30000) != 0) {
        CHECK_MSG(0, "llm service did not start on the wide model");
        fake_gateway_stop(&g);
        cJSON_Delete(root);
        return;
    }
    spm_tokenizer *tok = NULL;
    lion_status st;
    CHECK_MSG(spm_load(path_of("wide/spiece.model"), &tok, &st) == 0, "%s", st.msg);
    const int vocab = tok ? (int)t5_vocab_size(tok) : 0;
    spm_free(tok);
    int past = 0, k = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, root) {
        int i = cJSON_GetObjectItem(c, "case")->valueint;
        if (i < 0 || i >= n) continue;
        expected_case e = cases[i];
        e.n_ids = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, cJSON_GetObjectItem(c, "ids")) {
            if (e.n_ids < 64) e.ids[e.n_ids++] = t->valueint;
            past += t->valueint >= vocab;
        }
        snprintf(e.text, sizeof e.text, "%s", cJSON_GetObjectItem(c, "text")->valuestring);
        e.prompt_tokens = cJSON_GetObjectItem(c, "prompt_tokens")->valueint;
        lion__generation_params__init(&e.spec.gen);
        e.spec.has_gen = 1;
        const cJSON *nb = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "gen"), "num_beams");
        if (nb) e.spec.gen.has_num_beams = 1, e.spec.gen.num_beams = (uint32_t)nb->valueint;
        e.n_return = 1;
        e.spec.stream = 1;
        char id[32];
        snprintf(id, sizeof id, "wide-%d", k++);
        streamed f;
        run_streamed(&g, id, &e.spec, &f);
        if (!f.answered) continue;
        check_answer(&f.answer, &e, id);
        check_streamed(&f, id, beams_of(&e.spec));
        envelope_msg_close(&f.answer);
    }
    CHECK_MSG(past >= 3, "the wide model's answers hold only %d ids past the tokenizer", past);
    cJSON_Delete(root);
    CHECK_EQ_INT(fake_gateway_stop(&g), 0);
}

int main(void) {
    snprintf(dir, sizeof dir, "%s", testing_fixture("llm_service"));
    const char *bin_dir = getenv("LION_BIN_DIR");
    char bin[4096], model[4096 + 64];
    snprintf(bin, sizeof bin, "%s/lion-llm", bin_dir ? bin_dir : "build/services");
    snprintf(model, sizeof model, "%s", path_of("model"));
    const char *argv[] = {bin, "--model", model, "--threads", "1", "--replica", "llm-test", "--capacity", "32",
                          "--max-batch", "16", NULL};
    lion_status st;
    safetensors_file *vis;
    if (safetensors_open(&vis, path_of("visual.safetensors"), &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return testing_finish();
    }
    static expected_case cases[N_CASES_MAX];
    float *visual[N_CASES_MAX];
    int n = load_cases(cases, vis, visual);
    safetensors_close(vis);
    CHECK_MSG(n >= 16, "%d cases in cases.json", n);
    fake_gateway g;
    if (fake_gateway_start(&g, argv, 30000) != 0) {
        CHECK_MSG(0, "llm service did not start");
        fake_gateway_stop(&g);
        return testing_finish();
    }

    /* each job alone */
    envelope_msg m;
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "alone-%d", i);
        send_job(&g, id, &cases[i].spec);
        if (fake_gateway_recv(&g, &m, 60000)) {
            CHECK_MSG(0, "%s: no answer", id);
            continue;
        }
        CHECK(!strcmp(m.env->request_id, id));
        if (i == 0)
            CHECK_MSG(m.env->n_trace >= 1 && !strcmp(m.env->trace[m.env->n_trace - 1]->service, "llm"),
                      "the worker appends its trace hop");
        check_answer(&m, &cases[i], id);
        envelope_msg_close(&m);
    }

    /* all at once: batched with mixed task types and parameters, each answer as alone */
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "batch-%d", i);
        send_job(&g, id, &cases[i].spec);
    }
    int answered[N_CASES_MAX] = {0};
    for (int k = 0; k < n; k++) {
        if (fake_gateway_recv(&g, &m, 60000)) {
            CHECK_MSG(0, "batch: only %d of %d answers", k, n);
            break;
        }
        int i = m.env->request_id ? atoi(m.env->request_id + 6) : -1;
        CHECK_MSG(i >= 0 && i < n && !answered[i], "batch: unexpected answer %s", m.env->request_id);
        if (i >= 0 && i < n) {
            answered[i] = 1;
            check_answer(&m, &cases[i], m.env->request_id);
        }
        envelope_msg_close(&m);
    }

    /* jobs that break the contract */
    job_spec bad = cases[0].spec;
    bad.tensor_name = "";
    check_error(&g, "no-visual", &bad, "visual_tokens");
    bad = cases[0].spec;
    bad.tensor_name = "visual";
    check_error(&g, "wrong-name", &bad, "visual_tokens");
    bad = cases[0].spec;
    bad.cols = bad.cols - 1;
    check_error(&g, "wrong-width", &bad, "visual_tokens: shape must be [n, 16]");
    bad = cases[0].spec;
    bad.cols = 0;
    bad.rows = 16;
    check_error(&g, "one-dim", &bad, "visual_tokens: shape must be [n, 16]");
    bad = cases[0].spec;
    bad.dt = DTYPE_I32;
    check_error(&g, "int-visual", &bad, "visual_tokens: dtype I32");
    bad = cases[0].spec;
    bad.instruction = NULL;
    check_error(&g, "no-instruction", &bad, "task.instruction: missing");
    static char long_text[8000];
    for (int i = 0; i < 700; i++) memcpy(long_text + 6 * i, "dog a ", 6);
    bad.instruction = long_text;
    check_error(&g, "long-instruction", &bad, "task.instruction: 4200 bytes, over the limit of 4096");
    test_prompt_limits(&g, &cases[0].spec);
    struct {
        const char *id, *needle;
        Lion__GenerationParams gen;
    } bad_gens[] = {
        {"beams-0", "task.generation.num_beams", {.has_num_beams = 1, .num_beams = 0}},
        {"beams-17", "task.generation.num_beams", {.has_num_beams = 1, .num_beams = 17}},
        {"tokens-0", "task.generation.max_new_tokens", {.has_max_new_tokens = 1, .max_new_tokens = 0}},
        {"tokens-big", "task.generation.max_new_tokens", {.has_max_new_tokens = 1, .max_new_tokens = 4000000000u}},
        {"top-p-0", "task.generation.top_p: 0 is not in (0, 1]", {.has_top_p = 1, .top_p = 0}},
        {"top-p-big", "task.generation.top_p: 1.5 is not in (0, 1]", {.has_top_p = 1, .top_p = 1.5f}},
        {"tokens-513", "task.generation.max_new_tokens: 513 is not in [1, 512]",
         {.has_max_new_tokens = 1, .max_new_tokens = 513}},
        {"temp-neg", "task.generation.temperature: -1", {.has_temperature = 1, .temperature = -1}},
        {"temp-big", "task.generation.temperature: 100.5 is not in [0, 100]",
         {.has_temperature = 1, .temperature = 100.5f}},
        {"rep-0", "task.generation.repetition_penalty", {.has_repetition_penalty = 1, .repetition_penalty = 0}},
        {"rep-low", "task.generation.repetition_penalty: 0.0099 is not in [0.01, 100]",
         {.has_repetition_penalty = 1, .repetition_penalty = 0.0099f}},
        {"rep-big", "task.generation.repetition_penalty: 100.5 is not in [0.01, 100]",
         {.has_repetition_penalty = 1, .repetition_penalty = 100.5f}},
        {"lp-big", "task.generation.length_penalty: 100.5 is not in [-100, 100]",
         {.has_length_penalty = 1, .length_penalty = 100.5f}},
        {"lp-low", "task.generation.length_penalty: -100.5 is not in [-100, 100]",
         {.has_length_penalty = 1, .length_penalty = -100.5f}},
        {"min-length-big", "task.generation.min_length: 514 is over the limit of 513",
         {.has_min_length = 1, .min_length = 514}},
        {"nrs-6", "task.generation.num_return_sequences: 6", {.has_num_return_sequences = 1, .num_return_sequences = 6}},
        {"nrs-17", "task.generation.num_return_sequences: 17 is over the limit of 16",
         {.has_num_return_sequences = 1, .num_return_sequences = 17}},
        {"sample-beams", "task.generation.do_sample: sampling with num_beams 3 is not supported",
         {.has_do_sample = 1, .do_sample = 1, .has_num_beams = 1, .num_beams = 3}},
    };
    for (size_t k = 0; k < sizeof bad_gens / sizeof *bad_gens; k++) {
        bad = cases[0].spec;
        bad.has_gen = 1;
        lion__generation_params__init(&bad.gen);
        Lion__GenerationParams base = bad.gen;
        bad.gen = bad_gens[k].gen;
        bad.gen.base = base.base;
        check_error(&g, bad_gens[k].id, &bad, bad_gens[k].needle);
    }

    test_param_edges(&g, &cases[0].spec);
    test_streaming(&g, cases, n);
    test_sampling(&g, cases);
    test_finish_reasons(&g, cases, n);
    test_cancel(&g, cases);
    CHECK_EQ_INT(g.partials > 0, 1);

    /* a bad job batched with good ones fails alone */
    bad = cases[1].spec;
    bad.gen.has_num_beams = 1;
    bad.gen.num_beams = 0;
    bad.has_gen = 1;
    send_job(&g, "mixed-0", &cases[1].spec);
    send_job(&g, "mixed-1", &bad);
    send_job(&g, "mixed-2", &cases[2].spec);
    for (int k = 0; k < 3; k++) {
        if (fake_gateway_recv(&g, &m, 60000)) {
            CHECK_MSG(0, "mixed: no answer");
            break;
        }
        const char *id = m.env->request_id ? m.env->request_id : "";
        if (!strcmp(id, "mixed-1")) {
            CHECK(m.env->kind == LION__KIND__ERROR);
            if (m.env->error) CHECK_CONTAINS(m.env->error->message, "num_beams");
        } else {
            check_answer(&m, &cases[!strcmp(id, "mixed-0") ? 1 : 2], id);
        }
        envelope_msg_close(&m);
    }

    /* a malformed frame at the socket, then a valid job still works */
    const void *frames[] = {"\xff\xff\xff garbage"};
    size_t lens[] = {sizeof "\xff\xff\xff garbage" - 1};
    CHECK(fake_gateway_send_raw(&g, frames, lens, 1) == 0);
    send_job(&g, "after", &cases[3].spec);
    CHECK(fake_gateway_recv(&g, &m, 60000) == 0);
    CHECK(m.env && !strcmp(m.env->request_id, "after"));
    if (m.env) check_answer(&m, &cases[3], "after");
    envelope_msg_close(&m);

    CHECK_EQ_INT(fake_gateway_stop(&g), 0);
    test_wide_model(bin, cases, n);
    test_tag_prompt_limit();
    free_cases(cases, visual, n);
    return testing_finish();
}
