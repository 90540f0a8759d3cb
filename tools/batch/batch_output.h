/* batch_output.h - --out: one JSON line per request, and --resume over an earlier --out.
 *
 * Each line goes out in one write() with its newline, so that when lion-batch is killed
 * (kill -9, a lost node) the file holds whole lines and at most one torn line at its end.
 * --resume reads the file back: a line that ends with its newline, parses, and has an "id"
 * and no "error" is an answered request; the torn end, error lines, lines that do not parse
 * and later lines of an id already answered are dropped, so that the file ends with exactly
 * one line per id once the rest is answered. Dropping only the torn end truncates the file;
 * dropping anything else rewrites it (FILE.resume-tmp, then rename(), so that a kill during
 * the rewrite leaves the old file or the new one, both fit for another --resume). */
#ifndef LION_BATCH_OUTPUT_H
#define LION_BATCH_OUTPUT_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "batch_request.h"
#include "status.h"

typedef struct batch_output {
    int fd;           /* 1 for stdout */
    const char *path; /* "stdout" for stdout */
} batch_output;

/* Opens path (NULL: stdout) for writing: truncated, or with append (--resume) after what
 * batch_output_resume kept. */
int batch_output_open(batch_output *out, const char *path, int append, lion_status *st);
/* Writes one line (the newline added) in one write(). */
int batch_output_line(batch_output *out, const char *line, lion_status *st);
/* One request's line: its identity, the answer's fields (or the error), the verdict
 * (checked: --check, with pass). */
int batch_output_answer(batch_output *out, const batch_request *r, int http_status, int attempts, const cJSON *answer,
                        const char *error, int checked, int pass, lion_status *st);
int batch_output_close(batch_output *out, lion_status *st);

/* What --resume found in the file. */
typedef struct batch_resume_stats {
    size_t answered;   /* lines kept: one per answered id */
    size_t errors;     /* error lines dropped (their requests are sent again) */
    size_t duplicates; /* later lines of an id already answered, dropped */
    size_t broken;     /* whole lines that are not an answer object, dropped */
    int torn;          /* the last line had no newline: dropped */
    int rewritten;     /* the file was rewritten (else at most truncated) */
} batch_resume_stats;

/* Called once for each answered id, with its (first) line parsed. */
typedef void (*batch_answered_fn)(void *ctx, const char *id, const cJSON *line);

/* Reads path, calls answered() for each answered id, and leaves the file with only those
 * lines. A missing file is an empty one. */
int batch_output_resume(const char *path, batch_answered_fn answered, void *ctx, batch_resume_stats *stats,
                        lion_status *st);

#endif
