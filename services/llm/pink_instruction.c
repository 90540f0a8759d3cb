#include "pink_instruction.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char CAPTION[] = "A short image caption:";
static const char VQA_HEAD[] = "Question: ", VQA_TAIL[] = " Short answer:";
static const char REC_HEAD[] = "Please provide the bounding box coordinate of the region this sentence describes: ";
static const char REGION_HEAD[] = "Please provide a short description for this region: ";

static int starts_with(const char *s, const char *head) { return strncmp(s, head, strlen(head)) == 0; }

static int ends_with(const char *s, size_t len, const char *tail) {
    size_t n = strlen(tail);
    return len >= n && memcmp(s + len - n, tail, n) == 0;
}

/* s[from, to) as a new string, trimmed of spaces */
static char *slice(const char *s, size_t from, size_t to) {
    while (from < to && s[from] == ' ') from++;
    while (to > from && s[to - 1] == ' ') to--;
    char *out = malloc(to - from + 1);
    if (!out) return NULL;
    memcpy(out, s + from, to - from);
    out[to - from] = '\0';
    return out;
}

int pink_instruction_parse(const char *instruction, pink_task *task, char **text, double box[4], lion_status *st) {
    *text = NULL;
    const size_t len = strlen(instruction);
    if (strcmp(instruction, CAPTION) == 0) {
        *task = PINK_TASK_CAPTION;
        return 0;
    }
    if (starts_with(instruction, REGION_HEAD)) {
        const char *b = instruction + strlen(REGION_HEAD);
        int used = 0;
        if (sscanf(b, "[%lf,%lf,%lf,%lf]%n", &box[0], &box[1], &box[2], &box[3], &used) != 4 || used == 0)
            return lion_fail(st, LION_EINVAL, "task.instruction: the region \"%.40s\" is not [x0,y0,x1,y1]", b);
        for (int k = 0; k < 4; k++)
            if (!(box[k] >= 0.0 && box[k] <= 1.0))
                return lion_fail(st, LION_EINVAL, "task.instruction: region coordinate %g is outside [0, 1]", box[k]);
        *task = PINK_TASK_REGION_CAPTION;
        return 0;
    }
    size_t from = 0, to = len;
    if (starts_with(instruction, REC_HEAD)) {
        *task = PINK_TASK_REC;
        from = strlen(REC_HEAD);
        if (to > from && instruction[to - 1] == '.') to--;
    } else {
        *task = PINK_TASK_VQA;
        if (starts_with(instruction, VQA_HEAD) && ends_with(instruction, len, VQA_TAIL))
            from = strlen(VQA_HEAD), to = len - strlen(VQA_TAIL);
    }
    *text = slice(instruction, from, to);
    if (!*text) return lion_fail(st, LION_ENOMEM, "llm: out of memory");
    if (!**text) {
        free(*text);
        *text = NULL;
        return lion_fail(st, LION_EINVAL, "task.instruction: empty %s", *task == PINK_TASK_REC ? "expression" : "question");
    }
    return 0;
}
