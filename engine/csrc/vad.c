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

/* vad_decide(levels, other, heard, state, floor_db, margin_db, voiced_floor_db, leak_db, rise_db, hangover, codes):
 * engine/vad.py's per-frame test of one track, for n frames in order. levels and other (float64, n): the
 * frames' levels and the other track's, dBFS; heard (n bytes): webrtcvad's verdicts; state (float64, 2): the
 * track's noise floor (dB) and the frames since the strict test last passed, carried from block to block.
 * codes (n bytes) out: 1 speech by the strict test (webrtcvad and above both floors), 2 a frame only the voicing
 * test can make speech (within ``hangover`` frames of strict speech, above the voiced and relative floors and
 * the other track's leak), 0 not speech. The noise floor drops to a quieter frame at once and otherwise rises
 * by rise_db. Returns how many frames got code 2. Comparisons and sums as engine/vad.py's Python made them
 * (max(a, b) keeps a unless b > a), so the codes are the same bit for bit. */
PyObject *vad_decide(PyObject *self, PyObject *args) {
    Py_buffer lv_b, ot_b, hd_b, st_b, co_b;
    double floor_db, margin, voiced_floor, leak, rise;
    long long hangover;
    if (!PyArg_ParseTuple(args, "y*y*y*w*dddddLw*", &lv_b, &ot_b, &hd_b, &st_b, &floor_db, &margin, &voiced_floor,
                          &leak, &rise, &hangover, &co_b))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = co_b.len;
    if (lv_b.len != n * (Py_ssize_t)sizeof(double) || ot_b.len != lv_b.len || hd_b.len != n ||
        st_b.len != 2 * (Py_ssize_t)sizeof(double)) {
        shapes_differ("vad_decide");
        goto done;
    }
    const double *level = lv_b.buf, *other = ot_b.buf;
    const uint8_t *heard = hd_b.buf;
    double *state = st_b.buf;
    uint8_t *codes = co_b.buf;
    double noise = state[0], since = state[1];
    long long voiced = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double relative = noise + margin;
        double lowest = relative > floor_db ? relative : floor_db;
        double lowest_voiced = relative > voiced_floor ? relative : voiced_floor;
        if (heard[i] && level[i] > lowest) {
            codes[i] = 1;
            since = 0.0;
        } else if (since < (double)hangover && level[i] > lowest_voiced && level[i] > other[i] - leak) {
            codes[i] = 2;
            voiced++;
        } else {
            codes[i] = 0;
        }
        since += 1.0;
        if (level[i] < noise)
            noise = level[i];
        else
            noise += rise;
    }
    state[0] = noise;
    state[1] = since;
    result = PyLong_FromLongLong(voiced);
done:
    RELEASE_ALL(&lv_b, &ot_b, &hd_b, &st_b, &co_b);
    return result;
}

/* hysteresis(flags, state, onset, hangover, out): engine/vad.py's Hysteresis for n frames of speech flags
 * (n bytes, nonzero: speech). state (int64, 5): the frame count, the run of speech frames, the run of quiet
 * frames while a span is open, the open span's first frame (-1: none) and its last speech frame, carried from
 * block to block. out (int64, n x 3): per frame, the open span's first frame after it (-1: none), and the span
 * it closed, first and end frame (-1, -1: none). */
PyObject *hysteresis(PyObject *self, PyObject *args) {
    Py_buffer fl_b, st_b, out_b;
    long long onset, hangover;
    if (!PyArg_ParseTuple(args, "y*w*LLw*", &fl_b, &st_b, &onset, &hangover, &out_b)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = fl_b.len;
    if (st_b.len != 5 * (Py_ssize_t)sizeof(int64_t) || out_b.len != 3 * n * (Py_ssize_t)sizeof(int64_t)) {
        shapes_differ("hysteresis");
        goto done;
    }
    const uint8_t *flags = fl_b.buf;
    int64_t *s = st_b.buf, *out = out_b.buf;
    int64_t frame = s[0], run = s[1], quiet = s[2], start = s[3], last = s[4];
    for (Py_ssize_t i = 0; i < n; i++, frame++) {
        int64_t closed_start = -1, closed_end = -1;
        if (flags[i]) {
            run++;
            quiet = 0;
            last = frame;
            if (start < 0 && run >= onset) start = frame - onset + 1;
        } else {
            run = 0;
            if (start >= 0 && ++quiet >= hangover) {
                closed_start = start;
                closed_end = last + 1;
                start = -1;
            }
        }
        out[3 * i] = start;
        out[3 * i + 1] = closed_start;
        out[3 * i + 2] = closed_end;
    }
    s[0] = frame, s[1] = run, s[2] = quiet, s[3] = start, s[4] = last;
    result = Py_NewRef(Py_None);
done:
    RELEASE_ALL(&fl_b, &st_b, &out_b);
    return result;
}
