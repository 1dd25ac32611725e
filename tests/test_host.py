"""CallHost as a plain object (the Ray actor wraps exactly this class): calls are isolated."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import soundfile

from actors.host import CallHost
from engine.call import CallMeta
from engine.events import CALL_ENDED, CALL_STARTED, TURN_ENDED, CallEvent
from engine.g711 import decode_ulaw, encode_ulaw
from engine.pipeline import analyze
from tests.support import data_path

FRAME = b"\xff" * 160


def meta(sid: str) -> CallMeta:
    return CallMeta("acme", sid, "MZ", "AC", ("inbound", "outbound"), {})


def test_a_call_that_raises_is_failed_alone() -> None:
    host = CallHost(ring_seconds=2)
    host.open(meta("A"))
    host.open(meta("B"))
    ack = host.push(
        [
            ("A", "inbound", 0, FRAME, 0.0),
            ("B", "sideways", 0, FRAME, 0.0),  # no such track: B's write raises
            ("A", "inbound", 20, FRAME, 0.0),
            ("B", "inbound", 20, FRAME, 0.0),  # B is failed now: refused, counted
            ("Z", "inbound", 0, FRAME, 0.0),  # never opened here
        ]
    )
    assert (ack.applied, ack.failed, ack.orphaned) == (2, 2, 1)
    a = host.finish("A")
    assert a is not None and a["tracks"]["inbound"]["frames"] == 2
    b = host.finish("B")
    assert b is not None and "KeyError" in b["error"]
    assert host.finish("B") is None and host.stats()["calls"] == 0


def test_reopening_a_call_sid_is_refused_while_it_is_open() -> None:
    host = CallHost(ring_seconds=2)
    host.open(meta("A"))
    with pytest.raises(ValueError, match="already open"):
        host.open(meta("A"))


def synthetic_ulaw() -> tuple[bytes, bytes]:
    call = data_path("calls/synthetic_dialogue")
    tracks = (soundfile.read(call / f"{t}.wav", dtype="int16")[0] for t in ("inbound", "outbound"))
    inbound, outbound = (encode_ulaw(x) for x in tracks)
    return inbound, outbound


def stream(host: CallHost, sids: list[str], inbound: bytes, outbound: bytes) -> dict[str, list[dict[str, Any]]]:
    """Every call gets the whole call, 20 ms per push, as fast as the host takes it; events per call."""
    events: dict[str, list[dict[str, Any]]] = {sid: [] for sid in sids}
    for k in range(len(inbound) // 160):
        chunk = slice(k * 160, (k + 1) * 160)
        tracks = (("inbound", inbound), ("outbound", outbound))
        ack = host.push([(sid, t, k * 20, x[chunk], 0.0) for sid in sids for t, x in tracks])
        for _, event in ack.events:
            events[event["call_sid"]].append(event)
    for sid in sids:
        final = host.finish(sid)
        assert final is not None and "error" not in final
        events[sid] += [event for _, event in final["events"]]
    return events


def test_turns_measured_off_the_push_leave_complete_and_in_decision_order() -> None:
    """The measuring thread races the pushes of 4 calls: every call's events equal the offline engine's."""
    inbound, outbound = synthetic_ulaw()
    expected, _ = analyze(*(decode_ulaw(x) for x in (inbound, outbound)))
    host = CallHost()
    sids = [f"CA{i}" for i in range(4)]
    for sid in sids:
        host.open(meta(sid))
    events = stream(host, sids, inbound, outbound)
    for sid in sids:
        envelope = ("type", "id", "call_sid", "at", "stream_sid")
        got = [(e["type"], e["id"], {k: v for k, v in e.items() if k not in envelope}) for e in events[sid]]
        # The host opens with call.started (seq 0) and closes with call.ended; the analysis is in between.
        assert got[0][:2] == (CALL_STARTED, f"{sid}:MZ:00000000") and got[-1][0] == CALL_ENDED
        shifted = [(e.type, CallEvent(e.type, e.seq + 1, e.at_ms, e.data).event_id(sid, "MZ")) for e in expected]
        assert [g[:2] for g in got[1:-1]] == shifted
        assert [g[2] for g in got[1:-1]] == [{"at_ms": e.at_ms, **e.data} for e in expected]
        assert got[-1][2]["summary"]["turns"] == 10 and got[-1][2]["end_reason"] == ""
    stats = host.stats()
    assert stats["turns_measured"] == 40 and stats["turns_unmeasured"] == 0 and stats["measure_backlog"] == 0
    assert stats["turn_event_count"] == 40


def test_an_overloaded_host_sends_turns_without_features_and_counts_them() -> None:
    inbound, outbound = synthetic_ulaw()
    host = CallHost(measure_max_delay_s=0.0)  # every turn has waited "too long"
    host.open(meta("A"))
    events = stream(host, ["A"], inbound, outbound)["A"]
    turns = [e for e in events if e["type"] == TURN_ENDED]
    assert len(turns) == 10 and [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert all(t["features_skipped"] == "overload" and t["features"]["pitch_mean_hz"] is None for t in turns)
    assert host.stats()["turns_unmeasured"] == 10 and host.stats()["turns_measured"] == 0


def test_an_error_on_the_measuring_thread_fails_that_call_alone_and_the_thread_goes_on() -> None:
    """Fault injection (the one stand-in here): call A's analyzer raises when the measuring thread
    releases its measured turns. A is failed, counted; B, on the same host and thread, goes on."""
    inbound, outbound = synthetic_ulaw()
    host = CallHost()
    for sid in "AB":
        host.open(meta(sid))

    analyzer = host._calls["A"].analyzer
    release = analyzer.release

    def broken() -> list[CallEvent]:  # raises on the measuring thread only
        if threading.current_thread().name == "mise-measure":
            raise RuntimeError("injected")
        return release()

    analyzer.release = broken  # type: ignore[method-assign]
    b_events: list[dict[str, Any]] = []
    for k in range(len(inbound) // 160):
        chunk = slice(k * 160, (k + 1) * 160)
        ack = host.push(
            [(sid, t, k * 20, x[chunk], 0.0) for sid in "AB" for t, x in (("inbound", inbound), ("outbound", outbound))]
        )
        b_events += [e for _, e in ack.events if e["call_sid"] == "B"]
    final_b = host.finish("B")
    assert final_b is not None and "error" not in final_b
    b_events += [e for _, e in final_b["events"]]
    final_a = host.finish("A")
    assert final_a is not None and "injected" in final_a["error"]
    assert sum(e["type"] == TURN_ENDED for e in b_events) == 10  # every turn of B, measured
    assert all(
        e["features"]["pitch_mean_hz"] is not None for e in b_events if e["type"] == TURN_ENDED and not e["backchannel"]
    )
    assert host.stats()["measure_errors"] >= 1
