/* model.json loading: the tiny valid file in tests/data/tiny-model (LION) and a tiny Pink one
 * (PINK_JSON), and one broken variant per check, each made by editing one field of a valid file
 * and asserting the message. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model_config.h"
#include "testing.h"

#define VALID_DIR "tests/data/tiny-model"

static char tmp_dir[] = "/tmp/lion_model_config_XXXXXX";

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = calloc((size_t)n + 1, 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) buf[0] = 0;
    fclose(f);
    return buf;
}

static void write_text(const char *dir, const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void test_valid(void) {
    model_config c;
    lion_status st = {0};
    CHECK_EQ_INT(model_config_load(&c, VALID_DIR, &st), 0);
    CHECK_MSG(st.msg[0] == 0, "%s", st.msg);
    if (st.msg[0]) return;
    CHECK(strcmp(c.name, "test-tiny") == 0);
    CHECK_EQ_INT(c.visual_input, VISUAL_INPUT_ALL);
    CHECK(strcmp(visual_input_name(c.visual_input), "ALL") == 0);

    CHECK(strcmp(c.vision.file, VALID_DIR "/vision.safetensors") == 0);
    CHECK_EQ_INT(c.vision.image_size, 28);
    CHECK_EQ_INT(c.vision.patch_size, 14);
    CHECK_EQ_INT(c.vision.dim, 32);
    CHECK_EQ_INT(c.vision.depth, 4);
    CHECK_EQ_INT(c.vision.heads, 4);
    CHECK_EQ_INT(c.vision.mlp_hidden, 64);
    CHECK(c.vision.ln_eps == 1e-6f);
    CHECK_EQ_INT(c.vision.n_intermediate, 3);
    CHECK_EQ_INT(c.vision.intermediate_layers[0], 1);
    CHECK_EQ_INT(c.vision.intermediate_layers[2], 3);
    CHECK_EQ_INT(c.vision.resize, RESIZE_BICUBIC);
    CHECK(c.vision.mean[0] == 0.48145466f && c.vision.std[2] == 0.27577711f);

    CHECK(strcmp(c.tagger.file, VALID_DIR "/tagger.safetensors") == 0);
    CHECK_EQ_INT(c.tagger.n_stages, 2);
    CHECK_EQ_INT(c.tagger.depths[1], 1);
    CHECK_EQ_INT(c.tagger.heads[1], 4);
    CHECK_EQ_INT(c.tagger.window, 4);
    CHECK(c.tagger.mlp_ratio == 4.0f);
    CHECK_EQ_INT(c.tagger.embed_out, 24);
    CHECK_EQ_INT(c.tagger.head.hidden, 16);
    CHECK_EQ_INT(c.tagger.head.intermediate, 32);
    CHECK(c.tagger.head.ln_eps == 1e-12f);
    CHECK_EQ_INT(c.tagger.resize, RESIZE_BILINEAR);
    CHECK_EQ_INT(c.tagger.num_tags, 4);
    CHECK(strcmp(c.tagger.tags[0], "dog") == 0 && strcmp(c.tagger.tags[3], "tree") == 0);
    CHECK(c.tagger.thresholds[0] == 0.68f && c.tagger.thresholds[3] == 0.9f);
    CHECK_EQ_INT(c.tagger.n_delete_tags, 1);
    CHECK_EQ_INT(c.tagger.delete_tags[0], 3);

    CHECK(strcmp(c.aggregator.file, VALID_DIR "/aggregator.safetensors") == 0);
    CHECK_EQ_INT(c.aggregator.vision_width, 32);
    CHECK_EQ_INT(c.aggregator.proj_hidden, 48);
    CHECK_EQ_INT(c.aggregator.qformer.hidden, 16);
    CHECK_EQ_INT(c.aggregator.qformer.num_query_tokens, 4);
    CHECK_EQ_INT(c.aggregator.qformer.cross_attention_freq, 2);
    CHECK_EQ_INT(c.aggregator.qformer.max_text_len, 16);
    CHECK(strcmp(c.aggregator.qformer.vocab, VALID_DIR "/vocab.txt") == 0);
    CHECK_EQ_INT(c.aggregator.fusion.blocks, 2);
    CHECK_EQ_INT(c.aggregator.fusion.hidden_layer, 3);
    CHECK_EQ_INT(c.aggregator.fusion.cross_layers[0], 2);
    CHECK_EQ_INT(c.aggregator.fusion.cross_layers[1], 1);

    CHECK(strcmp(c.llm.file, VALID_DIR "/llm.safetensors") == 0);
    CHECK_EQ_INT(c.llm.d_model, 32);
    CHECK_EQ_INT(c.llm.d_ff, 64);
    CHECK_EQ_INT(c.llm.d_kv, 8);
    CHECK_EQ_INT(c.llm.heads, 4);
    CHECK_EQ_INT(c.llm.encoder_layers, 2);
    CHECK_EQ_INT(c.llm.decoder_layers, 2);
    CHECK_EQ_INT(c.llm.vocab_size, 128);
    CHECK_EQ_INT(c.llm.rel_buckets, 8);
    CHECK_EQ_INT(c.llm.rel_max_distance, 16);
    CHECK_EQ_INT(c.llm.ff_act, ACT_GELU);
    CHECK_EQ_INT(c.llm.adapters_num, 2);
    CHECK_EQ_INT(c.llm.adapters_bottleneck, 4);
    CHECK(strcmp(c.llm.spiece, VALID_DIR "/spiece.model") == 0);
    CHECK_EQ_INT(c.llm.eos_id, 1);
    CHECK(strstr(c.llm.tag_prompt, "tags: [{}]. ") != NULL);
    CHECK(strcmp(c.llm.soft_prompt_token, "<extra_id_0>") == 0);
    CHECK_EQ_INT(c.llm.max_text_len, 32);
    CHECK_EQ_INT(c.llm.generation.num_beams, 5);
    CHECK_EQ_INT(c.llm.generation.max_new_tokens, 256);
    CHECK_EQ_INT(c.llm.generation.min_length, 1);
    CHECK(c.llm.generation.repetition_penalty == 1.5f);
    CHECK(c.llm.generation.top_p == 0.9f);
    CHECK_EQ_INT(c.llm.generation.do_sample, 0);

    CHECK(strcmp(model_config_stage_file(&c, "tagger"), c.tagger.file) == 0);
    CHECK(model_config_stage_file(&c, "gateway") == NULL);
    safetensors_file *f = NULL;
    CHECK_EQ_INT(model_config_open_stage(&c, "gateway", &f, &st), -1);
    CHECK_CONTAINS(st.msg, "model 'test-tiny': unknown stage 'gateway'");
    /* the tiny test directory has no weights */
    CHECK_EQ_INT(model_config_open_stage(&c, "llm", &f, &st), -1);
    CHECK_EQ_INT(st.code, LION_EIO);
    CHECK_CONTAINS(st.msg, VALID_DIR "/llm.safetensors: cannot open");
    model_config_free(&c);
    CHECK(c.name == NULL && c.tagger.tags == NULL);
    model_config_free(&c); /* twice is harmless */
}

/* Sets the field at a dotted path of a parsed model.json to a JSON value (NULL: removes it). */
static int edit_field(cJSON *root, const char *field, const char *json_value) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", field);
    cJSON *parent = root;
    char *key = buf, *dot;
    while (parent && (dot = strchr(key, '.'))) {
        *dot = 0;
        parent = cJSON_GetObjectItemCaseSensitive(parent, key);
        key = dot + 1;
    }
    if (!parent) return -1;
    if (!json_value) {
        cJSON_DeleteItemFromObjectCaseSensitive(parent, key);
        return 0;
    }
    cJSON *v = cJSON_Parse(json_value);
    if (!v) return -1;
    if (cJSON_HasObjectItem(parent, key)) cJSON_ReplaceItemInObjectCaseSensitive(parent, key, v);
    else cJSON_AddItemToObject(parent, key, v);
    return 0;
}

/* Applies n (field, value) edits to a model.json text, writes it to tmp_dir and returns
 * load's result (98/99 when the test itself went wrong). */
static int load_edits_of(const char *text, int n, const char *const edits[][2], model_config *c, lion_status *st) {
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    if (!root) return 99;
    for (int i = 0; i < n; i++)
        if (edit_field(root, edits[i][0], edits[i][1])) {
            cJSON_Delete(root);
            return 98;
        }
    char *out = cJSON_Print(root);
    cJSON_Delete(root);
    write_text(tmp_dir, "model.json", out);
    free(out);
    return model_config_load(c, tmp_dir, st);
}

/* The same with the valid LION model.json of tests/data/tiny-model. */
static int load_edits(int n, const char *const edits[][2], model_config *c, lion_status *st) {
    char *text = read_text(VALID_DIR "/model.json");
    int rc = load_edits_of(text, n, edits, c, st);
    free(text);
    return rc;
}

static int load_edited(const char *field, const char *json_value, model_config *c, lion_status *st) {
    const char *edits[1][2] = {{field, json_value}};
    return load_edits(1, edits, c, st);
}

static void test_invalid_fields(void) {
    static const struct {
        const char *field, *value, *needle;
    } cases[] = {
        {"llm.d_model", "-3", "model.json: llm.d_model: expected a positive integer, found -3"},
        {"llm.d_model", "0", "model.json: llm.d_model: expected a positive integer, found 0"},
        {"llm.d_model", "\"big\"", "model.json: llm.d_model: expected a positive integer"},
        {"llm.d_model", "2.5", "llm.d_model: expected a positive integer, found 2.5"},
        {"llm.d_model", "1e10", "llm.d_model: expected a positive integer, found 10000000000"},
        {"vision.depth", NULL, "model.json: vision.depth: missing"},
        {"vision.heads", "5", "model.json: vision.heads: 5 does not divide dim 32"},
        {"vision.patch_size", "5", "vision.patch_size: 5 does not divide image_size 28"},
        {"vision.intermediate_layers", "[1, 2, 4]",
         "vision.intermediate_layers[2]: expected an integer in [0, 3], found 4"},
        {"vision.intermediate_layers", "[]", "vision.intermediate_layers: expected 1 to 8 entries, found 0"},
        {"vision.intermediate_layers", "3", "vision.intermediate_layers: expected an array"},
        {"vision.mean", "[1, 2]", "vision.mean: expected 3 entries, found 2"},
        {"vision.std", "[1, 0, 1]", "vision.std[1]: expected a positive number, found 0"},
        {"vision.resize", "\"nearest\"", "vision.resize: expected one of \"bicubic\", \"bilinear\""},
        {"vision.file", "\"\"", "vision.file: expected a non-empty string"},
        {"vision.ln_eps", "\"small\"", "vision.ln_eps: expected a number"},
        {"tagger.thresholds", "[0.5]", "tagger.thresholds: 1 values for 4 tags"},
        {"tagger.thresholds", "[0.5, 0.5, 0.5, 1.5]", "tagger.thresholds[3]: expected a number in [0, 1], found 1.5"},
        {"tagger.tags", "[\"a\", 3, \"c\", \"d\"]", "tagger.tags[1]: expected a non-empty string"},
        {"tagger.tags", "[]", "tagger.tags: expected 1 to 2147483647 entries, found 0"},
        {"tagger.delete_tags", "[4]", "tagger.delete_tags[0]: expected an integer in [0, 3], found 4"},
        {"tagger.heads", "[3, 4]", "tagger.heads[0]: 3 does not divide the stage 0 width 16"},
        {"tagger.heads", "[2, 3]", "tagger.heads[1]: 3 does not divide the stage 1 width 32"},
        {"tagger.heads", "[2]", "tagger.heads: 1 entries for 2 stages (depths)"},
        {"tagger.window", "3", "tagger.window: 3 does not divide the stage 0 grid of 8"},
        {"tagger.image_size", "12", "tagger.image_size: the stage 0 grid of 3 cannot be merged 2x2"},
        {"tagger.head.heads", "3", "tagger.head.heads: 3 does not divide hidden 16"},
        {"tagger.head", NULL, "tagger.head: missing"},
        {"aggregator.vision_width", "48", "aggregator.vision_width: 48 differs from vision.dim 32"},
        {"aggregator.fusion.cross_layers", "[2]", "aggregator.fusion.cross_layers: 1 entries for 2 blocks"},
        {"aggregator.fusion.cross_layers", "[2, 0]",
         "aggregator.fusion.cross_layers[1]: layer 0 is not one of vision.intermediate_layers"},
        {"aggregator.fusion.hidden_layer", "9", "aggregator.fusion.hidden_layer: expected an integer in [0, 3], found 9"},
        {"aggregator.fusion.hidden_layer", "0",
         "aggregator.fusion.hidden_layer: layer 0 is not one of vision.intermediate_layers"},
        {"aggregator.fusion.heads", "5", "aggregator.fusion.heads: 5 does not divide vision_width 32"},
        {"aggregator.qformer.heads", "3", "aggregator.qformer.heads: 3 does not divide hidden 16"},
        {"aggregator.qformer.max_text_len", "100", "aggregator.qformer.max_text_len: 100 exceeds max_position 64"},
        {"aggregator.qformer.vocab", "7", "aggregator.qformer.vocab: expected a non-empty string"},
        {"llm.eos_id", "128", "llm.eos_id: expected an integer in [0, 127], found 128"},
        {"llm.pad_id", "-1", "llm.pad_id: expected an integer in [0, 127], found -1"},
        {"llm.ff_act", "\"swish\"", "llm.ff_act: expected one of \"gelu\", \"relu\", \"gelu_new\""},
        {"llm.adapters.bottleneck", "0", "llm.adapters.bottleneck: expected a positive integer, found 0"},
        {"llm.generation.top_p", "0", "llm.generation.top_p: expected a number in (0, 1], found 0"},
        {"llm.generation.temperature", "-1", "llm.generation.temperature: expected a positive number, found -1"},
        /* numbers a double holds and a float does not (they became inf or 0 once stored) */
        {"llm.ln_eps", "1e300", "llm.ln_eps: 1e+300 is outside the range of a float"},
        {"vision.mean", "[0, -1e39, 0]", "vision.mean[1]: -1e+39 is outside the range of a float"},
        {"llm.generation.length_penalty", "3.5e38", "llm.generation.length_penalty: 3.5e+38 is outside the range"},
        {"llm.ln_eps", "1e-50", "llm.ln_eps: 1e-50 is too small for a float (it would be 0)"},
        {"tagger.std", "[1, 1, 1e-46]", "tagger.std[2]: 1e-46 is too small for a float (it would be 0)"},
        {"llm.generation.top_p", "1e-46", "llm.generation.top_p: 1e-46 is too small for a float (it would be 0)"},
        {"llm.generation.min_length", "-1", "llm.generation.min_length: expected a non-negative integer, found -1"},
        {"llm.generation.do_sample", "1", "llm.generation.do_sample: expected true or false"},
        {"llm.generation", NULL, "llm.generation: missing"},
        {"llm.tag_prompt", "\"no slot\"", "llm.tag_prompt: must hold exactly one \"{}\" where the tags go"},
        {"llm.tag_prompt", "\"{} and {}\"", "llm.tag_prompt: must hold exactly one \"{}\""},
        {"llm.tag_prompt", "\"tags: [{}]. \"", "llm.tag_prompt: does not contain soft_prompt_token \"<extra_id_0>\""},
        {"llm", "3", "model.json: llm: expected an object"},
        {"format_version", "2", "model.json: format_version: this build reads version 1 only"},
        {"format", "\"other\"", "model.json: format: expected \"lion-model\""},
        {"visual_input", "\"BOTH\"", "visual_input: expected one of \"ALL\", \"QFORMER\", \"AGGREGATOR\""},
        {"name", NULL, "model.json: name: missing"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        model_config c;
        lion_status st = {0};
        int rc = load_edited(cases[i].field, cases[i].value, &c, &st);
        CHECK_MSG(rc == -1, "%s = %s: load returned %d, expected -1 with \"%s\"", cases[i].field,
                  cases[i].value ? cases[i].value : "(removed)", rc, cases[i].needle);
        if (rc == 0) model_config_free(&c);
        CHECK_EQ_INT(st.code, LION_EFORMAT);
        CHECK_CONTAINS(st.msg, cases[i].needle);
        CHECK(c.name == NULL && c.vision.file == NULL); /* nothing left to free */
    }
}

static void test_other_variants(void) {
    model_config c;
    lion_status st = {0};
    /* edits that stay valid */
    CHECK_EQ_INT(load_edited("visual_input", "\"QFORMER\"", &c, &st), 0);
    CHECK_EQ_INT(c.visual_input, VISUAL_INPUT_QFORMER);
    model_config_free(&c);
    CHECK_EQ_INT(load_edited("tagger.delete_tags", "[]", &c, &st), 0);
    CHECK_EQ_INT(c.tagger.n_delete_tags, 0);
    model_config_free(&c);
    CHECK_EQ_INT(load_edited("llm.file", "\"/abs/llm.safetensors\"", &c, &st), 0);
    CHECK(c.llm.file && strcmp(c.llm.file, "/abs/llm.safetensors") == 0);
    model_config_free(&c);
    CHECK_EQ_INT(load_edited("llm.tie_word_embeddings", "true", &c, &st), 0);
    CHECK_EQ_INT(c.llm.tie_word_embeddings, 1);
    model_config_free(&c);
    CHECK_EQ_INT(load_edited("llm.ff_act", "\"gelu_new\"", &c, &st), 0);
    CHECK_EQ_INT(c.llm.ff_act, ACT_GELU_TANH);
    CHECK_EQ_INT(c.llm.tie_word_embeddings, 0);
    model_config_free(&c);
    CHECK_EQ_INT(load_edited("llm.tie_word_embeddings", "\"yes\"", &c, &st), -1);
    CHECK_CONTAINS(st.msg, "llm.tie_word_embeddings: expected true or false");

    /* visual_input decides which aggregator parts must be there (as the converter writes them) */
    const char *qformer_only[][2] = {{"visual_input", "\"QFORMER\""},
                                     {"aggregator.fusion", "{\"hidden_layer\": 3, \"cross_layers\": []}"},
                                     {"aggregator.proj_hidden", NULL}};
    CHECK_EQ_INT(load_edits(3, qformer_only, &c, &st), 0);
    CHECK_EQ_INT(c.aggregator.fusion.blocks, 0);
    CHECK_EQ_INT(c.aggregator.fusion.hidden_layer, 3);
    CHECK_EQ_INT(c.aggregator.qformer.num_query_tokens, 4);
    model_config_free(&c);
    const char *qformer_bad_layer[][2] = {{"visual_input", "\"QFORMER\""}, {"aggregator.fusion.hidden_layer", "0"}};
    CHECK_EQ_INT(load_edits(2, qformer_bad_layer, &c, &st), -1);
    CHECK_CONTAINS(st.msg, "aggregator.fusion.hidden_layer: layer 0 is not one of vision.intermediate_layers");
    const char *aggregator_only[][2] = {{"visual_input", "\"AGGREGATOR\""}, {"aggregator.qformer", NULL}};
    CHECK_EQ_INT(load_edits(2, aggregator_only, &c, &st), 0);
    CHECK_EQ_INT(c.aggregator.qformer.hidden, 0);
    CHECK(c.aggregator.qformer.vocab == NULL);
    CHECK_EQ_INT(c.aggregator.fusion.blocks, 2);
    model_config_free(&c);
    CHECK_EQ_INT(load_edited("aggregator.qformer", NULL, &c, &st), -1);
    CHECK_CONTAINS(st.msg, "model.json: aggregator.qformer: missing");
    CHECK_EQ_INT(load_edited("aggregator.proj_hidden", NULL, &c, &st), -1);
    CHECK_CONTAINS(st.msg, "model.json: aggregator.proj_hidden: missing");

    /* the window is cut to a grid smaller than itself, as Swin does */
    CHECK_EQ_INT(load_edited("tagger.window", "8", &c, &st), 0);
    model_config_free(&c);

    /* a stage file next to model.json opens through the config */
    CHECK_EQ_INT(load_edited("visual_input", "\"ALL\"", &c, &st), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/vision.safetensors", tmp_dir);
    float w[2] = {1, 2};
    int64_t shape[] = {2};
    tensor t = tensor_view(DTYPE_F32, w, 1, shape);
    safetensors_item item = {"visual_encoder.cls_token", &t};
    CHECK_EQ_INT(safetensors_write(path, &item, 1, NULL, 0, &st), 0);
    safetensors_file *f = NULL;
    CHECK_EQ_INT(model_config_open_stage(&c, "vision", &f, &st), 0);
    CHECK(f && safetensors_has(f, "visual_encoder.cls_token"));
    safetensors_close(f);
    unlink(path);
    model_config_free(&c);

    /* not JSON at all, and JSON that is not an object */
    write_text(tmp_dir, "model.json", "{\n  \"format\": \"lion-model\",\n  oops\n}\n");
    CHECK_EQ_INT(model_config_load(&c, tmp_dir, &st), -1);
    CHECK_CONTAINS(st.msg, "model.json: not valid JSON (line 3)");
    write_text(tmp_dir, "model.json", "[1, 2]");
    CHECK_EQ_INT(model_config_load(&c, tmp_dir, &st), -1);
    CHECK_CONTAINS(st.msg, "model.json: expected a JSON object");
    write_text(tmp_dir, "model.json", "");
    CHECK_EQ_INT(model_config_load(&c, tmp_dir, &st), -1);
    CHECK_CONTAINS(st.msg, "model.json: not valid JSON");

    CHECK_EQ_INT(model_config_load(&c, "tests/data/no-such-model", &st), -1);
    CHECK_EQ_INT(st.code, LION_EIO);
    CHECK_CONTAINS(st.msg, "tests/data/no-such-model/model.json: cannot open: No such file or directory");
}

/* ------------------------------------------------------------------ Pink */

/* A valid tiny Pink model.json, as tools/convert/pink_convert.py writes one (docs/model-format.md). */
static const char PINK_JSON[] =
    "{\"format\": \"lion-model\", \"format_version\": 1, \"family\": \"pink\", \"name\": \"tiny-pink\",\n"
    " \"pink\": {\n"
    "  \"vision\": {\"file\": \"vision.safetensors\", \"image_size\": 28, \"patch_size\": 14, \"dim\": 32,\n"
    "   \"layers\": 3, \"heads\": 4, \"mlp_hidden\": 64, \"ln_eps\": 1e-5, \"act\": \"quick_gelu\",\n"
    "   \"select_layer\": -2, \"adapter\": {\"dim\": 4, \"attn\": true, \"mlp\": false}, \"proj_dim\": 48,\n"
    "   \"resize\": \"bicubic\", \"mean\": [0.48145466, 0.4578275, 0.40821073],\n"
    "   \"std\": [0.26862954, 0.26130258, 0.27577711]},\n"
    "  \"llm\": {\"file\": \"llm.safetensors\", \"dim\": 48, \"hidden\": 96, \"layers\": 2, \"heads\": 6,\n"
    "   \"kv_heads\": 2, \"vocab_size\": 1513, \"max_positions\": 64, \"rms_eps\": 1e-5, \"rope_theta\": 10000.0,\n"
    "   \"adapter\": {\"dim\": 4, \"attn\": true, \"mlp\": true, \"silu\": false},\n"
    "   \"generation\": {\"num_beams\": 1, \"max_new_tokens\": 1024, \"min_length\": 0,\n"
    "    \"repetition_penalty\": 1.0, \"length_penalty\": 1.0, \"top_p\": 1.0, \"temperature\": 1.0,\n"
    "    \"do_sample\": false}},\n"
    "  \"tokenizer\": {\"file\": \"tokenizer.model\", \"legacy\": false, \"add_bos\": true, \"add_eos\": false,\n"
    "   \"clean_up_spaces\": false, \"bos_id\": 1, \"eos_id\": 2, \"pad_id\": 0,\n"
    "   \"added_tokens\": [{\"content\": \"<im_patch>\", \"id\": 1500}, {\"content\": \"<des>\", \"id\": 1501},\n"
    "    {\"content\": \"</des>\", \"id\": 1502}]},\n"
    "  \"prompt\": {\"template\": \"llamav2\", \"system\": \"Image: {}\", \"image_token\": \"<im_patch>\",\n"
    "   \"image_tokens\": 4, \"box_decimals\": 3, \"tasks\": {\"caption\": \"Describe this image as simply as possible.\",\n"
    "    \"vqa\": \"Can you give me a straightforward answer to my question: <qes>{}</qes> Consider the image when answering.\",\n"
    "    \"rec\": \"Where is <des>{}</des>?\",\n"
    "    \"region_caption\": \"Can you give me a description of the region <loc>{}</loc> in image?\"}}}}\n";

static int load_pink_edited(const char *field, const char *json_value, model_config *c, lion_status *st) {
    const char *edits[1][2] = {{field, json_value}};
    return load_edits_of(PINK_JSON, json_value || field ? 1 : 0, edits, c, st);
}

static void test_pink(void) {
    model_config c;
    lion_status st = {0};
    CHECK_EQ_INT(load_edits_of(PINK_JSON, 0, NULL, &c, &st), 0);
    CHECK_MSG(st.msg[0] == 0, "%s", st.msg);
    if (st.msg[0]) return;
    CHECK_EQ_INT(c.family, MODEL_FAMILY_PINK);
    CHECK(strcmp(model_family_name(c.family), "pink") == 0);
    CHECK(strcmp(c.name, "tiny-pink") == 0);
    const pink_config *p = &c.pink;
    char want[512];
    snprintf(want, sizeof want, "%s/vision.safetensors", tmp_dir);
    CHECK(strcmp(p->vision.file, want) == 0);
    CHECK_EQ_INT(p->vision.image_size, 28);
    CHECK_EQ_INT(p->vision.patch_size, 14);
    CHECK_EQ_INT(p->vision.dim, 32);
    CHECK_EQ_INT(p->vision.layers, 3);
    CHECK_EQ_INT(p->vision.heads, 4);
    CHECK_EQ_INT(p->vision.mlp_hidden, 64);
    CHECK(p->vision.ln_eps == 1e-5f);
    CHECK_EQ_INT(p->vision.quick_gelu, 1);
    CHECK_EQ_INT(p->vision.select_layer, -2);
    CHECK_EQ_INT(p->vision.adapter_dim, 4);
    CHECK_EQ_INT(p->vision.adapter_attn, 1);
    CHECK_EQ_INT(p->vision.adapter_mlp, 0);
    CHECK_EQ_INT(p->vision.proj_dim, 48);
    CHECK_EQ_INT(p->vision.resize, RESIZE_BICUBIC);
    CHECK(p->vision.mean[1] == 0.4578275f && p->vision.std[2] == 0.27577711f);
    CHECK_EQ_INT(p->llm.dim, 48);
    CHECK_EQ_INT(p->llm.hidden, 96);
    CHECK_EQ_INT(p->llm.layers, 2);
    CHECK_EQ_INT(p->llm.heads, 6);
    CHECK_EQ_INT(p->llm.kv_heads, 2);
    CHECK_EQ_INT(p->llm.vocab_size, 1513);
    CHECK_EQ_INT(p->llm.max_positions, 64);
    CHECK(p->llm.rms_eps == 1e-5f && p->llm.rope_theta == 10000.0f);
    CHECK(p->llm.adapter_dim == 4 && p->llm.adapter_attn && p->llm.adapter_mlp && !p->llm.adapter_silu);
    CHECK_EQ_INT(p->llm.generation.num_beams, 1);
    CHECK_EQ_INT(p->llm.generation.max_new_tokens, 1024);
    CHECK_EQ_INT(p->llm.generation.do_sample, 0);
    snprintf(want, sizeof want, "%s/tokenizer.model", tmp_dir);
    CHECK(strcmp(p->tokenizer.file, want) == 0);
    CHECK(!p->tokenizer.legacy && p->tokenizer.add_bos && !p->tokenizer.add_eos && !p->tokenizer.clean_up_spaces);
    CHECK(p->tokenizer.bos_id == 1 && p->tokenizer.eos_id == 2 && p->tokenizer.pad_id == 0);
    CHECK_EQ_INT(p->tokenizer.n_added, 3);
    CHECK(strcmp(p->tokenizer.added[2].content, "</des>") == 0 && p->tokenizer.added[2].id == 1502);
    CHECK(strcmp(p->prompt.system, "Image: {}") == 0);
    CHECK(strcmp(p->prompt.image_token, "<im_patch>") == 0);
    CHECK_EQ_INT(p->prompt.image_tokens, 4);
    CHECK_EQ_INT(p->prompt.box_decimals, 3);
    CHECK(strcmp(p->prompt.rec, "Where is <des>{}</des>?") == 0);
    CHECK(strstr(p->prompt.region_caption, "<loc>{}</loc>") != NULL);
    CHECK(strcmp(model_config_stage_file(&c, "llm"), p->llm.file) == 0);
    CHECK(model_config_stage_file(&c, "tagger") == NULL);
    safetensors_file *f = NULL;
    CHECK_EQ_INT(model_config_open_stage(&c, "aggregator", &f, &st), -1);
    CHECK_CONTAINS(st.msg, "model 'tiny-pink': unknown stage 'aggregator' (a Pink model has vision, llm)");
    /* a Pink model.json has no LION sections, and the LION fields stay empty */
    CHECK(c.vision.file == NULL && c.llm.file == NULL && c.tagger.tags == NULL);
    model_config_free(&c);
    CHECK(c.pink.tokenizer.added == NULL && c.pink.prompt.vqa == NULL);

    /* edits that stay valid */
    CHECK_EQ_INT(load_pink_edited("pink.vision.adapter", "{\"dim\": 0}", &c, &st), 0);
    CHECK_EQ_INT(c.pink.vision.adapter_dim, 0);
    model_config_free(&c);
    CHECK_EQ_INT(load_pink_edited("pink.vision.act", "\"gelu\"", &c, &st), 0);
    CHECK_EQ_INT(c.pink.vision.quick_gelu, 0);
    model_config_free(&c);
    CHECK_EQ_INT(load_pink_edited("pink.vision.select_layer", "-4", &c, &st), 0);
    model_config_free(&c);
    CHECK_EQ_INT(load_pink_edited("pink.tokenizer.added_tokens", "[{\"content\": \"<im_patch>\", \"id\": 1512}]", &c, &st), 0);
    CHECK_EQ_INT(c.pink.tokenizer.n_added, 1);
    model_config_free(&c);
    /* the family of the LION file is lion, explicit or not; an unknown family is an error */
    CHECK_EQ_INT(load_edited("family", "\"lion\"", &c, &st), 0);
    CHECK_EQ_INT(c.family, MODEL_FAMILY_LION);
    model_config_free(&c);
    CHECK_EQ_INT(load_edited("family", "\"pvit\"", &c, &st), -1);
    CHECK_CONTAINS(st.msg, "model.json: family: expected one of \"lion\", \"pink\"");
    CHECK_EQ_INT(load_edited("family", "\"pink\"", &c, &st), -1);
    CHECK_CONTAINS(st.msg, "model.json: pink: missing");

    static const struct {
        const char *field, *value, *needle;
    } bad[] = {
        {"pink", NULL, "model.json: pink: missing"},
        {"pink.vision.heads", "5", "pink.vision.heads: 5 does not divide dim 32"},
        {"pink.vision.patch_size", "5", "pink.vision.patch_size: 5 does not divide image_size 28"},
        {"pink.vision.select_layer", "4", "pink.vision.select_layer: expected an integer in [-4, 3], found 4"},
        {"pink.vision.select_layer", "-5", "pink.vision.select_layer: expected an integer in [-4, 3], found -5"},
        {"pink.vision.act", "\"relu\"", "pink.vision.act: expected one of \"gelu\", \"quick_gelu\""},
        {"pink.vision.adapter", "{\"dim\": 4, \"attn\": false, \"mlp\": false}",
         "pink.vision.adapter.dim: 4 but neither attn nor mlp is set"},
        {"pink.vision.adapter", "{\"dim\": 4}", "pink.vision.adapter.attn: missing"},
        {"pink.vision.adapter.dim", "-1", "pink.vision.adapter.dim: expected a non-negative integer, found -1"},
        {"pink.vision.proj_dim", "32", "pink.vision.proj_dim: 32 differs from pink.llm.dim 48"},
        {"pink.vision.std", "[1, 0, 1]", "pink.vision.std[1]: expected a positive number, found 0"},
        {"pink.llm.heads", "5", "pink.llm.heads: 5 does not divide dim 48"},
        {"pink.llm.kv_heads", "4", "pink.llm.kv_heads: 4 does not divide heads 6"},
        {"pink.llm.heads", "16", "pink.llm.heads: head dim 3 is odd"},
        {"pink.llm.rope_theta", "0", "pink.llm.rope_theta: expected a positive number, found 0"},
        {"pink.llm.adapter.silu", NULL, "pink.llm.adapter.silu: missing"},
        {"pink.llm.generation.top_p", "0", "pink.llm.generation.top_p: expected a number in (0, 1], found 0"},
        {"pink.llm.generation", NULL, "pink.llm.generation: missing"},
        {"pink.tokenizer.eos_id", "1513", "pink.tokenizer.eos_id: expected an integer in [0, 1512], found 1513"},
        {"pink.tokenizer.legacy", "0", "pink.tokenizer.legacy: expected true or false"},
        {"pink.tokenizer.added_tokens", "[{\"content\": \"<a>\", \"id\": 1500}, {\"content\": \"<a>\", \"id\": 1501}]",
         "pink.tokenizer.added_tokens[1]: repeats added_tokens[0] (\"<a>\", id 1500)"},
        {"pink.tokenizer.added_tokens", "[{\"content\": \"<a>\", \"id\": 1513}]",
         "pink.tokenizer.added_tokens[0].id: expected an integer in [0, 1512], found 1513"},
        {"pink.tokenizer.added_tokens", "[\"<a>\"]", "pink.tokenizer.added_tokens[0]: expected an object"},
        {"pink.tokenizer.added_tokens", "[{\"content\": \"<des>\", \"id\": 1501}]",
         "pink.prompt.image_token: \"<im_patch>\" is not one of pink.tokenizer.added_tokens"},
        {"pink.prompt.image_tokens", "9", "pink.prompt.image_tokens: 9, but the vision tower gives 4 patches ((28 / 14)^2)"},
        {"pink.llm.max_positions", "4", "pink.prompt.image_tokens: 4 leave no room in pink.llm.max_positions 4"},
        {"pink.prompt.system", "\"Image:\"", "pink.prompt.system: must hold exactly one \"{}\" (found 0)"},
        {"pink.prompt.tasks.rec", "\"Where is {} or {}?\"", "pink.prompt.tasks.rec: must hold exactly one \"{}\" (found 2)"},
        {"pink.prompt.tasks.caption", "\"Describe {}.\"", "pink.prompt.tasks.caption: must hold no \"{}\" (found 1)"},
        {"pink.prompt.tasks.vqa", NULL, "pink.prompt.tasks.vqa: missing"},
        {"pink.prompt.template", "\"llamav1\"", "pink.prompt.template: expected one of \"llamav2\""},
        {"pink.prompt.box_decimals", "0", "pink.prompt.box_decimals: expected an integer in [1, 9], found 0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = load_pink_edited(bad[i].field, bad[i].value, &c, &st);
        CHECK_MSG(rc == -1, "%s = %s: load returned %d, expected -1 with \"%s\"", bad[i].field,
                  bad[i].value ? bad[i].value : "(removed)", rc, bad[i].needle);
        if (rc == 0) model_config_free(&c);
        CHECK_EQ_INT(st.code, LION_EFORMAT);
        CHECK_CONTAINS(st.msg, bad[i].needle);
        CHECK(c.name == NULL && c.pink.vision.file == NULL && c.pink.tokenizer.added == NULL);
    }
}

int main(void) {
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_valid();
    test_invalid_fields();
    test_other_variants();
    test_pink();
    char path[512];
    snprintf(path, sizeof path, "%s/model.json", tmp_dir);
    unlink(path);
    rmdir(tmp_dir);
    return testing_finish();
}
