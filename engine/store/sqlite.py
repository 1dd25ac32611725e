"""Embedded call store on SQLite (WAL): the zero-setup default, shared by API processes on one machine.

Call records survive restarts. A status callback may arrive before, during or after the stream: each
lands in ``lifecycle`` keyed by (tenant, call_sid, dedup_key), so retries are no-ops, and the call's
status is always the one with the highest SequenceNumber, whatever order they came in.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import orjson

from engine.call import CallMeta
from engine.store.base import CallFilters, StatusCallback

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    tenant TEXT NOT NULL,
    call_sid TEXT NOT NULL,
    account_sid TEXT,
    stream_sid TEXT,
    from_number TEXT,
    to_number TEXT,
    direction TEXT,
    parent_call_sid TEXT,
    call_duration_s INTEGER,
    tracks_declared TEXT,
    custom_parameters TEXT,
    first_seen_at TEXT NOT NULL,
    started_at TEXT,
    ended_at TEXT,
    end_reason TEXT,
    live INTEGER NOT NULL DEFAULT 0,
    final TEXT,
    owner TEXT,
    lease_until REAL,
    PRIMARY KEY (tenant, call_sid)
);
CREATE INDEX IF NOT EXISTS calls_by_time ON calls (tenant, first_seen_at);
CREATE TABLE IF NOT EXISTS lifecycle (
    tenant TEXT NOT NULL,
    call_sid TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    status TEXT NOT NULL,
    at TEXT NOT NULL,
    sequence INTEGER,
    PRIMARY KEY (tenant, call_sid, dedup_key)
);
CREATE TABLE IF NOT EXISTS turns (
    tenant TEXT NOT NULL,
    call_sid TEXT NOT NULL,
    stream_sid TEXT NOT NULL,
    turn_id INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant, call_sid, stream_sid, turn_id)
);
CREATE TABLE IF NOT EXISTS segments (
    tenant TEXT NOT NULL,
    call_sid TEXT NOT NULL,
    seg_id TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant, call_sid, seg_id)
);
"""


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA secure_delete=ON")  # an erased call's content does not linger in free pages
            self._db.executescript(_SCHEMA)
            columns = {row["name"] for row in self._db.execute("PRAGMA table_info(calls)")}
            for name, kind in (("owner", "TEXT"), ("lease_until", "REAL")):  # files from before leases
                if name not in columns:
                    self._db.execute(f"ALTER TABLE calls ADD COLUMN {name} {kind}")
            # Lease upkeep reads and writes the live calls every few seconds: never a scan of every call.
            self._db.execute("CREATE INDEX IF NOT EXISTS calls_live ON calls (live, owner)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _ensure(self, tenant: str, call_sid: str, at: str) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO calls (tenant, call_sid, first_seen_at) VALUES (?, ?, ?)",
            (tenant, call_sid, at),
        )

    def stream_started(self, meta: CallMeta, *, owner: str | None = None, lease_until: float | None = None) -> int:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._ensure(meta.tenant, meta.call_sid, meta.started_at)
            self._db.execute(
                """UPDATE calls SET account_sid = ?, stream_sid = ?, tracks_declared = ?, custom_parameters = ?,
                   started_at = ?, ended_at = NULL, end_reason = NULL, live = 1, final = NULL, owner = ?,
                   lease_until = ? WHERE tenant = ? AND call_sid = ?""",
                (
                    meta.account_sid,
                    meta.stream_sid,
                    orjson.dumps(list(meta.tracks)).decode(),
                    orjson.dumps(meta.custom_parameters).decode(),
                    meta.started_at,
                    owner,
                    lease_until,
                    meta.tenant,
                    meta.call_sid,
                ),
            )
            row = self._db.execute(
                "SELECT COALESCE(MAX(turn_id) + 1, 0) FROM turns WHERE tenant = ? AND call_sid = ?",
                (meta.tenant, meta.call_sid),
            ).fetchone()
            return int(row[0])

    def renew_leases(self, owner: str, until: float) -> int:
        """Extend the lease of every live call ``owner`` streams; how many there are."""
        with self._lock:
            cur = self._db.execute("UPDATE calls SET lease_until = ? WHERE owner = ? AND live = 1", (until, owner))
            return cur.rowcount

    def live_leases(self) -> list[dict[str, Any]]:
        """Every live call's tenant, call_sid, owner and lease_until (epoch s; None from before leases)."""
        with self._lock:
            rows = self._db.execute("SELECT tenant, call_sid, owner, lease_until FROM calls WHERE live = 1").fetchall()
        return [dict(row) for row in rows]

    def lose(self, tenant: str, call_sid: str, *, owner: str | None, ended_at: str, final: dict[str, Any]) -> bool:
        """End a live call whose owner is gone (``end_reason`` "lost"), if it is still live under that owner:
        False if it ended or moved meanwhile (another sweeper, or its stream's own end, got there first)."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            cur = self._db.execute(
                """UPDATE calls SET ended_at = ?, end_reason = 'lost', live = 0, final = ?
                   WHERE tenant = ? AND call_sid = ? AND live = 1 AND owner IS ?""",
                (ended_at, orjson.dumps(final).decode(), tenant, call_sid, owner),
            )
            return cur.rowcount == 1

    def stream_ended(
        self, tenant: str, call_sid: str, *, ended_at: str, end_reason: str, final: dict[str, Any]
    ) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._ensure(tenant, call_sid, ended_at)
            self._db.execute(
                "UPDATE calls SET ended_at = ?, end_reason = ?, live = 0, final = ? WHERE tenant = ? AND call_sid = ?",
                (ended_at, end_reason, orjson.dumps(final).decode(), tenant, call_sid),
            )

    def status_callback(self, tenant: str, callback: StatusCallback) -> bool:
        f = callback.fields
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._ensure(tenant, callback.call_sid, callback.at)
            cur = self._db.execute(
                "INSERT OR IGNORE INTO lifecycle (tenant, call_sid, dedup_key, status, at, sequence)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    tenant,
                    callback.call_sid,
                    callback.dedup_key,
                    callback.status,
                    callback.at,
                    callback.sequence,
                ),
            )
            if cur.rowcount == 0:
                return False
            duration = f.get("CallDuration")
            self._db.execute(
                """UPDATE calls SET account_sid = COALESCE(account_sid, NULLIF(?, '')),
                   from_number = COALESCE(NULLIF(?, ''), from_number), to_number = COALESCE(NULLIF(?, ''), to_number),
                   direction = COALESCE(NULLIF(?, ''), direction),
                   parent_call_sid = COALESCE(NULLIF(?, ''), parent_call_sid),
                   call_duration_s = COALESCE(?, call_duration_s)
                   WHERE tenant = ? AND call_sid = ?""",
                (
                    callback.account_sid,
                    f.get("From", ""),
                    f.get("To", ""),
                    f.get("Direction", ""),
                    f.get("ParentCallSid", ""),
                    int(duration)
                    if duration and duration.isascii() and duration.isdigit() and len(duration) < 10
                    else None,
                    tenant,
                    callback.call_sid,
                ),
            )
            return True

    def add_turns(self, tenant: str, turns: list[dict[str, Any]]) -> None:
        rows = [
            (tenant, t["call_sid"], t.get("stream_sid") or "", int(t["turn_id"]), int(t["start_ms"]), orjson.dumps(t))
            for t in turns
        ]
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO turns VALUES (?, ?, ?, ?, ?, ?)", rows)

    def turns(self, tenant: str, call_sid: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT t.doc FROM turns t LEFT JOIN (SELECT stream_sid, MIN(rowid) AS first FROM turns"
                " WHERE tenant = ? AND call_sid = ? GROUP BY stream_sid) s ON s.stream_sid = t.stream_sid"
                " WHERE t.tenant = ? AND t.call_sid = ? ORDER BY s.first, t.start_ms, t.turn_id",
                (tenant, call_sid, tenant, call_sid),
            ).fetchall()
        return [orjson.loads(r["doc"]) for r in rows]

    def turns_by_id(self, tenant: str, call_sid: str, turn_ids: list[int]) -> dict[int, dict[str, Any]]:
        if not turn_ids:
            return {}
        marks = ",".join("?" * len(turn_ids))
        with self._lock:
            rows = self._db.execute(
                f"SELECT turn_id, doc FROM turns WHERE tenant = ? AND call_sid = ? AND turn_id IN ({marks})",
                (tenant, call_sid, *turn_ids),
            ).fetchall()
        return {int(r["turn_id"]): orjson.loads(r["doc"]) for r in rows}

    def add_segments(self, tenant: str, call_sid: str, segments: list[dict[str, Any]]) -> int:
        rows = [(tenant, call_sid, str(s["id"]), orjson.dumps(s)) for s in segments]
        with self._lock, self._db:
            before = self._db.total_changes
            self._db.executemany("INSERT OR IGNORE INTO segments VALUES (?, ?, ?, ?)", rows)
            return self._db.total_changes - before

    def segments(self, tenant: str, call_sid: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT doc FROM segments WHERE tenant = ? AND call_sid = ?", (tenant, call_sid)
            ).fetchall()
        return [orjson.loads(r["doc"]) for r in rows]

    def erase(self, tenant: str, call_sid: str) -> dict[str, int]:
        """Delete a call: its record, lifecycle, turns and posted segments (deleted content is overwritten:
        ``secure_delete``). What was removed, by kind."""
        removed: dict[str, int] = {}
        with self._lock, self._db:
            self._db.execute("BEGIN")
            for table in ("calls", "lifecycle", "turns", "segments"):
                cur = self._db.execute(f"DELETE FROM {table} WHERE tenant = ? AND call_sid = ?", (tenant, call_sid))
                removed[table] = cur.rowcount
        return removed

    def aged_calls(
        self, before: str, *, tenant: str | None = None, exclude: tuple[str, ...] = (), limit: int = 500
    ) -> list[tuple[str, str]]:
        """(tenant, call_sid) of calls not live, first seen before ``before`` (ISO 8601 UTC), oldest first."""
        sql = "SELECT tenant, call_sid FROM calls WHERE live = 0 AND first_seen_at < ?"
        args: list[Any] = [before]
        if tenant is not None:
            sql += " AND tenant = ?"
            args.append(tenant)
        if exclude:
            sql += f" AND tenant NOT IN ({','.join('?' * len(exclude))})"
            args += exclude
        sql += " ORDER BY first_seen_at LIMIT ?"
        args.append(limit)
        with self._lock:
            return [(r["tenant"], r["call_sid"]) for r in self._db.execute(sql, args)]

    def call_keys(self) -> list[tuple[str, str]]:
        """(tenant, call_sid) of every call, oldest first: what ``mise reindex`` walks."""
        with self._lock:
            rows = self._db.execute("SELECT tenant, call_sid FROM calls ORDER BY first_seen_at, tenant, call_sid")
            return [(r["tenant"], r["call_sid"]) for r in rows]

    def get(self, tenant: str, call_sid: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM calls WHERE tenant = ? AND call_sid = ?", (tenant, call_sid)
            ).fetchone()
            if row is None:
                return None
            return self._record(row, self._lifecycle(tenant, [call_sid])[call_sid])

    def recent(
        self,
        tenant: str,
        *,
        limit: int = 50,
        before: str | None = None,
        live: bool | None = None,
        filters: CallFilters | None = None,
    ) -> list[dict[str, Any]]:
        sql = "SELECT * FROM calls c WHERE tenant = ?"
        args: list[Any] = [tenant]
        if filters is not None:
            where, extra = _call_filters(filters)
            sql += where
            args += extra
        if before:  # cursor "first_seen_at|call_sid" (next_before of the previous page), or a time
            at, _, sid = before.partition("|")
            sql += " AND (first_seen_at < ? OR (first_seen_at = ? AND call_sid > ?))"
            args += [at, at, sid or "\uffff"]
        if live is not None:
            sql += " AND live = ?"
            args.append(int(live))
        sql += " ORDER BY first_seen_at DESC, call_sid LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
            lifecycles = self._lifecycle(tenant, [r["call_sid"] for r in rows])
            return [self._record(r, lifecycles[r["call_sid"]]) for r in rows]

    def _lifecycle(self, tenant: str, call_sids: list[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {sid: [] for sid in call_sids}
        if not call_sids:
            return out
        marks = ",".join("?" * len(call_sids))
        rows = self._db.execute(
            f"SELECT call_sid, status, at, sequence FROM lifecycle WHERE tenant = ? AND call_sid IN ({marks})"
            " ORDER BY sequence IS NULL, sequence, at",
            [tenant, *call_sids],
        )
        for r in rows:
            out[r["call_sid"]].append({"status": r["status"], "at": r["at"], "sequence": r["sequence"]})
        return out

    @staticmethod
    def _record(row: sqlite3.Row, lifecycle: list[dict[str, Any]]) -> dict[str, Any]:
        final = orjson.loads(row["final"]) if row["final"] else {}
        sequenced = [e for e in lifecycle if e["sequence"] is not None]
        if sequenced:
            status = max(sequenced, key=lambda e: e["sequence"])["status"]
        elif row["live"]:
            status = "in-progress"
        else:
            status = "completed" if row["ended_at"] else "unknown"
        return {
            "call_sid": row["call_sid"],
            "account_sid": row["account_sid"],
            "stream_sid": row["stream_sid"],
            "from": row["from_number"],
            "to": row["to_number"],
            "direction": row["direction"],
            "parent_call_sid": row["parent_call_sid"],
            "status": status,
            "live": bool(row["live"]),
            "first_seen_at": row["first_seen_at"],
            "started_at": row["started_at"],
            "ended_at": row["ended_at"],
            "duration_ms": final.get("duration_ms"),
            "call_duration_s": row["call_duration_s"],
            "tracks_declared": orjson.loads(row["tracks_declared"]) if row["tracks_declared"] else [],
            "tracks": final.get("tracks", {}),
            "custom_parameters": orjson.loads(row["custom_parameters"]) if row["custom_parameters"] else {},
            "lifecycle": lifecycle,
            "end_reason": row["end_reason"],
            "error": final.get("error"),  # what went wrong, when something did (a lost stream, a failed host)
            "summary": final.get("summary", {}),
        }


# The call's status as ``_record`` derives it: the highest SequenceNumber's, else from the stream.
_STATUS_SQL = """COALESCE((SELECT l.status FROM lifecycle l WHERE l.tenant = c.tenant AND l.call_sid = c.call_sid
    AND l.sequence IS NOT NULL ORDER BY l.sequence DESC LIMIT 1),
    CASE WHEN c.live THEN 'in-progress' WHEN c.ended_at IS NOT NULL THEN 'completed' ELSE 'unknown' END)"""


def _call_filters(f: CallFilters) -> tuple[str, list[Any]]:
    sql = ""
    args: list[Any] = []
    for column, value in (("from_number", f.from_), ("to_number", f.to), ("direction", f.direction)):
        if value is not None:
            sql += f" AND {column} = ?"
            args.append(value)
    if f.status is not None:
        sql += f" AND {_STATUS_SQL} = ?"
        args.append(f.status)
    if f.started_after is not None:
        sql += " AND COALESCE(started_at, first_seen_at) >= ?"
        args.append(f.started_after)
    if f.started_before is not None:
        sql += " AND COALESCE(started_at, first_seen_at) < ?"
        args.append(f.started_before)
    if f.min_duration_ms is not None:
        sql += " AND json_extract(final, '$.duration_ms') >= ?"
        args.append(f.min_duration_ms)
    if f.max_duration_ms is not None:
        sql += " AND json_extract(final, '$.duration_ms') <= ?"
        args.append(f.max_duration_ms)
    for name, value in sorted(f.custom.items()):
        sql += " AND json_extract(custom_parameters, ?) = ?"
        args += ['$."' + name.replace('"', '""') + '"', value]
    return sql, args
