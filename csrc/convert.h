/*
 * Element helpers shared by every path for tails and strided data: float16 and
 * bfloat16 conversions, one-element apply, bit-mask reads.  Loads and stores go
 * through memcpy, so data at any byte address is fine.
 */
#ifndef NOISESHAPE_CONVERT_H
#define NOISESHAPE_CONVERT_H

#include "kernels.h"

#include <stdint.h>
#include <string.h>

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

/* Element i of an array at any byte address (memcpy compiles to one plain load
 * or store; a typed dereference of a misaligned pointer is undefined). */
static inline float load_f32(const void *base, size_t i) {
    float v;
    memcpy(&v, (const char *)base + 4 * i, 4);
    return v;
}

static inline void store_u32(void *base, size_t i, uint32_t u) { memcpy((char *)base + 4 * i, &u, 4); }

static inline double load_f64(const void *base, size_t i) {
    double v;
    memcpy(&v, (const char *)base + 8 * i, 8);
    return v;
}

static inline void store_u64(void *base, size_t i, uint64_t u) { memcpy((char *)base + 8 * i, &u, 8); }

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

/* y[i] = mask[i] ? x[i] * scale : +0 for i in [i0, n), branch-free (the byte-mask kernels' scalar
 * form and their vector paths' tails): the product's bits AND all-ones or zero. */
static inline void apply_u8_f32_from(const void *x, void *y, const uint8_t *mask, size_t i0, size_t n, double scale) {
    float sf = (float)scale;
    for (size_t i = i0; i < n; i++) store_u32(y, i, f32_bits(load_f32(x, i) * sf) & (0u - (uint32_t)(mask[i] != 0)));
}

static inline void apply_u8_f64_from(const void *x, void *y, const uint8_t *mask, size_t i0, size_t n, double scale) {
    for (size_t i = i0; i < n; i++) {
        double p = load_f64(x, i) * scale;
        uint64_t u;
        memcpy(&u, &p, 8);
        store_u64(y, i, u & (0u - (uint64_t)(mask[i] != 0)));
    }
}

/* Reads ceil(nbits / 8) (at most 8) bytes of a bit mask as a little-endian word. */
static inline uint64_t load_bits(const uint8_t *bits, size_t nbits) {
    size_t nbytes = nbits >= 64 ? 8 : (nbits + 7) / 8;
    uint64_t w = 0;
    for (size_t b = 0; b < nbytes; b++) w |= (uint64_t)bits[b] << (8 * b);
    return w;
}

#endif /* NOISESHAPE_CONVERT_H */
