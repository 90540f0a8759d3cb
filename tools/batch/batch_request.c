/* batch_request.c - see batch_request.h. */
#include "batch_request.h"

#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <nettle/base64.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

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
    /* whole numbers as integers ("%g" would make 1000000 and 1000001 both "1e+06"); no id:
     * the request's place in its file */
    char idbuf[64];
    const char *id_text = idbuf;
    if (cJSON_IsNumber(id)) {
        double v = id->valuedouble;
        int whole = v > -9e15 && v < 9e15 && v == (double)(long long)v;
        snprintf(idbuf, sizeof idbuf, whole ? "%.0f" : "%.17g", v);
    } else {
        id_text = cJSON_IsString(id) ? id->valuestring : where;
    }
    char path[4096];
    if (image->valuestring[0] == '/' || !base_dir[0]) snprintf(path, sizeof path, "%s", image->valuestring);
    else snprintf(path, sizeof path, "%s/%s", base_dir, image->valuestring);
    r->id = dup_str(id_text);
    r->image_path = dup_str(path);
    r->category = dup_str(route);
    r->label = dup_str(cJSON_IsString(task) ? task->valuestring : route);
    r->expected = expected ? dup_str(expected->valuestring) : NULL;
    r->match_iou = match && !strcmp(match->valuestring, "iou>=0.5");
    r->body = cJSON_CreateObject();
    for (const cJSON *f = o->child; f; f = f->next)
        if (!is_local(f->string) && strcmp(f->string, "task")) cJSON_AddItemToObject(r->body, f->string, cJSON_Duplicate(f, 1));
    cJSON_AddStringToObject(r->body, "task", route);
    if (!r->id || !r->image_path || !r->category || !r->label || (expected && !r->expected) ||
        !cJSON_GetObjectItemCaseSensitive(r->body, "task"))
        return lion_fail(st, LION_ENOMEM, "%s: no memory", where);
    return 0;
}

int batch_requests_set_model(batch_requests *r, const char *model, lion_status *st) {
    for (size_t i = 0; i < r->n; i++)
        if (!cJSON_GetObjectItemCaseSensitive(r->items[i].body, "model") &&
            !cJSON_AddStringToObject(r->items[i].body, "model", model))
            return lion_fail(st, LION_ENOMEM, "--model: no memory");
    return 0;
}

/* The fields --params cannot set: lion-batch's own, and those the input gives each request. */
static int is_per_request(const char *name) {
    return is_local(name) || !strcmp(name, "instruction") || !strcmp(name, "task") || !strcmp(name, "model");
}

int batch_requests_set_params(batch_requests *r, const char *json, lion_status *st) {
    cJSON *params = cJSON_Parse(json);
    int rc = 0;
    if (!cJSON_IsObject(params))
        rc = lion_fail(st, LION_EINVAL, "--params: not a JSON object: %.80s", json);
    for (const cJSON *f = params ? params->child : NULL; rc == 0 && f; f = f->next)
        if (is_per_request(f->string))
            rc = lion_fail(st, LION_EINVAL, "--params: '%s' is given per request (%s), not by --params", f->string,
                           !strcmp(f->string, "model") ? "or by --model" : "by the input");
    for (size_t i = 0; rc == 0 && i < r->n; i++)
        for (const cJSON *f = params->child; rc == 0 && f; f = f->next) {
            if (cJSON_GetObjectItemCaseSensitive(r->items[i].body, f->string)) continue; /* the request's own */
            cJSON *copy = cJSON_Duplicate(f, 1);
            if (!copy || !cJSON_AddItemToObject(r->items[i].body, f->string, copy)) {
                cJSON_Delete(copy);
                rc = lion_fail(st, LION_ENOMEM, "--params: no memory");
            }
        }
    cJSON_Delete(params);
    return rc;
}

static void request_free(batch_request *r) {
    free(r->id);
    free(r->image_path);
    free(r->category);
    free(r->label);
    free(r->expected);
    cJSON_Delete(r->body);
}

/* A zeroed place for one more request; NULL with st filled when memory runs out. */
static batch_request *requests_grow(batch_requests *out, const char *where, lion_status *st) {
    if (out->n == out->cap) {
        size_t cap = out->cap ? out->cap * 2 : 16;
        batch_request *b = realloc(out->items, cap * sizeof *b);
        if (!b) {
            lion_fail(st, LION_ENOMEM, "%s: no memory", where);
            return NULL;
        }
        out->items = b;
        out->cap = cap;
    }
    batch_request *r = &out->items[out->n];
    memset(r, 0, sizeof *r);
    return r;
}

static int add_request(batch_requests *out, const cJSON *o, const char *base_dir, const char *where, lion_status *st) {
    batch_request *r = requests_grow(out, where, st);
    if (!r) return -1;
    if (request_from_json(o, base_dir, where, r, st) != 0) {
        request_free(r);
        return -1;
    }
    out->n++;
    return 0;
}

/* tools/train/evaluate.py's examples: {"requests": [...]} */
static int load_examples(const cJSON *list, const char *path, const char *base_dir, batch_requests *out,
                         lion_status *st) {
    int n = cJSON_GetArraySize(list);
    for (int i = 0; i < n; i++) {
        char where[4200];
        snprintf(where, sizeof where, "%s: requests[%d]", path, i);
        if (add_request(out, cJSON_GetArrayItem(list, i), base_dir, where, st) != 0) return -1;
    }
    return 0;
}

/* JSONL: one object per non-blank line (text is cut at its newlines). */
static int load_jsonl(char *text, const char *path, const char *base_dir, batch_requests *out, lion_status *st) {
    int line_no = 0;
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        line_no++;
        char *q = line;
        while (*q == ' ' || *q == '\t' || *q == '\r') q++;
        if (*q) {
            char where[4200];
            snprintf(where, sizeof where, "%s:%d", path, line_no);
            cJSON *o = cJSON_Parse(q);
            if (!o)
                return lion_fail(st, LION_EFORMAT, "%s: not valid JSON (neither a requests.json object nor JSONL)",
                                 where);
            int rc = add_request(out, o, base_dir, where, st);
            cJSON_Delete(o);
            if (rc) return -1;
        }
        line = nl ? nl + 1 : NULL;
    }
    return 0;
}

static int compare_ids(const void *a, const void *b) {
    return strcmp((*(const batch_request *const *)a)->id, (*(const batch_request *const *)b)->id);
}

/* Sorts the requests by id into by_id; two requests with one id are refused, since --out
 * holds one line per id and --resume tells the answered ones by id. */
static int index_ids(batch_requests *out, const char *source, lion_status *st) {
    out->by_id = malloc((out->n ? out->n : 1) * sizeof *out->by_id);
    if (!out->by_id) return lion_fail(st, LION_ENOMEM, "%s: no memory", source);
    for (size_t i = 0; i < out->n; i++) out->by_id[i] = &out->items[i];
    qsort(out->by_id, out->n, sizeof *out->by_id, compare_ids);
    for (size_t i = 1; i < out->n; i++)
        if (!strcmp(out->by_id[i - 1]->id, out->by_id[i]->id))
            return lion_fail(st, LION_EFORMAT, "%s: two requests with id \"%s\" (ids must be unique)", source,
                             out->by_id[i]->id);
    return 0;
}

long batch_requests_find(const batch_requests *r, const char *id) {
    batch_request key = {.id = (char *)id};
    const batch_request *k = &key;
    const batch_request **hit = r->by_id ? bsearch(&k, r->by_id, r->n, sizeof *r->by_id, compare_ids) : NULL;
    return hit ? (long)(*hit - r->items) : -1;
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

    const char *p = text;
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
    cJSON *doc = *p == '{' ? cJSON_Parse(text) : NULL;
    const cJSON *list = doc ? cJSON_GetObjectItemCaseSensitive(doc, "requests") : NULL;
    int rc = cJSON_IsArray(list) ? load_examples(list, path, base_dir, out, st)
                                 : load_jsonl(text, path, base_dir, out, st);
    cJSON_Delete(doc);
    free(text);
    if (rc == 0 && out->n == 0) rc = lion_fail(st, LION_EFORMAT, "%s: no requests", path);
    if (rc == 0) rc = index_ids(out, path, st);
    if (rc) batch_requests_free(out);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* --images                                                                                  */

/* JPEG and PNG by name only: a folder of millions of images is listed without opening them
 * (a file that is neither fails at the gateway, as a request of its own). */
static int is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png"));
}

typedef struct path_list {
    char **items;
    size_t n, cap;
} path_list;

static int path_list_add(path_list *l, const char *path) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        char **b = realloc(l->items, cap * sizeof *b);
        if (!b) return -1;
        l->items = b;
        l->cap = cap;
    }
    if (!(l->items[l->n] = dup_str(path))) return -1;
    l->n++;
    return 0;
}

static void path_list_free(path_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
}

static int compare_paths(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The regular files (or links to them) of a folder whose names are JPEG or PNG ones. */
static int list_folder(const char *dir, path_list *l, lion_status *st) {
    DIR *d = opendir(dir);
    if (!d) return lion_fail(st, LION_EIO, "--images %s: %s", dir, strerror(errno));
    int rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(d));) {
        if (!is_image_name(e->d_name)) continue;
        char path[4352];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (e->d_type != DT_REG && (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))) continue;
        if (path_list_add(l, path) != 0) rc = lion_fail(st, LION_ENOMEM, "--images %s: no memory", dir);
    }
    closedir(d);
    return rc;
}

static int list_glob(const char *pattern, path_list *l, lion_status *st) {
    glob_t g;
    /* GLOB_MARK: a folder comes back as "x.png/", which is_image_name refuses */
    int grc = glob(pattern, GLOB_MARK, NULL, &g);
    if (grc == GLOB_NOMATCH)
        return lion_fail(st, LION_EIO, "--images %s: no such folder, and no file matches it", pattern);
    if (grc != 0) return lion_fail(st, LION_EIO, "--images %s: cannot read the glob's folders", pattern);
    int rc = 0;
    for (size_t i = 0; i < g.gl_pathc && rc == 0; i++)
        if (is_image_name(g.gl_pathv[i]) && path_list_add(l, g.gl_pathv[i]) != 0)
            rc = lion_fail(st, LION_ENOMEM, "--images %s: no memory", pattern);
    globfree(&g);
    return rc;
}

/* One request per image, made as a JSONL line would be, so that it is checked the same way. */
static int add_image_request(batch_requests *out, const char *path, const char *instruction, const char *route,
                             lion_status *st) {
    const char *slash = strrchr(path, '/');
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "id", slash ? slash + 1 : path) ||
        !cJSON_AddStringToObject(o, "image", path) || !cJSON_AddStringToObject(o, "instruction", instruction) ||
        !cJSON_AddStringToObject(o, "task", route)) {
        cJSON_Delete(o);
        return lion_fail(st, LION_ENOMEM, "%s: no memory", path);
    }
    int rc = add_request(out, o, "", path, st);
    cJSON_Delete(o);
    return rc;
}

int batch_requests_from_images(const char *dir_or_glob, const char *instruction, const char *route,
                               batch_requests *out, lion_status *st) {
    memset(out, 0, sizeof *out);
    path_list l = {0};
    struct stat sb;
    int rc = stat(dir_or_glob, &sb) == 0 && S_ISDIR(sb.st_mode) ? list_folder(dir_or_glob, &l, st)
                                                                 : list_glob(dir_or_glob, &l, st);
    if (rc == 0 && l.n == 0) rc = lion_fail(st, LION_EFORMAT, "--images %s: no .jpg, .jpeg or .png file", dir_or_glob);
    if (rc == 0) qsort(l.items, l.n, sizeof *l.items, compare_paths);
    for (size_t i = 0; i < l.n && rc == 0; i++) rc = add_image_request(out, l.items[i], instruction, route, st);
    path_list_free(&l);
    if (rc == 0) rc = index_ids(out, dir_or_glob, st);
    if (rc) batch_requests_free(out);
    return rc;
}

void batch_requests_free(batch_requests *r) {
    for (size_t i = 0; i < r->n; i++) request_free(&r->items[i]);
    free(r->items);
    free(r->by_id);
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
