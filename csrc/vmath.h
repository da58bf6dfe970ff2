/*
 * Box-Muller in float64 without libm: z = sqrt(-2 ln u1) * cos(2 pi u2) from one
 * Philox word pair (a, c), u1 = (a + 0.5) / 2^32, u2 = c / 2^32 (docs/rng.md).
 *
 * The scalar function and the AVX2 one (4 variates per vector) perform the
 * same IEEE operations in the same order, with no fused multiply-add, so every
 * ISA path gives bit-identical variates.
 *
 * ln u1: u1 = 2^e m with m in [sqrt(2)/2, sqrt(2)); f = m - 1 is exact and
 *   ln(1 + f) = 2 atanh(s), s = f / (2 + f), |s| < 0.172, written as
 *   f - (f^2/2 - s (f^2/2 + R(s^2))) with R the atanh series 2 s^2/3 + 2 s^4/5
 *   + ... through s^20 (truncation below 1e-18 relative), plus e ln 2 in two
 *   parts (the high part has 42 bits, so e times it is exact).
 * cos x, x = fl(2 pi u2) in [0, 2 pi): k = nearest integer to x / (pi / 2),
 *   r = x - k pi / 2 with pi / 2 in three parts (the first two have 33 bits,
 *   so k times them is exact and the first subtraction too), then the Taylor
 *   series of cos r or sin r through r^16 / r^17 (|r| <= pi / 4, truncation
 *   below 1e-18 relative), signed by the quadrant k mod 4.
 * The relative error is a few float64 ulp, well inside the contract's bound.
 */
#ifndef NOISESHAPE_VMATH_H
#define NOISESHAPE_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define NS_BM_TWO_PI 0x1.921fb54442d18p+2 /* 2 * pi rounded to double, as 2.0 * np.pi */
#define NS_BM_TWO_OVER_PI 0x1.45f306dc9c883p-1
#define NS_BM_PIO2_1 0x1.921fb54400000p+0
#define NS_BM_PIO2_2 0x1.0b4611a600000p-34
#define NS_BM_PIO2_3 0x1.3198a2e037073p-69
#define NS_BM_LN2_HI 0x1.62e42fefa3800p-1
#define NS_BM_LN2_LO 0x1.ef35793c76730p-45
#define NS_BM_SQRT2 0x1.6a09e667f3bcdp+0
#define NS_BM_ROUND 0x1.8p52 /* x + this - this rounds x to an integer, kept in the low bits */

/* Polynomial coefficients, highest power first: the atanh series 2 / (2 i + 1), i = 10 .. 1, and the
 * Taylor series of cos ((-1)^i / (2i)!, i = 8 .. 0) and of (sin r - r) / r^3 ((-1)^i / (2i+1)!, i = 8 .. 1). */
static const double ns_bm_atanh[10] = {2.0 / 21, 2.0 / 19, 2.0 / 17, 2.0 / 15, 2.0 / 13,
                                       2.0 / 11, 2.0 / 9,  2.0 / 7,  2.0 / 5,  2.0 / 3};
static const double ns_bm_cos[9] = {1.0 / 20922789888000.0, -1.0 / 87178291200.0, 1.0 / 479001600.0,
                                    -1.0 / 3628800.0,       1.0 / 40320.0,        -1.0 / 720.0,
                                    1.0 / 24.0,             -1.0 / 2.0,           1.0};
static const double ns_bm_sin[8] = {1.0 / 355687428096000.0, -1.0 / 1307674368000.0, 1.0 / 6227020800.0,
                                    -1.0 / 39916800.0,       1.0 / 362880.0,         -1.0 / 5040.0,
                                    1.0 / 120.0,             -1.0 / 6.0};

/* coef[0] x^(n-1) + ... + coef[n-1] by Horner's rule, one rounding per multiply and per add. */
static inline double ns_bm_horner(const double *coef, int n, double x) {
    double acc = coef[0];
    for (int i = 1; i < n; i++) {
        acc = acc * x + coef[i];
    }
    return acc;
}

static inline double ns_bm_bits_to_f64(uint64_t b) {
    double d;
    memcpy(&d, &b, 8);
    return d;
}

static inline uint64_t ns_bm_f64_to_bits(double d) {
    uint64_t b;
    memcpy(&b, &d, 8);
    return b;
}

/* One standard normal variate from the word pair (a, c). */
static inline double ns_box_muller(uint32_t a, uint32_t c) {
    double u1 = ((double)a + 0.5) * 0x1p-32;
    uint64_t bits = ns_bm_f64_to_bits(u1);
    double m = ns_bm_bits_to_f64((bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull);
    double e = ns_bm_bits_to_f64((bits >> 52) | 0x4330000000000000ull) - (0x1p52 + 1023.0);
    if (m > NS_BM_SQRT2) {
        m = m * 0.5;
        e = e + 1.0;
    }
    double f = m - 1.0;
    double hfsq = (0.5 * f) * f;
    double s = f / (2.0 + f);
    double z = s * s;
    double R = ns_bm_horner(ns_bm_atanh, 10, z) * z;
    double t = s * (hfsq + R) + e * NS_BM_LN2_LO;
    double lnu = e * NS_BM_LN2_HI - ((hfsq - t) - f);
    double rad = sqrt(-2.0 * lnu);

    double x = NS_BM_TWO_PI * ((double)c * 0x1p-32);
    double kr = x * NS_BM_TWO_OVER_PI + NS_BM_ROUND;
    uint64_t q = ns_bm_f64_to_bits(kr) & 3u;
    double k = kr - NS_BM_ROUND;
    double r = ((x - k * NS_BM_PIO2_1) - k * NS_BM_PIO2_2) - k * NS_BM_PIO2_3;
    double w = r * r;
    double cp = ns_bm_horner(ns_bm_cos, 9, w);
    double sp = r + (r * w) * ns_bm_horner(ns_bm_sin, 8, w);
    double cosx = (q & 1) ? sp : cp;
    if ((q + 1) & 2) {
        cosx = -cosx;
    }
    return rad * cosx;
}

#ifdef NS_X86
NS_TARGET_AVX2 static inline __m256d ns_bm_horner_avx2(const double *coef, int n, __m256d x) {
    __m256d acc = _mm256_set1_pd(coef[0]);
    for (int i = 1; i < n; i++) {
        acc = _mm256_add_pd(_mm256_mul_pd(acc, x), _mm256_set1_pd(coef[i]));
    }
    return acc;
}

/* The same steps on the 4 word pairs at p (8 words: a0 c0 a1 c1 ...). Needs core.h first. */
NS_TARGET_AVX2 static inline __m256d ns_box_muller_avx2(const void *p) {
    const __m256d one = _mm256_set1_pd(1.0);
    __m256i ac = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)p),
                                             _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
    __m256i sac = _mm256_xor_si256(ac, _mm256_set1_epi32((int)0x80000000u)); /* word - 2^31, signed */
    __m256d a = _mm256_add_pd(_mm256_cvtepi32_pd(_mm256_castsi256_si128(sac)), _mm256_set1_pd(0x1p31));
    __m256d c = _mm256_add_pd(_mm256_cvtepi32_pd(_mm256_extracti128_si256(sac, 1)), _mm256_set1_pd(0x1p31));

    __m256d u1 = _mm256_mul_pd(_mm256_add_pd(a, _mm256_set1_pd(0.5)), _mm256_set1_pd(0x1p-32));
    __m256i bits = _mm256_castpd_si256(u1);
    __m256d m = _mm256_castsi256_pd(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi64x(0x000FFFFFFFFFFFFFll)),
                                                    _mm256_set1_epi64x(0x3FF0000000000000ll)));
    __m256d e = _mm256_sub_pd(
        _mm256_castsi256_pd(_mm256_or_si256(_mm256_srli_epi64(bits, 52), _mm256_set1_epi64x(0x4330000000000000ll))),
        _mm256_set1_pd(0x1p52 + 1023.0));
    __m256d big = _mm256_cmp_pd(m, _mm256_set1_pd(NS_BM_SQRT2), _CMP_GT_OQ);
    m = _mm256_blendv_pd(m, _mm256_mul_pd(m, _mm256_set1_pd(0.5)), big);
    e = _mm256_blendv_pd(e, _mm256_add_pd(e, one), big);
    __m256d f = _mm256_sub_pd(m, one);
    __m256d hfsq = _mm256_mul_pd(_mm256_mul_pd(_mm256_set1_pd(0.5), f), f);
    __m256d s = _mm256_div_pd(f, _mm256_add_pd(_mm256_set1_pd(2.0), f));
    __m256d z = _mm256_mul_pd(s, s);
    __m256d R = _mm256_mul_pd(ns_bm_horner_avx2(ns_bm_atanh, 10, z), z);
    __m256d t = _mm256_add_pd(_mm256_mul_pd(s, _mm256_add_pd(hfsq, R)), _mm256_mul_pd(e, _mm256_set1_pd(NS_BM_LN2_LO)));
    __m256d lnu = _mm256_sub_pd(_mm256_mul_pd(e, _mm256_set1_pd(NS_BM_LN2_HI)), _mm256_sub_pd(_mm256_sub_pd(hfsq, t), f));
    __m256d rad = _mm256_sqrt_pd(_mm256_mul_pd(_mm256_set1_pd(-2.0), lnu));

    __m256d x = _mm256_mul_pd(_mm256_set1_pd(NS_BM_TWO_PI), _mm256_mul_pd(c, _mm256_set1_pd(0x1p-32)));
    __m256d kr = _mm256_add_pd(_mm256_mul_pd(x, _mm256_set1_pd(NS_BM_TWO_OVER_PI)), _mm256_set1_pd(NS_BM_ROUND));
    __m256i q = _mm256_castpd_si256(kr);
    __m256d k = _mm256_sub_pd(kr, _mm256_set1_pd(NS_BM_ROUND));
    __m256d r = _mm256_sub_pd(_mm256_sub_pd(_mm256_sub_pd(x, _mm256_mul_pd(k, _mm256_set1_pd(NS_BM_PIO2_1))),
                                            _mm256_mul_pd(k, _mm256_set1_pd(NS_BM_PIO2_2))),
                              _mm256_mul_pd(k, _mm256_set1_pd(NS_BM_PIO2_3)));
    __m256d w = _mm256_mul_pd(r, r);
    __m256d cp = ns_bm_horner_avx2(ns_bm_cos, 9, w);
    __m256d sp = _mm256_add_pd(r, _mm256_mul_pd(_mm256_mul_pd(r, w), ns_bm_horner_avx2(ns_bm_sin, 8, w)));
    __m256i odd = _mm256_slli_epi64(q, 63);                                    /* q & 1 into the sign bit */
    __m256i neg = _mm256_slli_epi64(_mm256_add_epi64(q, _mm256_set1_epi64x(1)), 62); /* (q + 1) & 2 likewise */
    __m256d cosx = _mm256_blendv_pd(cp, sp, _mm256_castsi256_pd(odd));
    cosx = _mm256_xor_pd(cosx, _mm256_castsi256_pd(_mm256_and_si256(neg, _mm256_set1_epi64x((long long)0x8000000000000000ull))));
    return _mm256_mul_pd(rad, cosx);
}
#endif

#endif /* NOISESHAPE_VMATH_H */
