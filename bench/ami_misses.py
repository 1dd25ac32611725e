"""Why the AMI excerpt misses its speech-F1 and turn targets (issue 3): the figures the README quotes.

    .venv/bin/python bench/ami_misses.py        # ~20 s

For the outbound track of ami_es2004_a it prints:
- the reference frames the VAD misses, by what they are: under the -60 dBFS floor, within 12 dB of the
  track's tracked background, 20 dB or more under the other track at the same moment (its leak's level);
- the F1 of "oracle" detectors that know the reference and only refuse frames a level test could not tell
  from background or leak: the ceiling of any such test;
- the coherence of the two tracks where only the other party speaks: how much of the leak a linear
  (echo-canceller) filter of the other track could explain;
- speech F1 and the turn figure for other absolute floors, and the turn figure for other holds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import signal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from analysis import DATA, mask, merged_reference, rows, tracks_of

from engine.turns import Turn, TurnTracker
from engine.vad import FRAME, CallVad, frame_db

CALL = DATA / "ami_es2004_a"


def run(inbound: np.ndarray, outbound: np.ndarray, **vad_options: float) -> tuple[dict[str, np.ndarray], list[Turn]]:
    """Frame speech flags (as spans, the hangover included) per track and the turns, with these VAD options."""
    vad, tracker = CallVad(**vad_options), TurnTracker()  # type: ignore[arg-type]
    n = min(len(inbound), len(outbound)) // FRAME
    flags = {"inbound": np.zeros(n, bool), "outbound": np.zeros(n, bool)}
    turns: list[Turn] = []
    for k in range(n):
        out = vad.push(inbound[k * FRAME : (k + 1) * FRAME], outbound[k * FRAME : (k + 1) * FRAME])
        for track, (_, span) in out.items():
            if span:
                flags[track][span.start : span.end] = True
        turns += [e for e in tracker.push({t: s for t, (s, _) in out.items()}) if isinstance(e, Turn)]
    for track, span in vad.flush().items():
        if span:
            flags[track][span.start : span.end] = True
    return flags, turns + [e for e in tracker.flush() if isinstance(e, Turn)]


def f1(pred: np.ndarray, ref: np.ndarray, care: np.ndarray) -> float:
    tp = int((pred & ref & care).sum())
    p, r = tp / max(int((pred & care).sum()), 1), tp / max(int((ref & care).sum()), 1)
    return 2 * p * r / max(p + r, 1e-9)


def matched(turns: list[Turn], reference: list[dict[str, str]], hold_ms: int) -> tuple[int, int]:
    refs = [(t, a, b) for t in ("inbound", "outbound") for a, b in merged_reference(reference, t, hold_ms)]
    hits = sum(
        any(f.track == t and abs(f.start_ms - a) <= 250 and abs(f.end_ms - b) <= 250 for f in turns) for t, a, b in refs
    )
    return hits, len(refs)


def main() -> None:
    inbound, outbound = tracks_of(CALL)
    n = min(len(inbound), len(outbound)) // FRAME
    reference = rows(CALL / "turns.csv")
    dont_care = rows(CALL / "unannotated_activity.csv")
    ref = {t: mask(reference, t, n) for t in ("inbound", "outbound")}
    care = {t: ~mask(dont_care, t, n) for t in ("inbound", "outbound")}
    level = {
        t: np.array(
            [frame_db(x[k * FRAME : (k + 1) * FRAME] - int(np.mean(x[k * FRAME : (k + 1) * FRAME]))) for k in range(n)]
        )
        for t, x in (("inbound", inbound), ("outbound", outbound))
    }
    vad = CallVad()
    noise = np.zeros(n)
    for k in range(n):  # the tracked background of the outbound track, as the VAD sees it before each frame
        noise[k] = vad.noise_db("outbound")
        vad.push(inbound[k * FRAME : (k + 1) * FRAME], outbound[k * FRAME : (k + 1) * FRAME])
    flags, _ = run(inbound, outbound)
    t = "outbound"
    missed = ref[t] & care[t] & ~flags[t]
    under_floor = missed & (level[t] < -60)
    near_noise = missed & (level[t] < noise + 12)
    at_leak = missed & (level[t] <= level["inbound"] - 20)
    print(
        f"ami_es2004_a outbound: {int((ref[t] & care[t]).sum())} reference frames (20 ms), "
        f"VAD F1 {f1(flags[t], ref[t], care[t]):.3f}"
    )
    print(
        f"  missed {int(missed.sum())}: {int(under_floor.sum())} under -60 dBFS, {int(near_noise.sum())} within "
        f"12 dB of the background, {int(at_leak.sum())} 20 dB or more under the inbound track (the leak's level)"
    )
    audible = ref[t] & (level[t] >= noise + 12)
    not_leak = ref[t] & (level[t] > level["inbound"] - 20)
    print("  oracle detectors (the reference, minus what a level test cannot tell apart), F1:")
    print(f"    every reference frame 12 dB over the background: {f1(audible, ref[t], care[t]):.3f}")
    print(f"    every reference frame less than 20 dB under the other track: {f1(not_leak, ref[t], care[t]):.3f}")
    far_only = ~ref[t] & ref["inbound"] & (level["inbound"] > -45)
    idx = np.flatnonzero(far_only)
    near = np.concatenate([outbound[k * FRAME : (k + 1) * FRAME] for k in idx]).astype(float)
    far = np.concatenate([inbound[k * FRAME : (k + 1) * FRAME] for k in idx]).astype(float)
    freqs, coh = signal.coherence(far, near, fs=8000, nperseg=256)
    low, high = coh[freqs < 500], coh[(freqs >= 500) & (freqs <= 3400)]
    print(
        f"  coherence of the tracks over {len(idx)} frames where only the inbound party speaks: mean {low.mean():.2f} "
        f"under 500 Hz, {high.mean():.2f} (max {high.max():.2f}) over 500-3400 Hz"
    )
    print("absolute floor: outbound F1, inbound F1, turns matched (hold 500 ms)")
    for floor in (-55.0, -60.0, -65.0, -70.0):
        fl, tu = run(inbound, outbound, floor_db=floor)
        hits, total = matched(tu, reference, 500)
        print(
            f"  {floor:.0f} dBFS: {f1(fl['outbound'], ref['outbound'], care['outbound']):.3f}, "
            f"{f1(fl['inbound'], ref['inbound'], care['inbound']):.3f}, {hits}/{total}"
        )
    print("hold: turns matched (the reference merged at the same hold)")
    line = []
    for hold in (300, 400, 500, 600, 700, 800):
        vad, tracker = CallVad(), TurnTracker(hold_ms=hold)
        found: list[Turn] = []
        for k in range(n):
            out = vad.push(inbound[k * FRAME : (k + 1) * FRAME], outbound[k * FRAME : (k + 1) * FRAME])
            found += [e for e in tracker.push({tr: s for tr, (s, _) in out.items()}) if isinstance(e, Turn)]
        found += [e for e in tracker.flush() if isinstance(e, Turn)]
        hits, total = matched(found, reference, hold)
        line.append(f"{hold} ms {hits}/{total}")
    print("  " + ", ".join(line))


if __name__ == "__main__":
    main()
