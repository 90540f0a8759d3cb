/* openai_chat.c - what an OpenAI chat completions request says, read from its JSON: the
 * instruction and the image from "messages", and the OpenAI fields this server refuses. api.c
 * turns the rest (model, stream, generation, lion_task, lion_tags) into the stage task. */
#include "openai_chat.h"

#include <stdlib.h>
#include <string.h>

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
int openai_chat_read_messages(const cJSON *root, char **instruction, const char **image_url, lion_status *st) {
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

/* OpenAI fields this server does not do are refused by name, never ignored; fields with a
 * value that changes nothing (text output, no penalties, no log-probabilities) are taken. */
int openai_chat_refuse_unsupported(const cJSON *root, lion_status *st) {
    static const char *const never[] = {"tools", "tool_choice", "functions", "function_call", "logit_bias", "stop",
                                        "audio", "prediction", "parallel_tool_calls", "web_search_options"};
    for (size_t i = 0; i < sizeof never / sizeof never[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, never[i]);
        if (v && !cJSON_IsNull(v)) return lion_fail(st, LION_EINVAL, "'%s' is not supported by this server", never[i]);
    }
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(root, "response_format");
    if (rf && !cJSON_IsNull(rf)) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(rf, "type");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0)
            return lion_fail(st, LION_EINVAL, "'response_format': only {\"type\": \"text\"} is supported");
    }
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(root, "logprobs");
    if (cJSON_IsTrue(lp)) return lion_fail(st, LION_EINVAL, "'logprobs' is not supported by this server");
    const cJSON *tlp = cJSON_GetObjectItemCaseSensitive(root, "top_logprobs");
    if (tlp && !cJSON_IsNull(tlp) && !(cJSON_IsNumber(tlp) && tlp->valuedouble == 0))
        return lion_fail(st, LION_EINVAL, "'top_logprobs' is not supported by this server");
    static const char *const penalties[] = {"presence_penalty", "frequency_penalty"};
    for (size_t i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, penalties[i]);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsNumber(v) && v->valuedouble == 0))
            return lion_fail(st, LION_EINVAL, "'%s' is not supported (use repetition_penalty)", penalties[i]);
    }
    const cJSON *modalities = cJSON_GetObjectItemCaseSensitive(root, "modalities");
    if (modalities && !cJSON_IsNull(modalities)) {
        const cJSON *m0 = cJSON_GetArrayItem(modalities, 0);
        if (!cJSON_IsArray(modalities) || cJSON_GetArraySize(modalities) != 1 || !cJSON_IsString(m0) ||
            strcmp(m0->valuestring, "text") != 0)
            return lion_fail(st, LION_EINVAL, "'modalities': only [\"text\"] is supported");
    }
    return 0;
}
