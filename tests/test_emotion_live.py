"""The emotion model live: real uvicorn + real Ray (call hosts scoring their own turns with the shipped weights,
in numpy) + a real WebSocket client. The caller's track is four clips of a speaker the model never saw in training
(RAVDESS actor 15): neutral, angry, angry (strong), neutral, scored against the caller's own voice.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
import websockets

from api.simulate import messages_from_tracks, read_ulaw_track
from tests.support import API_KEY, Server, SseReader, data_path, ended, send_paced

pytestmark = pytest.mark.integration

CLIPS = [
    "03-01-01-01-01-01-15.wav",  # neutral
    "03-01-05-01-01-02-15.wav",  # angry
    "03-01-05-02-01-02-15.wav",  # angry, strong
    "03-01-01-01-01-02-15.wav",  # neutral
]
PAUSE = b"\xff" * 8 * 1500  # 1.5 s of mu-law silence between turns


def test_turns_are_scored_live_and_one_episode_gives_one_alert(ray_address: str, tmp_path: Path) -> None:
    actor = data_path("emotion/ravdess/Actor_15")
    caller = b"".join(read_ulaw_track(actor / clip) + PAUSE for clip in CLIPS)
    messages = messages_from_tracks(caller, b"\xff" * len(caller), custom_parameters={"api_key": API_KEY})
    call_sid = messages[1]["start"]["callSid"]
    with Server.start(ray_address, tmp_path, MISE_EMOTION="1") as srv:
        reader = SseReader(srv.http + "/v1/events", until=ended(call_sid))
        assert reader.connected.wait(10)
        maps: dict[str, str] = {}

        async def run() -> None:
            async with websockets.connect(srv.ws) as ws:
                await send_paced(ws, messages[:200], 10.0)
                await asyncio.to_thread(srv.wait_call, call_sid, live=True)
                host = await asyncio.to_thread(srv.host_of, call_sid)
                pid = (await host.stats.remote())["pid"]
                maps["host"] = Path(f"/proc/{pid}/maps").read_text()
                await send_paced(ws, messages[200:], 10.0)
                await asyncio.wait_for(ws.wait_closed(), 30)

        asyncio.run(run())
        events = reader.wait()
        stored = srv.get(f"/v1/calls/{call_sid}/turns").json()["turns"]
        call = srv.wait_call(call_sid)

    # the host scored the turns (below) with numpy's BLAS, and no torch in its process (~500 MiB each): this
    # fails if anything on the host's path imports models.emotion or models.net, the training code's torch model
    assert "openblas" in maps["host"]
    assert "libtorch" not in maps["host"] and "libc10" not in maps["host"]

    turns = [e.data for e in events if e.event == "turn.ended"]
    assert [t["speaker"] for t in turns] == ["caller"] * 4
    f = [t["frustration"] for t in turns]
    assert min(f[1], f[2]) - max(f[0], f[3]) > 0.5, f"angry turns must score well above neutral ones: {f}"
    assert [t["emotion"]["label"] for t in turns][1:3] == ["angry", "angry"]
    # each turn scored against the caller's own voice, learned from their earlier turns (models.caller)
    assert [t["emotion"]["baseline_turns"] for t in turns] == [0, 1, 2, 3]
    alerts = [e for e in events if e.event == "frustration.alert"]
    assert len(alerts) == 1 and alerts[0].data["turn_id"] == turns[1]["turn_id"]
    kinds = [e.event for e in events if e.data["call_sid"] == call_sid]
    assert kinds.index("frustration.alert") == kinds.index("turn.ended", kinds.index("turn.ended") + 1) + 1
    assert [t["frustration"] for t in stored] == f  # what is stored is what was streamed
    summary = call["summary"]
    assert summary["frustration_alerts"] == 1 and summary["max_frustration"] == max(f)
    assert 0.0 < summary["frustration_ema"] < max(f)
    assert orjson.dumps(turns[1]["emotion"]["scores"])  # the class probabilities are there
    # `mise analyze` gives the same turns offline (api/analyze.py, the CLI's path), emotion and frustration
    # included: scored per speaker in the same order, equal to float noise.
    from api.analyze import analyze_tracks
    from engine.g711 import decode_ulaw
    from models import load_emotion_model

    offline = analyze_tracks(
        decode_ulaw(caller), decode_ulaw(b"\xff" * len(caller)), call_sid=call_sid, emotion=load_emotion_model()
    )["turns"]
    same = ("turn_id", "speaker", "start_ms", "end_ms", "duration_ms", "response_latency_ms")
    assert [{k: t[k] for k in same} for t in offline] == [{k: t[k] for k in same} for t in stored]
    for a, b in zip(offline, stored, strict=True):
        assert a["frustration"] == pytest.approx(b["frustration"], abs=1e-6)
        assert a["emotion"]["label"] == b["emotion"]["label"]
        assert a["emotion"]["baseline_turns"] == b["emotion"]["baseline_turns"]
        assert a["emotion"]["scores"] == pytest.approx(b["emotion"]["scores"], abs=1e-6)
        assert a["features"] == pytest.approx(b["features"], abs=1e-9)
