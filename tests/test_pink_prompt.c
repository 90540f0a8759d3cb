/* test_pink_prompt.c - Pink's llamav2 prompt against tools/reference/pink_ref/prompt.py
 * (tests/fixtures/gen_pink_prompt.py): for every task (caption, VQA, REC, region caption with a
 * box), many texts and boxes, the tokenizer legacy and not, the C prompt text, ids and image
 * offset equal the reference's, going through model_config_load and pink_tokenizer_load as a
 * stage would. Then the argument errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_config.h"
#include "pink_config.h"
#include "pink_prompt.h"
#include "testing.h"

#define MAX_IDS 4096

static int hex_value(char c) { return c >= '0' && c <= '9' ? c - '0' : c - 'a' + 10; }

static char *unhex(const char *h, size_t n) {
    char *s = malloc(n / 2 + 1);
    for (size_t i = 0; i + 1 < n; i += 2) s[i / 2] = (char)(hex_value(h[i]) * 16 + hex_value(h[i + 1]));
    s[n / 2] = '\0';
    return s;
}

struct model {
    model_config cfg;
    llama_tok *tok;
};

static int load_model(const char *dir, struct model *m) {
    lion_status st = {0};
    int rc = model_config_load(&m->cfg, testing_fixture(dir), &st);
    CHECK_MSG(rc == 0, "model_config_load %s: %s", dir, st.msg);
    if (rc) return -1;
    rc = pink_tokenizer_load(&m->cfg.pink.tokenizer, m->cfg.pink.llm.vocab_size, &m->tok, &st);
    CHECK_MSG(rc == 0, "pink_tokenizer_load %s: %s", dir, st.msg);
    return rc;
}

static void test_cases(struct model *models) {
    FILE *f = fopen(testing_fixture("pink_prompt/cases.txt"), "r");
    CHECK_MSG(f != NULL, "no pink_prompt/cases.txt");
    if (!f) return;
    char *line = NULL;
    size_t cap = 0, n_cases = 0, bad = 0, per_task[4] = {0};
    int32_t want[MAX_IDS];
    while (getline(&line, &cap, f) > 0) {
        char *field[7];
        char *p = line;
        int nf = 0;
        for (; nf < 7; nf++) {
            field[nf] = p;
            char *tab = strchr(p, nf < 6 ? '\t' : '\n');
            if (!tab) break;
            *tab = '\0';
            p = tab + 1;
        }
        if (nf < 6) continue;
        struct model *m = &models[strcmp(field[0], "legacy") == 0 ? 0 : 1];
        lion_status st = {0};
        pink_task task;
        CHECK(pink_task_parse(field[1], &task, &st) == 0);
        char *text = unhex(field[2], strlen(field[2]));
        double box[4];
        int has_box = strcmp(field[3], "-") != 0;
        if (has_box) sscanf(field[3], "%lf %lf %lf %lf", &box[0], &box[1], &box[2], &box[3]);
        size_t nw = 0;
        for (char *q = field[4], *end; nw < MAX_IDS; q = end) {
            long v = strtol(q, &end, 10);
            if (end == q) break;
            want[nw++] = (int32_t)v;
        }
        size_t offset = strtoul(field[5], NULL, 10);
        char *want_text = unhex(field[6], strlen(field[6]));
        const char *arg = task == PINK_TASK_VQA || task == PINK_TASK_REC ? text : NULL;
        char *got_text = NULL;
        pink_prompt pp = {0};
        int rc1 = pink_prompt_text(&m->cfg.pink.prompt, task, arg, has_box ? box : NULL, &got_text, &st);
        int rc2 = pink_prompt_build(&m->cfg.pink.prompt, m->tok, task, arg, has_box ? box : NULL, MAX_IDS, &pp, &st);
        int ok = rc1 == 0 && rc2 == 0 && strcmp(got_text, want_text) == 0 && pp.n_ids == nw &&
                 memcmp(pp.ids, want, nw * sizeof *want) == 0 && pp.image_offset == offset && pp.image_tokens == 256;
        if (!ok && bad++ < 5) {
            fprintf(stderr, "  case %zu (%s %s \"%s\"): rc %d %d %s\n    got  \"%s\" offset %zu, %zu ids\n"
                            "    want \"%s\" offset %zu, %zu ids\n", n_cases, field[0], field[1], text, rc1, rc2,
                    st.msg, got_text ? got_text : "", pp.image_offset, pp.n_ids, want_text, offset, nw);
        }
        per_task[task]++;
        n_cases++;
        free(got_text);
        pink_prompt_free(&pp);
        free(text);
        free(want_text);
    }
    free(line);
    fclose(f);
    CHECK_MSG(bad == 0, "%zu of %zu prompts differ from pink_ref's", bad, n_cases);
    CHECK_MSG(per_task[0] == 2 && per_task[1] > 500 && per_task[2] > 500 && per_task[3] == 400,
              "cases per task: %zu %zu %zu %zu", per_task[0], per_task[1], per_task[2], per_task[3]);
}

static void test_errors(struct model *m) {
    const pink_prompt_config *c = &m->cfg.pink.prompt;
    lion_status st = {0};
    pink_prompt pp;
    char *text = NULL;
    double box[4] = {0.1, 0.2, 0.3, 0.4}, bad_box[4] = {0.5, 0.2, 0.3, 0.4}, far_box[4] = {0.1, 0.2, 1.5, 0.4};
    static const struct {
        pink_task task;
        const char *text;
        int box; /* 0 none, 1 good, 2 x0 > x1, 3 out of range */
        const char *msg;
    } cases[] = {
        {PINK_TASK_CAPTION, "extra", 0, "task caption takes no text"},
        {PINK_TASK_CAPTION, NULL, 1, "task caption takes no box"},
        {PINK_TASK_VQA, NULL, 0, "task vqa needs a text"},
        {PINK_TASK_REC, "", 0, "task rec needs a text"},
        {PINK_TASK_REC, "the dog", 1, "task rec takes no box"},
        {PINK_TASK_REGION_CAPTION, NULL, 0, "task region_caption needs a box"},
        {PINK_TASK_REGION_CAPTION, "why", 1, "task region_caption takes no text"},
        {PINK_TASK_REGION_CAPTION, NULL, 2, "box [0.5, 0.2, 0.3, 0.4] has x0 > x1 or y0 > y1"},
        {PINK_TASK_REGION_CAPTION, NULL, 3, "box coordinate 2 is 1.5, outside [0, 1]"},
        {PINK_TASK_VQA, "what is <im_patch> here?", 0, "the text of task vqa holds the image token <im_patch>"},
        {(pink_task)7, "x", 0, "unknown Pink task 7"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const double *b = cases[i].box == 1 ? box : cases[i].box == 2 ? bad_box : cases[i].box == 3 ? far_box : NULL;
        CHECK_EQ_INT(pink_prompt_text(c, cases[i].task, cases[i].text, b, &text, &st), -1);
        CHECK(text == NULL);
        CHECK_EQ_INT(st.code, LION_EINVAL);
        CHECK_CONTAINS(st.msg, cases[i].msg);
        CHECK_EQ_INT(pink_prompt_build(c, m->tok, cases[i].task, cases[i].text, b, MAX_IDS, &pp, &st), -1);
        CHECK_CONTAINS(st.msg, cases[i].msg);
        CHECK(pp.ids == NULL);
    }
    pink_task t;
    CHECK_EQ_INT(pink_task_parse("grounding", &t, &st), -1);
    CHECK_CONTAINS(st.msg, "unknown Pink task 'grounding' (caption, vqa, rec, region_caption)");
    CHECK(strcmp(pink_task_name(PINK_TASK_REGION_CAPTION), "region_caption") == 0);
    /* the prompt is ~256 image tokens + ~40: a bound below that fails, naming the need */
    CHECK_EQ_INT(pink_prompt_build(c, m->tok, PINK_TASK_CAPTION, NULL, NULL, 100, &pp, &st), -1);
    CHECK_EQ_INT(st.code, LION_ETOOBIG);
    CHECK_CONTAINS(st.msg, "the caption prompt needs ");
    CHECK_CONTAINS(st.msg, "tokens, more than the 100 allowed");
    /* an image token the tokenizer does not know */
    pink_prompt_config other = *c;
    other.image_token = "<image>";
    CHECK_EQ_INT(pink_prompt_build(&other, m->tok, PINK_TASK_CAPTION, NULL, NULL, MAX_IDS, &pp, &st), -1);
    CHECK_CONTAINS(st.msg, "the tokenizer has no image token <image>");
    /* a box with more digits, as box_decimals asks */
    other = *c;
    other.box_decimals = 5;
    CHECK_EQ_INT(pink_prompt_text(&other, PINK_TASK_REGION_CAPTION, NULL, box, &text, &st), 0);
    CHECK(text && strstr(text, "<loc>[0.10000,0.20000,0.30000,0.40000]</loc>"));
    free(text);
}

int main(void) {
    struct model models[2] = {0};
    if (load_model("pink_prompt/legacy", &models[0]) == 0 && load_model("pink_prompt/hf", &models[1]) == 0) {
        CHECK_EQ_INT(models[0].cfg.pink.prompt.image_tokens, 256);
        test_cases(models);
        test_errors(&models[1]);
    }
    for (int i = 0; i < 2; i++) {
        llama_tok_free(models[i].tok);
        model_config_free(&models[i].cfg);
    }
    return testing_finish();
}
