/* log.h - one-line structured logs on stderr: time, level, process name, message. */
#ifndef LION_LOG_H
#define LION_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

/* Sets the name printed in every line (e.g. "vision#2") and the minimum level.
 * LION_LOG_LEVEL=debug|info|warn|error in the environment overrides the level. */
void log_init(const char *name, int level);
void log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
