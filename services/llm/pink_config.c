/* pink_config.c - model.json's pink section as the llm stage's structs (see pink_config.h). */
#include "pink_config.h"

#include <stdlib.h>
#include <string.h>

void pink_llama_config(const pink_llm_config *l, llama_config *out) {
    memset(out, 0, sizeof *out);
    out->dim = l->dim;
    out->hidden = l->hidden;
    out->layers = l->layers;
    out->heads = l->heads;
    out->kv_heads = l->kv_heads;
    out->vocab_size = l->vocab_size;
    out->rms_eps = l->rms_eps;
    out->rope_theta = l->rope_theta;
    out->adapter_dim = l->adapter_dim;
    out->adapter_attn = l->adapter_dim ? l->adapter_attn : 0;
    out->adapter_mlp = l->adapter_dim ? l->adapter_mlp : 0;
    out->adapter_silu = l->adapter_dim ? l->adapter_silu : 0;
}

int pink_tokenizer_load(const pink_tokenizer_config *t, int vocab_size, llama_tok **out, lion_status *st) {
    *out = NULL;
    llama_tok_added *added = calloc((size_t)t->n_added + 1, sizeof *added);
    if (!added) return lion_fail(st, LION_ENOMEM, "%s: out of memory", t->file);
    for (int i = 0; i < t->n_added; i++) added[i] = (llama_tok_added){t->added[i].content, t->added[i].id};
    llama_tok_options o = {.legacy = t->legacy, .add_bos = t->add_bos, .add_eos = t->add_eos,
                           .clean_up_tokenization_spaces = t->clean_up_spaces, .added = added,
                           .n_added = (size_t)t->n_added};
    llama_tok *tok = NULL;
    int rc = llama_tok_load(t->file, &o, &tok, st); /* copies the options */
    free(added);
    if (rc) return -1;
    if (llama_tok_bos_id(tok) != t->bos_id || llama_tok_eos_id(tok) != t->eos_id) {
        lion_fail(st, LION_EFORMAT, "%s: bos %d and eos %d, but model.json's pink.tokenizer says %d and %d", t->file,
                  llama_tok_bos_id(tok), llama_tok_eos_id(tok), t->bos_id, t->eos_id);
        llama_tok_free(tok);
        return -1;
    }
    if (llama_tok_vocab_size(tok) > (size_t)vocab_size) {
        lion_fail(st, LION_EFORMAT, "%s: %zu tokens with the added ones, more than pink.llm.vocab_size %d", t->file,
                  llama_tok_vocab_size(tok), vocab_size);
        llama_tok_free(tok);
        return -1;
    }
    *out = tok;
    return 0;
}
