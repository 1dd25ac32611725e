"""Turn analysis live: real uvicorn + real Ray + a real WebSocket client replaying the scripted call.

The call actor must decide the same turns as the offline engine on the same audio, store each as it
ends (readable while the call is live), and fill the call's summary when the stream ends.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import websockets

from api.simulate import load_jsonl, with_fresh_sids
from engine.events import TURN_ENDED
from engine.pipeline import analyze
from tests.support import API_KEY, OTHER_KEY, Server, metric_delta, send_paced, track_audio

pytestmark = pytest.mark.integration

SPEED = 10.0


def without_envelope(turn: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in turn.items() if k not in ("call_sid", "stream_sid", "at", "at_ms")}


async def stream_then_read_live(server: Server, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stream everything but ``stop``; return the turns ``/turns`` shows while the call is still live."""
    call_sid = messages[1]["start"]["callSid"]
    async with websockets.connect(server.ws) as ws:
        await send_paced(ws, messages[:-1], SPEED)
        live: dict[str, Any] = {}
        for _ in range(100):
            live = (await asyncio.to_thread(server.get, f"/v1/calls/{call_sid}/turns")).json()
            if len(live["turns"]) == 10:
                break
            await asyncio.sleep(0.1)
        assert live["live"] is True, "the call must still be live"
        await ws.send(orjson.dumps(messages[-1]).decode())
        await asyncio.wait_for(ws.wait_closed(), 30)
    return list(live["turns"])


def test_live_turns_equal_the_offline_engine_and_the_summary_is_filled(server: Server, synthetic_capture: Path) -> None:
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    call_sid = messages[1]["start"]["callSid"]
    before = server.metrics()
    live_turns = asyncio.run(stream_then_read_live(server, messages))

    inbound, outbound = track_audio(messages, "inbound"), track_audio(messages, "outbound")
    events, summary = analyze(inbound, outbound)
    offline = [e.data for e in events if e.type == TURN_ENDED]
    assert len(offline) == 10
    # Every turn was decided and stored while the call was live, identical to the offline engine.
    assert [without_envelope(t) for t in live_turns] == offline
    assert all(t["call_sid"] == call_sid for t in live_turns)

    call = server.wait_call(call_sid)
    assert call["summary"]["turns"] == 10
    assert call["summary"] == summary.to_json()
    assert call["tracks"]["inbound"]["late_for_analysis_ms"] == 0
    stored = server.get(f"/v1/calls/{call_sid}/turns").json()
    assert stored["live"] is False and [without_envelope(t) for t in stored["turns"]] == offline
    assert server.get(f"/v1/calls/{call_sid}/turns", key=OTHER_KEY).status_code == 404  # another tenant
    after = server.metrics()
    assert metric_delta(before, after, 'mise_events_total{type="turn.ended"}') == 10
    assert metric_delta(before, after, 'mise_events_total{type="interruption"}') == 2
    assert metric_delta(before, after, 'mise_events_total{type="silence"}') == 1
    # Per-message counts are kept as plain integers and added up at each scrape: none lost or doubled.
    media = [m for m in messages if m["event"] == "media"]
    for track in ("inbound", "outbound"):
        sent = sum(1 for m in media if m["media"]["track"] == track)
        assert metric_delta(before, after, f'mise_frames_received_total{{track="{track}"}}') == sent
    assert metric_delta(before, after, "mise_messages_received_total") == len(messages)
    assert metric_delta(before, after, 'mise_stage_cpu_seconds_total{stage="storage"}') > 0  # turns were stored
    assert np.isfinite(offline[5]["features"]["pitch_z"])


def test_turns_need_a_key_and_a_known_call(server: Server) -> None:
    assert server.get("/v1/calls/CAnothere/turns").status_code == 404
    assert server.get("/v1/calls/CAnothere/turns", key="wrong-key-123").status_code == 401


def test_an_overloaded_host_sends_every_turn_without_features_and_counts_it(
    ray_address: str, tmp_path: Path, synthetic_capture: Path
) -> None:
    """MISE_MEASURE_MAX_DELAY_S=0 makes every turn 'too late' to measure: the host's overload path.
    Every turn still goes out, in order, with the same decisions; none has features; all are counted."""
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    call_sid = messages[1]["start"]["callSid"]
    with Server.start(ray_address, tmp_path, MISE_MEASURE_MAX_DELAY_S="0") as srv:
        before = srv.metrics()

        async def run() -> None:
            async with websockets.connect(srv.ws) as ws:
                await send_paced(ws, messages, SPEED)
                await asyncio.wait_for(ws.wait_closed(), 30)

        asyncio.run(run())
        call = srv.wait_call(call_sid)
        turns = srv.get(f"/v1/calls/{call_sid}/turns").json()["turns"]
        after = srv.metrics()
    events, _ = analyze(track_audio(messages, "inbound"), track_audio(messages, "outbound"))
    keys = ("turn_id", "speaker", "start_ms", "end_ms", "backchannel", "interrupted_other", "response_latency_ms")
    decided = [{k: e.data[k] for k in keys} for e in events if e.type == TURN_ENDED]
    assert call["summary"]["turns"] == 10
    assert [{k: t[k] for k in keys} for t in turns] == decided
    assert all(t["features_skipped"] == "overload" and t["features"]["pitch_mean_hz"] is None for t in turns)
    assert metric_delta(before, after, 'mise_turns_unmeasured_total{reason="overload"}') == 10
    assert call["tracks"]["inbound"]["frames"] == 2833  # the audio is whole: only features were given up
