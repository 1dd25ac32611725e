# Types of the compiled inner loops (engine/csrc/): C-contiguous float64 arrays unless noted.
from typing import Any

import numpy.typing as npt

_Array = npt.NDArray[Any]

def best_path(
    strength: _Array, log_f: _Array, states: int, jump_cost: float, voicing_cost: float, path: _Array
) -> None: ...  # path: intp, written
def glottal_run(
    sig: _Array,
    energy: _Array,
    at: _Array,
    periods: _Array,
    anchor: float,
    lo: float,
    hi: float,
    min_corr: float,
    marks: _Array,
) -> int: ...  # marks written; returns how many, -1 if they did not fit
def cycle_amplitudes(sig: _Array, marks: _Array, left: _Array, right: _Array, width: int, out: _Array) -> None: ...
def centred_frames(
    buf: _Array, first: int, hop: int, length: int, window: _Array, out: _Array, row: int, peak: _Array
) -> None: ...  # out (count, row >= length) and peak (count) written; empty window or peak: none
def yin_dips(
    block: _Array,
    r: _Array,
    width: int,
    tau_min: int,
    tau_max: int,
    threshold: float,
    d: _Array,
    dn: _Array,
    e_lag: _Array,
    depth: _Array,
    yin: _Array,
    power: _Array,
) -> None: ...  # d, dn, e_lag, depth, yin (intp), power written
def yin_candidates(
    idx: _Array,
    d: _Array,
    dn: _Array,
    e_lag: _Array,
    r: _Array,
    ac: _Array,
    window_ac: _Array,
    weights: _Array,
    offsets: int,
    lag_min: float,
    lag_max: float,
    lag: _Array,
    ap: _Array,
    xcorr: _Array,
    peak: _Array,
    valid: _Array,
) -> None: ...  # idx: intp; lag, ap, xcorr, peak, valid (one byte: bool) written
def vad_levels(block: _Array, frames: _Array, levels: _Array) -> None: ...  # int16 in, int16 and float64 out
def vad_decide(
    levels: _Array,
    other: _Array,
    heard: bytes,
    state: _Array,
    floor_db: float,
    margin_db: float,
    voiced_floor_db: float,
    leak_db: float,
    rise_db: float,
    hangover: int,
    codes: _Array,
) -> int: ...  # codes: uint8, written; state: float64 (2,), updated; returns how many frames got code 2
def hysteresis(
    flags: _Array | bytes, state: _Array, onset: int, hangover: int, out: _Array
) -> None: ...  # state: int64 (5,), updated; out: int64 (n, 3), written
