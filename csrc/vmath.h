/*
 * Box-Muller in float64 without libm: z = sqrt(-2 ln u1) * cos(2 pi u2) from one
 * Philox word pair (a, c), u1 = (a + 0.5) / 2^32, u2 = c / 2^32 (docs/rng.md).
 *
 * The scalar function and the AVX2 one (4 variates per vector) perform the
 * same IEEE operations in the same order, each Horner step and the marked
 * multiply-adds as one fused multiply-add (one rounding: fma() in the scalar
 * function, exact on every platform), so every ISA path gives bit-identical
 * variates; where the AVX2 one differs it does so by exact rewrites only (a
 * scale by a power of two folded into a constant or into the exponent bits),
 * which give the same values.
 *
 * ln u1: u1 = 2^e m with m in [sqrt(2)/2, sqrt(2)); f = m - 1 is exact and
 *   ln(1 + f) = 2 atanh(s), s = f / (2 + f), |s| < 0.172, written as
 *   f - (f^2/2 - s (f^2/2 + R(s^2))) with R(z) = 2 z/3 + 2 z^2/5 + ... (a
 *   fitted polynomial of degree 6 times z), plus e ln 2 in two parts (the high
 *   part has 42 bits, so e times it is exact). It is computed at twice its
 *   scale, -2 ln u1 directly (f^2 for f^2/2, 2 R, f + f for 2 f): scaling by 2
 *   is exact, so every rounding is that of the unscaled expression and the -2
 *   costs nothing.
 * cos x, x = fl(2 pi u2) in [0, 2 pi): k = nearest integer to x / (pi / 2),
 *   r = x - k pi / 2 with pi / 2 in three parts (the first two have 33 bits,
 *   so k times them is exact: the first two steps round as a subtraction of
 *   the product would), then fitted polynomials for cos r or sin r (|r| <=
 *   pi / 4), signed by the quadrant k mod 4.
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

/* Polynomial coefficients, highest power first, fitted by tools/fit_box_muller.py (Chebyshev fits in
 * 50-digit arithmetic, within a hair of the minimax ones, rounded to float64), each with its fit's
 * error: cos r in w = r^2 and (sin r - r) / r^3 in w for |r| <= pi / 4, and the doubled atanh series
 * R2(z) / z = 4 (atanh(s) / s - 1) / s^2 in z = s^2, whose error reaches ln u1 multiplied by z s / 2
 * (below 0.003). */
#define NS_BM_NCOS 7   /* the sin polynomial has one coefficient less */
#define NS_BM_NATANH 7
static const double ns_bm_cos[NS_BM_NCOS] = { /* error 4.7e-17 */
    0x1.1b8a18b167949p-29, -0x1.27df3d1d43778p-22, 0x1.a019f7f62476ap-16, -0x1.6c16c163bd246p-10,
    0x1.555555554e75fp-5,  -0x1.fffffffffff78p-2,  0x1.0000000000000p+0};
static const double ns_bm_sin[NS_BM_NCOS - 1] = { /* error 2.1e-17 */
    0x1.5e0a4fc16be59p-33, -0x1.ae6008d114485p-26, 0x1.71de37946ed6dp-19,
    -0x1.a01a019e820aep-13, 0x1.1111111110babp-7,  -0x1.5555555555555p-3};
static const double ns_bm_atanh2[NS_BM_NATANH] = { /* error 6.2e-16 */
    0x1.2b5900de53b32p-2, 0x1.39fe51a7c18f9p-2, 0x1.7462b51cb66b1p-2, 0x1.c71c62e3f11e6p-2,
    0x1.2492492df281ap-1, 0x1.99999999952d7p-1, 0x1.5555555555558p+0};

/* coef[0] x^(n-1) + ... + coef[n-1] by Horner's rule, one rounding per step (a fused multiply-add). */
static inline double ns_bm_horner(const double *coef, int n, double x) {
    double acc = coef[0];
    for (int i = 1; i < n; i++) {
        acc = fma(acc, x, coef[i]);
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
    double ff = f * f; /* 2 hfsq */
    double s = f / (2.0 + f);
    double z = s * s;
    double R2 = ns_bm_horner(ns_bm_atanh2, NS_BM_NATANH, z) * z; /* 2 R */
    double t2 = fma(s, ff + R2, e * (2.0 * NS_BM_LN2_LO));     /* 2 t */
    double d2 = (ff - t2) - (f + f);                             /* 2 d */
    double rad = sqrt(fma(e, -2.0 * NS_BM_LN2_HI, d2));          /* -2 ln u1 */

    double x = NS_BM_TWO_PI * ((double)c * 0x1p-32);
    double kr = fma(x, NS_BM_TWO_OVER_PI, NS_BM_ROUND);
    uint64_t q = ns_bm_f64_to_bits(kr) & 3u;
    double k = kr - NS_BM_ROUND;
    double r = fma(-k, NS_BM_PIO2_3, fma(-k, NS_BM_PIO2_2, fma(-k, NS_BM_PIO2_1, x)));
    double w = r * r;
    double cp = ns_bm_horner(ns_bm_cos, NS_BM_NCOS, w);
    double sp = fma(r * w, ns_bm_horner(ns_bm_sin, NS_BM_NCOS - 1, w), r);
    double cosx = (q & 1) ? sp : cp;
    if ((q + 1) & 2) {
        cosx = -cosx;
    }
    return rad * cosx;
}

#ifdef NS_X86
/* Most variates ns_box_muller_avx2 computes per call (a multiple of 4). */
#define NS_BM_BLOCK 128

/* The atanh and cos polynomials each take their Horner steps in two stages: the first stage takes
 * coefficients 1 .. split - 1, a later one the rest. */
#define NS_BM_LN_SPLIT 5
#define NS_BM_COS_SPLIT 3

/*
 * The steps of ns_box_muller on the 4 n word pairs at p (8 words per 4 pairs: a0 c0 a1 c1 ...),
 * variates to z[0 .. 4 n), n <= NS_BM_BLOCK / 4; every lane sees exactly the operations of
 * ns_box_muller, so the variates are the same bit for bit.
 *
 * One variate is a dependency chain of some 100 cycles (the division, two Horner chains of a
 * fused multiply-add per step, the square root), far longer than the out-of-order window hides at full
 * throughput. So the work runs in four stages over the whole block, each a loop whose iterations
 * are independent and whose chain is short, passing values on through stack arrays (in L1): the
 * reductions; the division and the first Horner steps; the other steps of ln; the square root and
 * the other steps of cos (the divider's and the square root's long occupancy overlaps with the
 * multiplies and adds of their stage).
 * cos and sin share one polynomial pass: lane by lane the coefficients are those of cos (even
 * quadrants) or of sin (odd quadrants); the sin series has one coefficient less, so its lanes
 * start from 0, and 0 * w + c is exactly c. Needs core.h first.
 */
NS_TARGET_AVX2 static inline void ns_box_muller_avx2(const void *p, double *zout, size_t n) {
    enum { NV = NS_BM_BLOCK / 4 };
    NS_ALIGN64 __m256d e[NV], f[NV], z[NV], t[NV], s[NV], kr[NV], r[NV], w[NV], poly[NV];
    const __m256d one = _mm256_set1_pd(1.0), sign = _mm256_set1_pd(-0.0);
    for (size_t v = 0; v < n; v++) { /* the reductions: u1 = 2^e m, f = m - 1; x = 2 pi u2 = k pi / 2 + r */
        /* the 64-bit lane q holds a | c << 32; (2^52 + a) - 2^52 = a exactly, likewise c */
        __m256i ac = _mm256_loadu_si256((const __m256i *)p + v);
        __m256i lo32 = _mm256_set1_epi64x(0xFFFFFFFFll), magic = _mm256_set1_epi64x(0x4330000000000000ll);
        /* A = a + 0.5 = (2^52 + a) - (2^52 - 0.5), exactly; u1 = A 2^-32 has A's mantissa and its
         * exponent less 32 */
        __m256i abits = _mm256_castpd_si256(_mm256_sub_pd(
            _mm256_castsi256_pd(_mm256_or_si256(_mm256_and_si256(ac, lo32), magic)), _mm256_set1_pd(0x1p52 - 0.5)));
        __m256d c = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(_mm256_srli_epi64(ac, 32), magic)),
                                  _mm256_set1_pd(0x1p52));
        __m256i mant = _mm256_and_si256(abits, _mm256_set1_epi64x(0x000FFFFFFFFFFFFFll));
        /* m > sqrt(2) compares the mantissas; then m / 2 is the same mantissa with exponent -1, exactly */
        __m256i sqrt2_mant = _mm256_set1_epi64x((long long)(ns_bm_f64_to_bits(NS_BM_SQRT2) & 0x000FFFFFFFFFFFFFull));
        __m256i big = _mm256_cmpgt_epi64(mant, sqrt2_mant);
        __m256d m = _mm256_castsi256_pd(_mm256_or_si256(
            mant, _mm256_sub_epi64(_mm256_set1_epi64x(0x3FF0000000000000ll),
                                   _mm256_and_si256(big, _mm256_set1_epi64x(0x0010000000000000ll)))));
        __m256d ev = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(_mm256_srli_epi64(abits, 52), magic)),
                                   _mm256_set1_pd(0x1p52 + 1023.0 + 32.0));
        e[v] = _mm256_add_pd(ev, _mm256_and_pd(_mm256_castsi256_pd(big), one)); /* + 1 or + 0, exactly */
        f[v] = _mm256_sub_pd(m, one);

        /* x = 2 pi (c 2^-32) = (2 pi 2^-32) c: the same real number, rounded once */
        __m256d x = _mm256_mul_pd(c, _mm256_set1_pd(NS_BM_TWO_PI * 0x1p-32));
        kr[v] = _mm256_fmadd_pd(x, _mm256_set1_pd(NS_BM_TWO_OVER_PI), _mm256_set1_pd(NS_BM_ROUND));
        __m256d k = _mm256_sub_pd(kr[v], _mm256_set1_pd(NS_BM_ROUND));
        __m256d rv = _mm256_fnmadd_pd(k, _mm256_set1_pd(NS_BM_PIO2_1), x);
        rv = _mm256_fnmadd_pd(k, _mm256_set1_pd(NS_BM_PIO2_2), rv);
        rv = _mm256_fnmadd_pd(k, _mm256_set1_pd(NS_BM_PIO2_3), rv);
        r[v] = rv;
        w[v] = _mm256_mul_pd(rv, rv);
    }
    for (size_t v = 0; v < n; v++) { /* s = f / (2 + f), z = s^2; the first Horner steps of both polynomials */
        __m256d sv = _mm256_div_pd(f[v], _mm256_add_pd(_mm256_set1_pd(2.0), f[v]));
        __m256d zv = _mm256_mul_pd(sv, sv);
        __m256d odd = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_castpd_si256(kr[v]), 63)); /* k odd: sin */
        __m256d acc = _mm256_blendv_pd(_mm256_set1_pd(ns_bm_cos[0]), _mm256_setzero_pd(), odd);
        for (int i = 1; i < NS_BM_COS_SPLIT; i++) {
            __m256d coef = _mm256_blendv_pd(_mm256_set1_pd(ns_bm_cos[i]), _mm256_set1_pd(ns_bm_sin[i - 1]), odd);
            acc = _mm256_fmadd_pd(acc, w[v], coef);
        }
        __m256d lt = _mm256_set1_pd(ns_bm_atanh2[0]);
        for (int i = 1; i < NS_BM_LN_SPLIT; i++) {
            lt = _mm256_fmadd_pd(lt, zv, _mm256_set1_pd(ns_bm_atanh2[i]));
        }
        s[v] = sv;
        z[v] = zv;
        t[v] = lt;
        poly[v] = acc;
    }
    for (size_t v = 0; v < n; v++) { /* the other Horner steps of ln, ln u1, -2 ln u1 */
        __m256d lt = t[v];
        for (int i = NS_BM_LN_SPLIT; i < NS_BM_NATANH; i++) {
            lt = _mm256_fmadd_pd(lt, z[v], _mm256_set1_pd(ns_bm_atanh2[i]));
        }
        __m256d R2 = _mm256_mul_pd(lt, z[v]);
        __m256d ff = _mm256_mul_pd(f[v], f[v]);
        __m256d elo2 = _mm256_mul_pd(e[v], _mm256_set1_pd(2.0 * NS_BM_LN2_LO));
        __m256d t2 = _mm256_fmadd_pd(s[v], _mm256_add_pd(ff, R2), elo2);
        __m256d d2 = _mm256_sub_pd(_mm256_sub_pd(ff, t2), _mm256_add_pd(f[v], f[v]));
        t[v] = _mm256_fmadd_pd(e[v], _mm256_set1_pd(-2.0 * NS_BM_LN2_HI), d2);
    }
    for (size_t v = 0; v < n; v++) { /* the radius sqrt(-2 ln u1), the other Horner steps of cos / sin, the variate */
        __m256d rad = _mm256_sqrt_pd(t[v]);
        __m256i q = _mm256_castpd_si256(kr[v]);
        __m256d odd = _mm256_castsi256_pd(_mm256_slli_epi64(q, 63)); /* q & 1 into the sign bit */
        __m256d acc = poly[v];
        for (int i = NS_BM_COS_SPLIT; i < NS_BM_NCOS; i++) {
            __m256d coef = _mm256_blendv_pd(_mm256_set1_pd(ns_bm_cos[i]), _mm256_set1_pd(ns_bm_sin[i - 1]), odd);
            acc = _mm256_fmadd_pd(acc, w[v], coef);
        }
        __m256d sinx = _mm256_fmadd_pd(_mm256_mul_pd(r[v], w[v]), acc, r[v]);
        /* (q + 1) & 2 into the sign bit */
        __m256d neg = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(q, _mm256_set1_epi64x(1)), 62));
        __m256d cosx = _mm256_xor_pd(_mm256_blendv_pd(acc, sinx, odd), _mm256_and_pd(neg, sign));
        _mm256_storeu_pd(zout + 4 * v, _mm256_mul_pd(rad, cosx));
    }
}
#endif

#endif /* NOISESHAPE_VMATH_H */
