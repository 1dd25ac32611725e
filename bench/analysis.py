"""Turn-analysis accuracy and cost, on the shared calls (MISE_TEST_DATA, default ../shared/data).

    .venv/bin/python bench/analysis.py

Prints: frame-level speech F1 per track of engine/vad.py against each call's turns.csv, ignoring the
spans of unannotated_activity.csv (speech or noise the reference does not annotate); for the turns of
engine/turns.py, the share of reference turns found with both edges within +-250 ms (reference
segments on one track closer than the hold merged first), and how the reference backchannels (turns
<= 1 s inside the other track's turn) were reported; the CPU cost as a real-time factor; and, live, how
long after the end of speech the end-of-turn decision comes (stream time), how long a turn.ended event
takes to leave the call host (wall time, 1 and 50 calls per host), and the whole analysis's CPU per call.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from actors.host import CallHost  # noqa: E402
from engine.call import CallMeta  # noqa: E402
from engine.events import TURN_ENDED  # noqa: E402
from engine.g711 import encode_ulaw  # noqa: E402
from engine.pipeline import AnalysisOptions, analyze  # noqa: E402
from engine.turns import Interruption, Turn, TurnTracker, track_call  # noqa: E402
from engine.vad import FRAME_MS, spans_of  # noqa: E402

DATA = Path(os.environ.get("MISE_TEST_DATA", REPO.parent / "shared" / "data")) / "calls"


def tracks_of(call: Path) -> list[np.ndarray]:
    """A call's inbound and outbound tracks, int16 at 8 kHz."""
    return [soundfile.read(call / f"{t}.wav", dtype="int16")[0] for t in ("inbound", "outbound")]


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
    tracks = dict(zip(("inbound", "outbound"), tracks_of(call), strict=True))
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


def merged_reference(turns: list[dict[str, str]], track: str, hold_ms: int) -> list[tuple[float, float]]:
    spans = sorted((float(r["start_s"]) * 1000, float(r["end_s"]) * 1000) for r in turns if r["track"] == track)
    merged: list[list[float]] = []
    for start, end in spans:
        if merged and start - merged[-1][1] < hold_ms:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def turn_figures(call: Path) -> dict[str, object]:
    inbound, outbound = tracks_of(call)
    events = track_call(inbound, outbound)
    found = [e for e in events if isinstance(e, Turn)]
    reference = rows(call / "turns.csv")
    hold = TurnTracker().hold_ms
    refs = [(t, a, b) for t in ("inbound", "outbound") for a, b in merged_reference(reference, t, hold)]
    matched = sum(
        any(f.track == t and abs(f.start_ms - a) <= 250 and abs(f.end_ms - b) <= 250 for f in found) for t, a, b in refs
    )
    backchannels = [
        r
        for r in reference
        if float(r["end_s"]) - float(r["start_s"]) <= 1.0
        and any(
            o["track"] != r["track"]
            and float(o["start_s"]) <= float(r["start_s"])
            and float(o["end_s"]) >= float(r["end_s"])
            for o in reference
        )
    ]
    as_backchannel = as_interruption = missed = 0
    for r in backchannels:
        a, b = float(r["start_s"]) * 1000, float(r["end_s"]) * 1000
        over = [f for f in found if f.track == r["track"] and f.end_ms > a and f.start_ms < b]
        missed += not over
        as_backchannel += any(f.backchannel for f in over)
        as_interruption += any(f.interrupted_other for f in over)
    return {
        "turns": len(found),
        "reference": len(refs),
        "matched": matched,
        "backchannels": len(backchannels),
        "as_backchannel": as_backchannel,
        "as_interruption": as_interruption,
        "missed": missed,
        "interruptions": sum(isinstance(e, Interruption) for e in events),
    }


def vad_rtf(call: Path, repeats: int = 3) -> float:
    tracks = tracks_of(call)
    t0 = time.process_time()
    for _ in range(repeats):
        track_call(*tracks)
    return (time.process_time() - t0) / repeats / (len(tracks[0]) / 8000)


def pipeline_rtf(call: Path, repeats: int = 3) -> float:
    """The whole per-call analysis (VAD, turns, prosody of every turn) as a live call runs it."""
    tracks = tracks_of(call)
    t0 = time.process_time()
    for _ in range(repeats):
        analyze(*tracks, chunk_ms=50)
    return (time.process_time() - t0) / repeats / (len(tracks[0]) / 8000)


def decision_latency(call: Path) -> tuple[list[float], list[float]]:
    """Per reference turn matched by a found turn: stream time to the end-of-turn decision (the analysed
    frame plus the settle lag the live path waits for) from the reference end of speech, and from the end
    of speech the VAD found (the first includes the VAD's edge error, the second is the decision logic)."""
    tracks = tracks_of(call)
    options = AnalysisOptions()
    events, _ = analyze(*tracks, options, chunk_ms=20)
    reference, found = [], []
    for r in rows(call / "turns.csv"):
        end = float(r["end_s"]) * 1000
        for e in events:
            if e.type == TURN_ENDED and e.data["track"] == r["track"] and abs(e.data["end_ms"] - end) <= 250:
                reference.append(e.at_ms + options.settle_ms - end)
                found.append(e.at_ms + options.settle_ms - e.data["end_ms"])
    return reference, found


def event_latency(call: Path, calls: int, push_ms: int = 50, *, burst: bool = False) -> dict[str, Any]:
    """Wall time from a turn's decision to its ``turn.ended`` being published by the host (measured on
    the host's measuring thread meanwhile), and the push durations, in real time: a ``CallHost`` (the
    class the Ray actor wraps) holding ``calls`` copies of the call, fed one push per ``push_ms`` of wall
    time. Each copy plays the call from its own point (call i from i/calls of the way in, wrapping
    around), so turns end spread over time as on a real host; with ``burst`` every copy starts at the
    beginning, ``push_ms`` after the previous one, so all copies' turns end within a few seconds of each
    other: the worst case."""
    ulaw = [encode_ulaw(x) for x in tracks_of(call)]
    host = CallHost()
    sids = [f"CA{i:032d}" for i in range(calls)]
    for sid in sids:
        host.open(CallMeta("bench", sid, "MZ", "AC", ("inbound", "outbound"), {}))
    frames = len(ulaw[0]) // 160
    per_push = push_ms // 20
    lead = [i * per_push for i in range(calls)] if burst else [0] * calls  # frames before call i starts
    point = [0] * calls if burst else [i * frames // calls for i in range(calls)]  # where call i joins the call
    pushes: list[float] = []
    t0 = time.perf_counter()
    for n, tick in enumerate(range(0, frames + max(lead), per_push)):
        items = []
        for i, sid in enumerate(sids):
            for k in range(tick - lead[i], tick - lead[i] + per_push):
                if 0 <= k < frames:
                    at = (k + point[i]) % frames
                    for track, data in zip(("inbound", "outbound"), ulaw, strict=True):
                        items.append((sid, track, k * 20, data[at * 160 : (at + 1) * 160], 0.0))
        time.sleep(max(0.0, t0 + n * push_ms / 1000 - time.perf_counter()))
        started = time.perf_counter()
        host.push(items, sids)
        pushes.append((time.perf_counter() - started) * 1000)
    stats = host.stats()
    for sid in sids:
        host.finish(sid)
    return {**stats, "push_p95_ms": float(np.percentile(pushes, 95)), "push_max_ms": float(np.max(pushes))}


def main() -> None:
    print("frame-level speech F1 (precision / recall) of engine/vad.py, 20 ms frames, target >= 0.92 per track")
    for name in ("ami_es2004_a", "synthetic_dialogue"):
        for track, (f1, p, r) in speech_f1(DATA / name).items():
            print(f"  {name:20s} {track:8s} F1 {f1:.3f}  (P {p:.3f} / R {r:.3f})")
    print("turns (engine/turns.py, hold 500 ms): reference turns with both edges within +-250 ms (target >= 60%);")
    print("reference backchannels reported as backchannels (target >= 80%) and as interruptions (target 0)")
    for name in ("ami_es2004_a", "synthetic_dialogue"):
        f = turn_figures(DATA / name)
        share = 100 * f["matched"] / max(f["reference"], 1)  # type: ignore[operator]
        print(
            f"  {name:20s} {f['matched']}/{f['reference']} turns matched ({share:.0f}%); backchannels: "
            f"{f['as_backchannel']}/{f['backchannels']} as backchannels, {f['as_interruption']} as interruptions, "
            f"{f['missed']} not detected; {f['interruptions']} interruptions in all"
        )
    rtf = vad_rtf(DATA / "synthetic_dialogue")
    print(f"VAD + turn tracking cost, both tracks: real-time factor {rtf:.4f} (CPU s per s of call, one core)")
    hold = AnalysisOptions().hold_ms
    print(f"live: end-of-turn decision after the reference end of speech, stream time (target <= {hold + 100} ms)")
    for name in ("synthetic_dialogue", "ami_es2004_a"):
        ref, found = (np.array(d) for d in decision_latency(DATA / name))
        print(
            f"  {name:20s} {len(ref)} turns: after the reference end median {np.median(ref):.0f} ms, max "
            f"{ref.max():.0f} ms; after the end the VAD found median {np.median(found):.0f} ms, "
            f"max {found.max():.0f} ms"
        )
    print("live: turn.ended from decision to published by the host, wall time, real-time pushes (target <= 50 ms)")
    for calls, burst in ((1, False), (50, False), (50, True)):
        f = event_latency(DATA / "synthetic_dialogue", calls, burst=burst)
        how = "all turns ending together (worst case)" if burst else "each call at its own point"
        print(
            f"  {calls:3d} call(s) per host, {how}, 50 ms pushes: {f['turn_event_count']} turns, p50 "
            f"{f['turn_event_p50_ms']:.1f} ms, p95 {f['turn_event_p95_ms']:.1f} ms; {f['turns_unmeasured']} "
            f"sent unmeasured; push p95 {f['push_p95_ms']:.1f} ms, max {f['push_max_ms']:.1f} ms"
        )
    print("CPU cost of the whole analysis per call (VAD, turns, prosody of every turn), both tracks (target <= 0.01)")
    for name in ("synthetic_dialogue", "ami_es2004_a"):
        rtf = pipeline_rtf(DATA / name)
        print(f"  {name:20s} real-time factor {rtf:.4f} -> {1 / rtf:.0f} calls per core for analysis alone")


if __name__ == "__main__":
    main()
