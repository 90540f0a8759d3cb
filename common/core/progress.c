/* progress.c - see progress.h. */
#include "progress.h"

#include <string.h>
#include <unistd.h>

#include "clock.h"

double progress_rate(int64_t done, int64_t elapsed_us) {
    if (elapsed_us <= 0 || done <= 0) return 0.0;
    return (double)done * 1e6 / (double)elapsed_us;
}

double progress_eta_s(int64_t done, int64_t total, int64_t elapsed_us) {
    if (total <= 0 || done <= 0 || elapsed_us <= 0) return -1.0;
    if (done >= total) return 0.0;
    return (double)(total - done) * ((double)elapsed_us / 1e6) / (double)done;
}

void progress_format_duration(double seconds, char *buf, size_t size) {
    if (seconds < 0) {
        snprintf(buf, size, "?");
    } else if (seconds < 10) {
        snprintf(buf, size, "%.1fs", seconds);
    } else if (seconds < 60) {
        snprintf(buf, size, "%ds", (int)(seconds + 0.5));
    } else if (seconds < 3600) {
        long s = (long)(seconds + 0.5);
        snprintf(buf, size, "%ldm%02lds", s / 60, s % 60);
    } else {
        long m = (long)(seconds / 60 + 0.5);
        snprintf(buf, size, "%ldh%02ldm", m / 60, m % 60);
    }
}

/* The tenth of the total that done is in, so that plain lines come at 10%, 20%, ... */
static int tenth_of(const progress *p) {
    return p->total > 0 ? (int)(p->done * 10 / p->total) : 0;
}

void progress_format_plain(const progress *p, int64_t now_us, char *buf, size_t size) {
    int64_t elapsed = now_us - p->start_us;
    char el[32], eta[32], count[64];
    progress_format_duration((double)elapsed / 1e6, el, sizeof el);
    progress_format_duration(progress_eta_s(p->done, p->total, elapsed), eta, sizeof eta);
    if (p->total > 0)
        snprintf(count, sizeof count, "%lld/%lld (%d%%)", (long long)p->done, (long long)p->total,
                 (int)(p->done * 100 / p->total));
    else
        snprintf(count, sizeof count, "%lld", (long long)p->done);
    snprintf(buf, size, "%s: %s, %lld failed, %.1f/s, elapsed %s, ETA %s", p->label, count, (long long)p->failed,
             progress_rate(p->done, elapsed), el, eta);
}

void progress_format_bar(const progress *p, int64_t now_us, char *buf, size_t size) {
    int64_t elapsed = now_us - p->start_us;
    char bar[256], eta[32];
    int width = p->bar_width > 0 && p->bar_width < (int)sizeof bar ? p->bar_width : 20;
    int fill = p->total > 0 ? (int)(p->done * width / p->total) : 0;
    if (fill > width) fill = width;
    memset(bar, '#', (size_t)fill);
    memset(bar + fill, '.', (size_t)(width - fill));
    bar[width] = 0;
    progress_format_duration(progress_eta_s(p->done, p->total, elapsed), eta, sizeof eta);
    int n = snprintf(buf, size, "%s [%s] %lld/%lld %3d%%  %.1f/s  ETA %s", p->label, bar, (long long)p->done,
                     (long long)p->total, p->total > 0 ? (int)(p->done * 100 / p->total) : 0,
                     progress_rate(p->done, elapsed), eta);
    if (p->failed && n >= 0 && (size_t)n < size)
        snprintf(buf + n, size - (size_t)n, "  %lld failed", (long long)p->failed);
}

static void report(progress *p, int64_t now) {
    char line[512];
    if (p->mode == PROGRESS_BAR) {
        progress_format_bar(p, now, line, sizeof line);
        /* \033[K clears what a longer previous bar left on the line */
        fprintf(p->out, "\r%s\033[K", line);
    } else {
        progress_format_plain(p, now, line, sizeof line);
        fprintf(p->out, "%s\n", line);
    }
    fflush(p->out);
    p->last_report_us = now;
}

void progress_start(progress *p, FILE *out, const char *label, int64_t total, progress_mode mode) {
    memset(p, 0, sizeof *p);
    p->out = out ? out : stderr;
    snprintf(p->label, sizeof p->label, "%s", label ? label : "progress");
    if (mode == PROGRESS_AUTO) mode = isatty(fileno(p->out)) ? PROGRESS_BAR : PROGRESS_PLAIN;
    p->mode = mode;
    p->total = total;
    p->start_us = clock_mono_us();
    p->last_report_us = p->start_us;
    p->interval_ms = mode == PROGRESS_BAR ? 100 : 10000;
    p->bar_width = 20;
    if (mode == PROGRESS_BAR) report(p, p->start_us);
}

void progress_update(progress *p, int64_t done, int64_t failed) {
    if (p->finished) return;
    p->done = done;
    p->failed = failed;
    if (p->mode == PROGRESS_QUIET) return;
    int64_t now = clock_mono_us();
    int due = now - p->last_report_us >= (int64_t)p->interval_ms * 1000;
    if (p->mode == PROGRESS_PLAIN) {
        int tenth = tenth_of(p);
        due = due || tenth != p->last_tenth || (p->total > 0 && done >= p->total);
        p->last_tenth = tenth;
    } else {
        due = due || (p->total > 0 && done >= p->total);
    }
    if (due) report(p, now);
}

void progress_finish(progress *p) {
    if (p->finished) return;
    p->finished = 1;
    if (p->mode == PROGRESS_QUIET) return;
    int64_t now = clock_mono_us(), elapsed = now - p->start_us;
    if (p->mode == PROGRESS_BAR) {
        report(p, now);
        fputc('\n', p->out);
    }
    char el[32];
    progress_format_duration((double)elapsed / 1e6, el, sizeof el);
    fprintf(p->out, "%s: done %lld", p->label, (long long)p->done);
    if (p->total > 0) fprintf(p->out, "/%lld", (long long)p->total);
    fprintf(p->out, " in %s (%.1f/s), %lld failed\n", el, progress_rate(p->done, elapsed), (long long)p->failed);
    fflush(p->out);
}
