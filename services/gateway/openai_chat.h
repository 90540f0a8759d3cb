/* openai_chat.h - reading an OpenAI /v1/chat/completions request (docs/api.md). */
#ifndef LION_OPENAI_CHAT_H
#define LION_OPENAI_CHAT_H

#include <cjson/cJSON.h>

#include "status.h"

/* The instruction (the text of the last user message, joined by spaces when it has several
 * text parts; malloc'd) and the image (the one image_url part, a data URI: a view into root)
 * of root's "messages". 0, or -1 with st naming the message and part that is wrong (no URLs
 * are fetched, one image per request). */
int openai_chat_read_messages(const cJSON *root, char **instruction, const char **image_url, lion_status *st);
/* 0 when root asks for nothing this server does not do; else -1 with st naming the field
 * (tools, stop, logprobs, penalties, other response formats or modalities, ...). */
int openai_chat_refuse_unsupported(const cJSON *root, lion_status *st);

#endif
