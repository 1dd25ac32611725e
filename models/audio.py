"""Audio preparation for the emotion model: pure numpy, no torch (call hosts import this freely).

Every function takes 8 kHz mono audio as float32 in [-1, 1) (``as_float`` converts int16) and
returns float32. Levels are in dBFS of RMS, so a full-scale sine is -3 dBFS.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 8000
FRAME = 160  # 20 ms: the frame used for level estimates and trimming
WINDOW_S = 3.0  # long turns are scored in windows of this length ...
HOP_S = 3.0  # ... every HOP_S seconds (tiling; the last window ends at the end of the turn)
MIN_S = 0.5  # shorter input is zero-padded to this length
SILENT_DBFS = -60.0  # input whose loudest 20 ms frame is below this counts as silence
TRIM_DB = 40.0  # leading/trailing frames this far below the loudest frame are trimmed

Audio = npt.NDArray[np.float32]


def as_float(audio: npt.ArrayLike) -> Audio:
    """int16 PCM (or any float array) to float32 mono in [-1, 1); shape ``(n,)``."""
    x = np.asarray(audio)
    if x.dtype == np.int16:
        return x.astype(np.float32) / 32768.0
    return np.nan_to_num(x.astype(np.float32).reshape(-1), nan=0.0, posinf=0.0, neginf=0.0)


def frame_db(x: Audio, frame: int = FRAME) -> npt.NDArray[np.float64]:
    """RMS level of each whole ``frame``-sample frame in dBFS (floor -120); shape ``(len(x) // frame,)``."""
    n = len(x) // frame
    if n == 0:
        return np.zeros(0)
    frames = x[: n * frame].astype(np.float64).reshape(n, frame)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return np.asarray(20.0 * np.log10(np.maximum(rms, 1e-6)))


def active_level_db(x: Audio) -> float:
    """The level of the loud part of ``x``: the 90th percentile of its 20 ms frame levels (dBFS)."""
    db = frame_db(x)
    if db.size == 0:
        return -120.0
    return float(np.percentile(db, 90))


def trim(x: Audio, *, below_db: float = TRIM_DB, margin_frames: int = 5) -> Audio:
    """``x`` without leading and trailing frames more than ``below_db`` under its loudest frame
    (keeping ``margin_frames`` 20 ms frames either side). Silence and very short input come back unchanged."""
    db = frame_db(x)
    if db.size == 0 or db.max() < SILENT_DBFS:
        return x
    loud = np.flatnonzero(db > db.max() - below_db)
    start = max(0, int(loud[0]) - margin_frames) * FRAME
    end = min(len(x), (int(loud[-1]) + 1 + margin_frames) * FRAME)
    return x[start:end]


def is_silent(x: Audio) -> bool:
    db = frame_db(x)
    peak = db.max() if db.size else 20.0 * np.log10(max(float(np.sqrt(np.mean(x**2))) if len(x) else 0.0, 1e-6))
    return bool(peak < SILENT_DBFS)


def windows(x: Audio, *, window_s: float = WINDOW_S, hop_s: float = HOP_S) -> list[Audio]:
    """Cut ``x`` into windows of ``window_s`` every ``hop_s`` seconds; the last window ends at the end
    of ``x``. Input of at most one window is one window (zero-padded to MIN_S)."""
    win, hop = int(window_s * SAMPLE_RATE), int(hop_s * SAMPLE_RATE)
    if len(x) <= win:
        short = int(MIN_S * SAMPLE_RATE)
        return [np.pad(x, (0, short - len(x))) if len(x) < short else x]
    starts = list(range(0, len(x) - win + 1, hop))
    if starts[-1] + win < len(x):
        starts.append(len(x) - win)
    return [x[s : s + win] for s in starts]
