/* test_args: common/core/args (the option table every binary parses with), and the tables
 * of the worker and the gateway built on it: both spellings, environment then command
 * line, every kind, and the exact messages of every refusal. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "gateway.h"
#include "protocol.h"
#include "testing.h"
#include "worker.h"

typedef struct demo {
    int batch;
    long count;
    size_t bytes;
    double ratio;
    const char *name;
    int verbose;
    char host[32];
    int port;
} demo;

/* HOST:PORT, the way a custom option parses what no kind covers. */
static int set_host_port(const args_option *opt, void *base, const char *name, const char *text, lion_status *st) {
    demo *d = base;
    const char *colon = strrchr(text, ':');
    if (!colon || colon == text || (size_t)(colon - text) >= sizeof d->host)
        return lion_fail(st, LION_EINVAL, "%s: expected HOST:PORT, got '%s'", name, text);
    snprintf(d->host, sizeof d->host, "%.*s", (int)(colon - text), text);
    d->port = atoi(colon + 1);
    return 0;
}

static const args_option demo_options[] = {
    {.name = "--max-batch", .env = "TEST_ARGS_MAX_BATCH", .metavar = "N", .kind = ARG_INT, ARGS_AT(demo, batch),
     .min = 1, .max = 4096, .help = "jobs per forward"},
    {.name = "--count", .env = "TEST_ARGS_COUNT", .metavar = "N", .kind = ARG_LONG, ARGS_AT(demo, count), .min = -5,
     .max = 10000000000L, .help = "how many"},
    {.name = "--bytes", .metavar = "B", .kind = ARG_SIZE, ARGS_AT(demo, bytes), .min = 16, .max = 1LL << 40,
     .help = "a size"},
    {.name = "--ratio", .env = "TEST_ARGS_RATIO", .metavar = "R", .kind = ARG_DOUBLE, ARGS_AT(demo, ratio), .fmin = 0.5,
     .fmax = 2.0, .help = "a ratio"},
    {.name = "--name", .env = "TEST_ARGS_NAME", .metavar = "NAME", .kind = ARG_STRING, ARGS_AT(demo, name), .min = 1,
     .max = 8, .help = "a short name"},
    {.name = "--verbose", .env = "TEST_ARGS_VERBOSE", .kind = ARG_FLAG, ARGS_AT(demo, verbose), .help = "say more"},
    {.name = "--listen", .metavar = "HOST:PORT", .kind = ARG_CUSTOM, .set = set_host_port, .help = "an address",
     .deflt = "127.0.0.1:80"},
};

static const demo demo_defaults = {.batch = 4, .count = 0, .bytes = 1024, .ratio = 1.0, .name = "lion"};

/* Parses argv (NULL-terminated) into *d from the defaults; the status says why not. */
static int parse(demo *d, const char **argv, args_parsed *parsed, lion_status *st) {
    int argc = 0;
    while (argv[argc]) argc++;
    *d = demo_defaults;
    args_table table = ARGS_TABLE(demo_options, d);
    lion_status_clear(st);
    return args_parse(&table, 1, 2, argc, (char **)argv, parsed, st);
}

/* The parse must fail with exactly this message. */
static void check_refused(const char **argv, const char *want) {
    demo d;
    args_parsed parsed;
    lion_status st;
    CHECK_EQ_INT(parse(&d, argv, &parsed, &st), -1);
    CHECK_EQ_INT(st.code, LION_EINVAL);
    CHECK_MSG(!strcmp(st.msg, want), "message \"%s\", expected \"%s\"", st.msg, want);
}

static void check_forms_and_kinds(void) {
    demo d;
    args_parsed parsed;
    lion_status st;
    const char *space[] = {"prog", "--max-batch", "12", "--count", "-5", "--bytes", "1099511627776", "--ratio",
                           "0.75", "--name", "cat", "--verbose", "--listen", "example.org:8080", NULL};
    CHECK_EQ_INT(parse(&d, space, &parsed, &st), 0);
    CHECK_EQ_INT(d.batch, 12);
    CHECK_EQ_INT(d.count, -5);
    CHECK(d.bytes == (size_t)1 << 40);
    CHECK(d.ratio == 0.75);
    CHECK(!strcmp(d.name, "cat"));
    CHECK_EQ_INT(d.verbose, 1);
    CHECK(!strcmp(d.host, "example.org") && d.port == 8080);
    CHECK_EQ_INT(parsed.help, 0);
    CHECK_EQ_INT(parsed.n_positional, 0);

    const char *equals[] = {"prog", "--max-batch=13", "--count=10000000000", "--bytes=16", "--ratio=2",
                            "--name=12345678", "--verbose=no", "--listen=h:1", NULL};
    CHECK_EQ_INT(parse(&d, equals, &parsed, &st), 0);
    CHECK_EQ_INT(d.batch, 13);
    CHECK(d.count == 10000000000L);
    CHECK_EQ_INT(d.bytes, 16);
    CHECK(d.ratio == 2.0);
    CHECK(!strcmp(d.name, "12345678"));
    CHECK_EQ_INT(d.verbose, 0);
    CHECK(!strcmp(d.host, "h") && d.port == 1);

    /* not given: the defaults stay; a later option overrides an earlier one */
    const char *twice[] = {"prog", "--max-batch", "2", "--max-batch=3", NULL};
    CHECK_EQ_INT(parse(&d, twice, &parsed, &st), 0);
    CHECK_EQ_INT(d.batch, 3);
    CHECK(d.bytes == 1024 && d.ratio == 1.0 && !strcmp(d.name, "lion") && d.verbose == 0);

    /* a value is the next argument even when it starts with '-'; "--name=" is an empty value */
    const char *dash[] = {"prog", "--count", "-1", NULL};
    CHECK_EQ_INT(parse(&d, dash, &parsed, &st), 0);
    CHECK_EQ_INT(d.count, -1);
    const char *empty[] = {"prog", "--name=", NULL};
    check_refused(empty, "--name: '' is 0 bytes, not in [1, 8]");
}

static void check_positional_and_help(void) {
    demo d;
    args_parsed parsed;
    lion_status st;
    const char *args[] = {"prog", "show", "--max-batch", "5", "file.dump", NULL};
    CHECK_EQ_INT(parse(&d, args, &parsed, &st), 0);
    CHECK_EQ_INT(parsed.n_positional, 2);
    CHECK(!strcmp(parsed.positional[0], "show") && !strcmp(parsed.positional[1], "file.dump"));
    CHECK_EQ_INT(d.batch, 5);

    /* after "--" everything is positional; a lone "-" is one (stdin, by convention) */
    const char *rest[] = {"prog", "-", "--", "--max-batch", NULL};
    CHECK_EQ_INT(parse(&d, rest, &parsed, &st), 0);
    CHECK_EQ_INT(parsed.n_positional, 2);
    CHECK(!strcmp(parsed.positional[0], "-") && !strcmp(parsed.positional[1], "--max-batch"));
    CHECK_EQ_INT(d.batch, 4);

    const char *three[] = {"prog", "a", "b", "c", NULL};
    check_refused(three, "unexpected argument 'c' (too many arguments)");

    const char *help[] = {"prog", "--max-batch", "7", "--help", NULL};
    CHECK_EQ_INT(parse(&d, help, &parsed, &st), 0);
    CHECK_EQ_INT(parsed.help, 1);
    CHECK_EQ_INT(d.batch, 7);
    const char *h[] = {"prog", "-h", NULL};
    CHECK_EQ_INT(parse(&d, h, &parsed, &st), 0);
    CHECK_EQ_INT(parsed.help, 1);

    /* a table without positionals refuses them */
    const char *argv[] = {"prog", "stray", NULL};
    args_table table = ARGS_TABLE(demo_options, &d);
    CHECK_EQ_INT(args_parse(&table, 1, 0, 2, (char **)argv, &parsed, &st), -1);
    CHECK(!strcmp(st.msg, "unexpected argument 'stray' (options only; see --help)"));
}

static void check_refusals(void) {
    const char *zero[] = {"prog", "--max-batch", "0", NULL};
    check_refused(zero, "--max-batch: 0 is not in [1, 4096]");
    const char *over[] = {"prog", "--max-batch=4097", NULL};
    check_refused(over, "--max-batch: 4097 is not in [1, 4096]");
    const char *huge[] = {"prog", "--max-batch", "99999999999999999999999", NULL};
    check_refused(huge, "--max-batch: 99999999999999999999999 is not in [1, 4096]");
    const char *junk[] = {"prog", "--max-batch", "12x", NULL};
    check_refused(junk, "--max-batch: '12x' is not an integer in [1, 4096]");
    const char *word[] = {"prog", "--count", "many", NULL};
    check_refused(word, "--count: 'many' is not an integer in [-5, 10000000000]");
    const char *space[] = {"prog", "--max-batch", " 12", NULL};
    check_refused(space, "--max-batch: ' 12' is not an integer in [1, 4096]");
    const char *hex[] = {"prog", "--max-batch", "0x10", NULL};
    check_refused(hex, "--max-batch: '0x10' is not an integer in [1, 4096]");
    const char *empty[] = {"prog", "--max-batch=", NULL};
    check_refused(empty, "--max-batch: '' is not an integer in [1, 4096]");
    const char *small[] = {"prog", "--bytes", "15", NULL};
    check_refused(small, "--bytes: 15 is not in [16, 1099511627776]");
    const char *negative[] = {"prog", "--bytes", "-1", NULL};
    check_refused(negative, "--bytes: -1 is not in [16, 1099511627776]");
    const char *ratio[] = {"prog", "--ratio", "2.5", NULL};
    check_refused(ratio, "--ratio: 2.5 is not in [0.5, 2]");
    const char *nan[] = {"prog", "--ratio", "nan", NULL};
    check_refused(nan, "--ratio: 'nan' is not a number in [0.5, 2]");
    const char *ratio_junk[] = {"prog", "--ratio=1.0e", NULL};
    check_refused(ratio_junk, "--ratio: '1.0e' is not a number in [0.5, 2]");
    const char *long_name[] = {"prog", "--name", "123456789", NULL};
    check_refused(long_name, "--name: '123456789' is 9 bytes, not in [1, 8]");
    const char *flag_value[] = {"prog", "--verbose=maybe", NULL};
    check_refused(flag_value, "--verbose: 'maybe' is not one of 1, 0, true, false, yes, no, on, off");
    const char *custom[] = {"prog", "--listen", "nowhere", NULL};
    check_refused(custom, "--listen: expected HOST:PORT, got 'nowhere'");
    const char *unknown[] = {"prog", "--max-bach", "3", NULL};
    check_refused(unknown, "unknown option '--max-bach' (see --help)");
    const char *unknown_eq[] = {"prog", "--colour=red", NULL};
    check_refused(unknown_eq, "unknown option '--colour' (see --help)");
    const char *single[] = {"prog", "-x", NULL};
    check_refused(single, "unknown option '-x' (see --help)");
    const char *missing[] = {"prog", "--max-batch", NULL};
    check_refused(missing, "--max-batch needs a value (N)");
    const char *missing_custom[] = {"prog", "--listen", NULL};
    check_refused(missing_custom, "--listen needs a value (HOST:PORT)");
}

/* The environment is read first, the command line overrides it; a bad environment value
 * is refused naming the variable. */
static void check_environment(void) {
    demo d;
    args_parsed parsed;
    lion_status st;
    setenv("TEST_ARGS_MAX_BATCH", "9", 1);
    setenv("TEST_ARGS_RATIO", "1.5", 1);
    setenv("TEST_ARGS_NAME", "env", 1);
    setenv("TEST_ARGS_VERBOSE", "yes", 1);
    const char *none[] = {"prog", NULL};
    CHECK_EQ_INT(parse(&d, none, &parsed, &st), 0);
    CHECK_EQ_INT(d.batch, 9);
    CHECK(d.ratio == 1.5 && !strcmp(d.name, "env") && d.verbose == 1);
    const char *over[] = {"prog", "--max-batch=10", "--name", "argv", "--verbose=off", NULL};
    CHECK_EQ_INT(parse(&d, over, &parsed, &st), 0);
    CHECK_EQ_INT(d.batch, 10);
    CHECK(d.ratio == 1.5 && !strcmp(d.name, "argv") && d.verbose == 0);

    setenv("TEST_ARGS_MAX_BATCH", "0", 1);
    check_refused(none, "TEST_ARGS_MAX_BATCH: 0 is not in [1, 4096]");
    setenv("TEST_ARGS_MAX_BATCH", "4k", 1);
    check_refused(none, "TEST_ARGS_MAX_BATCH: '4k' is not an integer in [1, 4096]");
    unsetenv("TEST_ARGS_MAX_BATCH");
    setenv("TEST_ARGS_VERBOSE", "2", 1);
    check_refused(none, "TEST_ARGS_VERBOSE: '2' is not one of 1, 0, true, false, yes, no, on, off");
    unsetenv("TEST_ARGS_VERBOSE");
    unsetenv("TEST_ARGS_RATIO");
    unsetenv("TEST_ARGS_NAME");
}

/* Tables are checked before anything is written through them. */
static void check_bad_tables(void) {
    demo d = demo_defaults;
    args_parsed parsed;
    lion_status st;
    char *argv[] = {"prog", NULL};
    const args_option wrong_size[] = {
        {.name = "--bytes", .metavar = "N", .kind = ARG_INT, ARGS_AT(demo, bytes), .min = 0, .max = 10}};
    args_table t1 = ARGS_TABLE(wrong_size, &d);
    CHECK_EQ_INT(args_parse(&t1, 1, 0, 1, argv, &parsed, &st), -1);
    CHECK_EQ_INT(st.code, LION_EINTERNAL);
    CHECK_CONTAINS(st.msg, "--bytes: kind 0 does not fit its field of 8 bytes");
    const args_option wide[] = {
        {.name = "--max-batch", .metavar = "N", .kind = ARG_INT, ARGS_AT(demo, batch), .min = 0, .max = 1LL << 40}};
    args_table t2 = ARGS_TABLE(wide, &d);
    CHECK_EQ_INT(args_parse(&t2, 1, 0, 1, argv, &parsed, &st), -1);
    CHECK_CONTAINS(st.msg, "--max-batch: range [0, 1099511627776] does not fit its kind");
    args_table twice[2] = {ARGS_TABLE(demo_options, &d), ARGS_TABLE(demo_options, &d)};
    CHECK_EQ_INT(args_parse(twice, 2, 0, 1, argv, &parsed, &st), -1);
    CHECK_CONTAINS(st.msg, "--max-batch is listed twice");
}

/* Two tables on one command line, each writing its own struct. */
typedef struct extra {
    int level;
} extra;

static const args_option extra_options[] = {
    {.name = "--level", .env = "TEST_ARGS_LEVEL", .metavar = "L", .kind = ARG_INT, ARGS_AT(extra, level), .min = 0,
     .max = 9, .help = "a service's own option"},
};

static void check_two_tables(void) {
    demo d = demo_defaults;
    extra e = {.level = 1};
    args_table tables[2] = {ARGS_TABLE(demo_options, &d), ARGS_TABLE(extra_options, &e)};
    args_parsed parsed;
    lion_status st;
    char *argv[] = {"prog", "--level", "7", "--max-batch=2", NULL};
    CHECK_EQ_INT(args_parse(tables, 2, 0, 4, argv, &parsed, &st), 0);
    CHECK_EQ_INT(e.level, 7);
    CHECK_EQ_INT(d.batch, 2);
}

static char *capture_usage(const args_table *tables, int n) {
    FILE *f = tmpfile();
    args_usage(f, tables, n);
    static char text[8192];
    rewind(f);
    size_t len = fread(text, 1, sizeof text - 1, f);
    text[len] = 0;
    fclose(f);
    return text;
}

static void check_usage(void) {
    demo d = demo_defaults;
    extra e = {.level = 0};
    args_table tables[2] = {ARGS_TABLE(demo_options, &d), ARGS_TABLE(extra_options, &e)};
    const char *text = capture_usage(tables, 2);
    for (size_t i = 0; i < sizeof demo_options / sizeof demo_options[0]; i++) {
        CHECK_CONTAINS(text, demo_options[i].name);
        CHECK_CONTAINS(text, demo_options[i].help);
    }
    CHECK_CONTAINS(text, "  --max-batch N             jobs per forward (default 4) [TEST_ARGS_MAX_BATCH]\n");
    CHECK_CONTAINS(text, "  --bytes B                 a size (default 1024)\n");
    CHECK_CONTAINS(text, "  --ratio R                 a ratio (default 1) [TEST_ARGS_RATIO]\n");
    CHECK_CONTAINS(text, "  --name NAME               a short name (default lion) [TEST_ARGS_NAME]\n");
    CHECK_CONTAINS(text, "  --verbose                 say more [TEST_ARGS_VERBOSE]\n");
    CHECK_CONTAINS(text, "  --listen HOST:PORT        an address (default 127.0.0.1:80)\n");
    /* zero is no default worth showing */
    CHECK_CONTAINS(text, "  --count N                 how many [TEST_ARGS_COUNT]\n");
    CHECK_CONTAINS(text, "  --level L                 a service's own option [TEST_ARGS_LEVEL]\n");
    CHECK_CONTAINS(text, "  --help                    this text\n");
}

/* The worker's table: its flags, environment variables and protocol.h limits. */
static void check_worker_table(void) {
    worker_config cfg;
    lion_status st;
    unsetenv("LION_GATEWAY");
    char *ok[] = {"w", "--gateway=tcp://127.0.0.1:9", "--capacity", "4096", "--max-batch=4096", "--threads", "2"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 7, ok, &st), 0);
    CHECK_EQ_INT(cfg.capacity, LION_MAX_CAPACITY);
    CHECK_EQ_INT(cfg.max_batch, LION_MAX_BATCH);
    char *batch_zero[] = {"w", "--gateway", "tcp://a:1", "--max-batch", "0"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 5, batch_zero, &st), -1);
    CHECK(!strcmp(st.msg, "--max-batch: 0 is not in [1, 4096]"));
    char *cap_over[] = {"w", "--gateway", "tcp://a:1", "--capacity=4097"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 4, cap_over, &st), -1);
    CHECK(!strcmp(st.msg, "--capacity: 4097 is not in [1, 4096]"));
    setenv("LION_MAX_BATCH", "2", 1);
    char *env_only[] = {"w", "--gateway", "tcp://a:1"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 3, env_only, &st), 0);
    CHECK_EQ_INT(cfg.max_batch, 2);
    unsetenv("LION_MAX_BATCH");

    /* a service's own options ride along (lion-vision's --cache-mb) */
    extra e = {.level = 1};
    args_table table = ARGS_TABLE(extra_options, &e);
    char *with_extra[] = {"w", "--level", "3", "--gateway", "ipc:///tmp/w"};
    CHECK_EQ_INT(worker_config_parse_with(&cfg, "vision", &table, 5, with_extra, &st), 0);
    CHECK_EQ_INT(e.level, 3);
    CHECK(!strcmp(cfg.gateway, "ipc:///tmp/w"));
    char *extra_unknown[] = {"w", "--level", "3", "--gateway", "ipc:///tmp/w"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 5, extra_unknown, &st), -1);
    CHECK(!strcmp(st.msg, "unknown option '--level' (see --help)"));

    FILE *f = tmpfile();
    worker_usage(f, "lion-test", &table);
    rewind(f);
    char text[4096];
    size_t len = fread(text, 1, sizeof text - 1, f);
    text[len] = 0;
    fclose(f);
    CHECK_CONTAINS(text, "usage: lion-test [options]\n");
    static const char *const flags[] = {"--gateway EP", "--model DIR", "--threads N", "--replica ID",
                                        "--capacity N", "--max-batch N", "--heartbeat-ms N", "--level L", "--help"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) CHECK_CONTAINS(text, flags[i]);
    CHECK_CONTAINS(text, "(default 4) [LION_CAPACITY]");
    CHECK_CONTAINS(text, "(default models/tiny-lion) [LION_MODEL]");
}

/* The gateway's table: HOST:PORT, --bind-base against per-stage endpoints, protocol.h limits. */
static void check_gateway_table(void) {
    gateway_config cfg;
    lion_status st;
    char *none[] = {"gw"};
    CHECK_EQ_INT(gateway_config_parse(&cfg, 1, none, &st), 0);
    CHECK(!strcmp(cfg.listen_host, "127.0.0.1") && cfg.listen_port == 8080);
    CHECK(!strcmp(cfg.stage_endpoint[LION__STAGE__VISION], "tcp://127.0.0.1:5551"));
    CHECK(!strcmp(cfg.stage_endpoint[LION__STAGE__LLM], "tcp://127.0.0.1:5554"));
    CHECK_EQ_INT(cfg.max_prompt_bytes, LION_MAX_INSTRUCTION_BYTES);
    CHECK_EQ_INT(cfg.max_tags, LION_MAX_TAGS);
    CHECK(cfg.tap_endpoint == NULL);

    /* a stage given on its own keeps its endpoint, before or after --bind-base */
    char *mixed[] = {"gw", "--tagger", "ipc:///tmp/t", "--bind-base=tcp://10.0.0.1:7000", "--llm", "tcp://h:1",
                     "--listen", "0.0.0.0:9000", "--max-tags", "0", "--max-body-bytes", "2048", "--help"};
    CHECK_EQ_INT(gateway_config_parse(&cfg, 13, mixed, &st), 0);
    CHECK(!strcmp(cfg.stage_endpoint[LION__STAGE__VISION], "tcp://10.0.0.1:7000"));
    CHECK(!strcmp(cfg.stage_endpoint[LION__STAGE__TAGGER], "ipc:///tmp/t"));
    CHECK(!strcmp(cfg.stage_endpoint[LION__STAGE__AGGREGATOR], "tcp://10.0.0.1:7002"));
    CHECK(!strcmp(cfg.stage_endpoint[LION__STAGE__LLM], "tcp://h:1"));
    CHECK(!strcmp(cfg.listen_host, "0.0.0.0") && cfg.listen_port == 9000);
    CHECK_EQ_INT(cfg.max_tags, 0);
    CHECK_EQ_INT(cfg.max_body_bytes, 2048);
    CHECK_EQ_INT(cfg.help, 1);

    static const struct {
        const char *flag, *value, *want;
    } refused[] = {
        {"--max-tags", "65", "--max-tags: 65 is not in [0, 64]"},
        {"--max-prompt-bytes", "4097", "--max-prompt-bytes: 4097 is not in [1, 4096]"},
        {"--heartbeat-ms", "9", "--heartbeat-ms: 9 is not in [10, 600000]"},
        {"--deadline-ms", "1s", "--deadline-ms: '1s' is not an integer in [1, 86400000]"},
        {"--listen", "8080", "--listen: expected HOST:PORT, got '8080'"},
        {"--listen", "h:80x", "--listen: port '80x' is not an integer in [0, 65535]"},
        {"--bind-base", "udp://h:1", "--bind-base: expected tcp://HOST:PORT, got 'udp://h:1'"},
        {"--bind-base", "tcp://h:65533", "--bind-base: port 65533 is not in [1, 65532]"},
        {"--model-name", "", "--model-name: '' is 0 bytes, not in [1, 120]"},
        {"--vision", "", "--vision: '' is 0 bytes, not in [1, 1024]"},
        {"--ocr", "tcp://h:1", "unknown option '--ocr' (see --help)"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char *argv[] = {"gw", (char *)refused[i].flag, (char *)refused[i].value};
        CHECK_EQ_INT(gateway_config_parse(&cfg, 3, argv, &st), -1);
        CHECK_MSG(!strcmp(st.msg, refused[i].want), "%s %s: \"%s\", expected \"%s\"", refused[i].flag,
                  refused[i].value, st.msg, refused[i].want);
    }
    char *missing[] = {"gw", "--tap"};
    CHECK_EQ_INT(gateway_config_parse(&cfg, 2, missing, &st), -1);
    CHECK(!strcmp(st.msg, "--tap needs a value (EP)"));

    FILE *f = tmpfile();
    gateway_usage(f, "lion-gateway");
    rewind(f);
    char text[8192];
    size_t len = fread(text, 1, sizeof text - 1, f);
    text[len] = 0;
    fclose(f);
    static const char *const flags[] = {
        "--listen HOST:PORT", "--bind-base", "--vision EP", "--tagger EP", "--aggregator EP", "--llm EP", "--tap EP",
        "--model-name NAME", "--deadline-ms N", "--heartbeat-ms N", "--worker-timeout-ms N", "--max-requests N",
        "--max-queue N", "--max-attempts N", "--retry-after-s N", "--max-body-bytes N", "--max-image-bytes N",
        "--max-prompt-bytes N", "--max-tags N", "--idle-timeout-ms N", "--max-connections N", "--help"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) CHECK_CONTAINS(text, flags[i]);
    CHECK_CONTAINS(text, "(default tcp://127.0.0.1:5553)");
    CHECK_CONTAINS(text, "(default 4096)");
}

int main(void) {
    check_forms_and_kinds();
    check_positional_and_help();
    check_refusals();
    check_environment();
    check_bad_tables();
    check_two_tables();
    check_usage();
    check_worker_table();
    check_gateway_table();
    return testing_finish();
}
