/* The AVX2 path (+F16C, FMA): 8 Philox blocks per vector. */
#include "convert.h"
#include "core.h"

#ifdef NS_X86

/* One Philox round on 8 blocks held as word vectors c0..c3. */
#define PX256_ROUND(c0, c1, c2, c3, K0, K1)                                                                   \
    do {                                                                                                       \
        __m256i pe0_ = _mm256_mul_epu32(c0, m0), po0_ = _mm256_mul_epu32(_mm256_srli_epi64(c0, 32), m0);     \
        __m256i pe1_ = _mm256_mul_epu32(c2, m1), po1_ = _mm256_mul_epu32(_mm256_srli_epi64(c2, 32), m1);     \
        __m256i lo0_ = _mm256_blend_epi32(pe0_, _mm256_slli_epi64(po0_, 32), 0xAA);                            \
        __m256i hi0_ = _mm256_blend_epi32(_mm256_srli_epi64(pe0_, 32), po0_, 0xAA);                            \
        __m256i lo1_ = _mm256_blend_epi32(pe1_, _mm256_slli_epi64(po1_, 32), 0xAA);                            \
        __m256i hi1_ = _mm256_blend_epi32(_mm256_srli_epi64(pe1_, 32), po1_, 0xAA);                            \
        c0 = _mm256_xor_si256(_mm256_xor_si256(hi1_, c1), K0);                                                 \
        c2 = _mm256_xor_si256(_mm256_xor_si256(hi0_, c3), K1);                                                 \
        c1 = lo1_;                                                                                             \
        c3 = lo0_;                                                                                             \
    } while (0)

/* Counter words of the 8 blocks of a group starting at block b.  Vector lane
 * 4i + k holds block b + 2k + i, so that after the in-lane 4x4 transpose vector
 * k holds blocks 2k, 2k + 1 in element order. */
#define PX256_INIT(b, c0, c1)                                                                                 \
    do {                                                                                                       \
        __m256i blo_ = _mm256_set1_epi32((int)(uint32_t)(b));                                                  \
        c0 = _mm256_add_epi32(blo_, off);                                                                      \
        __m256i carry_ = _mm256_cmpgt_epi32(_mm256_xor_si256(blo_, sgn), _mm256_xor_si256(c0, sgn));          \
        c1 = _mm256_sub_epi32(_mm256_set1_epi32((int)(uint32_t)((b) >> 32)), carry_);                        \
    } while (0)

#define PX256_STORE(p, c0, c1, c2, c3)                                                                        \
    do {                                                                                                       \
        __m256i t0_ = _mm256_unpacklo_epi32(c0, c1), t1_ = _mm256_unpackhi_epi32(c0, c1);                     \
        __m256i t2_ = _mm256_unpacklo_epi32(c2, c3), t3_ = _mm256_unpackhi_epi32(c2, c3);                     \
        _mm256_storeu_si256((__m256i *)(p), _mm256_unpacklo_epi64(t0_, t2_));                                  \
        _mm256_storeu_si256((__m256i *)((p) + 16), _mm256_unpackhi_epi64(t0_, t2_));                           \
        _mm256_storeu_si256((__m256i *)((p) + 32), _mm256_unpacklo_epi64(t1_, t3_));                           \
        _mm256_storeu_si256((__m256i *)((p) + 48), _mm256_unpackhi_epi64(t1_, t3_));                           \
    } while (0)

NS_TARGET_AVX2 static void blocks_avx2(uint16_t *out, uint64_t b0, size_t nb, const ns_key *k) {
    const __m256i off = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const __m256i sgn = _mm256_set1_epi32((int)0x80000000u);
    const __m256i m0 = _mm256_set1_epi32((int)PHILOX_M0), m1 = _mm256_set1_epi32((int)PHILOX_M1);
    const __m256i s0 = _mm256_set1_epi32((int)k->s0), s1 = _mm256_set1_epi32((int)k->s1);
    __m256i rk0[PHILOX_ROUNDS], rk1[PHILOX_ROUNDS];
    for (int r = 0; r < PHILOX_ROUNDS; r++) {
        rk0[r] = _mm256_set1_epi32((int)k->k0[r]);
        rk1[r] = _mm256_set1_epi32((int)k->k1[r]);
    }
    size_t i = 0;
    for (; i < nb; i += 16) { /* two independent groups for instruction-level parallelism */
        uint64_t b = b0 + i, bb = b + 8;
        __m256i a0, a1, a2 = s0, a3 = s1, d0, d1, d2 = s0, d3 = s1;
        PX256_INIT(b, a0, a1);
        PX256_INIT(bb, d0, d1);
        for (int r = 0; r < PHILOX_ROUNDS; r++) {
            PX256_ROUND(a0, a1, a2, a3, rk0[r], rk1[r]);
            PX256_ROUND(d0, d1, d2, d3, rk0[r], rk1[r]);
        }
        PX256_STORE(out + 8 * i, a0, a1, a2, a3);
        PX256_STORE(out + 8 * i + 64, d0, d1, d2, d3);
    }
}

NS_TARGET_AVX2 static void l2b_avx2(uint8_t *bits, const uint16_t *lanes, size_t n, uint32_t t) {
    if (t == 0) {
        memset(bits, 0, (n + 7) / 8);
        return;
    }
    /* lane < t  <=>  min(lane, t - 1) == lane */
    const __m256i tm1 = _mm256_set1_epi16((short)(uint16_t)(t - 1));
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i v0 = _mm256_loadu_si256((const __m256i *)(lanes + i));
        __m256i v1 = _mm256_loadu_si256((const __m256i *)(lanes + i + 16));
        __m256i k0 = _mm256_cmpeq_epi16(_mm256_min_epu16(v0, tm1), v0);
        __m256i k1 = _mm256_cmpeq_epi16(_mm256_min_epu16(v1, tm1), v1);
        __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi16(k0, k1), 0xD8);
        uint32_t w = (uint32_t)_mm256_movemask_epi8(p);
        memcpy(bits + i / 8, &w, 4);
    }
    if (i < n) ns_l2b_scalar(bits + i / 8, lanes + i, n - i, t);
}

NS_TARGET_AVX2 static void b2u_avx2(uint8_t *out, const uint8_t *bits, size_t n) {
    /* byte q of the 32-bit word goes to bytes 8q .. 8q + 7; then test one bit each */
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2,
                                            3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    const __m256i one = _mm256_set1_epi8(1);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        uint32_t w;
        memcpy(&w, bits + i / 8, 4);
        __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)w), spread);
        v = _mm256_cmpeq_epi8(_mm256_and_si256(v, sel), sel);
        _mm256_storeu_si256((__m256i *)(out + i), _mm256_and_si256(v, one));
    }
    for (; i < n; i++) out[i] = (uint8_t)bit_at(bits, i);
}

NS_TARGET_AVX2 static void u2b_avx2(uint8_t *bits, const uint8_t *mask, size_t n) {
    const __m256i zero = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(mask + i));
        uint32_t w = ~(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, zero));
        memcpy(bits + i / 8, &w, 4);
    }
    if (i < n) ns_u2b_scalar(bits + i / 8, mask + i, n - i);
}

/* All-ones lanes where bit q of byte b is set, for 8 x 32-bit lanes. */
#define AVX2_MASK8(b) _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)(b)), sel), sel)

NS_TARGET_AVX2 void ns_apply_f32_avx2(const void *x, void *y, const uint8_t *bits, size_t n, double scale) {
    const float *xs = x;
    float *ys = y;
    const __m256 sv = _mm256_set1_ps((float)scale);
    const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 m = _mm256_castsi256_ps(AVX2_MASK8(bits[i / 8]));
        _mm256_storeu_ps(ys + i, _mm256_and_ps(_mm256_mul_ps(_mm256_loadu_ps(xs + i), sv), m));
    }
    apply_tail(NS_F32, x, y, bits, i, n, scale);
}

NS_TARGET_AVX2 void ns_apply_f64_avx2(const void *x, void *y, const uint8_t *bits, size_t n, double scale) {
    const double *xs = x;
    double *ys = y;
    const __m256d sv = _mm256_set1_pd(scale);
    const __m256i sel = _mm256_setr_epi64x(1, 2, 4, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        unsigned b = bits[i / 8];
        __m256i lo = _mm256_cmpeq_epi64(_mm256_and_si256(_mm256_set1_epi64x(b & 15u), sel), sel);
        __m256i hi = _mm256_cmpeq_epi64(_mm256_and_si256(_mm256_set1_epi64x(b >> 4), sel), sel);
        _mm256_storeu_pd(ys + i, _mm256_and_pd(_mm256_mul_pd(_mm256_loadu_pd(xs + i), sv), _mm256_castsi256_pd(lo)));
        _mm256_storeu_pd(ys + i + 4,
                         _mm256_and_pd(_mm256_mul_pd(_mm256_loadu_pd(xs + i + 4), sv), _mm256_castsi256_pd(hi)));
    }
    apply_tail(NS_F64, x, y, bits, i, n, scale);
}

/* Byte masks: 8 (float32) or 4 (float64) mask bytes widened to lanes, all-ones where the byte is 0. */
NS_TARGET_AVX2 void ns_apply_u8_f32_avx2(const void *x, void *y, const uint8_t *mask, size_t n, double scale) {
    const float *xs = x;
    float *ys = y;
    const float sf = (float)scale;
    const __m256 sv = _mm256_set1_ps(sf);
    const __m256i zero = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, mask + i, 8);
        __m256i drop = _mm256_cmpeq_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)w)), zero);
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(xs + i), sv);
        _mm256_storeu_ps(ys + i, _mm256_andnot_ps(_mm256_castsi256_ps(drop), v));
    }
    apply_u8_f32_from(x, y, mask, i, n, scale);
}

NS_TARGET_AVX2 void ns_apply_u8_f64_avx2(const void *x, void *y, const uint8_t *mask, size_t n, double scale) {
    const double *xs = x;
    double *ys = y;
    const __m256d sv = _mm256_set1_pd(scale);
    const __m256i zero = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t w;
        memcpy(&w, mask + i, 4);
        __m256i drop = _mm256_cmpeq_epi64(_mm256_cvtepu8_epi64(_mm_cvtsi32_si128((int)w)), zero);
        __m256d v = _mm256_mul_pd(_mm256_loadu_pd(xs + i), sv);
        _mm256_storeu_pd(ys + i, _mm256_andnot_pd(_mm256_castsi256_pd(drop), v));
    }
    apply_u8_f64_from(x, y, mask, i, n, scale);
}

NS_TARGET_AVX2 static void apply_f16_avx2(const void *x, void *y, const uint8_t *bits, size_t n, double scale) {
    const uint16_t *xs = x;
    uint16_t *ys = y;
    const __m256 sv = _mm256_set1_ps((float)scale);
    const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 m = _mm256_castsi256_ps(AVX2_MASK8(bits[i / 8]));
        __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(xs + i)));
        v = _mm256_and_ps(_mm256_mul_ps(v, sv), m);
        _mm_storeu_si128((__m128i *)(ys + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    apply_tail(NS_F16, x, y, bits, i, n, scale);
}

NS_TARGET_AVX2 static void apply_bf16_avx2(const void *x, void *y, const uint8_t *bits, size_t n, double scale) {
    const uint16_t *xs = x;
    uint16_t *ys = y;
    const __m256 sv = _mm256_set1_ps((float)scale);
    const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1), qnan = _mm256_set1_epi32(0x7fc0);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i m = AVX2_MASK8(bits[i / 8]);
        __m256i u = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(xs + i))), 16);
        __m256 p = _mm256_mul_ps(_mm256_castsi256_ps(u), sv);
        __m256i pu = _mm256_castps_si256(p);
        __m256i r = _mm256_add_epi32(pu, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(pu, 16), one)));
        r = _mm256_srli_epi32(r, 16);
        r = _mm256_blendv_epi8(r, qnan, _mm256_castps_si256(_mm256_cmp_ps(p, p, _CMP_UNORD_Q)));
        r = _mm256_and_si256(r, m);
        __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
        _mm_storeu_si128((__m128i *)(ys + i), _mm256_castsi256_si128(packed));
    }
    apply_tail(NS_BF16, x, y, bits, i, n, scale);
}

const ns_ops ns_ops_avx2 = {
    blocks_avx2,
    l2b_avx2,
    b2u_avx2,
    u2b_avx2,
    {ns_apply_f32_avx2, ns_apply_f64_avx2, apply_f16_avx2, apply_bf16_avx2},
    {ns_apply_u8_f32_avx2, ns_apply_u8_f64_avx2, NULL, NULL},
};

#endif /* NS_X86 */
