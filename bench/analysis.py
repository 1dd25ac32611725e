"""Turn-analysis accuracy and cost, on the shared calls (MISE_TEST_DATA, default ../shared/data).

    .venv/bin/python bench/analysis.py

So far: frame-level speech F1 per track of engine/vad.py against each call's turns.csv, ignoring the
spans of unannotated_activity.csv (speech or noise the reference does not annotate), and the CPU cost
of the VAD as a real-time factor. Turn matching, backchannels and latency come with the turn tracker.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.vad import FRAME_MS, spans_of  # noqa: E402

DATA = Path(os.environ.get("MISE_TEST_DATA", REPO.parent / "shared" / "data")) / "calls"


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def mask(rows: list[dict[str, str]], track: str, frames: int) -> np.ndarray:
    m = np.zeros(frames, dtype=bool)
    for r in rows:
        if r["track"] == track:
            m[int(float(r["start_s"]) * 1000 // FRAME_MS) : int(np.ceil(float(r["end_s"]) * 1000 / FRAME_MS))] = True
    return m


def speech_f1(call: Path) -> dict[str, tuple[float, float, float]]:
    """Per track: (F1, precision, recall) of VAD frames vs reference turns, don't-care spans excluded."""
    tracks = {t: soundfile.read(call / f"{t}.wav", dtype="int16")[0] for t in ("inbound", "outbound")}
    frames = len(tracks["inbound"]) * 1000 // 8000 // FRAME_MS
    spans = spans_of(tracks["inbound"], tracks["outbound"])
    turns = rows(call / "turns.csv")
    dont_care = (rows(call / "unannotated_activity.csv")) if (call / "unannotated_activity.csv").exists() else []
    out = {}
    for track in tracks:
        pred = np.zeros(frames, dtype=bool)
        for s in spans[track]:
            pred[s.start : s.end] = True
        ref, care = mask(turns, track, frames), ~mask(dont_care, track, frames)
        tp = int((pred & ref & care).sum())
        precision, recall = tp / max(int((pred & care).sum()), 1), tp / max(int((ref & care).sum()), 1)
        out[track] = (2 * precision * recall / max(precision + recall, 1e-9), precision, recall)
    return out


def vad_rtf(call: Path, repeats: int = 3) -> float:
    tracks = [soundfile.read(call / f"{t}.wav", dtype="int16")[0] for t in ("inbound", "outbound")]
    t0 = time.process_time()
    for _ in range(repeats):
        spans_of(*tracks)
    return (time.process_time() - t0) / repeats / (len(tracks[0]) / 8000)


def main() -> None:
    print("frame-level speech F1 (precision / recall) of engine/vad.py, 20 ms frames, target >= 0.92 per track")
    for name in ("ami_es2004_a", "synthetic_dialogue"):
        for track, (f1, p, r) in speech_f1(DATA / name).items():
            print(f"  {name:20s} {track:8s} F1 {f1:.3f}  (P {p:.3f} / R {r:.3f})")
    rtf = vad_rtf(DATA / "synthetic_dialogue")
    print(f"VAD cost, both tracks: real-time factor {rtf:.4f} (CPU s per s of call, one core)")


if __name__ == "__main__":
    main()
