/* Compiled inner loops of the turn analysis: the ones that walk frame by frame, lag by lag or cycle by cycle,
 * where numpy takes dozens of calls and temporaries per step (engine/pitch.py's candidates after their FFTs and
 * its Viterbi path; engine/voice_quality.py's glottal marks and cycle amplitudes; engine/vad.py's frame levels,
 * per-frame speech test and hysteresis).
 * Each does the arithmetic of the numpy code it replaced (tests/kernel_reference.py), in the same order, so
 * YIN's d, d' and picks, the Viterbi path and the frame levels are bit-identical; sums over taps and samples
 * (numpy took them from BLAS or its pairwise sum) differ in the last bits.
 *
 * Arrays come in through the buffer protocol ("y*": C-contiguous, any writer; "w*": writable), float64 unless
 * said otherwise; the Python wrappers own the shapes, the kernels check the sizes. Built with
 * -ffp-contract=off: a fused multiply-add would round differently from numpy's separate multiply and add.
 * No GIL is held while a kernel runs, so a host's measuring thread and its push thread can run at once.
 *
 * This file is the module (engine._kernels) and its method table; the kernels are in pitch.c, voice.c and
 * vad.c, their shared helpers in kernels.h.
 */
#include "kernels.h"

static PyMethodDef methods[] = {
    {"best_path", best_path, METH_VARARGS, "Viterbi over (n, states) scores; see engine/pitch.py _best_path."},
    {"glottal_run", glottal_run, METH_VARARGS, "Glottal marks of one voiced run; see engine/voice_quality.py."},
    {"centred_frames", centred_frames, METH_VARARGS, "Frames without their mean, windowed; see engine/pitch.py."},
    {"yin_dips", yin_dips, METH_VARARGS, "YIN's d, d' and dips after the FFTs; see engine/pitch.py."},
    {"yin_candidates", yin_candidates, METH_VARARGS, "Pitch candidates at given lags; see engine/pitch.py."},
    {"vad_levels", vad_levels, METH_VARARGS, "Frame offsets and levels for the VAD; see engine/vad.py."},
    {"vad_decide", vad_decide, METH_VARARGS, "A track's per-frame speech test for the VAD; see engine/vad.py."},
    {"hysteresis", hysteresis, METH_VARARGS, "Speech flags to spans, onset and hangover; see engine/vad.py."},
    {"cycle_amplitudes", cycle_amplitudes, METH_VARARGS, "Hann-weighted RMS around marks; see voice_quality.py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "Compiled inner loops of engine/.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
