/* boxes.h - the boxes of a region-level answer, read from the generated text.
 *
 * LION prints a region as "[x0,y0,x1,y1]" with coordinates normalized to the image
 * ("[0.440,0.060,0.650,0.367]"). Every bracket holding exactly four plain decimal numbers
 * in [0, 1] (spaces allowed around them) is a box; anything else between brackets (other
 * counts, signs, exponents, text, a bracket never closed) is not, and is skipped. The
 * text is whatever the model produced, so nothing in it can make the parser fail. */
#ifndef LION_BOXES_H
#define LION_BOXES_H

#include <stddef.h>

typedef struct text_box {
    float x0, y0, x1, y1;
} text_box;

/* Writes the first max boxes of text (NUL-terminated UTF-8, NULL = none) to out, in
 * order of appearance, and returns how many boxes the text holds (possibly more than max). */
size_t boxes_parse(const char *text, text_box *out, size_t max);

#endif
