/* Standard normal variates (Box-Muller, one variate per pair of Philox words). */
#include "core.h"

#include <math.h>

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
            size_t at = (size_t)i + q;
            if (c->dtype == NS_F64) {
                memcpy((char *)c->out + 8 * at, &z, 8);
            } else {
                float f = (float)z;
                memcpy((char *)c->out + 4 * at, &f, 4);
            }
        }
    }
}

void ns_normal(int isa, void *out, int out_dtype, size_t n, uint64_t seed, uint64_t stream, uint64_t j0,
               int nthreads) {
    normal_ctx c;
    c.ops = ns_get_ops(isa);
    key_init(&c.key, seed, stream);
    c.j0 = j0;
    c.dtype = out_dtype;
    c.out = out;
    ns_parallel_for(normal_range, &c, (int64_t)n, 64, NS_PAR_MIN_NORMAL, nthreads);
}
