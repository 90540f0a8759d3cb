#include "worker_main.h"

#include <stdio.h>

#include "cpu_features.h"
#include "log.h"
#include "precision.h"
#include "threads.h"

int worker_main(const worker_service *svc, int argc, char **argv) {
    worker_config cfg;
    lion_status st;
    log_init(svc->name, LOG_INFO);
    if (worker_config_parse_with(&cfg, svc->name, &svc->options, argc, argv, &st)) {
        log_error("%s", st.msg);
        return 2;
    }
    if (cfg.help) {
        char program[64];
        snprintf(program, sizeof program, "lion-%s", svc->name);
        worker_usage(stdout, program, &svc->options);
        return 0;
    }
    if (!cfg.model_dir) cfg.model_dir = WORKER_DEFAULT_MODEL;
    log_init(cfg.replica_id, LOG_INFO);
    threads_init(cfg.threads);
    const char *why;
    char line[160];
    const lion_precision asked = cfg.precision;
    cfg.precision = precision_resolve(asked, cpu_native_bf16(), svc->precisions, &why);
    precision_describe(line, sizeof line, cfg.precision, why);
    if (asked == PRECISION_BF16 && cfg.precision != PRECISION_BF16) log_warn("%s", line);
    else log_info("%s", line);
    void *ctx = svc->open(&cfg, &st);
    if (!ctx) {
        log_error("%s", st.msg);
        return 1;
    }
    worker_stage ws = {.stage = svc->stage, .process = svc->process, .admit = svc->admit, .step = svc->step,
                       .ctx = ctx, .cache_stats = svc->cache_stats, .decode_stats = svc->decode_stats,
                       .precision = precision_name(cfg.precision), .isa = cpu_isa_name()};
    int rc = worker_run(&cfg, &ws, &st);
    if (rc) log_error("%s", st.msg);
    svc->close(ctx);
    return rc ? 1 : 0;
}
