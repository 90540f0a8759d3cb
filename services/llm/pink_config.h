/* pink_config.h - what the llm stage needs to load a Pink model directory: model.json's
 * pink.llm section as llama.h's llama_config, and the tokenizer of pink.tokenizer loaded with
 * its options and added tokens. (The vision side is services/vision/pink_clip_config.h.) */
#ifndef LION_PINK_CONFIG_H
#define LION_PINK_CONFIG_H

#include "llama.h"
#include "llama_tokenizer.h"
#include "model_config.h"
#include "status.h"

/* The decoder's dimensions and adapters; model_config_load checked them. */
void pink_llama_config(const pink_llm_config *l, llama_config *out);

/* tokenizer.model with the HF settings and added tokens of t (llama_tokenizer.h); fails when the
 * model's bos or eos differs from t's, or when the vocabulary (pieces and added tokens) is larger
 * than vocab_size (the embedding's rows). */
int pink_tokenizer_load(const pink_tokenizer_config *t, int vocab_size, llama_tok **out, lion_status *st);

#endif
