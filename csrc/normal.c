/* Standard normal variates (Box-Muller, one variate per pair of Philox words), on their own or added
 * to an array: y = x + stddev * z in one pass. */
#include "convert.h"
#include "core.h"
#include "vmath.h"

/* The variates of the n word pairs at pairs (4 lanes each) as float64, n <= NS_ZBLOCK. */
typedef void (*normal_fn)(double *z, const uint16_t *pairs, size_t n);

/* Variates per block of the drivers (the AVX2 path's block). */
#define NS_ZBLOCK 128

static void normals_scalar(double *z, const uint16_t *pairs, size_t n) {
    for (size_t q = 0; q < n; q++) {
        const uint16_t *w = pairs + 4 * q;
        uint32_t a = (uint32_t)w[0] | (uint32_t)w[1] << 16;
        uint32_t c = (uint32_t)w[2] | (uint32_t)w[3] << 16;
        z[q] = ns_box_muller(a, c);
    }
}

#ifdef NS_X86
#if NS_BM_BLOCK < NS_ZBLOCK
#error "the AVX2 block must hold a driver block"
#endif
/* 4 variates per vector (the AVX-512 path uses it too); the same values as normals_scalar. */
NS_TARGET_AVX2 static void normals_avx2(double *z, const uint16_t *pairs, size_t n) {
    size_t q = n & ~(size_t)3;
    if (q) ns_box_muller_avx2(pairs, z, q / 4);
    normals_scalar(z + q, pairs + 4 * q, n - q);
}
#endif

static normal_fn variates_of(const ns_ops *ops) {
#ifdef NS_X86
    if (ops == &ns_ops_avx2 || ops == &ns_ops_avx512) {
        return normals_avx2;
    }
#endif
    (void)ops;
    return normals_scalar;
}

/* What a driver does with the variates z[0 .. n) of elements at .. at + n - 1: with x NULL it writes
 * them (times stddev when scaled) to out in dtype (float32 or float64), else out = x + stddev * z in
 * dtype (float16 and bfloat16 add in float32). The products and sums round in the dtype (float32
 * for the half types) as the torch expression x + z.to(float32) * stddev does, with no fused
 * multiply-add. */
typedef struct {
    int dtype, scaled;
    const void *x;
    void *out;
    float sf;
    double sd;
} normal_sink;

/* What sink_block does with float32 and float64 output, 4 variates per vector (the half types and
 * the last n % 4 go to sink_block): the same roundings, cvtpd_ps rounding to nearest as the cast does. */
typedef size_t (*sink_vec_fn)(const normal_sink *k, size_t at, const double *z, size_t n);

#ifdef NS_X86
NS_TARGET_AVX2 static size_t sink_avx2(const normal_sink *k, size_t at, const double *z, size_t n) {
    size_t i = 0, m = n & ~(size_t)3;
    if (k->dtype == NS_F64) {
        double *out = (double *)k->out + at;
        const double *x = k->x ? (const double *)k->x + at : NULL;
        __m256d sd = _mm256_set1_pd(k->scaled ? k->sd : 1.0);
        for (; i < m; i += 4) {
            __m256d v = _mm256_loadu_pd(z + i);
            if (k->scaled) v = _mm256_mul_pd(v, sd);
            if (x) v = _mm256_add_pd(_mm256_loadu_pd(x + i), v);
            _mm256_storeu_pd(out + i, v);
        }
    } else if (k->dtype == NS_F32) {
        float *out = (float *)k->out + at;
        const float *x = k->x ? (const float *)k->x + at : NULL;
        __m128 sf = _mm_set1_ps(k->sf);
        for (; i < m; i += 4) {
            __m128 v = _mm256_cvtpd_ps(_mm256_loadu_pd(z + i));
            if (k->scaled) v = _mm_mul_ps(v, sf);
            if (x) v = _mm_add_ps(_mm_loadu_ps(x + i), v);
            _mm_storeu_ps(out + i, v);
        }
    }
    return i;
}
#endif

static void sink_block(const normal_sink *k, size_t at, const double *z, size_t n) {
    const char *x = k->x;
    char *out = k->out;
    float sf = k->sf;
    double sd = k->sd;
    switch (k->dtype) {
    case NS_F64:
        for (size_t i = 0; i < n; i++) {
            double v = k->scaled ? z[i] * sd : z[i];
            if (x) v = load_f64(x, at + i) + v;
            memcpy(out + 8 * (at + i), &v, 8);
        }
        break;
    case NS_F32:
        for (size_t i = 0; i < n; i++) {
            float v = (float)z[i];
            if (k->scaled) v = v * sf;
            if (x) v = load_f32(x, at + i) + v;
            memcpy(out + 4 * (at + i), &v, 4);
        }
        break;
    default: /* float16, bfloat16: x given */
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, x + 2 * (at + i), 2);
            float v = (float)z[i] * sf;
            h = k->dtype == NS_F16 ? f32_to_f16(f16_to_f32(h) + v) : f32_to_bf16(bf16_to_f32(h) + v);
            memcpy(out + 2 * (at + i), &h, 2);
        }
        break;
    }
}

typedef struct {
    const ns_ops *ops;
    normal_fn variates;
    sink_vec_fn sink_vec; /* NULL: sink_block alone */
    ns_key key;
    uint64_t j0;
    normal_sink sink;
} normal_ctx;

static void normal_range(void *p, int64_t begin, int64_t end) {
    const normal_ctx *c = p;
    NS_ALIGN64 uint16_t lanebuf[NS_LANEBUF];
    NS_ALIGN64 double z[NS_ZBLOCK];
    for (int64_t i = begin; i < end; i += NS_NCHUNK) {
        size_t len = (size_t)(end - i < NS_NCHUNK ? end - i : NS_NCHUNK);
        uint64_t j = c->j0 + (uint64_t)i;
        uint64_t b0 = j >> 1, b1 = (j + (len - 1)) >> 1;
        c->ops->blocks(lanebuf, b0, (size_t)(b1 - b0 + 1), &c->key);
        const uint16_t *pairs = lanebuf + 4 * (j & 1); /* 4 lanes per word pair */
        for (size_t q = 0; q < len; q += NS_ZBLOCK) {
            size_t m = len - q < NS_ZBLOCK ? len - q : NS_ZBLOCK;
            c->variates(z, pairs + 4 * q, m);
            size_t done = c->sink_vec ? c->sink_vec(&c->sink, (size_t)i + q, z, m) : 0;
            sink_block(&c->sink, (size_t)i + q + done, z + done, m - done);
        }
    }
}

void ns_box_muller_words(int isa, void *out, int out_dtype, const uint32_t *words, size_t n) {
    normal_fn variates = variates_of(ns_get_ops(isa));
    normal_sink sink = {out_dtype, 0, NULL, out, 1.0f, 1.0};
    NS_ALIGN64 uint16_t pairs[4 * NS_ZBLOCK];
    NS_ALIGN64 double z[NS_ZBLOCK];
    for (size_t i = 0; i < n; i += NS_ZBLOCK) {
        size_t len = n - i < NS_ZBLOCK ? n - i : NS_ZBLOCK;
        for (size_t q = 0; q < 2 * len; q++) {
            uint32_t w = words[2 * i + q];
            pairs[2 * q] = (uint16_t)(w & 0xFFFFu);
            pairs[2 * q + 1] = (uint16_t)(w >> 16);
        }
        variates(z, pairs, len);
        sink_block(&sink, i, z, len);
    }
}

static void run_normal(int isa, const normal_sink *sink, size_t n, uint64_t seed, uint64_t stream, uint64_t j0,
                       int nthreads) {
    normal_ctx c;
    c.ops = ns_get_ops(isa);
    c.variates = variates_of(c.ops);
    c.sink_vec = NULL;
#ifdef NS_X86
    if (c.variates == normals_avx2) c.sink_vec = sink_avx2;
#endif
    key_init(&c.key, seed, stream);
    c.j0 = j0;
    c.sink = *sink;
    ns_parallel_for(normal_range, &c, (int64_t)n, 64, NS_PAR_MIN_NORMAL, nthreads);
}

void ns_normal(int isa, void *out, int out_dtype, size_t n, uint64_t seed, uint64_t stream, uint64_t j0,
               int nthreads) {
    normal_sink sink = {out_dtype, 0, NULL, out, 1.0f, 1.0};
    ns_advise_output(out, n * ns_dtype_size(out_dtype));
    run_normal(isa, &sink, n, seed, stream, j0, nthreads);
}

void ns_gaussian_add(int isa, int dtype, const void *x, void *y, size_t n, uint64_t seed, uint64_t stream, uint64_t j0,
                     double stddev, int nthreads) {
    normal_sink sink = {dtype, 1, x, y, (float)stddev, stddev};
    if (y != x) ns_advise_output(y, n * ns_dtype_size(dtype));
    run_normal(isa, &sink, n, seed, stream, j0, nthreads);
}
