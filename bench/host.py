"""One call host's analysis cost, in process: no sockets, no Ray, no emotion model.

    .venv/bin/python bench/host.py --calls 50 --seconds 30

Runs ``actors.host.CallHost`` as a plain object in this process and feeds it N calls in real time,
as the API process would: every ``--interval`` (50 ms, the default push interval) one ``push`` with
every call's due 20 ms frames of both tracks (the bundled demo call, each call joining it at its own
point), polling calls with turns being measured. After a warm-up it prints CPU-ms per call-second by
stage (``engine.costs``: decode and rings, VAD and turn tracking, pitch, voice quality, other turn
features; "host other" is the process's remaining CPU: pushing, events, the Python around them), the
turns measured and skipped, and turn.ended's decision -> published p95. Figures are for this machine
and this condition: compare runs made one after the other here, never with another machine's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from actors.host import CallHost, PushItem  # noqa: E402
from engine import costs  # noqa: E402
from engine.call import CallMeta  # noqa: E402

DEMO = REPO / "api" / "demo"
FRAME_MS = 20


def demo_tracks() -> dict[str, bytes]:
    """The bundled call's mu-law bytes per track (after the 58-byte WAV header)."""
    return {track: (DEMO / f"{track}.wav").read_bytes()[58:] for track in ("inbound", "outbound")}


def run(calls: int, seconds: float, warmup: float, interval: float) -> dict[str, float]:
    tracks = demo_tracks()
    n_frames = min(len(b) for b in tracks.values()) // 160
    host = CallHost()
    sids = [f"CA{i:032d}" for i in range(calls)]
    for i, sid in enumerate(sids):
        meta = CallMeta("bench", sid, f"MZ{i:032d}", "AC0", ("inbound", "outbound"), {}, "")
        host.open(meta)
    offsets = [(i * n_frames) // max(calls, 1) for i in range(calls)]
    start = time.monotonic()
    sent = 0  # frames per track sent to every call so far
    poll: list[str] = []
    measured_from = cpu0 = stages0 = stats0 = None
    while True:
        now = time.monotonic()
        if measured_from is None and now - start >= warmup:
            measured_from, cpu0, stages0, stats0 = now, time.process_time(), costs.spent(), host.stats()
        if now - start >= warmup + seconds:
            break
        due = int((now - start) * 1000 / FRAME_MS)
        items: list[PushItem] = []
        for k in range(sent, due):
            for sid, offset in zip(sids, offsets, strict=True):
                j = (offset + k) % n_frames
                for track, audio in tracks.items():
                    items.append((sid, track, k * FRAME_MS, audio[j * 160 : (j + 1) * 160], time.time()))
        sent = due
        ack = host.push(items, poll)
        poll = ack.awaiting
        time.sleep(max(0.0, interval - (time.monotonic() - now)))
    assert measured_from is not None and cpu0 is not None and stages0 is not None and stats0 is not None
    window = time.monotonic() - measured_from
    cpu = time.process_time() - cpu0
    stats = host.stats()
    per = 1000.0 / (window * calls)  # CPU s -> CPU-ms per call-second
    out = {name: (s - stages0.get(name, 0.0)) * per for name, s in costs.spent().items()}
    out["host other"] = cpu * per - sum(out.values())
    out["total"] = cpu * per
    out["turns"] = stats["turns_measured"] - stats0["turns_measured"]
    out["unmeasured"] = stats["turns_unmeasured"] - stats0["turns_unmeasured"]
    out["turn_event_p95_ms"] = stats["turn_event_p95_ms"] or 0.0
    out["lag_p95_ms"] = stats["latency_p95_ms"] or 0.0
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=8.0)
    p.add_argument("--interval", type=float, default=0.05)
    args = p.parse_args()
    out = run(args.calls, args.seconds, args.warmup, args.interval)
    print(
        f"{args.calls} calls in one host, {args.seconds:g} s after {args.warmup:g} s warm-up, pushes every "
        f"{args.interval * 1000:g} ms; CPU-ms per call-second:"
    )
    for name in ("decode_ring", "vad_turns", "pitch", "voice_quality", "turn_features", "host other", "total"):
        print(f"  {name:<14} {out.get(name, 0.0):7.3f}")
    print(
        f"turns measured {out['turns']:.0f}, unmeasured {out['unmeasured']:.0f}; "
        f"turn.ended decision -> published p95 {out['turn_event_p95_ms']:.0f} ms; "
        f"push lag p95 {out['lag_p95_ms']:.0f} ms"
    )


if __name__ == "__main__":
    main()
