/* apply_mask: strided broadcast select-multiply y[idx] = mask[idx] ? x[idx] * scale : 0. */
#include "convert.h"
#include "core.h"

#include <stddef.h>

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

/* Rows shorter than this are applied without a branch on their mask element: a dropped row is
 * multiplied and masked to +0 like a kept one, which costs less than mispredicting the branch. */
#define NS_BRANCHLESS_ROW 256

/* y = x * scale (keep all ones) or +0 (keep 0) over n elements, without a branch. */
static inline void row_f32(const char *x, char *y, size_t n, float sf, uint32_t keep) {
    for (size_t i = 0; i < n; i++) store_u32(y, i, f32_bits(load_f32(x, i) * sf) & keep);
}

static inline void row_f64(const char *x, char *y, size_t n, double scale, uint64_t keep) {
    for (size_t i = 0; i < n; i++) {
        double v = load_f64(x, i) * scale;
        uint64_t u;
        memcpy(&u, &v, 8);
        store_u64(y, i, u & keep);
    }
}

/* y = x * scale over a run of n float32 or float64 elements, or +0 throughout where keep is 0, 8 or 4
 * elements per vector on the vector paths (the same values as row_f32 / row_f64, which take the tail). */
#ifdef NS_X86
NS_TARGET_AVX2 static inline void run_avx2(int dtype, const char *x, char *y, size_t n, double scale, int keep) {
    size_t i = 0;
    if (dtype == NS_F32) {
        uint32_t bits = 0u - (uint32_t)(keep != 0);
        __m256 s = _mm256_set1_ps((float)scale), k = _mm256_castsi256_ps(_mm256_set1_epi32((int)bits));
        for (; i + 8 <= n; i += 8) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps((const float *)(const void *)(x + 4 * i)), s);
            _mm256_storeu_ps((float *)(void *)(y + 4 * i), _mm256_and_ps(v, k));
        }
        row_f32(x + 4 * i, y + 4 * i, n - i, (float)scale, bits);
        return;
    }
    uint64_t bits = 0u - (uint64_t)(keep != 0);
    __m256d s = _mm256_set1_pd(scale), k = _mm256_castsi256_pd(_mm256_set1_epi64x((long long)bits));
    for (; i + 4 <= n; i += 4) {
        __m256d v = _mm256_mul_pd(_mm256_loadu_pd((const double *)(const void *)(x + 8 * i)), s);
        _mm256_storeu_pd((double *)(void *)(y + 8 * i), _mm256_and_pd(v, k));
    }
    row_f64(x + 8 * i, y + 8 * i, n - i, scale, bits);
}

NS_TARGET_AVX2 static void scaled_run_avx2(int dtype, const char *x, char *y, size_t n, double scale) {
    run_avx2(dtype, x, y, n, scale, 1);
}

/* Short rows of one mask element each, without a branch: every row is x * scale masked to +0 where
 * its element is 0. */
NS_TARGET_AVX2 static void short_rows_avx2(int dtype, const char *xp, char *yp, const uint8_t *mp, int64_t rows,
                                           size_t len, ptrdiff_t xstep, ptrdiff_t ystep, ptrdiff_t mstep,
                                           double scale) {
    for (int64_t r = 0; r < rows; r++, xp += xstep, yp += ystep, mp += mstep) run_avx2(dtype, xp, yp, len, scale, *mp);
}
#endif

static void scaled_run(const mask_apply_ctx *c, const char *x, char *y, size_t n) {
#ifdef NS_X86
    if (c->ops != &ns_ops_scalar) {
        scaled_run_avx2(c->dtype, x, y, n, c->scale);
        return;
    }
#endif
    if (c->dtype == NS_F32)
        row_f32(x, y, n, (float)c->scale, ~0u);
    else
        row_f64(x, y, n, c->scale, ~(uint64_t)0);
}

/* Elements i0 .. i1 - 1 of one row whose first elements are at xp, yp, mp. */
static void mask_row(const mask_apply_ctx *c, const char *xp, char *yp, const uint8_t *mp, int64_t i0, int64_t i1,
                     const uint8_t *ones) {
    size_t sz = c->size;
    if (c->mi == 0 && c->xi == 1 && c->yi == 1 && c->dtype <= NS_F64) {
        /* one mask element for the whole run: a plain scaled copy, or zeros */
        size_t len = (size_t)(i1 - i0);
        xp += (size_t)i0 * sz;
        yp += (size_t)i0 * sz;
        if (!*mp)
            memset(yp, 0, len * sz);
        else
            scaled_run(c, xp, yp, len);
        return;
    }
    if (c->xi == 1 && c->yi == 1 && (c->mi == 0 || c->mi == 1)) {
        ns_apply_fn apply = c->ops->apply_bits[c->dtype];
        if (c->mi == 0 && !*mp) {
            memset(yp + (size_t)i0 * sz, 0, (size_t)(i1 - i0) * sz); /* +0 in every dtype */
            return;
        }
        if (c->mi == 1 && c->ops->apply_u8[c->dtype]) { /* a mask element per element, read as bytes */
            c->ops->apply_u8[c->dtype](xp + (size_t)i0 * sz, yp + (size_t)i0 * sz, mp + i0, (size_t)(i1 - i0),
                                       c->scale);
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

/* Rows r0 .. r1 - 1 of a two-axis layout whose rows are contiguous and share one mask element each
 * (a spatial dropout's feature maps): a scaled copy or zeros per row, with no per-row call. */
static void whole_rows(const mask_apply_ctx *c, int64_t r0, int64_t r1) {
    size_t sz = c->size, len = (size_t)c->inner;
    const char *xp = c->x + (ptrdiff_t)(r0 * c->xs[0]) * (ptrdiff_t)sz;
    char *yp = c->y + (ptrdiff_t)(r0 * c->ys[0]) * (ptrdiff_t)sz;
    const uint8_t *mp = c->m + r0 * c->ms[0];
    ptrdiff_t xstep = (ptrdiff_t)c->xs[0] * (ptrdiff_t)sz, ystep = (ptrdiff_t)c->ys[0] * (ptrdiff_t)sz;
    ptrdiff_t mstep = (ptrdiff_t)c->ms[0];
    int64_t rows = r1 - r0;
    float sf = (float)c->scale;
    if (len >= NS_BRANCHLESS_ROW) { /* long rows: a dropped row is a memset that reads nothing */
        for (int64_t r = 0; r < rows; r++, xp += xstep, yp += ystep, mp += mstep) {
            if (!*mp)
                memset(yp, 0, len * sz);
            else
                scaled_run(c, xp, yp, len);
        }
        return;
    }
#ifdef NS_X86
    if (c->ops != &ns_ops_scalar) { /* short rows: no branch to mispredict */
        short_rows_avx2(c->dtype, xp, yp, mp, rows, len, xstep, ystep, mstep, c->scale);
        return;
    }
#endif
    if (c->dtype == NS_F32) { /* short rows: no branch to mispredict */
        for (int64_t r = 0; r < rows; r++, xp += xstep, yp += ystep, mp += mstep)
            row_f32(xp, yp, len, sf, 0u - (uint32_t)(*mp != 0));
    } else {
        for (int64_t r = 0; r < rows; r++, xp += xstep, yp += ystep, mp += mstep)
            row_f64(xp, yp, len, c->scale, 0u - (uint64_t)(*mp != 0));
    }
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
        if (c->nouter == 1 && c->mi == 0 && c->xi == 1 && c->yi == 1 && c->dtype <= NS_F64) {
            whole_rows(c, r0, r1);
            return;
        }
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
    if (y != x) ns_advise_strided(y, ns_dtype_size(dtype), ndim, shape, y_strides);
    c.ops = ns_get_ops(isa);
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
        ns_parallel_for(mask_apply_range, &c, c.rows, 1, 0, nt);
    else
        ns_parallel_for(mask_apply_range, &c, c.inner, 64, 0, nt);
}
