/* lion-aggregator: the aggregator worker. Connects to the gateway's aggregator endpoint and
 * answers jobs with the LLM's visual tokens from the Q-Former and the vision aggregator
 * (services/aggregator/aggregator_stage.h).
 *
 *   lion-aggregator --gateway tcp://127.0.0.1:5553 [--model models/tiny-lion] [--threads N]
 *                   [worker options, see --help] */
#include "aggregator_stage.h"
#include "log.h"
#include "threads.h"
#include "worker.h"

int main(int argc, char **argv) {
    worker_config cfg;
    lion_status st;
    log_init("aggregator", LOG_INFO);
    if (worker_config_parse(&cfg, "aggregator", argc, argv, &st)) {
        log_error("%s", st.msg);
        return 2;
    }
    if (cfg.help) {
        worker_usage(stdout, "lion-aggregator");
        return 0;
    }
    log_init(cfg.replica_id, LOG_INFO);
    threads_init(cfg.threads);
    aggregator_stage stage;
    const char *model = cfg.model_dir ? cfg.model_dir : "models/tiny-lion";
    if (aggregator_stage_open(&stage, model, cfg.max_batch, &st)) {
        log_error("%s", st.msg);
        return 1;
    }
    worker_stage ws = {.stage = LION__STAGE__AGGREGATOR, .process = aggregator_stage_process, .ctx = &stage};
    int rc = worker_run(&cfg, &ws, &st);
    if (rc) log_error("%s", st.msg);
    aggregator_stage_close(&stage);
    return rc ? 1 : 0;
}
