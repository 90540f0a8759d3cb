/* lion-llm: the LLM worker. Connects to the gateway's llm endpoint and answers jobs with
 * generated text, token ids and boxes (services/llm/llm_stage.h).
 *
 *   lion-llm --gateway tcp://127.0.0.1:5554 [--model models/tiny-lion] [--threads N]
 *            [worker options, see --help] */
#include <stdio.h>

#include "llm_stage.h"
#include "log.h"
#include "threads.h"
#include "worker.h"

int main(int argc, char **argv) {
    worker_config cfg;
    lion_status st;
    log_init("llm", LOG_INFO);
    if (worker_config_parse(&cfg, "llm", argc, argv, &st)) {
        log_error("%s", st.msg);
        return 2;
    }
    if (cfg.help) {
        worker_usage(stdout, "lion-llm");
        return 0;
    }
    log_init(cfg.replica_id, LOG_INFO);
    threads_init(cfg.threads);
    llm_stage stage;
    const char *model = cfg.model_dir ? cfg.model_dir : "models/tiny-lion";
    if (llm_stage_open(&stage, model, &st)) {
        log_error("%s", st.msg);
        return 1;
    }
    worker_stage ws = {.stage = LION__STAGE__LLM, .process = llm_stage_process, .ctx = &stage};
    int rc = worker_run(&cfg, &ws, &st);
    if (rc) log_error("%s", st.msg);
    llm_stage_close(&stage);
    return rc ? 1 : 0;
}
