/* batch_request.c - see batch_request.h. */
#include "batch_request.h"

#include <nettle/base64.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *read_file(const char *path, size_t *len, lion_status *st) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        lion_fail(st, LION_EIO, "%s: cannot open", path);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n + 1 == cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) free(buf);
            buf = b;
        }
    }
    fclose(f);
    if (!buf) {
        lion_fail(st, LION_ENOMEM, "%s: no memory", path);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* The fields that describe the request to lion-batch, not to the gateway. */
static const char *const local_fields[] = {"id", "image", "category", "expected", "reference_answer",
                                           "reference_tags", "match", NULL};

static int is_local(const char *name) {
    for (int i = 0; local_fields[i]; i++)
        if (!strcmp(name, local_fields[i])) return 1;
    return 0;
}

static int request_from_json(const cJSON *o, const char *base_dir, const char *where, batch_request *r,
                             lion_status *st) {
    memset(r, 0, sizeof *r);
    if (!cJSON_IsObject(o)) return lion_fail(st, LION_EFORMAT, "%s: not a JSON object", where);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
    const cJSON *image = cJSON_GetObjectItemCaseSensitive(o, "image");
    const cJSON *instruction = cJSON_GetObjectItemCaseSensitive(o, "instruction");
    const cJSON *task = cJSON_GetObjectItemCaseSensitive(o, "task");
    const cJSON *category = cJSON_GetObjectItemCaseSensitive(o, "category");
    const cJSON *expected = cJSON_GetObjectItemCaseSensitive(o, "expected");
    const cJSON *match = cJSON_GetObjectItemCaseSensitive(o, "match");
    if (!cJSON_IsString(image) || !image->valuestring[0])
        return lion_fail(st, LION_EFORMAT, "%s: missing 'image' (a file path)", where);
    if (!cJSON_IsString(instruction)) return lion_fail(st, LION_EFORMAT, "%s: missing 'instruction'", where);
    if (expected && !cJSON_IsString(expected))
        return lion_fail(st, LION_EFORMAT, "%s: 'expected' must be a string", where);
    if (match && (!cJSON_IsString(match) ||
                  (strcmp(match->valuestring, "exact") && strcmp(match->valuestring, "iou>=0.5"))))
        return lion_fail(st, LION_EFORMAT, "%s: 'match' must be \"exact\" or \"iou>=0.5\"", where);
    /* evaluate.py's "task" names the evaluation task (rec, vqa_colour, ...) and "category"
     * the route; in JSONL "task" is the route itself, as in the API */
    const char *route = cJSON_IsString(category) ? category->valuestring
                        : cJSON_IsString(task) && strstr(task->valuestring, "_level") ? task->valuestring
                                                                                       : "image_level";
    if (strcmp(route, "image_level") && strcmp(route, "region_level"))
        return lion_fail(st, LION_EFORMAT, "%s: task/category \"%s\" is not image_level or region_level", where, route);
    char idbuf[64];
    if (cJSON_IsNumber(id)) snprintf(idbuf, sizeof idbuf, "%g", id->valuedouble);
    else if (cJSON_IsString(id)) snprintf(idbuf, sizeof idbuf, "%s", id->valuestring);
    else snprintf(idbuf, sizeof idbuf, "%s", where);
    char path[4096];
    if (image->valuestring[0] == '/' || !base_dir[0]) snprintf(path, sizeof path, "%s", image->valuestring);
    else snprintf(path, sizeof path, "%s/%s", base_dir, image->valuestring);
    r->id = dup_str(idbuf);
    r->image_path = dup_str(path);
    r->category = dup_str(route);
    r->label = dup_str(cJSON_IsString(task) ? task->valuestring : route);
    r->expected = expected ? dup_str(expected->valuestring) : NULL;
    r->match_iou = match && !strcmp(match->valuestring, "iou>=0.5");
    r->body = cJSON_CreateObject();
    for (const cJSON *f = o->child; f; f = f->next)
        if (!is_local(f->string) && strcmp(f->string, "task")) cJSON_AddItemToObject(r->body, f->string, cJSON_Duplicate(f, 1));
    cJSON_AddStringToObject(r->body, "task", route);
    return 0;
}

static void request_free(batch_request *r) {
    free(r->id);
    free(r->image_path);
    free(r->category);
    free(r->label);
    free(r->expected);
    cJSON_Delete(r->body);
}

int batch_requests_load(const char *path, batch_requests *out, lion_status *st) {
    memset(out, 0, sizeof *out);
    size_t len;
    char *text = read_file(path, &len, st);
    if (!text) return -1;
    char base_dir[4096];
    snprintf(base_dir, sizeof base_dir, "%s", path);
    char *slash = strrchr(base_dir, '/');
    if (slash) *slash = 0;
    else base_dir[0] = 0;

    int rc = 0;
    const char *p = text;
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
    cJSON *doc = *p == '{' ? cJSON_Parse(text) : NULL;
    const cJSON *list = doc ? cJSON_GetObjectItemCaseSensitive(doc, "requests") : NULL;
    if (cJSON_IsArray(list)) {
        int n = cJSON_GetArraySize(list);
        out->items = calloc(n ? (size_t)n : 1, sizeof *out->items);
        for (int i = 0; i < n && rc == 0; i++) {
            char where[4200];
            snprintf(where, sizeof where, "%s: requests[%d]", path, i);
            rc = request_from_json(cJSON_GetArrayItem(list, i), base_dir, where, &out->items[out->n], st);
            if (rc == 0) out->n++;
        }
    } else {
        /* JSONL: one object per non-blank line */
        size_t cap = 16;
        out->items = calloc(cap, sizeof *out->items);
        int line_no = 0;
        for (char *line = text; line && *line && rc == 0;) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = 0;
            line_no++;
            char *q = line;
            while (*q == ' ' || *q == '\t' || *q == '\r') q++;
            if (*q) {
                char where[4200];
                snprintf(where, sizeof where, "%s:%d", path, line_no);
                cJSON *o = cJSON_Parse(q);
                if (!o) {
                    rc = lion_fail(st, LION_EFORMAT, "%s: not valid JSON (neither a requests.json object nor JSONL)", where);
                } else {
                    if (out->n == cap) {
                        batch_request *b = realloc(out->items, (cap *= 2) * sizeof *b);
                        if (!b) rc = lion_fail(st, LION_ENOMEM, "%s: no memory", where);
                        else out->items = b;
                    }
                    if (rc == 0) rc = request_from_json(o, base_dir, where, &out->items[out->n], st);
                    if (rc == 0) out->n++;
                    cJSON_Delete(o);
                }
            }
            line = nl ? nl + 1 : NULL;
        }
    }
    cJSON_Delete(doc);
    free(text);
    if (rc == 0 && out->n == 0) rc = lion_fail(st, LION_EFORMAT, "%s: no requests", path);
    if (rc) batch_requests_free(out);
    return rc;
}

void batch_requests_free(batch_requests *r) {
    for (size_t i = 0; i < r->n; i++) request_free(&r->items[i]);
    free(r->items);
    memset(r, 0, sizeof *r);
}

char *batch_request_body(const batch_request *r, lion_status *st) {
    size_t len;
    char *bytes = read_file(r->image_path, &len, st);
    if (!bytes) return NULL;
    char *b64 = malloc(BASE64_ENCODE_RAW_LENGTH(len) + 1);
    if (!b64) {
        free(bytes);
        lion_fail(st, LION_ENOMEM, "%s: no memory for base64", r->image_path);
        return NULL;
    }
    base64_encode_raw(b64, len, (const uint8_t *)bytes);
    b64[BASE64_ENCODE_RAW_LENGTH(len)] = 0;
    free(bytes);
    cJSON *body = cJSON_Duplicate(r->body, 1);
    cJSON_AddItemToObject(body, "image", cJSON_CreateStringReference(b64));
    char *text = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    free(b64);
    if (!text) lion_fail(st, LION_ENOMEM, "request %s: no memory for the body", r->id);
    return text;
}
