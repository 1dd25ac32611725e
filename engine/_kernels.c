/* Compiled inner loops of the turn analysis: the ones that walk frame by frame or cycle by cycle, where numpy
 * can only take a few calls per step (engine/pitch.py's Viterbi, engine/voice_quality.py's glottal marks and
 * cycle amplitudes). Each does exactly the arithmetic of the numpy code it replaced, in the same order, so the
 * Viterbi path is bit-identical; sums over samples differ from numpy's (BLAS, pairwise) in the last bits.
 *
 * Arrays come in through the buffer protocol ("y*": C-contiguous, any writer; "w*": writable), float64 or
 * intp as the Python wrappers pass them; the wrappers own the shapes. Built with -ffp-contract=off: a fused
 * multiply-add would round differently from numpy's separate multiply and add. No GIL is held while a kernel
 * runs, so a host's measuring thread and its push thread can run at once.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

/* numpy's argmax (first maximum; the first NaN if there is one) */
static Py_ssize_t argmax_first(const double *v, Py_ssize_t n) {
    Py_ssize_t best = 0;
    if (isnan(v[0])) return 0;
    for (Py_ssize_t j = 1; j < n; j++) {
        if (isnan(v[j])) return j;
        if (v[j] > v[best]) best = j;
    }
    return best;
}

/* best_path(strength, log_f, states, jump_cost, voicing_cost, path): Viterbi over (n, states) row-major
 * float64 arrays, the last state "unvoiced"; writes the best state per frame (intp) into path. */
static PyObject *best_path(PyObject *self, PyObject *args) {
    Py_buffer strength, log_f, path;
    Py_ssize_t s;
    double jump_cost, voicing_cost;
    if (!PyArg_ParseTuple(args, "y*y*nddw*", &strength, &log_f, &s, &jump_cost, &voicing_cost, &path)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = s > 0 ? strength.len / (Py_ssize_t)sizeof(double) / s : 0;
    if (s <= 0 || strength.len != n * s * (Py_ssize_t)sizeof(double) || log_f.len != strength.len ||
        path.len != n * (Py_ssize_t)sizeof(Py_ssize_t)) {
        PyErr_SetString(PyExc_ValueError, "best_path: shapes do not match");
        goto done;
    }
    if (n == 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    const double *st = strength.buf, *lf = log_f.buf;
    Py_ssize_t *out = path.buf;
    Py_ssize_t *back = PyMem_RawMalloc((size_t)(n * s) * sizeof(Py_ssize_t));
    double *score = PyMem_RawMalloc((size_t)s * 3 * sizeof(double));
    if (back == NULL || score == NULL) {
        PyMem_RawFree(back);
        PyMem_RawFree(score);
        PyErr_NoMemory();
        goto done;
    }
    double *next = score + s, *total = score + 2 * s;
    Py_BEGIN_ALLOW_THREADS
    memcpy(score, st, (size_t)s * sizeof(double));
    for (Py_ssize_t i = 1; i < n; i++) {
        const double *prev_f = lf + (i - 1) * s, *cur_f = lf + i * s;
        for (Py_ssize_t k = 0; k < s; k++) {
            for (Py_ssize_t j = 0; j < s; j++) {
                int voiced_j = j < s - 1, voiced_k = k < s - 1;
                double jump = voiced_j && voiced_k ? fabs(prev_f[j] - cur_f[k]) : 0.0;
                double cost = jump_cost * jump + (voiced_j != voiced_k ? voicing_cost : 0.0);
                total[j] = score[j] - cost;
            }
            Py_ssize_t j = argmax_first(total, s);
            back[i * s + k] = j;
            next[k] = total[j] + st[i * s + k];
        }
        memcpy(score, next, (size_t)s * sizeof(double));
    }
    out[n - 1] = argmax_first(score, s);
    for (Py_ssize_t i = n - 1; i > 0; i--) out[i - 1] = back[i * s + out[i]];
    Py_END_ALLOW_THREADS
    PyMem_RawFree(back);
    PyMem_RawFree(score);
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&strength);
    PyBuffer_Release(&log_f);
    PyBuffer_Release(&path);
    return result;
}

/* np.interp(x, xp, fp) for one point, numpy's formula (engine/voice_quality.py's _interp) */
static double interp1(double x, const double *xp, const double *fp, Py_ssize_t n) {
    if (x <= xp[0]) return fp[0];
    if (x >= xp[n - 1]) return fp[n - 1];
    Py_ssize_t lo = 0, hi = n; /* bisect_right(xp, x) - 1 */
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (x < xp[mid]) hi = mid;
        else lo = mid + 1;
    }
    Py_ssize_t j = lo - 1;
    if (x == xp[j]) return fp[j];
    double slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
    double value = slope * (x - xp[j]) + fp[j];
    return isnan(value) ? slope * (x - xp[j + 1]) + fp[j + 1] : value;
}

/* glottal_run(sig, energy, at, periods, anchor, lo, hi, min_corr, marks) -> count: the marks of one voiced run,
 * from its anchor forwards then backwards (engine/voice_quality.py's glottal_marks, which documents the method),
 * written unsorted into marks (float64, the anchor first); -1 if marks is too short. energy[i] = sum sig[:i]^2. */
static PyObject *glottal_run(PyObject *self, PyObject *args) {
    Py_buffer sig_b, energy_b, at_b, periods_b, marks_b;
    double anchor, lo, hi, min_corr;
    if (!PyArg_ParseTuple(args, "y*y*y*y*ddddw*", &sig_b, &energy_b, &at_b, &periods_b, &anchor, &lo, &hi,
                          &min_corr, &marks_b))
        return NULL;
    PyObject *result = NULL;
    const double *sig = sig_b.buf, *energy = energy_b.buf, *at = at_b.buf, *periods = periods_b.buf;
    double *marks = marks_b.buf;
    Py_ssize_t len = sig_b.len / (Py_ssize_t)sizeof(double), runs = at_b.len / (Py_ssize_t)sizeof(double);
    Py_ssize_t capacity = marks_b.len / (Py_ssize_t)sizeof(double), count = 0;
    if (energy_b.len != (len + 1) * (Py_ssize_t)sizeof(double) || periods_b.len != at_b.len || runs == 0 ||
        capacity == 0) {
        PyErr_SetString(PyExc_ValueError, "glottal_run: shapes do not match");
        goto done;
    }
    double *values = PyMem_RawMalloc((size_t)(len + 1) * sizeof(double));
    if (values == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    marks[count++] = anchor;
    for (int direction = 1; direction >= -1 && count >= 0; direction -= 2) {
        double pos = anchor;
        for (;;) {
            double period = interp1(pos, at, periods, runs);
            Py_ssize_t n = (Py_ssize_t)nearbyint(period); /* Python's round(): half to even */
            if (n < 3) n = 3;
            Py_ssize_t near = (Py_ssize_t)ceil(0.8 * period), far = (Py_ssize_t)floor(1.25 * period);
            Py_ssize_t ref = (Py_ssize_t)nearbyint(pos - (double)n / 2.0);
            Py_ssize_t first = direction > 0 ? ref + near : ref - far;
            Py_ssize_t last = first + far - near;
            if (ref < 0 || first < 0 || ref + n > len || last + n > len) break;
            Py_ssize_t lags = last - first + 1;
            if (lags <= 0) break; /* numpy's correlate of a shorter signal than the kernel: no lag to take */
            double ref_energy = energy[ref + n] - energy[ref];
            for (Py_ssize_t t = 0; t < lags; t++) {
                double product = 0.0;
                const double *a = sig + first + t, *b = sig + ref;
                for (Py_ssize_t m = 0; m < n; m++) product += a[m] * b[m];
                double norm = sqrt((energy[first + n + t] - energy[first + t]) * ref_energy);
                values[t] = product / (norm > 1e-300 || isnan(norm) ? norm : 1e-300);
            }
            Py_ssize_t i = argmax_first(values, lags);
            double offset = 0.0;
            if (0 < i && i < lags - 1) {
                double curve = values[i - 1] - 2.0 * values[i] + values[i + 1];
                if (curve < 0) {
                    offset = 0.5 * (values[i - 1] - values[i + 1]) / curve;
                    offset = offset > -1.0 ? offset : -1.0;
                    offset = offset < 1.0 ? offset : 1.0;
                }
            }
            pos += ((double)(first + i) + offset) - (double)ref;
            if (!(lo <= pos && pos <= hi)) break;
            if (values[i] > min_corr) {
                if (count == capacity) {
                    count = -1;
                    break;
                }
                marks[count++] = pos;
            }
        }
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(values);
    result = PyLong_FromSsize_t(count);
done:
    PyBuffer_Release(&sig_b);
    PyBuffer_Release(&energy_b);
    PyBuffer_Release(&at_b);
    PyBuffer_Release(&periods_b);
    PyBuffer_Release(&marks_b);
    return result;
}

/* cycle_amplitudes(sig, marks, left, right, width, out): Hann-weighted RMS of sig around each mark, the window
 * reaching left[i] samples before and right[i] after it, over `width` samples from ceil(mark - left)
 * (engine/voice_quality.py's _cycle_amplitudes). */
static PyObject *cycle_amplitudes(PyObject *self, PyObject *args) {
    Py_buffer sig_b, marks_b, left_b, right_b, out_b;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "y*y*y*y*nw*", &sig_b, &marks_b, &left_b, &right_b, &width, &out_b)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t len = sig_b.len / (Py_ssize_t)sizeof(double), count = marks_b.len / (Py_ssize_t)sizeof(double);
    if (len == 0 || left_b.len != marks_b.len || right_b.len != marks_b.len || out_b.len != marks_b.len ||
        width < 0) {
        PyErr_SetString(PyExc_ValueError, "cycle_amplitudes: shapes do not match");
        goto done;
    }
    const double *sig = sig_b.buf, *marks = marks_b.buf, *left = left_b.buf, *right = right_b.buf;
    double *out = out_b.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t c = 0; c < count; c++) {
        double mark = marks[c], power = 0.0, weights = 0.0;
        Py_ssize_t first = (Py_ssize_t)ceil(mark - left[c]);
        for (Py_ssize_t t = 0; t < width; t++) {
            Py_ssize_t span = first + t;
            double reach = (double)span < mark ? left[c] : right[c];
            double phase = ((double)span - mark) / (reach > 1e-12 || isnan(reach) ? reach : 1e-12);
            double weight = 0.0;
            if (fabs(phase) <= 1.0 && span >= 0 && span < len) weight = 0.5 + 0.5 * cos(M_PI * phase);
            double value = sig[span < 0 ? 0 : span >= len ? len - 1 : span] * weight;
            power += value * value;
            weights += weight * weight;
        }
        out[c] = sqrt(power / (weights > 1e-300 ? weights : 1e-300));
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&sig_b);
    PyBuffer_Release(&marks_b);
    PyBuffer_Release(&left_b);
    PyBuffer_Release(&right_b);
    PyBuffer_Release(&out_b);
    return result;
}

static PyMethodDef methods[] = {
    {"best_path", best_path, METH_VARARGS, "Viterbi over (n, states) scores; see engine/pitch.py _best_path."},
    {"glottal_run", glottal_run, METH_VARARGS, "Glottal marks of one voiced run; see engine/voice_quality.py."},
    {"cycle_amplitudes", cycle_amplitudes, METH_VARARGS, "Hann-weighted RMS around marks; see voice_quality.py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "Compiled inner loops of engine/.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
