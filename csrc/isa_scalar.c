/* The scalar path: portable C, also the reference for the SIMD paths. */
#include "convert.h"
#include "core.h"

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

void ns_l2b_scalar(uint8_t *bits, const uint16_t *lanes, size_t n, uint32_t t) {
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

void ns_u2b_scalar(uint8_t *bits, const uint8_t *mask, size_t n) {
    for (size_t i = 0; i < n; i += 8) {
        unsigned byte = 0;
        size_t m = n - i < 8 ? n - i : 8;
        for (size_t q = 0; q < m; q++) byte |= (unsigned)(mask[i + q] != 0) << q;
        bits[i / 8] = (uint8_t)byte;
    }
}

static void apply_f32_scalar(const void *x, void *y, const uint8_t *bits, size_t n, double scale) {
    float sf = (float)scale;
    for (size_t i = 0; i < n; i++) /* branch-free select: product bits AND all-ones / zero */
        store_u32(y, i, f32_bits(load_f32(x, i) * sf) & (0u - (uint32_t)bit_at(bits, i)));
}

static void apply_f64_scalar(const void *x, void *y, const uint8_t *bits, size_t n, double scale) {
    for (size_t i = 0; i < n; i++) {
        double p = load_f64(x, i) * scale;
        uint64_t u;
        memcpy(&u, &p, 8);
        store_u64(y, i, u & (0u - (uint64_t)bit_at(bits, i)));
    }
}

static void apply_f16_scalar(const void *x, void *y, const uint8_t *bits, size_t n, double scale) {
    apply_tail(NS_F16, x, y, bits, 0, n, scale);
}

static void apply_bf16_scalar(const void *x, void *y, const uint8_t *bits, size_t n, double scale) {
    apply_tail(NS_BF16, x, y, bits, 0, n, scale);
}

static void apply_u8_f32_scalar(const void *x, void *y, const uint8_t *mask, size_t n, double scale) {
    apply_u8_f32_from(x, y, mask, 0, n, scale);
}

static void apply_u8_f64_scalar(const void *x, void *y, const uint8_t *mask, size_t n, double scale) {
    apply_u8_f64_from(x, y, mask, 0, n, scale);
}

const ns_ops ns_ops_scalar = {
    blocks_scalar,
    ns_l2b_scalar,
    b2u_scalar,
    ns_u2b_scalar,
    {apply_f32_scalar, apply_f64_scalar, apply_f16_scalar, apply_bf16_scalar},
    {apply_u8_f32_scalar, apply_u8_f64_scalar, NULL, NULL},
};
