"""A local, append-only spool of index operations: what must reach the search index survives any stop.

Each API process owns one spool folder under ``{data_dir}/spool/`` (held by an exclusive ``flock``
for its life): numbered segment files of JSON lines, one ``IndexOp`` a line with the time it was
spooled, and a ``cursor`` file holding the position up to which everything is indexed. ``append``
writes to the segment at once (a killed process loses nothing: the bytes are in the OS); ``sync``
fsyncs them (the indexer calls it every batch, so an OS crash loses at most one batch interval).
``read`` hands out the next ops after the cursor; ``commit`` moves the cursor (atomically, by rename)
once the backend took them, and deletes segments wholly behind it. A process that starts adopts the
folders of processes that are gone (their lock is free) and drains them first: ops are replayed in
order after a restart, and indexing by id makes a replayed op harmless.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from engine.store.index import IndexOp

SEGMENT_BYTES = 8 << 20


@dataclass(frozen=True, slots=True)
class Position:
    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class Spooled:
    op: IndexOp
    at: float  # epoch seconds when it was spooled (indexing lag)


class Spool:
    """One owner's spool folder. Thread-safe: appends come from worker threads, reads from the indexer."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(folder / "lock", "a+b")  # noqa: SIM115 (held for the spool's life)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise
        self._mutex = threading.Lock()
        self.committed = self._read_cursor()
        segments = self._segments()
        self._segment = max(segments, default=self.committed.segment)
        self._out: IO[bytes] = open(self._path(self._segment), "ab")  # noqa: SIM115
        self._read_pos = self.committed
        self.appended = 0
        self._synced = 0  # ``appended`` at the last fsync: an idle spool is not synced again

    @classmethod
    def create(cls, root: Path) -> Spool:
        return cls(root / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}")

    @staticmethod
    def orphans(root: Path) -> list[Spool]:
        """Spools of owners that are gone (their lock is free), oldest first, now held by the caller."""
        adopted: list[Spool] = []
        if not root.exists():
            return adopted
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            try:
                adopted.append(Spool(folder))
            except BlockingIOError:
                continue  # a live owner
        return adopted

    def _path(self, segment: int) -> Path:
        return self.folder / f"{segment:08d}.jsonl"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.folder.glob("*.jsonl") if p.stem.isdigit())

    def _read_cursor(self) -> Position:
        try:
            seg, off = (self.folder / "cursor").read_text().split()
            return Position(int(seg), int(off))
        except (FileNotFoundError, ValueError):
            segments = self._segments()
            return Position(min(segments, default=1), 0)

    def append(self, ops: list[IndexOp]) -> None:
        if not ops:
            return
        now = time.time()
        data = b"".join(orjson.dumps({"at": now, "op": op.to_json()}) + b"\n" for op in ops)
        with self._mutex:
            if self._out.tell() + len(data) > SEGMENT_BYTES and self._out.tell() > 0:
                self._out.flush()
                os.fsync(self._out.fileno())
                self._out.close()
                self._segment += 1
                self._out = open(self._path(self._segment), "ab")  # noqa: SIM115
            self._out.write(data)
            self._out.flush()  # to the OS now: a killed process loses nothing
            self.appended += len(ops)

    def end(self) -> Position:
        """Where the next op will be written (everything appended so far lies before it)."""
        with self._mutex:
            return Position(self._segment, self._out.tell())

    def sync(self) -> None:
        with self._mutex:
            if not self._out.closed and self._synced != self.appended:
                os.fsync(self._out.fileno())
                self._synced = self.appended

    def read(self, max_ops: int) -> tuple[list[Spooled], Position]:
        """Up to ``max_ops`` ops after the last read (not yet committed), and the position after them."""
        out: list[Spooled] = []
        with self._mutex:
            pos = self._read_pos
            while len(out) < max_ops:
                path = self._path(pos.segment)
                if not path.exists():
                    if pos.segment < self._segment:
                        pos = Position(pos.segment + 1, 0)
                        continue
                    break
                with open(path, "rb") as f:
                    f.seek(pos.offset)
                    offset = pos.offset
                    for line in f:
                        if not line.endswith(b"\n"):
                            break  # a line being written
                        offset += len(line)
                        try:
                            item = orjson.loads(line)
                            out.append(Spooled(IndexOp.from_json(item["op"]), float(item["at"])))
                        except (orjson.JSONDecodeError, KeyError, TypeError):
                            pass  # a torn line from a crash mid-write: nothing acknowledged was in it
                        if len(out) >= max_ops:
                            break
                pos = Position(pos.segment, offset)
                if len(out) >= max_ops or pos.segment >= self._segment:
                    break
                pos = Position(pos.segment + 1, 0)
            self._read_pos = pos
        return out, pos

    def rewind(self) -> None:
        """Read again from the cursor (the batch read last was not indexed)."""
        with self._mutex:
            self._read_pos = self.committed

    def commit(self, pos: Position) -> None:
        tmp = self.folder / "cursor.tmp"
        tmp.write_text(f"{pos.segment} {pos.offset}")
        os.replace(tmp, self.folder / "cursor")
        with self._mutex:
            self.committed = pos
            for seg in self._segments():
                if seg < pos.segment:
                    self._path(seg).unlink(missing_ok=True)

    def drained(self) -> bool:
        with self._mutex:
            size = self._path(self._segment).stat().st_size if self._path(self._segment).exists() else 0
            return self.committed.segment >= self._segment and self.committed.offset >= size

    def close(self, *, remove_if_drained: bool = False) -> None:
        drained = self.drained()
        with self._mutex:
            self._out.close()
        if remove_if_drained and drained:
            for p in self.folder.iterdir():
                p.unlink(missing_ok=True)
            self.folder.rmdir()
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()
