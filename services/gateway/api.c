/* api.c - the HTTP routes of docs/api.md: JSON requests into stage tasks, finished
 * requests into JSON answers (native and OpenAI-shaped), and every error as
 * {"error": {"code": "<lion_code_name>", "message": "..."}} with a matching status. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "gateway_impl.h"
#include "image.h"
#include "log.h"
#include "openai_chat.h"

void api_respond_json(http_conn *c, int status, cJSON *root, int retry_after_s) {
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) {
        static const char oom[] = "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"no memory for the answer\"}}";
        http_conn_respond(c, 503, "application/json", oom, sizeof oom - 1, 1);
        return;
    }
    http_conn_respond(c, status, "application/json", text, strlen(text), retry_after_s);
    free(text);
}

/* The error body, in a shape both our clients and OpenAI's read: {"error": {"code",
 * "message", "type", "param"}}. code_name is a lion_code name, or OpenAI's own code where
 * clients look for it ("model_not_found"). */
cJSON *api_error_json(int http_status, const char *code_name, const char *message, const char *param) {
    cJSON *root = cJSON_CreateObject();
    cJSON *err = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(err, "code", code_name);
    cJSON_AddStringToObject(err, "message", message);
    cJSON_AddStringToObject(err, "type", http_status < 500 ? "invalid_request_error" : "server_error");
    if (param) cJSON_AddStringToObject(err, "param", param);
    else cJSON_AddNullToObject(err, "param");
    return root;
}

static void respond_error_named(gateway *gw, http_conn *c, int http_status, int code, const char *code_name,
                                const char *message, const char *param) {
    metrics_count_error(&gw->metrics, code);
    int retry = http_status == 429 || http_status == 503 ? gw->cfg.retry_after_s : 0;
    api_respond_json(c, http_status, api_error_json(http_status, code_name, message, param), retry);
}

void api_respond_error(gateway *gw, http_conn *c, int http_status, int code, const char *message) {
    respond_error_named(gw, c, http_status, code, lion_code_name(code), message, NULL);
}

static void respond_status(gateway *gw, http_conn *c, const lion_status *st) {
    api_respond_error(gw, c, http_status_of(st->code), st->code, st->msg);
}

/* --- request parsing ------------------------------------------------------------------------ */

/* An optional number field within [lo, hi]; integer when is_int. 1 when present. */
static int get_number(const cJSON *o, const char *key, double lo, double hi, int is_int, double *out,
                      lion_status *st) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo || v->valuedouble > hi ||
        (is_int && v->valuedouble != floor(v->valuedouble)))
        return lion_fail(st, LION_EINVAL, "'%s' must be %s from %g to %g", key, is_int ? "an integer" : "a number", lo,
                         hi);
    *out = v->valuedouble;
    return 1;
}

/* The llm's rules that tie two fields together, checked where the request sets both (the
 * model's defaults fill the rest at the llm, which refuses what breaks them). */
static int check_generation(const Lion__GenerationParams *g, int openai, lion_status *st) {
    const char *n_name = openai ? "n" : "num_return_sequences";
    if (g->has_do_sample && g->do_sample && g->has_num_beams && g->num_beams > 1)
        return lion_fail(st, LION_EINVAL, "sampling with num_beams %u is not supported (num_beams must be 1)",
                         g->num_beams);
    if (g->has_do_sample && g->do_sample && g->has_temperature && g->temperature == 0)
        return lion_fail(st, LION_EINVAL, "'temperature' must be above 0 when sampling");
    if (g->has_num_return_sequences && g->num_return_sequences > 1) {
        if (g->has_do_sample && g->do_sample)
            return lion_fail(st, LION_EINVAL, "'%s' above 1 needs beam search (sampling returns one sequence)", n_name);
        if (g->has_num_beams && g->num_return_sequences > g->num_beams)
            return lion_fail(st, LION_EINVAL, "'%s' %u is more than num_beams %u", n_name, g->num_return_sequences,
                             g->num_beams);
    }
    return 0;
}

/* Generation parameters under the names given (OpenAI's or ours); NULL when none was set. */
static int parse_generation(const cJSON *o, int openai, Lion__GenerationParams **out, lion_status *st) {
    Lion__GenerationParams *g = malloc(sizeof *g);
    if (!g) return lion_fail(st, LION_ENOMEM, "out of memory");
    lion__generation_params__init(g);
    int any = 0, rc;
    double v;
#define NUM(key, lo, hi, is_int, field, type)                                                                         \
    if ((rc = get_number(o, key, lo, hi, is_int, &v, st)) < 0) goto fail;                                              \
    if (rc) {                                                                                                          \
        g->has_##field = 1;                                                                                            \
        g->field = (type)v;                                                                                            \
        any = 1;                                                                                                       \
    }
    NUM("num_beams", 1, LION_MAX_BEAMS, 1, num_beams, uint32_t)
    NUM(openai ? "max_tokens" : "max_new_tokens", 1, LION_MAX_NEW_TOKENS, 1, max_new_tokens, uint32_t)
    NUM("min_length", 0, LION_MAX_MIN_LENGTH, 1, min_length, uint32_t)
    NUM("repetition_penalty", LION_MIN_REPETITION_PENALTY, LION_MAX_REPETITION_PENALTY, 0, repetition_penalty, float)
    NUM("length_penalty", -LION_MAX_ABS_LENGTH_PENALTY, LION_MAX_ABS_LENGTH_PENALTY, 0, length_penalty, float)
    NUM("top_p", 0.0001, 1, 0, top_p, float)
    NUM("temperature", 0, LION_MAX_TEMPERATURE, 0, temperature, float)
    NUM("seed", 0, 9007199254740991.0, 1, seed, uint64_t)
    NUM(openai ? "n" : "num_return_sequences", 1, LION_MAX_RETURN_SEQUENCES, 1, num_return_sequences, uint32_t)
    /* OpenAI's newer name for max_tokens; it wins when both are given */
    if (openai) {
        NUM("max_completion_tokens", 1, LION_MAX_NEW_TOKENS, 1, max_new_tokens, uint32_t)
    }
#undef NUM
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(o, "do_sample");
    if (ds && !cJSON_IsNull(ds)) {
        if (!cJSON_IsBool(ds)) {
            lion_fail(st, LION_EINVAL, "'do_sample' must be true or false");
            goto fail;
        }
        g->has_do_sample = 1;
        g->do_sample = cJSON_IsTrue(ds);
        any = 1;
    }
    /* OpenAI's temperature 0 means greedy; above 0 it means sampling */
    if (openai && g->has_temperature && !g->has_do_sample) {
        g->has_do_sample = 1;
        g->do_sample = g->temperature > 0;
        if (!g->do_sample) g->has_temperature = 0;
    }
    if (check_generation(g, openai, st) != 0) goto fail;
    if (!any) {
        free(g);
        g = NULL;
    }
    *out = g;
    return 0;
fail:
    free(g);
    return -1;
}

static int parse_task_type(const char *name, Lion__TaskType *out, lion_status *st) {
    if (!strcmp(name, "image_level")) *out = LION__TASK_TYPE__IMAGE_LEVEL;
    else if (!strcmp(name, "region_level")) *out = LION__TASK_TYPE__REGION_LEVEL;
    else return lion_fail(st, LION_EINVAL, "task must be \"image_level\" or \"region_level\", not \"%.64s\"", name);
    return 0;
}

static int parse_tags(gateway *gw, const cJSON *tags, Lion__Task *task, lion_status *st) {
    if (!tags || cJSON_IsNull(tags)) return 0;
    if (!cJSON_IsArray(tags)) return lion_fail(st, LION_EINVAL, "'tags' must be an array of strings");
    int n = cJSON_GetArraySize(tags);
    if (n > gw->cfg.max_tags) return lion_fail(st, LION_ETOOBIG, "%d tags, at most %d", n, gw->cfg.max_tags);
    if (n == 0) return 0;
    task->tags = calloc((size_t)n, sizeof *task->tags);
    if (!task->tags) return lion_fail(st, LION_ENOMEM, "out of memory");
    int i = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tags) {
        if (!cJSON_IsString(t) || !t->valuestring[0] || strlen(t->valuestring) > LION_MAX_TAG_BYTES)
            return lion_fail(st, LION_EINVAL, "tag %d must be a non-empty string of at most %d bytes", i, LION_MAX_TAG_BYTES);
        task->tags[i] = strdup(t->valuestring);
        if (!task->tags[i]) return lion_fail(st, LION_ENOMEM, "out of memory");
        task->n_tags = (size_t)++i;
    }
    return 0;
}

static int set_instruction(gateway *gw, Lion__Task *task, const char *text, lion_status *st) {
    size_t len = strlen(text);
    if (len == 0) return lion_fail(st, LION_EINVAL, "the instruction is empty");
    if (len > gw->cfg.max_prompt_bytes)
        return lion_fail(st, LION_ETOOBIG, "the instruction is %zu bytes, the limit is %zu", len,
                         gw->cfg.max_prompt_bytes);
    task->instruction = strdup(text);
    return task->instruction ? 0 : lion_fail(st, LION_ENOMEM, "out of memory");
}

/* The request's image: an uploaded form part (raw bytes) or the JSON field "image" (base64
 * or a data URI), checked by format (magic bytes) and size; the stages decode it. */
static int take_image(gateway *gw, const cJSON *root, const multipart_part *file, unsigned char **image, size_t *len,
                      lion_status *st) {
    *image = NULL;
    if (file) {
        if (file->len > gw->cfg.max_image_bytes)
            return lion_fail(st, LION_ETOOBIG, "image: image of %zu bytes exceeds the limit of %zu bytes", file->len,
                             gw->cfg.max_image_bytes);
        *image = malloc(file->len ? file->len : 1);
        if (!*image) return lion_fail(st, LION_ENOMEM, "image: out of memory");
        memcpy(*image, file->data, file->len);
        *len = file->len;
    } else {
        const cJSON *img = cJSON_GetObjectItemCaseSensitive(root, "image");
        if (!cJSON_IsString(img)) return lion_fail(st, LION_EINVAL, "missing 'image' (a base64 string or data URI)");
        if (base64_decode_payload(img->valuestring, strlen(img->valuestring), gw->cfg.max_image_bytes, image, len,
                                  st) != 0)
            return lion_fail_prefix(st, "image: ");
    }
    if (image_sniff(*image, *len) == IMAGE_FORMAT_UNKNOWN) {
        free(*image);
        *image = NULL;
        return lion_fail(st, LION_EFORMAT, "image: %zu bytes that are neither JPEG nor PNG", *len);
    }
    return 0;
}

static Lion__Task *task_new(lion_status *st) {
    Lion__Task *task = malloc(sizeof *task);
    if (!task) {
        lion_fail(st, LION_ENOMEM, "out of memory");
        return NULL;
    }
    lion__task__init(task);
    return task;
}


/* The model a request names in "model" (absent or null: the default model, models[0]):
 * *model its index, *region 1 when it was named NAME-region. A model this gateway does not
 * serve is answered 404 model_not_found in OpenAI's shape (param "model"), and one that is
 * no string 400: then 1 (answered here). */
static int request_model(gateway *gw, http_conn *c, const cJSON *root, int *model, int *region) {
    *model = 0;
    *region = 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsString(v)) {
        respond_error_named(gw, c, 400, LION_EINVAL, lion_code_name(LION_EINVAL), "'model' must be a string", "model");
        return 1;
    }
    *model = models_find(&gw->cfg, v->valuestring, region);
    if (*model >= 0) return 0;
    char names[1200], msg[1500];
    models_list(&gw->cfg, names, sizeof names);
    snprintf(msg, sizeof msg, "The model '%.200s' does not exist: this gateway serves %s", v->valuestring, names);
    respond_error_named(gw, c, 404, LION_ENOTFOUND, "model_not_found", msg, "model");
    return 1;
}

/* User tags go into LION's prompt and skip its tagger; a model whose pipeline has no tagger
 * (Pink) has no use for them, and a field that would change nothing is refused, not ignored. */
static int check_tags_taken(gateway *gw, int model, const Lion__Task *task, const char *field, lion_status *st) {
    if (task->n_tags == 0 || model_has_stage(&gw->cfg, model, LION__STAGE__TAGGER)) return 0;
    return lion_fail(st, LION_EINVAL, "'%s': model %s (%s) takes no tags (its pipeline has no tagger)", field,
                     gw->cfg.models[model].name, family_pipeline_of(gw->cfg.models[model].family)->name);
}

/* Starts the request for model (an index into cfg.models); answers the connection at once
 * when it cannot start. A streamed request asks the llm for PARTIALs and answers in
 * server-sent events. */
static void start(gateway *gw, http_conn *c, request_kind kind, int model, unsigned char *image, size_t image_len,
                  Lion__Task *task, int deadline_ms, int stream, int include_usage) {
    lion_status st;
    if (stream && task) {
        task->has_stream = 1;
        task->stream = 1;
    }
    request *r = request_new(gw, kind, image, image_len, task, deadline_ms, answer_done, &st);
    if (!r) {
        respond_status(gw, c, &st);
        return;
    }
    r->model = model;
    if (stream) r->on_text = answer_stream_text;
    r->include_usage = include_usage;
    r->created_s = clock_unix_us() / 1000000;
    int status;
    c->req = r;
    r->conn = c;
    if (request_start(r, &status, &st) != 0) {
        c->req = NULL;
        api_respond_error(gw, c, status, st.code, st.msg);
    }
}

static int deadline_of(const cJSON *root, lion_status *st) {
    double v = 0;
    if (get_number(root, "deadline_ms", 1, 86400000, 1, &v, st) < 0) return -1;
    return (int)v;
}

/* "stream" (true: server-sent events) and, for OpenAI, stream_options.include_usage. */
static int read_stream_flags(const cJSON *root, int openai, int *stream, int *include_usage, lion_status *st) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "stream");
    if (v && !cJSON_IsNull(v) && !cJSON_IsBool(v)) return lion_fail(st, LION_EINVAL, "'stream' must be true or false");
    *stream = cJSON_IsTrue(v);
    *include_usage = 0;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (!so || cJSON_IsNull(so)) return 0;
    if (!openai || !*stream) return lion_fail(st, LION_EINVAL, "'stream_options' is only allowed with 'stream': true");
    const cJSON *iu = cJSON_GetObjectItemCaseSensitive(so, "include_usage");
    if (iu && !cJSON_IsNull(iu) && !cJSON_IsBool(iu))
        return lion_fail(st, LION_EINVAL, "'stream_options.include_usage' must be true or false");
    *include_usage = cJSON_IsTrue(iu);
    return 0;
}

static void handle_generate(gateway *gw, http_conn *c, cJSON *root, const multipart_part *file) {
    lion_status st;
    unsigned char *image = NULL;
    size_t image_len = 0;
    Lion__Task *task = NULL;
    int deadline = 0, model, region;
    if (request_model(gw, c, root, &model, &region)) return;
    if (!(task = task_new(&st))) goto fail;
    const cJSON *ins = cJSON_GetObjectItemCaseSensitive(root, "instruction");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "task");
    if (!file && !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(root, "image"))) {
        lion_fail(&st, LION_EINVAL, "missing 'image' (a base64 string or data URI)");
        goto fail;
    }
    if (!cJSON_IsString(ins)) {
        lion_fail(&st, LION_EINVAL, "missing 'instruction' (a string)");
        goto fail;
    }
    if (set_instruction(gw, task, ins->valuestring, &st)) goto fail;
    task->has_task_type = 1;
    /* "task" when given, else the model name's -region suffix, as for chat */
    task->task_type = region ? LION__TASK_TYPE__REGION_LEVEL : LION__TASK_TYPE__IMAGE_LEVEL;
    if (type && !cJSON_IsString(type)) {
        lion_fail(&st, LION_EINVAL, "'task' must be a string");
        goto fail;
    }
    if (type && parse_task_type(type->valuestring, &task->task_type, &st)) goto fail;
    if (parse_tags(gw, cJSON_GetObjectItemCaseSensitive(root, "tags"), task, &st)) goto fail;
    if (check_tags_taken(gw, model, task, "tags", &st)) goto fail;
    if (parse_generation(root, 0, &task->generation, &st)) goto fail;
    if ((deadline = deadline_of(root, &st)) < 0) goto fail;
    int stream = 0, include_usage = 0;
    if (read_stream_flags(root, 0, &stream, &include_usage, &st)) goto fail;
    if (take_image(gw, root, file, &image, &image_len, &st)) goto fail;
    start(gw, c, REQUEST_GENERATE, model, image, image_len, task, deadline, stream, 0);
    return;
fail:
    if (task) lion__task__free_unpacked(task, NULL);
    respond_status(gw, c, &st);
}

static void handle_tags(gateway *gw, http_conn *c, cJSON *root, const multipart_part *file) {
    lion_status st;
    unsigned char *image = NULL;
    size_t image_len = 0;
    Lion__Task *task = NULL;
    double k = 0;
    int deadline = 0, rc, model, region;
    if (request_model(gw, c, root, &model, &region)) return;
    if (!(task = task_new(&st))) goto fail;
    if (!model_has_stage(&gw->cfg, model, LION__STAGE__TAGGER)) {
        lion_fail(&st, LION_EINVAL, "model %s (%s) has no tagger: /v1/tags serves lion models", gw->cfg.models[model].name,
                  family_pipeline_of(gw->cfg.models[model].family)->name);
        goto fail;
    }
    if (!file && !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(root, "image"))) {
        lion_fail(&st, LION_EINVAL, "missing 'image' (a base64 string or data URI)");
        goto fail;
    }
    if ((rc = get_number(root, "top_k", 0, LION_MAX_TOP_TAGS, 1, &k, &st)) < 0) goto fail;
    if (rc && k > 0) {
        task->has_debug_tags_top_k = 1;
        task->debug_tags_top_k = (uint32_t)k;
    }
    if ((deadline = deadline_of(root, &st)) < 0) goto fail;
    if (take_image(gw, root, file, &image, &image_len, &st)) goto fail;
    start(gw, c, REQUEST_TAGS, model, image, image_len, task, deadline, 0, 0);
    return;
fail:
    if (task) lion__task__free_unpacked(task, NULL);
    respond_status(gw, c, &st);
}

/* The task type: "lion_task" when given, else region-level for a served model named with
 * "-region" (region), else image-level. */
static int chat_task_type(const cJSON *root, int region, Lion__Task *task, lion_status *st) {
    task->has_task_type = 1;
    task->task_type = region ? LION__TASK_TYPE__REGION_LEVEL : LION__TASK_TYPE__IMAGE_LEVEL;
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(root, "lion_task");
    if (!lt) return 0;
    if (!cJSON_IsString(lt)) return lion_fail(st, LION_EINVAL, "'lion_task' must be a string");
    return parse_task_type(lt->valuestring, &task->task_type, st);
}

/* OpenAI chat: the image is the one image_url part (a data URI), the instruction the text
 * of the last user message; the task type comes from "lion_task" or a model name ending
 * in "-region". */
static void handle_chat(gateway *gw, http_conn *c, cJSON *root, const multipart_part *file) {
    lion_status st;
    unsigned char *image = NULL;
    size_t image_len = 0;
    Lion__Task *task = task_new(&st);
    char *instruction = NULL;
    const char *image_url = NULL;
    int deadline = 0, stream = 0, include_usage = 0, model, region;
    if (!task) goto fail;
    if (request_model(gw, c, root, &model, &region)) goto refused;
    if (openai_chat_refuse_unsupported(root, &st)) goto fail;
    if (read_stream_flags(root, 1, &stream, &include_usage, &st)) goto fail;
    if (openai_chat_read_messages(root, &instruction, &image_url, &st)) goto fail;
    if (set_instruction(gw, task, instruction, &st)) goto fail;
    if (chat_task_type(root, region, task, &st)) goto fail;
    if (parse_tags(gw, cJSON_GetObjectItemCaseSensitive(root, "lion_tags"), task, &st)) goto fail;
    if (check_tags_taken(gw, model, task, "lion_tags", &st)) goto fail;
    if (parse_generation(root, 1, &task->generation, &st)) goto fail;
    if ((deadline = deadline_of(root, &st)) < 0) goto fail;
    if (base64_decode_payload(image_url, strlen(image_url), gw->cfg.max_image_bytes, &image, &image_len, &st) != 0) {
        lion_fail_prefix(&st, "image: ");
        goto fail;
    }
    if (image_sniff(image, image_len) == IMAGE_FORMAT_UNKNOWN) {
        lion_fail(&st, LION_EFORMAT, "image: %zu bytes that are neither JPEG nor PNG", image_len);
        goto fail;
    }
    free(instruction);
    start(gw, c, REQUEST_CHAT, model, image, image_len, task, deadline, stream, include_usage);
    return;
fail:
    respond_status(gw, c, &st);
refused:
    free(instruction);
    free(image);
    if (task) lion__task__free_unpacked(task, NULL);
}

/* --- routes -------------------------------------------------------------------------------- */

/* Every served model, each also as NAME-region (the region-level task), with its family (a
 * field OpenAI's clients ignore). */
static void handle_models(gateway *gw, http_conn *c) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    for (int i = 0; i < 2 * gw->cfg.n_models; i++) {
        const gateway_model *gm = &gw->cfg.models[i / 2];
        char id[GATEWAY_MODEL_NAME_MAX + 8];
        snprintf(id, sizeof id, "%s%s", gm->name, i % 2 ? "-region" : "");
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "id", id);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", 0);
        cJSON_AddStringToObject(m, "owned_by", "lion");
        cJSON_AddStringToObject(m, "family", family_pipeline_of(gm->family)->name);
        cJSON_AddItemToArray(data, m);
    }
    api_respond_json(c, 200, root, 0);
}

/* The value of "model=" in a query string, %XX decoded, into out; 0 when absent. */
static int query_model(const char *query, char *out, size_t size) {
    for (const char *p = query; p && *p; p += strcspn(p, "&"), p += *p == '&') {
        if (strncmp(p, "model=", 6) != 0) continue;
        size_t n = 0;
        for (const char *v = p + 6; *v && *v != '&' && n + 1 < size; v++) {
            unsigned hex;
            if (*v == '%' && sscanf(v + 1, "%2x", &hex) == 1 && isxdigit((unsigned char)v[1]) &&
                isxdigit((unsigned char)v[2])) {
                out[n++] = (char)hex;
                v += 2;
            } else {
                out[n++] = *v;
            }
        }
        out[n] = '\0';
        return 1;
    }
    return 0;
}

/* Ready when every served model (or, with ?model=NAME, that one) has a live worker at each
 * stage of its pipeline: a model without one cannot answer (its requests get 503). The body
 * counts the live workers per stage, all models together, and per model. */
static void handle_readyz(gateway *gw, http_conn *c, const char *query) {
    int first = 0, last = gw->cfg.n_models - 1, region;
    char name[GATEWAY_MODEL_NAME_MAX + 16];
    if (query_model(query, name, sizeof name)) {
        first = last = models_find(&gw->cfg, name, &region);
        if (first < 0) {
            char msg[320];
            snprintf(msg, sizeof msg, "The model '%.200s' does not exist (see /v1/models)", name);
            respond_error_named(gw, c, 404, LION_ENOTFOUND, "model_not_found", msg, "model");
            return;
        }
    }
    for (int m = first; m <= last; m++)
        for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++)
            if (model_has_stage(&gw->cfg, m, s) && model_pool_live_workers(GATEWAY_POOL(gw, m, s)) == 0) {
                char msg[256];
                snprintf(msg, sizeof msg, "no live %s worker for model %s", lion_stage_name(s), gw->cfg.models[m].name);
                api_respond_error(gw, c, 503, LION_EUNAVAILABLE, msg);
                return;
            }
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "status", "ready");
    int total[LION_STAGE_SLOTS] = {0}, used[LION_STAGE_SLOTS] = {0};
    cJSON *models = cJSON_CreateObject();
    for (int m = first; m <= last; m++) {
        cJSON *mo = cJSON_AddObjectToObject(models, gw->cfg.models[m].name);
        cJSON_AddStringToObject(mo, "family", family_pipeline_of(gw->cfg.models[m].family)->name);
        cJSON *w = cJSON_AddObjectToObject(mo, "workers");
        for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++) {
            if (!model_has_stage(&gw->cfg, m, s)) continue;
            const int live = model_pool_live_workers(GATEWAY_POOL(gw, m, s));
            cJSON_AddNumberToObject(w, lion_stage_name(s), live);
            total[s] += live;
            used[s] = 1;
        }
    }
    cJSON *w = cJSON_AddObjectToObject(root, "workers");
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++)
        if (used[s]) cJSON_AddNumberToObject(w, lion_stage_name(s), total[s]);
    cJSON_AddItemToObject(root, "models", models);
    api_respond_json(c, 200, root, 0);
}

static void handle_metrics(gateway *gw, http_conn *c) {
    size_t len = 0;
    char *text = metrics_render(gw, &len);
    if (!text) {
        api_respond_error(gw, c, 503, LION_ENOMEM, "no memory for the metrics");
        return;
    }
    http_conn_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, 0);
    free(text);
}

typedef void (*json_handler)(gateway *, http_conn *, cJSON *, const multipart_part *file);

#define MAX_FORM_PARTS 64

/* A form upload as the JSON object the handlers read: the "image" part stays raw bytes
 * (*file); "tags" parts become an array (comma-separated or repeated); "instruction" and
 * "task" stay strings; other fields are numbers, true/false, or strings. */
static cJSON *form_to_json(const http_request_view *req, const multipart_part **file, multipart_part *parts,
                           lion_status *st) {
    int n = 0;
    *file = NULL;
    if (multipart_parse(req->content_type, req->body, req->body_len, parts, MAX_FORM_PARTS, &n, st)) return NULL;
    cJSON *root = cJSON_CreateObject();
    cJSON *tags = NULL;
    for (int i = 0; i < n; i++) {
        const multipart_part *p = &parts[i];
        if (!strcmp(p->name, "image")) {
            *file = p;
            continue;
        }
        char *v = malloc(p->len + 1);
        if (!v) break;
        memcpy(v, p->data, p->len);
        v[p->len] = 0;
        if (!strcmp(p->name, "tags")) {
            if (!tags) tags = cJSON_AddArrayToObject(root, "tags");
            for (char *save = NULL, *t = strtok_r(v, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                while (*t == ' ') t++;
                size_t tl = strlen(t);
                while (tl && t[tl - 1] == ' ') t[--tl] = 0;
                if (tl) cJSON_AddItemToArray(tags, cJSON_CreateString(t));
            }
        } else if (!strcmp(p->name, "instruction") || !strcmp(p->name, "task") || !strcmp(p->name, "model")) {
            cJSON_AddStringToObject(root, p->name, v);
        } else if (!strcmp(v, "true") || !strcmp(v, "false")) {
            cJSON_AddBoolToObject(root, p->name, v[0] == 't');
        } else {
            char *end;
            double d = strtod(v, &end);
            if (end != v && !*end) cJSON_AddNumberToObject(root, p->name, d);
            else cJSON_AddStringToObject(root, p->name, v);
        }
        free(v);
    }
    return root;
}

static void handle_body(gateway *gw, http_conn *c, const http_request_view *req, json_handler h, int form_ok) {
    if (!strncasecmp(req->content_type, "multipart/form-data", 19) && form_ok) {
        multipart_part *parts = malloc(MAX_FORM_PARTS * sizeof *parts);
        const multipart_part *file = NULL;
        lion_status st;
        cJSON *root = parts ? form_to_json(req, &file, parts, &st) : NULL;
        if (!root) {
            if (!parts) lion_fail(&st, LION_ENOMEM, "out of memory");
            api_respond_error(gw, c, http_status_of(st.code), st.code, st.msg);
        } else {
            h(gw, c, root, file);
        }
        cJSON_Delete(root);
        free(parts);
        return;
    }
    if (!strncasecmp(req->content_type, "multipart/", 10)) {
        api_respond_error(gw, c, 415, LION_EINVAL,
                          "this route takes JSON only (multipart/form-data uploads: /v1/generate and /v1/tags)");
        return;
    }
    if (req->body_len == 0) {
        api_respond_error(gw, c, 400, LION_EINVAL, "empty body: expected a JSON object");
        return;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(req->body, req->body_len, &end, 0);
    if (!root || !cJSON_IsObject(root)) {
        char msg[128];
        if (!root)
            snprintf(msg, sizeof msg, "the body is not valid JSON (error near byte %zu)",
                     end && end >= req->body ? (size_t)(end - req->body) : (size_t)0);
        else snprintf(msg, sizeof msg, "the body must be a JSON object");
        cJSON_Delete(root);
        api_respond_error(gw, c, 400, LION_EINVAL, msg);
        return;
    }
    h(gw, c, root, NULL);
    cJSON_Delete(root);
}

/* --- the route table --------------------------------------------------------------------- */

static void route_generate(gateway *gw, http_conn *c, const http_request_view *req) {
    handle_body(gw, c, req, handle_generate, 1);
}
static void route_chat(gateway *gw, http_conn *c, const http_request_view *req) {
    handle_body(gw, c, req, handle_chat, 0);
}
static void route_tags(gateway *gw, http_conn *c, const http_request_view *req) {
    handle_body(gw, c, req, handle_tags, 1);
}
static void route_models(gateway *gw, http_conn *c, const http_request_view *req) { handle_models(gw, c); }
static void route_healthz(gateway *gw, http_conn *c, const http_request_view *req) {
    static const char ok[] = "{\"status\":\"ok\"}";
    http_conn_respond(c, 200, "application/json", ok, sizeof ok - 1, 0);
}
static void route_readyz(gateway *gw, http_conn *c, const http_request_view *req) {
    handle_readyz(gw, c, req->query);
}
static void route_metrics(gateway *gw, http_conn *c, const http_request_view *req) { handle_metrics(gw, c); }
static void route_pipeline(gateway *gw, http_conn *c, const http_request_view *req) {
    size_t len = 0;
    char *text = pipeline_render(gw, &len);
    if (!text) {
        api_respond_error(gw, c, 503, LION_ENOMEM, "no memory for the pipeline view");
        return;
    }
    http_conn_respond(c, 200, "application/json", text, len, 0);
    free(text);
}
static void route_page(gateway *gw, http_conn *c, const http_request_view *req) {
    if (!web_serve(gw, c, req->path)) api_respond_error(gw, c, 404, LION_ENOTFOUND, "the web page is not built in");
}

/* Every route: its path (also its label in /metrics), its method (GET routes answer HEAD
 * too) and its handler. */
static const struct api_route {
    const char *path;
    int method;
    void (*handle)(gateway *, http_conn *, const http_request_view *);
} routes[API_ROUTES] = {
    {"/v1/generate", HTTP_POST, route_generate},
    {"/v1/chat/completions", HTTP_POST, route_chat},
    {"/v1/tags", HTTP_POST, route_tags},
    {"/v1/models", HTTP_GET, route_models},
    {"/healthz", HTTP_GET, route_healthz},
    {"/readyz", HTTP_GET, route_readyz},
    {"/metrics", HTTP_GET, route_metrics},
    {"/v1/pipeline", HTTP_GET, route_pipeline},
    {"/", HTTP_GET, route_page},
};

int api_route_of(const char *path) {
    for (int i = 0; i < API_ROUTES; i++)
        if (!strcmp(path, routes[i].path)) return i;
    return API_ROUTES;
}

const char *api_route_label(int route) { return route >= 0 && route < API_ROUTES ? routes[route].path : "other"; }

/* With --api-keys, every route but the probes and the page itself (which asks for the key)
 * needs "Authorization: Bearer KEY"; /metrics too with --metrics-auth. Answers 401 itself
 * (OpenAI's invalid_api_key) and returns 0 when the key is missing or wrong. */
static int authorized(gateway *gw, http_conn *c, int route) {
    if (gw->keys.n == 0) return 1;
    const char *path = routes[route].path;
    if (!strcmp(path, "/healthz") || !strcmp(path, "/readyz") || !strcmp(path, "/")) return 1;
    if (!strcmp(path, "/metrics") && !gw->cfg.metrics_auth) return 1;
    if (api_keys_check(&gw->keys, c->authorization)) return 1;
    c->extra_header = "WWW-Authenticate: Bearer realm=\"lion\"";
    respond_error_named(gw, c, 401, LION_EDENIED, "invalid_api_key",
                        c->authorization[0] ? "the API key is not valid" : "an API key is needed: Authorization: Bearer KEY",
                        NULL);
    return 0;
}

void api_handle(gateway *gw, http_conn *c, const http_request_view *req) {
    const int found = api_route_of(req->path);
    /* the web page's other files (app.js, style.css) */
    if (found == API_ROUTES && (req->method == HTTP_GET || req->method == HTTP_HEAD) && web_serve(gw, c, req->path))
        return;
    if (found == API_ROUTES) {
        char msg[160];
        snprintf(msg, sizeof msg, "no route %s %.100s", http_method_str(req->method), req->path);
        api_respond_error(gw, c, 404, LION_ENOTFOUND, msg);
        return;
    }
    const struct api_route *route = &routes[found];
    if (!authorized(gw, c, found)) return;
    /* HEAD is GET without the body (http_conn_respond leaves it out) */
    const int head_of_get = req->method == HTTP_HEAD && route->method == HTTP_GET;
    if (req->method != route->method && !head_of_get) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s is not allowed on %s (use %s)", http_method_str(req->method), req->path,
                 http_method_str(route->method));
        c->allow = route->method == HTTP_GET ? "GET, HEAD" : http_method_str(route->method);
        api_respond_error(gw, c, 405, LION_EINVAL, msg);
        return;
    }
    route->handle(gw, c, req);
}
