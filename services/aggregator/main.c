/* lion-aggregator: the aggregator worker. Connects to the gateway's aggregator endpoint and
 * answers jobs with the LLM's visual tokens from the Q-Former and the vision aggregator
 * (services/aggregator/aggregator_stage.h).
 *
 *   lion-aggregator --gateway tcp://127.0.0.1:5553 [--model models/tiny-lion] [--threads N]
 *                   [worker options, see --help] */
#include <stdlib.h>

#include "aggregator_stage.h"
#include "worker_main.h"

static void *aggregator_open(const worker_config *cfg, lion_status *st) {
    aggregator_stage *s = malloc(sizeof *s);
    if (!s) lion_fail(st, LION_ENOMEM, "aggregator: out of memory");
    else if (aggregator_stage_open(s, cfg->model_dir, cfg->max_batch, st)) s = (free(s), NULL);
    return s;
}

static void aggregator_close(void *s) {
    aggregator_stage_close(s);
    free(s);
}

int main(int argc, char **argv) {
    const worker_service svc = {.name = "aggregator", .stage = LION__STAGE__AGGREGATOR, .open = aggregator_open,
                                .close = aggregator_close, .process = aggregator_stage_process};
    return worker_main(&svc, argc, argv);
}
