"""SqliteStore: call records, callbacks in any order, tenants apart, surviving a reopen."""

from __future__ import annotations

from pathlib import Path

from engine.call import CallMeta
from engine.store.base import StatusCallback
from engine.store.sqlite import SqliteStore


def meta(call_sid: str = "CA1", tenant: str = "acme") -> CallMeta:
    return CallMeta(
        tenant, call_sid, "MZ1", "AC1", ("inbound", "outbound"), {"campaign": "x"}, "2026-01-01T00:00:00.000Z"
    )


def callback(seq: int, status: str, **fields: str) -> StatusCallback:
    return StatusCallback("CA1", "AC1", status, f"2026-01-01T00:00:0{seq}.000Z", seq, f"seq:{seq}", fields)


def test_stream_lifecycle_and_reopen(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "m.db")
    store.stream_started(meta())
    live = store.get("acme", "CA1")
    assert live is not None and live["live"] and live["status"] == "in-progress"
    final = {"duration_ms": 1000.0, "tracks": {"inbound": {"duration_ms": 1000.0}}}
    store.stream_ended("acme", "CA1", ended_at="2026-01-01T00:00:01.000Z", end_reason="stop", final=final)
    store.close()
    again = SqliteStore(tmp_path / "m.db").get("acme", "CA1")
    assert again is not None
    assert (again["live"], again["end_reason"], again["duration_ms"]) == (False, "stop", 1000.0)
    assert again["custom_parameters"] == {"campaign": "x"} and again["tracks_declared"] == ["inbound", "outbound"]


def test_callbacks_out_of_order_and_retried(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "m.db")
    assert store.status_callback("acme", callback(3, "completed", CallDuration="42"))
    assert store.status_callback(
        "acme", callback(0, "initiated", From="+15550001", To="+15550002", Direction="inbound")
    )
    store.stream_started(meta())  # the stream starts after two callbacks
    assert store.status_callback("acme", callback(2, "in-progress"))
    assert not store.status_callback("acme", callback(2, "in-progress"))  # Twilio retried it
    assert store.status_callback("acme", callback(1, "ringing"))
    call = store.get("acme", "CA1")
    assert call is not None
    assert call["status"] == "completed"
    assert [e["sequence"] for e in call["lifecycle"]] == [0, 1, 2, 3]
    assert (call["from"], call["to"], call["direction"], call["call_duration_s"]) == (
        "+15550001",
        "+15550002",
        "inbound",
        42,
    )


def test_tenants_never_see_each_other(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "m.db")
    store.stream_started(meta("CA1", "acme"))
    store.stream_started(meta("CA2", "globex"))
    assert [c["call_sid"] for c in store.recent("acme")] == ["CA1"]
    assert store.get("globex", "CA1") is None


def test_recent_pages_newest_first(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "m.db")
    for i in range(5):
        m = meta(f"CA{i}")
        store.stream_started(
            CallMeta(m.tenant, m.call_sid, "MZ", "AC", ("inbound",), {}, f"2026-01-01T00:00:0{i}.000Z")
        )
    page = store.recent("acme", limit=2)
    assert [c["call_sid"] for c in page] == ["CA4", "CA3"]
    older = store.recent("acme", limit=2, before=page[-1]["first_seen_at"])
    assert [c["call_sid"] for c in older] == ["CA2", "CA1"]
    assert [c["call_sid"] for c in store.recent("acme", live=False)] == []


def test_paging_never_skips_calls_first_seen_in_the_same_instant(tmp_path: Path) -> None:
    """Twilio's Timestamp has one-second resolution: many calls can share a first-seen time."""
    store = SqliteStore(tmp_path / "m.db")
    for i in range(7):
        store.status_callback(
            "acme", StatusCallback(f"CA{i}", "AC", "ringing", "2026-01-01T00:00:00.000Z", 0, "seq:0", {})
        )
    seen: list[str] = []
    cursor = None
    while True:
        page = store.recent("acme", limit=3, before=cursor)
        seen += [c["call_sid"] for c in page]
        if len(page) < 3:
            break
        cursor = f"{page[-1]['first_seen_at']}|{page[-1]['call_sid']}"
    assert sorted(seen) == [f"CA{i}" for i in range(7)] and len(seen) == 7


def test_recent_filters_by_call_metadata(tmp_path: Path) -> None:
    from engine.store.base import CallFilters

    store = SqliteStore(tmp_path / "m.db")
    for i, (sid, direction, duration) in enumerate([("CA1", "inbound", 400_000), ("CA2", "outbound-api", 20_000)]):
        m = CallMeta("acme", sid, f"MZ{i}", "AC1", ("inbound",), {"campaign": sid}, f"2026-01-0{i + 1}T00:00:00.000Z")
        store.stream_started(m)
        cb = StatusCallback(sid, "AC1", "completed", "2026-01-03T00:00:00.000Z", 3, "seq:3", {"Direction": direction})
        store.status_callback("acme", cb)
        store.stream_ended(
            "acme", sid, ended_at="2026-01-03T00:00:00.000Z", end_reason="stop", final={"duration_ms": duration}
        )
    store.stream_started(meta("CA3"))  # live, no callback: in-progress
    sids = lambda **kw: [c["call_sid"] for c in store.recent("acme", filters=CallFilters(**kw))]  # noqa: E731
    assert sids(direction="inbound") == ["CA1"]
    assert sids(min_duration_ms=300_000) == ["CA1"]
    assert sids(max_duration_ms=300_000) == ["CA2"]
    assert sids(status="in-progress") == ["CA3"]
    assert sids(status="completed") == ["CA2", "CA1"]
    assert sids(started_after="2026-01-02T00:00:00.000Z") == ["CA2"]
    assert sids(custom={"campaign": "CA2"}) == ["CA2"]
    assert store.recent("globex", filters=CallFilters(status="completed")) == []
