"""The indexing spool on a real file system: order, commit, replay after a stop, adoption, torn lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.store import spool as spool_module
from engine.store.index import IndexOp
from engine.store.spool import Spool


def _ops(n: int, start: int = 0) -> list[IndexOp]:
    return [IndexOp("turn", "acme", {"doc_id": f"acme:CA1:{i}", "turn_id": i}) for i in range(start, start + n)]


def _ids(items: list[object]) -> list[int]:
    return [i.op.doc["turn_id"] for i in items]  # type: ignore[attr-defined]


def test_ops_come_back_in_order_and_a_commit_is_not_replayed(tmp_path: Path) -> None:
    s = Spool(tmp_path / "a")
    s.append(_ops(3))
    s.append(_ops(2, start=3))
    items, pos = s.read(4)
    assert _ids(items) == [0, 1, 2, 3]
    s.commit(pos)
    items, pos = s.read(10)
    assert _ids(items) == [4]
    s.close()  # stopped before 4 was committed
    again = Spool(tmp_path / "a")
    items, _ = again.read(10)
    assert _ids(items) == [4]  # replayed after the restart: nothing lost
    again.close()


def test_a_failed_batch_is_read_again_after_rewind(tmp_path: Path) -> None:
    s = Spool(tmp_path / "a")
    s.append(_ops(3))
    first, _ = s.read(10)
    s.rewind()
    second, _ = s.read(10)
    assert _ids(first) == _ids(second) == [0, 1, 2]
    s.close()


def test_a_live_owners_spool_is_not_adopted_but_a_dead_ones_is(tmp_path: Path) -> None:
    live = Spool(tmp_path / "live")
    dead = Spool(tmp_path / "dead")
    dead.append(_ops(2))
    dead.close()
    adopted = Spool.orphans(tmp_path)
    assert [s.folder.name for s in adopted] == ["dead"]
    items, pos = adopted[0].read(10)
    assert _ids(items) == [0, 1]
    adopted[0].commit(pos)
    assert adopted[0].drained()
    adopted[0].close(remove_if_drained=True)
    assert not (tmp_path / "dead").exists()
    with pytest.raises(BlockingIOError):
        Spool(tmp_path / "live")
    live.close()


def test_segments_rotate_and_are_deleted_once_indexed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 300)
    s = Spool(tmp_path / "a")
    for i in range(10):
        s.append(_ops(1, start=i))
    assert len(list(s.folder.glob("*.jsonl"))) > 3
    items, pos = s.read(100)
    assert _ids(items) == list(range(10))
    s.commit(pos)
    assert len(list(s.folder.glob("*.jsonl"))) == 1 and s.drained()
    s.close()


def test_a_torn_last_line_is_skipped_until_complete(tmp_path: Path) -> None:
    s = Spool(tmp_path / "a")
    s.append(_ops(1))
    segment = next(s.folder.glob("*.jsonl"))
    with open(segment, "ab") as f:
        f.write(b'{"at": 1, "op": {"kind": "tu')  # a crash mid-write
    items, pos = s.read(10)
    assert _ids(items) == [0]
    s.commit(pos)
    s.close()
