"""AudioPump against a real CallHost actor on real Ray."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import ray
import soundfile

from actors.host import FINISH_CONCURRENCY, CallHost
from actors.pump import AudioPump
from engine.call import CallMeta
from engine.g711 import encode_ulaw
from models.live import LiveEmotionModel, read_weights
from models.scoring import weights_path
from tests.support import data_path

pytestmark = pytest.mark.integration


def meta(sid: str) -> CallMeta:
    return CallMeta("acme", sid, "MZ", "AC", ("inbound",), {}, "")


@ray.remote(num_cpus=0, concurrency_groups={"finish": FINISH_CONCURRENCY})
class SlowHost(CallHost):
    """A real host whose pushes take ``delay`` seconds: a host under load."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self._delay = delay

    def push(self, items: list[Any], poll: list[str] | None = None) -> Any:
        time.sleep(self._delay)
        return super().push(items, poll)


def test_concurrent_flushes_never_drop_another_calls_frames(ray_address: str) -> None:
    """Calls B and D flush while one push is in flight. B wakes first and forgets the lane; call C
    then enqueues into a new lane; only then D wakes. An earlier version had D forget C's new lane,
    losing C's frames. Ray's thread is held between the two wake-ups to force that order."""
    host: Any = SlowHost.remote(0.3)
    for sid in "BCD":
        ray.get(host.open.remote(meta(sid)))

    async def scenario() -> None:
        pump = AudioPump(interval_s=60)  # no background ticks: only flushes send
        pump.enqueue("h", host, ("B", "inbound", 0, b"\xff" * 160, 0.0))
        b = asyncio.create_task(pump.flush("h"))
        await asyncio.sleep(0)  # B sent the push and waits on it
        pump._lanes["h"].inflight[0].add_done_callback(lambda _: time.sleep(0.2))
        d = asyncio.create_task(pump.flush("h"))
        await asyncio.sleep(0)  # D waits on the same push
        await b
        pump.enqueue("h", host, ("C", "inbound", 0, b"\xff" * 160, 0.0))
        await d
        await pump.flush("h")  # C's own finalization

    asyncio.run(scenario())
    assert ray.get(host.finish.remote("B"))["tracks"]["inbound"]["frames"] == 1
    assert ray.get(host.finish.remote("C"))["tracks"]["inbound"]["frames"] == 1
    ray.kill(host)


def test_a_host_that_stops_answering_costs_bounded_memory_and_is_counted(ray_address: str) -> None:
    host: Any = SlowHost.remote(3.0)
    ray.get(host.open.remote(meta("X")))

    async def scenario() -> AudioPump:
        pump = AudioPump(interval_s=0.01, max_pending=100)
        pump.start()
        for k in range(20):
            pump.enqueue("h", host, ("X", "inbound", k * 20, b"\xff" * 160, 0.0))
        await asyncio.sleep(0.1)  # the first push is in flight and stuck
        for k in range(20, 520):
            pump.enqueue("h", host, ("X", "inbound", k * 20, b"\xff" * 160, 0.0))
        await pump.stop()
        return pump

    pump = asyncio.run(scenario())
    assert pump.counters.frames_dropped == 400
    assert ray.get(host.finish.remote("X"))["tracks"]["inbound"]["frames"] == 120
    ray.kill(host)


def dialogue() -> dict[str, bytes]:
    call = data_path("calls/synthetic_dialogue")
    return {t: encode_ulaw(soundfile.read(call / f"{t}.wav", dtype="int16")[0]) for t in ("inbound", "outbound")}


def push_call(host: Any, call_sid: str, audio: dict[str, bytes]) -> None:
    """The whole call's audio, a second per push (faster than real time)."""
    n = len(audio["inbound"]) // 160
    for k in range(0, n, 50):
        items = [
            (call_sid, t, (k + i) * 20, x[(k + i) * 160 : (k + i + 1) * 160], 0.0)
            for i in range(min(50, n - k))
            for t, x in audio.items()
        ]
        ray.get(host.push.remote(items))


class SlowModel(LiveEmotionModel):
    """The shipped emotion model, made slow (1 s per turn) as on an overloaded host: a stand-in for load."""

    def score_with_logits(self, items: list[Any]) -> list[dict[str, Any]]:
        time.sleep(1.0)
        return super().score_with_logits(items)


def test_one_calls_finish_never_holds_up_another_calls_audio(ray_address: str) -> None:
    """Call A ends while its last turns are still to be scored, slowly (its finish scores them); call B's
    pushes to the same host are answered meanwhile, before A's finish returns."""
    audio = dialogue()
    host: Any = (
        ray.remote(concurrency_groups={"finish": FINISH_CONCURRENCY})(CallHost)
        .options(num_cpus=0)
        .remote(emotion=SlowModel(read_weights(weights_path())), measure_max_delay_s=60.0)
    )
    ray.get([host.open.remote(meta("A")), host.open.remote(meta("B"))])
    push_call(host, "A", audio)
    finishing = host.finish.remote("A")
    answered_first = 0
    for k in range(20):  # B streams on while A finishes
        ray.get(host.push.remote([("B", "inbound", k * 20, b"\xff" * 160, 0.0)]))
        ready, _ = ray.wait([finishing], timeout=0)
        answered_first += not ready
    final = ray.get(finishing, timeout=120)
    assert answered_first == 20, "B's pushes waited for A's finish"
    turns = [e for _, e in final["events"] if e["type"] == "turn.ended"]
    assert turns and "error" not in final  # A ended whole, every turn measured and scored
    assert all(t["frustration"] is not None and "features" in t for t in turns)
    assert ray.get(host.stats.remote())["turns_unscored"] == 0
    ray.kill(host)


class BrokenModel(LiveEmotionModel):
    """The shipped emotion model failing on every turn (as on weights it cannot run): a stand-in for a fault."""

    def score_with_logits(self, items: list[Any]) -> list[dict[str, Any]]:
        raise FloatingPointError("the model failed on this turn")


def test_a_turn_the_emotion_model_fails_on_goes_out_measured_and_unscored_counted(ray_address: str) -> None:
    host: Any = (
        ray.remote(concurrency_groups={"finish": FINISH_CONCURRENCY})(CallHost)
        .options(num_cpus=0)
        .remote(emotion=BrokenModel(read_weights(weights_path())))
    )
    ray.get(host.open.remote(meta("A")))
    push_call(host, "A", dialogue())
    final = ray.get(host.finish.remote("A"), timeout=120)
    turns = [e for _, e in final["events"] if e["type"] == "turn.ended"]
    stats = ray.get(host.stats.remote())
    assert turns and "error" not in final  # the call ended whole
    assert all("features" in t and t["frustration"] is None and t["emotion"] is None for t in turns)
    assert stats["turns_unscored"] >= len(turns) and stats["measure_errors"] == 0
    ray.kill(host)
