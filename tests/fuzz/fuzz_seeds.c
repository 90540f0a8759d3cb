/* fuzz_seeds.c - writes the generated seed inputs of one fuzz target into a directory.
 *
 *   fuzz_seeds TARGET DIR
 *
 * Seeds that depend on this build (the wire schema version, the writers' formats, the API key
 * of the gateway targets) are made here with the project's own encoders, so they never go
 * stale: envelopes with envelope_encode, safetensors files with safetensors_write, JPEG and PNG
 * with the image encoders, SentencePiece models packed with protobuf-c, HTTP requests with
 * base64 images; the tiny model's model.json and vocab.txt are copied from models/tiny-lion.
 * tests/fuzz/corpus/TARGET holds the committed seeds beside these (tests/fuzz/run_fuzz.sh
 * puts both in the corpus of a run). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "fuzz_util.h"
#include "gateway_loopback.h"
#include "image.h"
#include "safetensors.h"
#include "sentencepiece_model.pb-c.h"

static const char *out_dir;
static int n_written;

static void put(const char *name, const void *data, size_t len) {
    char path[1024];
    snprintf(path, sizeof path, "%s/gen-%s", out_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        fprintf(stderr, "fuzz_seeds: %s: %s\n", path, strerror(errno));
        exit(1);
    }
    n_written++;
}

static void die(const char *what, const lion_status *st) {
    fprintf(stderr, "fuzz_seeds: %s: %s\n", what, st ? st->msg : "");
    exit(1);
}

/* A growable byte string. */
typedef struct bytes {
    uint8_t *p;
    size_t len, cap;
} bytes;

static void add(bytes *b, const void *data, size_t len) {
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    if (len) memcpy(b->p + b->len, data, len);
    b->len += len;
}

static void add_u8(bytes *b, unsigned v) {
    uint8_t x = (uint8_t)v;
    add(b, &x, 1);
}

static void add_u16(bytes *b, size_t v) {
    add_u8(b, v & 0xff);
    add_u8(b, (v >> 8) & 0xff);
}

static void add_u32(bytes *b, size_t v) {
    add_u16(b, v & 0xffff);
    add_u16(b, (v >> 16) & 0xffff);
}

static void add_str(bytes *b, const char *s) { add(b, s, strlen(s)); }

static void put_bytes(const char *name, bytes *b) {
    put(name, b->p, b->len);
    free(b->p);
    memset(b, 0, sizeof *b);
}

static void read_source(const char *rel, bytes *b) {
    FILE *f = fopen(fuzz_source_path(rel), "rb");
    if (!f) {
        fprintf(stderr, "fuzz_seeds: %s: %s\n", fuzz_source_path(rel), strerror(errno));
        exit(1);
    }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) add(b, buf, n);
    fclose(f);
}

/* A small RGB test pattern. */
static image pattern(int w, int h) {
    image img;
    lion_status st;
    if (image_alloc(&img, w, h, &st)) die("image_alloc", &st);
    for (int i = 0; i < w * h * 3; i++) img.data[i] = (uint8_t)(i * 37 + i / 3 * 11);
    return img;
}

static uint8_t *png_of(int w, int h, size_t *len) {
    image img = pattern(w, h);
    uint8_t *png;
    lion_status st;
    if (image_encode_png(&img, &png, len, &st)) die("image_encode_png", &st);
    image_free(&img);
    return png;
}

/* --- envelope: [u8 flags][u16 len][frame]... ------------------------------------------- */

static void put_message(const char *name, unsigned flags, Lion__Envelope *env, envelope_tensor *ts, int n) {
    zmq_msg_t frames[8];
    lion_status st;
    if (envelope_encode(env, ts, n, frames, &st)) die("envelope_encode", &st);
    bytes b = {0};
    add_u8(&b, flags);
    for (int i = 0; i <= n; i++) {
        add_u16(&b, zmq_msg_size(&frames[i]));
        add(&b, zmq_msg_data(&frames[i]), zmq_msg_size(&frames[i]));
        zmq_msg_close(&frames[i]);
    }
    put_bytes(name, &b);
    envelope_free(env);
}

static void seeds_envelope(void) {
    lion_status st;
    /* a JOB with the task and an image */
    Lion__Envelope *job = envelope_new(LION__KIND__JOB, LION__STAGE__VISION, "req-1-00c0ffee", &st);
    if (!job) die("envelope_new", &st);
    Lion__Task *task = malloc(sizeof *task);
    lion__task__init(task);
    task->instruction = strdup("What color is the cube?");
    task->has_task_type = 1;
    task->task_type = LION__TASK_TYPE__REGION_LEVEL;
    task->n_tags = 2;
    task->tags = malloc(2 * sizeof *task->tags);
    task->tags[0] = strdup("cube");
    task->tags[1] = strdup("red");
    task->generation = malloc(sizeof *task->generation);
    lion__generation_params__init(task->generation);
    task->generation->has_num_beams = 1;
    task->generation->num_beams = 5;
    task->generation->has_temperature = 1;
    task->generation->temperature = 0.7f;
    task->has_stream = 1;
    task->stream = 1;
    job->task = task;
    job->has_attempt = 1;
    job->attempt = 1;
    job->has_deadline_us = 1;
    job->deadline_us = 1700000000000000;
    envelope_add_hop(job, "gateway", "gw-0", 1, 2, &st);
    size_t png_len;
    uint8_t *png = png_of(3, 2, &png_len);
    int64_t shape[1] = {(int64_t)png_len};
    tensor img = tensor_view(DTYPE_U8, png, 1, shape);
    envelope_tensor ti = {.name = "image", .t = &img};
    Lion__Envelope *dup = envelope_dup(job, &st);
    int32_t ids[4] = {0, 71, 8, 1};
    put_message("partial", 0, envelope_partial(job, "a re", ids, 2, &st), NULL, 0);
    put_message("job", 0, job, &ti, 1);
    put_message("job-small-limits", 1, dup, &ti, 1);
    free(png);

    /* a vision RESULT: tensors of every dtype, one empty, one scalar */
    Lion__Envelope *res = envelope_new(LION__KIND__RESULT, LION__STAGE__VISION, "req-2", &st);
    float f32[6] = {0, 1, -2, 3.5f, 1e-8f, -0.0f};
    uint16_t f16[3] = {0x3c00, 0x7c00, 0x8001};
    int64_t i64[2] = {-1, 1LL << 40};
    int8_t i8[5] = {-128, 0, 1, 2, 127};
    int64_t s23[2] = {2, 3}, s3[1] = {3}, s0[2] = {0, 4}, s2[1] = {2}, s5[1] = {5};
    tensor t[6] = {tensor_view(DTYPE_F32, f32, 2, s23), tensor_view(DTYPE_F16, f16, 1, s3),
                   tensor_view(DTYPE_BF16, f16, 1, s3),  tensor_view(DTYPE_F32, f32, 2, s0),
                   tensor_view(DTYPE_I64, i64, 1, s2),   tensor_view(DTYPE_I8, i8, 1, s5)};
    int32_t scalar = 7;
    tensor sc = tensor_view(DTYPE_I32, &scalar, 0, NULL);
    envelope_tensor ts[7] = {{"vit_layer_1", &t[0], NULL}, {"h", &t[1], NULL}, {"b", &t[2], NULL},
                             {"empty", &t[3], NULL},       {"ids", &t[4], NULL}, {"q", &t[5], NULL},
                             {"scalar", &sc, NULL}};
    put_message("result-tensors", 0, res, ts, 7);

    /* an llm RESULT: sequences, boxes, tags */
    res = envelope_new(LION__KIND__RESULT, LION__STAGE__LLM, "req-3", &st);
    Lion__Sequence *seq = envelope_add_sequence(res, "a red cube [0.1,0.2,0.5,0.9]", ids, 4, -0.25f, &st);
    envelope_add_box(seq, 0.1f, 0.2f, 0.5f, 0.9f, &st);
    envelope_sequence_set_finish(seq, LION__FINISH_REASON__STOP, 3);
    envelope_add_sequence(res, "a cube", ids, 2, -1.5f, &st);
    envelope_set_prompt_tokens(res, 42, &st);
    envelope_add_tag(res, "cube", 0.9f, &st);
    envelope_add_top_tag(res, "sphere", 0.1f, &st);
    put_message("result-llm", 0, res, NULL, 0);

    put_message("error", 0, envelope_error_reply(NULL, LION_EFORMAT, "bad image", &st), NULL, 0);
    Lion__Envelope *err = envelope_new(LION__KIND__ERROR, LION__STAGE__TAGGER, "req-4", &st);
    envelope_set_error(err, LION_EINVAL, "no", &st);
    put_message("error-job", 0, err, NULL, 0);
    put_message("cancel", 0, envelope_cancel("req-5", LION__STAGE__LLM, 2, &st), NULL, 0);
    Lion__Envelope *ready = envelope_new(LION__KIND__READY, LION__STAGE__AGGREGATOR, NULL, &st);
    ready->credit = malloc(sizeof *ready->credit);
    lion__credit__init(ready->credit);
    ready->credit->has_capacity = ready->credit->has_max_batch = 1;
    ready->credit->capacity = 4;
    ready->credit->max_batch = 2;
    ready->replica_id = strdup("aggregator-0");
    put_message("ready", 0, ready, NULL, 0);
    Lion__Envelope *hb = envelope_new(LION__KIND__HEARTBEAT, 0, NULL, &st);
    hb->has_sent_us = 1;
    hb->sent_us = 123456789;
    put_message("heartbeat", 0, hb, NULL, 0);
    put_message("bye", 0, envelope_new(LION__KIND__BYE, 0, NULL, &st), NULL, 0);
}

/* --- safetensors ---------------------------------------------------------------------- */

static void seeds_safetensors(void) {
    float f32[4] = {1, -2, 0.5f, 3e38f};
    uint16_t half[3] = {0x3c00, 0xfc00, 0x7e00};
    int8_t i8[4] = {-1, 2, -3, 4};
    int32_t i32 = 9;
    int64_t i64 = -5;
    int64_t s22[2] = {2, 2}, s3[1] = {3}, s31[2] = {3, 1}, s4[1] = {4}, s0[1] = {0}, s111[3] = {1, 1, 1};
    tensor t[7] = {tensor_view(DTYPE_F32, f32, 2, s22), tensor_view(DTYPE_F16, half, 1, s3),
                   tensor_view(DTYPE_BF16, half, 2, s31), tensor_view(DTYPE_I8, i8, 1, s4),
                   tensor_view(DTYPE_U8, i8, 1, s0),     tensor_view(DTYPE_I32, &i32, 0, NULL),
                   tensor_view(DTYPE_I64, &i64, 3, s111)};
    safetensors_item items[7] = {{"vision.w", &t[0]}, {"h", &t[1]}, {"b", &t[2]}, {"q", &t[3]},
                                 {"empty", &t[4]},    {"s", &t[5]}, {"l", &t[6]}};
    safetensors_kv meta[2] = {{"format", "pt"}, {"lion", "1"}};
    struct {
        const char *name;
        size_t n_items, n_meta;
    } files[] = {{"all", 7, 2}, {"one", 1, 0}, {"none", 0, 1}, {"empty", 0, 0}};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[600];
        snprintf(path, sizeof path, "%s/seed.safetensors", fuzz_dir());
        lion_status st;
        if (safetensors_write(path, items, files[i].n_items, meta, files[i].n_meta, &st)) die("safetensors_write", &st);
        bytes b = {0};
        FILE *f = fopen(path, "rb");
        char buf[4096];
        size_t n;
        while (f && (n = fread(buf, 1, sizeof buf, f)) > 0) add(&b, buf, n);
        if (f) fclose(f);
        remove(path);
        put_bytes(files[i].name, &b);
    }
}

/* --- images ------------------------------------------------------------------------- */

static void seeds_image(void) {
    /* the test suite's odd JPEGs (CMYK without an Adobe marker, YCCK) */
    DIR *d = opendir(fuzz_source_path("tests/data/image"));
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char rel[512];
        snprintf(rel, sizeof rel, "tests/data/image/%s", e->d_name);
        bytes b = {0};
        read_source(rel, &b);
        put_bytes(e->d_name, &b);
    }
    if (d) closedir(d);
    static const int sizes[][2] = {{1, 1}, {5, 3}, {16, 9}, {33, 2}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        image img = pattern(sizes[i][0], sizes[i][1]);
        uint8_t *out;
        size_t len;
        lion_status st;
        char name[64];
        if (image_encode_png(&img, &out, &len, &st)) die("image_encode_png", &st);
        snprintf(name, sizeof name, "%dx%d.png", img.width, img.height);
        put(name, out, len);
        free(out);
        if (image_encode_jpeg(&img, 30 + 20 * (int)i, &out, &len, &st)) die("image_encode_jpeg", &st);
        snprintf(name, sizeof name, "%dx%d.jpg", img.width, img.height);
        put(name, out, len);
        free(out);
        image_free(&img);
    }
}

/* --- SentencePiece: [u8 mode][u32 len][model][text] or [u8 mode][text] -------------------- */

static void put_spm(const char *name, unsigned mode, Sentencepiece__ModelProto *m, const char *text) {
    bytes b = {0};
    add_u8(&b, mode | 1);
    size_t len = sentencepiece__model_proto__get_packed_size(m);
    add_u32(&b, len);
    uint8_t *packed = malloc(len);
    sentencepiece__model_proto__pack(m, packed);
    add(&b, packed, len);
    free(packed);
    add_str(&b, text);
    put_bytes(name, &b);
}

static void seeds_sentencepiece(void) {
    enum { N = 3 + 6 + 256 };
    Sentencepiece__ModelProto__SentencePiece p[N], *pp[N];
    char texts[N][16];
    static const char *const words[6] = {("\xE2\x96\x81" "a"), "a", "b", "\xE2\x96\x81", "<img>", "cube"};
    int n = 0;
    for (int i = 0; i < N; i++) {
        sentencepiece__model_proto__sentence_piece__init(&p[i]);
        pp[i] = &p[i];
        p[i].has_score = p[i].has_type = 1;
    }
    const char *specials[3] = {"<pad>", "</s>", "<unk>"};
    for (int i = 0; i < 3; i++, n++) {
        p[n].piece = (char *)specials[i];
        p[n].type = i == 2 ? SENTENCEPIECE__MODEL_PROTO__SENTENCE_PIECE__TYPE__UNKNOWN
                           : SENTENCEPIECE__MODEL_PROTO__SENTENCE_PIECE__TYPE__CONTROL;
    }
    for (int i = 0; i < 6; i++, n++) {
        p[n].piece = (char *)words[i];
        p[n].score = -1.0f - (float)i;
        p[n].type = i == 4 ? SENTENCEPIECE__MODEL_PROTO__SENTENCE_PIECE__TYPE__USER_DEFINED
                           : SENTENCEPIECE__MODEL_PROTO__SENTENCE_PIECE__TYPE__NORMAL;
    }
    const int plain = n;
    for (int v = 0; v < 256; v++, n++) {
        snprintf(texts[n], sizeof texts[n], "<0x%02X>", v);
        p[n].piece = texts[n];
        p[n].type = SENTENCEPIECE__MODEL_PROTO__SENTENCE_PIECE__TYPE__BYTE;
    }
    Sentencepiece__TrainerSpec ts;
    sentencepiece__trainer_spec__init(&ts);
    ts.has_model_type = 1;
    ts.model_type = SENTENCEPIECE__TRAINER_SPEC__MODEL_TYPE__UNIGRAM;
    ts.has_eos_id = ts.has_pad_id = ts.has_unk_id = 1;
    ts.pad_id = 0;
    ts.eos_id = 1;
    ts.unk_id = 2;
    Sentencepiece__NormalizerSpec ns;
    sentencepiece__normalizer_spec__init(&ns);
    Sentencepiece__ModelProto m;
    sentencepiece__model_proto__init(&m);
    m.pieces = pp;
    m.n_pieces = (size_t)plain;
    m.trainer_spec = &ts;
    put_spm("plain", 0x10, &m, "a cube <img>ab  b");
    m.normalizer_spec = &ns;
    ns.has_add_dummy_prefix = ns.has_remove_extra_whitespaces = ns.has_escape_whitespaces = 1;
    put_spm("no-normalizer-options", 0x02, &m, " a\tb  c ");
    /* a charsmap: one trie unit per entry is not a real trie, but a valid blob to mutate */
    static const uint8_t charsmap[] = {8, 0, 0, 0, 0, 4, 0, 0, 'a', 1, 0, 0, 'b', 0, 'c', 0};
    ns.has_precompiled_charsmap = 1;
    ns.precompiled_charsmap.data = (uint8_t *)charsmap;
    ns.precompiled_charsmap.len = sizeof charsmap;
    ns.add_dummy_prefix = ns.remove_extra_whitespaces = ns.escape_whitespaces = 1;
    put_spm("charsmap", 0x20, &m, "abc cab");
    ns.has_precompiled_charsmap = 0;
    m.n_pieces = (size_t)n;
    ts.has_byte_fallback = 1;
    ts.byte_fallback = 1;
    put_spm("byte-fallback", 0x40, &m, "a\xC3\xA9z\xF0\x9F\x90\x88 <extra_id_3></s>");

    /* text for the tiny model (mode even) */
    static const char *const tiny_texts[] = {
        "What color is the large cube?",
        "<extra_id_0> the red sphere </s> is <pad> left of <unk> it <extra_id_99><extra_id_100>",
        "  Ｆｕｌｌｗｉｄｔｈ  café\tﬁ ① ½ \xE2\x80\x8B end  ",
        "\xFF\xFE invalid \xC3 utf-8 \xED\xA0\x80",
        "Describe the region [0.12, 0.30, 0.55, 0.91] in the image.",
    };
    for (size_t i = 0; i < sizeof tiny_texts / sizeof tiny_texts[0]; i++) {
        bytes b = {0};
        add_u8(&b, (unsigned)(i * 22) & 0xfe);
        add_str(&b, tiny_texts[i]);
        char name[32];
        snprintf(name, sizeof name, "tiny-text-%zu", i);
        put_bytes(name, &b);
    }
}

/* --- WordPiece: [u8 mode][u8 max_length][rest] ------------------------------------------ */

static void seeds_wordpiece(void) {
    static const char *const tiny_texts[] = {
        "What color is the large cube?",
        "[CLS] how MANY shapes [SEP] are there [MASK] [DEC] [PAD]",
        "Ünïcödé àccents 日本語 and ＦＵＬＬ width, punctuation!?$^`",
        "\xC3 invalid",
        "a-very-long-word-without-any-space-that-goes-on-and-on-and-on-for-more-than-one-hundred-characters-xyz",
    };
    for (size_t i = 0; i < sizeof tiny_texts / sizeof tiny_texts[0]; i++) {
        bytes b = {0};
        add_u8(&b, (unsigned)(i * 40) & 0xfe);
        add_u8(&b, i == 1 ? 3 : 30);
        add_str(&b, tiny_texts[i]);
        char name[32];
        snprintf(name, sizeof name, "tiny-text-%zu", i);
        put_bytes(name, &b);
    }
    static const char *const vocabs[] = {
        "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ncube\n##s\nred\n,\n",
        "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\n[DEC]\r\na\r\n##b\r\n##b\r\nab",
        "[UNK]\r[CLS]\r[SEP]\r[PAD]\r\r\xC3\xA9t\xC3\xA9\r",
    };
    for (size_t i = 0; i < sizeof vocabs / sizeof vocabs[0]; i++) {
        bytes b = {0};
        add_u8(&b, 1 + 2 * (unsigned)i);
        add_u8(&b, 10);
        add_u16(&b, strlen(vocabs[i]));
        add_str(&b, vocabs[i]);
        add_str(&b, i == 0 ? "The cubes, red cube" : "abbb ab [DEC] été");
        char name[32];
        snprintf(name, sizeof name, "vocab-%zu", i);
        put_bytes(name, &b);
    }
}

/* --- model.json ------------------------------------------------------------------------- */

static void seeds_model_config(void) {
    bytes b = {0};
    read_source("models/tiny-lion/model.json", &b);
    put_bytes("tiny-lion.json", &b);
    read_source("tests/data/tiny-model/model.json", &b);
    put_bytes("tests-tiny-model.json", &b);
}

/* --- gateway requests ------------------------------------------------------------------- */

static char *base64(const uint8_t *d, size_t n) {
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *s = malloc(4 * ((n + 2) / 3) + 1), *o = s;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
        *o++ = a[v >> 18];
        *o++ = a[(v >> 12) & 63];
        *o++ = i + 1 < n ? a[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? a[v & 63] : '=';
    }
    *o = 0;
    return s;
}

typedef struct api_request {
    const char *name;
    unsigned method, path, content_type, flags; /* fuzz_gateway_api's selectors */
    const char *body;                           /* %s: the image's base64 */
} api_request;

/* The selectors index fuzz_gateway_api.c's tables: methods POST POST POST POST GET HEAD PUT
 * DELETE; paths /v1/generate /v1/chat/completions /v1/tags /v1/models /healthz /readyz
 * /metrics ...; content types application/json, multipart (boundary LionFuzzBoundary), ... */
static const api_request api_requests[] = {
    {"generate", 0, 0, 0, 0, "{\"image\":\"%s\",\"instruction\":\"What is it?\",\"task\":\"region_level\",\"tags\":[\"cube\"],"
                             "\"num_beams\":3,\"max_new_tokens\":20,\"deadline_ms\":5000}"},
    {"generate-datauri", 0, 0, 0, 4, "{\"image\":\"data:image/png;base64,%s\",\"instruction\":\"Describe\",\"stream\":true,"
                                     "\"do_sample\":true,\"temperature\":0.5,\"top_p\":0.9,\"seed\":7}"},
    {"chat", 0, 1, 0, 0,
     "{\"model\":\"lion-flant5-region\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\","
     "\"content\":[{\"type\":\"text\",\"text\":\"Where is the cube?\"},{\"type\":\"image_url\",\"image_url\":{\"url\":"
     "\"data:image/png;base64,%s\"}}]}],\"max_tokens\":30,\"n\":1,\"stream\":true,\"stream_options\":{\"include_usage\":"
     "true},\"response_format\":{\"type\":\"text\"},\"lion_tags\":[\"a\"]}"},
    {"tags", 0, 2, 0, 8, "{\"image\":\"%s\",\"top_k\":5}"},
    {"models", 4, 3, 4, 2, ""},
    {"metrics", 4, 6, 4, 0, ""},
    {"readyz-head", 5, 5, 4, 0, ""},
    {"healthz-pipelined", 4, 4, 4, 32, ""},
    {"bad-json", 0, 0, 0, 16, "{\"image\": [1, 2,"},
};

static void put_http_request_n(const char *name, const char *method, const char *path, const char *ctype,
                               const char *extra_headers, const void *body, size_t body_len) {
    bytes b = {0};
    char head[1024];
    snprintf(head, sizeof head,
             "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " GATEWAY_FUZZ_API_KEY
             "\r\n%s%s%sContent-Length: %zu\r\n%s\r\n",
             method, path, ctype ? "Content-Type: " : "", ctype ? ctype : "", ctype ? "\r\n" : "", body_len,
             extra_headers);
    add_str(&b, head);
    add(&b, body, body_len);
    put_bytes(name, &b);
}

static void put_http_request(const char *name, const char *method, const char *path, const char *ctype,
                             const char *extra_headers, const char *body) {
    put_http_request_n(name, method, path, ctype, extra_headers, body, strlen(body));
}

static void seeds_gateway(int raw) {
    size_t png_len;
    uint8_t *png = png_of(2, 2, &png_len);
    char *b64 = base64(png, png_len);
    char body[8192];
    for (size_t i = 0; i < sizeof api_requests / sizeof api_requests[0]; i++) {
        const api_request *r = &api_requests[i];
        snprintf(body, sizeof body, r->body, b64);
        if (!raw) {
            bytes b = {0};
            add_u8(&b, r->method);
            add_u8(&b, r->path);
            add_u8(&b, r->content_type);
            add_u8(&b, r->flags);
            add_str(&b, body);
            put_bytes(r->name, &b);
        }
    }
    /* a multipart upload: raw PNG bytes and form fields */
    bytes form = {0};
    add_str(&form, "--LionFuzzBoundary\r\nContent-Disposition: form-data; name=\"instruction\"\r\n\r\nWhat shape?\r\n"
                   "--LionFuzzBoundary\r\nContent-Disposition: form-data; name=\"tags\"\r\n\r\ncube, red ,,\r\n"
                   "--LionFuzzBoundary\r\nContent-Disposition: form-data; name=\"num_beams\"\r\n\r\n2\r\n"
                   "--LionFuzzBoundary\r\nContent-Disposition: form-data; name=\"stream\"\r\n\r\nfalse\r\n"
                   "--LionFuzzBoundary\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
                   "Content-Type: image/png\r\n\r\n");
    add(&form, png, png_len);
    add_str(&form, "\r\n--LionFuzzBoundary--\r\n");
    if (raw) {
        put_http_request_n("multipart", "POST", "/v1/generate", "multipart/form-data; boundary=LionFuzzBoundary", "",
                           form.p, form.len);
        snprintf(body, sizeof body, api_requests[0].body, b64);
        put_http_request("generate", "POST", "/v1/generate", "application/json", "", body);
        snprintf(body, sizeof body, api_requests[2].body, b64);
        put_http_request("chat", "POST", "/v1/chat/completions", "application/json", "Expect: 100-continue\r\n", body);
        put_http_request("models-pipelined", "GET", "/v1/models?x=1", NULL, "", "");
        put_http_request("pipeline", "GET", "/v1/pipeline", NULL, "Connection: close\r\n", "");
        put_http_request("page", "GET", "/", NULL, "", "");
        static const char chunked[] =
            "POST /v1/tags HTTP/1.1\r\nAuthorization: Bearer " GATEWAY_FUZZ_API_KEY "\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"ima\r\n8\r\nge\":\"iVB\r\n4\r\nOR\"}\r\n0\r\n\r\n"
            "HEAD /healthz HTTP/1.0\r\n\r\nGET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n";
        put("chunked-pipelined", chunked, sizeof chunked - 1);
        static const char no_key[] = "POST /v1/generate HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        put("no-key", no_key, sizeof no_key - 1);
        static const char big[] = "POST /v1/generate HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n";
        put("too-big", big, sizeof big - 1);
    } else {
        bytes b = {0};
        add_u8(&b, 0);
        add_u8(&b, 0);
        add_u8(&b, 1);
        add_u8(&b, 0);
        add(&b, form.p, form.len);
        put_bytes("multipart", &b);
    }
    free(form.p);
    free(b64);
    free(png);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: fuzz_seeds TARGET DIR\n");
        return 2;
    }
    const char *t = argv[1];
    out_dir = argv[2];
    if (!strcmp(t, "envelope")) seeds_envelope();
    else if (!strcmp(t, "safetensors")) seeds_safetensors();
    else if (!strcmp(t, "image")) seeds_image();
    else if (!strcmp(t, "sentencepiece")) seeds_sentencepiece();
    else if (!strcmp(t, "wordpiece")) seeds_wordpiece();
    else if (!strcmp(t, "model_config")) seeds_model_config();
    else if (!strcmp(t, "gateway_http")) seeds_gateway(1);
    else if (!strcmp(t, "gateway_api")) seeds_gateway(0);
    else {
        fprintf(stderr, "fuzz_seeds: unknown target '%s'\n", t);
        return 2;
    }
    printf("fuzz_seeds: %d %s seeds in %s\n", n_written, t, out_dir);
    return 0;
}
