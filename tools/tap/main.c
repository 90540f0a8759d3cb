/* lion-tap - watch, dump and replay the gateway's message taps.
 *
 *   lion-tap watch  --tap EP [--request ID] [--stage S] [--data] [--count N] [--timeout-ms T]
 *   lion-tap dump   --tap EP --out FILE [--request ID] [--stage S] [--count N] [--timeout-ms T]
 *   lion-tap show   FILE [--request ID] [--stage S]
 *   lion-tap replay FILE --request ID --stage S --bind EP [--out FILE] [--timeout-ms T]
 *
 * docs/operations.md has examples; docs/wire-protocol.md the tap and dump formats.
 * Exit codes: 0 done, 1 fewer messages than --count / replay differs, 2 usage or error. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "clock.h"
#include "tap_dump.h"
#include "tap_print.h"
#include "tap_replay.h"
#include "tap_watch.h"

typedef struct options {
    const char *command, *file, *tap, *out, *bind;
    const char *curve_server_key, *curve_key;
    int insecure;
    tap_filter filter;
    int data;
    long count, timeout_ms;
} options;

static const args_option tap_options[] = {
    {.name = "--tap", .metavar = "EP", .kind = ARG_STRING, ARGS_AT(options, tap),
     .help = "the gateway's tap endpoint (watch, dump)"},
    {.name = "--curve-server-key", .env = "LION_CURVE_SERVER_KEY", .metavar = "FILE", .kind = ARG_STRING,
     ARGS_AT(options, curve_server_key), .help = "the gateway's public key (CURVE on the tap)"},
    {.name = "--curve-key", .env = "LION_CURVE_KEY", .metavar = "FILE", .kind = ARG_STRING, ARGS_AT(options, curve_key),
     .help = "this reader's key pair (lion-keygen; in the gateway's --tap-keys)"},
    {.name = "--insecure", .kind = ARG_FLAG, ARGS_AT(options, insecure),
     .help = "read a tap on another machine without CURVE"},
    {.name = "--out", .metavar = "FILE", .kind = ARG_STRING, ARGS_AT(options, out),
     .help = "the dump to write (dump), the answer's dump (replay)"},
    {.name = "--bind", .metavar = "EP", .kind = ARG_STRING, ARGS_AT(options, bind),
     .help = "where the replayed stage's worker connects (replay)"},
    {.name = "--request", .metavar = "ID", .kind = ARG_STRING, ARGS_AT(options, filter.request_id),
     .help = "only this request"},
    {.name = "--stage", .metavar = "S", .kind = ARG_STRING, ARGS_AT(options, filter.stage),
     .help = "only this stage: vision, tagger, aggregator, llm"},
    {.name = "--data", .kind = ARG_FLAG, ARGS_AT(options, data), .help = "with the tensors' values (watch)"},
    {.name = "--count", .metavar = "N", .kind = ARG_LONG, ARGS_AT(options, count), .min = 0, .max = LONG_MAX,
     .help = "stop after N messages; exit 1 when fewer came", .deflt = "no limit"},
    /* an int in the end: tap_replay_options.timeout_ms */
    {.name = "--timeout-ms", .metavar = "T", .kind = ARG_LONG, ARGS_AT(options, timeout_ms), .min = 0,
     .max = INT_MAX, .help = "stop after T ms in all", .deflt = "none; replay 30000"},
};

static void usage(FILE *f) {
    fputs("usage:\n"
          "  lion-tap watch  --tap EP [--request ID] [--stage S] [--data] [--count N] [--timeout-ms T]\n"
          "  lion-tap dump   --tap EP --out FILE [--request ID] [--stage S] [--count N] [--timeout-ms T]\n"
          "  lion-tap show   FILE [--request ID] [--stage S]\n"
          "  lion-tap replay FILE --request ID --stage S --bind EP [--out FILE] [--timeout-ms T]\n"
          "options:\n",
          f);
    options defaults = {0};
    args_table table = ARGS_TABLE(tap_options, &defaults);
    args_usage(f, &table, 1);
}

/* The command, then a dump FILE for show and replay, in any place among the options. */
static int parse_args(int argc, char **argv, options *o, int *help) {
    memset(o, 0, sizeof *o);
    args_table table = ARGS_TABLE(tap_options, o);
    args_parsed parsed;
    lion_status st;
    if (args_parse(&table, 1, 2, argc, argv, &parsed, &st) != 0) {
        fprintf(stderr, "lion-tap: %s\n", st.msg);
        return -1;
    }
    *help = parsed.help;
    if (parsed.n_positional > 0) o->command = parsed.positional[0];
    if (parsed.n_positional > 1) o->file = parsed.positional[1];
    return 0;
}

static int print_message(void *ctx, tap_message *tm, lion_status *st) {
    tap_print_line(stdout, tm, clock_unix_us());
    return 0;
}

static int dump_message(void *ctx, tap_message *tm, lion_status *st) {
    FILE *f = ctx;
    return tap_dump_write(f, &tm->topic_frame, tm->msg.frames, tm->msg.n_frames, st) != 0;
}

static int watch_options(const options *o, tap_watch_options *w) {
    if (!o->tap) {
        fprintf(stderr, "lion-tap %s: --tap ENDPOINT is required\n", o->command);
        return -1;
    }
    *w = (tap_watch_options){.endpoint = o->tap, .filter = o->filter, .data = o->data, .count = o->count,
                             .timeout_ms = o->timeout_ms, .curve_server_key = o->curve_server_key,
                             .curve_key = o->curve_key, .insecure = o->insecure};
    return 0;
}

static int finish(int rc, const lion_status *st) {
    if (rc < 0) {
        fprintf(stderr, "lion-tap: %s\n", st->msg);
        return 2;
    }
    return rc;
}

static int cmd_watch(const options *o) {
    tap_watch_options w;
    if (watch_options(o, &w)) return 2;
    lion_status st;
    return finish(tap_watch_run(&w, print_message, NULL, &st), &st);
}

static int cmd_dump(const options *o) {
    tap_watch_options w;
    if (watch_options(o, &w)) return 2;
    if (!o->out) {
        fprintf(stderr, "lion-tap dump: --out FILE is required\n");
        return 2;
    }
    w.data = 1; /* a dump is for replaying and inspecting values: tensors included */
    FILE *f = fopen(o->out, "wb");
    if (!f) {
        perror(o->out);
        return 2;
    }
    lion_status st;
    int rc = tap_watch_run(&w, dump_message, f, &st);
    if (fclose(f) != 0 && rc >= 0) rc = lion_fail(&st, LION_EIO, "%s: write failed", o->out);
    return finish(rc, &st);
}

static int cmd_show(const options *o) {
    if (!o->file) {
        fprintf(stderr, "lion-tap show: a dump FILE is required\n");
        return 2;
    }
    lion_status st;
    tap_dump_reader r;
    if (tap_dump_open(&r, o->file, &st) != 0) return finish(-1, &st);
    tap_message tm;
    int rc;
    while ((rc = tap_dump_next(&r, &tm, &st)) == 1) {
        if (tap_filter_match(&o->filter, &tm.topic)) tap_print_line(stdout, &tm, 0);
        tap_message_close(&tm);
    }
    tap_dump_close(&r);
    return finish(rc, &st);
}

static int cmd_replay(const options *o) {
    if (!o->file || !o->filter.request_id || !o->filter.stage || !o->bind) {
        fprintf(stderr, "lion-tap replay: FILE, --request, --stage and --bind are required\n");
        return 2;
    }
    tap_replay_options r = {.dump_path = o->file, .request_id = o->filter.request_id, .stage = o->filter.stage,
                            .bind = o->bind, .out_path = o->out,
                            .timeout_ms = o->timeout_ms > 0 ? (int)o->timeout_ms : 30000};
    lion_status st;
    return finish(tap_replay_run(&r, stdout, &st), &st);
}

int main(int argc, char **argv) {
    options o;
    int help = 0;
    if (parse_args(argc, argv, &o, &help) != 0) {
        usage(stderr);
        return 2;
    }
    if (help || (o.command && !strcmp(o.command, "help"))) {
        usage(stdout);
        return 0;
    }
    if (!o.command) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(o.command, "watch")) return cmd_watch(&o);
    if (!strcmp(o.command, "dump")) return cmd_dump(&o);
    if (!strcmp(o.command, "show")) return cmd_show(&o);
    if (!strcmp(o.command, "replay")) return cmd_replay(&o);
    fprintf(stderr, "lion-tap: unknown command '%s'\n", o.command);
    usage(stderr);
    return 2;
}
