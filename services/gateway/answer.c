/* answer.c - a finished request's answer in its route's shape: /v1/generate's and /v1/tags'
 * JSON, OpenAI's chat.completion, or, for a streamed request, server-sent events as the llm's
 * text arrives (OpenAI's chat.completion.chunk events, or /v1/generate's text/done/error). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "gateway_impl.h"

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

/* Which stages answered from their cache: {"vision": "hit", "tagger": "miss"} (stages
 * without a cache are absent). */
static cJSON *cache_json(const request *r) {
    cJSON *c = cJSON_CreateObject();
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++) {
        const envelope_msg *m = &r->step[s].result;
        if (r->step[s].state == STEP_DONE && m->env && m->env->result && m->env->result->has_cache_hit)
            cJSON_AddStringToObject(c, lion_stage_name(s), m->env->result->cache_hit ? "hit" : "miss");
    }
    return c;
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

/* What the llm says of a sequence: why it stopped, and how many tokens it generated (the
 * decoder start id HF puts first is not one of them). */
static const char *finish_reason_of(const Lion__Sequence *s) {
    return s && s->has_finish_reason && s->finish_reason == LION__FINISH_REASON__LENGTH ? "length" : "stop";
}

static double generated_tokens_of(const Lion__Sequence *s) {
    if (!s) return 0;
    if (s->has_generated_tokens) return (double)s->generated_tokens;
    return s->n_token_ids > 0 ? (double)(s->n_token_ids - 1) : 0;
}

static cJSON *generate_json(const request *r) {
    const Lion__Result *res = result_of(r, LION__STAGE__LLM);
    const Lion__Sequence *best = res && res->n_sequences ? res->sequences[0] : NULL;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "request_id", r->id);
    cJSON_AddStringToObject(root, "model", r->gw->cfg.models[r->model].name);
    cJSON_AddStringToObject(root, "text", best && best->text ? best->text : "");
    cJSON_AddItemToObject(root, "boxes", box_array(best));
    cJSON_AddItemToObject(root, "tags", tag_names(r));
    cJSON_AddNumberToObject(root, "tokens", best ? (double)best->n_token_ids : 0);
    cJSON_AddNumberToObject(root, "generated_tokens", generated_tokens_of(best));
    cJSON_AddStringToObject(root, "finish_reason", finish_reason_of(best));
    cJSON_AddNumberToObject(root, "prompt_tokens", res ? (double)res->prompt_tokens : 0);
    cJSON *seqs = cJSON_AddArrayToObject(root, "sequences");
    for (size_t i = 0; res && i < res->n_sequences; i++) {
        const Lion__Sequence *s = res->sequences[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "text", s->text ? s->text : "");
        cJSON_AddNumberToObject(o, "score", s->score);
        cJSON_AddNumberToObject(o, "tokens", (double)s->n_token_ids);
        cJSON_AddNumberToObject(o, "generated_tokens", generated_tokens_of(s));
        cJSON_AddStringToObject(o, "finish_reason", finish_reason_of(s));
        cJSON_AddItemToObject(o, "boxes", box_array(s));
        cJSON_AddItemToArray(seqs, o);
    }
    cJSON_AddItemToObject(root, "timings_ms", timings(r));
    cJSON_AddItemToObject(root, "cache", cache_json(r));
    return root;
}

/* OpenAI's usage: what the encoder read (visual tokens and the prompt text, tag prompt
 * included) and what was generated, every returned sequence counted. */
static cJSON *usage_json(const Lion__Result *res) {
    double completion = 0;
    for (size_t i = 0; res && i < res->n_sequences; i++) completion += generated_tokens_of(res->sequences[i]);
    const double prompt = res ? (double)res->prompt_tokens : 0;
    cJSON *usage = cJSON_CreateObject();
    cJSON_AddNumberToObject(usage, "prompt_tokens", prompt);
    cJSON_AddNumberToObject(usage, "completion_tokens", completion);
    cJSON_AddNumberToObject(usage, "total_tokens", prompt + completion);
    return usage;
}

/* LION's own fields beside OpenAI's: request id, boxes, tags, timings. */
static cJSON *lion_json(const request *r, const Lion__Result *res) {
    cJSON *lion = cJSON_CreateObject();
    cJSON_AddStringToObject(lion, "request_id", r->id);
    cJSON_AddItemToObject(lion, "boxes", box_array(res && res->n_sequences ? res->sequences[0] : NULL));
    cJSON_AddItemToObject(lion, "tags", tag_names(r));
    cJSON_AddItemToObject(lion, "timings_ms", timings(r));
    cJSON_AddItemToObject(lion, "cache", cache_json(r));
    return lion;
}

/* The fields every chat answer and chunk starts with. */
static cJSON *chat_head(const request *r, const char *object) {
    cJSON *root = cJSON_CreateObject();
    char id[80];
    snprintf(id, sizeof id, "chatcmpl-%s", r->id);
    cJSON_AddStringToObject(root, "id", id);
    cJSON_AddStringToObject(root, "object", object);
    cJSON_AddNumberToObject(root, "created", (double)r->created_s);
    cJSON_AddStringToObject(root, "model", r->gw->cfg.models[r->model].name);
    return root;
}

static cJSON *chat_json(const request *r) {
    const Lion__Result *res = result_of(r, LION__STAGE__LLM);
    cJSON *root = chat_head(r, "chat.completion");
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    for (size_t i = 0; res && i < res->n_sequences; i++) {
        const Lion__Sequence *s = res->sequences[i];
        cJSON *choice = cJSON_CreateObject();
        cJSON_AddNumberToObject(choice, "index", (double)i);
        cJSON *message = cJSON_AddObjectToObject(choice, "message");
        cJSON_AddStringToObject(message, "role", "assistant");
        cJSON_AddStringToObject(message, "content", s->text ? s->text : "");
        cJSON_AddNullToObject(choice, "logprobs");
        cJSON_AddStringToObject(choice, "finish_reason", finish_reason_of(s));
        cJSON_AddItemToArray(choices, choice);
    }
    cJSON_AddItemToObject(root, "usage", usage_json(res));
    cJSON_AddItemToObject(root, "lion", lion_json(r, res));
    return root;
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

static cJSON *tags_json(const request *r) {
    const Lion__Result *res = result_of(r, LION__STAGE__TAGGER);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "request_id", r->id);
    cJSON_AddStringToObject(root, "model", r->gw->cfg.models[r->model].name);
    cJSON_AddItemToObject(root, "tags", tag_list(res ? res->tags : NULL, res ? res->n_tags : 0));
    const char *prompt = res && res->n_sequences && res->sequences[0]->text ? res->sequences[0]->text : "";
    cJSON_AddStringToObject(root, "prompt", prompt);
    if (res && res->n_top_tags) cJSON_AddItemToObject(root, "top_tags", tag_list(res->top_tags, res->n_top_tags));
    cJSON_AddItemToObject(root, "timings_ms", timings(r));
    cJSON_AddItemToObject(root, "cache", cache_json(r));
    return root;
}

/* --- streamed answers (server-sent events) -------------------------------------------------- */
/* /v1/chat/completions: OpenAI's chat.completion.chunk events, the role first, then content
 * deltas, a chunk with finish_reason per choice, the usage chunk when asked, "data: [DONE]".
 * /v1/generate: "event: text" {"text": delta} events, then "event: done" with the whole
 * answer (as without streaming), or "event: error". A failure before the first event is an
 * ordinary JSON error with its HTTP status. */

static void sse_send(http_conn *c, const char *event, cJSON *data) {
    char *json = cJSON_PrintUnformatted(data);
    cJSON_Delete(data);
    if (!json) return;
    const size_t cap = strlen(json) + 64;
    char *buf = malloc(cap);
    if (buf) {
        int n = event ? snprintf(buf, cap, "event: %s\ndata: %s\n\n", event, json)
                      : snprintf(buf, cap, "data: %s\n\n", json);
        http_conn_stream_write(c, buf, (size_t)n);
    }
    free(buf);
    free(json);
}

/* One chat chunk for choice `index`: a delta (role and/or content) or the finish reason. */
static cJSON *chat_chunk(const request *r, int index, const char *role, const char *content, size_t len,
                         const char *finish_reason) {
    cJSON *root = chat_head(r, "chat.completion.chunk");
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddNumberToObject(choice, "index", index);
    cJSON *delta = cJSON_AddObjectToObject(choice, "delta");
    if (role) cJSON_AddStringToObject(delta, "role", role);
    if (content) {
        char *text = strndup(content, len);
        cJSON_AddStringToObject(delta, "content", text ? text : "");
        free(text);
    }
    cJSON_AddNullToObject(choice, "logprobs");
    if (finish_reason) cJSON_AddStringToObject(choice, "finish_reason", finish_reason);
    else cJSON_AddNullToObject(choice, "finish_reason");
    cJSON_AddItemToArray(choices, choice);
    if (r->include_usage) cJSON_AddNullToObject(root, "usage");
    return root;
}

static void stream_begin(request *r) {
    if (r->stream_begun) return;
    r->stream_begun = 1;
    http_conn_stream_begin(r->conn, 200, "text/event-stream");
    if (r->kind == REQUEST_CHAT) sse_send(r->conn, NULL, chat_chunk(r, 0, "assistant", "", 0, NULL));
}

static void stream_piece(request *r, int index, const char *text, size_t len) {
    if (r->kind == REQUEST_CHAT) {
        sse_send(r->conn, NULL, chat_chunk(r, index, NULL, text, len, NULL));
        return;
    }
    cJSON *o = cJSON_CreateObject();
    char *t = strndup(text, len);
    cJSON_AddStringToObject(o, "text", t ? t : "");
    free(t);
    sse_send(r->conn, "text", o);
}

/* request_text_fn: the llm's new text, as it comes */
void answer_stream_text(request *r, const char *text, size_t len) {
    if (!r->conn || len == 0) return;
    stream_begin(r);
    stream_piece(r, 0, text, len);
}

static void stream_done_line(request *r) {
    static const char done[] = "data: [DONE]\n\n";
    http_conn_stream_write(r->conn, done, sizeof done - 1);
}

/* The end of a streamed answer: the text not streamed yet (all of it for beam search), the
 * finish chunks and usage (chat) or the whole answer (generate), then the end. */
static void stream_finish(request *r) {
    stream_begin(r);
    const Lion__Result *res = result_of(r, LION__STAGE__LLM);
    const int chat = r->kind == REQUEST_CHAT;
    for (size_t i = 0; res && i < res->n_sequences && (chat || i == 0); i++) {
        const Lion__Sequence *s = res->sequences[i];
        const char *text = s->text ? s->text : "";
        const size_t len = strlen(text);
        const size_t sent = i == 0 ? (r->streamed_bytes < len ? r->streamed_bytes : len) : 0;
        if (chat && i > 0) sse_send(r->conn, NULL, chat_chunk(r, (int)i, "assistant", "", 0, NULL));
        if (len > sent) stream_piece(r, (int)i, text + sent, len - sent);
        if (chat) sse_send(r->conn, NULL, chat_chunk(r, (int)i, NULL, NULL, 0, finish_reason_of(s)));
    }
    if (chat) {
        if (r->include_usage) {
            cJSON *u = chat_head(r, "chat.completion.chunk");
            cJSON_AddArrayToObject(u, "choices");
            cJSON_AddItemToObject(u, "usage", usage_json(res));
            sse_send(r->conn, NULL, u);
        }
        stream_done_line(r);
    } else {
        sse_send(r->conn, "done", generate_json(r));
    }
    http_conn_stream_end(r->conn);
}

/* A failure after the stream began: an error event, then the end. */
static void stream_fail(request *r, int http_status, const lion_status *st) {
    metrics_count_error(&r->gw->metrics, st->code);
    const int chat = r->kind == REQUEST_CHAT;
    sse_send(r->conn, chat ? NULL : "error", api_error_json(http_status, lion_code_name(st->code), st->msg, NULL));
    if (chat) stream_done_line(r);
    http_conn_stream_end(r->conn);
}

/* request_done_fn: the request's answer or failure to its connection, if it is still there. */
void answer_done(request *r, int http_status, const lion_status *st) {
    if (!r->conn) return;
    if (st && r->stream_begun) stream_fail(r, http_status, st);
    else if (st) api_respond_error(r->gw, r->conn, http_status, st->code, st->msg);
    else if (r->on_text) stream_finish(r);
    else if (r->kind == REQUEST_GENERATE) api_respond_json(r->conn, 200, generate_json(r), 0);
    else if (r->kind == REQUEST_CHAT) api_respond_json(r->conn, 200, chat_json(r), 0);
    else api_respond_json(r->conn, 200, tags_json(r), 0);
    r->conn = NULL; /* answered: the connection takes its next request */
}
