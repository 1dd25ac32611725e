"""Live events over SSE: real uvicorn + real Ray + a real WebSocket client + real HTTP SSE clients.

A call streamed at 10x real time; subscribers per call and per tenant read it as it happens.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import pytest
import websockets

from actors.hub import EventHub
from api.events import EventRouter
from api.metrics import Metrics
from api.simulate import load_jsonl, with_fresh_sids
from api.sse import EventFeed, Subscriber
from engine.store.sqlite import SqliteStore
from tests.support import (
    API_KEY,
    OTHER_KEY,
    REPO,
    Server,
    SseEvent,
    SseReader,
    ended,
    metric_delta,
    send_paced,
    wait_searchable,
)
from tests.test_webhooks import callback

pytestmark = pytest.mark.integration

SPEED = 10.0


def seqs(events: list[SseEvent]) -> list[int]:
    return [int(e.data["id"].rpartition(":")[2]) for e in events]


def check_call_sequence(events: list[SseEvent], call_sid: str) -> None:
    mine = [e for e in events if e.data.get("call_sid") == call_sid]
    assert seqs(mine) == list(range(len(mine))), "every event of the call once, in order"
    kinds = [e.event for e in mine]
    assert kinds[0] == "call.started" and kinds[-1] == "call.ended"
    assert kinds.count("turn.ended") == 10 and kinds.count("interruption") == 2 and kinds.count("silence") == 1
    assert all(e.event == e.data["type"] for e in mine)
    assert len({e.id for e in mine}) == len(mine)


async def stream(server: Server, messages: list[dict[str, Any]], *, live_first: int = 0, on_live: Any = None) -> None:
    """Send ``messages`` paced at SPEED; after the first ``live_first`` media, call ``on_live()`` once."""
    async with websockets.connect(server.ws) as ws:
        if on_live is not None:
            for msg in messages[: 2 + live_first]:
                await ws.send(orjson.dumps(msg).decode())
            await asyncio.to_thread(server.wait_call, messages[1]["start"]["callSid"], live=True)
            await asyncio.to_thread(on_live)
            messages = messages[2 + live_first :]
        await send_paced(ws, messages, SPEED)
        await asyncio.wait_for(ws.wait_closed(), 30)


def test_a_call_arrives_in_order_to_its_tenant_only(server: Server, synthetic_capture: Path) -> None:
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    call_sid = messages[1]["start"]["callSid"]
    before = server.metrics()
    everything = SseReader(server.http + "/v1/events", until=ended(call_sid))
    other_tenant = SseReader(server.http + "/v1/events", key=OTHER_KEY)
    only_turns = SseReader(server.http + "/v1/events?types=turn.ended,call.ended&speaker=caller", until=ended(call_sid))
    for reader in (everything, other_tenant, only_turns):
        assert reader.connected.wait(10) and reader.status == 200
    late: list[SseReader] = []

    def subscribe_late() -> None:  # the call is live and has spoken for 8 s: a late subscriber
        late.append(SseReader(server.http + f"/v1/calls/{call_sid}/events", until=ended(call_sid)))
        form = callback(call_sid, 2, "in-progress")  # and Twilio says how the call is doing
        assert httpx.post(server.http + f"/v1/webhook/twilio?api_key={API_KEY}", data=form).status_code == 204

    asyncio.run(stream(server, messages, live_first=800, on_live=subscribe_late))
    statuses = [e for e in everything.wait() if e.event == "call.status"]
    assert [(e.data["call_sid"], e.data["status"]) for e in statuses] == [(call_sid, "in-progress")]
    check_call_sequence([e for e in everything.events if e.event != "call.status"], call_sid)
    schema = orjson.loads((REPO / "docs" / "events.schema.json").read_bytes())
    validator = jsonschema.Draft202012Validator(schema)
    for e in everything.events:  # every event as documented (docs/events.schema.json)
        errors = [f"{'/'.join(map(str, x.absolute_path))}: {x.message}" for x in validator.iter_errors(e.data)]
        assert errors == [], (e.event, errors)
    assert [e.data for e in late[0].wait()] == [e.data for e in everything.events if e.data["call_sid"] == call_sid]
    check_call_sequence([e for e in late[0].events if e.event != "call.status"], call_sid)
    caller = only_turns.wait()
    assert [e.event for e in caller[:-1]] == ["turn.ended"] * 5 and caller[-1].event == "call.ended"
    assert all(e.data["speaker"] == "caller" for e in caller[:-1])
    other_tenant.stop()
    assert not [e for e in other_tenant.events if e.data.get("call_sid") == call_sid], "another tenant's events"
    after = server.metrics()
    assert metric_delta(before, after, "mise_sse_connections_total") >= 4


def test_a_reconnect_with_last_event_id_misses_nothing_and_repeats_nothing(
    server: Server, synthetic_capture: Path
) -> None:
    """The first connection ends after the call's first turn (a dropped connection); the client
    reconnects mid-call with Last-Event-ID, to the call's own stream, and reads to the end."""
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    call_sid = messages[1]["start"]["callSid"]
    first = SseReader(
        server.http + "/v1/events", until=lambda e: e.data.get("call_sid") == call_sid and e.event == "turn.ended"
    )
    assert first.connected.wait(10)
    second: list[SseReader] = []

    def reconnect() -> None:  # 16 s into the call: the first turn has ended, the call goes on
        last = first.wait()[-1].id
        second.append(
            SseReader(server.http + f"/v1/calls/{call_sid}/events", last_event_id=last, until=ended(call_sid))
        )
        assert second[0].connected.wait(10) and second[0].status == 200

    asyncio.run(stream(server, messages, live_first=1600, on_live=reconnect))
    resumed = second[0].wait()
    assert resumed[0].event != "call.started", "the resume started over instead of after Last-Event-ID"
    combined = [e for e in first.events if e.data.get("call_sid") == call_sid] + resumed
    check_call_sequence(combined, call_sid)
    bad = httpx.get(server.http + f"/v1/calls/{call_sid}/events", params={"api_key": OTHER_KEY})
    assert bad.status_code == 404  # another tenant cannot open this call's stream


def test_a_calls_second_stream_keeps_the_first_streams_events_turns_and_search_documents(
    server: Server, synthetic_capture: Path
) -> None:
    """Twilio may stream one call twice (a second ``<Start><Stream>``): the second stream's events reach SSE
    with ids of their own, and its turns number on from the first's, so no turn replaces another in the
    call's turns or in the search index."""
    first = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    call_sid = first[1]["start"]["callSid"]
    second = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    stream_sid = second[1]["start"]["streamSid"]
    for msg in second:  # the same call, another stream
        if msg.get("event") == "start":
            msg["start"] = dict(msg["start"], callSid=call_sid)
        elif msg.get("event") == "stop":
            msg["stop"] = dict(msg["stop"], callSid=call_sid)
    reader = SseReader(
        server.http + "/v1/events", until=lambda e: ended(call_sid)(e) and e.data["stream_sid"] == stream_sid
    )
    assert reader.connected.wait(10)
    asyncio.run(stream(server, first))
    server.wait_no_live_calls()
    asyncio.run(stream(server, second))
    events = [e for e in reader.wait() if e.data.get("call_sid") == call_sid]
    by_stream = [[e for e in events if e.data["stream_sid"] == sid] for sid in (first[1]["streamSid"], stream_sid)]
    for part in by_stream:
        check_call_sequence(part, call_sid)
    assert len({e.data["id"] for e in events}) == len(events), "an event id repeated across the streams"
    turns = wait_searchable(server, call_sid)
    assert [t["turn_id"] for t in turns] == list(range(20)), "the second stream's turns number on from the first's"
    assert [t["stream_sid"] for t in turns] == [first[1]["streamSid"]] * 10 + [stream_sid] * 10
    ended_ids = [e.data["turn_id"] for e in events if e.event == "turn.ended"]
    assert ended_ids == list(range(20))


def test_a_hub_killed_mid_call_is_made_again_and_the_call_s_later_events_still_arrive(
    ray_address: str, tmp_path: Path, synthetic_capture: Path
) -> None:
    """The hub is killed for good (no Ray restart) after the call's first media: the API process's feed
    makes it again by name, the call's host follows it, and a subscriber keeps receiving the call."""
    import ray

    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    call_sid = messages[1]["start"]["callSid"]
    with Server.start(ray_address, tmp_path) as srv:
        reader = SseReader(srv.http + "/v1/events", until=ended(call_sid))
        assert reader.connected.wait(10)

        def kill_hub() -> None:
            ray.kill(ray.get_actor("mise-hub", namespace=srv.namespace), no_restart=True)

        asyncio.run(stream(srv, messages, live_first=100, on_live=kill_hub))
        got = [e for e in reader.wait() if e.data.get("call_sid") == call_sid]
        kinds = [e.event for e in got]
        assert kinds[-1] == "call.ended"  # the call's end reached the subscriber through the new hub
        hub = ray.get_actor("mise-hub", namespace=srv.namespace)
        _, _, logged, _ = ray.get(hub.replay.remote("acme", call_sid, -1))
        later = [event["type"] for _, _, event in logged]  # what the new hub carried (the switch-over's are lost)
        assert "turn.ended" in later and later[-1] == "call.ended"
        assert set(later) <= set(kinds)  # and every one of them reached the subscriber


def test_unknown_call_bad_key_and_bad_filter(server: Server) -> None:
    assert httpx.get(server.http + "/v1/calls/CAnope/events", params={"api_key": API_KEY}).status_code == 404
    assert httpx.get(server.http + "/v1/events", params={"api_key": "wrong-key-1234"}).status_code == 401
    assert httpx.get(server.http + "/v1/events", params={"api_key": API_KEY, "speaker": "boss"}).status_code == 400


def test_two_processes_ingest_on_one_sse_on_the_other(
    ray_address: str, tmp_path: Path, synthetic_capture: Path
) -> None:
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    call_sid = messages[1]["start"]["callSid"]
    with Server.pair(ray_address, tmp_path) as (a, b):
        reader = SseReader(b.http + "/v1/events", until=ended(call_sid))  # subscribed on B
        assert reader.connected.wait(10) and reader.status == 200
        asyncio.run(stream(a, messages))  # streamed into A
        check_call_sequence(reader.wait(), call_sid)


def test_a_subscriber_that_stops_reading_is_dropped_alone() -> None:
    """The fan-out policy, in-process (real asyncio queues, no server): a full queue drops that
    subscriber and no one else; nothing blocks."""

    async def run() -> None:
        feed = EventFeed(hub=None, namespace="x", metrics=Metrics())  # type: ignore[arg-type]
        slow, fast = Subscriber("acme", None, None, None), Subscriber("acme", None, None, None)
        slow.queue = asyncio.Queue(3)
        feed.subscribe(slow)
        feed.subscribe(fast)
        for offset in range(10):
            feed._fan_out((offset, "acme", {"type": "turn.ended", "call_sid": "CA1", "id": f"CA1:{offset:08d}"}))
            await fast.queue.get()  # the fast one keeps up
        assert slow.dropped.is_set() and slow.queue.qsize() == 3
        assert not fast.dropped.is_set()

    asyncio.run(run())


def test_the_hub_keeps_a_calls_events_in_order_and_drops_repeats() -> None:
    async def run() -> None:
        hub = EventHub(per_call=100)
        events = [
            ("acme", {"type": "t", "call_sid": "CA1", "stream_sid": "MZ1", "id": f"CA1:MZ1:{i:08d}"}) for i in range(5)
        ]
        await hub.publish(events[:3])
        await hub.publish(events[2:])  # a repeat of 2
        await hub.publish([("acme", {"type": "call.status", "call_sid": "CA1", "id": "CA1:status-seq-00000005"})])
        _, nxt, got, gap = await hub.replay("acme", "CA1", -1)
        assert [e[2]["id"] for e in got][:5] == [f"CA1:MZ1:{i:08d}" for i in range(5)] and not gap and nxt == 6
        fifth = {"type": "t", "call_sid": "CA1", "stream_sid": "MZ1", "id": "CA1:MZ1:00000005"}
        await hub.publish([("acme", fifth)])  # not a repeat
        assert hub.duplicates == 1 and (await hub.info())["next"] == 7
        assert (await hub.replay("globex", "CA1", -1))[2] == []
        _, _, after, _ = await hub.replay("acme", "CA1", 2)
        assert [e[0] for e in after] == [3, 4, 5, 6]
        polled = await hub.poll(6, 0.05)
        assert polled[2] == [] and hub.duplicates == 1

    asyncio.run(run())


def test_a_publisher_gets_its_events_back_and_its_poll_wakes_only_for_others() -> None:
    """An API process publishes with its feed's cursor: the reply holds what a poll would (its own events and
    any others since the cursor), and its waiting poll is not woken by its own publish, only by another's."""

    def event(i: int, call: str) -> tuple[str, dict[str, Any]]:
        return ("acme", {"type": "t", "call_sid": call, "stream_sid": "MZ1", "id": f"{call}:MZ1:{i:08d}"})

    async def run() -> None:
        hub = EventHub()
        mine = asyncio.create_task(hub.poll(-1, 5.0, publisher="A"))
        theirs = asyncio.create_task(hub.poll(-1, 5.0, publisher="B"))
        await asyncio.sleep(0.05)
        epoch, nxt, got, gap = await hub.publish([event(0, "CA1"), event(1, "CA1")], "A", -1)
        assert (epoch, nxt, [e[0] for e in got], gap) == (hub.epoch, 2, [0, 1], False)
        await asyncio.sleep(0.05)
        assert theirs.done() and [e[0] for e in theirs.result()[2]] == [0, 1]
        assert not mine.done(), "a publisher's own events woke its poll"
        await hub.publish([event(0, "CA2")], "B", 1)
        assert [e[0] for e in (await asyncio.wait_for(mine, 1))[2]] == [0, 1, 2]  # the feed skips what it had
        assert await hub.publish([event(2, "CA1")]) == 4  # anonymous: the next offset, as before

    asyncio.run(run())


def test_the_hubs_repeats_are_per_tenant_and_stream() -> None:
    """A call's second stream starts its sequence again, and another tenant may use the same call SID:
    neither is a repeat of the first stream's events."""

    async def run() -> None:
        hub = EventHub(per_call=100)

        def events(tenant: str, stream: str) -> list[tuple[str, dict[str, object]]]:
            return [
                (tenant, {"type": "t", "call_sid": "CA1", "stream_sid": stream, "id": f"CA1:{stream}:{i:08d}"})
                for i in range(3)
            ]

        await hub.publish(events("acme", "MZ1"))
        await hub.publish(events("acme", "MZ2"))  # the call's next stream
        await hub.publish(events("globex", "MZ9"))  # another tenant's call with the same SID
        await hub.publish(events("acme", "MZ2")[2:])  # a true repeat
        assert hub.duplicates == 1
        _, _, acme, _ = await hub.replay("acme", "CA1", -1)
        _, _, globex, _ = await hub.replay("globex", "CA1", -1)
        assert [e[2]["stream_sid"] for e in acme] == ["MZ1"] * 3 + ["MZ2"] * 3
        assert [e[2]["stream_sid"] for e in globex] == ["MZ9"] * 3

    asyncio.run(run())


def test_the_documented_examples_follow_the_schema() -> None:
    """docs/events.examples.jsonl (one event of each kind, captured from the demo call) against the schema."""
    schema = orjson.loads((REPO / "docs" / "events.schema.json").read_bytes())
    validator = jsonschema.Draft202012Validator(schema)
    examples = [orjson.loads(line) for line in (REPO / "docs" / "events.examples.jsonl").read_text().splitlines()]
    kinds = {"call.started", "turn.ended", "interruption", "silence", "call.ended", "turn.transcribed"}
    assert {e["type"] for e in examples} >= kinds
    for example in examples:
        assert list(validator.iter_errors(example)) == [], example["type"]


def test_events_reach_the_hub_at_once_after_a_quiet_spell_and_batched_under_load(tmp_path: Path) -> None:
    """The router's hand-over to the hub (in-process, a real EventHub): a lone event goes in the same turn of
    the event loop; events every 10 ms go at most once per interval, all of them, in order; ``flush`` sends
    what waits at once."""

    async def run() -> None:
        hub, loop = EventHub(), asyncio.get_running_loop()
        calls: list[tuple[float, list[Any]]] = []

        def publish(batch: list[Any]) -> None:
            calls.append((loop.time(), batch))
            loop.create_task(hub.publish(batch))

        router = EventRouter(
            store=SqliteStore(tmp_path / "m.db"), metrics=Metrics(), publish=publish, hub_interval_s=0.1
        )
        event = lambda i: ("acme", {"type": "t", "call_sid": "CA1", "stream_sid": "MZ1", "id": f"CA1:MZ1:{i:08d}"})  # noqa: E731
        began = loop.time()
        router.publish([event(0)])
        await asyncio.sleep(0)
        assert len(calls) == 1 and calls[0][0] - began < 0.02  # alone: no wait
        for i in range(1, 60):
            router.publish([event(i)])
            await asyncio.sleep(0.01)
        router.publish([event(60)])
        router.flush()  # stopping: what waits goes now
        at = [t for t, _ in calls]
        assert all(b - a >= 0.099 for a, b in itertools.pairwise(at[:-1]))  # the flush may come sooner
        assert 6 <= len(calls) <= 10  # ~0.6 s of events every 10 ms: one hand-over per 100 ms
        sent = [e["id"] for _, batch in calls for _, e in batch]
        assert sent == [event(i)[1]["id"] for i in range(61)]
        await asyncio.sleep(0.01)
        _, nxt, logged, _ = await hub.replay("acme", "CA1", -1)
        assert [e["id"] for _, _, e in logged] == sent and nxt == 61

    asyncio.run(run())
