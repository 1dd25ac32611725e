/* Shared by engine/csrc's kernels (see module.c): includes, numpy's argmax and np.maximum, and the parabola
 * vertex, as static inline helpers; the kernels' Python entry points. */
#ifndef MISE_KERNELS_H
#define MISE_KERNELS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

/* numpy's argmax (first maximum; the first NaN if there is one) */
static inline Py_ssize_t argmax_first(const double *v, Py_ssize_t n) {
    Py_ssize_t best = 0;
    if (isnan(v[0])) return 0;
    for (Py_ssize_t j = 1; j < n; j++) {
        if (isnan(v[j])) return j;
        if (v[j] > v[best]) best = j;
    }
    return best;
}

/* Vertex value of the parabola through three equally spaced points (engine/pitch.py's _parabola; offset too) */
static inline double parabola(double left, double mid, double right, double *offset_out) {
    double curve = left - 2.0 * mid + right, offset = 0.0;
    if (curve != 0.0) {
        offset = 0.5 * (left - right) / curve;
        if (!isnan(offset)) offset = offset < -1.0 ? -1.0 : offset > 1.0 ? 1.0 : offset;
    }
    if (offset_out != NULL) *offset_out = offset;
    return mid - 0.25 * (left - right) * offset;
}

/* numpy's pairwise sum of n contiguous doubles (its add.reduce along a contiguous axis: 8 partial sums in blocks
 * of up to 128, halves above), so a mean taken here is numpy's bit for bit */
static inline double pairwise_sum(const double *a, Py_ssize_t n) {
    if (n < 8) {
        double res = 0.0;
        for (Py_ssize_t i = 0; i < n; i++) res += a[i];
        return res;
    }
    if (n <= 128) {
        double r[8];
        Py_ssize_t i;
        for (int j = 0; j < 8; j++) r[j] = a[j];
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++) r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }
    Py_ssize_t half = n / 2;
    half -= half % 8;
    return pairwise_sum(a, half) + pairwise_sum(a + half, n - half);
}

static inline double floor_at(double v, double floor) { return v > floor || isnan(v) ? v : floor; } /* np.maximum */

/* The end of a kernel: every buffer it took, given back */
#define RELEASE_ALL(...)                                                                                      \
    do {                                                                                                      \
        Py_buffer *taken_[] = {__VA_ARGS__};                                                                  \
        for (size_t b_ = 0; b_ < sizeof(taken_) / sizeof(taken_[0]); b_++) PyBuffer_Release(taken_[b_]);     \
    } while (0)

/* A kernel refusing its arguments: ValueError "<kernel>: shapes do not match" */
static inline void shapes_differ(const char *kernel) {
    PyErr_Format(PyExc_ValueError, "%s: shapes do not match", kernel);
}

/* A kernel's scratch memory; NULL with MemoryError set when there is none */
static inline void *scratch(size_t bytes) {
    void *p = PyMem_RawMalloc(bytes);
    if (p == NULL) PyErr_NoMemory();
    return p;
}

/* Python entry points (arguments and what they write: each kernel's comment) */
PyObject *best_path(PyObject *self, PyObject *args);
PyObject *centred_frames(PyObject *self, PyObject *args);
PyObject *yin_dips(PyObject *self, PyObject *args);
PyObject *yin_candidates(PyObject *self, PyObject *args);
PyObject *glottal_run(PyObject *self, PyObject *args);
PyObject *cycle_amplitudes(PyObject *self, PyObject *args);
PyObject *vad_levels(PyObject *self, PyObject *args);
PyObject *vad_decide(PyObject *self, PyObject *args);
PyObject *hysteresis(PyObject *self, PyObject *args);

#endif
