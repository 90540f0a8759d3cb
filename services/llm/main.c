/* lion-llm: the LLM worker. Connects to the gateway's llm endpoint and answers jobs with
 * generated text, token ids and boxes (services/llm/llm_stage.h).
 *
 *   lion-llm --gateway tcp://127.0.0.1:5554 [--model models/tiny-lion] [--threads N]
 *            [--precision auto|f32|bf16] [worker options, see --help]
 *
 * --precision bf16 holds the decoder step's matrices in bf16 (services/llm/t5.h); auto does
 * so only on CPUs with native bf16. */
#include <stdlib.h>

#include "llm_stage.h"
#include "worker_main.h"

static void *llm_open(const worker_config *cfg, lion_status *st) {
    llm_stage *s = malloc(sizeof *s);
    if (!s) lion_fail(st, LION_ENOMEM, "llm: out of memory");
    else if (llm_stage_open_with(s, cfg->model_dir, cfg->precision, st)) s = (free(s), NULL);
    return s;
}

static void llm_close(void *s) {
    llm_stage_close(s);
    free(s);
}

int main(int argc, char **argv) {
    const worker_service svc = {.name = "llm", .stage = LION__STAGE__LLM, .open = llm_open, .close = llm_close,
                                .process = llm_stage_process, .precisions = PRECISION_BIT(PRECISION_BF16)};
    return worker_main(&svc, argc, argv);
}
