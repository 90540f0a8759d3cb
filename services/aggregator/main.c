/* lion-aggregator: the aggregator worker. Connects to the gateway's aggregator endpoint and
 * answers jobs with the LLM's visual tokens from the Q-Former and the vision aggregator
 * (services/aggregator/aggregator_stage.h).
 *
 *   lion-aggregator --gateway tcp://127.0.0.1:5553 [--model models/tiny-lion] [--threads N]
 *                   [--precision auto|f32|bf16] [worker options, see --help]
 *
 * --precision bf16 holds the Q-Former's and the fusion adapter's matrices in bf16
 * (services/aggregator/aggregate.h); auto does so only on CPUs with native bf16. */
#include <stdlib.h>

#include "aggregator_stage.h"
#include "worker_main.h"

static void *aggregator_open(const worker_config *cfg, lion_status *st) {
    aggregator_stage *s = malloc(sizeof *s);
    if (!s) lion_fail(st, LION_ENOMEM, "aggregator: out of memory");
    else if (aggregator_stage_open(s, cfg->model_dir, cfg->max_batch, cfg->precision, st)) s = (free(s), NULL);
    return s;
}

static void aggregator_close(void *s) {
    aggregator_stage_close(s);
    free(s);
}

int main(int argc, char **argv) {
    const worker_service svc = {.name = "aggregator", .stage = LION__STAGE__AGGREGATOR, .open = aggregator_open,
                                .close = aggregator_close, .process = aggregator_stage_process,
                                .precisions = PRECISION_BIT(PRECISION_BF16)};
    return worker_main(&svc, argc, argv);
}
