#include "ops.h"

#include <cblas.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif
#include <math.h>
#include <string.h>

void linear_forward(float *y, const float *x, const float *w, const float *b, int n, int in, int out) {
    if (n <= 0 || out <= 0) return;
    /* One row (a greedy decode step): sgemm packs W for the product and ran 3x slower than
     * sgemv, which streams W once (FlanT5-XL lm_head, 1 thread: 18 ms against 60 ms).
     * A hand-written kernel for 2..8 rows (beams) did not beat sgemm, so beams stay on it. */
    if (n == 1) {
        if (b) memcpy(y, b, (size_t)out * sizeof(float));
        cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, w, in, x, 1, b ? 1.0f : 0.0f, y, 1);
        return;
    }
    if (b) {
        #pragma omp parallel for if ((size_t)n * out > 65536)
        for (int i = 0; i < n; i++) memcpy(y + (size_t)i * out, b, (size_t)out * sizeof(float));
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in, b ? 1.0f : 0.0f, y, out);
}

void layernorm_forward(float *y, const float *x, const float *w, const float *b, int n, int d, float eps) {
    #pragma omp parallel for if ((size_t)n * d > 16384)
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        float *yi = y + (size_t)i * d;
        /* two passes in double: the reference (torch) is exact enough that single-pass
         * float variance would be the larger error at d = 1408 */
        double mean = 0, var = 0;
        for (int j = 0; j < d; j++) mean += xi[j];
        mean /= d;
        for (int j = 0; j < d; j++) {
            double t = xi[j] - mean;
            var += t * t;
        }
        var /= d;
        float inv = (float)(1.0 / sqrt(var + eps));
        float m = (float)mean;
        for (int j = 0; j < d; j++) {
            float t = (xi[j] - m) * inv;
            if (w) t *= w[j];
            if (b) t += b[j];
            yi[j] = t;
        }
    }
}

void rmsnorm_forward(float *y, const float *x, const float *w, int n, int d, float eps) {
    #pragma omp parallel for if ((size_t)n * d > 16384)
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        float *yi = y + (size_t)i * d;
        double ss = 0;
        for (int j = 0; j < d; j++) ss += (double)xi[j] * xi[j];
        float inv = (float)(1.0 / sqrt(ss / d + eps));
        for (int j = 0; j < d; j++) yi[j] = xi[j] * inv * w[j];
    }
}

void gelu_forward(float *x, size_t n) {
    #pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
}

void gelu_tanh_forward(float *x, size_t n) {
    const float k = sqrtf(2.0f / (float)M_PI);
    for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + tanhf(k * (x[i] + 0.044715f * x[i] * x[i] * x[i])));
}

void relu_forward(float *x, size_t n) {
    #pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void silu_forward(float *x, size_t n) {
    #pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-x[i]));
}

void quick_gelu_forward(float *x, size_t n) {
    #pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}

void activation_forward(float *x, size_t n, activation act) {
    switch (act) {
    case ACT_GELU: gelu_forward(x, n); break;
    case ACT_RELU: relu_forward(x, n); break;
    case ACT_GELU_TANH: gelu_tanh_forward(x, n); break;
    }
}

float sigmoidf_stable(float x) {
    if (x >= 0) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

void add_forward(float *y, const float *x, size_t n) {
    #pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

void mul_forward(float *y, const float *a, const float *b, size_t n) {
    #pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) y[i] = a[i] * b[i];
}

static void softmax_row(float *r, int cols) {
    float mx = -INFINITY;
    for (int j = 0; j < cols; j++) mx = r[j] > mx ? r[j] : mx;
    if (mx == -INFINITY) {
        memset(r, 0, (size_t)cols * sizeof(float));
        return;
    }
    float sum = 0;
    for (int j = 0; j < cols; j++) {
        r[j] = expf(r[j] - mx);
        sum += r[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < cols; j++) r[j] *= inv;
}

void softmax_forward(float *x, int rows, int cols) {
    #pragma omp parallel for if ((size_t)rows * cols > 16384)
    for (int i = 0; i < rows; i++) softmax_row(x + (size_t)i * cols, cols);
}

void embedding_forward(float *y, const float *table, const int32_t *ids, int n, int d) {
    for (int i = 0; i < n; i++) memcpy(y + (size_t)i * d, table + (size_t)ids[i] * d, (size_t)d * sizeof(float));
}

int attention_forward(const attention_args *a, arena *scratch) {
    const int lq = a->q_len, lk = a->k_len, dh = a->head_dim;
    const size_t plane = (size_t)lq * lk;
    arena_mark mark = arena_save(scratch);
    float *scores = arena_floats(scratch, plane);
    if (!scores) return -1;
    for (int b = 0; b < a->batch; b++) {
        const uint8_t *km = a->key_mask ? a->key_mask + (size_t)b * lk : NULL;
        const float *wmask = a->window_mask ? a->window_mask + (size_t)(b % a->window_count) * plane : NULL;
        for (int h = 0; h < a->heads; h++) {
            const float *q = a->q + (size_t)b * lq * a->q_stride + (size_t)h * dh;
            const float *k = a->k + (size_t)b * lk * a->k_stride + (size_t)h * dh;
            const float *v = a->v + (size_t)b * lk * a->v_stride + (size_t)h * dh;
            float *o = a->out + (size_t)b * lq * a->out_stride + (size_t)h * dh;
            const float *bias = a->bias ? a->bias + (size_t)b * a->bias_batch_stride + (size_t)h * plane : NULL;
            /* scores = scale * q k^T: one GEMM per head; the strides pick the head's columns */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, lq, lk, dh, a->scale, q, a->q_stride, k,
                        a->k_stride, 0.0f, scores, lk);
            #pragma omp parallel for if (plane > 16384)
            for (int i = 0; i < lq; i++) {
                float *r = scores + (size_t)i * lk;
                if (bias)
                    for (int j = 0; j < lk; j++) r[j] += bias[(size_t)i * lk + j];
                if (wmask)
                    for (int j = 0; j < lk; j++) r[j] += wmask[(size_t)i * lk + j];
                if (km)
                    for (int j = 0; j < lk; j++)
                        if (!km[j]) r[j] = -INFINITY;
                if (a->causal)
                    for (int j = i + (lk - lq) + 1; j < lk; j++) r[j] = -INFINITY;
                softmax_row(r, lk);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, lq, dh, lk, 1.0f, scores, lk, v, a->v_stride,
                        0.0f, o, a->out_stride);
        }
    }
    arena_restore(scratch, mark);
    return 0;
}

/* a . b with eight independent sums, which the compiler turns into vector FMAs (a single
 * running sum is a chain of dependent adds it may not reorder) */
static float dot_product(const float *a, const float *b, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k];
    float sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

/* y += a x, eight at a time: -O2's cheap vectorizer takes a fixed-length inner loop (it
 * leaves a loop of unknown length that needs a remainder scalar) */
static void axpy(float *restrict y, float a, const float *restrict x, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) y[i + k] += a * x[i + k];
    for (; i < n; i++) y[i] += a * x[i];
}

#if defined(__AVX2__) && defined(__FMA__)
/* scores[j0..j0+8) = scale * q . k_j (+ bias): eight keys at once, each a vector of partial
 * sums over the head's dims (one FMA per 8 dims), then summed across lanes by a transpose of
 * hadds that yields the eight sums in one vector: a dot product per key with its own
 * horizontal sum spent more time summing than multiplying at head_dim 32. */
static void scores_8keys(float *scores, const float *qh, const float *k, size_t stride, int head_dim, float scale,
                         const float *bias) {
    /* eight named sums, not an array: -O2 kept an array on the stack, a load and a store
     * around every FMA */
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int d = 0; d < head_dim; d += 8) {
        const __m256 qv = _mm256_loadu_ps(qh + d);
        const float *kd = k + d;
        a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kd), a0);
        a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kd + stride), a1);
        a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kd + 2 * stride), a2);
        a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kd + 3 * stride), a3);
        a4 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kd + 4 * stride), a4);
        a5 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kd + 5 * stride), a5);
        a6 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kd + 6 * stride), a6);
        a7 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kd + 7 * stride), a7);
    }
    /* u: keys 0-3's sums of lanes 0-3 (low half) and 4-7 (high half); v: keys 4-7's */
    const __m256 u = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    const __m256 v = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
    __m256 s = _mm256_add_ps(_mm256_permute2f128_ps(u, v, 0x20), _mm256_permute2f128_ps(u, v, 0x31));
    s = _mm256_mul_ps(s, _mm256_set1_ps(scale));
    if (bias) s = _mm256_add_ps(s, _mm256_loadu_ps(bias));
    _mm256_storeu_ps(scores, s);
}

/* out[0..head_dim) = sum_j p_j v_j, 32 dims (then 8) held in registers for a whole pass over
 * the keys: the scalar path's y += p x loads and stores y again for every key. */
static void weighted_sum(float *out, const float *p, const float *v, int k_len, size_t stride, int head_dim) {
    int d = 0;
    for (; d + 32 <= head_dim; d += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int j = 0; j < k_len; j++) {
            if (p[j] == 0.0f) continue;
            const __m256 pj = _mm256_set1_ps(p[j]);
            const float *vj = v + (size_t)j * stride + d;
            a0 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj), a0);
            a1 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 8), a1);
            a2 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 16), a2);
            a3 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 24), a3);
        }
        _mm256_storeu_ps(out + d, a0);
        _mm256_storeu_ps(out + d + 8, a1);
        _mm256_storeu_ps(out + d + 16, a2);
        _mm256_storeu_ps(out + d + 24, a3);
    }
    for (; d < head_dim; d += 8) {
        __m256 a = _mm256_setzero_ps();
        for (int j = 0; j < k_len; j++)
            if (p[j] != 0.0f) a = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), _mm256_loadu_ps(v + (size_t)j * stride + d), a);
        _mm256_storeu_ps(out + d, a);
    }
}
#define ATTENTION_QUERY_VECTOR 1
#else
#define ATTENTION_QUERY_VECTOR 0
#endif

void attention_query(float *out, const float *q, const float *k, const float *v, int k_len, int stride, int heads,
                     int head_dim, float scale, const float *bias, size_t bias_head_stride, const uint8_t *key_mask,
                     float *scores) {
    /* the vector path takes head dims in whole vectors (every model here: 32, 64, 128) */
    const int vector = ATTENTION_QUERY_VECTOR && head_dim % 8 == 0;
    for (int h = 0; h < heads; h++) {
        const float *qh = q + (size_t)h * head_dim, *kh = k + (size_t)h * head_dim;
        const float *bh = bias ? bias + (size_t)h * bias_head_stride : NULL;
        int j = 0;
#if ATTENTION_QUERY_VECTOR
        if (vector)
            for (; j + 8 <= k_len; j += 8)
                scores_8keys(scores + j, qh, kh + (size_t)j * stride, (size_t)stride, head_dim, scale,
                             bh ? bh + j : NULL);
#endif
        for (; j < k_len; j++)
            scores[j] = dot_product(qh, kh + (size_t)j * stride, head_dim) * scale + (bh ? bh[j] : 0.0f);
        if (key_mask)
            for (j = 0; j < k_len; j++)
                if (!key_mask[j]) scores[j] = -INFINITY;
        softmax_row(scores, k_len);
        float *oh = out + (size_t)h * head_dim;
#if ATTENTION_QUERY_VECTOR
        if (vector) {
            weighted_sum(oh, scores, v + (size_t)h * head_dim, k_len, (size_t)stride, head_dim);
            continue;
        }
#endif
        memset(oh, 0, (size_t)head_dim * sizeof *oh);
        for (j = 0; j < k_len; j++) {
            const float p = scores[j];
            if (p == 0.0f) continue;
            axpy(oh, p, v + (size_t)j * stride + (size_t)h * head_dim, head_dim);
        }
    }
}

int patch_embed_forward(float *out, const float *img, const float *w, const float *b, int channels,
                         int height, int width, int patch, int dim, arena *scratch) {
    const int gh = height / patch, gw = width / patch, np = gh * gw;
    const int kdim = channels * patch * patch;
    arena_mark mark = arena_save(scratch);
    float *cols = arena_floats(scratch, (size_t)np * kdim);
    if (!cols) return -1;
    /* im2col in the weight's (channel, row, column) order so the GEMM is a plain Linear */
    #pragma omp parallel for if ((size_t)np * kdim > 65536)
    for (int p = 0; p < np; p++) {
        int py = p / gw, px = p % gw;
        float *dst = cols + (size_t)p * kdim;
        for (int c = 0; c < channels; c++)
            for (int y = 0; y < patch; y++)
                memcpy(dst + ((size_t)c * patch + y) * patch,
                       img + ((size_t)c * height + (size_t)py * patch + y) * width + (size_t)px * patch,
                       (size_t)patch * sizeof(float));
    }
    linear_forward(out, cols, w, b, np, kdim, dim);
    arena_restore(scratch, mark);
    return 0;
}

void rope_forward(float *x, int rows, int stride, int heads, int head_dim, const int *pos, float theta) {
    const int half = head_dim / 2;
    #pragma omp parallel for if ((size_t)rows * heads * head_dim > 65536)
    for (int r = 0; r < rows; r++) {
        for (int i = 0; i < half; i++) {
            /* f32 throughout, like torch: inv_freq = 1 / theta^(2i/d), angle = pos * inv_freq */
            const float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
            const float angle = (float)pos[r] * inv_freq, c = cosf(angle), s = sinf(angle);
            for (int h = 0; h < heads; h++) {
                float *v = x + (size_t)r * stride + (size_t)h * head_dim;
                const float a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

int adapter_forward(float *x, int rows, int d, int bottleneck, const float *down_w, const float *down_b,
                    const float *up_w, const float *up_b, int silu, arena *scratch) {
    arena_mark mark = arena_save(scratch);
    float *down = arena_floats(scratch, (size_t)rows * bottleneck), *up = arena_floats(scratch, (size_t)rows * d);
    if (!down || !up) {
        arena_restore(scratch, mark);
        return -1;
    }
    linear_forward(down, x, down_w, down_b, rows, d, bottleneck);
    if (silu) silu_forward(down, (size_t)rows * bottleneck);
    linear_forward(up, down, up_w, up_b, rows, bottleneck, d);
    add_forward(x, up, (size_t)rows * d);
    arena_restore(scratch, mark);
    return 0;
}
