/* args.h - the command line of every binary, described once as a table.
 *
 * Each binary (the stage workers, the gateway, lion-tap, lion-batch, the benchmarks) lists
 * its options in a table: the option's name, its environment variable, metavar and help, its
 * kind and range, and where in the binary's config struct the value goes. args_parse reads
 * the environment and then argv against that table, and args_usage prints --help from it, so
 * every binary checks its values the same way and its help cannot drift from what it parses.
 *
 * Refused, with LION_EINVAL and a message that names the option (or the environment
 * variable) and the value: unknown options, a missing value, a value that is not a number or
 * has trailing junk ("12x"), and a value outside the option's range, e.g.
 *     --max-batch: 0 is not in [1, 4096]
 *
 * Both "--opt value" and "--opt=value" are accepted; "--help" (or "-h") only sets
 * args_parsed.help, the caller prints the usage. An argument that does not start with '-',
 * a lone "-", and everything after "--" are positional. */
#ifndef LION_ARGS_H
#define LION_ARGS_H

#include <stddef.h>
#include <stdio.h>

#include "status.h"

typedef enum args_kind {
    ARG_INT,    /* int in [min, max] */
    ARG_LONG,   /* long in [min, max] */
    ARG_SIZE,   /* size_t in [min, max] (min >= 0) */
    ARG_DOUBLE, /* double in [fmin, fmax] */
    ARG_STRING, /* const char *, pointing into argv or the environment (not copied); when
                   max > 0 its length in bytes must be in [min, max] */
    ARG_FLAG,   /* int: 1 when given; "--opt=BOOL" and the environment variable take
                   1/0, true/false, yes/no, on/off */
    ARG_CUSTOM  /* set() parses the value and stores it (HOST:PORT, a choice, a copy) */
} args_kind;

typedef struct args_option args_option;

/* Parses text for opt into the struct at base. name is what the user set, the option or
 * its environment variable, for the message. Returns 0, or -1 with st filled. */
typedef int (*args_set_fn)(const args_option *opt, void *base, const char *name, const char *text,
                           lion_status *st);

struct args_option {
    const char *name;    /* "--max-batch" */
    const char *env;     /* "LION_MAX_BATCH", or NULL: command line only */
    const char *metavar; /* "N": usage and "--max-batch needs a value (N)"; unused by flags */
    const char *help;    /* one line */
    args_kind kind;
    size_t offset, size; /* where the value goes in the caller's struct: ARGS_AT(type, field) */
    long long min, max;  /* ARG_INT, ARG_LONG, ARG_SIZE; ARG_STRING's length when max > 0 */
    double fmin, fmax;   /* ARG_DOUBLE */
    args_set_fn set;     /* ARG_CUSTOM */
    /* What usage shows as the default. NULL: the value in the table's base struct (the
     * defaults), when it is not zero or NULL; ARG_CUSTOM and ARG_FLAG show only this. */
    const char *deflt;
};

/* The field an option writes. The size is kept so that args_parse can refuse a table
 * whose kind does not fit its field (an ARG_INT aimed at a size_t) instead of writing past it. */
#define ARGS_AT(type, field) .offset = offsetof(type, field), .size = sizeof(((type *)0)->field)

/* One table and the struct its offsets point into: the config being filled for
 * args_parse, a struct holding the defaults for args_usage. */
typedef struct args_table {
    const args_option *options;
    int n_options;
    void *base;
} args_table;

#define ARGS_TABLE(options, base) ((args_table){(options), (int)(sizeof(options) / sizeof((options)[0])), (base)})

#define ARGS_MAX_POSITIONAL 8

typedef struct args_parsed {
    int help; /* --help or -h was given */
    int n_positional;
    const char *positional[ARGS_MAX_POSITIONAL]; /* pointers into argv, in order */
} args_parsed;

/* Reads the options of every table (several tables share one command line: the worker's
 * own options and a service's extra ones) from the environment, then from argv[1..argc-1],
 * so that the command line overrides the environment; a later option overrides an earlier
 * one. Fields of options not given keep what the caller put there (the defaults).
 * max_positional: how many positional arguments are accepted (at most
 * ARGS_MAX_POSITIONAL). Returns 0, or -1 with st filled: LION_EINVAL for the user's
 * mistakes, LION_EINTERNAL for a table that is itself wrong. */
int args_parse(const args_table *tables, int n_tables, int max_positional, int argc, char **argv, args_parsed *out,
               lion_status *st);

/* The lines of every option, then "--help": name and metavar, help, "(default ...)" where
 * there is one, and "[ENV]". Each table's base holds the defaults (NULL: none shown but
 * deflt). The caller prints the "usage:" line first. */
void args_usage(FILE *out, const args_table *tables, int n_tables);

/* The field opt writes in base: for ARG_CUSTOM set functions. */
static inline void *args_field(const args_option *opt, void *base) { return (char *)base + opt->offset; }

#endif
