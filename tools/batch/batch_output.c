/* batch_output.c - see batch_output.h. */
#include "batch_output.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

int batch_output_open(batch_output *out, const char *path, int append, lion_status *st) {
    out->path = path ? path : "stdout";
    out->fd = 1;
    if (!path) return 0;
    out->fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0666);
    if (out->fd < 0) return lion_fail(st, LION_EIO, "--out %s: %s", path, strerror(errno));
    return 0;
}

/* One write() for the whole line: a kill leaves it whole or torn at the file's end. Only a
 * short write (a full disk, a signal on a pipe) takes a second one for the rest. */
static int write_all(int fd, const char *data, size_t len) {
    while (len) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

int batch_output_line(batch_output *out, const char *line, lion_status *st) {
    size_t len = strlen(line);
    char *buf = malloc(len + 1);
    if (!buf) return lion_fail(st, LION_ENOMEM, "--out %s: no memory", out->path);
    memcpy(buf, line, len);
    buf[len] = '\n';
    int rc = write_all(out->fd, buf, len + 1);
    free(buf);
    return rc ? lion_fail(st, LION_EIO, "--out %s: %s", out->path, strerror(errno)) : 0;
}

int batch_output_answer(batch_output *out, const batch_request *r, int http_status, int attempts, const cJSON *answer,
                        const char *error, int checked, int pass, lion_status *st) {
    cJSON *line = cJSON_CreateObject();
    if (!line) return lion_fail(st, LION_ENOMEM, "--out %s: no memory", out->path);
    cJSON_AddStringToObject(line, "id", r->id);
    cJSON_AddStringToObject(line, "task", r->label);
    cJSON_AddStringToObject(line, "category", r->category);
    const cJSON *instr = cJSON_GetObjectItemCaseSensitive(r->body, "instruction");
    if (cJSON_IsString(instr)) cJSON_AddStringToObject(line, "instruction", instr->valuestring);
    cJSON_AddNumberToObject(line, "status", http_status);
    cJSON_AddNumberToObject(line, "attempts", attempts);
    static const char *const fields[] = {"request_id", "text", "boxes", "tags", "tokens", "generated_tokens",
                                         "timings_ms", NULL};
    for (int i = 0; answer && fields[i]; i++) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(answer, fields[i]);
        if (f) cJSON_AddItemToObject(line, fields[i], cJSON_Duplicate(f, 1));
    }
    if (error) cJSON_AddStringToObject(line, "error", error);
    if (r->expected) cJSON_AddStringToObject(line, "expected", r->expected);
    if (checked) cJSON_AddBoolToObject(line, "pass", pass);
    char *text = cJSON_PrintUnformatted(line);
    cJSON_Delete(line);
    if (!text) return lion_fail(st, LION_ENOMEM, "--out %s: no memory", out->path);
    int rc = batch_output_line(out, text, st);
    free(text);
    return rc;
}

int batch_output_close(batch_output *out, lion_status *st) {
    if (out->fd == 1) return 0;
    int rc = close(out->fd);
    out->fd = -1;
    return rc ? lion_fail(st, LION_EIO, "--out %s: %s", out->path, strerror(errno)) : 0;
}

/* ---------------------------------------------------------------------------------------- */
/* --resume                                                                                  */

/* An answered id and the line it is on; the first such line of an id is the one kept. */
typedef struct answer_at {
    char *id;
    size_t line;
} answer_at;

typedef struct answers {
    answer_at *items;
    size_t n, cap;
} answers;

static int compare_answers(const void *a, const void *b) {
    const answer_at *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : x->line < y->line ? -1 : x->line > y->line;
}

/* The first entry of id (they are sorted by id, then line), or NULL. */
static const answer_at *first_answer(const answers *a, const char *id) {
    size_t lo = 0, hi = a->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(a->items[mid].id, id) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < a->n && !strcmp(a->items[lo].id, id) ? &a->items[lo] : NULL;
}

static void answers_free(answers *a) {
    for (size_t i = 0; i < a->n; i++) free(a->items[i].id);
    free(a->items);
}

/* A whole line (without its newline) parsed; *id is set when it is an answer, and *error
 * when it is an error line. NULL when it does not parse as an object with a string id. */
static cJSON *parse_line(const char *text, size_t len, const char **id, int *error) {
    *id = NULL;
    *error = 0;
    cJSON *o = cJSON_ParseWithLength(text, len);
    const cJSON *oid = cJSON_GetObjectItemCaseSensitive(o, "id");
    if (!cJSON_IsObject(o) || !cJSON_IsString(oid)) {
        cJSON_Delete(o);
        return NULL;
    }
    if (cJSON_GetObjectItemCaseSensitive(o, "error")) *error = 1;
    else *id = oid->valuestring;
    return o;
}

typedef struct scan {
    const char *path;
    FILE *f;
    answers found;
    off_t whole_end; /* the end of the last line that has its newline */
    batch_resume_stats *stats;
} scan;

/* First pass: every answered id with its line, what is to be dropped, where the whole
 * lines end. */
static int scan_file(scan *s, lion_status *st) {
    char *buf = NULL;
    size_t cap = 0, line_no = 0;
    ssize_t len;
    int rc = 0;
    while (rc == 0 && (len = getline(&buf, &cap, s->f)) > 0) {
        if (buf[len - 1] != '\n') {
            s->stats->torn = 1; /* only the last line can lack its newline */
            break;
        }
        s->whole_end += len;
        const char *id;
        int error;
        cJSON *o = parse_line(buf, (size_t)len - 1, &id, &error);
        if (!o) s->stats->broken++;
        else if (error) s->stats->errors++;
        if (id) {
            if (s->found.n == s->found.cap) {
                size_t c = s->found.cap ? s->found.cap * 2 : 1024;
                answer_at *b = realloc(s->found.items, c * sizeof *b);
                if (!b) rc = lion_fail(st, LION_ENOMEM, "--resume %s: no memory", s->path);
                else s->found.items = b, s->found.cap = c;
            }
            char *copy = rc == 0 ? strdup(id) : NULL;
            if (copy) s->found.items[s->found.n++] = (answer_at){copy, line_no};
            else if (rc == 0) rc = lion_fail(st, LION_ENOMEM, "--resume %s: no memory", s->path);
        }
        cJSON_Delete(o);
        line_no++;
    }
    free(buf);
    if (rc == 0 && ferror(s->f)) rc = lion_fail(st, LION_EIO, "--resume %s: cannot read", s->path);
    if (rc) return rc;
    if (s->found.n) qsort(s->found.items, s->found.n, sizeof *s->found.items, compare_answers);
    for (size_t i = 1; i < s->found.n; i++)
        s->stats->duplicates += !strcmp(s->found.items[i - 1].id, s->found.items[i].id);
    s->stats->answered = s->found.n - s->stats->duplicates;
    return 0;
}

/* Second pass: answered() for each kept line, and the kept lines into tmp when rewriting. */
static int replay_file(scan *s, batch_answered_fn answered, void *ctx, FILE *tmp, lion_status *st) {
    rewind(s->f);
    char *buf = NULL;
    size_t cap = 0, line_no = 0;
    ssize_t len;
    int rc = 0;
    while (rc == 0 && (len = getline(&buf, &cap, s->f)) > 0 && buf[len - 1] == '\n') {
        const char *id;
        int error;
        cJSON *o = parse_line(buf, (size_t)len - 1, &id, &error);
        const answer_at *first = id ? first_answer(&s->found, id) : NULL;
        if (first && first->line == line_no) {
            answered(ctx, id, o);
            if (tmp && fwrite(buf, 1, (size_t)len, tmp) != (size_t)len)
                rc = lion_fail(st, LION_EIO, "--resume %s: cannot write its copy", s->path);
        }
        cJSON_Delete(o);
        line_no++;
    }
    free(buf);
    if (rc == 0 && ferror(s->f)) rc = lion_fail(st, LION_EIO, "--resume %s: cannot read", s->path);
    return rc;
}

/* Keeps only the answered lines: FILE.resume-tmp written in full and synced, then renamed
 * over FILE, so that no moment leaves a file that lost answers. */
static int rewrite_file(scan *s, batch_answered_fn answered, void *ctx, lion_status *st) {
    char tmp_path[4200];
    snprintf(tmp_path, sizeof tmp_path, "%s.resume-tmp", s->path);
    FILE *tmp = fopen(tmp_path, "wb");
    if (!tmp) return lion_fail(st, LION_EIO, "--resume %s: %s", tmp_path, strerror(errno));
    int rc = replay_file(s, answered, ctx, tmp, st);
    if (rc == 0 && (fflush(tmp) != 0 || fsync(fileno(tmp)) != 0))
        rc = lion_fail(st, LION_EIO, "--resume %s: %s", tmp_path, strerror(errno));
    if (fclose(tmp) != 0 && rc == 0) rc = lion_fail(st, LION_EIO, "--resume %s: %s", tmp_path, strerror(errno));
    if (rc == 0 && rename(tmp_path, s->path) != 0)
        rc = lion_fail(st, LION_EIO, "--resume: rename %s to %s: %s", tmp_path, s->path, strerror(errno));
    if (rc) unlink(tmp_path);
    else s->stats->rewritten = 1;
    return rc;
}

int batch_output_resume(const char *path, batch_answered_fn answered, void *ctx, batch_resume_stats *stats,
                        lion_status *st) {
    memset(stats, 0, sizeof *stats);
    scan s = {.path = path, .stats = stats};
    s.f = fopen(path, "rb");
    if (!s.f) return errno == ENOENT ? 0 : lion_fail(st, LION_EIO, "--resume %s: %s", path, strerror(errno));
    int rc = scan_file(&s, st);
    if (rc == 0 && (stats->errors || stats->duplicates || stats->broken)) {
        rc = rewrite_file(&s, answered, ctx, st);
    } else if (rc == 0) {
        rc = replay_file(&s, answered, ctx, NULL, st);
        if (rc == 0 && stats->torn && truncate(path, s.whole_end) != 0)
            rc = lion_fail(st, LION_EIO, "--resume %s: cannot drop its torn last line: %s", path, strerror(errno));
    }
    fclose(s.f);
    answers_free(&s.found);
    return rc;
}
