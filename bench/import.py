"""Importing past calls: `mise import` of many copies of the demo call into a real server, killed halfway and
run again, then checked and timed.

    .venv/bin/python bench/import.py --calls 200            # emotion on, built-in words off
    .venv/bin/python bench/import.py --calls 20 --asr       # with words for every turn (Whisper)

A real `mise serve` (its own Ray instance, the embedded index, the folder recordings) first gets the demo
call streamed live (10x real time) as the reference. Then `mise import` (a subprocess, `--parallel` uploads)
imports N copies of the same recording under fresh call SIDs from a manifest; at half it is killed with
SIGKILL and started again. Printed: the throughput (call-minutes of audio per wall-minute, both runs'
wall time together), and the checks: every call there exactly once, ended "imported", searchable with
the live call's turns (ids, speakers, start and end). The machine's cores are shared by the server, its
Ray workers and the importer: figures are for this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from actors import runtime  # noqa: E402
from api.simulate import messages_from_tracks, play, read_ulaw_track  # noqa: E402
from tests.support import API_KEY, Server, wait_searchable  # noqa: E402

DEMO = REPO / "api" / "demo"


def importer(srv: Server, manifest: Path, parallel: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "import", str(manifest), "--url", srv.http, "--parallel", str(parallel)],
        cwd=REPO,
        env={**os.environ, "MISE_API_KEY": API_KEY},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def shape(turns: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(t["turn_id"], t["speaker"], t["start_ms"], t["end_ms"]) for t in turns]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=os.cpu_count() or 2, help="uploads at a time")
    parser.add_argument("--asr", action="store_true", help="built-in words for every turn (MISE_ASR=1)")
    args = parser.parse_args()
    env = {"MISE_EMOTION": "1", "MISE_ASR": "1" if args.asr else "0", "MISE_RATE_WEBHOOKS": "0"}
    work = Path(tempfile.mkdtemp(prefix="mise-import-"))
    (work / "data").mkdir()
    with runtime.private_cluster("mise-import") as address, Server.start(address, work / "data", **env) as srv:
        live = messages_from_tracks(
            read_ulaw_track(DEMO / "inbound.wav"),
            read_ulaw_track(DEMO / "outbound.wav"),
            custom_parameters={"api_key": API_KEY},
        )
        live_sid = asyncio.run(play(srv.ws, live, speed=10.0)).call_sid
        reference = shape(wait_searchable(srv, live_sid, timeout=120))
        sids = [f"CA{n:032x}" for n in range(7_000_000, 7_000_000 + args.calls)]
        manifest = work / "calls.csv"
        rows = [f"{DEMO / 'inbound.wav'},{DEMO / 'outbound.wav'},{sid}" for sid in sids]
        manifest.write_text("inbound,outbound,call_sid\n" + "\n".join(rows) + "\n")
        journal = work / f".mise-import-{hashlib.sha256(str(manifest.resolve()).encode()).hexdigest()[:8]}.jsonl"

        t0 = time.monotonic()
        first = importer(srv, manifest, args.parallel)
        while first.poll() is None and (
            not journal.exists() or len(journal.read_bytes().splitlines()) < args.calls // 2
        ):
            time.sleep(0.2)  # until half are done
        first.send_signal(signal.SIGKILL)
        first.communicate()
        killed_at = len(journal.read_bytes().splitlines())
        second = importer(srv, manifest, args.parallel)
        out = second.communicate()[0].decode()
        wall = time.monotonic() - t0
        last = [line for line in out.replace("\r", "\n").splitlines() if line.startswith("[")][-1:]

        listed = [c for c in srv.get("/v1/calls", limit=500).json()["calls"] if c["call_sid"] in set(sids)]
        if args.calls > 500:
            listed = [srv.get(f"/v1/calls/{sid}").json() for sid in sids]
        once = sorted(c["call_sid"] for c in listed) == sids
        ended = all(c["end_reason"] == "imported" for c in listed)
        same = sum(shape(wait_searchable(srv, sid, timeout=120)) == reference for sid in sids)
        words = None
        if args.asr:  # the words come after an import answers (the transcriber): wait for the last of them
            deadline = time.monotonic() + 300
            while True:
                turns = [t for sid in sids for t in srv.get(f"/v1/calls/{sid}/turns").json()["turns"]]
                pending = sum(t.get("transcript") == "pending" for t in turns)
                if not pending or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
            words = {k: sum(t.get("transcript") == k for t in turns) for k in ("done", "skipped", "pending")}
            wall_words = time.monotonic() - t0
        call_min = args.calls * 41.5 / 60
        metrics = srv.metrics()

    print(f"machine: {os.cpu_count()} cores; server, Ray workers and importer on the same cores")
    print(f"condition: {args.calls} copies of the demo call (41.5 s, 2 tracks), emotion on, "
          f"built-in words {'on' if args.asr else 'off'}, --parallel {args.parallel}")  # fmt: skip
    print(f"killed with SIGKILL after {killed_at} calls, run again: {last[0] if last else out[-300:]}")
    print(f"throughput: {call_min:.1f} call-minutes in {wall / 60:.2f} wall-minutes = {call_min / (wall / 60):.1f} "
          "call-minutes per wall-minute")  # fmt: skip
    print(f"every call once: {once}; all ended 'imported': {ended}; "
          f"searchable with the live call's turns: {same}/{args.calls}")  # fmt: skip
    if words is not None:
        total = args.calls * len(reference)
        print(f"turns' words: {words} of {total}, the last {wall_words / 60:.2f} min after the start")
    print(f"imports by status: { {k: v for k, v in metrics.items() if k.startswith('mise_imports_total')} }")
    return 0 if once and ended and same == args.calls else 1


if __name__ == "__main__":
    raise SystemExit(main())
