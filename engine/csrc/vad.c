/* engine/vad.py's per-frame offsets and levels. */
#include "kernels.h"

/* vad_levels(block, frames, levels): engine/vad.py's _prepare for whole 160-sample frames of int16 audio:
 * each frame without its mean when that (truncated toward zero) is 64 or more in magnitude, clipped to int16,
 * into frames; its level in dBFS (10 log10 of its mean square over full scale's; -100 at or below 1e-10) into
 * levels (float64). Sums of integer squares are exact in float64, so the levels are numpy's bit for bit. */
PyObject *vad_levels(PyObject *self, PyObject *args) {
    Py_buffer in_b, out_b, levels_b;
    if (!PyArg_ParseTuple(args, "y*w*w*", &in_b, &out_b, &levels_b)) return NULL;
    PyObject *result = NULL;
    const Py_ssize_t frame = 160;
    Py_ssize_t n = levels_b.len / (Py_ssize_t)sizeof(double);
    if (in_b.len != n * frame * 2 || out_b.len != in_b.len || levels_b.len != n * (Py_ssize_t)sizeof(double)) {
        shapes_differ("vad_levels");
        goto done;
    }
    const int16_t *in = in_b.buf;
    int16_t *out = out_b.buf;
    double *levels = levels_b.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t f = 0; f < n; f++) {
        const int16_t *x = in + f * frame;
        int16_t *y = out + f * frame;
        int64_t sum = 0;
        for (Py_ssize_t j = 0; j < frame; j++) sum += x[j];
        int64_t mean = (int64_t)trunc((double)sum / (double)frame);
        double power = 0.0;
        for (Py_ssize_t j = 0; j < frame; j++) {
            int32_t v = x[j];
            if (mean >= 64 || mean <= -64) {
                v -= (int32_t)mean;
                v = v < -32768 ? -32768 : v > 32767 ? 32767 : v;
            }
            y[j] = (int16_t)v;
            power += (double)v * (double)v;
        }
        power /= (double)frame * 1073741824.0; /* frame * 32768 ** 2 */
        levels[f] = power > 1e-10 ? 10.0 * log10(power) : -100.0;
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    RELEASE_ALL(&in_b, &out_b, &levels_b);
    return result;
}
