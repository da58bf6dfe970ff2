/*
 * Philox4x32-10 (Salmon et al., 2011): the round keys of a (seed, stream) pair
 * and the scalar block function, the reference for the vector paths.
 *
 *   key     = (seed & 0xffffffff, seed >> 32)
 *   counter = (b & 0xffffffff, b >> 32, stream & 0xffffffff, stream >> 32)
 */
#ifndef NOISESHAPE_PHILOX_H
#define NOISESHAPE_PHILOX_H

#include <stdint.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u
#define PHILOX_ROUNDS 10

/* Round keys and stream words of one (seed, stream) pair. */
typedef struct {
    uint32_t k0[PHILOX_ROUNDS];
    uint32_t k1[PHILOX_ROUNDS];
    uint32_t s0, s1;
} ns_key;

static inline void key_init(ns_key *k, uint64_t seed, uint64_t stream) {
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

/* The four output words of block b. */
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

#endif /* NOISESHAPE_PHILOX_H */
