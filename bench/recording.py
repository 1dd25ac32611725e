"""What recording costs: disk bytes per call-minute, and CPU per call-second against the analysis's.

    .venv/bin/python bench/recording.py --calls 50 --seconds 40

In this process, one run after the other on the bundled demo call (both tracks, 20 ms frames):
- recording: every frame of N calls placed as the API process places it (``api.recorder.Recording.add``),
  and every 0.5 s of audio the writes applied to each track's file (``apply_writes``, the writer thread's
  work), into a temporary folder: CPU-ms per call-second, and the bytes on disk per call-minute;
- analysis: N calls of the same audio through one call host in real time (``bench/host.py``: decode, rings,
  VAD, turns, pitch, voice quality, features; no emotion model, no sockets or Ray: the cheaper part of what a
  call costs, so the ratio printed is the conservative one), CPU-ms per call-second.
The target: recording under 5% of the analysis. CPU is this process's (``time.process_time``); figures are
for this machine: compare ratios, never a figure from another machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from api.recorder import Recording, apply_writes  # noqa: E402

DEMO = REPO / "api" / "demo"
FRAME = 160
FLUSH_FRAMES = 25  # 0.5 s


def demo_tracks() -> dict[str, bytes]:
    """The bundled call's mu-law bytes per track (after the 58-byte WAV header)."""
    return {track: (DEMO / f"{track}.wav").read_bytes()[58:] for track in ("inbound", "outbound")}


def record(calls: int, seconds: float, folder: Path) -> tuple[float, int]:
    """CPU seconds to record ``calls`` calls of ``seconds`` each, and the bytes written."""
    tracks = demo_tracks()
    n = min(len(b) for b in tracks.values()) // FRAME
    frames = int(seconds * 50)
    recordings = [Recording("bench", f"CA{i:032x}", f"MZ{i:032x}") for i in range(calls)]
    written = 0
    t0 = time.process_time()
    for k in range(frames):
        for i, rec in enumerate(recordings):
            j = (k + 37 * i) % n  # each call at its own point of the conversation
            for track, data in tracks.items():
                rec.add(track, k * 20, data[j * FRAME : (j + 1) * FRAME])
        if (k + 1) % FLUSH_FRAMES == 0 or k == frames - 1:
            for rec in recordings:
                for track, layout in rec.layouts.items():
                    written += apply_writes(folder / rec.key(track), layout.take())
    return time.process_time() - t0, written


def analyse(calls: int, seconds: float) -> float:
    """CPU-ms per call-second of one call host analysing ``calls`` calls in real time (bench/host.py)."""
    sys.path.insert(0, str(REPO / "bench"))
    from host import run  # type: ignore[import-not-found]

    return float(run(calls, seconds, 8.0, 0.05)["total"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=40.0, help="audio per call")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cpu_rec, written = record(args.calls, args.seconds, Path(tmp))
        on_disk = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    call_s = args.calls * args.seconds
    rec_ms = 1000 * cpu_rec / call_s
    ana_ms = analyse(args.calls, min(args.seconds, 30.0))
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    print(f"recording: {args.calls} calls x {args.seconds:.0f} s, 2 tracks, 20 ms frames, written every 0.5 s")
    print(f"  disk: {on_disk * 60 / call_s:,.0f} bytes per call-minute ({written:,} bytes written in all)")
    print(f"  CPU:  {rec_ms:.3f} CPU-ms per call-second")
    where = f"bench/host.py: one host, {args.calls} calls in real time, no emotion model"
    print(f"analysis ({where}): {ana_ms:.2f} CPU-ms per call-second")
    print(f"recording / analysis: {100 * rec_ms / ana_ms:.1f}% (target < 5%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
