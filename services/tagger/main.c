/* lion-tagger: the tagger worker. Connects to the gateway's tagger endpoint and answers
 * jobs with RAM's tags and LION's tag prompt string (services/tagger/tagger_stage.h).
 *
 *   lion-tagger --gateway tcp://127.0.0.1:5552 [--model models/tiny-lion] [--threads N]
 *               [worker options, see --help] */
#include <stdlib.h>

#include "tagger_stage.h"
#include "worker_main.h"

static void *tagger_open(const worker_config *cfg, lion_status *st) {
    tagger_stage *s = malloc(sizeof *s);
    if (!s) lion_fail(st, LION_ENOMEM, "tagger: out of memory");
    else if (tagger_stage_open(s, cfg->model_dir, cfg->max_batch, st)) s = (free(s), NULL);
    return s;
}

static void tagger_close(void *s) {
    tagger_stage_close(s);
    free(s);
}

int main(int argc, char **argv) {
    const worker_service svc = {.name = "tagger", .stage = LION__STAGE__TAGGER, .open = tagger_open,
                                .close = tagger_close, .process = tagger_stage_process};
    return worker_main(&svc, argc, argv);
}
