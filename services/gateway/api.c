/* api.c - the HTTP routes of docs/api.md: JSON requests into stage tasks, finished
 * requests into JSON answers (native and OpenAI-shaped), and every error as
 * {"error": {"code": "<lion_code_name>", "message": "..."}} with a matching status. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "gateway_impl.h"
#include "image.h"
#include "log.h"

int api_http_status_of(int code) {
    switch (code) {
    case LION_EINVAL:
    case LION_EFORMAT: return 400;
    case LION_ETOOBIG: return 413;
    case LION_ENOTFOUND: return 404;
    case LION_ETIMEOUT: return 504;
    case LION_ENOMEM:
    case LION_EUNAVAILABLE: return 503;
    case LION_EIO: return 502;
    default: return 500;
    }
}

static void respond_json(http_conn *c, int status, cJSON *root, int retry_after_s) {
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

void api_respond_error(gateway *gw, http_conn *c, int http_status, int code, const char *message) {
    metrics_count_error(&gw->metrics, code);
    cJSON *root = cJSON_CreateObject();
    cJSON *err = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(err, "code", lion_code_name(code));
    cJSON_AddStringToObject(err, "message", message);
    int retry = http_status == 429 || http_status == 503 ? gw->cfg.retry_after_s : 0;
    respond_json(c, http_status, root, retry);
}

static void respond_status(gateway *gw, http_conn *c, const lion_status *st) {
    api_respond_error(gw, c, api_http_status_of(st->code), st->code, st->msg);
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

static void request_done(request *r, int http_status, const lion_status *st);

/* Starts the request; answers the connection at once when it cannot start. */
static void start(gateway *gw, http_conn *c, request_kind kind, unsigned char *image, size_t image_len,
                  Lion__Task *task, int deadline_ms) {
    lion_status st;
    request *r = request_new(gw, kind, image, image_len, task, deadline_ms, request_done, &st);
    if (!r) {
        respond_status(gw, c, &st);
        return;
    }
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

static void handle_generate(gateway *gw, http_conn *c, cJSON *root, const multipart_part *file) {
    lion_status st;
    unsigned char *image = NULL;
    size_t image_len = 0;
    Lion__Task *task = task_new(&st);
    int deadline = 0;
    if (!task) goto fail;
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
    task->task_type = LION__TASK_TYPE__IMAGE_LEVEL;
    if (type && !cJSON_IsString(type)) {
        lion_fail(&st, LION_EINVAL, "'task' must be a string");
        goto fail;
    }
    if (type && parse_task_type(type->valuestring, &task->task_type, &st)) goto fail;
    if (parse_tags(gw, cJSON_GetObjectItemCaseSensitive(root, "tags"), task, &st)) goto fail;
    if (parse_generation(root, 0, &task->generation, &st)) goto fail;
    if ((deadline = deadline_of(root, &st)) < 0) goto fail;
    if (take_image(gw, root, file, &image, &image_len, &st)) goto fail;
    start(gw, c, REQUEST_GENERATE, image, image_len, task, deadline);
    return;
fail:
    if (task) lion__task__free_unpacked(task, NULL);
    respond_status(gw, c, &st);
}

static void handle_tags(gateway *gw, http_conn *c, cJSON *root, const multipart_part *file) {
    lion_status st;
    unsigned char *image = NULL;
    size_t image_len = 0;
    Lion__Task *task = task_new(&st);
    double k = 0;
    int deadline = 0, rc;
    if (!task) goto fail;
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
    start(gw, c, REQUEST_TAGS, image, image_len, task, deadline);
    return;
fail:
    if (task) lion__task__free_unpacked(task, NULL);
    respond_status(gw, c, &st);
}

/* A user message's text part joins the instruction (parts of one message are joined by a space). */
static int chat_add_text(char **instruction, const char *text, lion_status *st) {
    size_t have = *instruction ? strlen(*instruction) : 0, add = strlen(text);
    char *joined = realloc(*instruction, have + add + 2);
    if (!joined) return lion_fail(st, LION_ENOMEM, "out of memory");
    if (have) joined[have++] = ' ';
    memcpy(joined + have, text, add + 1);
    *instruction = joined;
    return 0;
}

/* One content part of message `index`: text (kept when the message is the user's) or the
 * request's one image_url (a data URI). */
static int chat_read_part(const cJSON *part, int index, int user, char **instruction, const char **image_url,
                          lion_status *st) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
    if (!cJSON_IsString(type)) return lion_fail(st, LION_EINVAL, "message %d: a content part without a 'type'", index);
    if (!strcmp(type->valuestring, "text")) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(t))
            return lion_fail(st, LION_EINVAL, "message %d: a text part without a 'text' string", index);
        return user ? chat_add_text(instruction, t->valuestring, st) : 0;
    }
    if (strcmp(type->valuestring, "image_url") != 0)
        return lion_fail(st, LION_EINVAL, "message %d: unsupported content part type \"%.32s\"", index,
                         type->valuestring);
    const cJSON *iu = cJSON_GetObjectItemCaseSensitive(part, "image_url");
    const cJSON *url = cJSON_IsObject(iu) ? cJSON_GetObjectItemCaseSensitive(iu, "url") : iu;
    if (!cJSON_IsString(url))
        return lion_fail(st, LION_EINVAL, "message %d: an image_url part without a 'url' string", index);
    if (*image_url) return lion_fail(st, LION_EINVAL, "more than one image: LION answers about one image per request");
    if (strncmp(url->valuestring, "data:", 5) != 0)
        return lion_fail(st, LION_EINVAL,
                         "image_url must be a data URI (data:image/png;base64,...): the gateway fetches no URLs");
    *image_url = url->valuestring;
    return 0;
}

/* The instruction (the text of the last user message, malloc'd) and the image's data URI (a
 * view into root) of an OpenAI chat request's messages. */
static int chat_read_messages(const cJSON *root, char **instruction, const char **image_url, lion_status *st) {
    *instruction = NULL;
    *image_url = NULL;
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!cJSON_IsArray(messages) || cJSON_GetArraySize(messages) == 0)
        return lion_fail(st, LION_EINVAL, "missing 'messages' (a non-empty array)");
    int index = 0;
    const cJSON *msg;
    cJSON_ArrayForEach(msg, messages) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
        if (!cJSON_IsString(role) || !(cJSON_IsString(content) || cJSON_IsArray(content)))
            return lion_fail(st, LION_EINVAL, "message %d needs a 'role' string and a 'content' string or array", index);
        const int user = !strcmp(role->valuestring, "user");
        if (user) { /* the last user message is the instruction */
            free(*instruction);
            *instruction = NULL;
        }
        if (cJSON_IsString(content)) {
            if (user && !(*instruction = strdup(content->valuestring))) return lion_fail(st, LION_ENOMEM, "out of memory");
        } else {
            const cJSON *part;
            cJSON_ArrayForEach(part, content) {
                if (chat_read_part(part, index, user, instruction, image_url, st) != 0) return -1;
            }
        }
        index++;
    }
    if (!*image_url) return lion_fail(st, LION_EINVAL, "no image: add an image_url content part with a data URI");
    if (!*instruction) return lion_fail(st, LION_EINVAL, "no user message with text");
    return 0;
}

/* The task type: "lion_task" when given, else region-level for a model name ending in
 * "-region", else image-level. */
static int chat_task_type(const cJSON *root, Lion__Task *task, lion_status *st) {
    task->has_task_type = 1;
    task->task_type = LION__TASK_TYPE__IMAGE_LEVEL;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (cJSON_IsString(model)) {
        size_t n = strlen(model->valuestring);
        if (n >= 7 && !strcmp(model->valuestring + n - 7, "-region")) task->task_type = LION__TASK_TYPE__REGION_LEVEL;
    }
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
    int deadline = 0;
    if (!task) goto fail;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "stream"))) {
        lion_fail(&st, LION_EINVAL, "'stream': true is not supported");
        goto fail;
    }
    if (chat_read_messages(root, &instruction, &image_url, &st)) goto fail;
    if (set_instruction(gw, task, instruction, &st)) goto fail;
    if (chat_task_type(root, task, &st)) goto fail;
    if (parse_tags(gw, cJSON_GetObjectItemCaseSensitive(root, "lion_tags"), task, &st)) goto fail;
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
    start(gw, c, REQUEST_CHAT, image, image_len, task, deadline);
    return;
fail:
    free(instruction);
    free(image);
    if (task) lion__task__free_unpacked(task, NULL);
    respond_status(gw, c, &st);
}

/* --- answers ------------------------------------------------------------------------------- */

static cJSON *box_array(const Lion__Sequence *s) {
    cJSON *boxes = cJSON_CreateArray();
    for (size_t i = 0; s && i < s->n_boxes; i++) {
        const Lion__Box *b = s->boxes[i];
        double v[4] = {b->x0, b->y0, b->x1, b->y1};
        cJSON_AddItemToArray(boxes, cJSON_CreateDoubleArray(v, 4));
    }
    return boxes;
}

static cJSON *timings(const request *r) {
    cJSON *t = cJSON_CreateObject();
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++)
        if (r->step[s].state == STEP_DONE) cJSON_AddNumberToObject(t, lion_stage_name(s), r->step[s].worker_ms);
    cJSON_AddNumberToObject(t, "total", (double)(clock_mono_us() - r->start_us) / 1000.0);
    return t;
}

static cJSON *tag_names(const request *r) {
    cJSON *tags = cJSON_CreateArray();
    const Lion__Task *task = r->job->task;
    for (size_t i = 0; task && i < task->n_tags; i++) cJSON_AddItemToArray(tags, cJSON_CreateString(task->tags[i]));
    return tags;
}

static const Lion__Result *result_of(const request *r, int stage) {
    const envelope_msg *m = &r->step[stage].result;
    return m->env ? m->env->result : NULL;
}

static void answer_generate(request *r) {
    const Lion__Result *res = result_of(r, LION__STAGE__LLM);
    const Lion__Sequence *best = res && res->n_sequences ? res->sequences[0] : NULL;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "request_id", r->id);
    cJSON_AddStringToObject(root, "model", r->gw->cfg.model_name);
    cJSON_AddStringToObject(root, "text", best && best->text ? best->text : "");
    cJSON_AddItemToObject(root, "boxes", box_array(best));
    cJSON_AddItemToObject(root, "tags", tag_names(r));
    cJSON_AddNumberToObject(root, "tokens", best ? (double)best->n_token_ids : 0);
    cJSON_AddNumberToObject(root, "prompt_tokens", res ? (double)res->prompt_tokens : 0);
    cJSON *seqs = cJSON_AddArrayToObject(root, "sequences");
    for (size_t i = 0; res && i < res->n_sequences; i++) {
        const Lion__Sequence *s = res->sequences[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "text", s->text ? s->text : "");
        cJSON_AddNumberToObject(o, "score", s->score);
        cJSON_AddNumberToObject(o, "tokens", (double)s->n_token_ids);
        cJSON_AddItemToObject(o, "boxes", box_array(s));
        cJSON_AddItemToArray(seqs, o);
    }
    cJSON_AddItemToObject(root, "timings_ms", timings(r));
    respond_json(r->conn, 200, root, 0);
}

static void answer_chat(request *r) {
    const Lion__Result *res = result_of(r, LION__STAGE__LLM);
    cJSON *root = cJSON_CreateObject();
    char id[80];
    snprintf(id, sizeof id, "chatcmpl-%s", r->id);
    cJSON_AddStringToObject(root, "id", id);
    cJSON_AddStringToObject(root, "object", "chat.completion");
    cJSON_AddNumberToObject(root, "created", (double)(clock_unix_us() / 1000000));
    cJSON_AddStringToObject(root, "model", r->gw->cfg.model_name);
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    size_t completion = 0;
    for (size_t i = 0; res && i < res->n_sequences; i++) {
        const Lion__Sequence *s = res->sequences[i];
        cJSON *choice = cJSON_CreateObject();
        cJSON_AddNumberToObject(choice, "index", (double)i);
        cJSON *message = cJSON_AddObjectToObject(choice, "message");
        cJSON_AddStringToObject(message, "role", "assistant");
        cJSON_AddStringToObject(message, "content", s->text ? s->text : "");
        cJSON_AddStringToObject(choice, "finish_reason", "stop");
        cJSON_AddItemToArray(choices, choice);
        completion += s->n_token_ids;
    }
    cJSON *usage = cJSON_AddObjectToObject(root, "usage");
    /* what the encoder read: the visual tokens and the prompt text (tag prompt included) */
    const double prompt = res ? (double)res->prompt_tokens : 0;
    cJSON_AddNumberToObject(usage, "prompt_tokens", prompt);
    cJSON_AddNumberToObject(usage, "completion_tokens", (double)completion);
    cJSON_AddNumberToObject(usage, "total_tokens", prompt + (double)completion);
    cJSON *lion = cJSON_AddObjectToObject(root, "lion");
    cJSON_AddStringToObject(lion, "request_id", r->id);
    cJSON_AddItemToObject(lion, "boxes", box_array(res && res->n_sequences ? res->sequences[0] : NULL));
    cJSON_AddItemToObject(lion, "tags", tag_names(r));
    cJSON_AddItemToObject(lion, "timings_ms", timings(r));
    respond_json(r->conn, 200, root, 0);
}

static cJSON *tag_list(Lion__Tag **tags, size_t n) {
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", tags[i]->name ? tags[i]->name : "");
        cJSON_AddNumberToObject(o, "score", tags[i]->score);
        cJSON_AddItemToArray(a, o);
    }
    return a;
}

static void answer_tags(request *r) {
    const Lion__Result *res = result_of(r, LION__STAGE__TAGGER);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "request_id", r->id);
    cJSON_AddStringToObject(root, "model", r->gw->cfg.model_name);
    cJSON_AddItemToObject(root, "tags", tag_list(res ? res->tags : NULL, res ? res->n_tags : 0));
    const char *prompt = res && res->n_sequences && res->sequences[0]->text ? res->sequences[0]->text : "";
    cJSON_AddStringToObject(root, "prompt", prompt);
    if (res && res->n_top_tags) cJSON_AddItemToObject(root, "top_tags", tag_list(res->top_tags, res->n_top_tags));
    cJSON_AddItemToObject(root, "timings_ms", timings(r));
    respond_json(r->conn, 200, root, 0);
}

/* request_done_fn: the request's answer or failure to its connection, if it is still there. */
static void request_done(request *r, int http_status, const lion_status *st) {
    if (!r->conn) return;
    if (st) api_respond_error(r->gw, r->conn, http_status, st->code, st->msg);
    else if (r->kind == REQUEST_GENERATE) answer_generate(r);
    else if (r->kind == REQUEST_CHAT) answer_chat(r);
    else answer_tags(r);
    r->conn = NULL; /* answered: the connection takes its next request */
}

/* --- routes -------------------------------------------------------------------------------- */

static void handle_models(gateway *gw, http_conn *c) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    char region[160];
    snprintf(region, sizeof region, "%s-region", gw->cfg.model_name);
    const char *ids[2] = {gw->cfg.model_name, region};
    for (int i = 0; i < 2; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "id", ids[i]);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", 0);
        cJSON_AddStringToObject(m, "owned_by", "lion");
        cJSON_AddItemToArray(data, m);
    }
    respond_json(c, 200, root, 0);
}

static void handle_readyz(gateway *gw, http_conn *c) {
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++)
        if (stage_pool_live_workers(&gw->pool[s]) == 0) {
            char msg[64];
            snprintf(msg, sizeof msg, "no live %s worker", lion_stage_name(s));
            api_respond_error(gw, c, 503, LION_EUNAVAILABLE, msg);
            return;
        }
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "status", "ready");
    cJSON *w = cJSON_AddObjectToObject(root, "workers");
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++)
        cJSON_AddNumberToObject(w, lion_stage_name(s), stage_pool_live_workers(&gw->pool[s]));
    respond_json(c, 200, root, 0);
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
        } else if (!strcmp(p->name, "instruction") || !strcmp(p->name, "task")) {
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
            api_respond_error(gw, c, api_http_status_of(st.code), st.code, st.msg);
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
static void route_readyz(gateway *gw, http_conn *c, const http_request_view *req) { handle_readyz(gw, c); }
static void route_metrics(gateway *gw, http_conn *c, const http_request_view *req) { handle_metrics(gw, c); }

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
};

int api_route_of(const char *path) {
    for (int i = 0; i < API_ROUTES; i++)
        if (!strcmp(path, routes[i].path)) return i;
    return API_ROUTES;
}

const char *api_route_label(int route) { return route >= 0 && route < API_ROUTES ? routes[route].path : "other"; }

void api_handle(gateway *gw, http_conn *c, const http_request_view *req) {
    const int found = api_route_of(req->path);
    if (found == API_ROUTES) {
        char msg[160];
        snprintf(msg, sizeof msg, "no route %s %.100s", http_method_str(req->method), req->path);
        api_respond_error(gw, c, 404, LION_ENOTFOUND, msg);
        return;
    }
    const struct api_route *route = &routes[found];
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
