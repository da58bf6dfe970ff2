/*
 * noiseshape C kernels: Philox4x32-10 mask generation and dropout application.
 *
 * Everything here is plain C with no Python dependency; module.c wraps it.  All
 * entry points take an ISA index (NS_ISA_*) chosen by the caller, validate
 * nothing (the wrapper does), and split their work over `nthreads` POSIX
 * threads (nthreads <= 0 means ns_default_threads()).  Results never depend on
 * the ISA or the thread count.
 *
 * Contract summary (see src/noiseshape/_rng.py for the reference):
 *   key     = (seed & 0xffffffff, seed >> 32)
 *   counter = (b & 0xffffffff, b >> 32, stream & 0xffffffff, stream >> 32)
 *   element j reads 16-bit lane j % 8 of block j / 8 and is kept iff lane < t;
 *   normal variate j reads word pair (j % 2) of block j / 2.
 */
#ifndef NOISESHAPE_KERNELS_H
#define NOISESHAPE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Instruction-set paths, in increasing order of preference. */
enum { NS_ISA_SCALAR = 0, NS_ISA_AVX2 = 1, NS_ISA_AVX512 = 2, NS_ISA_COUNT = 3 };

/* Element types of the dropout kernels. */
enum { NS_F32 = 0, NS_F64 = 1, NS_F16 = 2, NS_BF16 = 3, NS_DTYPE_COUNT = 4 };

/* Largest number of axes apply_mask accepts. */
#define NS_MAX_DIMS 64

/* Name of an ISA index ("scalar", "avx2", "avx512"). */
const char *ns_isa_name(int isa);

/* 1 if this build and this CPU can run the path, else 0. */
int ns_isa_available(int isa);

/* The best available path. */
int ns_best_isa(void);

/* CPUs this process may run on (affinity mask when available), at least 1. */
int ns_default_threads(void);

/* Whether outputs of 32 MiB or more are advised onto transparent huge pages before the first write
 * (1, the default; pages.c). Values never depend on it. */
extern int ns_huge_pages;

/* Whether parallel loops run on the threads of the GNU OpenMP runtime (libgomp.so.1) where the process
 * has loaded one, as torch does (1, the default on Linux; threads.c), instead of on helpers of our own. */
extern int ns_share_openmp;
/* 1 where a parallel loop would run on that runtime's threads now (sharing on, the runtime loaded). */
int ns_openmp_shared(void);
/* Call once before any other function: registers what a fork() must reset (threads.c). */
void ns_threads_init(void);

/* Size in bytes of one element of a dtype code (0 for an invalid code). */
size_t ns_dtype_size(int dtype);

/* The n 16-bit lanes of elements j0 .. j0 + n - 1. */
void ns_lanes(int isa, uint16_t *out, size_t n, uint64_t seed, uint64_t stream, uint64_t j0, int nthreads);

/* Keep flags (1 = keep) of elements j0 .. j0 + n - 1 as bytes; 0 <= t <= 65536. */
void ns_keep_mask(int isa, uint8_t *out, size_t n, uint64_t seed, uint64_t stream, uint64_t j0, uint32_t t,
                  int nthreads);

/* Bit-packed keep flags: ceil(n / 8) bytes, element i is bit i % 8 of byte i / 8, padding bits 0. */
void ns_pack_mask(int isa, uint8_t *out, size_t n, uint64_t seed, uint64_t stream, uint64_t j0, uint32_t t,
                  int nthreads);

/* y[i] = keep(j0 + i) ? x[i] * scale : 0 for a contiguous array; y may equal x.
 * When bits is not NULL the packed keep mask is written there as well. */
void ns_dropout(int isa, int dtype, const void *x, void *y, size_t n, uint64_t seed, uint64_t stream, uint64_t j0,
                uint32_t t, double scale, uint8_t *bits, int nthreads);

/* y[i] = bit i of bits ? x[i] * scale : 0 (contiguous; y may equal x). */
void ns_apply_bits(int isa, int dtype, const void *x, void *y, const uint8_t *bits, size_t n, double scale,
                   int nthreads);

/* Strided broadcast select-multiply: y[idx] = mask[idx] ? x[idx] * scale : 0.
 * Strides are in elements and may be zero or negative; ndim <= NS_MAX_DIMS
 * (ndim 0 is a single element). */
void ns_apply_mask(int isa, int dtype, const void *x, void *y, const uint8_t *mask, int ndim, const int64_t *shape,
                   const int64_t *x_strides, const int64_t *y_strides, const int64_t *m_strides, double scale,
                   int nthreads);

/* The keep flags of elements j0 .. j0 + n - 1 as factors of dtype NS_F32 or NS_F64: scale where kept,
 * +0 where dropped. Given x (n contiguous elements of dtype), a dropped factor is the zero of x's
 * sign there, so that x times it is +0 wherever x is finite. Returns how many elements are dropped,
 * or given x how many of them have an inf or NaN x (whose products need rewriting). Single-threaded. */
long long ns_scaled_mask(int isa, int dtype, void *out, size_t n, uint64_t seed, uint64_t stream, uint64_t j0,
                         uint32_t t, double scale, const void *x);

/* y[idx] = +0 wherever the factor m[idx] is 0 (y and m of dtype NS_F32 or NS_F64, m broadcast by
 * its strides); other elements are left as they are.  Single-threaded. */
void ns_zero_dropped(int isa, int dtype, void *y, const void *m, int ndim, const int64_t *shape,
                     const int64_t *y_strides, const int64_t *m_strides);

/* Standard normal variates j0 .. j0 + n - 1 (Box-Muller); out_dtype NS_F32 or NS_F64. */
void ns_normal(int isa, void *out, int out_dtype, size_t n, uint64_t seed, uint64_t stream, uint64_t j0,
               int nthreads);

/* y[i] = x[i] + stddev * z[j0 + i] for contiguous arrays of dtype (y may equal x), rounded as the torch
 * expression x + z.to(float32) * stddev rounds: the product and the sum in float32 (float64 for NS_F64;
 * float16 and bfloat16 add in float32 and round the sum), stddev rounded to float32 first, no fused
 * multiply-add. With x NULL: y[i] = stddev * z[j0 + i] (dtype NS_F32 or NS_F64). */
void ns_gaussian_add(int isa, int dtype, const void *x, void *y, size_t n, uint64_t seed, uint64_t stream, uint64_t j0,
                     double stddev, int nthreads);

/* The variates of n given word pairs (a, c) = (words[2i], words[2i + 1]) on one thread (testing). */
void ns_box_muller_words(int isa, void *out, int out_dtype, const uint32_t *words, size_t n);

#endif /* NOISESHAPE_KERNELS_H */
