/* The AVX-512 path (F + BW + VL): 16 Philox blocks per vector. */
#include "convert.h"
#include "core.h"

#ifdef NS_X86

/* One Philox round on 16 blocks; the 32x32->64 products of even and odd lanes
 * are recombined into lo/hi words with one merge-masked pair swap each. */
#define PX512_ROUND(c0, c1, c2, c3, K0, K1)                                                                   \
    do {                                                                                                       \
        __m512i pe0_ = _mm512_mul_epu32(c0, m0), po0_ = _mm512_mul_epu32(_mm512_srli_epi64(c0, 32), m0);     \
        __m512i pe1_ = _mm512_mul_epu32(c2, m1), po1_ = _mm512_mul_epu32(_mm512_srli_epi64(c2, 32), m1);     \
        __m512i lo0_ = _mm512_mask_shuffle_epi32(pe0_, 0xAAAA, po0_, _MM_PERM_CDAB);                           \
        __m512i hi0_ = _mm512_mask_shuffle_epi32(po0_, 0x5555, pe0_, _MM_PERM_CDAB);                           \
        __m512i lo1_ = _mm512_mask_shuffle_epi32(pe1_, 0xAAAA, po1_, _MM_PERM_CDAB);                           \
        __m512i hi1_ = _mm512_mask_shuffle_epi32(po1_, 0x5555, pe1_, _MM_PERM_CDAB);                           \
        c0 = _mm512_ternarylogic_epi32(hi1_, c1, K0, 0x96);                                                    \
        c2 = _mm512_ternarylogic_epi32(hi0_, c3, K1, 0x96);                                                    \
        c1 = lo1_;                                                                                             \
        c3 = lo0_;                                                                                             \
    } while (0)

/* Vector lane 4i + k holds block b + 4k + i, so that after the in-lane 4x4
 * transpose vector k holds blocks 4k .. 4k + 3 in element order. */
#define PX512_INIT(b, c0, c1)                                                                                 \
    do {                                                                                                       \
        __m512i blo_ = _mm512_set1_epi32((int)(uint32_t)(b));                                                  \
        c0 = _mm512_add_epi32(blo_, off);                                                                      \
        __mmask16 carry_ = _mm512_cmplt_epu32_mask(c0, blo_);                                                  \
        __m512i bhi_ = _mm512_set1_epi32((int)(uint32_t)((b) >> 32));                                          \
        c1 = _mm512_mask_add_epi32(bhi_, carry_, bhi_, _mm512_set1_epi32(1));                                  \
    } while (0)

#define PX512_STORE(p, c0, c1, c2, c3)                                                                        \
    do {                                                                                                       \
        __m512i t0_ = _mm512_unpacklo_epi32(c0, c1), t1_ = _mm512_unpackhi_epi32(c0, c1);                     \
        __m512i t2_ = _mm512_unpacklo_epi32(c2, c3), t3_ = _mm512_unpackhi_epi32(c2, c3);                     \
        _mm512_storeu_si512((void *)(p), _mm512_unpacklo_epi64(t0_, t2_));                                     \
        _mm512_storeu_si512((void *)((p) + 32), _mm512_unpackhi_epi64(t0_, t2_));                              \
        _mm512_storeu_si512((void *)((p) + 64), _mm512_unpacklo_epi64(t1_, t3_));                              \
        _mm512_storeu_si512((void *)((p) + 96), _mm512_unpackhi_epi64(t1_, t3_));                              \
    } while (0)

NS_TARGET_AVX512 static void blocks_avx512(uint16_t *out, uint64_t b0, size_t nb, const ns_key *k) {
    const __m512i off = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m512i m0 = _mm512_set1_epi32((int)PHILOX_M0), m1 = _mm512_set1_epi32((int)PHILOX_M1);
    const __m512i s0 = _mm512_set1_epi32((int)k->s0), s1 = _mm512_set1_epi32((int)k->s1);
    __m512i rk0[PHILOX_ROUNDS], rk1[PHILOX_ROUNDS];
    for (int r = 0; r < PHILOX_ROUNDS; r++) {
        rk0[r] = _mm512_set1_epi32((int)k->k0[r]);
        rk1[r] = _mm512_set1_epi32((int)k->k1[r]);
    }
    size_t i = 0;
    for (; i + 16 < nb; i += 32) { /* two independent groups for instruction-level parallelism */
        uint64_t b = b0 + i, bb = b + 16;
        __m512i a0, a1, a2 = s0, a3 = s1, d0, d1, d2 = s0, d3 = s1;
        PX512_INIT(b, a0, a1);
        PX512_INIT(bb, d0, d1);
        for (int r = 0; r < PHILOX_ROUNDS; r++) {
            PX512_ROUND(a0, a1, a2, a3, rk0[r], rk1[r]);
            PX512_ROUND(d0, d1, d2, d3, rk0[r], rk1[r]);
        }
        PX512_STORE(out + 8 * i, a0, a1, a2, a3);
        PX512_STORE(out + 8 * i + 128, d0, d1, d2, d3);
    }
    if (i < nb) { /* at most 16 blocks left */
        __m512i a0, a1, a2 = s0, a3 = s1;
        PX512_INIT(b0 + i, a0, a1);
        for (int r = 0; r < PHILOX_ROUNDS; r++) PX512_ROUND(a0, a1, a2, a3, rk0[r], rk1[r]);
        PX512_STORE(out + 8 * i, a0, a1, a2, a3);
    }
}

/* Masks and integers convert only through the explicit _cvt* intrinsics
 * (kmov): an implicit conversion lets a compiler store a 32-bit mask and
 * reload it as 64 bits (seen with GCC 12 at -O1 with -fsanitize=null).
 *
 * Mask of the low r (0..64) bits. */
static inline uint64_t low_bits(size_t r) { return r >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << r) - 1u); }

NS_TARGET_AVX512 static void l2b_avx512(uint8_t *bits, const uint16_t *lanes, size_t n, uint32_t t) {
    if (t == 0) {
        memset(bits, 0, (n + 7) / 8);
        return;
    }
    const __m512i tm1 = _mm512_set1_epi16((short)(uint16_t)(t - 1)); /* lane < t <=> lane <= t - 1 */
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512i v0 = _mm512_loadu_si512((const void *)(lanes + i));
        __m512i v1 = _mm512_loadu_si512((const void *)(lanes + i + 32));
        uint64_t lo = _cvtmask32_u32(_mm512_cmple_epu16_mask(v0, tm1));
        uint64_t hi = _cvtmask32_u32(_mm512_cmple_epu16_mask(v1, tm1));
        uint64_t w = lo | hi << 32;
        memcpy(bits + i / 8, &w, 8);
    }
    if (i < n) {
        size_t r = n - i;
        uint64_t lm = low_bits(r);
        __mmask32 k0 = _cvtu32_mask32((uint32_t)lm), k1 = _cvtu32_mask32((uint32_t)(lm >> 32));
        __m512i v0 = _mm512_maskz_loadu_epi16(k0, lanes + i), v1 = _mm512_maskz_loadu_epi16(k1, lanes + i + 32);
        uint64_t lo = _cvtmask32_u32(_mm512_mask_cmple_epu16_mask(k0, v0, tm1));
        uint64_t hi = _cvtmask32_u32(_mm512_mask_cmple_epu16_mask(k1, v1, tm1));
        uint64_t w = lo | hi << 32;
        memcpy(bits + i / 8, &w, (r + 7) / 8);
    }
}

NS_TARGET_AVX512 static void b2u_avx512(uint8_t *out, const uint8_t *bits, size_t n) {
    const __m512i one = _mm512_set1_epi8(1);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        uint64_t w;
        memcpy(&w, bits + i / 8, 8);
        _mm512_storeu_si512((void *)(out + i), _mm512_maskz_mov_epi8(_cvtu64_mask64(w), one));
    }
    if (i < n) {
        size_t r = n - i;
        uint64_t w = load_bits(bits + i / 8, r);
        __m512i v = _mm512_maskz_mov_epi8(_cvtu64_mask64(w), one);
        _mm512_mask_storeu_epi8(out + i, _cvtu64_mask64(low_bits(r)), v);
    }
}

NS_TARGET_AVX512 static void u2b_avx512(uint8_t *bits, const uint8_t *mask, size_t n) {
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512i v = _mm512_loadu_si512((const void *)(mask + i));
        uint64_t w = _cvtmask64_u64(_mm512_test_epi8_mask(v, v));
        memcpy(bits + i / 8, &w, 8);
    }
    if (i < n) {
        size_t r = n - i;
        __m512i v = _mm512_maskz_loadu_epi8(_cvtu64_mask64(low_bits(r)), mask + i);
        uint64_t w = _cvtmask64_u64(_mm512_test_epi8_mask(v, v));
        memcpy(bits + i / 8, &w, (r + 7) / 8);
    }
}

/* float32 and float64 reuse the AVX2 kernels (vector masks built from the bit
 * bytes): on large arrays streaming from L3 or memory they measured clearly
 * faster than zero-masked AVX-512 multiplies, full- or half-width. */

/* y = bit ? x * scale : 0 for 16-bit floats, 64 elements (one mask word) at a
 * time through STEP, which converts 16 values, multiplies under a keep mask and
 * rounds back; the last, partial word uses masked loads and stores. */
#define NS_APPLY16_AVX512(NAME, STEP)                                                                              \
    NS_TARGET_AVX512 static void NAME(const void *x, void *y, const uint8_t *bits, size_t n, double scale) {       \
        const uint16_t *xs = x;                                                                                    \
        uint16_t *ys = y;                                                                                          \
        const __m512 sv = _mm512_set1_ps((float)scale);                                                            \
        size_t i = 0;                                                                                              \
        for (; i + 64 <= n; i += 64) {                                                                             \
            uint64_t w;                                                                                            \
            memcpy(&w, bits + i / 8, 8);                                                                           \
            for (int q = 0; q < 4; q++) {                                                                          \
                __m256i h = _mm256_loadu_si256((const __m256i *)(xs + i + 16 * q));                                \
                __mmask16 k = _cvtu32_mask16((uint32_t)(w >> (16 * q)));                                           \
                _mm256_storeu_si256((__m256i *)(ys + i + 16 * q), STEP(h, k, sv));                                 \
            }                                                                                                      \
        }                                                                                                          \
        if (i < n) {                                                                                               \
            size_t r = n - i;                                                                                      \
            uint64_t w = load_bits(bits + i / 8, r), lm = low_bits(r);                                             \
            for (size_t q = 0; 16 * q < r; q++) {                                                                  \
                __mmask16 l = _cvtu32_mask16((uint32_t)(lm >> (16 * q)));                                          \
                __mmask16 k = _cvtu32_mask16((uint32_t)((w & lm) >> (16 * q)));                                    \
                __m256i h = _mm256_maskz_loadu_epi16(l, xs + i + 16 * q);                                          \
                _mm256_mask_storeu_epi16(ys + i + 16 * q, l, STEP(h, k, sv));                                      \
            }                                                                                                      \
        }                                                                                                          \
    }

NS_TARGET_AVX512 static inline __m256i f16_step512(__m256i h, __mmask16 k, __m512 sv) {
    __m512 p = _mm512_maskz_mul_ps(k, _mm512_cvtph_ps(h), sv);
    return _mm512_cvtps_ph(p, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

NS_APPLY16_AVX512(apply_f16_avx512, f16_step512)

NS_TARGET_AVX512 static inline __m256i bf16_step512(__m256i h, __mmask16 k, __m512 sv) {
    __m512i u = _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
    __m512 p = _mm512_mul_ps(_mm512_castsi512_ps(u), sv);
    __m512i pu = _mm512_castps_si512(p);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(pu, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(pu, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(p, p, _CMP_UNORD_Q), _mm512_set1_epi32(0x7fc0));
    return _mm512_cvtepi32_epi16(_mm512_maskz_mov_epi32(k, r));
}

NS_APPLY16_AVX512(apply_bf16_avx512, bf16_step512)

const ns_ops ns_ops_avx512 = {
    blocks_avx512,
    l2b_avx512,
    b2u_avx512,
    u2b_avx512,
    {ns_apply_f32_avx2, ns_apply_f64_avx2, apply_f16_avx512, apply_bf16_avx512},
    {ns_apply_u8_f32_avx2, ns_apply_u8_f64_avx2, NULL, NULL},
};

#endif /* NS_X86 */
