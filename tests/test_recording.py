"""Recordings: a real uvicorn + Ray server, a real WebSocket client speaking Twilio Media Streams, and the
recording read back through ``GET /v1/calls/{call_sid}/audio`` and from the folder it is stored in.

- sample for sample the decoded source (5% of frames dropped: those silence; some reordered);
- clips and Range requests return exactly the samples asked for; another tenant gets 404;
- a live call plays up to now; a server killed with SIGKILL leaves its recording playable up to
  within 2 s of the kill;
- a tenant whose calls are not recorded has no recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import soundfile
import websockets

from api.simulate import load_jsonl, play, with_fresh_sids
from engine.store.audio import recording_key
from tests.support import API_KEY, OTHER_KEY, Server, dropped_and_reordered, send_paced, track_audio

pytestmark = pytest.mark.integration

SPEED = 25.0


def wav(response: Any) -> np.ndarray:
    """A WAV response's samples, int16, shape (frames, channels)."""
    assert response.status_code in (200, 206), response.text
    assert response.headers["content-type"] == "audio/wav"
    data, rate = soundfile.read(io.BytesIO(response.content), dtype="int16", always_2d=True)
    assert rate == 8000
    return np.asarray(data)


def expected_audio(messages: list[dict[str, Any]], dropped: set[int], track: str) -> np.ndarray:
    expected = track_audio(messages, track)
    for i in dropped:
        media = messages[i]["media"]
        if media["track"] == track:
            at = int(media["timestamp"]) * 8
            expected[at : at + 160] = 0
    return expected


@pytest.fixture(scope="module")
def server(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server.start(ray_address, tmp_path_factory.mktemp("recording"), MISE_TENANT_RECORD_AUDIO="globex:0") as srv:
        yield srv


@pytest.fixture(scope="module")
def recorded(server: Server, synthetic_capture: Path) -> dict[str, Any]:
    """One call streamed with drops and reordering, ended."""
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    sent, dropped = dropped_and_reordered(messages, seed=20261202)
    result = asyncio.run(play(server.ws, sent, speed=SPEED))
    call = server.wait_call(result.call_sid)
    return {"messages": messages, "dropped": dropped, "call": call, "call_sid": result.call_sid}


def test_the_recording_is_the_source_sample_for_sample_with_dropped_frames_silent(
    server: Server, recorded: dict[str, Any]
) -> None:
    call_sid, messages, dropped = recorded["call_sid"], recorded["messages"], recorded["dropped"]
    stream_sid = recorded["call"]["stream_sid"]
    both = wav(server.get(f"/v1/calls/{call_sid}/audio"))
    assert both.shape == (56660 * 8, 2)
    for channel, track in enumerate(("inbound", "outbound")):  # caller left
        expected = expected_audio(messages, dropped, track)
        alone = wav(server.get(f"/v1/calls/{call_sid}/audio", track=track))
        assert alone.shape == (len(expected), 1)
        assert np.array_equal(alone[:, 0], expected), f"{track} differs from the source"
        assert np.array_equal(both[:, channel], expected)
        # The stored file itself: mu-law as received, dropped frames 0xFF (mu-law silence), not 0x00.
        stored = (server.data_dir / "recordings" / recording_key("acme", call_sid, stream_sid, track)).read_bytes()
        assert len(stored) == len(expected)
        for i in dropped:
            media = messages[i]["media"]
            if media["track"] == track:
                at = int(media["timestamp"]) * 8
                assert stored[at : at + 160] == b"\xff" * 160


def test_clips_and_ranges_return_exactly_the_samples_asked_for(server: Server, recorded: dict[str, Any]) -> None:
    call_sid = recorded["call_sid"]
    path = f"/v1/calls/{call_sid}/audio"
    full = server.get(path)
    whole = wav(full)
    assert full.headers["accept-ranges"] == "bytes"
    assert int(full.headers["content-length"]) == len(full.content) == 44 + whole.size * 2

    clip = wav(server.get(path, start_ms=12_340, end_ms=15_020))
    assert np.array_equal(clip, whole[12_340 * 8 : 15_020 * 8])
    inbound_clip = wav(server.get(path, track="inbound", start_ms=50_000))
    assert np.array_equal(inbound_clip[:, 0], whole[50_000 * 8 :, 0])

    def ranged(spec: str, **params: Any) -> Any:
        import httpx

        return httpx.get(
            server.http + path, params=params, headers={"Authorization": f"Bearer {API_KEY}", "Range": spec}
        )

    for spec, lo, hi in (
        ("bytes=0-99", 0, 100),
        ("bytes=1001-50000", 1001, 50001),
        ("bytes=-777", len(full.content) - 777, len(full.content)),
    ):
        part = ranged(spec)
        assert part.status_code == 206
        assert part.content == full.content[lo:hi]
        assert part.headers["content-range"] == f"bytes {lo}-{hi - 1}/{len(full.content)}"
    tail = ranged("bytes=400000-")
    assert tail.status_code == 206 and tail.content == full.content[400000:]
    clip_full = server.get(path, start_ms=1000, end_ms=2000)
    clip_part = ranged("bytes=44-1043", start_ms=1000, end_ms=2000)
    assert clip_part.content == clip_full.content[44:1044]
    assert ranged(f"bytes={len(full.content)}-").status_code == 416

    assert server.get(path, key=OTHER_KEY).status_code == 404  # another tenant's key
    assert server.get(path, key="not-a-key").status_code == 401
    assert server.get(path, track="left").status_code == 400
    assert server.get(path, start_ms=2000, end_ms=1000).status_code == 400
    assert server.get("/v1/calls/CAnothere/audio").status_code == 404


def test_a_live_call_plays_up_to_now(server: Server, synthetic_capture: Path) -> None:
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    call_sid = messages[1]["start"]["callSid"]
    half = len(messages) // 2

    sent_ms = max(int(m["media"]["timestamp"]) for m in messages[:half] if m["event"] == "media") + 20

    def played_up_to(samples: int) -> np.ndarray:
        """The live recording once it holds ``samples`` (written every 0.5 s); never more than was sent."""
        deadline = time.monotonic() + 20
        while True:
            r = server.get(f"/v1/calls/{call_sid}/audio", track="inbound")
            audio = wav(r) if r.status_code == 200 else np.zeros((0, 1), np.int16)
            assert len(audio) <= samples
            if len(audio) == samples or time.monotonic() > deadline:
                return audio
            time.sleep(0.1)

    async def run() -> tuple[np.ndarray, np.ndarray]:
        async with websockets.connect(server.ws) as ws:
            await send_paced(ws, messages[:half], SPEED)
            first = await asyncio.to_thread(played_up_to, sent_ms * 8)
            await send_paced(ws, messages[half : half + 500], SPEED)
            second = await asyncio.to_thread(played_up_to, (sent_ms + 250 * 20) * 8)
            assert (await asyncio.to_thread(server.get, f"/v1/calls/{call_sid}")).json()["live"]
            await ws.send(orjson.dumps(messages[-1]).decode())
            await asyncio.wait_for(ws.wait_closed(), 30)
        return first, second

    first, second = asyncio.run(run())
    expected = track_audio(messages, "inbound")
    assert len(first) == sent_ms * 8  # everything sent so far
    assert np.array_equal(first[:, 0], expected[: len(first)])
    assert len(second) == (sent_ms + 250 * 20) * 8
    assert np.array_equal(second[:, 0], expected[: len(second)])


def test_a_server_killed_mid_call_leaves_a_playable_recording(
    ray_address: str, tmp_path: Path, synthetic_capture: Path
) -> None:
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    call_sid = messages[1]["start"]["callSid"]
    first = Server.launch(ray_address, tmp_path)
    namespace = first.namespace
    killed_at_ms = 0

    async def stream_then_kill() -> None:
        nonlocal killed_at_ms
        async with websockets.connect(first.ws) as ws:
            t0 = time.perf_counter()
            for msg in messages[:-1]:
                if msg["event"] == "media":
                    due = t0 + int(msg["media"]["timestamp"]) / 1000 / 2  # twice real time: 1 s of audio per flush
                    if due - time.perf_counter() > 0.001:
                        await asyncio.sleep(due - time.perf_counter())
                    if int(msg["media"]["timestamp"]) >= 8000:
                        killed_at_ms = int(msg["media"]["timestamp"])
                        first.process.kill()  # SIGKILL: no flush, no close, nothing
                        first.process.wait()
                        return
                await ws.send(orjson.dumps(msg).decode())

    with contextlib.suppress(websockets.ConnectionClosed, OSError):
        asyncio.run(stream_then_kill())
    first.cleanup_actors()
    second = Server.launch(ray_address, tmp_path, namespace=namespace)
    try:
        audio = wav(second.get(f"/v1/calls/{call_sid}/audio", track="inbound"))
        assert len(audio) >= (killed_at_ms - 2000) * 8, f"{len(audio) / 8:.0f} ms kept of {killed_at_ms} ms sent"
        expected = track_audio(messages, "inbound")
        assert np.array_equal(audio[:, 0], expected[: len(audio)])
    finally:
        second.stop()


def test_a_tenant_whose_calls_are_not_recorded_has_no_recording(server: Server, synthetic_capture: Path) -> None:
    # The module's server records acme's calls, not globex's (MISE_TENANT_RECORD_AUDIO, conftest's server).
    messages = with_fresh_sids(load_jsonl(synthetic_capture)[:400], api_key=OTHER_KEY)
    result = asyncio.run(play(server.ws, messages, speed=0, close_without_stop=True))  # a cut, no stop
    server.wait_call(result.call_sid, key=OTHER_KEY)
    r = server.get(f"/v1/calls/{result.call_sid}/audio", key=OTHER_KEY)
    assert r.status_code == 404 and "not recorded" in r.json()["error"]
    assert not (server.data_dir / "recordings" / "globex").exists()
