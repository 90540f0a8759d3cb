/* test_progress: common/progress's arithmetic (rate, ETA, durations) and its two output
 * formats, plain lines (when each is written) and the bar. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "progress.h"
#include "testing.h"

static void check_arithmetic(void) {
    CHECK(progress_rate(10, 4000000) == 2.5);
    CHECK(progress_rate(10, 0) == 0.0);
    CHECK(progress_rate(0, 1000000) == 0.0);
    CHECK(progress_eta_s(25, 100, 10000000) == 30.0); /* 75 left at 2.5/s */
    CHECK(progress_eta_s(0, 100, 10000000) == -1.0);
    CHECK(progress_eta_s(5, 0, 10000000) == -1.0);
    CHECK(progress_eta_s(100, 100, 10000000) == 0.0);
    char b[32];
    progress_format_duration(0.44, b, sizeof b);
    CHECK(!strcmp(b, "0.4s"));
    progress_format_duration(17.2, b, sizeof b);
    CHECK(!strcmp(b, "17s"));
    progress_format_duration(125, b, sizeof b);
    CHECK(!strcmp(b, "2m05s"));
    progress_format_duration(3720, b, sizeof b);
    CHECK(!strcmp(b, "1h02m"));
    progress_format_duration(-1, b, sizeof b);
    CHECK(!strcmp(b, "?"));
}

static void check_formats(void) {
    progress p;
    progress_start(&p, stderr, "job", 100, PROGRESS_QUIET);
    p.done = 45, p.failed = 2;
    char line[512];
    progress_format_plain(&p, p.start_us + 14100000, line, sizeof line);
    CHECK_CONTAINS(line, "job: 45/100 (45%), 2 failed, 3.2/s, elapsed 14s, ETA 17s");
    progress_format_bar(&p, p.start_us + 14100000, line, sizeof line);
    CHECK_CONTAINS(line, "job [#########...........] 45/100  45%  3.2/s  ETA 17s  2 failed");
    p.total = 0; /* unknown total: no percent, no ETA */
    progress_format_plain(&p, p.start_us + 14100000, line, sizeof line);
    CHECK_CONTAINS(line, "job: 45, 2 failed, 3.2/s, elapsed 14s, ETA ?");
}

/* Plain mode into a file: one line per tenth crossed, one for the last item, the summary. */
static void check_plain_lines(void) {
    FILE *f = tmpfile();
    progress p;
    progress_start(&p, f, "run", 20, PROGRESS_AUTO); /* a file is not a terminal: plain */
    CHECK_EQ_INT(p.mode, PROGRESS_PLAIN);
    for (int i = 1; i <= 20; i++) progress_update(&p, i, i >= 7);
    progress_finish(&p);
    progress_finish(&p); /* once only */
    progress_update(&p, 21, 0);
    rewind(f);
    char text[8192] = "";
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    int lines = 0;
    for (const char *c = text; *c; c++) lines += *c == '\n';
    CHECK_EQ_INT(lines, 11); /* 2/20, 4/20, ... 20/20, then "done" */
    CHECK_CONTAINS(text, "run: 2/20 (10%), 0 failed, ");
    CHECK_CONTAINS(text, "run: 8/20 (40%), 1 failed, ");
    CHECK_CONTAINS(text, "run: 20/20 (100%), 1 failed, ");
    CHECK_CONTAINS(text, "run: done 20/20 in ");
    CHECK_CONTAINS(text, "/s), 1 failed\n");
    CHECK(strstr(text, "run: 3/20") == NULL);
    CHECK(strchr(text, '\r') == NULL);
}

static void check_bar(void) {
    FILE *f = tmpfile();
    progress p;
    progress_start(&p, f, "bar", 4, PROGRESS_BAR);
    progress_update(&p, 4, 0);
    progress_finish(&p);
    rewind(f);
    char text[4096] = "";
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    CHECK_CONTAINS(text, "\rbar [....................] 0/4   0%");
    CHECK_CONTAINS(text, "\rbar [####################] 4/4 100%");
    CHECK_CONTAINS(text, "\033[K\nbar: done 4/4 in ");
}

int main(void) {
    check_arithmetic();
    check_formats();
    check_plain_lines();
    check_bar();
    return testing_finish();
}
