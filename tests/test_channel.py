"""The node-local push channel (actors/channel.py): real Unix sockets; then the pump over it to a real CallHost
on real Ray, with the channel lost mid-call (nothing lost, nothing overtaken) and refused when the token is wrong."""

from __future__ import annotations

import asyncio
import pickle
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import ray
import websockets

from actors import channel as local
from actors import runtime
from actors.host import FINISH_CONCURRENCY, CallHost
from actors.hub import EventHub
from actors.pump import AudioPump
from api.metrics import Metrics
from api.simulate import load_jsonl, with_fresh_sids
from api.sse import EventFeed
from engine.call import CallMeta
from tests.support import API_KEY, Server, metric_delta, send_paced


def serve(handler: Any) -> local.ChannelServer:
    return local.ChannelServer(handler, node="n1", name="mise-test")


def test_requests_are_answered_in_order_and_a_failing_one_does_not_stop_the_rest() -> None:
    seen: list[bytes] = []

    def handler(request: bytes) -> bytes:
        if request == b"boom":
            raise ValueError("no such thing")
        seen.append(request)
        return request.upper()

    server = serve(handler)

    async def scenario() -> list[Any]:
        ch = await local.connect(server.address)
        futures = [ch.request(x) for x in (b"a", b"boom", b"c" * 100_000, b"")]
        out = await asyncio.gather(*futures, return_exceptions=True)
        ch.close()
        return out

    a, boom, c, empty = asyncio.run(scenario())
    assert a == b"A" and c == b"C" * 100_000 and empty == b""
    assert isinstance(boom, local.ChannelError) and "ValueError: no such thing" in str(boom)
    assert seen == [b"a", b"c" * 100_000, b""]
    assert server.connections == 1
    server.close()


def test_a_wrong_token_is_refused_and_counted() -> None:
    server = serve(lambda r: r)
    wrong = local.Address(server.address.node, server.address.name, b"x" * local.TOKEN_BYTES)

    async def scenario() -> BaseException | bytes:
        ch = await local.connect(wrong)
        try:
            return await asyncio.wait_for(ch.request(b"hello"), 10)
        except BaseException as exc:
            return exc
        finally:
            ch.close()

    assert isinstance(asyncio.run(scenario()), local.ChannelClosed)
    assert server.refused == 1 and server.connections == 0
    server.close()


def test_a_frame_over_the_limit_closes_the_connection_not_the_server() -> None:
    server = serve(lambda r: b"ok")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.connect(server.address.name)
        raw.sendall(server.address.token + (local.MAX_FRAME + 1).to_bytes(4, "big"))
        raw.settimeout(10)
        assert raw.recv(10) == b""  # closed by the host

    async def still_serving() -> bytes:
        ch = await local.connect(server.address)
        try:
            return await asyncio.wait_for(ch.request(b"x"), 10)
        finally:
            ch.close()

    assert asyncio.run(still_serving()) == b"ok"
    server.close()


def test_requests_waiting_when_the_connection_drops_fail_as_lost() -> None:
    release = threading.Event()

    def handler(request: bytes) -> bytes:
        release.wait(10)
        return request

    server = serve(handler)

    async def scenario() -> list[Any]:
        ch = await local.connect(server.address)
        futures = [ch.request(b"1"), ch.request(b"2")]
        await asyncio.sleep(0.1)
        ch.close()  # as when the host's process dies
        out = await asyncio.gather(*futures, return_exceptions=True)
        release.set()
        return [*out, await asyncio.gather(ch.request(b"3"), return_exceptions=True)]

    first, second, (after,) = asyncio.run(scenario())
    assert all(isinstance(x, local.ChannelClosed) for x in (first, second, after))
    server.close()


# --- the pump over the channel, to a real host on real Ray ---------------------------------------------------------

Host = ray.remote(num_cpus=0, concurrency_groups={"finish": FINISH_CONCURRENCY})(CallHost)


@ray.remote(num_cpus=0, concurrency_groups={"finish": FINISH_CONCURRENCY})
class SlowHost(CallHost):
    """A real host whose pushes take 50 ms: one is in flight when the socket is cut."""

    def push(self, items: Any, poll: list[str] | None = None) -> Any:
        time.sleep(0.05)
        return super().push(items, poll)


def meta(sid: str) -> CallMeta:
    return CallMeta("acme", sid, "MZ", "AC", ("inbound",), {}, "")


def frames(sid: str, start: int, count: int) -> list[tuple[str, str, int, bytes, float]]:
    return [(sid, "inbound", k * 20, bytes([k % 256]) * 160, 0.0) for k in range(start, start + count)]


@pytest.mark.integration
def test_pushes_go_over_the_channel_and_survive_losing_it(ray_address: str) -> None:
    """Frames pushed over the local socket, the socket cut mid-call (the host lives): the lost pushes go again
    through Ray, later ones follow them, and the host has every frame once, in place."""
    host: Any = SlowHost.remote(channel=True)
    ray.get(host.ready.remote())
    ray.get(host.open.remote(meta("CA1")))

    async def scenario() -> AudioPump:
        pump = AudioPump(interval_s=0.01, channels_on=runtime.node_id())
        pump.start()
        for k in range(0, 100, 5):
            pump.enqueue("h", host, *frames("CA1", k, 5))
            await asyncio.sleep(0.02)
        lane = pump._lanes["h"]
        assert lane.channel is not None, "the channel connected"
        while not (lane.inflight and lane.on_channel):
            await asyncio.sleep(0.001)
        lane.channel.close()  # cut with a push in flight (the host gets it, its reply is lost) and more coming
        for k in range(100, 200, 5):
            pump.enqueue("h", host, *frames("CA1", k, 5))
            await asyncio.sleep(0.02)
        await pump.flush("h")
        await pump.stop()
        return pump

    pump = asyncio.run(scenario())
    assert pump.counters.pushes_local > 5 and pump.counters.channels_lost == 1
    assert pump.counters.push_errors == 0 and pump.counters.frames_dropped == 0
    final = ray.get(host.finish.remote("CA1"))
    inbound = final["tracks"]["inbound"]
    assert inbound["frames"] == 200 and inbound["missing_ms"] == 0  # every frame once, in place
    assert inbound["duplicate_frames"] > 0  # the lost push had been applied: sent again, it was known as such
    ray.kill(host)


@pytest.mark.integration
def test_a_host_on_another_node_or_without_a_channel_is_pushed_through_ray(ray_address: str) -> None:
    for host, node in ((Host.remote(channel=False), runtime.node_id()), (Host.remote(channel=True), "elsewhere")):
        ray.get(host.open.remote(meta("CA2")))

        async def scenario(host: Any = host, node: str = node) -> AudioPump:
            pump = AudioPump(interval_s=0.01, channels_on=node)
            pump.start()
            for k in range(0, 50, 5):
                pump.enqueue("h", host, *frames("CA2", k, 5))
                await asyncio.sleep(0.02)
            await pump.stop()
            return pump

        pump = asyncio.run(scenario())
        assert pump.counters.pushes > 0 and pump.counters.pushes_local == 0
        assert ray.get(host.finish.remote("CA2"))["tracks"]["inbound"]["frames"] == 50
        ray.kill(host)


@pytest.mark.integration
def test_the_channel_serves_pickled_pushes_of_the_host_itself(ray_address: str) -> None:
    host: Any = Host.remote(channel=True)
    ray.get(host.open.remote(meta("CA3")))
    address = ray.get(host.channel.remote())
    assert address.node == runtime.node_id() and address.name.startswith(b"\0mise-host-")

    async def scenario() -> Any:
        ch = await local.connect(address)
        reply = await ch.request(pickle.dumps((frames("CA3", 0, 3) + frames("CA9", 0, 1), [])))
        ch.close()
        return pickle.loads(reply)

    ack = asyncio.run(scenario())
    assert (ack.applied, ack.orphaned, ack.failed) == (3, 1, 0)
    assert [e["type"] for _, e in ack.events] == ["call.started"]
    ray.kill(host)


# --- the event feed over the hub's channel ---------------------------------------------------------------------------


def event(seq: int) -> tuple[str, dict[str, Any]]:
    return ("acme", {"type": "t", "call_sid": "CA1", "stream_sid": "MZ1", "id": f"CA1:MZ1:{seq:08d}"})


@pytest.mark.integration
def test_events_go_over_the_hubs_channel_and_none_is_lost_or_reordered_when_it_closes(ray_address: str) -> None:
    """A feed publishes to a real hub actor over its local socket; the socket is cut with three batches in flight
    (the hub may have logged them; their replies are lost) and two more published meanwhile: the three go again
    through Ray, the two after them, and the hub logs every event once, in order."""
    hub: Any = ray.remote(EventHub).options(num_cpus=0).remote()

    async def scenario() -> EventFeed:
        feed = EventFeed(hub=hub, namespace="x", metrics=Metrics())
        await feed.start()
        assert feed._channel is not None, "the hub's channel connected"
        for seq in range(0, 4):  # over the channel, answered
            feed.publish([event(seq)])
        await asyncio.sleep(0.5)
        feed.publish([event(4), event(5)])
        feed.publish([event(6)])
        feed.publish([event(7)])
        feed._channel.close()  # the three in flight lose their replies
        feed.publish([event(8)])
        feed.publish([event(9), event(10)])
        for _ in range(100):
            await asyncio.sleep(0.05)
            if feed._after >= 10:
                break
        await feed.stop()
        return feed

    feed = asyncio.run(scenario())
    _, _, logged, gap = ray.get(hub.replay.remote("acme", "CA1", -1))
    assert [e[2]["id"] for e in logged] == [event(seq)[1]["id"] for seq in range(11)] and not gap
    assert feed._after == 10  # every event came back to the feed too (fanned out to its subscribers)
    ray.kill(hub)


# --- a real server, with and without the channels ---------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("channels", ["1", "0"])
def test_a_server_streams_a_call_over_its_channels_or_through_ray_alone(
    ray_address: str, tmp_path: Path, synthetic_capture: Path, channels: str
) -> None:
    """MISE_LOCAL_CHANNELS=1 (the default): the audio goes to the host over its socket; 0: every push is a Ray
    call. Either way the call ends whole, its turns stored and its events on /v1/events' hub."""
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    sid = messages[1]["start"]["callSid"]
    with Server.start(ray_address, tmp_path, MISE_LOCAL_CHANNELS=channels) as srv:
        before = srv.metrics()

        async def stream() -> None:
            async with websockets.connect(srv.ws) as ws:
                await send_paced(ws, messages, 8.0)
                await asyncio.wait_for(ws.wait_closed(), 60)

        asyncio.run(stream())
        call = srv.wait_call(sid)
        after = srv.metrics()
        pushes = metric_delta(before, after, "mise_actor_pushes_total")
        local_pushes = metric_delta(before, after, "mise_actor_pushes_local_total")
        assert pushes > 20 and local_pushes == (pushes if channels == "1" else 0)
        assert call["end_reason"] == "stop" and call["error"] is None and call["tracks"]["inbound"]["missing_ms"] == 0
        turns = srv.get(f"/v1/calls/{sid}/turns").json()["turns"]
        assert len(turns) > 5
        hub: Any = ray.get_actor("mise-hub", namespace=srv.namespace)
        for _ in range(100):  # the last events reach the hub within its hand-over interval
            types = [e[2]["type"] for e in ray.get(hub.replay.remote("acme", sid, -1))[2]]
            if "call.ended" in types:
                break
            time.sleep(0.1)
        assert types[0] == "call.started" and "call.ended" in types and types.count("turn.ended") == len(turns)
