"""SSE fan-out: latency from an event's creation in its call actor to its receipt by SSE clients, and
ingest with a subscriber that stopped reading.

    .venv/bin/python bench/sse.py            # ~4 minutes on 2 cores

A real `mise serve` (uvicorn) on a Ray instance owned by this script; 50 real-time calls from
bench/loadgen.py (the bundled two-party demo call, each call joining it at its own point); 100 SSE
clients on `GET /v1/events` in another process (raw sockets, asyncio). Latency = receipt time minus
the event's `at` (stamped by the call host when it publishes; same machine clock; ms resolution).
Phase 2 repeats the load with one more client that connects and never reads (a tiny receive buffer):
the server must drop it (mise_sse_dropped_total) while ingest lag (arrival at the API -> applied in
the call's actor, p95) stays as in phase 1. Load generator, clients and server share the 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import ray  # noqa: E402

from actors import runtime  # noqa: E402
from tests.support import API_KEY, Server  # noqa: E402

SPEECH = REPO / "api" / "demo"


async def _client(url: str, seconds: float, latencies: list[float], counts: list[int]) -> None:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    request = f"GET {parts.path}?api_key={API_KEY} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n"
    writer.write(request.encode())
    await writer.drain()
    deadline = time.monotonic() + seconds
    n = 0
    with contextlib.suppress(asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError):
        while time.monotonic() < deadline:
            line = await asyncio.wait_for(reader.readline(), max(0.1, deadline - time.monotonic()))
            if line.startswith(b"data: "):  # read just "at" (cheap: these clients share the server's cores)
                now = time.time()
                i = line.index(b'"at":"') + 6
                at = datetime.fromisoformat(line[i : line.index(b'"', i)].decode().replace("Z", "+00:00")).timestamp()
                latencies.append((now - at) * 1000)
                n += 1
    counts.append(n)
    writer.close()


def clients_main(url: str, n: int, seconds: float) -> None:
    async def run() -> dict[str, Any]:
        latencies: list[float] = []
        counts: list[int] = []
        await asyncio.gather(*(_client(url, seconds, latencies, counts) for _ in range(n)))
        return {"latencies": latencies, "counts": counts}

    print(json.dumps(asyncio.run(run())))


def stalled(url: str) -> socket.socket:
    """An SSE client that connects, asks, and never reads: its receive buffer is tiny."""
    parts = urlsplit(url)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    s.connect((parts.hostname or "127.0.0.1", parts.port or 80))
    s.sendall(f"GET {parts.path}?api_key={API_KEY} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
    return s


def host_lag_p95(srv: Server, reset: bool = False) -> float | None:
    hosts = ray.get(srv.directory().hosts.remote())
    stats = ray.get([h["handle"].stats.remote(reset_latency=reset) for h in hosts])
    values = [s["latency_p95_ms"] for s in stats if s["latency_p95_ms"] is not None]
    return max(values) if values else None


def phase(srv: Server, calls: int, subscribers: int, seconds: float, *, stall: bool) -> dict[str, Any]:
    before = srv.metrics()
    sock = stalled(srv.http + "/v1/events") if stall else None
    clients = subprocess.Popen(
        [sys.executable, __file__, "--clients", srv.http + "/v1/events", str(subscribers), str(seconds + 8)],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.0)  # clients connected
    gen = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "bench" / "loadgen.py"),
            *("--url", srv.ws, "--key", API_KEY, "--calls", str(calls), "--seconds", str(seconds)),
            *("--interval", "0.1", "--speech", str(SPEECH)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(calls * 0.1 + 1.0)
    host_lag_p95(srv, reset=True)  # measure the steady part only, while every call is live
    time.sleep(max(1.0, seconds / 2))
    lag = host_lag_p95(srv)
    gen_out, _ = gen.communicate(timeout=300)
    out, _ = clients.communicate(timeout=300)
    after = srv.metrics()
    if sock is not None:
        sock.close()
    result = json.loads(out.strip().splitlines()[-1])
    gen_result = json.loads(gen_out.strip().splitlines()[-1])
    lat = np.array(result["latencies"]) if result["latencies"] else np.zeros(1)
    return {
        "events_per_client": float(np.median(result["counts"])),
        "p50": float(np.percentile(lat, 50)),
        "p95": float(np.percentile(lat, 95)),
        "max": float(lat.max()),
        "ingest_lag_p95": lag,
        "gen_lag_p95": gen_result["lag_p95_ms"],
        "dropped": after.get("mise_sse_dropped_total", 0.0) - before.get("mise_sse_dropped_total", 0.0),
        "calls_ok": len(gen_result["calls"]),
        "gen_errors": gen_result["errors"],
    }


def fmt(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.0f} ms"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--subscribers", type=int, default=100)
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--clients", nargs=3, metavar=("URL", "N", "SECONDS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.clients:
        clients_main(args.clients[0], int(args.clients[1]), float(args.clients[2]))
        return
    # A small per-client queue (200 events) so the stalled client is dropped within the run.
    with (
        runtime.private_cluster("mise-bench-sse") as address,
        tempfile.TemporaryDirectory(prefix="mise-sse-", ignore_cleanup_errors=True) as data,
        Server.start(address, Path(data), MISE_SSE_QUEUE="200", MISE_EMOTION="1") as srv,
    ):
        print(f"{args.calls} real-time calls, {args.subscribers} SSE clients on /v1/events, {args.seconds:g} s")
        for stall in (False, True):
            # The stalled client needs its socket buffers (hundreds of KB) and its queue filled before the
            # server drops it: its phase runs twice as long.
            r = phase(srv, args.calls, args.subscribers, args.seconds * (2 if stall else 1), stall=stall)
            print(
                f"  {'with a stalled client' if stall else 'all clients reading':22s}: event creation -> SSE "
                f"receipt p50 {r['p50']:.0f} ms, p95 {r['p95']:.0f} ms, max {r['max']:.0f} ms "
                f"({r['events_per_client']:.0f} events per client); ingest lag p95 "
                f"{fmt(r['ingest_lag_p95'])}; generator lag p95 {r['gen_lag_p95']:.0f} ms; "
                f"clients dropped {r['dropped']:.0f}; calls completed {r['calls_ok']}/{args.calls}"
                + (f" (generator errors: {r['gen_errors']})" if r["gen_errors"] else ""),
                flush=True,
            )


if __name__ == "__main__":
    main()
