/* engine/pitch.py's frame-by-frame steps: YIN's d, d' and dips, each candidate's parabola and windowed-sinc
 * peaks, and the Viterbi path. */
#include "kernels.h"

/* The largest value of a sequence within one lag of a point, by windowed-sinc interpolation: at[t] holds the
 * sequence at the taps around the point, weights (offsets x taps) evaluate it at the offsets between
 * (engine/pitch.py's _sinc_table); then a parabola between the best interpolated points. */
static double interpolated_peak(const double *at, const double *weights, Py_ssize_t offsets, Py_ssize_t taps) {
    double curve[64] = {0.0};
    for (Py_ssize_t o = 0; o < offsets; o++) {
        double sum = 0.0;
        for (Py_ssize_t t = 0; t < taps; t++) sum += at[t] * weights[o * taps + t];
        curve[o] = sum;
    }
    Py_ssize_t best = argmax_first(curve, offsets);
    best = best < 1 ? 1 : best > offsets - 2 ? offsets - 2 : best;
    return parabola(curve[best - 1], curve[best], curve[best + 1], NULL);
}

static double fold(double v) { return v > 1.0 ? 1.0 / (v > 1e-12 ? v : 1e-12) : v; } /* overshoot above 1 */

/* centred_frames(buf, first, hop, length, window, out, peak): engine/pitch.py's framing before its FFTs. Frame f
 * is buf[first + f hop : first + f hop + length] minus its mean (numpy's, bit for bit), times window (float64,
 * length; empty: none), into row f of out (count x row, row >= length: zeros after the frame, the FFT's padding);
 * with peak (count; empty: none), each frame's largest absolute value after that. The frames must lie in buf. */
PyObject *centred_frames(PyObject *self, PyObject *args) {
    Py_buffer buf_b, win_b, out_b, peak_b;
    Py_ssize_t first, hop, length, row;
    if (!PyArg_ParseTuple(args, "y*nnny*w*nw*", &buf_b, &first, &hop, &length, &win_b, &out_b, &row, &peak_b))
        return NULL;
    PyObject *result = NULL;
    const Py_ssize_t D = (Py_ssize_t)sizeof(double);
    Py_ssize_t count = row > 0 ? out_b.len / D / row : 0;
    if (length < 1 || hop < 1 || first < 0 || row < length || out_b.len != count * row * D ||
        (win_b.len != 0 && win_b.len != length * D) || (peak_b.len != 0 && peak_b.len != count * D) ||
        (count > 0 && first + (count - 1) * hop + length > buf_b.len / D)) {
        shapes_differ("centred_frames");
        goto done;
    }
    const double *buf = buf_b.buf, *window = win_b.len ? win_b.buf : NULL;
    double *out = out_b.buf, *peak = peak_b.len ? peak_b.buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t f = 0; f < count; f++) {
        const double *x = buf + first + f * hop;
        double *y = out + f * row;
        double mean = pairwise_sum(x, length) / (double)length, top = 0.0;
        for (Py_ssize_t j = 0; j < length; j++) {
            double v = x[j] - mean;
            if (window != NULL) v *= window[j];
            y[j] = v;
            double a = fabs(v);
            if (a > top) top = a;
        }
        for (Py_ssize_t j = length; j < row; j++) y[j] = 0.0;
        if (peak != NULL) peak[f] = top;
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    RELEASE_ALL(&buf_b, &win_b, &out_b, &peak_b);
    return result;
}

/* yin_dips(block, r, width, tau_min, tau_max, threshold, d, dn, e_lag, depth, yin, power): engine/pitch.py's
 * _candidates after its FFTs, YIN's steps 1-4 frame by frame. block: (nb, frame) mean-removed frames; r:
 * (nb, n_fft) their YIN cross-correlation. Writes d(tau) = e(0) + e(tau) - 2 r(tau) (floored at 0), d'(tau) =
 * d(tau) tau / sum_{1..tau} d, e(tau) (the window's energy at lag tau), each (nb, tau_max + 1); each d' dip's
 * depth (inf elsewhere) over the lags tau_min..tau_max - 1, (nb, tau_max - tau_min); YIN's pick (the first dip
 * below the threshold, else the deepest: an index into depth, intp) and the frame's sum of squares. */
PyObject *yin_dips(PyObject *self, PyObject *args) {
    Py_buffer block_b, r_b, d_b, dn_b, el_b, depth_b, yin_b, power_b;
    Py_ssize_t width, tau_min, tau_max;
    double threshold;
    if (!PyArg_ParseTuple(args, "y*y*nnndw*w*w*w*w*w*", &block_b, &r_b, &width, &tau_min, &tau_max, &threshold,
                          &d_b, &dn_b, &el_b, &depth_b, &yin_b, &power_b))
        return NULL;
    PyObject *result = NULL;
    const Py_ssize_t D = (Py_ssize_t)sizeof(double);
    Py_ssize_t nb = power_b.len / D, lags = tau_max + 1, search = tau_max - tau_min;
    Py_ssize_t frame = nb > 0 ? block_b.len / D / nb : 0, n_fft = nb > 0 ? r_b.len / D / nb : 0;
    if (nb == 0 || tau_min < 1 || search < 1 || width < 1 || frame < width + lags - 1 || n_fft < lags ||
        block_b.len != nb * frame * D || r_b.len != nb * n_fft * D || d_b.len != nb * lags * D ||
        dn_b.len != d_b.len || el_b.len != d_b.len || depth_b.len != nb * search * D ||
        yin_b.len != nb * (Py_ssize_t)sizeof(Py_ssize_t)) {
        shapes_differ("yin_dips");
        goto done;
    }
    double *energy = scratch((size_t)(frame + 1) * sizeof(double));
    if (energy == NULL) goto done;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t f = 0; f < nb; f++) {
        const double *x = (const double *)block_b.buf + f * frame, *r = (const double *)r_b.buf + f * n_fft;
        double *d = (double *)d_b.buf + f * lags, *dn = (double *)dn_b.buf + f * lags;
        double *e_lag = (double *)el_b.buf + f * lags, *depth = (double *)depth_b.buf + f * search;
        energy[0] = 0.0;
        for (Py_ssize_t j = 0; j < frame; j++) energy[j + 1] = energy[j] + x[j] * x[j];
        ((double *)power_b.buf)[f] = energy[frame];
        for (Py_ssize_t t = 0; t < lags; t++) e_lag[t] = energy[width + t] - energy[t];
        double total = 0.0;
        dn[0] = 1.0;
        for (Py_ssize_t t = 0; t < lags; t++) {
            d[t] = floor_at(e_lag[0] + e_lag[t] - 2.0 * r[t], 0.0);
            if (t > 0) {
                total = t == 1 ? d[1] : total + d[t];
                dn[t] = d[t] * (double)t / floor_at(total, 1e-300);
            }
        }
        Py_ssize_t yin = -1, deepest = 0, first_below = -1;
        double deepest_depth = INFINITY;
        for (Py_ssize_t u = 0; u < search && first_below < 0; u++)
            if (dn[tau_min + u] < threshold) first_below = u;
        for (Py_ssize_t u = 0; u < search; u++) {
            double v = dn[tau_min + u];
            int dip = v < dn[tau_min + u - 1] && v <= dn[tau_min + u + 1];
            depth[u] = dip ? v : INFINITY; /* never NaN: a dip compared true */
            if (dip && first_below >= 0 && u >= first_below && yin < 0) yin = u;
            if (depth[u] < deepest_depth) { /* numpy's argmin: the first smallest */
                deepest = u;
                deepest_depth = depth[u];
            }
        }
        ((Py_ssize_t *)yin_b.buf)[f] = yin >= 0 ? yin : deepest;
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(energy);
    result = Py_NewRef(Py_None);
done:
    RELEASE_ALL(&block_b, &r_b, &d_b, &dn_b, &el_b, &depth_b, &yin_b, &power_b);
    return result;
}

/* yin_candidates(idx, d, dn, e_lag, r, ac, window_ac, weights, offsets, lag_min, lag_max, lag, ap, xcorr, peak,
 * valid): the rest of _candidates for the k candidate lags idx (nb, k) of each frame (YIN's pick and the next
 * deepest dips): the lag refined by a parabola through d, d' there (ap), the normalised cross-correlation
 * r / sqrt(e(0) e(tau)) (-1 where no dip) and the Hann-windowed autocorrelation ac (nb, n_fft_ac) over the
 * window's own (window_ac), each at its interpolated peak (weights: (offsets, taps), engine/pitch.py's
 * _sinc_table, taps at lag - taps/2 + 1 ... lag + taps/2), and whether the lag is a dip (uint8). */
PyObject *yin_candidates(PyObject *self, PyObject *args) {
    Py_buffer idx_b, d_b, dn_b, el_b, r_b, ac_b, win_b, w_b, lag_b, ap_b, xc_b, peak_b, valid_b;
    Py_ssize_t offsets;
    double lag_min, lag_max;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*nddw*w*w*w*w*", &idx_b, &d_b, &dn_b, &el_b, &r_b, &ac_b, &win_b,
                          &w_b, &offsets, &lag_min, &lag_max, &lag_b, &ap_b, &xc_b, &peak_b, &valid_b))
        return NULL;
    PyObject *result = NULL;
    const Py_ssize_t D = (Py_ssize_t)sizeof(double);
    Py_ssize_t lags = win_b.len / D, nb = lags > 0 ? d_b.len / D / lags : 0;
    Py_ssize_t k = nb > 0 ? lag_b.len / D / nb : 0, taps = offsets > 0 ? w_b.len / D / offsets : 0;
    Py_ssize_t n_fft = nb > 0 ? r_b.len / D / nb : 0, n_fft_ac = nb > 0 ? ac_b.len / D / nb : 0;
    if (nb == 0 || lags < 3 || k < 1 || offsets < 3 || offsets > 64 || taps < 1 || taps > 64 ||
        w_b.len != offsets * taps * D || d_b.len != nb * lags * D || dn_b.len != d_b.len || el_b.len != d_b.len ||
        n_fft < lags || n_fft_ac < lags || r_b.len != nb * n_fft * D || ac_b.len != nb * n_fft_ac * D ||
        idx_b.len != nb * k * (Py_ssize_t)sizeof(Py_ssize_t) || lag_b.len != nb * k * D || ap_b.len != lag_b.len ||
        xc_b.len != lag_b.len || peak_b.len != lag_b.len || valid_b.len != nb * k) {
        shapes_differ("yin_candidates");
        goto done;
    }
    const Py_ssize_t *idx_all = idx_b.buf;
    for (Py_ssize_t c = 0; c < nb * k; c++)
        if (idx_all[c] < 1 || idx_all[c] > lags - 2) {
            PyErr_SetString(PyExc_ValueError, "yin_candidates: a candidate lag is out of range");
            goto done;
        }
    const double *weights = w_b.buf, *window = win_b.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t f = 0; f < nb; f++) {
        const Py_ssize_t *idx = idx_all + f * k;
        const double *d = (const double *)d_b.buf + f * lags, *dn = (const double *)dn_b.buf + f * lags;
        const double *e_lag = (const double *)el_b.buf + f * lags, *r = (const double *)r_b.buf + f * n_fft;
        const double *ac = (const double *)ac_b.buf + f * n_fft_ac;
        double *lag = (double *)lag_b.buf + f * k, *ap = (double *)ap_b.buf + f * k;
        double *xcorr = (double *)xc_b.buf + f * k, *peak = (double *)peak_b.buf + f * k;
        uint8_t *valid = (uint8_t *)valid_b.buf + f * k;
        double ac0 = floor_at(ac[0], 1e-300);
        for (Py_ssize_t c = 0; c < k; c++) {
            Py_ssize_t i = idx[c];
            double v = dn[i], shift, at_r[64], at_ac[64];
            valid[c] = v < dn[i - 1] && v <= dn[i + 1];
            /* YIN step 5: the lag refined by a parabola through the raw d (d' is biased by its normalisation) */
            parabola(d[i - 1], d[i], d[i + 1], &shift);
            double l = (double)i + shift;
            lag[c] = l < lag_min ? lag_min : l > lag_max ? lag_max : l;
            ap[c] = v;
            for (Py_ssize_t t = 0; t < taps; t++) {
                Py_ssize_t j = i - taps / 2 + 1 + t;
                j = j < 0 ? 0 : j > lags - 1 ? lags - 1 : j;
                at_r[t] = r[j] / sqrt(floor_at(e_lag[0] * e_lag[j], 1e-300));
                at_ac[t] = ac[j] / ac0 / window[j];
            }
            xcorr[c] = valid[c] ? fold(interpolated_peak(at_r, weights, offsets, taps)) : -1.0;
            peak[c] = fold(interpolated_peak(at_ac, weights, offsets, taps));
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    RELEASE_ALL(&idx_b, &d_b, &dn_b, &el_b, &r_b, &ac_b, &win_b, &w_b, &lag_b, &ap_b, &xc_b, &peak_b, &valid_b);
    return result;
}


/* best_path(strength, log_f, states, jump_cost, voicing_cost, path): Viterbi over (n, states) row-major
 * float64 arrays, the last state "unvoiced"; writes the best state per frame (intp) into path. */
PyObject *best_path(PyObject *self, PyObject *args) {
    Py_buffer strength, log_f, path;
    Py_ssize_t s;
    double jump_cost, voicing_cost;
    if (!PyArg_ParseTuple(args, "y*y*nddw*", &strength, &log_f, &s, &jump_cost, &voicing_cost, &path)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = s > 0 ? strength.len / (Py_ssize_t)sizeof(double) / s : 0;
    if (s <= 0 || strength.len != n * s * (Py_ssize_t)sizeof(double) || log_f.len != strength.len ||
        path.len != n * (Py_ssize_t)sizeof(Py_ssize_t)) {
        shapes_differ("best_path");
        goto done;
    }
    if (n == 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    const double *st = strength.buf, *lf = log_f.buf;
    Py_ssize_t *out = path.buf;
    Py_ssize_t *back = scratch((size_t)(n * s) * sizeof(Py_ssize_t));
    double *score = back != NULL ? scratch((size_t)s * 3 * sizeof(double)) : NULL;
    if (score == NULL) {
        PyMem_RawFree(back);
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
    RELEASE_ALL(&strength, &log_f, &path);
    return result;
}
