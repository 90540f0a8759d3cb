#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char log_name[64] = "lion";
static int log_min = LOG_INFO;

void log_init(const char *name, int level) {
    if (name) snprintf(log_name, sizeof log_name, "%s", name);
    log_min = level;
    const char *env = getenv("LION_LOG_LEVEL");
    if (env) {
        if (!strcmp(env, "debug")) log_min = LOG_DEBUG;
        else if (!strcmp(env, "info")) log_min = LOG_INFO;
        else if (!strcmp(env, "warn")) log_min = LOG_WARN;
        else if (!strcmp(env, "error")) log_min = LOG_ERROR;
    }
}

void log_write(int level, const char *fmt, ...) {
    if (level < log_min) return;
    static const char *names[] = {"debug", "info", "warn", "error"};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char line[2048];
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, names[level & 3], log_name);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line) vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    /* one fputs per line so that lines of concurrent threads do not interleave */
    size_t len = strlen(line);
    if (len + 1 < sizeof line) { line[len] = '\n'; line[len + 1] = '\0'; }
    fputs(line, stderr);
}
