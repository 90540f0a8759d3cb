/* boxes_parse: LION's "[x0,y0,x1,y1]" answers, and text that only looks like them. */
#include <stdlib.h>
#include <string.h>

#include "boxes.h"
#include "testing.h"

static void check_box(const text_box *b, float x0, float y0, float x1, float y1) {
    float got[4] = {b->x0, b->y0, b->x1, b->y1}, want[4] = {x0, y0, x1, y1};
    CHECK_CLOSE(got, want, 4, 1e-6, "box");
}

int main(void) {
    text_box b[4];
    CHECK_EQ_INT(boxes_parse("[0.440,0.060,0.650,0.367]", b, 4), 1);
    check_box(&b[0], 0.44f, 0.06f, 0.65f, 0.367f);

    /* several, in order, with spaces and the integer and leading-dot forms */
    CHECK_EQ_INT(boxes_parse("a man [0.1, 0.2, 0.3, 0.4] and a dog [ 0 ,.5,1,1.000 ] here", b, 4), 2);
    check_box(&b[0], 0.1f, 0.2f, 0.3f, 0.4f);
    check_box(&b[1], 0.0f, 0.5f, 1.0f, 1.0f);

    /* more boxes than room: the count says so, only max are written */
    b[1].x0 = -7;
    CHECK_EQ_INT(boxes_parse("[0,0,1,1][0.5,0.5,0.6,0.6][0.1,0.1,0.2,0.2]", b, 1), 3);
    check_box(&b[0], 0, 0, 1, 1);
    CHECK(b[1].x0 == -7);
    CHECK_EQ_INT(boxes_parse("[0,0,1,1]", NULL, 0), 1);

    /* not boxes: wrong counts, out of range, signs, exponents, words, unclosed brackets */
    static const char *const not_boxes[] = {
        "", "[]", "[0.1,0.2,0.3]", "[0.1,0.2,0.3,0.4,0.5]", "[1.5,0.2,0.3,0.4]", "[-0.1,0.2,0.3,0.4]",
        "[+0.1,0.2,0.3,0.4]", "[1e-1,0.2,0.3,0.4]", "[0.1,0.2,0.3,0.4", "[0.1,,0.3,0.4]", "[.,0.2,0.3,0.4]",
        "[0.1;0.2;0.3;0.4]", "[dog]", "[0.1,0.2,0.3,nan]", "[0.1,0.2,0.3,inf]", "[[[[", "]]]", "[0.1 0.2,0.3,0.4]",
        "[99999999999999999999999999999999999999,0,0,0]", "[1.0000001,0,0,0]",
    };
    for (size_t i = 0; i < sizeof not_boxes / sizeof *not_boxes; i++)
        CHECK_MSG(boxes_parse(not_boxes[i], b, 4) == 0, "\"%s\" is not a box", not_boxes[i]);
    CHECK_EQ_INT(boxes_parse(NULL, b, 4), 0);

    /* a malformed bracket does not hide a good one right after it */
    CHECK_EQ_INT(boxes_parse("[0.1,0.2[0.3,0.4,0.5,0.6]", b, 4), 1);
    check_box(&b[0], 0.3f, 0.4f, 0.5f, 0.6f);
    CHECK_EQ_INT(boxes_parse("[0.1,0.2,0.3,[0.3,0.4,0.5,0.6]]", b, 4), 1);

    /* random bytes around valid boxes never crash and never lose them */
    unsigned seed = 11;
    static const char alphabet[] = "[],.0123456789 -e";
    for (int trial = 0; trial < 2000; trial++) {
        char text[96];
        size_t len = (size_t)(rand_r(&seed) % 64);
        for (size_t i = 0; i < len; i++) text[i] = alphabet[rand_r(&seed) % (sizeof alphabet - 1)];
        text[len] = 0;
        size_t n = boxes_parse(text, b, 4);
        for (size_t i = 0; i < n && i < 4; i++)
            CHECK_MSG(b[i].x0 >= 0 && b[i].x0 <= 1 && b[i].y1 >= 0 && b[i].y1 <= 1, "box in range in \"%s\"", text);
        char with[160];
        snprintf(with, sizeof with, "%s [0.25,0.5,0.75,1]", text);
        CHECK_MSG(boxes_parse(with, NULL, 0) == n + 1, "a box after \"%s\" is found", text);
    }
    return testing_finish();
}
