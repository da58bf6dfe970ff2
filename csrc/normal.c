/* Standard normal variates (Box-Muller, one variate per pair of Philox words). */
#include "core.h"
#include "vmath.h"

/* Writes the variates of the n word pairs at pairs (4 lanes each) to out[at ..]. */
typedef void (*normal_fn)(void *out, int dtype, size_t at, const uint16_t *pairs, size_t n);

static void store_variate(void *out, int dtype, size_t at, double z) {
    if (dtype == NS_F64) {
        memcpy((char *)out + 8 * at, &z, 8);
    } else {
        float f = (float)z;
        memcpy((char *)out + 4 * at, &f, 4);
    }
}

static void normals_scalar(void *out, int dtype, size_t at, const uint16_t *pairs, size_t n) {
    for (size_t q = 0; q < n; q++) {
        const uint16_t *w = pairs + 4 * q;
        uint32_t a = (uint32_t)w[0] | (uint32_t)w[1] << 16;
        uint32_t c = (uint32_t)w[2] | (uint32_t)w[3] << 16;
        store_variate(out, dtype, at + q, ns_box_muller(a, c));
    }
}

#ifdef NS_X86
/* 4 variates per step (the AVX-512 path uses it too); the same values as normals_scalar. */
NS_TARGET_AVX2 static void normals_avx2(void *out, int dtype, size_t at, const uint16_t *pairs, size_t n) {
    size_t q = 0;
    for (; q + 4 <= n; q += 4) {
        __m256d z = ns_box_muller_avx2(pairs + 4 * q);
        if (dtype == NS_F64) {
            _mm256_storeu_pd((double *)(void *)((char *)out + 8 * (at + q)), z);
        } else {
            _mm_storeu_ps((float *)(void *)((char *)out + 4 * (at + q)), _mm256_cvtpd_ps(z));
        }
    }
    normals_scalar(out, dtype, at + q, pairs + 4 * q, n - q);
}
#endif

typedef struct {
    const ns_ops *ops;
    normal_fn variates;
    ns_key key;
    uint64_t j0;
    int dtype;
    void *out;
} normal_ctx;

static void normal_range(void *p, int64_t begin, int64_t end) {
    const normal_ctx *c = p;
    NS_ALIGN64 uint16_t lanebuf[NS_LANEBUF];
    for (int64_t i = begin; i < end; i += NS_NCHUNK) {
        size_t len = (size_t)(end - i < NS_NCHUNK ? end - i : NS_NCHUNK);
        uint64_t j = c->j0 + (uint64_t)i;
        uint64_t b0 = j >> 1, b1 = (j + (len - 1)) >> 1;
        c->ops->blocks(lanebuf, b0, (size_t)(b1 - b0 + 1), &c->key);
        c->variates(c->out, c->dtype, (size_t)i, lanebuf + 4 * (j & 1), len); /* 4 lanes per word pair */
    }
}

static normal_fn variates_of(const ns_ops *ops) {
#ifdef NS_X86
    if (ops == &ns_ops_avx2 || ops == &ns_ops_avx512) {
        return normals_avx2;
    }
#endif
    (void)ops;
    return normals_scalar;
}

void ns_box_muller_words(int isa, void *out, int out_dtype, const uint32_t *words, size_t n) {
    normal_fn variates = variates_of(ns_get_ops(isa));
    NS_ALIGN64 uint16_t pairs[4 * NS_NCHUNK];
    for (size_t i = 0; i < n; i += NS_NCHUNK) {
        size_t len = n - i < NS_NCHUNK ? n - i : NS_NCHUNK;
        for (size_t q = 0; q < 2 * len; q++) {
            uint32_t w = words[2 * i + q];
            pairs[2 * q] = (uint16_t)(w & 0xFFFFu);
            pairs[2 * q + 1] = (uint16_t)(w >> 16);
        }
        variates(out, out_dtype, i, pairs, len);
    }
}

void ns_normal(int isa, void *out, int out_dtype, size_t n, uint64_t seed, uint64_t stream, uint64_t j0,
               int nthreads) {
    normal_ctx c;
    c.ops = ns_get_ops(isa);
    c.variates = variates_of(c.ops);
    key_init(&c.key, seed, stream);
    c.j0 = j0;
    c.dtype = out_dtype;
    c.out = out;
    ns_parallel_for(normal_range, &c, (int64_t)n, 64, NS_PAR_MIN_NORMAL, nthreads);
}
