/* The factors of the native multiply (small inputs, autograd by torch's own multiply node): the
 * scaled keep mask as float32 or float64 factors, and the rewrite of the products that a dropped
 * factor leaves as -0 or NaN into the contract's +0. */
#include "convert.h"
#include "core.h"

#include <stddef.h>

/* ------------------------------------------------------------------------- */
/* Scaled mask                                                               */
/* ------------------------------------------------------------------------- */

/* Factors of len elements from their keep flags: scale where kept, +0 where dropped, or with x the
 * zero of x's sign there (then the product is +0 wherever x is finite). Returns the count of dropped
 * elements, or with x of the dropped elements where x is inf or NaN (whose product is NaN). */
static long long factors_scalar(int dtype, const uint8_t *keep, size_t len, char *o, const char *x, double scale) {
    long long count = 0;
    if (dtype == NS_F32) {
        uint32_t s = f32_bits((float)scale);
        for (size_t q = 0; q < len; q++) {
            uint32_t kept = 0u - (uint32_t)(keep[q] != 0), u = 0;
            if (x) {
                memcpy(&u, x + 4 * q, 4);
                count += !kept && (u & 0x7f800000u) == 0x7f800000u;
                u &= 0x80000000u;
            } else {
                count += !kept;
            }
            store_u32(o, q, (s & kept) | (u & ~kept));
        }
        return count;
    }
    uint64_t s;
    memcpy(&s, &scale, 8);
    for (size_t q = 0; q < len; q++) {
        uint64_t kept = 0u - (uint64_t)(keep[q] != 0), u = 0;
        if (x) {
            memcpy(&u, x + 8 * q, 8);
            count += !kept && (u & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
            u &= 0x8000000000000000ull;
        } else {
            count += !kept;
        }
        store_u64(o, q, (s & kept) | (u & ~kept));
    }
    return count;
}

#ifdef NS_X86
/* factors_scalar, 8 float32 or 4 float64 factors per vector (the tail by factors_scalar). */
NS_TARGET_AVX2 static long long factors_avx2(int dtype, const uint8_t *keep, size_t len, char *o, const char *x,
                                            double scale) {
    size_t q = 0;
    long long count = 0;
    const __m256i zero = _mm256_setzero_si256();
    if (dtype == NS_F32) {
        const __m256i s = _mm256_set1_epi32((int)f32_bits((float)scale)), sign = _mm256_set1_epi32(INT32_MIN),
                      expo = _mm256_set1_epi32(0x7f800000);
        for (; q + 8 <= len; q += 8) {
            __m256i dropped = _mm256_cmpeq_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const void *)(keep + q))), zero);
            __m256i f = _mm256_andnot_si256(dropped, s);
            int bits = _mm256_movemask_ps(_mm256_castsi256_ps(dropped));
            if (x) {
                __m256i v = _mm256_loadu_si256((const void *)(x + 4 * q));
                f = _mm256_or_si256(f, _mm256_and_si256(dropped, _mm256_and_si256(v, sign)));
                bits &= _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(v, expo), expo)));
            }
            count += __builtin_popcount((unsigned)bits);
            _mm256_storeu_si256((void *)(o + 4 * q), f);
        }
    } else {
        const __m256i sc = _mm256_castpd_si256(_mm256_set1_pd(scale)), sign = _mm256_set1_epi64x(INT64_MIN),
                      expo = _mm256_set1_epi64x(0x7ff0000000000000ll);
        for (; q + 4 <= len; q += 4) {
            int32_t k4;
            memcpy(&k4, keep + q, 4);
            __m256i dropped = _mm256_cmpeq_epi64(_mm256_cvtepu8_epi64(_mm_cvtsi32_si128(k4)), zero);
            __m256i f = _mm256_andnot_si256(dropped, sc);
            int bits = _mm256_movemask_pd(_mm256_castsi256_pd(dropped));
            if (x) {
                __m256i v = _mm256_loadu_si256((const void *)(x + 8 * q));
                f = _mm256_or_si256(f, _mm256_and_si256(dropped, _mm256_and_si256(v, sign)));
                bits &= _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpeq_epi64(_mm256_and_si256(v, expo), expo)));
            }
            count += __builtin_popcount((unsigned)bits);
            _mm256_storeu_si256((void *)(o + 8 * q), f);
        }
    }
    size_t sz = dtype == NS_F32 ? 4 : 8;
    return count + factors_scalar(dtype, keep + q, len - q, o + q * sz, x ? x + q * sz : NULL, scale);
}
#endif

long long ns_scaled_mask(int isa, int dtype, void *out, size_t n, uint64_t seed, uint64_t stream, uint64_t j0,
                         uint32_t t, double scale, const void *x) {
    size_t sz = ns_dtype_size(dtype);
    uint8_t keep[NS_CHUNK];
    long long count = 0;
    for (size_t i = 0; i < n; i += NS_CHUNK) {
        size_t len = n - i < NS_CHUNK ? n - i : NS_CHUNK;
        char *o = (char *)out + i * sz;
        const char *xs = x ? (const char *)x + i * sz : NULL;
        ns_keep_mask(isa, keep, len, seed, stream, j0 + i, t, 1);
#ifdef NS_X86
        if (isa != NS_ISA_SCALAR) {
            count += factors_avx2(dtype, keep, len, o, xs, scale);
            continue;
        }
#endif
        count += factors_scalar(dtype, keep, len, o, xs, scale);
    }
    return count;
}

/* ------------------------------------------------------------------------- */
/* Zero dropped                                                              */
/* ------------------------------------------------------------------------- */

/* Whether the factor at element i (of dtype NS_F32 or NS_F64) is zero. */
static int factor_is_zero(int dtype, const char *m, int64_t i) {
    if (dtype == NS_F32) return load_f32(m, (size_t)i) == 0.0f;
    return load_f64(m, (size_t)i) == 0.0;
}

/* Rows of one factor shorter than this are rewritten without a branch (every element read and
 * masked); longer ones branch and touch only dropped rows, which is cheaper once a row outweighs
 * a mispredicted branch (measured crossover: 20-24 float32 elements). */
#define NS_BRANCHLESS_ZERO 24

/* y = +0 where the factor is 0, a factor per element, without a branch. */
static void zero_row_scalar(int dtype, char *yp, const char *mp, int64_t inner) {
    if (dtype == NS_F32) {
        for (int64_t i = 0; i < inner; i++) {
            uint32_t keep = 0u - (uint32_t)(load_f32(mp, (size_t)i) != 0.0f);
            store_u32(yp, (size_t)i, f32_bits(load_f32(yp, (size_t)i)) & keep);
        }
        return;
    }
    for (int64_t i = 0; i < inner; i++) {
        uint64_t keep = 0u - (uint64_t)(load_f64(mp, (size_t)i) != 0.0), u;
        double v = load_f64(yp, (size_t)i);
        memcpy(&u, &v, 8);
        store_u64(yp, (size_t)i, u & keep);
    }
}

#ifdef NS_X86
/* zero_row_scalar, 8 float32 or 4 float64 elements per vector (the tail by zero_row_scalar). */
NS_TARGET_AVX2 static void zero_row_avx2(int dtype, char *yp, const char *mp, int64_t inner) {
    int64_t i = 0;
    if (dtype == NS_F32) {
        const __m256 z = _mm256_setzero_ps();
        for (; i + 8 <= inner; i += 8) {
            float *yv = (float *)(void *)(yp + 4 * i);
            __m256 keep = _mm256_cmp_ps(_mm256_loadu_ps((const float *)(const void *)(mp + 4 * i)), z, _CMP_NEQ_UQ);
            _mm256_storeu_ps(yv, _mm256_and_ps(_mm256_loadu_ps(yv), keep));
        }
        zero_row_scalar(dtype, yp + 4 * i, mp + 4 * i, inner - i);
        return;
    }
    const __m256d z = _mm256_setzero_pd();
    for (; i + 4 <= inner; i += 4) {
        double *yv = (double *)(void *)(yp + 8 * i);
        __m256d keep = _mm256_cmp_pd(_mm256_loadu_pd((const double *)(const void *)(mp + 8 * i)), z, _CMP_NEQ_UQ);
        _mm256_storeu_pd(yv, _mm256_and_pd(_mm256_loadu_pd(yv), keep));
    }
    zero_row_scalar(dtype, yp + 8 * i, mp + 8 * i, inner - i);
}
#endif

void ns_zero_dropped(int isa, int dtype, void *y, const void *m, int ndim, const int64_t *shape, const int64_t *y_strides,
                     const int64_t *m_strides) {
    size_t sz = ns_dtype_size(dtype);
    int64_t rows = 1, inner = 1, yi = 1, mi = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 0) return;
    }
    if (ndim > 0) {
        inner = shape[ndim - 1];
        yi = y_strides[ndim - 1];
        mi = m_strides[ndim - 1];
        for (int d = 0; d < ndim - 1; d++) rows *= shape[d];
    }
    if (ndim == 2 && mi == 0 && yi == 1) {
        /* contiguous rows sharing one factor each (a spatial mask): the rows in one loop; short rows
         * without a branch, longer ones cleared only where dropped */
        ptrdiff_t ystep = (ptrdiff_t)y_strides[0] * (ptrdiff_t)sz, mstep = (ptrdiff_t)m_strides[0] * (ptrdiff_t)sz;
        char *yp = y;
        const char *mp = m;
        if (inner >= NS_BRANCHLESS_ZERO) {
            for (int64_t r = 0; r < rows; r++, yp += ystep, mp += mstep)
                if (factor_is_zero(dtype, mp, 0)) memset(yp, 0, (size_t)inner * sz);
            return;
        }
        if (dtype == NS_F32) {
            for (int64_t r = 0; r < rows; r++, yp += ystep, mp += mstep) {
                uint32_t keep = 0u - (uint32_t)(load_f32(mp, 0) != 0.0f);
                for (int64_t i = 0; i < inner; i++) store_u32(yp, (size_t)i, f32_bits(load_f32(yp, (size_t)i)) & keep);
            }
            return;
        }
        for (int64_t r = 0; r < rows; r++, yp += ystep, mp += mstep) {
            uint64_t keep = 0u - (uint64_t)(load_f64(mp, 0) != 0.0), u;
            for (int64_t i = 0; i < inner; i++) {
                double v = load_f64(yp, (size_t)i);
                memcpy(&u, &v, 8);
                store_u64(yp, (size_t)i, u & keep);
            }
        }
        return;
    }
    int64_t idx[NS_MAX_DIMS] = {0};
    int64_t oy = 0, om = 0;
    for (int64_t r = 0; r < rows; r++) {
        char *yp = (char *)y + (ptrdiff_t)oy * (ptrdiff_t)sz;
        const char *mp = (const char *)m + (ptrdiff_t)om * (ptrdiff_t)sz;
        if (mi == 0) { /* one factor for the whole row */
            if (factor_is_zero(dtype, mp, 0)) {
                if (yi == 1)
                    memset(yp, 0, (size_t)inner * sz);
                else
                    for (int64_t i = 0; i < inner; i++) memset(yp + (ptrdiff_t)(i * yi) * (ptrdiff_t)sz, 0, sz);
            }
        } else if (mi == 1 && yi == 1) { /* a factor per element: branch-free */
#ifdef NS_X86
            if (isa != NS_ISA_SCALAR)
                zero_row_avx2(dtype, yp, mp, inner);
            else
#endif
                zero_row_scalar(dtype, yp, mp, inner);
        } else {
            for (int64_t i = 0; i < inner; i++)
                if (factor_is_zero(dtype, mp, i * mi)) memset(yp + (ptrdiff_t)(i * yi) * (ptrdiff_t)sz, 0, sz);
        }
        for (int d = ndim - 2; d >= 0; d--) { /* odometer over the outer axes */
            oy += y_strides[d];
            om += m_strides[d];
            if (++idx[d] < shape[d]) break;
            oy -= y_strides[d] * shape[d];
            om -= m_strides[d] * shape[d];
            idx[d] = 0;
        }
    }
}

