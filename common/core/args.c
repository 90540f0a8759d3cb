#include "args.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Values are quoted at most this long in messages, so that the range after them always
 * fits in a lion_status. */
#define QUOTE_MAX 200

/* --- the table itself ------------------------------------------------------------------ */

static size_t field_size(args_kind kind) {
    switch (kind) {
    case ARG_INT:
    case ARG_FLAG: return sizeof(int);
    case ARG_LONG: return sizeof(long);
    case ARG_SIZE: return sizeof(size_t);
    case ARG_DOUBLE: return sizeof(double);
    case ARG_STRING: return sizeof(const char *);
    case ARG_CUSTOM: return 0;
    }
    return 0;
}

/* A mistake in a table is the programmer's, but it must still not write past a field or
 * make one option shadow another, so it is refused before anything is parsed. */
static int check_option(const args_option *o, lion_status *st) {
    if (!o->name || strncmp(o->name, "--", 2) != 0 || strchr(o->name, '='))
        return lion_fail(st, LION_EINTERNAL, "option table: name '%s' must be \"--word\"",
                         o->name ? o->name : "(null)");
    if (o->kind == ARG_CUSTOM ? !o->set : o->size != field_size(o->kind))
        return lion_fail(st, LION_EINTERNAL, "option table: %s: kind %d does not fit its field of %zu bytes", o->name,
                         (int)o->kind, o->size);
    long long lo = LLONG_MIN, hi = LLONG_MAX;
    if (o->kind == ARG_INT) lo = INT_MIN, hi = INT_MAX;
    if (o->kind == ARG_LONG) lo = LONG_MIN, hi = LONG_MAX;
    if (o->kind == ARG_SIZE || o->kind == ARG_STRING) lo = 0;
    int integer = o->kind == ARG_INT || o->kind == ARG_LONG || o->kind == ARG_SIZE;
    if ((integer || (o->kind == ARG_STRING && o->max > 0)) && (o->min > o->max || o->min < lo || o->max > hi))
        return lion_fail(st, LION_EINTERNAL, "option table: %s: range [%lld, %lld] does not fit its kind", o->name,
                         o->min, o->max);
    if (o->kind == ARG_DOUBLE && !(o->fmin <= o->fmax))
        return lion_fail(st, LION_EINTERNAL, "option table: %s: range [%g, %g] is empty", o->name, o->fmin, o->fmax);
    return 0;
}

static int check_tables(const args_table *tables, int n_tables, lion_status *st) {
    for (int t = 0; t < n_tables; t++) {
        for (int i = 0; i < tables[t].n_options; i++) {
            const args_option *o = &tables[t].options[i];
            if (check_option(o, st) != 0) return -1;
            for (int u = 0; u <= t; u++)
                for (int k = 0; k < (u == t ? i : tables[u].n_options); k++)
                    if (!strcmp(tables[u].options[k].name, o->name))
                        return lion_fail(st, LION_EINTERNAL, "option table: %s is listed twice", o->name);
        }
    }
    return 0;
}

/* --- values ------------------------------------------------------------------------------ */

/* strtoll and strtod skip leading blanks and take "nan", "inf": a number must start with a
 * sign, a digit or (for doubles) a point. */
static int starts_number(const char *text, int point) {
    return text[0] == '-' || text[0] == '+' || (text[0] >= '0' && text[0] <= '9') || (point && text[0] == '.');
}

static int parse_integer(const args_option *o, const char *name, const char *text, long long *out, lion_status *st) {
    char *end = NULL;
    errno = 0;
    long long v = starts_number(text, 0) ? strtoll(text, &end, 10) : 0;
    if (!end || end == text || *end)
        return lion_fail(st, LION_EINVAL, "%s: '%.*s' is not an integer in [%lld, %lld]", name, QUOTE_MAX, text, o->min,
                         o->max);
    if (errno == ERANGE || v < o->min || v > o->max)
        return lion_fail(st, LION_EINVAL, "%s: %.*s is not in [%lld, %lld]", name, QUOTE_MAX, text, o->min, o->max);
    *out = v;
    return 0;
}

static int parse_double(const args_option *o, const char *name, const char *text, double *out, lion_status *st) {
    char *end = NULL;
    errno = 0;
    double v = starts_number(text, 1) ? strtod(text, &end) : 0;
    if (!end || end == text || *end)
        return lion_fail(st, LION_EINVAL, "%s: '%.*s' is not a number in [%g, %g]", name, QUOTE_MAX, text, o->fmin,
                         o->fmax);
    /* written so that NaN, which compares false with everything, is refused too */
    if (!(v >= o->fmin && v <= o->fmax))
        return lion_fail(st, LION_EINVAL, "%s: %.*s is not in [%g, %g]", name, QUOTE_MAX, text, o->fmin, o->fmax);
    *out = v;
    return 0;
}

static int parse_bool(const char *name, const char *text, int *out, lion_status *st) {
    static const char *const yes[] = {"1", "true", "yes", "on"}, *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (!strcmp(text, yes[i]) || !strcmp(text, no[i])) {
            *out = !strcmp(text, yes[i]);
            return 0;
        }
    }
    return lion_fail(st, LION_EINVAL, "%s: '%.*s' is not one of 1, 0, true, false, yes, no, on, off", name, QUOTE_MAX,
                     text);
}

/* Parses text for o and stores it; name is the option or the environment variable. */
static int set_value(const args_option *o, void *base, const char *name, const char *text, lion_status *st) {
    void *dest = args_field(o, base);
    long long n = 0;
    switch (o->kind) {
    case ARG_INT:
        if (parse_integer(o, name, text, &n, st) != 0) return -1;
        *(int *)dest = (int)n;
        return 0;
    case ARG_LONG:
        if (parse_integer(o, name, text, &n, st) != 0) return -1;
        *(long *)dest = (long)n;
        return 0;
    case ARG_SIZE:
        if (parse_integer(o, name, text, &n, st) != 0) return -1;
        *(size_t *)dest = (size_t)n;
        return 0;
    case ARG_DOUBLE: return parse_double(o, name, text, dest, st);
    case ARG_STRING: {
        size_t len = strlen(text);
        if (o->max > 0 && (len < (size_t)o->min || len > (size_t)o->max))
            return lion_fail(st, LION_EINVAL, "%s: '%.*s' is %zu bytes, not in [%lld, %lld]", name, QUOTE_MAX, text,
                             len, o->min, o->max);
        *(const char **)dest = text;
        return 0;
    }
    case ARG_FLAG: return parse_bool(name, text, dest, st);
    case ARG_CUSTOM: return o->set(o, base, name, text, st);
    }
    return lion_fail(st, LION_EINTERNAL, "%s: unknown option kind %d", name, (int)o->kind);
}

/* --- the command line -------------------------------------------------------------------- */

/* The option whose name is arg[0..len), and the base of its table. */
static const args_option *find_option(const args_table *tables, int n_tables, const char *arg, size_t len,
                                      void **base) {
    for (int t = 0; t < n_tables; t++) {
        for (int i = 0; i < tables[t].n_options; i++) {
            const args_option *o = &tables[t].options[i];
            if (strlen(o->name) == len && !strncmp(o->name, arg, len)) {
                *base = tables[t].base;
                return o;
            }
        }
    }
    return NULL;
}

static int read_environment(const args_table *tables, int n_tables, lion_status *st) {
    for (int t = 0; t < n_tables; t++) {
        for (int i = 0; i < tables[t].n_options; i++) {
            const args_option *o = &tables[t].options[i];
            const char *v = o->env ? getenv(o->env) : NULL;
            if (v && set_value(o, tables[t].base, o->env, v, st) != 0) return -1;
        }
    }
    return 0;
}

/* Handles argv[*i], an option, moving *i past its value when the value is the next
 * argument. */
static int read_option(const args_table *tables, int n_tables, int argc, char **argv, int *i, lion_status *st) {
    const char *arg = argv[*i];
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    void *base = NULL;
    const args_option *o = find_option(tables, n_tables, arg, len, &base);
    if (!o) {
        int shown = len < QUOTE_MAX ? (int)len : QUOTE_MAX;
        return lion_fail(st, LION_EINVAL, "unknown option '%.*s' (see --help)", shown, arg);
    }
    if (o->kind == ARG_FLAG && !eq) {
        *(int *)args_field(o, base) = 1;
        return 0;
    }
    if (eq) return set_value(o, base, o->name, eq + 1, st);
    /* the next argument is the value even when it starts with '-': "--min -5" */
    if (*i + 1 >= argc)
        return lion_fail(st, LION_EINVAL, "%s needs a value (%s)", o->name, o->metavar ? o->metavar : "VALUE");
    return set_value(o, base, o->name, argv[++*i], st);
}

int args_parse(const args_table *tables, int n_tables, int max_positional, int argc, char **argv, args_parsed *out,
               lion_status *st) {
    memset(out, 0, sizeof *out);
    if (max_positional > ARGS_MAX_POSITIONAL)
        return lion_fail(st, LION_EINTERNAL, "args_parse: at most %d positional arguments", ARGS_MAX_POSITIONAL);
    if (check_tables(tables, n_tables, st) != 0) return -1;
    if (read_environment(tables, n_tables, st) != 0) return -1;
    int only_positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (only_positional || arg[0] != '-' || arg[1] == '\0') {
            if (out->n_positional >= max_positional)
                return lion_fail(st, LION_EINVAL, "unexpected argument '%.*s' (%s)", QUOTE_MAX, arg,
                                 max_positional ? "too many arguments" : "options only; see --help");
            out->positional[out->n_positional++] = arg;
        } else if (!strcmp(arg, "--")) {
            only_positional = 1;
        } else if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            out->help = 1;
        } else if (read_option(tables, n_tables, argc, argv, &i, st) != 0) {
            return -1;
        }
    }
    return 0;
}

/* --- usage -------------------------------------------------------------------------------- */

/* The default usage shows for o, in buf; "" when there is none worth showing. */
static const char *default_text(const args_option *o, const void *base, char *buf, size_t size) {
    buf[0] = '\0';
    if (o->deflt) return o->deflt;
    if (!base || o->kind == ARG_FLAG || o->kind == ARG_CUSTOM) return buf;
    const void *p = (const char *)base + o->offset;
    switch (o->kind) {
    case ARG_INT:
        if (*(const int *)p) snprintf(buf, size, "%d", *(const int *)p);
        break;
    case ARG_LONG:
        if (*(const long *)p) snprintf(buf, size, "%ld", *(const long *)p);
        break;
    case ARG_SIZE:
        if (*(const size_t *)p) snprintf(buf, size, "%zu", *(const size_t *)p);
        break;
    case ARG_DOUBLE:
        if (*(const double *)p != 0.0) snprintf(buf, size, "%g", *(const double *)p);
        break;
    case ARG_STRING:
        if (*(const char *const *)p) snprintf(buf, size, "%s", *(const char *const *)p);
        break;
    default: break;
    }
    return buf;
}

/* Help starts in this column; a longer name and metavar get a line of their own. */
#define HELP_COLUMN 28

static void usage_line(FILE *out, const char *left, const char *help, const char *deflt, const char *env) {
    int width = fprintf(out, "  %s", left);
    if (width > HELP_COLUMN - 1) {
        fputc('\n', out);
        width = 0;
    }
    fprintf(out, "%*s%s", HELP_COLUMN - width, "", help);
    if (deflt && deflt[0]) fprintf(out, " (default %s)", deflt);
    if (env) fprintf(out, " [%s]", env);
    fputc('\n', out);
}

void args_usage(FILE *out, const args_table *tables, int n_tables) {
    for (int t = 0; t < n_tables; t++) {
        for (int i = 0; i < tables[t].n_options; i++) {
            const args_option *o = &tables[t].options[i];
            char left[96], deflt[128];
            if (o->kind == ARG_FLAG) snprintf(left, sizeof left, "%s", o->name);
            else snprintf(left, sizeof left, "%s %s", o->name, o->metavar ? o->metavar : "VALUE");
            usage_line(out, left, o->help ? o->help : "", default_text(o, tables[t].base, deflt, sizeof deflt), o->env);
        }
    }
    usage_line(out, "--help", "this text", NULL, NULL);
}
