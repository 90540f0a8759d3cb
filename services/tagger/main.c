/* lion-tagger: the tagger worker. Connects to the gateway's tagger endpoint and answers
 * jobs with RAM's tags and LION's tag prompt string (services/tagger/tagger_stage.h).
 *
 *   lion-tagger --gateway tcp://127.0.0.1:5552 [--model models/tiny-lion] [--threads N]
 *               [worker options, see --help] */
#include <stdio.h>

#include "log.h"
#include "tagger_stage.h"
#include "threads.h"
#include "worker.h"

int main(int argc, char **argv) {
    worker_config cfg;
    lion_status st;
    log_init("tagger", LOG_INFO);
    if (worker_config_parse(&cfg, "tagger", argc, argv, &st)) {
        log_error("%s", st.msg);
        return 2;
    }
    if (cfg.help) {
        worker_usage(stdout, "lion-tagger");
        return 0;
    }
    log_init(cfg.replica_id, LOG_INFO);
    threads_init(cfg.threads);
    tagger_stage stage;
    const char *model = cfg.model_dir ? cfg.model_dir : "models/tiny-lion";
    if (tagger_stage_open(&stage, model, cfg.max_batch, &st)) {
        log_error("%s", st.msg);
        return 1;
    }
    worker_stage ws = {.stage = LION__STAGE__TAGGER, .process = tagger_stage_process, .ctx = &stage};
    int rc = worker_run(&cfg, &ws, &st);
    if (rc) log_error("%s", st.msg);
    tagger_stage_close(&stage);
    return rc ? 1 : 0;
}
