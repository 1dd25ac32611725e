"""Load and soak: real-time calls with everything on, and whether anything is lost or drifts.

    .venv/bin/python bench/load.py                          # the ladder: 10, 20, 30, 40, 50 calls, 60 s each
    .venv/bin/python bench/load.py --calls 30 --minutes 10  # drift: 30 call slots for 10 minutes
    make soak                                               # 30 minutes at half the largest passing level

A real `mise serve` (uvicorn; full analysis, emotion model on, the embedded search index) on a loopback Ray
instance owned by this script. bench/loadgen.py (another process) streams the bundled two-party demo call
in real time (2 tracks x 50 frames/s per call) and opens 2 SSE clients per call on
`GET /v1/calls/{sid}/events`. With ``--minutes`` each call slot runs call after call (``--call-seconds``
each), so calls come and go as in production. Load generator, SSE clients and server share the machine's
cores: figures are for that condition.

A level passes when nothing is lost and turns come out in time:
- frames: every frame the generator sent is in its call's record (``tracks.*.frames``);
- turns: every turn is measured (``mise_turns_unmeasured_total`` unchanged), stored
  (``/v1/calls/{sid}/turns``), searchable (``/v1/search`` total for the call) and received as turn.ended
  by both SSE clients of its call;
- turn.ended reaches the SSE clients at p95 within hold + 300 ms (800 ms) of the end of its speech
  (receipt wall time - (the call's stream time 0 + ``end_ms``)); the generator kept real time (lag p95
  <= 20 ms) and no call failed.
Drift: RSS of the server and every Ray worker process sampled every 15 s (first sample after a minute,
the last at the end, and the slope of a line through them, MB per minute), and turn.ended p95 per minute.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from actors import runtime  # noqa: E402
from tests.support import API_KEY, Server  # noqa: E402

SPEECH = REPO / "api" / "demo"
HOLD_MS = 500
TARGET_MS = HOLD_MS + 300
SAMPLE_S = 15.0
WORDS_TARGET_S = 5.0  # --asr: a turn's words at p95 within this of the end of its speech, none skipped


def rss_mb() -> float:
    """RSS of every Ray worker process (call hosts, hub, directory, ASR workers) and mise server on this machine."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            if cmd.startswith(b"ray::") or b"api.cli\x00serve" in cmd:
                total += int((proc / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
    return total / 2**20


def run(srv: Server, calls: int, call_s: float, for_s: float | None, words: bool = False) -> dict[str, Any]:
    before = srv.metrics()
    args = [sys.executable, str(BENCH / "loadgen.py"), "--url", srv.ws, "--key", API_KEY, "--calls", str(calls)]
    args += ["--seconds", str(call_s), "--interval", "0.1", "--speech", str(SPEECH), "--sse", "2"]
    args += ["--for", str(for_s)] if for_s else []
    args += ["--words"] if words else []
    t0 = time.time()
    samples: list[tuple[float, float]] = []
    with tempfile.TemporaryFile(mode="w+") as out:  # not a pipe: the result (every turn's receipt) can be large
        gen = subprocess.Popen(args, stdout=out, text=True)
        while gen.poll() is None:
            time.sleep(SAMPLE_S)
            if gen.poll() is None:
                samples.append((time.time() - t0, rss_mb()))
                if for_s:
                    print(f"  {samples[-1][0] / 60:5.1f} min: {samples[-1][1]:7.0f} MB", flush=True)
        out.seek(0)
        result = json.loads(out.read().strip().splitlines()[-1])
    srv.wait_no_live_calls(timeout=120)
    return check(srv, result, before, t0, samples, words)


def searchable(srv: Server, call_sid: str) -> int:
    query = {"where": {"call_sid": call_sid}, "limit": 0}
    r = httpx.post(srv.http + "/v1/search", json=query, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    return int(r.json()["total"])


def check(
    srv: Server,
    result: dict[str, Any],
    before: dict[str, float],
    t0: float,
    samples: list[tuple[float, float]],
    words: bool = False,
) -> dict[str, Any]:
    lost_frames = lost_turns = turns = 0
    latencies: list[tuple[float, float]] = []  # (s since start, ms)
    word_lags: list[float] = []  # s from the end of a turn's speech to its turn.transcribed (done) at a client
    states: dict[str, int] = {}  # the stored turns' transcript states at the end
    deadline = time.monotonic() + 120  # the index catches up
    for call in result["calls"]:
        record = srv.wait_call(call["call_sid"], timeout=60)
        lost_frames += call["sent"] - sum(t["frames"] for t in record["tracks"].values())
        stored_turns = srv.get(f"/v1/calls/{call['call_sid']}/turns").json()["turns"]
        stored = len(stored_turns)
        for t in stored_turns:
            states[str(t.get("transcript"))] = states.get(str(t.get("transcript")), 0) + 1
        while (found := searchable(srv, call["call_sid"])) < stored and time.monotonic() < deadline:
            time.sleep(0.5)
        turns += stored
        lost_turns += stored - min(found, *(s["turns"] for s in call["sse"]))
        for sub in call["sse"]:
            latencies += [(at - t0, (at - call["start_epoch"] - end_ms / 1000) * 1000) for at, end_ms in sub["seen"]]
        for at, end_ms, state in call["sse"][0]["words"] if words and call["sse"] else []:
            if state == "done":
                word_lags.append(at - call["start_epoch"] - end_ms / 1000)
    after = srv.metrics()
    unmeasured = sum(v - before.get(k, 0.0) for k, v in after.items() if k.startswith("mise_turns_unmeasured_total"))
    lat = np.array([ms for _, ms in latencies]) if latencies else np.zeros(1)
    per_minute = {}
    for minute in sorted({int(t // 60) for t, _ in latencies}):
        values = [ms for t, ms in latencies if int(t // 60) == minute]
        if len(values) >= 20:
            per_minute[minute] = float(np.percentile(values, 95))
    kept = [(t, mb) for t, mb in samples if t >= 60] or samples
    slope = float(np.polyfit([t / 60 for t, _ in kept], [mb for _, mb in kept], 1)[0]) if len(kept) >= 3 else None
    out = {
        "calls": len(result["calls"]),
        "errors": result["error_count"],
        "gen_lag_p95_ms": result["lag_p95_ms"],
        "lost_frames": lost_frames,
        "turns": turns,
        "lost_turns": lost_turns,
        "unmeasured": int(unmeasured),
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p95_per_minute": per_minute,
        "rss_mb": [round(mb) for _, mb in samples],
        "rss_first_mb": kept[0][1] if kept else None,
        "rss_last_mb": kept[-1][1] if kept else None,
        "rss_slope_mb_per_min": slope,
        "transcripts": states,
        "words_p50_s": float(np.percentile(word_lags, 50)) if word_lags else None,
        "words_p95_s": float(np.percentile(word_lags, 95)) if word_lags else None,
    }
    out["passed"] = (
        out["errors"] == 0
        and lost_frames == 0
        and lost_turns == 0
        and out["unmeasured"] == 0
        and out["p95_ms"] <= TARGET_MS
        and out["gen_lag_p95_ms"] <= 20
        and (
            not words
            or (set(states) == {"done"} and out["words_p95_s"] is not None and out["words_p95_s"] <= WORDS_TARGET_S)
        )
    )
    return out


def line(level: int, r: dict[str, Any]) -> str:
    words = ""
    if r["words_p95_s"] is not None:
        skipped = r["transcripts"].get("skipped", 0) + r["transcripts"].get("pending", 0)
        words = f" {r['words_p50_s']:>7.1f} {r['words_p95_s']:>7.1f} {skipped:>6}"
    return (
        f"{level:>6} {r['calls']:>6} {r['errors']:>4} {r['lost_frames']:>6} {r['turns']:>6} {r['lost_turns']:>5} "
        f"{r['unmeasured']:>6} {r['p50_ms']:>7.0f} {r['p95_ms']:>7.0f} {r['gen_lag_p95_ms']:>7.1f}{words}  "
        + ("pass" if r["passed"] else "FAIL")
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", default="10,20,30,40,50", help="the ladder: concurrent calls per level")
    p.add_argument("--calls", type=int, help="one level only: this many call slots")
    p.add_argument("--minutes", type=float, help="with --calls: keep the slots busy this long (drift, soak)")
    p.add_argument("--call-seconds", type=float, default=60.0, help="length of each call")
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--asr", action="store_true", help="words too: the built-in transcriber on, its lag measured")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server (e.g. MISE_ASR_QUEUE_S=1)")
    args = p.parse_args()
    levels = [args.calls] if args.calls else [int(x) for x in args.levels.split(",")]
    print(
        f"bench/load.py on {os.cpu_count()} cores: real-time demo calls of {args.call_seconds:g} s, 2 SSE clients "
        "per call, full analysis, emotion on, embedded index; generator and server share the cores",
        flush=True,
    )
    env = {"MISE_EMOTION": "1", "MISE_ANALYSIS": "1", "MISE_RING_SECONDS": "60", "MISE_ASR": "1" if args.asr else "0"}
    env |= dict(item.split("=", 1) for item in args.env)
    if args.env:
        print("server environment: " + " ".join(args.env), flush=True)
    results: dict[int, dict[str, Any]] = {}
    with (
        runtime.private_cluster("mise-load") as address,
        Server.start(address, Path(tempfile.mkdtemp(prefix="mise-load-")), **env) as srv,
    ):
        print(f"{'level':>6} {'calls':>6} {'err':>4} {'lostfr':>6} {'turns':>6} {'lostt':>5} {'unmeas':>6} "
              f"{'p50 ms':>7} {'p95 ms':>7} {'genlag':>7}"
              + (f" {'wordsp50':>7} {'wordsp95':>7} {'skipped':>6}" if args.asr else ""), flush=True)  # fmt: skip
        for level in levels:
            for_s = args.minutes * 60 if args.minutes else None
            results[level] = r = run(srv, level, args.call_seconds, for_s, args.asr)
            print(line(level, r), flush=True)
            if for_s:
                minutes = " ".join(f"{m}:{v:.0f}" for m, v in r["p95_per_minute"].items())
                print(f"  turn.ended p95 per minute (ms): {minutes}")
                slope = r["rss_slope_mb_per_min"]
                print(
                    f"  RSS of server + Ray workers: {r['rss_first_mb']:.0f} MB at 1 min -> {r['rss_last_mb']:.0f} MB "
                    f"at the end; slope {'-' if slope is None else f'{slope:+.2f}'} MB/min"
                )
            elif not r["passed"] and level != levels[-1]:
                print("  (stopping the ladder: this level failed)")
                break
    passed = [n for n, r in results.items() if r["passed"]]
    if not args.minutes:
        print(f"largest passing level: {max(passed) if passed else 'none'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
