"""CallHost as a plain object (the Ray actor wraps exactly this class): calls are isolated."""

from __future__ import annotations

import pytest

from actors.host import CallHost
from engine.call import CallMeta

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
