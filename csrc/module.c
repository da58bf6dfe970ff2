/*
 * noiseshape._core: the CPython binding of the C kernels (kernels.h).
 *
 * Buffers are passed as raw addresses (Python ints) together with element
 * counts; the caller owns the memory and guarantees its size.  This layer
 * checks every scalar argument, releases the GIL around the kernels and maps
 * invalid arguments to ValueError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

/* The active ISA path (an NS_ISA_* index); changed only while holding the GIL. */
static int active_isa = NS_ISA_SCALAR;

/* ------------------------------------------------------------------------- */
/* Argument helpers                                                           */
/* ------------------------------------------------------------------------- */

static PyObject *available_names(void) {
    PyObject *tup = PyTuple_New(0);
    for (int i = 0; tup && i < NS_ISA_COUNT; i++) {
        if (!ns_isa_available(i)) continue;
        PyObject *name = PyUnicode_FromString(ns_isa_name(i));
        if (!name || _PyTuple_Resize(&tup, PyTuple_GET_SIZE(tup) + 1) < 0) {
            Py_XDECREF(name);
            Py_XDECREF(tup);
            return NULL;
        }
        PyTuple_SET_ITEM(tup, PyTuple_GET_SIZE(tup) - 1, name);
    }
    return tup;
}

/* Index of an ISA name, "auto" -> best; -1 if unknown or unavailable. */
static int isa_from_name(const char *name) {
    if (strcmp(name, "auto") == 0) return ns_best_isa();
    for (int i = 0; i < NS_ISA_COUNT; i++)
        if (strcmp(name, ns_isa_name(i)) == 0) return ns_isa_available(i) ? i : -1;
    return -1;
}

static int check_n(long long n, const char *what) {
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "%s: n is %lld; it cannot be negative", what, n);
        return -1;
    }
    if ((unsigned long long)n > (unsigned long long)PY_SSIZE_T_MAX / 8) {
        PyErr_Format(PyExc_ValueError, "%s: n is %lld; too large", what, n);
        return -1;
    }
    return 0;
}

/* Element indices j0 .. j0 + n - 1 must stay below 2^64. */
static int check_range(unsigned long long j0, long long n, const char *what) {
    if (n > 0 && j0 > UINT64_MAX - (uint64_t)(n - 1)) {
        PyErr_Format(PyExc_ValueError, "%s: j0 + n exceeds 2**64 (j0=%llu, n=%lld)", what, j0, n);
        return -1;
    }
    return 0;
}

static int check_t(long long t, const char *what) {
    if (t < 0 || t > 65536) {
        PyErr_Format(PyExc_ValueError, "%s: threshold t is %lld; it must be in [0, 65536]", what, t);
        return -1;
    }
    return 0;
}

static int check_dtype(int dtype, const char *what) {
    if (ns_dtype_size(dtype) == 0) {
        PyErr_Format(PyExc_ValueError,
                     "%s: dtype code is %d; use 0 (float32), 1 (float64), 2 (float16) or 3 (bfloat16)", what, dtype);
        return -1;
    }
    return 0;
}

/* The factors of a native multiply: float32 (0) or float64 (1) only. */
static int check_factor_dtype(int dtype, const char *what) {
    if (dtype == NS_F32 || dtype == NS_F64) return 0;
    PyErr_Format(PyExc_ValueError, "%s: dtype code %d; give 0 (float32) or 1 (float64)", what, dtype);
    return -1;
}

static int check_ptr(unsigned long long p, long long n, const char *name, const char *what) {
    if (n > 0 && p == 0) {
        PyErr_Format(PyExc_ValueError, "%s: %s is a null pointer", what, name);
        return -1;
    }
    return 0;
}

static int clamp_threads(long long nthreads) {
    if (nthreads <= 0) return 0;
    return nthreads > 4096 ? 4096 : (int)nthreads;
}

/* Reads a sequence of ints into out[0 .. *len); returns -1 with an exception set. */
static int read_int64s(PyObject *seq, int64_t *out, Py_ssize_t *len, const char *name, const char *what) {
    PyObject *fast = PySequence_Fast(seq, "");
    if (!fast) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be a tuple of ints", what, name);
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n > NS_MAX_DIMS) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_ValueError, "%s: %s has %zd entries; at most %d axes are supported", what, name, n,
                     NS_MAX_DIMS);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, i);
        long long v = PyLong_AsLongLong(item);
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(fast);
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "%s: %s[%zd] is not an int64", what, name, i);
            return -1;
        }
        out[i] = (int64_t)v;
    }
    Py_DECREF(fast);
    *len = n;
    return 0;
}

/* ------------------------------------------------------------------------- */
/* ISA and threads                                                            */
/* ------------------------------------------------------------------------- */

static PyObject *py_isa(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyUnicode_FromString(ns_isa_name(active_isa));
}

static PyObject *py_available_isas(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return available_names();
}

static PyObject *py_set_isa(PyObject *self, PyObject *args) {
    (void)self;
    const char *name;
    if (!PyArg_ParseTuple(args, "s:set_isa", &name)) return NULL;
    int isa = isa_from_name(name);
    if (isa < 0) {
        PyObject *avail = available_names();
        if (avail) {
            PyErr_Format(PyExc_ValueError, "set_isa: %R is not available here; choose 'auto' or one of %R",
                         PyTuple_GET_ITEM(args, 0), avail);
            Py_DECREF(avail);
        }
        return NULL;
    }
    active_isa = isa;
    Py_RETURN_NONE;
}

/* An optional switch argument (fmt "|O:name"): sets *setting to its truth value where given and
 * not None. Returns -1 with an exception set. */
static int read_switch(PyObject *args, const char *fmt, int *setting) {
    PyObject *flag = Py_None;
    if (!PyArg_ParseTuple(args, fmt, &flag)) return -1;
    if (flag == Py_None) return 0;
    int on = PyObject_IsTrue(flag);
    if (on < 0) return -1;
    *setting = on;
    return 0;
}

static PyObject *py_madvise_hugepage(PyObject *self, PyObject *args) {
    (void)self;
    int was = ns_huge_pages;
    if (read_switch(args, "|O:madvise_hugepage", &ns_huge_pages)) return NULL;
    return PyBool_FromLong(was);
}

static PyObject *py_thread_pool(PyObject *self, PyObject *args) {
    (void)self;
    if (read_switch(args, "|O:thread_pool", &ns_share_openmp)) return NULL;
    return PyUnicode_FromString(ns_openmp_shared() ? "openmp" : "own");
}

static PyObject *py_default_threads(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyLong_FromLong(ns_default_threads());
}

/* ------------------------------------------------------------------------- */
/* Masks                                                                      */
/* ------------------------------------------------------------------------- */

static PyObject *py_lanes(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long out, seed, stream, j0;
    long long n, nthreads;
    if (!PyArg_ParseTuple(args, "KLKKKL:lanes", &out, &n, &seed, &stream, &j0, &nthreads)) return NULL;
    if (check_n(n, "lanes") || check_range(j0, n, "lanes") || check_ptr(out, n, "out_ptr", "lanes")) return NULL;
    int isa = active_isa;
    Py_BEGIN_ALLOW_THREADS
    ns_lanes(isa, (uint16_t *)(uintptr_t)out, (size_t)n, seed, stream, j0, clamp_threads(nthreads));
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *mask_common(PyObject *args, int packed) {
    const char *what = packed ? "pack_mask" : "keep_mask";
    unsigned long long out, seed, stream, j0;
    long long n, t, nthreads;
    if (!PyArg_ParseTuple(args, "KLKKKLL", &out, &n, &seed, &stream, &j0, &t, &nthreads)) return NULL;
    if (check_n(n, what) || check_range(j0, n, what) || check_t(t, what) || check_ptr(out, n, "out_ptr", what))
        return NULL;
    int isa = active_isa;
    Py_BEGIN_ALLOW_THREADS
    if (packed)
        ns_pack_mask(isa, (uint8_t *)(uintptr_t)out, (size_t)n, seed, stream, j0, (uint32_t)t, clamp_threads(nthreads));
    else
        ns_keep_mask(isa, (uint8_t *)(uintptr_t)out, (size_t)n, seed, stream, j0, (uint32_t)t, clamp_threads(nthreads));
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_keep_mask(PyObject *self, PyObject *args) {
    (void)self;
    return mask_common(args, 0);
}

static PyObject *py_pack_mask(PyObject *self, PyObject *args) {
    (void)self;
    return mask_common(args, 1);
}

/* scaled_mask: the keep flags of n elements as float32 (dtype 0) or float64 (1) factors, scale
 * where kept and +0 where dropped (the factor of a multiply whose gradient is the noise itself).
 * Returns how many elements are dropped. Given x_ptr (n contiguous elements of the same dtype), a
 * dropped factor is the zero with x's sign there, so that the product is +0 wherever x is finite, and
 * the count is of the dropped elements whose product is NaN (x inf or NaN): those that need
 * rewriting. Single-threaded: it serves small inputs. */
static PyObject *py_scaled_mask(PyObject *self, PyObject *args) {
    (void)self;
    const char *what = "scaled_mask";
    int dtype;
    unsigned long long out, seed, stream, j0, x = 0;
    long long n, t;
    double scale;
    if (!PyArg_ParseTuple(args, "iKLKKKLd|K:scaled_mask", &dtype, &out, &n, &seed, &stream, &j0, &t, &scale, &x))
        return NULL;
    if (check_n(n, what) || check_range(j0, n, what) || check_t(t, what)) return NULL;
    if (check_factor_dtype(dtype, what)) return NULL;
    if (check_ptr(out, n, "out_ptr", what)) return NULL;
    /* small inputs: the GIL is kept (releasing it costs more than the call) */
    long long count = ns_scaled_mask(active_isa, dtype, (void *)(uintptr_t)out, (size_t)n, seed, stream, j0,
                                     (uint32_t)t, scale, (const void *)(uintptr_t)x);
    return PyLong_FromLongLong(count);
}

/* ------------------------------------------------------------------------- */
/* Dropout                                                                    */
/* ------------------------------------------------------------------------- */

static PyObject *py_dropout(PyObject *self, PyObject *args) {
    (void)self;
    int dtype;
    unsigned long long x, y, seed, stream, j0, bits;
    long long n, t, nthreads;
    double scale;
    if (!PyArg_ParseTuple(args, "iKKLKKKLdKL:dropout", &dtype, &x, &y, &n, &seed, &stream, &j0, &t, &scale, &bits,
                          &nthreads))
        return NULL;
    if (check_dtype(dtype, "dropout") || check_n(n, "dropout") || check_range(j0, n, "dropout") ||
        check_t(t, "dropout") || check_ptr(x, n, "x_ptr", "dropout") || check_ptr(y, n, "y_ptr", "dropout"))
        return NULL;
    int isa = active_isa;
    Py_BEGIN_ALLOW_THREADS
    ns_dropout(isa, dtype, (const void *)(uintptr_t)x, (void *)(uintptr_t)y, (size_t)n, seed, stream, j0,
               (uint32_t)t, scale, (uint8_t *)(uintptr_t)bits, clamp_threads(nthreads));
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_apply_bits(PyObject *self, PyObject *args) {
    (void)self;
    int dtype;
    unsigned long long x, y, bits;
    long long n, nthreads;
    double scale;
    if (!PyArg_ParseTuple(args, "iKKKLdL:apply_bits", &dtype, &x, &y, &bits, &n, &scale, &nthreads)) return NULL;
    if (check_dtype(dtype, "apply_bits") || check_n(n, "apply_bits") || check_ptr(x, n, "x_ptr", "apply_bits") ||
        check_ptr(y, n, "y_ptr", "apply_bits") || check_ptr(bits, n, "bits_ptr", "apply_bits"))
        return NULL;
    int isa = active_isa;
    Py_BEGIN_ALLOW_THREADS
    ns_apply_bits(isa, dtype, (const void *)(uintptr_t)x, (void *)(uintptr_t)y, (const uint8_t *)(uintptr_t)bits,
                  (size_t)n, scale, clamp_threads(nthreads));
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* Reads a loop shape and k stride tuples, in elements (apply_mask: x, y and mask; zero_dropped: y
 * and factors), and checks them: equal lengths, sizes that fit, strides in range.  *total gets the
 * element count.  Returns -1 with an exception set. */
static int read_layout(PyObject *shape_o, PyObject *const *strides_o, const char *const *names, int k,
                       int64_t *shape, int64_t strides[][NS_MAX_DIMS], Py_ssize_t *nd, long long *total,
                       const char *what) {
    if (read_int64s(shape_o, shape, nd, "shape", what)) return -1;
    for (int s = 0; s < k; s++) {
        Py_ssize_t ns;
        if (read_int64s(strides_o[s], strides[s], &ns, names[s], what)) return -1;
        if (ns != *nd) {
            PyErr_Format(PyExc_ValueError, "%s: shape has %zd axes but %s has %zd", what, *nd, names[s], ns);
            return -1;
        }
    }
    /* the element count must fit in int64 and no offset may overflow */
    *total = 1;
    for (Py_ssize_t d = 0; d < *nd; d++) {
        if (shape[d] < 0) {
            PyErr_Format(PyExc_ValueError, "%s: shape[%zd] is %lld; sizes cannot be negative", what, d,
                         (long long)shape[d]);
            return -1;
        }
        if (shape[d] == 0) *total = 0;
        if (*total && shape[d] > (long long)(PY_SSIZE_T_MAX / 8) / *total) {
            PyErr_Format(PyExc_ValueError, "%s: the shape has too many elements", what);
            return -1;
        }
        *total *= shape[d];
        const int64_t lim = (int64_t)1 << 48;
        for (int s = 0; s < k; s++) {
            if (strides[s][d] > lim || strides[s][d] < -lim) {
                PyErr_Format(PyExc_ValueError, "%s: a stride of axis %zd is out of range", what, d);
                return -1;
            }
        }
    }
    return 0;
}

/* The stride names of a select-multiply's x, y and broadcast mask. */
static const char *const XYM_STRIDES[3] = {"x_strides", "y_strides", "m_strides"};

static PyObject *py_apply_mask(PyObject *self, PyObject *args) {
    (void)self;
    const char *what = "apply_mask";
    int dtype;
    unsigned long long x, y, mask;
    PyObject *shape_o, *st[3];
    double scale;
    long long nthreads;
    if (!PyArg_ParseTuple(args, "iKKKOOOOdL:apply_mask", &dtype, &x, &y, &mask, &shape_o, &st[0], &st[1], &st[2],
                          &scale, &nthreads))
        return NULL;
    if (check_dtype(dtype, what)) return NULL;
    int64_t shape[NS_MAX_DIMS], strides[3][NS_MAX_DIMS];
    Py_ssize_t nd;
    long long total;
    if (read_layout(shape_o, st, XYM_STRIDES, 3, shape, strides, &nd, &total, what)) return NULL;
    if (check_ptr(x, total, "x_ptr", what) || check_ptr(y, total, "y_ptr", what) ||
        check_ptr(mask, total, "mask_ptr", what))
        return NULL;
    if (total == 0) Py_RETURN_NONE;
    int isa = active_isa;
    Py_BEGIN_ALLOW_THREADS
    ns_apply_mask(isa, dtype, (const void *)(uintptr_t)x, (void *)(uintptr_t)y, (const uint8_t *)(uintptr_t)mask,
                  (int)nd, shape, strides[0], strides[1], strides[2], scale, clamp_threads(nthreads));
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* zero_dropped: y = +0 where the broadcast factors (float32 or float64, as y) are 0; the rest of y
 * untouched.  After a native multiply by the scaled mask it turns -0 and NaN (x negative, inf or
 * NaN where dropped; a full-shape mask signed by x leaves only inf and NaN) into the contract's +0. */
static PyObject *py_zero_dropped(PyObject *self, PyObject *args) {
    (void)self;
    const char *what = "zero_dropped";
    int dtype;
    unsigned long long y, m;
    PyObject *shape_o, *st[2];
    if (!PyArg_ParseTuple(args, "iKKOOO:zero_dropped", &dtype, &y, &m, &shape_o, &st[0], &st[1])) return NULL;
    if (check_factor_dtype(dtype, what)) return NULL;
    static const char *const names[2] = {"y_strides", "m_strides"};
    int64_t shape[NS_MAX_DIMS], strides[2][NS_MAX_DIMS];
    Py_ssize_t nd;
    long long total;
    if (read_layout(shape_o, st, names, 2, shape, strides, &nd, &total, what)) return NULL;
    for (Py_ssize_t d = 0; d < nd; d++) {
        if (strides[0][d] < 0 || strides[1][d] < 0) {
            PyErr_Format(PyExc_ValueError, "%s: the strides of axis %zd are negative", what, d);
            return NULL;
        }
    }
    if (check_ptr(y, total, "y_ptr", what) || check_ptr(m, total, "m_ptr", what)) return NULL;
    if (total == 0) Py_RETURN_NONE;
    Py_BEGIN_ALLOW_THREADS
    ns_zero_dropped(active_isa, dtype, (void *)(uintptr_t)y, (const void *)(uintptr_t)m, (int)nd, shape, strides[0], strides[1]);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* shaped_dropout: keep_mask at the reduced shape into a scratch buffer, then the strided apply,
 * in one call (the eager path of a shaped dropout: no mask tensor, no second call). */
static PyObject *py_shaped_dropout(PyObject *self, PyObject *args) {
    (void)self;
    int dtype;
    unsigned long long x, y, seed, stream, j0;
    long long mask_n, t, nthreads;
    PyObject *shape_o, *st[3];
    double scale;
    if (!PyArg_ParseTuple(args, "iKKLKKKLOOOOdL:shaped_dropout", &dtype, &x, &y, &mask_n, &seed, &stream, &j0, &t,
                          &shape_o, &st[0], &st[1], &st[2], &scale, &nthreads))
        return NULL;
    const char *what = "shaped_dropout";
    if (check_dtype(dtype, what) || check_n(mask_n, what) || check_range(j0, mask_n, what) || check_t(t, what))
        return NULL;
    int64_t shape[NS_MAX_DIMS], strides[3][NS_MAX_DIMS];
    Py_ssize_t nd;
    long long total;
    if (read_layout(shape_o, st, XYM_STRIDES, 3, shape, strides, &nd, &total, what)) return NULL;
    const int64_t *xs = strides[0], *ys = strides[1], *ms = strides[2];
    /* every mask offset must lie inside the mask_n scratch elements */
    long long last = 0;
    for (Py_ssize_t d = 0; d < nd; d++) {
        if (shape[d] <= 0) Py_RETURN_NONE; /* nothing to do */
        if (ms[d] < 0 || ms[d] > mask_n || shape[d] > (long long)(PY_SSIZE_T_MAX / 8)) {
            PyErr_Format(PyExc_ValueError, "%s: the mask strides of axis %zd are out of range", what, d);
            return NULL;
        }
        last += (shape[d] - 1) * ms[d];
        if (last >= mask_n) {
            PyErr_Format(PyExc_ValueError, "%s: the mask strides reach past mask_n = %lld", what, mask_n);
            return NULL;
        }
    }
    if (mask_n == 0 || check_ptr(x, 1, "x_ptr", what) || check_ptr(y, 1, "y_ptr", what)) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    uint8_t small[4096];
    uint8_t *mask = mask_n <= (long long)sizeof small ? small : (uint8_t *)malloc((size_t)mask_n);
    if (!mask) return PyErr_NoMemory();
    int isa = active_isa;
    int threads = clamp_threads(nthreads);
    Py_BEGIN_ALLOW_THREADS
    ns_keep_mask(isa, mask, (size_t)mask_n, seed, stream, j0, (uint32_t)t, mask_n < 32768 ? 1 : threads);
    ns_apply_mask(isa, dtype, (const void *)(uintptr_t)x, (void *)(uintptr_t)y, mask, (int)nd, shape, xs, ys, ms,
                  scale, threads);
    Py_END_ALLOW_THREADS
    if (mask != small) free(mask);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------- */
/* Normal variates                                                            */
/* ------------------------------------------------------------------------- */

static PyObject *py_normal(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long out, seed, stream, j0;
    int dtype;
    long long n, nthreads;
    if (!PyArg_ParseTuple(args, "KiLKKKL:normal", &out, &dtype, &n, &seed, &stream, &j0, &nthreads)) return NULL;
    if (dtype != NS_F32 && dtype != NS_F64) {
        PyErr_Format(PyExc_ValueError, "normal: out_dtype is %d; use 0 (float32) or 1 (float64)", dtype);
        return NULL;
    }
    if (check_n(n, "normal") || check_range(j0, n, "normal") || check_ptr(out, n, "out_ptr", "normal")) return NULL;
    int isa = active_isa;
    Py_BEGIN_ALLOW_THREADS
    ns_normal(isa, (void *)(uintptr_t)out, dtype, (size_t)n, seed, stream, j0, clamp_threads(nthreads));
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_gaussian_add(PyObject *self, PyObject *args) {
    (void)self;
    int dtype;
    unsigned long long x, y, seed, stream, j0;
    long long n, nthreads;
    double stddev;
    if (!PyArg_ParseTuple(args, "iKKLKKKdL:gaussian_add", &dtype, &x, &y, &n, &seed, &stream, &j0, &stddev,
                          &nthreads))
        return NULL;
    const char *what = "gaussian_add";
    if (check_dtype(dtype, what) || check_n(n, what) || check_range(j0, n, what) || check_ptr(y, n, "y_ptr", what))
        return NULL;
    if (n > 0 && x == 0 && dtype != NS_F32 && dtype != NS_F64) {
        PyErr_Format(PyExc_ValueError, "%s: without x_ptr the dtype is %d; use 0 (float32) or 1 (float64)", what,
                     dtype);
        return NULL;
    }
    int isa = active_isa;
    Py_BEGIN_ALLOW_THREADS
    ns_gaussian_add(isa, dtype, (const void *)(uintptr_t)x, (void *)(uintptr_t)y, (size_t)n, seed, stream, j0, stddev,
                    clamp_threads(nthreads));
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_box_muller(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long out, words;
    int dtype;
    long long n;
    if (!PyArg_ParseTuple(args, "KiKL:box_muller", &out, &dtype, &words, &n)) return NULL;
    if (dtype != NS_F32 && dtype != NS_F64) {
        PyErr_Format(PyExc_ValueError, "box_muller: out_dtype is %d; use 0 (float32) or 1 (float64)", dtype);
        return NULL;
    }
    if (check_n(n, "box_muller") || check_ptr(out, n, "out_ptr", "box_muller") ||
        check_ptr(words, n, "words_ptr", "box_muller"))
        return NULL;
    int isa = active_isa;
    Py_BEGIN_ALLOW_THREADS
    ns_box_muller_words(isa, (void *)(uintptr_t)out, dtype, (const uint32_t *)(uintptr_t)words, (size_t)n);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------- */
/* Rows: masks of a piece of a larger array (global coordinates)              */
/* ------------------------------------------------------------------------- */

/* Row r holds elements starts[r] .. starts[r] + run - 1; each row runs through the contiguous kernels. */
static PyObject *rows_common(PyObject *args, int normal) {
    const char *what = normal ? "normal_rows" : "keep_mask_rows";
    unsigned long long out, starts, seed, stream;
    long long rows, run, t, nthreads;
    int dtype = 0;
    if (normal) {
        if (!PyArg_ParseTuple(args, "KiLLKKKL", &out, &dtype, &rows, &run, &starts, &seed, &stream, &nthreads))
            return NULL;
        if (dtype != NS_F32 && dtype != NS_F64) {
            PyErr_Format(PyExc_ValueError, "normal_rows: out_dtype is %d; use 0 (float32) or 1 (float64)", dtype);
            return NULL;
        }
        t = 0;
    } else if (!PyArg_ParseTuple(args, "KLLKKKLL", &out, &rows, &run, &starts, &seed, &stream, &t, &nthreads)) {
        return NULL;
    }
    if (check_n(rows, what) || check_n(run, what) || (!normal && check_t(t, what))) return NULL;
    if (run > 0 && rows > (long long)(PY_SSIZE_T_MAX / 8) / run) {
        PyErr_Format(PyExc_ValueError, "%s: rows * run is too large", what);
        return NULL;
    }
    if (check_ptr(out, rows * run, "out_ptr", what) || check_ptr(starts, rows, "starts_ptr", what)) return NULL;
    const int64_t *st = (const int64_t *)(uintptr_t)starts;
    for (long long r = 0; r < rows; r++)
        if (st[r] < 0 || check_range((unsigned long long)st[r], run, what)) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "%s: starts[%lld] is negative", what, r);
            return NULL;
        }
    int isa = active_isa;
    int threads = run >= 32768 ? clamp_threads(nthreads) : 1; /* results never depend on it */
    size_t item = normal ? ns_dtype_size(dtype) : 1;
    Py_BEGIN_ALLOW_THREADS
    for (long long r = 0; r < rows; r++) {
        char *dst = (char *)(uintptr_t)out + (size_t)r * (size_t)run * item;
        if (normal)
            ns_normal(isa, dst, dtype, (size_t)run, seed, stream, (uint64_t)st[r], threads);
        else
            ns_keep_mask(isa, (uint8_t *)dst, (size_t)run, seed, stream, (uint64_t)st[r], (uint32_t)t, threads);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_keep_mask_rows(PyObject *self, PyObject *args) {
    (void)self;
    return rows_common(args, 0);
}

static PyObject *py_normal_rows(PyObject *self, PyObject *args) {
    (void)self;
    return rows_common(args, 1);
}

/* ------------------------------------------------------------------------- */
/* Module                                                                     */
/* ------------------------------------------------------------------------- */

static PyMethodDef core_methods[] = {
    {"isa", py_isa, METH_NOARGS, "isa() -> str: the active instruction-set path."},
    {"available_isas", py_available_isas, METH_NOARGS,
     "available_isas() -> tuple[str, ...]: paths this CPU and build can run."},
    {"set_isa", py_set_isa, METH_VARARGS,
     "set_isa(name): force a path ('scalar', 'avx2', 'avx512' or 'auto' for the best available)."},
    {"madvise_hugepage", py_madvise_hugepage, METH_VARARGS,
     "madvise_hugepage(enabled=None) -> bool: whether outputs of 32 MiB or more are advised onto transparent huge "
     "pages (Linux) before the first write; sets it when enabled is given, returns the previous setting."},
    {"thread_pool", py_thread_pool, METH_VARARGS,
     "thread_pool(share_openmp=None) -> str: where parallel loops run now: 'openmp' (the threads of the GNU OpenMP "
     "runtime the process has loaded, as torch does) or 'own' (helpers of the core); share_openmp=False keeps them "
     "on the core's own helpers, True (the default) shares where it can."},
    {"default_threads", py_default_threads, METH_NOARGS,
     "default_threads() -> int: CPUs in this process's affinity mask."},
    {"lanes", py_lanes, METH_VARARGS,
     "lanes(out_ptr, n, seed, stream, j0, nthreads): the uint16 lanes of elements j0 .. j0+n-1."},
    {"keep_mask", py_keep_mask, METH_VARARGS,
     "keep_mask(out_ptr, n, seed, stream, j0, t, nthreads): uint8 keep flags (lane < t)."},
    {"pack_mask", py_pack_mask, METH_VARARGS,
     "pack_mask(out_ptr, n, seed, stream, j0, t, nthreads): bit-packed keep flags (little bit order)."},
    {"zero_dropped", py_zero_dropped, METH_VARARGS,
     "zero_dropped(dtype, y_ptr, m_ptr, shape, y_strides, m_strides): y = +0 where the broadcast factors m "
     "(float32/float64) are 0."},
    {"scaled_mask", py_scaled_mask, METH_VARARGS,
     "scaled_mask(dtype, out_ptr, n, seed, stream, j0, t, scale, x_ptr=0) -> int: keep flags as float32/float64 "
     "factors (scale kept, +0 dropped, or with x_ptr the zero of x's sign); returns the number dropped, or with "
     "x_ptr the dropped elements of x that are inf or NaN."},
    {"dropout", py_dropout, METH_VARARGS,
     "dropout(dtype, x_ptr, y_ptr, n, seed, stream, j0, t, scale, bits_ptr, nthreads): "
     "y = keep ? x*scale : 0; also writes the packed mask when bits_ptr != 0."},
    {"apply_bits", py_apply_bits, METH_VARARGS,
     "apply_bits(dtype, x_ptr, y_ptr, bits_ptr, n, scale, nthreads): y = bit ? x*scale : 0."},
    {"apply_mask", py_apply_mask, METH_VARARGS,
     "apply_mask(dtype, x_ptr, y_ptr, mask_ptr, shape, x_strides, y_strides, m_strides, scale, nthreads): "
     "strided broadcast y = mask ? x*scale : 0 (strides in elements)."},
    {"shaped_dropout", py_shaped_dropout, METH_VARARGS,
     "shaped_dropout(dtype, x_ptr, y_ptr, mask_n, seed, stream, j0, t, shape, x_strides, y_strides, m_strides, "
     "scale, nthreads): keep flags of mask elements j0 .. j0+mask_n-1, broadcast by m_strides: "
     "y = keep ? x*scale : 0."},
    {"normal", py_normal, METH_VARARGS,
     "normal(out_ptr, out_dtype, n, seed, stream, j0, nthreads): Box-Muller normal variates."},
    {"gaussian_add", py_gaussian_add, METH_VARARGS,
     "gaussian_add(dtype, x_ptr, y_ptr, n, seed, stream, j0, stddev, nthreads): y = x + stddev * z for the "
     "normal variates z of elements j0 .. j0+n-1 (contiguous; y may be x), rounded as x + z.float() * stddev; "
     "x_ptr 0: y = stddev * z (float32 or float64)."},
    {"box_muller", py_box_muller, METH_VARARGS,
     "box_muller(out_ptr, out_dtype, words_ptr, n): the variates of n word pairs (uint32 a, c) on one thread."},
    {"keep_mask_rows", py_keep_mask_rows, METH_VARARGS,
     "keep_mask_rows(out_ptr, rows, run, starts_ptr, seed, stream, t, nthreads): uint8 keep flags of rows of "
     "run elements; row r starts at the global index starts[r] (int64)."},
    {"normal_rows", py_normal_rows, METH_VARARGS,
     "normal_rows(out_ptr, out_dtype, rows, run, starts_ptr, seed, stream, nthreads): normal variates by rows."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "noiseshape._core", "C core of noiseshape: Philox4x32-10 masks and dropout kernels.", -1,
    core_methods, NULL, NULL, NULL, NULL,
};

/* NOISESHAPE_ISA forces a path by name.  A name that is not a path, or a path
 * this CPU or build cannot run, keeps the best path and warns with the valid
 * names (-1 with an exception set if the warning is turned into an error). */
static int isa_from_env(void) {
    const char *env = getenv("NOISESHAPE_ISA");
    if (!env || !*env || strcmp(env, "auto") == 0) return 0;
    int known = -1;
    for (int i = 0; i < NS_ISA_COUNT; i++)
        if (strcmp(env, ns_isa_name(i)) == 0) known = i;
    if (known >= 0 && ns_isa_available(known)) {
        active_isa = known;
        return 0;
    }
    PyObject *value = PyUnicode_DecodeFSDefault(env);
    PyObject *avail = available_names();
    int rc = -1;
    if (value && avail && known < 0)
        rc = PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                              "NOISESHAPE_ISA is %R, which names no path; set it to 'auto', 'scalar', 'avx2' or "
                              "'avx512' (lower case), or unset it; using '%s'",
                              value, ns_isa_name(active_isa));
    else if (value && avail)
        rc = PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                              "NOISESHAPE_ISA is %R, which this CPU or build cannot run (available here: %R); "
                              "using '%s'",
                              value, avail, ns_isa_name(active_isa));
    Py_XDECREF(value);
    Py_XDECREF(avail);
    return rc;
}

/* NOISESHAPE_MADVISE_HUGEPAGE=0 keeps large outputs on the allocator's pages, 1 (or unset) advises
 * them onto huge pages; any other value warns and keeps the default (-1 if the warning is an error). */
static int huge_pages_from_env(void) {
    const char *env = getenv("NOISESHAPE_MADVISE_HUGEPAGE");
    ns_huge_pages = 1;
    if (!env || !*env || strcmp(env, "1") == 0) return 0;
    if (strcmp(env, "0") == 0) {
        ns_huge_pages = 0;
        return 0;
    }
    PyObject *value = PyUnicode_DecodeFSDefault(env);
    int rc = value ? PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                                      "NOISESHAPE_MADVISE_HUGEPAGE is %R; set it to 0 (large outputs stay on the "
                                      "allocator's pages) or 1 (advised onto huge pages), or unset it; using 1",
                                      value)
                   : -1;
    Py_XDECREF(value);
    return rc;
}

PyMODINIT_FUNC PyInit__core(void) {
    ns_threads_init();
    active_isa = ns_best_isa();
    PyObject *m = PyModule_Create(&core_module);
    if (m && (isa_from_env() < 0 || huge_pages_from_env() < 0)) Py_CLEAR(m);
    return m;
}
