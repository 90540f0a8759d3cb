#include "onednn_matmul.h"

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "model_config.h" /* enum activation */
#include "tensor.h"       /* f32_to_bf16 */

/* Primitives kept per matrix: a stage uses a handful of row counts (tokens per image, the
 * rows of a step), each with one set of post-ops. */
#define MATMUL_CACHE 16
/* The row count the weights are packed for. oneDNN's matmuls choose their weight layout by
 * the shapes of the weights and the ISA; other row counts reuse it (their primitives are
 * created with this exact layout). Should a row count's matmul refuse that layout, its plan
 * reorders the packed weights into the layout it wants, into scratch, at every call: correct,
 * slower, and said once in the log (matmul_plan.reorder). */
#define PACK_ROWS 256

/* How one (rows, post-ops, bias) runs: the matmul, and when it wants the weights in another
 * layout than the packed one, the reorder into it. */
typedef struct matmul_plan {
    dnnl_primitive_t prim, reorder; /* reorder NULL: the packed weights as they are */
    dnnl_memory_desc_t want_md;      /* the weights' layout the matmul wants, with reorder */
} matmul_plan;

typedef struct matmul_entry {
    int rows, act, accumulate, bias;
    matmul_plan plan; /* plan.prim NULL: a free entry */
} matmul_entry;

/* Tests: every plan made as if the matmul refused the packed layout. */
static int force_reorder;
void onednn_matmul_test_force_reorder(int on) { force_reorder = on; }

struct onednn_matmul {
    int out, in;
    dnnl_data_type_t dt;        /* of x and W into the product: bf16, or f32 in tests */
    dnnl_memory_desc_t w_md;    /* the packed layout */
    dnnl_memory_t w_mem;        /* owns the packed weights */
    char impl[96];
    pthread_mutex_t lock;
    matmul_entry cache[MATMUL_CACHE];
};

static dnnl_engine_t engine;
static dnnl_status_t engine_status = dnnl_success;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;

/* One stream per thread (CPU streams are cheap and a stream is not for concurrent use),
 * destroyed when its thread ends. */
static pthread_key_t stream_key;
static void stream_destroy(void *p) { dnnl_stream_destroy(p); }
static void engine_init(void) {
    engine_status = dnnl_engine_create(&engine, dnnl_cpu, 0);
    if (pthread_key_create(&stream_key, stream_destroy) != 0 && engine_status == dnnl_success)
        engine_status = dnnl_out_of_memory;
}

static int fail_dnnl(lion_status *st, dnnl_status_t s, const char *what, const onednn_matmul *m) {
    return lion_fail(st, s == dnnl_out_of_memory ? LION_ENOMEM : LION_EINTERNAL,
                     "onednn: %s for a [%d, %d] %s matrix: %s", what, m ? m->out : 0, m ? m->in : 0,
                     m && m->dt == dnnl_bf16 ? "bf16" : "f32", dnnl_status2str(s));
}

static dnnl_stream_t stream_here(lion_status *st) {
    dnnl_stream_t stream = pthread_getspecific(stream_key);
    if (stream) return stream;
    dnnl_status_t s = dnnl_stream_create(&stream, engine, dnnl_stream_default_flags);
    if (s != dnnl_success) {
        fail_dnnl(st, s, "creating a stream", NULL);
        return NULL;
    }
    pthread_setspecific(stream_key, stream);
    return stream;
}

static int eltwise_of(int act, dnnl_alg_kind_t *alg) {
    switch (act - 1) {
    case ACT_GELU: *alg = dnnl_eltwise_gelu_erf; return 0;
    case ACT_GELU_TANH: *alg = dnnl_eltwise_gelu_tanh; return 0;
    case ACT_RELU: *alg = dnnl_eltwise_relu; return 0;
    default: return -1;
    }
}

/* A matmul primitive descriptor for rows x in -> out with weights in w_md (the packed layout,
 * or format_any while packing). */
static dnnl_status_t matmul_pd(dnnl_primitive_desc_t *pd, const onednn_matmul *m, const dnnl_memory_desc_t *w_md,
                               int rows, int act, int accumulate, int bias) {
    dnnl_memory_desc_t src_md, dst_md, b_md;
    dnnl_dims_t src_dims = {rows, m->in}, dst_dims = {rows, m->out}, b_dims = {1, m->out};
    dnnl_status_t s;
    if ((s = dnnl_memory_desc_init_by_tag(&src_md, 2, src_dims, m->dt, dnnl_ab)) != dnnl_success ||
        (s = dnnl_memory_desc_init_by_tag(&dst_md, 2, dst_dims, dnnl_f32, dnnl_ab)) != dnnl_success ||
        (s = dnnl_memory_desc_init_by_tag(&b_md, 2, b_dims, dnnl_f32, dnnl_ab)) != dnnl_success)
        return s;
    dnnl_matmul_desc_t desc;
    if ((s = dnnl_matmul_desc_init(&desc, &src_md, w_md, bias ? &b_md : NULL, &dst_md)) != dnnl_success) return s;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    if ((s = dnnl_primitive_attr_create(&attr)) != dnnl_success) return s;
    if ((s = dnnl_post_ops_create(&po)) != dnnl_success) goto done;
    dnnl_alg_kind_t alg;
    /* the activation first, then the sum: y = act(x W^T + b) + y_before */
    if (act && eltwise_of(act, &alg) == 0 && (s = dnnl_post_ops_append_eltwise(po, 1.0f, alg, 0.0f, 0.0f)) != dnnl_success)
        goto done;
    if (accumulate && (s = dnnl_post_ops_append_sum(po, 1.0f)) != dnnl_success) goto done;
    if ((s = dnnl_primitive_attr_set_post_ops(attr, po)) != dnnl_success) goto done;
    s = dnnl_primitive_desc_create(pd, &desc, attr, engine, NULL);
done:
    if (po) dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    return s;
}

static onednn_matmul *create(const void *w, dnnl_data_type_t dt, int out, int in, lion_status *st) {
    pthread_once(&engine_once, engine_init);
    if (engine_status != dnnl_success) {
        fail_dnnl(st, engine_status, "creating the CPU engine", NULL);
        return NULL;
    }
    if (out <= 0 || in <= 0) {
        lion_fail(st, LION_EINVAL, "onednn: a [%d, %d] matrix", out, in);
        return NULL;
    }
    onednn_matmul *m = calloc(1, sizeof *m);
    if (!m) {
        lion_fail(st, LION_ENOMEM, "onednn: out of memory");
        return NULL;
    }
    m->out = out, m->in = in, m->dt = dt;
    pthread_mutex_init(&m->lock, NULL);
    /* the logical weights are [in, out]; ours are [out][in] row-major: tag "ba" */
    dnnl_dims_t w_dims = {in, out};
    dnnl_memory_desc_t user_md, any_md;
    dnnl_primitive_desc_t pd = NULL, reorder_pd = NULL;
    dnnl_primitive_t reorder = NULL;
    dnnl_memory_t user_mem = NULL;
    dnnl_stream_t stream;
    dnnl_status_t s;
    const char *step = "describing the weights";
    if ((s = dnnl_memory_desc_init_by_tag(&user_md, 2, w_dims, dt, dnnl_ba)) != dnnl_success ||
        (s = dnnl_memory_desc_init_by_tag(&any_md, 2, w_dims, dt, dnnl_format_tag_any)) != dnnl_success)
        goto fail;
    step = "creating a matmul (bf16 needs AVX512_BF16 or AMX)";
    if ((s = matmul_pd(&pd, m, &any_md, PACK_ROWS, 0, 0, 1)) != dnnl_success) goto fail;
    const char *impl = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    snprintf(m->impl, sizeof m->impl, "onednn %s %s", dt == dnnl_bf16 ? "bf16" : "f32", impl ? impl : "?");
    m->w_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    step = "packing the weights";
    if ((s = dnnl_memory_create(&m->w_mem, &m->w_md, engine, DNNL_MEMORY_ALLOCATE)) != dnnl_success ||
        (s = dnnl_memory_create(&user_mem, &user_md, engine, (void *)w)) != dnnl_success ||
        (s = dnnl_reorder_primitive_desc_create(&reorder_pd, &user_md, engine, &m->w_md, engine, NULL)) !=
            dnnl_success ||
        (s = dnnl_primitive_create(&reorder, reorder_pd)) != dnnl_success)
        goto fail;
    if (!(stream = stream_here(st))) goto fail_st;
    dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, user_mem}, {DNNL_ARG_TO, m->w_mem}};
    if ((s = dnnl_primitive_execute(reorder, stream, 2, args)) != dnnl_success ||
        (s = dnnl_stream_wait(stream)) != dnnl_success)
        goto fail;
    dnnl_primitive_destroy(reorder);
    dnnl_primitive_desc_destroy(reorder_pd);
    dnnl_memory_destroy(user_mem);
    dnnl_primitive_desc_destroy(pd);
    return m;
fail:
    fail_dnnl(st, s, step, m);
fail_st:
    if (reorder) dnnl_primitive_destroy(reorder);
    if (reorder_pd) dnnl_primitive_desc_destroy(reorder_pd);
    if (user_mem) dnnl_memory_destroy(user_mem);
    if (pd) dnnl_primitive_desc_destroy(pd);
    onednn_matmul_free(m);
    return NULL;
}

onednn_matmul *onednn_matmul_create(const uint16_t *w, int out, int in, lion_status *st) {
    return create(w, dnnl_bf16, out, in, st);
}

onednn_matmul *onednn_matmul_create_f32(const float *w, int out, int in, lion_status *st) {
    return create(w, dnnl_f32, out, in, st);
}

static void plan_destroy(matmul_plan *p) {
    if (p->prim) dnnl_primitive_destroy(p->prim);
    if (p->reorder) dnnl_primitive_destroy(p->reorder);
    memset(p, 0, sizeof *p);
}

void onednn_matmul_free(onednn_matmul *m) {
    if (!m) return;
    for (int i = 0; i < MATMUL_CACHE; i++) plan_destroy(&m->cache[i].plan);
    if (m->w_mem) dnnl_memory_destroy(m->w_mem);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

size_t onednn_matmul_weight_bytes(const onednn_matmul *m) { return dnnl_memory_desc_get_size(&m->w_md); }

const char *onednn_matmul_impl(const onednn_matmul *m) { return m->impl; }

/* A plan for a call's shape and post-ops: the matmul on the packed layout, or (when it refuses
 * that layout) on the one it chooses, with a reorder of the packed weights into it. */
static dnnl_status_t plan_create(matmul_plan *p, onednn_matmul *m, int rows, int act, int accumulate, int bias) {
    memset(p, 0, sizeof *p);
    dnnl_primitive_desc_t pd = NULL, reorder_pd = NULL;
    dnnl_status_t s = force_reorder ? dnnl_unimplemented : matmul_pd(&pd, m, &m->w_md, rows, act, accumulate, bias);
    if (s == dnnl_success) {
        s = dnnl_primitive_create(&p->prim, pd);
        dnnl_primitive_desc_destroy(pd);
        return s;
    }
    dnnl_memory_desc_t any_md;
    dnnl_dims_t w_dims = {m->in, m->out};
    if ((s = dnnl_memory_desc_init_by_tag(&any_md, 2, w_dims, m->dt, dnnl_format_tag_any)) != dnnl_success ||
        (s = matmul_pd(&pd, m, &any_md, rows, act, accumulate, bias)) != dnnl_success)
        return s;
    p->want_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    if ((s = dnnl_primitive_create(&p->prim, pd)) == dnnl_success &&
        (s = dnnl_reorder_primitive_desc_create(&reorder_pd, &m->w_md, engine, &p->want_md, engine, NULL)) ==
            dnnl_success)
        s = dnnl_primitive_create(&p->reorder, reorder_pd);
    if (reorder_pd) dnnl_primitive_desc_destroy(reorder_pd);
    dnnl_primitive_desc_destroy(pd);
    if (s != dnnl_success) plan_destroy(p);
    else if (!force_reorder)
        log_warn("onednn: the [%d, %d] matrix's matmul for %d rows wants another weight layout than it was packed "
                 "in: its weights are reordered at every such call (slower)", m->out, m->in, rows);
    return s;
}

/* The cached plan for this call's shape and post-ops, made on first use. With the cache
 * full, a plan just for this call (*temporary set: the caller destroys it): nothing cached is
 * ever destroyed while another thread may be running it. */
static int plan_for(matmul_plan *out, onednn_matmul *m, int rows, int act, int accumulate, int bias, int *temporary,
                    lion_status *st) {
    *temporary = 0;
    pthread_mutex_lock(&m->lock);
    matmul_entry *slot = NULL;
    for (int i = 0; i < MATMUL_CACHE; i++) {
        matmul_entry *e = &m->cache[i];
        if (e->plan.prim && e->rows == rows && e->act == act && e->accumulate == accumulate && e->bias == bias) {
            *out = e->plan;
            pthread_mutex_unlock(&m->lock);
            return 0;
        }
        if (!e->plan.prim && !slot) slot = e;
    }
    dnnl_status_t s = plan_create(out, m, rows, act, accumulate, bias);
    if (s == dnnl_success && slot) *slot = (matmul_entry){rows, act, accumulate, bias, *out};
    pthread_mutex_unlock(&m->lock);
    if (s != dnnl_success) {
        char what[64];
        snprintf(what, sizeof what, "creating the matmul for %d rows", rows);
        return fail_dnnl(st, s, what, m);
    }
    *temporary = slot == NULL;
    return 0;
}

/* The row count a product runs with: up to 16 rows as they are; beyond, rounded up to a
 * multiple of ROW_BUCKET (the extra rows zero, their outputs dropped). A T5 encoder's prompt
 * lengths vary by request: without buckets nearly every request would create primitives for
 * its own length (JIT code, milliseconds each) for every matrix. */
#define ROW_BUCKET 32
static int bucket_rows(int rows) { return rows <= 16 ? rows : (rows + ROW_BUCKET - 1) / ROW_BUCKET * ROW_BUCKET; }

int onednn_matmul_forward(onednn_matmul *m, float *y, const float *x, const float *b, int rows, int act,
                          int accumulate, arena *a, lion_status *st) {
    if (rows <= 0) return 0;
    dnnl_alg_kind_t alg;
    if (act && eltwise_of(act, &alg))
        return lion_fail(st, LION_EINVAL, "onednn: activation %d has no post-op here", act - 1);
    const int run = bucket_rows(rows);
    int temporary;
    matmul_plan plan;
    if (plan_for(&plan, m, run, act, accumulate, b != NULL, &temporary, st)) return -1;
    dnnl_stream_t stream = stream_here(st);
    if (!stream) {
        if (temporary) plan_destroy(&plan);
        return -1;
    }
    arena_mark mark = arena_save(a);
    const size_t n_in = (size_t)rows * m->in, pad_in = (size_t)(run - rows) * m->in;
    const size_t n_out = (size_t)rows * m->out;
    const size_t elt = m->dt == dnnl_bf16 ? sizeof(uint16_t) : sizeof(float);
    /* x as the product takes it (bf16, or f32 padded), and y padded: in scratch when needed */
    void *src = m->dt == dnnl_bf16 || run > rows ? arena_alloc(a, (n_in + pad_in) * elt) : (void *)x;
    float *dst = run > rows ? arena_floats(a, (size_t)run * m->out) : y;
    size_t reorder_bytes = plan.reorder ? dnnl_memory_desc_get_size(&plan.want_md) : 0;
    void *w_buf = plan.reorder ? arena_alloc(a, reorder_bytes) : NULL;
    if (!src || !dst || (plan.reorder && !w_buf)) {
        if (temporary) plan_destroy(&plan);
        arena_restore(a, mark);
        return lion_fail(st, LION_ENOMEM, "onednn: out of scratch memory for a product of %d rows", rows);
    }
    if (m->dt == dnnl_bf16) {
        uint16_t *xb = src;
#pragma omp parallel for schedule(static) if (n_in >= 65536)
        for (size_t i = 0; i < n_in; i++) xb[i] = f32_to_bf16(x[i]);
        memset(xb + n_in, 0, pad_in * elt);
    } else if (src != x) {
        memcpy(src, x, n_in * elt);
        memset((float *)src + n_in, 0, pad_in * elt);
    }
    if (dst != y && accumulate) memcpy(dst, y, n_out * sizeof(float)); /* the sum post-op reads it */

    dnnl_memory_t w_mem = m->w_mem, reordered = NULL, src_mem = NULL, dst_mem = NULL, b_mem = NULL;
    dnnl_memory_desc_t src_md, dst_md, b_md;
    dnnl_dims_t src_dims = {run, m->in}, dst_dims = {run, m->out}, b_dims = {1, m->out};
    dnnl_status_t s = dnnl_success;
    if (plan.reorder) {
        dnnl_exec_arg_t rargs[] = {{DNNL_ARG_FROM, m->w_mem}, {DNNL_ARG_TO, NULL}};
        if ((s = dnnl_memory_create(&reordered, &plan.want_md, engine, w_buf)) == dnnl_success) {
            rargs[1].memory = reordered;
            s = dnnl_primitive_execute(plan.reorder, stream, 2, rargs);
        }
        w_mem = reordered;
    }
    if (s != dnnl_success || (s = dnnl_memory_desc_init_by_tag(&src_md, 2, src_dims, m->dt, dnnl_ab)) != dnnl_success ||
        (s = dnnl_memory_desc_init_by_tag(&dst_md, 2, dst_dims, dnnl_f32, dnnl_ab)) != dnnl_success ||
        (s = dnnl_memory_desc_init_by_tag(&b_md, 2, b_dims, dnnl_f32, dnnl_ab)) != dnnl_success ||
        (s = dnnl_memory_create(&src_mem, &src_md, engine, src)) != dnnl_success ||
        (s = dnnl_memory_create(&dst_mem, &dst_md, engine, dst)) != dnnl_success ||
        (b && (s = dnnl_memory_create(&b_mem, &b_md, engine, (void *)b)) != dnnl_success))
        goto done;
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, src_mem}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_DST, dst_mem},
                               {DNNL_ARG_BIAS, b_mem}};
    if ((s = dnnl_primitive_execute(plan.prim, stream, b ? 4 : 3, args)) == dnnl_success)
        s = dnnl_stream_wait(stream);
    if (s == dnnl_success && dst != y) memcpy(y, dst, n_out * sizeof(float));
done:
    if (src_mem) dnnl_memory_destroy(src_mem);
    if (dst_mem) dnnl_memory_destroy(dst_mem);
    if (b_mem) dnnl_memory_destroy(b_mem);
    if (reordered) dnnl_memory_destroy(reordered);
    if (temporary) plan_destroy(&plan);
    arena_restore(a, mark);
    return s == dnnl_success ? 0 : fail_dnnl(st, s, "running the matmul", m);
}

const char *onednn_isa_name(void) {
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "other";
    }
}

static int bf16_ok;
static pthread_once_t bf16_once = PTHREAD_ONCE_INIT;
static void bf16_probe(void) {
    uint16_t w[16 * 32];
    memset(w, 0, sizeof w);
    lion_status st;
    onednn_matmul *m = onednn_matmul_create(w, 16, 32, &st);
    bf16_ok = m != NULL;
    onednn_matmul_free(m);
}

int onednn_bf16_supported(void) {
    pthread_once(&bf16_once, bf16_probe);
    return bf16_ok;
}

int onednn_bf16_native(void) {
    const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    const int bf16_isa = (isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16;
    return bf16_isa && onednn_bf16_supported();
}
