#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct st_entry {
    char *name;
    dtype dtype;
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    uint64_t begin, end; /* relative to the data section */
} st_entry;

struct safetensors_file {
    char *path;
    const uint8_t *map;
    size_t map_size;
    const uint8_t *data; /* start of the data section inside map */
    uint64_t data_size;
    st_entry *entries; /* sorted by name */
    size_t n_entries;
    char **meta_keys, **meta_values; /* sorted by key */
    size_t n_meta;
};

/* JSON numbers are doubles: integers above 2^53 cannot be told apart, so they are refused
 * rather than silently rounded. */
#define JSON_MAX_EXACT_INT 9007199254740992.0

/* dtypes of the safetensors spec that tensor.h has no compute for: named in the error so that
 * a user sees "not supported" rather than "unknown". */
static const char *const unsupported_dtypes[] = {"F64", "BOOL", "I16", "U16", "U32", "U64",
                                                 "F8_E4M3", "F8_E5M2"};

static const char *metadata_key = "__metadata__";

static char *str_dup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

static int json_to_u64(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > JSON_MAX_EXACT_INT || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}

/* How a non-integer JSON value was wrong, for messages: "-3", "1.5", "a string". */
static const char *json_describe(const cJSON *v, char *buf, size_t len) {
    if (cJSON_IsNumber(v)) snprintf(buf, len, "%.17g", v->valuedouble);
    else if (cJSON_IsString(v)) snprintf(buf, len, "a string");
    else if (cJSON_IsArray(v)) snprintf(buf, len, "an array");
    else if (cJSON_IsObject(v)) snprintf(buf, len, "an object");
    else if (cJSON_IsBool(v)) snprintf(buf, len, "a boolean");
    else snprintf(buf, len, "null");
    return buf;
}

static int parse_dtype(const safetensors_file *f, const char *name, const cJSON *v, dtype *out,
                       lion_status *st) {
    if (!v) return lion_fail(st, LION_EFORMAT, "%s: tensor '%s': missing \"dtype\"", f->path, name);
    if (!cJSON_IsString(v))
        return lion_fail(st, LION_EFORMAT, "%s: tensor '%s': \"dtype\" is not a string", f->path, name);
    if (dtype_from_name(v->valuestring, out) == 0) return 0;
    for (size_t i = 0; i < sizeof unsupported_dtypes / sizeof unsupported_dtypes[0]; i++)
        if (strcmp(v->valuestring, unsupported_dtypes[i]) == 0)
            return lion_fail(st, LION_EFORMAT,
                             "%s: tensor '%s': dtype %s is not supported (F32 F16 BF16 I8 U8 I32 I64 are)",
                             f->path, name, v->valuestring);
    return lion_fail(st, LION_EFORMAT, "%s: tensor '%s': unknown dtype '%.64s'", f->path, name,
                     v->valuestring);
}

static int parse_shape(const safetensors_file *f, const char *name, const cJSON *v, st_entry *e,
                       lion_status *st) {
    char buf[64];
    if (!v) return lion_fail(st, LION_EFORMAT, "%s: tensor '%s': missing \"shape\"", f->path, name);
    if (!cJSON_IsArray(v))
        return lion_fail(st, LION_EFORMAT, "%s: tensor '%s': \"shape\" is not an array", f->path, name);
    int ndim = cJSON_GetArraySize(v);
    if (ndim > TENSOR_MAX_DIMS)
        return lion_fail(st, LION_EFORMAT, "%s: tensor '%s': %d dimensions, at most %d are supported",
                         f->path, name, ndim, TENSOR_MAX_DIMS);
    int i = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, v) {
        uint64_t u;
        if (json_to_u64(d, &u))
            return lion_fail(st, LION_EFORMAT,
                             "%s: tensor '%s': shape[%d] is %s, expected a non-negative integer", f->path,
                             name, i, json_describe(d, buf, sizeof buf));
        e->shape[i++] = (int64_t)u;
    }
    e->ndim = ndim;
    if (shape_numel(ndim, e->shape) < 0) {
        char s[256];
        return lion_fail(st, LION_EFORMAT, "%s: tensor '%s': shape %s overflows the element count",
                         f->path, name, shape_str(ndim, e->shape, s, sizeof s));
    }
    return 0;
}

static int parse_offsets(const safetensors_file *f, const char *name, const cJSON *v, st_entry *e,
                         lion_status *st) {
    if (!v) return lion_fail(st, LION_EFORMAT, "%s: tensor '%s': missing \"data_offsets\"", f->path, name);
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2 || json_to_u64(cJSON_GetArrayItem(v, 0), &e->begin) ||
        json_to_u64(cJSON_GetArrayItem(v, 1), &e->end))
        return lion_fail(st, LION_EFORMAT,
                         "%s: tensor '%s': \"data_offsets\" must be [begin, end], two non-negative integers",
                         f->path, name);
    if (e->begin > e->end)
        return lion_fail(st, LION_EFORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin",
                         f->path, name, (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > f->data_size)
        return lion_fail(st, LION_EFORMAT,
                         "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the data section (%llu bytes)",
                         f->path, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                         (unsigned long long)f->data_size);
    uint64_t numel = (uint64_t)shape_numel(e->ndim, e->shape);
    uint64_t size = dtype_size(e->dtype);
    char s[256];
    if (numel > UINT64_MAX / size || numel * size != e->end - e->begin)
        return lion_fail(st, LION_EFORMAT,
                         "%s: tensor '%s': %s %s needs %llu bytes but data_offsets [%llu, %llu] hold %llu",
                         f->path, name, dtype_name(e->dtype), shape_str(e->ndim, e->shape, s, sizeof s),
                         (unsigned long long)(numel > UINT64_MAX / size ? UINT64_MAX : numel * size),
                         (unsigned long long)e->begin, (unsigned long long)e->end,
                         (unsigned long long)(e->end - e->begin));
    /* Views are read in place as float/int arrays, so they must be aligned; the mapping is
     * page-aligned, so the file offset decides. The reference writer always aligns. */
    uint64_t file_offset = (uint64_t)(f->data - f->map) + e->begin;
    if (file_offset % size != 0)
        return lion_fail(st, LION_EFORMAT,
                         "%s: tensor '%s': data starts at file offset %llu, not aligned to its %llu-byte dtype %s",
                         f->path, name, (unsigned long long)file_offset, (unsigned long long)size,
                         dtype_name(e->dtype));
    return 0;
}

static int parse_metadata(safetensors_file *f, const cJSON *v, lion_status *st) {
    if (!cJSON_IsObject(v))
        return lion_fail(st, LION_EFORMAT, "%s: \"__metadata__\" is not an object", f->path);
    size_t n = (size_t)cJSON_GetArraySize(v);
    f->meta_keys = calloc(n ? n : 1, sizeof *f->meta_keys);
    f->meta_values = calloc(n ? n : 1, sizeof *f->meta_values);
    if (!f->meta_keys || !f->meta_values)
        return lion_fail(st, LION_ENOMEM, "%s: out of memory for the metadata", f->path);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, v) {
        if (!cJSON_IsString(kv))
            return lion_fail(st, LION_EFORMAT, "%s: __metadata__ '%s' is not a string", f->path, kv->string);
        for (size_t i = 0; i < f->n_meta; i++)
            if (strcmp(f->meta_keys[i], kv->string) == 0)
                return lion_fail(st, LION_EFORMAT, "%s: __metadata__ key '%s' appears twice", f->path,
                                 kv->string);
        f->meta_keys[f->n_meta] = str_dup(kv->string);
        f->meta_values[f->n_meta] = str_dup(kv->valuestring);
        f->n_meta++;
        if (!f->meta_keys[f->n_meta - 1] || !f->meta_values[f->n_meta - 1])
            return lion_fail(st, LION_ENOMEM, "%s: out of memory for the metadata", f->path);
    }
    /* keys sorted, so that iteration is deterministic whatever the writer's order */
    for (size_t i = 1; i < f->n_meta; i++)
        for (size_t j = i; j > 0 && strcmp(f->meta_keys[j - 1], f->meta_keys[j]) > 0; j--) {
            char *k = f->meta_keys[j], *val = f->meta_values[j];
            f->meta_keys[j] = f->meta_keys[j - 1];
            f->meta_values[j] = f->meta_values[j - 1];
            f->meta_keys[j - 1] = k;
            f->meta_values[j - 1] = val;
        }
    return 0;
}

static int entry_cmp_name(const void *a, const void *b) {
    return strcmp(((const st_entry *)a)->name, ((const st_entry *)b)->name);
}

static int entry_cmp_offset(const void *a, const void *b) {
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Names unique (cJSON keeps both copies of a repeated key) and byte ranges disjoint. */
static int check_entries(safetensors_file *f, lion_status *st) {
    qsort(f->entries, f->n_entries, sizeof *f->entries, entry_cmp_name);
    for (size_t i = 1; i < f->n_entries; i++)
        if (strcmp(f->entries[i - 1].name, f->entries[i].name) == 0)
            return lion_fail(st, LION_EFORMAT, "%s: tensor '%s' appears twice in the header", f->path,
                             f->entries[i].name);
    if (f->n_entries < 2) return 0;
    const st_entry **by_offset = malloc(f->n_entries * sizeof *by_offset);
    if (!by_offset) return lion_fail(st, LION_ENOMEM, "%s: out of memory", f->path);
    for (size_t i = 0; i < f->n_entries; i++) by_offset[i] = &f->entries[i];
    qsort(by_offset, f->n_entries, sizeof *by_offset, entry_cmp_offset);
    const st_entry *last = NULL; /* the non-empty tensor that reaches furthest so far */
    int rc = 0;
    for (size_t i = 0; i < f->n_entries && rc == 0; i++) {
        const st_entry *e = by_offset[i];
        if (e->begin == e->end) continue; /* empty tensors occupy no bytes */
        if (last && e->begin < last->end)
            rc = lion_fail(st, LION_EFORMAT, "%s: tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap",
                           f->path, last->name, (unsigned long long)last->begin,
                           (unsigned long long)last->end, e->name, (unsigned long long)e->begin,
                           (unsigned long long)e->end);
        if (!last || e->end > last->end) last = e;
    }
    free(by_offset);
    return rc;
}

static int parse_header(safetensors_file *f, const char *json, size_t len, lion_status *st) {
    if (len < 2 || json[0] != '{')
        return lion_fail(st, LION_EFORMAT, "%s: header is not a JSON object", f->path);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t at = end && end >= json && end <= json + len ? (size_t)(end - json) : 0;
        return lion_fail(st, LION_EFORMAT, "%s: header is not valid JSON (near byte %zu of %zu)", f->path,
                         at, len);
    }
    int rc = 0;
    /* the reference writer pads with spaces; anything else after the object is corruption */
    for (const char *p = end; p < json + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            rc = lion_fail(st, LION_EFORMAT, "%s: unexpected bytes after the JSON header (at byte %zu)",
                           f->path, (size_t)(p - json));
            break;
        }
    if (rc == 0 && !cJSON_IsObject(root))
        rc = lion_fail(st, LION_EFORMAT, "%s: header is not a JSON object", f->path);
    size_t n = rc == 0 ? (size_t)cJSON_GetArraySize(root) : 0;
    if (rc == 0) {
        f->entries = calloc(n ? n : 1, sizeof *f->entries);
        if (!f->entries) rc = lion_fail(st, LION_ENOMEM, "%s: out of memory for %zu entries", f->path, n);
    }
    int seen_metadata = 0;
    const cJSON *item;
    for (item = rc == 0 ? root->child : NULL; item && rc == 0; item = item->next) {
        const char *name = item->string;
        if (strcmp(name, metadata_key) == 0) {
            if (seen_metadata++) rc = lion_fail(st, LION_EFORMAT, "%s: \"__metadata__\" appears twice", f->path);
            else rc = parse_metadata(f, item, st);
            continue;
        }
        st_entry *e = &f->entries[f->n_entries];
        if (!cJSON_IsObject(item)) {
            rc = lion_fail(st, LION_EFORMAT, "%s: tensor '%s': entry is not an object", f->path, name);
            break;
        }
        if ((rc = parse_dtype(f, name, cJSON_GetObjectItemCaseSensitive(item, "dtype"), &e->dtype, st)) ||
            (rc = parse_shape(f, name, cJSON_GetObjectItemCaseSensitive(item, "shape"), e, st)) ||
            (rc = parse_offsets(f, name, cJSON_GetObjectItemCaseSensitive(item, "data_offsets"), e, st)))
            break;
        e->name = str_dup(name);
        if (!e->name) {
            rc = lion_fail(st, LION_ENOMEM, "%s: out of memory", f->path);
            break;
        }
        f->n_entries++;
    }
    cJSON_Delete(root);
    if (rc == 0) rc = check_entries(f, st);
    return rc;
}

int safetensors_open(safetensors_file **out, const char *path, lion_status *st) {
    *out = NULL;
    safetensors_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = str_dup(path))) {
        free(f);
        return lion_fail(st, LION_ENOMEM, "%s: out of memory", path);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        lion_fail(st, LION_EIO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        lion_fail(st, LION_EIO, "%s: not a regular file", path);
        close(fd);
        goto fail;
    }
    if (sb.st_size < 8) {
        lion_fail(st, LION_EFORMAT, "%s: file is %lld bytes, too short for the 8-byte header length", path,
                  (long long)sb.st_size);
        close(fd);
        goto fail;
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd); /* the mapping stays valid without the descriptor */
    if (map == MAP_FAILED) {
        lion_fail(st, LION_EIO, "%s: mmap failed: %s", path, strerror(errno));
        goto fail;
    }
    f->map = map;
    f->map_size = (size_t)sb.st_size;

    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = header_len << 8 | f->map[i];
    if (header_len > SAFETENSORS_MAX_HEADER) {
        lion_fail(st, LION_ETOOBIG, "%s: header length %llu exceeds the limit of %llu bytes", path,
                  (unsigned long long)header_len, (unsigned long long)SAFETENSORS_MAX_HEADER);
        goto fail;
    }
    if (header_len > f->map_size - 8) {
        lion_fail(st, LION_EFORMAT, "%s: header length %llu runs past the end of the file (%zu bytes)", path,
                  (unsigned long long)header_len, f->map_size);
        goto fail;
    }
    f->data = f->map + 8 + header_len;
    f->data_size = f->map_size - 8 - header_len;
    if (parse_header(f, (const char *)f->map + 8, (size_t)header_len, st)) goto fail;
    *out = f;
    return 0;
fail:
    safetensors_close(f);
    return -1;
}

void safetensors_close(safetensors_file *f) {
    if (!f) return;
    if (f->map) munmap((void *)f->map, f->map_size);
    for (size_t i = 0; i < f->n_entries; i++) free(f->entries[i].name);
    free(f->entries);
    for (size_t i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    free(f->path);
    free(f);
}

const char *safetensors_path(const safetensors_file *f) { return f->path; }

size_t safetensors_count(const safetensors_file *f) { return f->n_entries; }

const char *safetensors_name_at(const safetensors_file *f, size_t i) {
    return i < f->n_entries ? f->entries[i].name : NULL;
}

static const st_entry *find_entry(const safetensors_file *f, const char *name) {
    st_entry key = {.name = (char *)name};
    return bsearch(&key, f->entries, f->n_entries, sizeof *f->entries, entry_cmp_name);
}

int safetensors_has(const safetensors_file *f, const char *name) { return find_entry(f, name) != NULL; }

int safetensors_get(const safetensors_file *f, const char *name, tensor *out, lion_status *st) {
    const st_entry *e = find_entry(f, name);
    if (!e) return lion_fail(st, LION_ENOTFOUND, "%s: tensor '%s' not found", f->path, name);
    /* const is cast away because tensor has one data pointer for both owners and views; the
     * mapping is PROT_READ, so a stray write faults instead of corrupting the file. */
    *out = tensor_view(e->dtype, (void *)(f->data + e->begin), e->ndim, e->shape);
    return 0;
}

int safetensors_get_checked(const safetensors_file *f, const char *name, int dt, int ndim,
                            const int64_t *shape, tensor *out, lion_status *st) {
    tensor t;
    if (safetensors_get(f, name, &t, st)) return -1;
    if (dt != SAFETENSORS_ANY_DTYPE && (int)t.dtype != dt)
        return lion_fail(st, LION_EFORMAT, "%s: tensor '%s': expected dtype %s, found %s", f->path, name,
                         dtype_name((dtype)dt), dtype_name(t.dtype));
    if (shape) {
        int ok = t.ndim == ndim;
        for (int i = 0; ok && i < ndim; i++) ok = shape[i] == -1 || shape[i] == t.shape[i];
        if (!ok) {
            char want[256], got[256];
            return lion_fail(st, LION_EFORMAT, "%s: tensor '%s': expected shape %s, found %s", f->path, name,
                             shape_str(ndim, shape, want, sizeof want),
                             shape_str(t.ndim, t.shape, got, sizeof got));
        }
    }
    *out = t;
    return 0;
}

int safetensors_load_f32(const safetensors_file *f, const char *name, int ndim, const int64_t *shape,
                         tensor *out, lion_status *st) {
    memset(out, 0, sizeof *out);
    tensor view;
    if (safetensors_get_checked(f, name, SAFETENSORS_ANY_DTYPE, ndim, shape, &view, st)) return -1;
    if (view.dtype != DTYPE_F32 && view.dtype != DTYPE_F16 && view.dtype != DTYPE_BF16)
        return lion_fail(st, LION_EFORMAT, "%s: tensor '%s': dtype %s cannot be loaded as F32", f->path, name,
                         dtype_name(view.dtype));
    if (tensor_to_f32(out, &view, st)) return lion_fail_prefix(st, "%s: tensor '%s': ", f->path, name);
    return 0;
}

const char *safetensors_metadata_get(const safetensors_file *f, const char *key) {
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

size_t safetensors_metadata_count(const safetensors_file *f) { return f->n_meta; }

void safetensors_metadata_at(const safetensors_file *f, size_t i, const char **key, const char **value) {
    *key = i < f->n_meta ? f->meta_keys[i] : NULL;
    *value = i < f->n_meta ? f->meta_values[i] : NULL;
}

/* ---- writer ---- */

static int item_cmp_layout(const void *a, const void *b) {
    const safetensors_item *x = *(const safetensors_item *const *)a, *y = *(const safetensors_item *const *)b;
    size_t sx = dtype_size(x->t->dtype), sy = dtype_size(y->t->dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

static cJSON *json_u64(uint64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    return cJSON_CreateRaw(buf);
}

static int check_items(const char *path, const safetensors_item *items, size_t n, const safetensors_kv *meta,
                       size_t n_meta, lion_status *st) {
    for (size_t i = 0; i < n; i++) {
        const safetensors_item *it = &items[i];
        if (!it->name || !it->name[0] || strcmp(it->name, metadata_key) == 0)
            return lion_fail(st, LION_EINVAL, "%s: item %zu: tensor name '%s' is not allowed", path, i,
                             it->name ? it->name : "(null)");
        if (!it->t || (unsigned)it->t->dtype >= DTYPE_COUNT || shape_numel(it->t->ndim, it->t->shape) < 0)
            return lion_fail(st, LION_EINVAL, "%s: tensor '%s': invalid tensor (dtype or shape)", path, it->name);
        if (!it->t->data && tensor_nbytes(it->t) > 0)
            return lion_fail(st, LION_EINVAL, "%s: tensor '%s': no data", path, it->name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(items[j].name, it->name) == 0)
                return lion_fail(st, LION_EINVAL, "%s: tensor '%s' given twice", path, it->name);
    }
    for (size_t i = 0; i < n_meta; i++) {
        if (!meta[i].key || !meta[i].value)
            return lion_fail(st, LION_EINVAL, "%s: metadata entry %zu has no key or value", path, i);
        for (size_t j = 0; j < i; j++)
            if (strcmp(meta[j].key, meta[i].key) == 0)
                return lion_fail(st, LION_EINVAL, "%s: metadata key '%s' given twice", path, meta[i].key);
    }
    return 0;
}

static char *build_header(const safetensors_item *const *order, size_t n,
                          const safetensors_kv *meta, size_t n_meta) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    int ok = 1;
    if (n_meta > 0) {
        cJSON *m = cJSON_AddObjectToObject(root, metadata_key);
        ok = m != NULL;
        for (size_t i = 0; ok && i < n_meta; i++) ok = cJSON_AddStringToObject(m, meta[i].key, meta[i].value) != NULL;
    }
    uint64_t offset = 0;
    for (size_t k = 0; ok && k < n; k++) {
        const safetensors_item *it = order[k];
        uint64_t bytes = tensor_nbytes(it->t);
        cJSON *e = cJSON_AddObjectToObject(root, it->name);
        cJSON *shape = e ? cJSON_CreateArray() : NULL, *offs = shape ? cJSON_CreateArray() : NULL;
        ok = e && shape && offs && cJSON_AddStringToObject(e, "dtype", dtype_name(it->t->dtype));
        if (!ok) {
            cJSON_Delete(shape);
            cJSON_Delete(offs);
            break;
        }
        cJSON_AddItemToObject(e, "shape", shape);
        cJSON_AddItemToObject(e, "data_offsets", offs);
        for (int d = 0; ok && d < it->t->ndim; d++) ok = cJSON_AddItemToArray(shape, json_u64((uint64_t)it->t->shape[d]));
        ok = ok && cJSON_AddItemToArray(offs, json_u64(offset)) && cJSON_AddItemToArray(offs, json_u64(offset + bytes));
        offset += bytes;
    }
    char *json = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return json;
}

int safetensors_write(const char *path, const safetensors_item *items, size_t n_items,
                      const safetensors_kv *metadata, size_t n_metadata, lion_status *st) {
    if (check_items(path, items, n_items, metadata, n_metadata, st)) return -1;
    const safetensors_item **order = malloc((n_items ? n_items : 1) * sizeof *order);
    if (!order) return lion_fail(st, LION_ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < n_items; i++) order[i] = &items[i];
    qsort(order, n_items, sizeof *order, item_cmp_layout);

    char *json = build_header(order, n_items, metadata, n_metadata);
    if (!json) {
        free(order);
        return lion_fail(st, LION_ENOMEM, "%s: out of memory building the header", path);
    }
    size_t json_len = strlen(json);
    size_t padded = (json_len + 7) / 8 * 8;
    uint8_t len_bytes[8];
    for (int i = 0; i < 8; i++) len_bytes[i] = (uint8_t)((uint64_t)padded >> (8 * i));

    char tmp[4096];
    int rc = 0;
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        rc = lion_fail(st, LION_EINVAL, "%s: path too long", path);
        goto done;
    }
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        rc = lion_fail(st, LION_EIO, "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    int ok = fwrite(len_bytes, 1, 8, fp) == 8 && fwrite(json, 1, json_len, fp) == json_len;
    for (size_t i = json_len; ok && i < padded; i++) ok = fputc(' ', fp) != EOF;
    for (size_t k = 0; ok && k < n_items; k++) {
        const tensor *t = order[k]->t;
        size_t bytes = tensor_nbytes(t);
        ok = bytes == 0 || fwrite(t->data, 1, bytes, fp) == bytes;
    }
    int err = errno;
    if (fclose(fp) != 0 && ok) {
        ok = 0;
        err = errno;
    }
    if (!ok) {
        rc = lion_fail(st, LION_EIO, "%s: write failed: %s", tmp, strerror(err));
        unlink(tmp);
    } else if (rename(tmp, path) != 0) {
        rc = lion_fail(st, LION_EIO, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        unlink(tmp);
    }
done:
    free(json);
    free((void *)order);
    return rc;
}
