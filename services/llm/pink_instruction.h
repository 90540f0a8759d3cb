/* pink_instruction.h - a request's instruction as one of Pink's tasks.
 *
 * The API, lion-batch and the web page speak LION's instructions (docs/api.md, "Tasks"); a
 * Pink model was trained on its own task templates (pink_prompt.h). The llm stage of a Pink
 * model reads LION's four forms as Pink's tasks:
 *   "A short image caption:"                                          -> caption
 *   "Question: <q> Short answer:"                                     -> vqa(<q>)
 *   "Please provide the bounding box coordinate of the region this
 *    sentence describes: <expression>."                               -> rec(<expression>)
 *   "Please provide a short description for this region: [x0,y0,x1,y1]."
 *                                                                     -> region_caption(box)
 * and any other instruction as a question (vqa) in Pink's template, verbatim. */
#ifndef LION_PINK_INSTRUCTION_H
#define LION_PINK_INSTRUCTION_H

#include "pink_prompt.h"
#include "status.h"

/* The task; *text (malloc'ed; NULL for caption and region_caption) and box (region_caption).
 * LION_EINVAL for a region instruction whose box does not parse or lies outside [0, 1]. */
int pink_instruction_parse(const char *instruction, pink_task *task, char **text, double box[4], lion_status *st);

#endif
