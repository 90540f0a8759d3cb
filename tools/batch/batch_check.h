/* batch_check.h - judging an answer against the expected one, and drawing its boxes. */
#ifndef LION_BATCH_CHECK_H
#define LION_BATCH_CHECK_H

#include <cjson/cJSON.h>

#include "batch_request.h"
#include "status.h"

/* Intersection over union of two [x0,y0,x1,y1] boxes; 0 when the union is empty. */
double batch_iou(const float a[4], const float b[4]);
/* 1 when the answer (the gateway's JSON) matches r->expected: for "iou>=0.5" the first
 * answer box against the first box of the expected text, else the text after the
 * normalisation of tools/train/evaluate.py (trimmed, lower case, trailing periods dropped). */
int batch_answer_matches(const batch_request *r, const cJSON *answer);
/* Writes dir/<id>.png: the request's image with the answer's boxes in red and, when the
 * request expects a box, that box in green. */
int batch_draw_boxes(const batch_request *r, const cJSON *answer, const char *dir, lion_status *st);

extern const unsigned char batch_answer_rgb[3], batch_expected_rgb[3];

#endif
