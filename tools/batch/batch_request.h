/* batch_request.h - the requests of a batch run, read from a file or made from images.
 *
 * Two file formats: the examples file of tools/train/evaluate.py (a JSON object with
 * "requests": [{"id", "image", "task", "category", "instruction", "expected", "match", ...}],
 * image names relative to the file's folder), or JSONL, one request object per line
 * ({"id", "image" (a path), "instruction", "task", "tags"?, generation fields?}).
 * Or no file: every JPEG and PNG of a folder (or of a glob) with one instruction.
 *
 * Ids are unique within a run: --out has one line per id and --resume finds the answered
 * requests by id, so a second request with the same id is refused when loading. */
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
    size_t n, cap;
    const batch_request **by_id; /* the items sorted by id, for batch_requests_find */
} batch_requests;

int batch_requests_load(const char *path, batch_requests *out, lion_status *st);
/* --images: the files named *.jpg, *.jpeg or *.png (any case) in the folder dir_or_glob, or
 * those of them that the glob pattern dir_or_glob matches; sorted by path (bytewise), one
 * request each: id the file's name, the instruction, route "image_level" or "region_level". */
int batch_requests_from_images(const char *dir_or_glob, const char *instruction, const char *route,
                               batch_requests *out, lion_status *st);
/* --model: every request without a "model" of its own asks for this one. */
int batch_requests_set_model(batch_requests *r, const char *model, lion_status *st);
/* --params: json, an object of /v1/generate fields (generation parameters: "max_new_tokens",
 * "num_beams", ...), added to every request that does not set them itself. Fields that come
 * with each request (id, image, instruction, task, model, expected, ...) are refused; the
 * rest the gateway checks, and its 400 names a field it does not take. */
int batch_requests_set_params(batch_requests *r, const char *json, lion_status *st);
/* The index of the request with this id, -1 when there is none. */
long batch_requests_find(const batch_requests *r, const char *id);
void batch_requests_free(batch_requests *r);
/* The JSON body for POST /v1/generate: the request's fields with the image as base64. */
char *batch_request_body(const batch_request *r, lion_status *st);

#endif
