#include "swin.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

/* Fills order[] (see swin_stage): window-major rows to grid cells, rolled by -shift. */
static void window_order_fill(int *order, int grid, int window, int shift) {
    const int per_row = grid / window, n = window * window, cells = grid * grid;
    for (int t = 0; t < cells; t++) {
        int win = t / n, p = t % n;
        int y = (win / per_row) * window + p / window, x = (win % per_row) * window + p % window;
        order[t] = ((y + shift) % grid) * grid + (x + shift) % grid;
    }
}

/* Swin's region labels of the rolled grid: rows and columns fall in [0, g-w), [g-w, g-s),
 * [g-s, g); tokens of one window from different regions were not neighbours before the roll
 * and must not attend to each other (-100, as upstream, not -inf). */
static int shift_mask_fill(float *mask, int grid, int window, int shift) {
    const int per_row = grid / window, n = window * window, windows = per_row * per_row;
    int *label = malloc((size_t)n * sizeof *label);
    if (!label) return -1;
    for (int win = 0; win < windows; win++) {
        for (int p = 0; p < n; p++) {
            int y = (win / per_row) * window + p / window, x = (win % per_row) * window + p % window;
            int ry = y < grid - window ? 0 : y < grid - shift ? 1 : 2;
            int rx = x < grid - window ? 0 : x < grid - shift ? 1 : 2;
            label[p] = ry * 3 + rx;
        }
        float *mw = mask + (size_t)win * n * n;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) mw[(size_t)i * n + j] = label[i] == label[j] ? 0.0f : -100.0f;
    }
    free(label);
    return 0;
}

/* The table [(2w-1)^2, heads] gathered by Swin's relative position index into [heads, N, N]. */
static void position_bias_fill(float *bias, const float *table, int window, int heads) {
    const int n = window * window, side = 2 * window - 1;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            int dy = i / window - j / window + window - 1, dx = i % window - j % window + window - 1;
            const float *row = table + (size_t)(dy * side + dx) * heads;
            for (int h = 0; h < heads; h++) bias[((size_t)h * n + i) * n + j] = row[h];
        }
}

static int config_check(const swin_config *c, lion_status *st) {
    if (c->patch_size <= 0 || c->image_size <= 0 || c->image_size % c->patch_size)
        return lion_fail(st, LION_EINVAL, "swin: patch_size %d does not divide image_size %d", c->patch_size,
                         c->image_size);
    if (c->n_stages < 1 || c->n_stages > SWIN_MAX_STAGES)
        return lion_fail(st, LION_EINVAL, "swin: %d stages, expected 1..%d", c->n_stages, SWIN_MAX_STAGES);
    if (c->embed_dim <= 0 || c->window <= 0 || !(c->mlp_ratio > 0) || !(c->ln_eps > 0))
        return lion_fail(st, LION_EINVAL, "swin: embed_dim %d, window %d, mlp_ratio %g, ln_eps %g must be positive",
                         c->embed_dim, c->window, c->mlp_ratio, c->ln_eps);
    int grid = c->image_size / c->patch_size;
    for (int i = 0; i < c->n_stages; i++) {
        int dim = c->embed_dim << i, window = grid <= c->window ? grid : c->window;
        if (c->depths[i] <= 0 || c->heads[i] <= 0 || dim % c->heads[i])
            return lion_fail(st, LION_EINVAL, "swin: stage %d: depth %d, heads %d do not fit width %d", i,
                             c->depths[i], c->heads[i], dim);
        if (grid % window)
            return lion_fail(st, LION_EINVAL, "swin: stage %d: window %d does not divide the %dx%d grid", i, window,
                             grid, grid);
        if (i < c->n_stages - 1) {
            if (grid % 2)
                return lion_fail(st, LION_EINVAL, "swin: stage %d: the %dx%d grid is odd and cannot be merged", i,
                                 grid, grid);
            grid /= 2;
        }
    }
    return 0;
}

static int block_load(swin_block *b, weights *w, const char *prefix, int s, int k, int dim, int heads, int window,
                      int hidden, lion_precision p, lion_status *st) {
    const int64_t d = dim, side = 2 * window - 1, n = (int64_t)window * window;
    int64_t s_vec[] = {d}, s_qkvb[] = {3 * d}, s_h[] = {hidden}, s_table[] = {side * side, heads};
    const float *table;
    if (!(b->norm1_w = weights_get(w, st, 1, s_vec, "%slayers.%d.blocks.%d.norm1.weight", prefix, s, k)) ||
        !(b->norm1_b = weights_get(w, st, 1, s_vec, "%slayers.%d.blocks.%d.norm1.bias", prefix, s, k)) ||
        !(table = weights_get(w, st, 2, s_table, "%slayers.%d.blocks.%d.attn.relative_position_bias_table", prefix,
                              s, k)) ||
        linear_bind(&b->qkv, w, p, 0, 3 * dim, dim, st, "%slayers.%d.blocks.%d.attn.qkv.weight", prefix, s, k) ||
        !(b->qkv_b = weights_get(w, st, 1, s_qkvb, "%slayers.%d.blocks.%d.attn.qkv.bias", prefix, s, k)) ||
        linear_bind(&b->proj, w, p, 0, dim, dim, st, "%slayers.%d.blocks.%d.attn.proj.weight", prefix, s, k) ||
        !(b->proj_b = weights_get(w, st, 1, s_vec, "%slayers.%d.blocks.%d.attn.proj.bias", prefix, s, k)) ||
        !(b->norm2_w = weights_get(w, st, 1, s_vec, "%slayers.%d.blocks.%d.norm2.weight", prefix, s, k)) ||
        !(b->norm2_b = weights_get(w, st, 1, s_vec, "%slayers.%d.blocks.%d.norm2.bias", prefix, s, k)) ||
        linear_bind(&b->fc1, w, p, 0, hidden, dim, st, "%slayers.%d.blocks.%d.mlp.fc1.weight", prefix, s, k) ||
        !(b->fc1_b = weights_get(w, st, 1, s_h, "%slayers.%d.blocks.%d.mlp.fc1.bias", prefix, s, k)) ||
        linear_bind(&b->fc2, w, p, 0, dim, hidden, st, "%slayers.%d.blocks.%d.mlp.fc2.weight", prefix, s, k) ||
        !(b->fc2_b = weights_get(w, st, 1, s_vec, "%slayers.%d.blocks.%d.mlp.fc2.bias", prefix, s, k)))
        return -1;
    b->position_bias = malloc((size_t)heads * n * n * sizeof(float));
    if (!b->position_bias) return lion_fail(st, LION_ENOMEM, "swin: out of memory for the position biases");
    position_bias_fill(b->position_bias, table, window, heads);
    return 0;
}

static void block_free(swin_block *b) {
    linear_free(&b->qkv);
    linear_free(&b->proj);
    linear_free(&b->fc1);
    linear_free(&b->fc2);
    free(b->position_bias);
}

static int stage_load(swin_stage *sg, const swin_config *c, weights *w, const char *prefix, int s, int grid,
                      lion_precision p, lion_status *st) {
    sg->dim = c->embed_dim << s;
    sg->heads = c->heads[s];
    sg->depth = c->depths[s];
    sg->grid = grid;
    sg->window = grid <= c->window ? grid : c->window;
    const int shift = grid <= c->window ? 0 : c->window / 2;
    sg->windows = (grid / sg->window) * (grid / sg->window);
    sg->mlp_hidden = (int)(sg->dim * c->mlp_ratio); /* Python's int(): truncation */
    const size_t cells = (size_t)grid * grid, n = (size_t)sg->window * sg->window;
    sg->blocks = calloc((size_t)sg->depth, sizeof *sg->blocks);
    sg->order_plain = malloc(cells * sizeof(int));
    sg->order_shifted = malloc(cells * sizeof(int));
    if (!sg->blocks || !sg->order_plain || !sg->order_shifted)
        return lion_fail(st, LION_ENOMEM, "swin: out of memory");
    window_order_fill(sg->order_plain, grid, sg->window, 0);
    window_order_fill(sg->order_shifted, grid, sg->window, shift);
    if (shift > 0 && sg->depth > 1) {
        sg->shift_mask = malloc((size_t)sg->windows * n * n * sizeof(float));
        if (!sg->shift_mask || shift_mask_fill(sg->shift_mask, grid, sg->window, shift))
            return lion_fail(st, LION_ENOMEM, "swin: out of memory for the shift mask");
    }
    for (int k = 0; k < sg->depth; k++) {
        sg->blocks[k].shift = k % 2 ? shift : 0;
        if (block_load(&sg->blocks[k], w, prefix, s, k, sg->dim, sg->heads, sg->window, sg->mlp_hidden, p, st))
            return -1;
    }
    if (s < c->n_stages - 1) {
        int64_t s_norm[] = {4 * (int64_t)sg->dim};
        sg->has_merge = 1;
        if (!(sg->merge_norm_w = weights_get(w, st, 1, s_norm, "%slayers.%d.downsample.norm.weight", prefix, s)) ||
            !(sg->merge_norm_b = weights_get(w, st, 1, s_norm, "%slayers.%d.downsample.norm.bias", prefix, s)) ||
            linear_bind(&sg->merge, w, p, 0, 2 * sg->dim, 4 * sg->dim, st, "%slayers.%d.downsample.reduction.weight",
                        prefix, s))
            return -1;
    }
    return 0;
}

int swin_load(swin_model *m, const swin_config *c, weights *w, const char *prefix, lion_precision p,
              lion_status *st) {
    memset(m, 0, sizeof *m);
    if (config_check(c, st)) return -1;
    m->cfg = *c;
    const int64_t e = c->embed_dim, ps = c->patch_size;
    int64_t s_patch[] = {e, 3, ps, ps}, s_vec[] = {e};
    if (!(m->patch_w = weights_get(w, st, 4, s_patch, "%spatch_embed.proj.weight", prefix)) ||
        !(m->patch_b = weights_get(w, st, 1, s_vec, "%spatch_embed.proj.bias", prefix)) ||
        !(m->patch_norm_w = weights_get(w, st, 1, s_vec, "%spatch_embed.norm.weight", prefix)) ||
        !(m->patch_norm_b = weights_get(w, st, 1, s_vec, "%spatch_embed.norm.bias", prefix)))
        return -1;
    m->stages = calloc((size_t)c->n_stages, sizeof *m->stages);
    if (!m->stages) return lion_fail(st, LION_ENOMEM, "swin: out of memory");
    int grid = c->image_size / c->patch_size;
    for (int s = 0; s < c->n_stages; s++) {
        if (stage_load(&m->stages[s], c, w, prefix, s, grid, p, st)) {
            swin_free(m);
            return -1;
        }
        if (s < c->n_stages - 1) grid /= 2;
    }
    m->width = c->embed_dim << (c->n_stages - 1);
    m->tokens = 1 + grid * grid;
    int64_t s_out[] = {m->width};
    if (!(m->norm_w = weights_get(w, st, 1, s_out, "%snorm.weight", prefix)) ||
        !(m->norm_b = weights_get(w, st, 1, s_out, "%snorm.bias", prefix))) {
        swin_free(m);
        return -1;
    }
    return 0;
}

void swin_free(swin_model *m) {
    if (m->stages)
        for (int s = 0; s < m->cfg.n_stages; s++) {
            swin_stage *sg = &m->stages[s];
            if (sg->blocks)
                for (int k = 0; k < sg->depth; k++) block_free(&sg->blocks[k]);
            free(sg->blocks);
            linear_free(&sg->merge);
            free(sg->order_plain);
            free(sg->order_shifted);
            free(sg->shift_mask);
        }
    free(m->stages);
    memset(m, 0, sizeof *m);
}

size_t swin_matrix_bytes(const swin_model *m) {
    size_t n = 0;
    for (int s = 0; m->stages && s < m->cfg.n_stages; s++) {
        const swin_stage *sg = &m->stages[s];
        for (int k = 0; k < sg->depth; k++) {
            const swin_block *b = &sg->blocks[k];
            n += linear_bytes(&b->qkv) + linear_bytes(&b->proj) + linear_bytes(&b->fc1) + linear_bytes(&b->fc2);
        }
        if (sg->has_merge) n += linear_bytes(&sg->merge);
    }
    return n;
}

const linear *swin_first_matrix(const swin_model *m) { return &m->stages[0].blocks[0].qkv; }

/* x [batch * cells, dim] in grid order, updated in place. h, win, qkv, ff: scratch. -1: out
 * of scratch, or a product failed (st filled). */
static int block_forward(const swin_stage *sg, const swin_block *bl, float *x, int batch, float *h, float *win,
                         float *qkv, float *ff, float eps, arena *a, lion_status *st) {
    const int d = sg->dim, cells = sg->grid * sg->grid, rows = batch * cells, hd = d / sg->heads;
    const int n = sg->window * sg->window;
    const int *order = bl->shift ? sg->order_shifted : sg->order_plain;
    layernorm_forward(h, x, bl->norm1_w, bl->norm1_b, rows, d, eps);
    /* LayerNorm and Linear act per row, so the roll and the window partition are one gather */
    #pragma omp parallel for if ((size_t)rows * d > 65536)
    for (int r = 0; r < rows; r++) {
        int b = r / cells, t = r % cells;
        memcpy(win + (size_t)r * d, h + ((size_t)b * cells + order[t]) * d, (size_t)d * sizeof(float));
    }
    if (linear_apply(&bl->qkv, qkv, win, bl->qkv_b, rows, a, st)) return -1;
    attention_args at = {.batch = batch * sg->windows, .heads = sg->heads, .head_dim = hd, .q_len = n, .k_len = n,
                         .q = qkv, .k = qkv + d, .v = qkv + 2 * d, .out = win,
                         .q_stride = 3 * d, .k_stride = 3 * d, .v_stride = 3 * d, .out_stride = d,
                         .scale = 1.0f / sqrtf((float)hd),
                         .bias = bl->position_bias, .bias_batch_stride = 0,
                         .window_mask = bl->shift ? sg->shift_mask : NULL, .window_count = sg->windows};
    if (attention_forward(&at, a))
        return lion_fail(st, LION_ENOMEM, "swin: out of scratch memory for the window attention");
    /* not accumulated into x as a post-op: the rows are in window order, x in grid order */
    if (linear_apply(&bl->proj, h, win, bl->proj_b, rows, a, st)) return -1;
    /* window reverse and roll back: the same map, scattered; each cell is hit once */
    #pragma omp parallel for if ((size_t)rows * d > 65536)
    for (int r = 0; r < rows; r++) {
        int b = r / cells, t = r % cells;
        add_forward(x + ((size_t)b * cells + order[t]) * d, h + (size_t)r * d, (size_t)d);
    }
    layernorm_forward(h, x, bl->norm2_w, bl->norm2_b, rows, d, eps);
    /* GELU and the residual add as post-ops: in f32 the same linear_forward, gelu_forward and
     * add_forward as before, to the bit; fused into the product where oneDNN runs it */
    const linear_post gelu = {.act = LINEAR_ACT(ACT_GELU)}, residual = {.accumulate = 1};
    if (linear_forward_post(&bl->fc1, ff, h, bl->fc1_b, rows, &gelu, a, st) ||
        linear_forward_post(&bl->fc2, x, ff, bl->fc2_b, rows, &residual, a, st))
        return -1;
    return 0;
}

/* x [batch, g, g, C] -> [batch, g/2, g/2, 2C] into out; cat is scratch of x's size. */
static int merge_forward(const swin_stage *sg, const float *x, float *out, float *cat, int batch, float eps, arena *a,
                         lion_status *st) {
    const int g = sg->grid, half = g / 2, c = sg->dim, rows = batch * half * half;
    /* upstream's concat order: (even row, even col), (odd, even), (even, odd), (odd, odd) */
    static const int dy[4] = {0, 1, 0, 1}, dx[4] = {0, 0, 1, 1};
    #pragma omp parallel for if ((size_t)rows * c > 16384)
    for (int r = 0; r < rows; r++) {
        int b = r / (half * half), i = r % (half * half) / half, j = r % half;
        for (int q = 0; q < 4; q++) {
            const float *src = x + (((size_t)b * g + 2 * i + dy[q]) * g + 2 * j + dx[q]) * c;
            memcpy(cat + ((size_t)r * 4 + q) * c, src, (size_t)c * sizeof(float));
        }
    }
    layernorm_forward(cat, cat, sg->merge_norm_w, sg->merge_norm_b, rows, 4 * c, eps);
    return linear_apply(&sg->merge, out, cat, NULL, rows, a, st);
}

int swin_forward(const swin_model *m, const float *pixels, int batch, float *out, arena *a, lion_status *st) {
    const swin_config *c = &m->cfg;
    if (batch <= 0) return lion_fail(st, LION_EINVAL, "swin: batch %d, expected at least 1", batch);
    const swin_stage *first = &m->stages[0];
    /* the first stage holds the most activations: later stages have 1/4 the rows at 2x width */
    const size_t rows0 = (size_t)batch * first->grid * first->grid, act = rows0 * first->dim;
    arena_mark mark = arena_save(a);
    float *x = arena_floats(a, act), *h = arena_floats(a, act), *win = arena_floats(a, act);
    float *qkv = arena_floats(a, 3 * act), *ff = arena_floats(a, rows0 * first->mlp_hidden);
    if (!x || !h || !win || !qkv || !ff) goto oom;

    const size_t img = (size_t)3 * c->image_size * c->image_size, cells0 = (size_t)first->grid * first->grid;
    for (int b = 0; b < batch; b++)
        if (patch_embed_forward(x + (size_t)b * cells0 * c->embed_dim, pixels + b * img, m->patch_w, m->patch_b, 3,
                                c->image_size, c->image_size, c->patch_size, c->embed_dim, a))
            goto oom;
    layernorm_forward(x, x, m->patch_norm_w, m->patch_norm_b, (int)rows0, c->embed_dim, c->ln_eps);

    for (int s = 0; s < c->n_stages; s++) {
        const swin_stage *sg = &m->stages[s];
        for (int k = 0; k < sg->depth; k++)
            if (block_forward(sg, &sg->blocks[k], x, batch, h, win, qkv, ff, c->ln_eps, a, st)) goto fail;
        if (sg->has_merge) {
            if (merge_forward(sg, x, win, h, batch, c->ln_eps, a, st)) goto fail;
            float *t = x;
            x = win;
            win = t;
        }
    }

    const int l = m->tokens - 1, d = m->width;
    layernorm_forward(h, x, m->norm_w, m->norm_b, batch * l, d, c->ln_eps);
    for (int b = 0; b < batch; b++) {
        const float *tok = h + (size_t)b * l * d;
        float *o = out + (size_t)b * m->tokens * d;
        for (int j = 0; j < d; j++) {
            double sum = 0;
            for (int t = 0; t < l; t++) sum += tok[(size_t)t * d + j];
            o[j] = (float)(sum / l);
        }
        memcpy(o + d, tok, (size_t)l * d * sizeof(float));
    }
    arena_restore(a, mark);
    return 0;
oom:
    lion_fail(st, LION_ENOMEM, "swin: out of scratch memory for batch %d", batch);
fail:
    arena_restore(a, mark);
    return -1;
}
