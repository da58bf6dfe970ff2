/* Mask and dropout drivers: lanes, keep masks, packed masks, dropout, apply_bits. */
#include "core.h"

/* ------------------------------------------------------------------------- */
/* Mask drivers                                                              */
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
    c.ops = ns_get_ops(isa);
    key_init(&c.key, seed, stream);
    c.j0 = j0;
    c.t = t;
    c.kind = kind;
    c.out = out;
    ns_parallel_for(mask_range, &c, (int64_t)n, 64, NS_PAR_MIN, nthreads);
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
/* Dropout and apply_bits                                                    */
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
    c.ops = ns_get_ops(isa);
    key_init(&c.key, seed, stream);
    c.dtype = dtype;
    c.size = ns_dtype_size(dtype);
    c.x = x;
    c.y = y;
    c.bits = bits;
    c.j0 = j0;
    c.t = t;
    c.scale = scale;
    if (y != x) ns_advise_output(y, n * c.size);
    ns_parallel_for(dropout_range, &c, (int64_t)n, 64, NS_PAR_MIN, nthreads);
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
    c.ops = ns_get_ops(isa);
    c.dtype = dtype;
    c.size = ns_dtype_size(dtype);
    c.x = x;
    c.y = y;
    c.in_bits = bits;
    c.scale = scale;
    if (y != x) ns_advise_output(y, n * c.size);
    ns_parallel_for(apply_bits_range, &c, (int64_t)n, 64, NS_PAR_MIN, nthreads);
}
