/* engine/voice_quality.py's cycle-by-cycle steps: the glottal-mark walk and the cycle amplitudes. */
#include "kernels.h"

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
PyObject *glottal_run(PyObject *self, PyObject *args) {
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
        shapes_differ("glottal_run");
        goto done;
    }
    double *values = scratch((size_t)(len + 1) * sizeof(double));
    if (values == NULL) goto done;
    Py_BEGIN_ALLOW_THREADS
    marks[count++] = anchor;
    for (int direction = 1; direction >= -1 && count >= 0; direction -= 2) {
        double pos = anchor;
        for (;;) {
            double period = interp1(pos, at, periods, runs);
            if (!(period >= 1.0 && period <= (double)len)) break; /* (periods are 20-134 samples) no UB cast */
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
    RELEASE_ALL(&sig_b, &energy_b, &at_b, &periods_b, &marks_b);
    return result;
}

/* cycle_amplitudes(sig, marks, left, right, width, out): Hann-weighted RMS of sig around each mark, the window
 * reaching left[i] samples before and right[i] after it, over `width` samples from ceil(mark - left)
 * (engine/voice_quality.py's _cycle_amplitudes). */
PyObject *cycle_amplitudes(PyObject *self, PyObject *args) {
    Py_buffer sig_b, marks_b, left_b, right_b, out_b;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "y*y*y*y*nw*", &sig_b, &marks_b, &left_b, &right_b, &width, &out_b)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t len = sig_b.len / (Py_ssize_t)sizeof(double), count = marks_b.len / (Py_ssize_t)sizeof(double);
    if (len == 0 || left_b.len != marks_b.len || right_b.len != marks_b.len || out_b.len != marks_b.len ||
        width < 0) {
        shapes_differ("cycle_amplitudes");
        goto done;
    }
    const double *sig = sig_b.buf, *marks = marks_b.buf, *left = left_b.buf, *right = right_b.buf;
    double *out = out_b.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t c = 0; c < count; c++) {
        double mark = marks[c], power = 0.0, weights = 0.0;
        if (!isfinite(mark - left[c])) { /* never from glottal_run's marks; no UB cast of a NaN */
            out[c] = NAN;
            continue;
        }
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
    RELEASE_ALL(&sig_b, &marks_b, &left_b, &right_b, &out_b);
    return result;
}
