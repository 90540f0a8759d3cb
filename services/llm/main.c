/* lion-llm: the LLM worker. Connects to the gateway's llm endpoint and answers jobs with
 * generated text, token ids and boxes (services/llm/llm_stage.h), batching them
 * continuously (llm_batching.c).
 *
 *   lion-llm --gateway tcp://127.0.0.1:5554 [--model models/tiny-lion] [--threads N]
 *            [--precision auto|f32|bf16] [--kv-budget-mb 4096] [--prefill-tokens 1024]
 *            [worker options, see --help]
 *
 * --precision bf16 holds every matrix of the model in bf16 (services/llm/t5.h, llama.h); auto
 * does so only on CPUs with native bf16. --capacity (jobs held, default 32 here) bounds what the
 * gateway sends; --kv-budget-mb bounds the decoding state of the jobs decoding at once (the
 * others wait, held, until it has room); --prefill-tokens bounds the encoder work done
 * between two decoder steps, and so how much a newcomer slows the jobs decoding. */
#include <stdlib.h>

#include "llm_stage.h"
#include "worker_main.h"

typedef struct llm_options {
    size_t kv_budget_mb;
    int prefill_tokens;
} llm_options;

static llm_options options = {.kv_budget_mb = LLM_DEFAULT_KV_BUDGET_MB, .prefill_tokens = LLM_DEFAULT_PREFILL_TOKENS};

static const args_option llm_args[] = {
    {.name = "--kv-budget-mb", .env = "LION_KV_BUDGET_MB", .metavar = "MB", .kind = ARG_SIZE,
     ARGS_AT(llm_options, kv_budget_mb), .min = 0, .max = (long long)1 << 20,
     .help = "decoding state (KV caches) of the jobs decoding at once, 0: no limit", .deflt = "4096"},
    {.name = "--prefill-tokens", .env = "LION_PREFILL_TOKENS", .metavar = "N", .kind = ARG_INT,
     ARGS_AT(llm_options, prefill_tokens), .min = 1, .max = 1 << 20,
     .help = "encoder tokens between two decoder steps (at least one job)", .deflt = "1024"},
};

static void *llm_open(const worker_config *cfg, lion_status *st) {
    llm_stage *s = malloc(sizeof *s);
    if (!s) lion_fail(st, LION_ENOMEM, "llm: out of memory");
    else if (llm_stage_open_budget(s, cfg->model_dir, cfg->precision, options.kv_budget_mb << 20, st))
        s = (free(s), NULL);
    if (s) s->prefill_tokens = options.prefill_tokens;
    return s;
}

static void llm_close(void *s) {
    llm_stage_close(s);
    free(s);
}

int main(int argc, char **argv) {
    const worker_service svc = {.name = "llm", .stage = LION__STAGE__LLM, .open = llm_open, .close = llm_close,
                                .admit = llm_stage_admit, .step = llm_stage_step,
                                .decode_stats = llm_stage_decode_stats,
                                .options = ARGS_TABLE(llm_args, &options),
                                .precisions = PRECISION_BIT(PRECISION_BF16)};
    return worker_main(&svc, argc, argv);
}
