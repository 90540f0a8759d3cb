/* progress.h - progress of a long run of items on a terminal or in a log.
 *
 * On a terminal (stderr is a TTY) one bar is redrawn in place:
 *
 *     lion-batch [#########...........] 45/100  45%  3.2/s  ETA 17s  2 failed
 *
 * Anywhere else (a log file, a CI job, a pipe) each report is a plain line that appends:
 *
 *     lion-batch: 45/100 (45%), 2 failed, 3.2/s, elapsed 14.1s, ETA 17.2s
 *
 * A plain line is written when the whole percent crosses a tenth (10%, 20%, ...), when
 * interval_ms has passed since the last one, and for the last item, so that a log holds a
 * bounded number of lines however many items there are; progress_finish writes the summary
 * line "lion-batch: done 100/100 in 31.0s (3.2/s), 2 failed" in both modes.
 *
 * Usage:
 *     progress p;
 *     progress_start(&p, stderr, "lion-batch", n, PROGRESS_AUTO);
 *     for (...) progress_update(&p, done, failed);
 *     progress_finish(&p);
 *
 * The formatting functions take the time explicitly so that the arithmetic (rate, ETA) can
 * be checked without waiting. */
#ifndef LION_PROGRESS_H
#define LION_PROGRESS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum progress_mode {
    PROGRESS_AUTO = 0, /* BAR when out is a terminal, else PLAIN */
    PROGRESS_BAR,
    PROGRESS_PLAIN,
    PROGRESS_QUIET     /* nothing but errors elsewhere: reports nothing */
} progress_mode;

typedef struct progress {
    FILE *out;
    char label[64];
    progress_mode mode; /* resolved: never PROGRESS_AUTO after progress_start */
    int64_t total;      /* items expected; 0 or less: unknown (no percent, no ETA) */
    int64_t done;       /* items finished, failed ones included */
    int64_t failed;
    int64_t start_us;   /* clock_mono_us() at progress_start */
    int64_t last_report_us;
    int last_tenth;     /* the tenth of the total the last plain line was in */
    int interval_ms;    /* PLAIN: at most this long between lines; BAR: redraw period */
    int bar_width;      /* characters between the brackets */
    int finished;
} progress;

/* Begins a run of total items; label starts every line (truncated to 63 bytes). */
void progress_start(progress *p, FILE *out, const char *label, int64_t total, progress_mode mode);
/* Records that done items are finished, failed of them failed; reports when due. */
void progress_update(progress *p, int64_t done, int64_t failed);
/* Writes the summary line (and ends the bar's line); later calls do nothing. */
void progress_finish(progress *p);

/* Items per second after elapsed_us; 0 before any time has passed. */
double progress_rate(int64_t done, int64_t elapsed_us);
/* Seconds left at the rate so far; -1 when unknown (nothing done yet or no total). */
double progress_eta_s(int64_t done, int64_t total, int64_t elapsed_us);
/* "0.4s", "17s" (from 10 s on), "2m05s", "1h02m"; "?" for a negative (unknown) value. */
void progress_format_duration(double seconds, char *buf, size_t size);
/* The plain line (no newline) and the bar (no \r) as they would be written at now_us. */
void progress_format_plain(const progress *p, int64_t now_us, char *buf, size_t size);
void progress_format_bar(const progress *p, int64_t now_us, char *buf, size_t size);

#endif
