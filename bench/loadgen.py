"""Load generator for bench/ingest.py: N concurrent calls speaking Twilio Media Streams in real time.

Runs in its own process (so its CPU is not the server's) and prints one JSON line of results.
Every 20 ms tick it sends one frame per track per call, with Twilio's message shape; a frame's
``timestamp`` is its scheduled time, so lateness is measurable: ``lag`` = send time - schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import sys
import time
from pathlib import Path

import numpy as np
import websockets

FRAME_S = 0.02


def payloads(path: Path | None) -> list[str]:
    """Real speech frames (base64 mu-law, 160 bytes) to cycle through."""
    if path is None or not path.exists():
        rng = np.random.default_rng(0)
        return [base64.b64encode(rng.integers(0, 256, 160, dtype=np.uint8).tobytes()).decode() for _ in range(50)]
    raw = path.read_bytes()[58:]  # mu-law WAV data after the header; exactness does not matter here
    return [base64.b64encode(raw[i : i + 160]).decode() for i in range(0, len(raw) - 160, 160)][:3000]


async def one_call(
    url: str, key: str, seconds: float, start_at: float, frames: list[str], lags: list[float]
) -> dict[str, object]:
    call_sid, stream_sid = "CA" + secrets.token_hex(16), "MZ" + secrets.token_hex(16)
    await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
    sent = 0
    setup_sent = time.time()
    async with websockets.connect(url, compression=None, max_queue=None) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        start = {
            "accountSid": "AC" + "0" * 32,
            "streamSid": stream_sid,
            "callSid": call_sid,
            "tracks": ["inbound", "outbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"api_key": key},
        }
        await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "start": start, "streamSid": stream_sid}))
        t0 = time.perf_counter()
        seq = 2
        for k in range(int(seconds / FRAME_S)):
            due = t0 + k * FRAME_S
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lags.append(time.perf_counter() - due)
            for track in ("inbound", "outbound"):
                payload = frames[(k + (7 if track == "outbound" else 0)) % len(frames)]
                await ws.send(
                    f'{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"{track}","chunk":"{k + 1}",'
                    f'"timestamp":"{k * 20}","payload":"{payload}"}},"streamSid":"{stream_sid}"}}'
                )
                seq += 1
                sent += 1
        await ws.send(
            json.dumps(
                {
                    "event": "stop",
                    "sequenceNumber": str(seq),
                    "streamSid": stream_sid,
                    "stop": {"accountSid": "AC" + "0" * 32, "callSid": call_sid},
                }
            )
        )
        await asyncio.wait_for(ws.wait_closed(), 60)
    return {"call_sid": call_sid, "sent": sent, "setup_sent": setup_sent}


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    frames = payloads(Path(args.speech) if args.speech else None)
    lags: list[float] = []
    t0 = time.perf_counter() + 0.5

    def length(i: int) -> float:  # with --end-together every call ends at the same moment
        return args.seconds + ((args.calls - 1 - i) * args.interval if args.end_together else 0.0)

    tasks = [one_call(args.url, args.key, length(i), t0 + i * args.interval, frames, lags) for i in range(args.calls)]
    calls = await asyncio.gather(*tasks, return_exceptions=True)
    ok = [c for c in calls if isinstance(c, dict)]
    errors = [repr(c) for c in calls if not isinstance(c, dict)]
    lag = np.array(lags) if lags else np.zeros(1)
    return {
        "calls": ok,
        "errors": errors[:5],
        "error_count": len(errors),
        "lag_p50_ms": float(np.percentile(lag, 50) * 1000),
        "lag_p95_ms": float(np.percentile(lag, 95) * 1000),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--calls", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--interval", type=float, default=0.02, help="seconds between call starts")
    p.add_argument("--end-together", action="store_true", help="stretch earlier calls so all end together")
    p.add_argument("--speech")
    args = p.parse_args()
    print(json.dumps(asyncio.run(main_async(args))))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
