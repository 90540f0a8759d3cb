/* batch_request.h - the requests of a batch run, read from a file.
 *
 * Two formats: the examples file of tools/train/evaluate.py (a JSON object with
 * "requests": [{"id", "image", "task", "category", "instruction", "expected", "match", ...}],
 * image names relative to the file's folder), or JSONL, one request object per line
 * ({"id", "image" (a path), "instruction", "task", "tags"?, generation fields?}). */
#ifndef LION_BATCH_REQUEST_H
#define LION_BATCH_REQUEST_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "status.h"

typedef struct batch_request {
    char *id;          /* the request's id as text ("3" for a number) */
    char *image_path;  /* resolved against the requests file's folder */
    char *label;       /* per-task accounting: "task" of the examples, else the category */
    char *category;    /* "image_level" or "region_level" */
    char *expected;    /* NULL when the request has no expected answer */
    int match_iou;     /* "iou>=0.5": compare the first box, else the text */
    cJSON *body;       /* the /v1/generate body without the image */
} batch_request;

typedef struct batch_requests {
    batch_request *items;
    size_t n;
} batch_requests;

int batch_requests_load(const char *path, batch_requests *out, lion_status *st);
void batch_requests_free(batch_requests *r);
/* The JSON body for POST /v1/generate: the request's fields with the image as base64. */
char *batch_request_body(const batch_request *r, lion_status *st);

#endif
