/* Encoder input assembly (services/llm/prompt.c): visual tokens then text embeddings, the
 * soft prompt id's embedding replaced by the hint, end padding with the pad embedding and a
 * mask, as upstream's prepare_inputs lays them out. Exact values: it only moves rows. */
#include <string.h>

#include "prompt.h"
#include "testing.h"

enum { V = 10, D = 3 };

static float table[V * D], hint[D] = {-1, -2, -3};

static int row_is(const prompt_batch *b, int i, int t, const float *want) {
    return !memcmp(b->embeds + ((size_t)i * b->len + t) * D, want, D * sizeof(float));
}

int main(void) {
    for (int i = 0; i < V * D; i++) table[i] = (float)i;
    prompt_embedder e = {table, V, D, hint, 9, 0};
    const float vis0[2 * D] = {100, 101, 102, 103, 104, 105}, vis1[2 * D] = {200, 201, 202, 203, 204, 205};
    const int32_t ids0[] = {4, 9, 5, 1}, ids1[] = {9, 1};
    prompt_request reqs[] = {{vis0, 2, ids0, 4}, {vis1, 2, ids1, 2}};
    prompt_batch b;
    lion_status st;
    CHECK_MSG(prompt_batch_build(&b, &e, reqs, 2, 0, &st) == 0, "%s", st.msg);
    CHECK_EQ_INT(b.batch, 2);
    CHECK_EQ_INT(b.len, 6);
    CHECK(row_is(&b, 0, 0, vis0) && row_is(&b, 0, 1, vis0 + D));
    CHECK(row_is(&b, 0, 2, table + 4 * D));
    CHECK(row_is(&b, 0, 3, hint)); /* <extra_id_0> */
    CHECK(row_is(&b, 0, 4, table + 5 * D) && row_is(&b, 0, 5, table + 1 * D));
    CHECK(row_is(&b, 1, 0, vis1) && row_is(&b, 1, 2, hint) && row_is(&b, 1, 3, table + 1 * D));
    CHECK(row_is(&b, 1, 4, table) && row_is(&b, 1, 5, table)); /* pad embedding */
    const uint8_t want_mask[12] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0};
    CHECK(!memcmp(b.mask, want_mask, sizeof want_mask));
    prompt_batch_free(&b);

    /* tags disabled: the soft prompt id keeps its own embedding */
    e.soft_prompt_hint = NULL;
    CHECK(prompt_batch_build(&b, &e, reqs + 1, 1, 0, &st) == 0);
    CHECK(b.len == 4 && row_is(&b, 0, 2, table + 9 * D));
    prompt_batch_free(&b);
    e.soft_prompt_hint = hint;

    const int32_t bad[] = {3, 10};
    prompt_request r_bad = {vis0, 2, bad, 2};
    CHECK(prompt_batch_build(&b, &e, &r_bad, 1, 0, &st) == -1);
    CHECK_CONTAINS(st.msg, "token id 10 at 1 is outside the vocabulary of 10");
    CHECK(b.embeds == NULL);
    prompt_request r_empty = {NULL, 0, NULL, 0};
    CHECK(prompt_batch_build(&b, &e, &r_empty, 1, 0, &st) == -1);
    CHECK_CONTAINS(st.msg, "request 0 has no tokens");
    CHECK(prompt_batch_build(&b, &e, reqs, 2, 5, &st) == -1);
    CHECK_CONTAINS(st.msg, "6 tokens exceed the limit of 5");
    CHECK(prompt_batch_build(&b, &e, reqs, 0, 0, &st) == -1);
    CHECK_CONTAINS(st.msg, "empty batch");
    return testing_finish();
}
