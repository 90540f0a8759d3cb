#include "worker_main.h"

#include <stdio.h>

#include "cpu_features.h"
#include "log.h"
#include "model_config.h"
#include "onednn_matmul.h"
#include "precision.h"
#include "threads.h"
#include "worker_check.h"
#include "worker_gateways.h"

/* With several gateways, what each is announced at start ("shared by 2 gateways: 2 + 2"),
 * so that a check shows how the capacity splits (worker_gateways_credit). */
static void describe_shares(const worker_config *cfg, char *out, size_t size) {
    out[0] = '\0';
    worker_gateways gws;
    lion_status st;
    if (worker_gateways_parse(&gws, cfg, &st) == 0 && gws.n > 1) {
        int up[WORKER_MAX_GATEWAYS], held[WORKER_MAX_GATEWAYS] = {0};
        for (int i = 0; i < gws.n; i++) up[i] = 1;
        size_t used = (size_t)snprintf(out, size, " (shared by %d gateways: ", gws.n);
        for (int i = 0; i < gws.n && used < size; i++)
            used += (size_t)snprintf(out + used, size - used, "%s%d", i ? " + " : "",
                                     worker_gateways_credit(cfg->capacity, gws.n, up, held, i));
        if (used < size) snprintf(out + used, size - used, ")");
    }
    worker_gateways_free(&gws);
}

/* --check-config's one line, on stdout: what this start would run. */
static void print_summary(const worker_service *svc, const worker_config *cfg, const char *precision,
                          const char *link) {
    char shares[160];
    describe_shares(cfg, shares, sizeof shares);
    printf("lion-%s: configuration OK: stage %s, model %s, %s, gateway%s %s over %s, replica %s, threads %d, "
           "capacity %d%s, max batch %d, ready file %s\n",
           svc->name, svc->name, cfg->model_dir, precision, shares[0] ? "s" : "", cfg->gateway, link,
           cfg->replica_id, threads_count(), cfg->capacity, shares, cfg->max_batch,
           cfg->ready_file ? cfg->ready_file : "none");
    fflush(stdout);
}

/* What the worker announces in its credit: the model directory's name and family, so that a
 * gateway serving several models puts it in that model's pool. Read from model.json once more
 * (the stage keeps its config to itself; no weights are touched). A directory that does not
 * say leaves the worker unannounced, which a gateway takes for its default model. */
static void read_announcement(const char *model_dir, char *name, size_t size, const char **family) {
    model_config mc;
    lion_status st;
    if (model_config_load(&mc, model_dir, &st) != 0) {
        log_warn("%s; announcing no model (a gateway takes this worker for its default model)", st.msg);
        return;
    }
    snprintf(name, size, "%s", mc.name ? mc.name : "");
    *family = model_family_name(mc.family); /* a static string */
    model_config_free(&mc);
}

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
    /* a file left by a killed run must not say ready while this one loads its model */
    if (!cfg.check_config) worker_ready_file_remove(&cfg);
    /* before the model: a key file that is missing or readable by others, or a gateway
     * reached without CURVE, is told at once, not after a large model has loaded */
    char link[512]; /* with several gateways, a key each */
    if (worker_check_link(&cfg, link, sizeof link, &st) || worker_check_ready_file(&cfg, &st)) {
        log_error("%s", st.msg);
        return 2;
    }
    threads_init(cfg.threads);
    const char *why;
    char line[160];
    const lion_precision asked = cfg.precision;
    /* native: the CPU has bf16 instructions and oneDNN dispatches to them (ONEDNN_MAX_CPU_ISA
     * may cap it below) */
    cfg.precision = precision_resolve(asked, cpu_native_bf16() && onednn_bf16_native(), svc->precisions, &why);
    precision_describe(line, sizeof line, cfg.precision, why);
    if (asked == PRECISION_BF16 && cfg.precision != PRECISION_BF16) log_warn("%s", line);
    else log_info("%s", line);
    /* --check-config opens the stage as a start does: model.json, the weight files' headers,
     * shapes and dtypes, the tokenizers; a start and a check cannot disagree about them */
    void *ctx = svc->open(&cfg, &st);
    if (!ctx) {
        lion_fail_prefix(&st, "--model %s: ", cfg.model_dir);
        log_error("%s", st.msg);
        return 1;
    }
    if (cfg.check_config) {
        print_summary(svc, &cfg, line, link);
        svc->close(ctx);
        return 0;
    }
    if (worker_ready_file_write(&cfg, &st)) {
        log_error("%s", st.msg);
        svc->close(ctx);
        return 1;
    }
    char model[256] = "";
    const char *family = NULL;
    read_announcement(cfg.model_dir, model, sizeof model, &family);
    worker_stage ws = {.stage = svc->stage, .process = svc->process, .admit = svc->admit, .step = svc->step,
                       .ctx = ctx, .cache_stats = svc->cache_stats, .decode_stats = svc->decode_stats,
                       .precision = precision_name(cfg.precision), .isa = cpu_isa_name(),
                       .model = model[0] ? model : NULL, .family = family};
    int rc = worker_run(&cfg, &ws, &st);
    worker_ready_file_remove(&cfg);
    if (rc) log_error("%s", st.msg);
    svc->close(ctx);
    return rc ? 1 : 0;
}
