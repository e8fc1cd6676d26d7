/* emotk: causal dilated 1-D neighborhood attention on the CPU, float32, forward and backward.
 *
 * Built on first use by emotk/models/na_cpu.py with the system C compiler (-O3 -march=native,
 * OpenMP where the compiler has it) and called through ctypes. Semantics are those of
 * emotk.models.na (NAC-TCN's causal window): query t attends to the keys t - (K-1-i)*dil,
 * i = 0..K-1, that exist (>= 0); slot i adds rpb[h, i] to its score when a bias is given.
 *
 * Layout: q, k, v are [B, T, H, D] with the head dimension contiguous and any strides for B, T, H
 * (so the q/k/v views of one qkv projection are read in place). Outputs are contiguous:
 * out [B, T, H, D], attention weights a [B, T, H, K], score gradients gs [B, T, H, K].
 *
 * Every output row is written by one thread in a fixed order, so results are bit-identical from
 * call to call and do not depend on the number of threads. No T x T matrix is formed.
 */
#include <math.h>
#include <stdint.h>

typedef int64_t i64;
typedef int32_t vi8 __attribute__((vector_size(32)));
typedef float v8 __attribute__((vector_size(32), aligned(4))); /* 8 lanes, unaligned loads */

#define KMAX 64 /* largest kernel size (window) the kernel takes; emotk falls back above it */
#define INL static inline __attribute__((always_inline))

typedef struct {
    const float *q, *k, *v;  /* inputs */
    const float *rpb;        /* [H, K] bias per head and slot, or NULL */
    const float *a, *go;     /* backward inputs: attention weights, output gradient (contiguous) */
    i64 qs[3], ks[3], vs[3]; /* element strides of q, k, v over (B, T, H) */
    float *out, *aw;         /* forward outputs */
    float *gs, *gq, *gk, *gv; /* backward outputs */
    i64 B, T, H, D, K, dil, nthreads;
    float scale;
} NAArgs;

INL float hsum8(v8 x) {
    float lo = (x[0] + x[4]) + (x[1] + x[5]), hi = (x[2] + x[6]) + (x[3] + x[7]);
    return lo + hi;
}

/* a . b over n floats: two vector accumulators, a fixed summation tree, then the scalar tail */
INL float dot(const float *restrict a, const float *restrict b, i64 n) {
    v8 s0 = {0}, s1 = {0};
    i64 j = 0;
    for (; j + 16 <= n; j += 16) {
        s0 += *(const v8 *)(a + j) * *(const v8 *)(b + j);
        s1 += *(const v8 *)(a + j + 8) * *(const v8 *)(b + j + 8);
    }
    if (j + 8 <= n) {
        s0 += *(const v8 *)(a + j) * *(const v8 *)(b + j);
        j += 8;
    }
    float acc = hsum8(s0 + s1);
    for (; j < n; ++j) acc += a[j] * b[j];
    return acc;
}

/* y = sum_i w[i] * x[i] over the rows that exist (x[i] != NULL); y is written once, in registers */
INL void weighted_sum(float *restrict y, const float *w, const float *const *x, i64 K, i64 n) {
    i64 j = 0;
    for (; j + 16 <= n; j += 16) {
        v8 a0 = {0}, a1 = {0};
        for (i64 i = 0; i < K; ++i) {
            if (!x[i]) continue;
            v8 wi = (v8){0} + w[i];
            a0 += wi * *(const v8 *)(x[i] + j);
            a1 += wi * *(const v8 *)(x[i] + j + 8);
        }
        *(v8 *)(y + j) = a0;
        *(v8 *)(y + j + 8) = a1;
    }
    for (; j < n; ++j) {
        float acc = 0.f;
        for (i64 i = 0; i < K; ++i)
            if (x[i]) acc += w[i] * x[i][j];
        y[j] = acc;
    }
}

/* e^x on 8 lanes for x <= 0 (scores minus their maximum). Range reduction x = n ln2 + r with
 * |r| <= ln2/2 (ln2 split in two parts), then Cephes' polynomial for e^r and 2^n from the exponent
 * bits: within 2 ulp of e^x down to x = -87.3; below that (and -inf) the lane is 0; NaN stays NaN. */
INL v8 exp8(v8 x) {
    vi8 keep = ~(x < -87.3f); /* NaN compares false, so it is kept and propagates */
    v8 xc = (v8)(((vi8)x & keep) | ((vi8)((v8){0} - 87.3f) & ~keep));
    v8 n = (xc * 1.44269504088896341f + 12582912.f) - 12582912.f; /* round to nearest */
    v8 r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    v8 p = (v8){0} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.f;
    vi8 e = (__builtin_convertvector(n, vi8) + 127) << 23;
    return (v8)((vi8)(p * (v8)e) & keep);
}

#define ROW(t, s, b, tt, h) ((t) + (b) * (s)[0] + (tt) * (s)[1] + (h) * (s)[2])

INL void forward_row(const NAArgs *p, i64 bt, i64 D) {
    i64 T = p->T, H = p->H, K = p->K, b = bt / T, t = bt % T;
    float s[KMAX];
    const float *vr[KMAX];
    for (i64 h = 0; h < H; ++h) {
        const float *qr = ROW(p->q, p->qs, b, t, h);
        float m = -INFINITY;
        for (i64 i = 0; i < K; ++i) {
            i64 tt = t - (K - 1 - i) * p->dil;
            if (tt < 0) {
                vr[i] = 0;
                continue;
            }
            vr[i] = ROW(p->v, p->vs, b, tt, h);
            float x = dot(qr, ROW(p->k, p->ks, b, tt, h), D) * p->scale;
            if (p->rpb) x += p->rpb[h * K + i];
            s[i] = x;
            m = x > m ? x : m;
        }
        i64 K8 = (K + 7) & ~(i64)7;
        for (i64 i = 0; i < K8; ++i) s[i] = (i < K && vr[i]) ? s[i] - m : -INFINITY;
        for (i64 i = 0; i < K8; i += 8) *(v8 *)(s + i) = exp8(*(const v8 *)(s + i));
        float z = 0.f;
        for (i64 i = 0; i < K; ++i) z += s[i];
        float inv = 1.f / z, *ar = p->aw + (bt * H + h) * K;
        for (i64 i = 0; i < K; ++i) ar[i] = s[i] = s[i] * inv;
        weighted_sum(p->out + (bt * H + h) * D, s, vr, K, D);
    }
}

/* backward, query side: score gradients gs and dq for the rows of query t */
INL void backward_query_row(const NAArgs *p, i64 bt, i64 D) {
    i64 T = p->T, H = p->H, K = p->K, b = bt / T, t = bt % T;
    float ga[KMAX], w[KMAX];
    const float *kr[KMAX];
    for (i64 h = 0; h < H; ++h) {
        const float *gor = p->go + (bt * H + h) * D, *ar = p->a + (bt * H + h) * K;
        float *gsr = p->gs + (bt * H + h) * K;
        float dotag = 0.f;
        for (i64 i = 0; i < K; ++i) {
            i64 tt = t - (K - 1 - i) * p->dil;
            if (tt < 0) {
                ga[i] = 0.f;
                kr[i] = 0;
                continue;
            }
            kr[i] = ROW(p->k, p->ks, b, tt, h);
            ga[i] = dot(gor, ROW(p->v, p->vs, b, tt, h), D);
            dotag += ar[i] * ga[i];
        }
        for (i64 i = 0; i < K; ++i) {
            float g = ar[i] * (ga[i] - dotag);
            gsr[i] = g;
            w[i] = g * p->scale;
        }
        weighted_sum(p->gq + (bt * H + h) * D, w, kr, K, D);
    }
}

/* backward, key side: dk and dv of key j gathered from the queries j + (K-1-i)*dil that read it */
INL void backward_key_row(const NAArgs *p, i64 bj, i64 D) {
    i64 T = p->T, H = p->H, K = p->K, b = bj / T, j = bj % T;
    float wk[KMAX], wv[KMAX];
    const float *qr[KMAX], *gr[KMAX];
    for (i64 h = 0; h < H; ++h) {
        for (i64 i = 0; i < K; ++i) {
            i64 t = j + (K - 1 - i) * p->dil;
            if (t >= T) {
                qr[i] = gr[i] = 0;
                continue;
            }
            i64 row = (b * T + t) * H + h;
            wk[i] = p->gs[row * K + i] * p->scale;
            wv[i] = p->a[row * K + i];
            qr[i] = ROW(p->q, p->qs, b, t, h);
            gr[i] = p->go + row * D;
        }
        weighted_sum(p->gk + (bj * H + h) * D, wk, qr, K, D);
        weighted_sum(p->gv + (bj * H + h) * D, wv, gr, K, D);
    }
}

/* the head dimension as a compile-time constant for the common sizes (full unrolling) */
#define BY_HEAD_DIM(FN, p, r)          \
    switch ((p)->D) {                  \
    case 16: FN(p, r, 16); break;      \
    case 32: FN(p, r, 32); break;      \
    case 64: FN(p, r, 64); break;      \
    case 128: FN(p, r, 128); break;    \
    default: FN(p, r, (p)->D); break;  \
    }

void emotk_na_forward_f32(const NAArgs *p) {
#pragma omp parallel for schedule(static) num_threads(p->nthreads)
    for (i64 r = 0; r < p->B * p->T; ++r) BY_HEAD_DIM(forward_row, p, r)
}

void emotk_na_backward_f32(const NAArgs *p) {
#pragma omp parallel num_threads(p->nthreads)
    {
#pragma omp for schedule(static)
        for (i64 r = 0; r < p->B * p->T; ++r) BY_HEAD_DIM(backward_query_row, p, r)
#pragma omp for schedule(static)
        for (i64 r = 0; r < p->B * p->T; ++r) BY_HEAD_DIM(backward_key_row, p, r)
    }
}

/* e^x through exp8 for n values (tests check it against math.exp) */
void emotk_na_exp_f32(const float *x, float *y, i64 n) {
    for (i64 i = 0; i < n; i += 8) {
        float buf[8];
        for (int l = 0; l < 8; ++l) buf[l] = i + l < n ? x[i + l] : -INFINITY;
        v8 r = exp8(*(const v8 *)buf);
        for (int l = 0; l < 8 && i + l < n; ++l) y[i + l] = r[l];
    }
}

/* 1 when built with OpenMP (the kernels use nthreads threads), else 0 (one thread) */
int emotk_na_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
