/*
 * Internals shared by the C kernels (kernels.h is the public API).
 *
 * Structure
 * ---------
 * Every ISA path provides a small table of primitives (struct ns_ops):
 *   blocks         Philox4x32-10 output of consecutive blocks, stored as 16-bit
 *                  lanes in element order (the little-endian image of the words);
 *   lanes_to_bits  threshold lanes into a packed keep mask;
 *   bits_to_u8 / u8_to_bits   convert between packed and byte masks;
 *   apply_bits[dt] y = bit ? x * scale : 0 for one dtype.
 * The drivers process arrays in L1-sized chunks: generate the lanes of a chunk
 * into a stack buffer, threshold them into packed bits, then apply.  The
 * packed-bit layout makes chunk and thread boundaries that are multiples of 64
 * elements (relative to the array start) byte- and word-aligned.
 *
 * The three paths are bit-identical: they all compute the products in the same
 * IEEE precision with round-to-nearest-even, select (never multiply) for the
 * dropped elements, and use the same float16 / bfloat16 rounding rules.
 *
 * Files: philox.h (the block function and its keys), convert.h (element loads,
 * stores and dtype conversions), isa_scalar.c / isa_avx2.c / isa_avx512.c (the
 * primitive tables), dispatch.c (ISA choice), threads.c (the thread pool),
 * masks.c (mask and dropout drivers), apply_mask.c (strided broadcast apply),
 * factors.c (the scaled factors of the native multiply and the rewrite of its
 * dropped products), normal.c (normal variates, alone or added to an array), vmath.h (their float64
 * log and cos), pages.c (large outputs on huge pages).
 *
 * Data pointers may have any alignment (NumPy and torch views can start at any
 * byte): every element is read and written with memcpy or unaligned vector
 * loads and stores, never through a dereferenced typed pointer.
 */
#ifndef NOISESHAPE_CORE_H
#define NOISESHAPE_CORE_H

#include "kernels.h"

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define NS_X86 1
#include <immintrin.h>
#define NS_TARGET_AVX2 __attribute__((target("avx2,f16c,fma")))
#define NS_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c,fma")))
#endif

#if defined(__GNUC__) || defined(__clang__)
#define NS_ALIGN64 __attribute__((aligned(64)))
#else
#define NS_ALIGN64
#endif

/* ------------------------------------------------------------------------- */
/* Constants and tuning                                                      */
/* ------------------------------------------------------------------------- */

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
#define NS_PAR_MIN_NORMAL ((int64_t)32768)
#define NS_MAX_THREADS 256

#include "philox.h"

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
    /* The same select-multiply from a byte mask (n bytes, nonzero = keep); NULL where the path has none. */
    ns_apply_fn apply_u8[NS_DTYPE_COUNT];
} ns_ops;

/* The tables of the paths (the SIMD ones exist on x86-64 builds only). */
extern const ns_ops ns_ops_scalar;
#ifdef NS_X86
extern const ns_ops ns_ops_avx2;
extern const ns_ops ns_ops_avx512;
/* float32 / float64 apply of the AVX2 path, which the AVX-512 path reuses. */
void ns_apply_f32_avx2(const void *x, void *y, const uint8_t *bits, size_t n, double scale);
void ns_apply_f64_avx2(const void *x, void *y, const uint8_t *bits, size_t n, double scale);
void ns_apply_u8_f32_avx2(const void *x, void *y, const uint8_t *mask, size_t n, double scale);
void ns_apply_u8_f64_avx2(const void *x, void *y, const uint8_t *mask, size_t n, double scale);
#endif

/* The table of an ISA index, falling back to the scalar path. */
const ns_ops *ns_get_ops(int isa);

/* Scalar primitives the SIMD paths reuse for their tails. */
void ns_l2b_scalar(uint8_t *bits, const uint16_t *lanes, size_t n, uint32_t t);
void ns_u2b_scalar(uint8_t *bits, const uint8_t *mask, size_t n);

/* Runs fn(ctx, begin, end) over [0, n) on up to nthreads threads (the caller
 * included), in chunks whose boundaries are multiples of `align`; one thread
 * when n < min_par (threads.c). */
typedef void (*ns_range_fn)(void *ctx, int64_t begin, int64_t end);
void ns_parallel_for(ns_range_fn fn, void *ctx, int64_t n, int64_t align, int64_t min_par, int nthreads);

/* Outputs of at least this many bytes are advised onto transparent huge pages (pages.c). */
#define NS_HUGE_MIN ((size_t)32 << 20)
/* MADV_HUGEPAGE on the 2 MiB-aligned interior of [p, p + nbytes) where nbytes >= NS_HUGE_MIN and
 * ns_huge_pages is set (Linux); call it on a new output before the first write. */
void ns_advise_output(void *p, size_t nbytes);
/* The same for an output of ndim axes laid out by strides (in elements of size bytes), where it
 * covers its memory densely (any order of axes); a strided output with gaps gets no advice. */
void ns_advise_strided(void *y, size_t size, int ndim, const int64_t *shape, const int64_t *strides);

#endif /* NOISESHAPE_CORE_H */
