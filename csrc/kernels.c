/*
 * noiseshape C kernels (see kernels.h for the contract).
 *
 * Structure
 * ---------
 * Every ISA path provides a small table of primitives (struct ns_ops):
 *   blocks         Philox4x32-10 output of consecutive blocks, stored as 16-bit
 *                  lanes in element order (the little-endian image of the words);
 *   lanes_to_bits  threshold lanes into a packed keep mask;
 *   bits_to_u8 / u8_to_bits   convert between packed and byte masks;
 *   apply_bits[dt] y = bit ? x * scale : 0 for one dtype.
 * The drivers below process arrays in L1-sized chunks: generate the lanes of a
 * chunk into a stack buffer, threshold them into packed bits, then apply.  The
 * packed-bit layout makes chunk and thread boundaries that are multiples of 64
 * elements (relative to the array start) byte- and word-aligned.
 *
 * The three paths are bit-identical: they all compute the products in the same
 * IEEE precision with round-to-nearest-even, select (never multiply) for the
 * dropped elements, and use the same float16 / bfloat16 rounding rules.
 */
#define _GNU_SOURCE 1

#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(_WIN32)
#define NS_NO_PTHREADS 1
#else
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define NS_X86 1
#include <immintrin.h>
#define NS_TARGET_AVX2 __attribute__((target("avx2,f16c")))
#define NS_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c")))
#endif

#if defined(__GNUC__) || defined(__clang__)
#define NS_ALIGN64 __attribute__((aligned(64)))
#else
#define NS_ALIGN64
#endif

/* ------------------------------------------------------------------------- */
/* Constants and tuning                                                       */
/* ------------------------------------------------------------------------- */

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u
#define PHILOX_ROUNDS 10

/* Elements per chunk (a multiple of 64); the lane buffer holds the chunk plus
 * the partial blocks and whole-vector overhang of the block generators. */
#define NS_CHUNK 4096
#define NS_LANEBUF (NS_CHUNK + 512)
/* Normal variates per chunk: two per block (four lanes each), so the same lane
 * buffer fits. */
#define NS_NCHUNK 1024

/* Below this many elements a call runs on the calling thread only. */
#define NS_PAR_MIN ((int64_t)65536)
/* Normal variates are costlier per element, so they parallelise earlier. */
#define NS_PAR_MIN_NORMAL ((int64_t)8192)
#define NS_MAX_THREADS 256

/* Round keys and stream words of one (seed, stream) pair. */
typedef struct {
    uint32_t k0[PHILOX_ROUNDS];
    uint32_t k1[PHILOX_ROUNDS];
    uint32_t s0, s1;
} ns_key;

static void key_init(ns_key *k, uint64_t seed, uint64_t stream) {
    uint32_t a = (uint32_t)seed, b = (uint32_t)(seed >> 32);
    for (int r = 0; r < PHILOX_ROUNDS; r++) {
        k->k0[r] = a;
        k->k1[r] = b;
        a += PHILOX_W0;
        b += PHILOX_W1;
    }
    k->s0 = (uint32_t)stream;
    k->s1 = (uint32_t)(stream >> 32);
}

/* The primitive table of one ISA path. */
typedef void (*ns_blocks_fn)(uint16_t *out, uint64_t b0, size_t nb, const ns_key *k);
typedef void (*ns_l2b_fn)(uint8_t *bits, const uint16_t *lanes, size_t n, uint32_t t);
typedef void (*ns_b2u_fn)(uint8_t *out, const uint8_t *bits, size_t n);
typedef void (*ns_u2b_fn)(uint8_t *bits, const uint8_t *mask, size_t n);
typedef void (*ns_apply_fn)(const void *x, void *y, const uint8_t *bits, size_t n, double scale);

typedef struct {
    /* Writes the lanes of blocks b0 .. b0 + nb - 1 to out[0 .. 8 nb); may write up
     * to 32 further blocks (out must have room for them). */
    ns_blocks_fn blocks;
    /* Writes ceil(n / 8) bytes; bits past n are 0. */
    ns_l2b_fn lanes_to_bits;
    ns_b2u_fn bits_to_u8;
    /* Writes ceil(n / 8) bytes; a nonzero byte is a set bit. */
    ns_u2b_fn u8_to_bits;
    /* Reads ceil(n / 8) bytes of bits. */
    ns_apply_fn apply_bits[NS_DTYPE_COUNT];
} ns_ops;

/* ------------------------------------------------------------------------- */
/* Scalar element helpers (shared by every path for tails and strided data)   */
/* ------------------------------------------------------------------------- */

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* IEEE binary16 -> binary32 (exact; NaNs keep sign and payload, quiet bit set). */
static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return f32_from_bits(sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0u));
    if (e != 0) return f32_from_bits(sign | ((e + 112u) << 23) | (m << 13));
    /* zero or subnormal: m * 2^-24 is exact in binary32 */
    float mag = (float)m * 0x1p-24f;
    return sign ? -mag : mag;
}

/* binary32 -> binary16, round to nearest even, subnormals included; NaNs become
 * quiet NaNs that keep the sign and the top payload bits (as F16C does). */
static inline uint16_t f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) { /* inf or NaN */
        if (a == 0x7f800000u) return (uint16_t)(sign | 0x7c00u);
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    }
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    if (a >= 0x38800000u) {                                   /* normal binary16 range */
        uint32_t h = (a - 0x38000000u) >> 13;
        uint32_t rem = a & 0x1fffu;
        h += (rem > 0x1000u) || (rem == 0x1000u && (h & 1u));
        return (uint16_t)(sign | h);
    }
    if (a <= 0x33000000u) return (uint16_t)sign; /* <= 2^-25 rounds to zero */
    /* subnormal result: units of 2^-24 */
    uint32_t e = a >> 23;
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e; /* 14 .. 23 */
    uint32_t h = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    h += (rem > half) || (rem == half && (h & 1u));
    return (uint16_t)(sign | h);
}

/* binary32 -> bfloat16 bits, round to nearest even; every NaN becomes 0x7FC0. */
static inline uint16_t f32_to_bf16(float f) {
    if (f != f) return 0x7fc0u;
    uint32_t u = f32_bits(f);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

/* One element: y = keep ? x * scale : +0, in the dtype's compute precision. */
static inline void elem_apply(int dt, const char *x, char *y, int keep, float sf, double sd) {
    switch (dt) {
    case NS_F32: {
        float v;
        memcpy(&v, x, 4);
        v = keep ? v * sf : 0.0f;
        memcpy(y, &v, 4);
        break;
    }
    case NS_F64: {
        double v;
        memcpy(&v, x, 8);
        v = keep ? v * sd : 0.0;
        memcpy(y, &v, 8);
        break;
    }
    case NS_F16: {
        uint16_t h;
        memcpy(&h, x, 2);
        h = keep ? f32_to_f16(f16_to_f32(h) * sf) : 0u;
        memcpy(y, &h, 2);
        break;
    }
    default: { /* NS_BF16 */
        uint16_t h;
        memcpy(&h, x, 2);
        h = keep ? f32_to_bf16(bf16_to_f32(h) * sf) : 0u;
        memcpy(y, &h, 2);
        break;
    }
    }
}

static inline int bit_at(const uint8_t *bits, size_t i) { return (bits[i >> 3] >> (i & 7)) & 1; }

/* Scalar tail of an apply: elements i .. n - 1. */
static inline void apply_tail(int dt, const void *x, void *y, const uint8_t *bits, size_t i, size_t n, double scale) {
    size_t sz = ns_dtype_size(dt);
    float sf = (float)scale;
    for (; i < n; i++) elem_apply(dt, (const char *)x + i * sz, (char *)y + i * sz, bit_at(bits, i), sf, scale);
}

/* Reads ceil(nbits / 8) (at most 8) bytes of a bit mask as a little-endian word. */
static inline uint64_t load_bits(const uint8_t *bits, size_t nbits) {
    size_t nbytes = nbits >= 64 ? 8 : (nbits + 7) / 8;
    uint64_t w = 0;
    for (size_t b = 0; b < nbytes; b++) w |= (uint64_t)bits[b] << (8 * b);
    return w;
}

/* ------------------------------------------------------------------------- */
/* Scalar path (portable C; also the reference for the SIMD paths)           */
/* ------------------------------------------------------------------------- */

static inline void philox_block(uint32_t w[4], uint64_t b, const ns_key *k) {
    uint32_t c0 = (uint32_t)b, c1 = (uint32_t)(b >> 32), c2 = k->s0, c3 = k->s1;
    for (int r = 0; r < PHILOX_ROUNDS; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k->k0[r];
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k->k1[r];
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
    }
    w[0] = c0;
    w[1] = c1;
    w[2] = c2;
    w[3] = c3;
}

static void blocks_scalar(uint16_t *out, uint64_t b0, size_t nb, const ns_key *k) {
    for (size_t i = 0; i < nb; i++) {
        uint32_t w[4];
        philox_block(w, b0 + i, k);
        for (int q = 0; q < 4; q++) { /* explicit lane order: endian-independent */
            out[8 * i + 2 * q] = (uint16_t)w[q];
            out[8 * i + 2 * q + 1] = (uint16_t)(w[q] >> 16);
        }
    }
}

static void l2b_scalar(uint8_t *bits, const uint16_t *lanes, size_t n, uint32_t t) {
    for (size_t i = 0; i < n; i += 8) {
        unsigned byte = 0;
        size_t m = n - i < 8 ? n - i : 8;
        for (size_t q = 0; q < m; q++) byte |= (unsigned)((uint32_t)lanes[i + q] < t) << q;
        bits[i / 8] = (uint8_t)byte;
    }
}

static void b2u_scalar(uint8_t *out, const uint8_t *bits, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = (uint8_t)bit_at(bits, i);
}

static void u2b_scalar(uint8_t *bits, const uint8_t *mask, size_t n) {
    for (size_t i = 0; i < n; i += 8) {
        unsigned byte = 0;
        size_t m = n - i < 8 ? n - i : 8;
        for (size_t q = 0; q < m; q++) byte |= (unsigned)(mask[i + q] != 0) << q;
        bits[i / 8] = (uint8_t)byte;
    }
}

static void apply_f32_scalar(const void *x, void *y, const uint8_t *bits, size_t n, double scale) {
    const float *xs = x;
    float *ys = y;
    float sf = (float)scale;
    for (size_t i = 0; i < n; i++) { /* branch-free select: product bits AND all-ones / zero */
        uint32_t u = f32_bits(xs[i] * sf) & (0u - (uint32_t)bit_at(bits, i));
        ys[i] = f32_from_bits(u);
    }
}

static void apply_f64_scalar(const void *x, void *y, const uint8_t *bits, size_t n, double scale) {
    const double *xs = x;
    double *ys = y;
    for (size_t i = 0; i < n; i++) {
        double p = xs[i] * scale;
        uint64_t u;
        memcpy(&u, &p, 8);
        u &= 0u - (uint64_t)bit_at(bits, i);
        memcpy(ys + i, &u, 8);
    }
}

static void apply_f16_scalar(const void *x, void *y, const uint8_t *bits, size_t n, double scale) {
    apply_tail(NS_F16, x, y, bits, 0, n, scale);
}

static void apply_bf16_scalar(const void *x, void *y, const uint8_t *bits, size_t n, double scale) {
    apply_tail(NS_BF16, x, y, bits, 0, n, scale);
}

static const ns_ops ops_scalar = {
    blocks_scalar,
    l2b_scalar,
    b2u_scalar,
    u2b_scalar,
    {apply_f32_scalar, apply_f64_scalar, apply_f16_scalar, apply_bf16_scalar},
};

#ifdef NS_X86

/* ------------------------------------------------------------------------- */
/* AVX2 path (+F16C): 8 blocks per vector                                    */
/* ------------------------------------------------------------------------- */

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
    if (i < n) l2b_scalar(bits + i / 8, lanes + i, n - i, t);
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
    if (i < n) u2b_scalar(bits + i / 8, mask + i, n - i);
}

/* All-ones lanes where bit q of byte b is set, for 8 x 32-bit lanes. */
#define AVX2_MASK8(b) _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)(b)), sel), sel)

NS_TARGET_AVX2 static void apply_f32_avx2(const void *x, void *y, const uint8_t *bits, size_t n, double scale) {
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

NS_TARGET_AVX2 static void apply_f64_avx2(const void *x, void *y, const uint8_t *bits, size_t n, double scale) {
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

static const ns_ops ops_avx2 = {
    blocks_avx2,
    l2b_avx2,
    b2u_avx2,
    u2b_avx2,
    {apply_f32_avx2, apply_f64_avx2, apply_f16_avx2, apply_bf16_avx2},
};

/* ------------------------------------------------------------------------- */
/* AVX-512 path (F + BW + VL): 16 blocks per vector                          */
/* ------------------------------------------------------------------------- */

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

/* Mask of the low r (0..64) bits. */
static inline uint64_t low_bits(size_t r) { return r >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << r) - 1u); }

NS_TARGET_AVX512 static void l2b_avx512(uint8_t *bits, const uint16_t *lanes, size_t n, uint32_t t) {
    if (t == 0) {
        memset(bits, 0, (n + 7) / 8);
        return;
    }
    const __m512i tm1 = _mm512_set1_epi16((short)(uint16_t)(t - 1)); /* lane < t <=> lane <= t - 1 */
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        uint64_t lo = _mm512_cmple_epu16_mask(_mm512_loadu_si512((const void *)(lanes + i)), tm1);
        uint64_t hi = _mm512_cmple_epu16_mask(_mm512_loadu_si512((const void *)(lanes + i + 32)), tm1);
        uint64_t w = lo | hi << 32;
        memcpy(bits + i / 8, &w, 8);
    }
    if (i < n) {
        size_t r = n - i;
        uint64_t lm = low_bits(r);
        __mmask32 k0 = (__mmask32)lm, k1 = (__mmask32)(lm >> 32);
        uint64_t lo = _mm512_mask_cmple_epu16_mask(k0, _mm512_maskz_loadu_epi16(k0, lanes + i), tm1);
        uint64_t hi = _mm512_mask_cmple_epu16_mask(k1, _mm512_maskz_loadu_epi16(k1, lanes + i + 32), tm1);
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
        _mm512_storeu_si512((void *)(out + i), _mm512_maskz_mov_epi8(w, one));
    }
    if (i < n) {
        size_t r = n - i;
        uint64_t w = load_bits(bits + i / 8, r);
        _mm512_mask_storeu_epi8(out + i, low_bits(r), _mm512_maskz_mov_epi8(w, one));
    }
}

NS_TARGET_AVX512 static void u2b_avx512(uint8_t *bits, const uint8_t *mask, size_t n) {
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512i v = _mm512_loadu_si512((const void *)(mask + i));
        uint64_t w = _mm512_test_epi8_mask(v, v);
        memcpy(bits + i / 8, &w, 8);
    }
    if (i < n) {
        size_t r = n - i;
        __m512i v = _mm512_maskz_loadu_epi8(low_bits(r), mask + i);
        uint64_t w = _mm512_test_epi8_mask(v, v);
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
                _mm256_storeu_si256((__m256i *)(ys + i + 16 * q), STEP(h, (__mmask16)(w >> (16 * q)), sv));       \
            }                                                                                                      \
        }                                                                                                          \
        if (i < n) {                                                                                               \
            size_t r = n - i;                                                                                      \
            uint64_t w = load_bits(bits + i / 8, r), lm = low_bits(r);                                             \
            for (size_t q = 0; 16 * q < r; q++) {                                                                  \
                __mmask16 l = (__mmask16)(lm >> (16 * q)), k = (__mmask16)(w >> (16 * q)) & l;                     \
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

static const ns_ops ops_avx512 = {
    blocks_avx512,
    l2b_avx512,
    b2u_avx512,
    u2b_avx512,
    {apply_f32_avx2, apply_f64_avx2, apply_f16_avx512, apply_bf16_avx512},
};

#endif /* NS_X86 */

/* ------------------------------------------------------------------------- */
/* Dispatch                                                                   */
/* ------------------------------------------------------------------------- */

static const char *const isa_names[NS_ISA_COUNT] = {"scalar", "avx2", "avx512"};

const char *ns_isa_name(int isa) { return (isa >= 0 && isa < NS_ISA_COUNT) ? isa_names[isa] : "?"; }

int ns_isa_available(int isa) {
    if (isa == NS_ISA_SCALAR) return 1;
#ifdef NS_X86
    __builtin_cpu_init();
    if (isa == NS_ISA_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
    if (isa == NS_ISA_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("f16c");
#endif
    return 0;
}

int ns_best_isa(void) {
    for (int isa = NS_ISA_COUNT - 1; isa > 0; isa--)
        if (ns_isa_available(isa)) return isa;
    return NS_ISA_SCALAR;
}

static const ns_ops *get_ops(int isa) {
#ifdef NS_X86
    if (isa == NS_ISA_AVX512 && ns_isa_available(NS_ISA_AVX512)) return &ops_avx512;
    if (isa == NS_ISA_AVX2 && ns_isa_available(NS_ISA_AVX2)) return &ops_avx2;
#else
    (void)isa;
#endif
    return &ops_scalar;
}

size_t ns_dtype_size(int dtype) {
    switch (dtype) {
    case NS_F32: return 4;
    case NS_F64: return 8;
    case NS_F16:
    case NS_BF16: return 2;
    default: return 0;
    }
}

/* ------------------------------------------------------------------------- */
/* Threads                                                                    */
/* ------------------------------------------------------------------------- */

int ns_default_threads(void) {
#if defined(NS_NO_PTHREADS)
    return 1;
#else
#if defined(__linux__) && defined(CPU_COUNT)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int c = CPU_COUNT(&set);
        if (c > 0) return c;
    }
#endif
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c > 0 ? (int)(c < NS_MAX_THREADS ? c : NS_MAX_THREADS) : 1;
#endif
}

typedef void (*ns_range_fn)(void *ctx, int64_t begin, int64_t end);

#ifndef NS_NO_PTHREADS
/* A parallel loop shared by the calling thread and its helpers.  Work is handed
 * out in chunks from an atomic counter, so a helper that starts late (thread
 * start-up can take milliseconds on a busy or virtualised machine) only takes
 * what is left, and the caller never waits for a helper that has no work.  The
 * job lives on the heap and is freed by its last user: helpers are detached and
 * touch the caller's context only while a chunk they claimed is unfinished,
 * which the caller waits for. */
typedef struct {
    ns_range_fn fn;
    void *ctx;
    int64_t n, grain, nchunks;
    atomic_llong next; /* next chunk to claim */
    atomic_llong done; /* chunks finished */
    atomic_int refs;   /* the caller plus every started helper */
    pthread_mutex_t mu;
    pthread_cond_t cv;
} ns_job;

static void job_work(ns_job *j) {
    for (;;) {
        int64_t c = atomic_fetch_add(&j->next, 1);
        if (c >= j->nchunks) return;
        int64_t b = c * j->grain, e = b + j->grain < j->n ? b + j->grain : j->n;
        j->fn(j->ctx, b, e);
        if (atomic_fetch_add(&j->done, 1) + 1 == j->nchunks) {
            pthread_mutex_lock(&j->mu);
            pthread_cond_signal(&j->cv);
            pthread_mutex_unlock(&j->mu);
        }
    }
}

static void job_release(ns_job *j) {
    if (atomic_fetch_sub(&j->refs, 1) == 1) {
        pthread_cond_destroy(&j->cv);
        pthread_mutex_destroy(&j->mu);
        free(j);
    }
}

static void *helper_main(void *p) {
    job_work(p);
    job_release(p);
    return NULL;
}

/* A pool of helper threads that live as long as the process and sleep between
 * jobs, so a call pays a wake-up instead of a thread start.  One caller at a
 * time offers its job to the pool (others start helpers of their own, as
 * above).  A helper takes a reference to the offered job under pool_mu, and the
 * caller withdraws the offer under pool_mu before dropping its own reference,
 * so a helper that wakes late finds either a live job or none. */
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cv = PTHREAD_COND_INITIALIZER;
static ns_job *pool_job;     /* the job on offer, or NULL */
static unsigned long pool_gen; /* bumped for every offer */
static int pool_offers;      /* helpers the offered job still wants */
static int pool_size;        /* helpers started */
static atomic_flag pool_busy = ATOMIC_FLAG_INIT;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void *pool_main(void *unused) {
    (void)unused;
    pthread_mutex_lock(&pool_mu);
    unsigned long seen = pool_gen;
    for (;;) {
        while (pool_gen == seen) pthread_cond_wait(&pool_cv, &pool_mu);
        seen = pool_gen;
        ns_job *j = pool_job;
        if (!j || pool_offers <= 0) continue;
        pool_offers--;
        atomic_fetch_add(&j->refs, 1);
        pthread_mutex_unlock(&pool_mu);
        job_work(j);
        job_release(j);
        pthread_mutex_lock(&pool_mu);
    }
    return NULL;
}

/* In a child process after fork() the helpers do not exist: start afresh. */
static void pool_after_fork(void) {
    pthread_mutex_init(&pool_mu, NULL);
    pthread_cond_init(&pool_cv, NULL);
    pool_job = NULL;
    pool_offers = 0;
    pool_size = 0;
    atomic_flag_clear(&pool_busy);
}

static void pool_init(void) { pthread_atfork(NULL, NULL, pool_after_fork); }

/* Offers j to `want` pool helpers (starting missing ones); returns 0 if the
 * pool is in use by another caller. */
static int pool_offer(ns_job *j, int want) {
    if (atomic_flag_test_and_set(&pool_busy)) return 0;
    pthread_once(&pool_once, pool_init);
    pthread_mutex_lock(&pool_mu);
    while (pool_size < want) {
        pthread_attr_t attr;
        if (pthread_attr_init(&attr) != 0) break;
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, (size_t)1 << 20);
        pthread_t th;
        int rc = pthread_create(&th, &attr, pool_main, NULL);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        pool_size++;
    }
    pool_job = j;
    pool_offers = want;
    pool_gen++;
    pthread_cond_broadcast(&pool_cv);
    pthread_mutex_unlock(&pool_mu);
    return 1;
}

static void pool_withdraw(void) {
    pthread_mutex_lock(&pool_mu);
    pool_job = NULL;
    pool_offers = 0;
    pthread_mutex_unlock(&pool_mu);
    atomic_flag_clear(&pool_busy);
}
#endif

/* Runs fn over [0, n) on up to nthreads threads (the caller included), in
 * chunks whose boundaries are multiples of `align`; one thread when
 * n < min_par.  Falls back to the calling thread alone if helpers cannot be
 * created. */
static void parallel_for(ns_range_fn fn, void *ctx, int64_t n, int64_t align, int64_t min_par, int nthreads) {
    if (n <= 0) return;
    int64_t nt = nthreads > 0 ? nthreads : ns_default_threads();
    int64_t units = (n + align - 1) / align;
    if (n < min_par) nt = 1;
    if (nt > units) nt = units;
    if (nt > NS_MAX_THREADS) nt = NS_MAX_THREADS;
#ifndef NS_NO_PTHREADS
    ns_job *j = nt > 1 ? malloc(sizeof *j) : NULL;
    if (j) {
        /* about 16 chunks per thread balance late starters without much overhead */
        int64_t per = (units + 16 * nt - 1) / (16 * nt);
        j->fn = fn;
        j->ctx = ctx;
        j->n = n;
        j->grain = per * align;
        j->nchunks = (n + j->grain - 1) / j->grain;
        atomic_init(&j->next, 0);
        atomic_init(&j->done, 0);
        atomic_init(&j->refs, 1);
        pthread_mutex_init(&j->mu, NULL);
        pthread_cond_init(&j->cv, NULL);
        int pooled = pool_offer(j, (int)(nt - 1));
        if (!pooled) {
            pthread_attr_t attr;
            int attr_ok = pthread_attr_init(&attr) == 0;
            if (attr_ok) {
                pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
                pthread_attr_setstacksize(&attr, (size_t)1 << 20);
            }
            for (int64_t i = 1; i < nt && attr_ok; i++) {
                pthread_t th;
                atomic_fetch_add(&j->refs, 1);
                if (pthread_create(&th, &attr, helper_main, j) != 0) {
                    atomic_fetch_sub(&j->refs, 1);
                    break;
                }
            }
            if (attr_ok) pthread_attr_destroy(&attr);
        }
        job_work(j);
        pthread_mutex_lock(&j->mu);
        while (atomic_load(&j->done) < j->nchunks) pthread_cond_wait(&j->cv, &j->mu);
        pthread_mutex_unlock(&j->mu);
        if (pooled) pool_withdraw();
        job_release(j);
        return;
    }
#else
    (void)align;
#endif
    fn(ctx, 0, n);
}

/* ------------------------------------------------------------------------- */
/* Mask drivers                                                               */
/* ------------------------------------------------------------------------- */

/* Lanes of elements j .. j + len - 1 (len >= 1) generated into buf (NS_LANEBUF
 * lanes, len <= NS_CHUNK); returns the pointer to element j's lane. */
static const uint16_t *gen_lanes(const ns_ops *ops, uint16_t *buf, const ns_key *k, uint64_t j, size_t len) {
    uint64_t b0 = j >> 3, b1 = (j + (len - 1)) >> 3;
    ops->blocks(buf, b0, (size_t)(b1 - b0 + 1), k);
    return buf + (j & 7);
}

typedef struct {
    const ns_ops *ops;
    ns_key key;
    uint64_t j0;
    uint32_t t;
    int kind; /* 0 lanes, 1 byte mask, 2 packed mask */
    void *out;
} mask_ctx;

static void mask_range(void *p, int64_t begin, int64_t end) {
    const mask_ctx *c = p;
    NS_ALIGN64 uint16_t lanebuf[NS_LANEBUF];
    NS_ALIGN64 uint8_t bitbuf[NS_CHUNK / 8];
    for (int64_t i = begin; i < end; i += NS_CHUNK) {
        size_t len = (size_t)(end - i < NS_CHUNK ? end - i : NS_CHUNK);
        const uint16_t *ln = gen_lanes(c->ops, lanebuf, &c->key, c->j0 + (uint64_t)i, len);
        if (c->kind == 0) {
            memcpy((uint16_t *)c->out + i, ln, len * sizeof(uint16_t));
        } else if (c->kind == 1) {
            c->ops->lanes_to_bits(bitbuf, ln, len, c->t);
            c->ops->bits_to_u8((uint8_t *)c->out + i, bitbuf, len);
        } else {
            c->ops->lanes_to_bits((uint8_t *)c->out + i / 8, ln, len, c->t);
        }
    }
}

static void run_mask(int isa, int kind, void *out, size_t n, uint64_t seed, uint64_t stream, uint64_t j0, uint32_t t,
                     int nthreads) {
    mask_ctx c;
    c.ops = get_ops(isa);
    key_init(&c.key, seed, stream);
    c.j0 = j0;
    c.t = t;
    c.kind = kind;
    c.out = out;
    parallel_for(mask_range, &c, (int64_t)n, 64, NS_PAR_MIN, nthreads);
}

void ns_lanes(int isa, uint16_t *out, size_t n, uint64_t seed, uint64_t stream, uint64_t j0, int nthreads) {
    run_mask(isa, 0, out, n, seed, stream, j0, 0, nthreads);
}

void ns_keep_mask(int isa, uint8_t *out, size_t n, uint64_t seed, uint64_t stream, uint64_t j0, uint32_t t,
                  int nthreads) {
    run_mask(isa, 1, out, n, seed, stream, j0, t, nthreads);
}

void ns_pack_mask(int isa, uint8_t *out, size_t n, uint64_t seed, uint64_t stream, uint64_t j0, uint32_t t,
                  int nthreads) {
    run_mask(isa, 2, out, n, seed, stream, j0, t, nthreads);
}

/* ------------------------------------------------------------------------- */
/* Dropout and apply_bits                                                     */
/* ------------------------------------------------------------------------- */

typedef struct {
    const ns_ops *ops;
    ns_key key;
    int dtype;
    size_t size;
    const char *x;
    char *y;
    uint8_t *bits; /* output mask (dropout) or NULL */
    const uint8_t *in_bits; /* input mask (apply_bits) */
    uint64_t j0;
    uint32_t t;
    double scale;
} apply_ctx;

static void dropout_range(void *p, int64_t begin, int64_t end) {
    const apply_ctx *c = p;
    NS_ALIGN64 uint16_t lanebuf[NS_LANEBUF];
    NS_ALIGN64 uint8_t bitbuf[NS_CHUNK / 8];
    ns_apply_fn apply = c->ops->apply_bits[c->dtype];
    for (int64_t i = begin; i < end; i += NS_CHUNK) {
        size_t len = (size_t)(end - i < NS_CHUNK ? end - i : NS_CHUNK);
        const uint16_t *ln = gen_lanes(c->ops, lanebuf, &c->key, c->j0 + (uint64_t)i, len);
        c->ops->lanes_to_bits(bitbuf, ln, len, c->t);
        if (c->bits) memcpy(c->bits + i / 8, bitbuf, (len + 7) / 8);
        apply(c->x + (size_t)i * c->size, c->y + (size_t)i * c->size, bitbuf, len, c->scale);
    }
}

void ns_dropout(int isa, int dtype, const void *x, void *y, size_t n, uint64_t seed, uint64_t stream, uint64_t j0,
                uint32_t t, double scale, uint8_t *bits, int nthreads) {
    apply_ctx c;
    memset(&c, 0, sizeof c);
    c.ops = get_ops(isa);
    key_init(&c.key, seed, stream);
    c.dtype = dtype;
    c.size = ns_dtype_size(dtype);
    c.x = x;
    c.y = y;
    c.bits = bits;
    c.j0 = j0;
    c.t = t;
    c.scale = scale;
    parallel_for(dropout_range, &c, (int64_t)n, 64, NS_PAR_MIN, nthreads);
}

static void apply_bits_range(void *p, int64_t begin, int64_t end) {
    const apply_ctx *c = p;
    c->ops->apply_bits[c->dtype](c->x + (size_t)begin * c->size, c->y + (size_t)begin * c->size,
                                 c->in_bits + begin / 8, (size_t)(end - begin), c->scale);
}

void ns_apply_bits(int isa, int dtype, const void *x, void *y, const uint8_t *bits, size_t n, double scale,
                   int nthreads) {
    apply_ctx c;
    memset(&c, 0, sizeof c);
    c.ops = get_ops(isa);
    c.dtype = dtype;
    c.size = ns_dtype_size(dtype);
    c.x = x;
    c.y = y;
    c.in_bits = bits;
    c.scale = scale;
    parallel_for(apply_bits_range, &c, (int64_t)n, 64, NS_PAR_MIN, nthreads);
}

/* ------------------------------------------------------------------------- */
/* apply_mask: strided broadcast select-multiply                              */
/* ------------------------------------------------------------------------- */

typedef struct {
    const ns_ops *ops;
    int dtype;
    size_t size;
    const char *x;
    char *y;
    const uint8_t *m;
    int nouter;                                 /* number of outer axes */
    int64_t shape[NS_MAX_DIMS];                 /* outer axes */
    int64_t xs[NS_MAX_DIMS], ys[NS_MAX_DIMS], ms[NS_MAX_DIMS];
    int64_t inner, xi, yi, mi;                  /* innermost axis */
    int64_t rows;
    int split_rows; /* threads split rows (1) or the inner axis (0) */
    double scale;
} mask_apply_ctx;

/* Elements i0 .. i1 - 1 of one row whose first elements are at xp, yp, mp. */
static void mask_row(const mask_apply_ctx *c, const char *xp, char *yp, const uint8_t *mp, int64_t i0, int64_t i1,
                     const uint8_t *ones) {
    size_t sz = c->size;
    if (c->xi == 1 && c->yi == 1 && (c->mi == 0 || c->mi == 1)) {
        ns_apply_fn apply = c->ops->apply_bits[c->dtype];
        if (c->mi == 0 && !*mp) {
            memset(yp + (size_t)i0 * sz, 0, (size_t)(i1 - i0) * sz); /* +0 in every dtype */
            return;
        }
        NS_ALIGN64 uint8_t bitbuf[NS_CHUNK / 8];
        for (int64_t i = i0; i < i1; i += NS_CHUNK) {
            size_t len = (size_t)(i1 - i < NS_CHUNK ? i1 - i : NS_CHUNK);
            const uint8_t *bits = ones;
            if (c->mi == 1) {
                c->ops->u8_to_bits(bitbuf, mp + i, len);
                bits = bitbuf;
            }
            apply(xp + (size_t)i * sz, yp + (size_t)i * sz, bits, len, c->scale);
        }
        return;
    }
    float sf = (float)c->scale;
    for (int64_t i = i0; i < i1; i++)
        elem_apply(c->dtype, xp + (ptrdiff_t)(i * c->xi) * (ptrdiff_t)sz, yp + (ptrdiff_t)(i * c->yi) * (ptrdiff_t)sz,
                   mp[i * c->mi] != 0, sf, c->scale);
}

static void mask_apply_range(void *p, int64_t begin, int64_t end) {
    const mask_apply_ctx *c = p;
    /* all-ones packed mask of one chunk, for rows broadcast from a kept mask element */
    NS_ALIGN64 uint8_t ones[NS_CHUNK / 8];
    memset(ones, 0xff, sizeof ones);
    int64_t r0 = 0, r1 = c->rows, i0 = 0, i1 = c->inner;
    if (c->split_rows) {
        r0 = begin;
        r1 = end;
    } else {
        i0 = begin;
        i1 = end;
    }
    /* odometer over the outer axes, starting at row r0 */
    int64_t idx[NS_MAX_DIMS];
    int64_t ox = 0, oy = 0, om = 0, r = r0;
    for (int d = c->nouter - 1; d >= 0; d--) {
        idx[d] = r % c->shape[d];
        r /= c->shape[d];
        ox += idx[d] * c->xs[d];
        oy += idx[d] * c->ys[d];
        om += idx[d] * c->ms[d];
    }
    ptrdiff_t sz = (ptrdiff_t)c->size;
    for (int64_t row = r0; row < r1; row++) {
        mask_row(c, c->x + ox * sz, c->y + oy * sz, c->m + om, i0, i1, ones);
        for (int d = c->nouter - 1; d >= 0; d--) {
            ox += c->xs[d];
            oy += c->ys[d];
            om += c->ms[d];
            if (++idx[d] < c->shape[d]) break;
            ox -= c->xs[d] * c->shape[d];
            oy -= c->ys[d] * c->shape[d];
            om -= c->ms[d] * c->shape[d];
            idx[d] = 0;
        }
    }
}

void ns_apply_mask(int isa, int dtype, const void *x, void *y, const uint8_t *mask, int ndim, const int64_t *shape,
                   const int64_t *x_strides, const int64_t *y_strides, const int64_t *m_strides, double scale,
                   int nthreads) {
    mask_apply_ctx c;
    memset(&c, 0, sizeof c);
    c.ops = get_ops(isa);
    c.dtype = dtype;
    c.size = ns_dtype_size(dtype);
    c.x = x;
    c.y = y;
    c.m = mask;
    c.scale = scale;

    /* Normalise: drop axes of length 1, merge adjacent axes that are contiguous
     * in all three operands.  An empty result is a single element. */
    int64_t sh[NS_MAX_DIMS], xs[NS_MAX_DIMS], ys[NS_MAX_DIMS], ms[NS_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 0) return;
        if (shape[d] == 1) continue;
        if (nd > 0 && xs[nd - 1] == x_strides[d] * shape[d] && ys[nd - 1] == y_strides[d] * shape[d] &&
            ms[nd - 1] == m_strides[d] * shape[d]) {
            sh[nd - 1] *= shape[d];
            xs[nd - 1] = x_strides[d];
            ys[nd - 1] = y_strides[d];
            ms[nd - 1] = m_strides[d];
            continue;
        }
        sh[nd] = shape[d];
        xs[nd] = x_strides[d];
        ys[nd] = y_strides[d];
        ms[nd] = m_strides[d];
        nd++;
    }
    if (nd == 0) {
        sh[0] = 1;
        xs[0] = ys[0] = 1;
        ms[0] = 0;
        nd = 1;
    }
    c.nouter = nd - 1;
    c.rows = 1;
    for (int d = 0; d < nd - 1; d++) {
        c.shape[d] = sh[d];
        c.xs[d] = xs[d];
        c.ys[d] = ys[d];
        c.ms[d] = ms[d];
        c.rows *= sh[d];
    }
    c.inner = sh[nd - 1];
    c.xi = xs[nd - 1];
    c.yi = ys[nd - 1];
    c.mi = ms[nd - 1];
    if (c.inner == 1) { /* a one-element row: its strides do not matter */
        c.xi = c.yi = 1;
        c.mi = 0;
    }

    int64_t total = c.rows * c.inner;
    int nt = nthreads > 0 ? nthreads : ns_default_threads();
    if (total < NS_PAR_MIN) nt = 1;
    c.split_rows = c.rows >= nt || c.inner < 64 * (int64_t)nt;
    if (c.split_rows)
        parallel_for(mask_apply_range, &c, c.rows, 1, 0, nt);
    else
        parallel_for(mask_apply_range, &c, c.inner, 64, 0, nt);
}

/* ------------------------------------------------------------------------- */
/* Normal variates                                                            */
/* ------------------------------------------------------------------------- */

typedef struct {
    const ns_ops *ops;
    ns_key key;
    uint64_t j0;
    int dtype;
    void *out;
} normal_ctx;

static void normal_range(void *p, int64_t begin, int64_t end) {
    const normal_ctx *c = p;
    NS_ALIGN64 uint16_t lanebuf[NS_LANEBUF];
    const double two_pi = 6.283185307179586; /* 2 * pi rounded to double, as 2.0 * np.pi */
    for (int64_t i = begin; i < end; i += NS_NCHUNK) {
        size_t len = (size_t)(end - i < NS_NCHUNK ? end - i : NS_NCHUNK);
        uint64_t j = c->j0 + (uint64_t)i;
        uint64_t b0 = j >> 1, b1 = (j + (len - 1)) >> 1;
        c->ops->blocks(lanebuf, b0, (size_t)(b1 - b0 + 1), &c->key);
        const uint16_t *pairs = lanebuf + 4 * (j & 1); /* 4 lanes per word pair */
        for (size_t q = 0; q < len; q++) {
            const uint16_t *w = pairs + 4 * q;
            uint32_t a = (uint32_t)w[0] | (uint32_t)w[1] << 16;
            uint32_t b = (uint32_t)w[2] | (uint32_t)w[3] << 16;
            double u1 = ((double)a + 0.5) * 0x1p-32;
            double u2 = (double)b * 0x1p-32;
            double z = sqrt(-2.0 * log(u1)) * cos(two_pi * u2);
            if (c->dtype == NS_F64)
                ((double *)c->out)[i + (int64_t)q] = z;
            else
                ((float *)c->out)[i + (int64_t)q] = (float)z;
        }
    }
}

void ns_normal(int isa, void *out, int out_dtype, size_t n, uint64_t seed, uint64_t stream, uint64_t j0,
               int nthreads) {
    normal_ctx c;
    c.ops = get_ops(isa);
    key_init(&c.key, seed, stream);
    c.j0 = j0;
    c.dtype = out_dtype;
    c.out = out;
    parallel_for(normal_range, &c, (int64_t)n, 64, NS_PAR_MIN_NORMAL, nthreads);
}
