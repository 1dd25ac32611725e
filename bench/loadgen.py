"""Load generator for bench/ingest.py: N concurrent calls speaking Twilio Media Streams in real time.

Runs in its own process (so its CPU is not the server's) and prints one JSON line of results.
``--sse K`` adds K SSE clients per call (``GET /v1/calls/{sid}/events``), each recording when every
turn.ended reached it; ``--for S`` keeps each of the N call slots busy with call after call for S seconds
(calls come and go, as in production).
Every 20 ms tick it sends one frame per track per call, with Twilio's message shape; a frame's
``timestamp`` is its scheduled time, so lateness is measurable: ``lag`` = send time - schedule.

It shares this machine's two cores with the server, so it is kept lean: after a normal WebSocket
handshake it writes pre-framed messages straight to the socket (client frames masked with a zero key,
which RFC 6455 allows and which makes masking a no-op), ~10x cheaper per message than a client library.
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
from urllib.parse import urlsplit

import numpy as np

FRAME_S = 0.02


def payloads(call: Path | None) -> dict[str, list[str]]:
    """Per track, the frames (base64 mu-law, 160 bytes) of a real two-party call to cycle through:
    ``call`` is a directory with ``inbound.wav`` and ``outbound.wav`` (8 kHz mu-law WAV, as api/demo/).
    Without one, random bytes (noise: no turns, so no turn analysis load)."""
    if call is None or not call.is_dir():
        rng = np.random.default_rng(0)
        noise = [base64.b64encode(rng.integers(0, 256, 160, dtype=np.uint8).tobytes()).decode() for _ in range(50)]
        return {"inbound": noise, "outbound": noise}
    out = {}
    for track in ("inbound", "outbound"):
        raw = (call / f"{track}.wav").read_bytes()[58:]  # mu-law WAV data after the header
        out[track] = [base64.b64encode(raw[i : i + 160]).decode() for i in range(0, len(raw) - 160 + 1, 160)]
    return out


def frame(text: str) -> bytes:
    """One client text frame, FIN set, masked with a zero key (RFC 6455 5.3: masking is then a no-op)."""
    data = text.encode()
    n = len(data)
    if n < 126:
        header = bytes([0x81, 0x80 | n])
    elif n < 65536:
        header = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return header + b"\x00\x00\x00\x00" + data


async def handshake(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    writer.write(
        f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in response.split(b"\r\n", 1)[0]:
        raise ConnectionError(response.split(b"\r\n", 1)[0].decode())
    return reader, writer


async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the server's frames for the whole call, as a real client does: answer pings (the server
    drops a client that does not, after its ping timeout) and, at the end, the server's close frame."""
    while True:
        head = await reader.readexactly(2)
        n = head[1] & 0x7F
        if n == 126:
            n = int.from_bytes(await reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await reader.readexactly(8), "big")
        body = await reader.readexactly(n)
        opcode = head[0] & 0x0F
        if opcode == 0x9:  # ping -> pong with the same body
            writer.write(bytes([0x8A, 0x80 | len(body)]) + b"\x00\x00\x00\x00" + body)
        elif opcode == 0x8:  # close -> close back, then the server ends the connection
            writer.write(bytes([0x88, 0x80 | len(body[:2])]) + b"\x00\x00\x00\x00" + body[:2])
            await writer.drain()
            await reader.read()
            writer.close()
            return


async def one_call(
    url: str,
    key: str,
    seconds: float,
    start_at: float,
    frames: dict[str, list[str]],
    offset: int,
    lags: list[float],
    *,
    call_sid: str | None = None,
) -> dict[str, object]:
    """One call in real time: 2 tracks x 50 frames/s of the conversation in ``frames``, from frame ``offset``."""
    call_sid, stream_sid = call_sid or "CA" + secrets.token_hex(16), "MZ" + secrets.token_hex(16)
    await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
    reader, writer = await handshake(url)
    controller = asyncio.create_task(control(reader, writer))
    start = {
        "accountSid": "AC" + "0" * 32,
        "streamSid": stream_sid,
        "callSid": call_sid,
        "tracks": ["inbound", "outbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"api_key": key},
    }
    writer.write(
        frame(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        + frame(json.dumps({"event": "start", "sequenceNumber": "1", "start": start, "streamSid": stream_sid}))
    )
    sent, seq, t0 = 0, 2, time.perf_counter()
    epoch0 = time.time()  # wall clock of stream time 0 (frame 0's schedule), for latencies seen from outside
    for k in range(int(seconds / FRAME_S)):
        due = t0 + k * FRAME_S
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(time.perf_counter() - due)
        out = b""
        for track in ("inbound", "outbound"):
            payload = frames[track][(offset + k) % len(frames[track])]
            out += frame(
                f'{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"{track}","chunk":"{k + 1}",'
                f'"timestamp":"{k * 20}","payload":"{payload}"}},"streamSid":"{stream_sid}"}}'
            )
            seq += 1
            sent += 1
        writer.write(out)
        await writer.drain()
    stop = {"accountSid": "AC" + "0" * 32, "callSid": call_sid}
    writer.write(
        frame(json.dumps({"event": "stop", "sequenceNumber": str(seq), "streamSid": stream_sid, "stop": stop}))
    )
    await asyncio.wait_for(controller, 60)
    return {"call_sid": call_sid, "sent": sent, "start_epoch": epoch0}


async def subscribe(url: str, key: str, call_sid: str, until: float, words: bool = False) -> dict[str, object]:
    """One SSE client of one call (``GET /v1/calls/{sid}/events``, asked again while the call is not yet
    known): reads to ``call.ended`` (``words``: then on until every turn has its turn.transcribed, or
    ``until``). Returns its turn.ended count and (receipt wall time, end_ms) of each; with ``words`` also
    (receipt wall time, end_ms, transcript state) of each turn.transcribed."""
    parts = urlsplit(url)
    path = f"/v1/calls/{call_sid}/events?api_key={key}"
    turns: list[tuple[float, int]] = []
    transcribed: dict[int, tuple[float, int, str]] = {}
    while time.time() < until:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {parts.netloc}\r\n\r\n".encode())  # 1.0: not chunked
        status = await asyncio.wait_for(reader.readline(), 30)
        if b" 404 " in status:  # not live yet
            writer.close()
            await asyncio.sleep(0.2)
            continue
        ended = False
        try:
            while True:
                line = await asyncio.wait_for(reader.readline(), max(0.1, until - time.time()))
                if not line:
                    break
                if line.startswith(b'data: {"type":"turn.ended"'):
                    i = line.index(b'"end_ms":') + 9
                    turns.append((time.time(), int(line[i : line.index(b",", i)])))
                elif line.startswith(b'data: {"type":"turn.transcribed"'):
                    e = json.loads(line[6:])
                    transcribed[e["turn_id"]] = (time.time(), e["end_ms"], e["transcript"])
                elif line.startswith(b'data: {"type":"call.ended"'):
                    ended = True
                if ended and (not words or len(transcribed) >= len(turns)):
                    break
        except TimeoutError:
            pass
        finally:
            writer.close()
        break
    return {"turns": len(turns), "seen": turns, "words": list(transcribed.values())}


async def slot(
    args: argparse.Namespace, i: int, start_at: float, frames: dict[str, list[str]], lags: list[float]
) -> list[dict[str, object] | BaseException]:
    """Call slot ``i``: one call of ``length(i)``, or with ``--for`` calls back to back until then."""
    n, out = len(frames["inbound"]), []
    length = args.seconds + ((args.calls - 1 - i) * args.interval if args.end_together else 0.0)
    until = start_at + (args.for_s or 0.0)
    k = 0
    while True:
        offset = ((i + k * args.calls) * 7919) % n  # calls join the conversation at different points
        call_sid = "CA" + secrets.token_hex(16)
        subs = [
            asyncio.create_task(subscribe(args.url, args.key, call_sid, time.time() + length + 60, args.words))
            for _ in range(args.sse)
        ]
        try:
            call = await one_call(args.url, args.key, length, start_at, frames, offset, lags, call_sid=call_sid)
            call["sse"] = [await s for s in subs]
            out.append(call)
        except Exception as exc:  # counted, and the slot goes on
            out.append(exc)
            for s in subs:
                s.cancel()
        k += 1
        start_at = time.perf_counter()
        if args.for_s is None or start_at + length > until:
            return out


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    frames = payloads(Path(args.speech) if args.speech else None)
    lags: list[float] = []
    t0 = time.perf_counter() + 0.5
    # Each call's two tracks stay in step; calls start ``interval`` apart.
    slots = await asyncio.gather(*(slot(args, i, t0 + i * args.interval, frames, lags) for i in range(args.calls)))
    calls = [c for s in slots for c in s]
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
    p.add_argument("--speech", help="directory with inbound.wav and outbound.wav (mu-law): the call to play")
    p.add_argument("--sse", type=int, default=0, help="SSE clients per call, each reading the call's events")
    p.add_argument("--words", action="store_true", help="SSE clients read on after call.ended for turn.transcribed")
    p.add_argument("--for", dest="for_s", type=float, help="keep each call slot busy, call after call, this long")
    args = p.parse_args()
    print(json.dumps(asyncio.run(main_async(args))))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
