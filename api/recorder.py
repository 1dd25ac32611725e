"""Call recordings, written while the call is live: each track's mu-law as received, on its stream's clock.

Per media message the socket only places the payload (``engine.recording.TrackLayout``: a list append).
Every ``flush_s`` one writer thread applies what came since to each track's local file (positioned
writes), so a crash of this process loses at most the last ``flush_s`` of audio, and the event loop
never waits on a disk. When a stream ends its files are flushed and handed to the ``AudioStore``
(the folder store keeps them in place; object storage uploads them).

A process that died leaves its files in the local folder. With object storage, ``sweep`` (at start-up
and every ``SWEEP_S``) hands over the files of calls that are no longer live. Erasure (``erase``) stops
a call's recording if it is live here, and removes its files locally and in storage.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from engine.g711 import SAMPLES_PER_MS
from engine.recording import SILENCE, TrackLayout, Write
from engine.store.audio import SUFFIX, AudioStore, call_prefix, recording_key

log = logging.getLogger("mise.recorder")

SWEEP_S = 60.0
_SILENCE_CHUNK = bytes([SILENCE]) * (1 << 16)
CALL_FILE = "call.json"  # in each call's local folder: whose call it is (its folder name may be a digest)


@dataclass
class Recording:
    tenant: str
    call_sid: str
    stream_sid: str
    layouts: dict[str, TrackLayout] = field(default_factory=dict)
    closed: bool = False

    def add(self, track: str, timestamp_ms: int, payload: bytes) -> None:
        """One media payload (the hot path: a dict lookup and a list append)."""
        layout = self.layouts.get(track)
        if layout is None:
            layout = self.layouts[track] = TrackLayout()
        layout.place(timestamp_ms * SAMPLES_PER_MS, payload)

    def key(self, track: str) -> str:
        return recording_key(self.tenant, self.call_sid, self.stream_sid, track)


def apply_writes(path: Path, writes: list[Write]) -> int:
    """Apply a layout's writes to ``path`` (created if missing); the bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
    written = 0
    try:
        for at, data in writes:
            if isinstance(data, int):  # a run of silence, written in chunks
                done = 0
                while done < data:
                    n = min(data - done, len(_SILENCE_CHUNK))
                    os.pwrite(fd, _SILENCE_CHUNK[:n], at + done)
                    done += n
                written += data
            else:
                os.pwrite(fd, data, at)
                written += len(data)
    finally:
        os.close(fd)
    return written


class Recorder:
    def __init__(
        self,
        *,
        root: Path,
        store: AudioStore,
        metrics: Any,
        enabled: Callable[[str], bool],
        is_live: Callable[[str, str], bool] | None = None,
        flush_s: float = 0.5,
    ) -> None:
        self.root = root  # the live (local) files: MISE_DATA_DIR/recordings
        self.store = store
        self._metrics = metrics
        self._enabled = enabled  # per tenant (MISE_RECORD_AUDIO, MISE_TENANT_RECORD_AUDIO)
        self._is_live = is_live  # (tenant, call_sid) -> still live somewhere: its files are not ours to move
        self._flush_s = flush_s
        self._live: dict[tuple[str, str], Recording] = {}
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mise-recorder")
        self._task: asyncio.Task[None] | None = None
        self._last_sweep = 0.0
        # The folder store keeps the live files where they are; object storage takes them when they close.
        self._in_place = store.local_root is not None and store.local_root.resolve() == root.resolve()

    def open(self, tenant: str, call_sid: str, stream_sid: str) -> Recording | None:
        """Start recording a stream; None when the tenant's calls are not recorded."""
        if not self._enabled(tenant):
            return None
        recording = Recording(tenant, call_sid, stream_sid)
        self._live[(tenant, call_sid)] = recording
        folder = self.root / call_prefix(tenant, call_sid)
        self._io.submit(_write_call_file, folder, tenant, call_sid)
        return recording

    def records(self, tenant: str) -> bool:
        return self._enabled(tenant)

    async def save(self, tenant: str, call_sid: str, stream_sid: str, tracks: dict[str, bytes]) -> None:
        """A whole recording at once (an imported call's): written like a live one's, then handed to storage."""
        recording = Recording(tenant, call_sid, stream_sid)
        for track, data in tracks.items():
            recording.add(track, 0, data)
        await asyncio.get_running_loop().run_in_executor(
            self._io, _write_call_file, self.root / call_prefix(tenant, call_sid), tenant, call_sid
        )
        await self.close(recording)

    def local_path(self, key: str) -> Path:
        return self.root / key

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._flush_s)
            try:
                await self.flush()
                if self._is_live is not None and loop.time() - self._last_sweep >= SWEEP_S:
                    self._last_sweep = loop.time()
                    await self.sweep()
            except Exception:
                log.exception("writing recordings failed; the audio is kept and retried in %.1f s", self._flush_s)

    async def flush(self, recordings: list[Recording] | None = None) -> None:
        """Everything placed so far onto disk (taken on the loop, written on the writer thread)."""
        taken = [
            (layout, self.local_path(rec.key(track)), layout.take())
            for rec in (self._live.values() if recordings is None else recordings)
            for track, layout in rec.layouts.items()
        ]
        batch = [(path, writes) for _, path, writes in taken if writes]
        if not batch:
            return
        try:
            written = await asyncio.get_running_loop().run_in_executor(self._io, _apply_all, batch)
        except Exception:
            # Nothing is dropped: the writes go back in front of what came since, and the next flush applies
            # them again (positioned writes: applying some of them twice changes nothing).
            for layout, _, writes in taken:
                layout.restore(writes)
            raise
        self._metrics.recorded_bytes.inc(written)

    async def close(self, recording: Recording | None) -> None:
        """The stream ended: its last audio written, its files handed to storage."""
        if recording is None or recording.closed:
            return
        recording.closed = True
        self._live.pop((recording.tenant, recording.call_sid), None)
        try:
            await self.flush([recording])
            keys = [recording.key(track) for track in recording.layouts]
            await asyncio.get_running_loop().run_in_executor(self._io, self._put, keys)
        except Exception:
            log.exception(
                "call %s: its recording could not be closed; its files stay in %s", recording.call_sid, self.root
            )

    def _put(self, keys: list[str]) -> None:
        for key in keys:
            path = self.local_path(key)
            if path.exists():
                self.store.put(key, path)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for recording in list(self._live.values()):
            await self.close(recording)
        self._io.shutdown(wait=True)

    async def sweep(self) -> int:
        """Hand over the local files of calls no longer live (a process that died left them): only with
        object storage, where the local folder is not the store. How many files moved."""
        if self._is_live is None or self._in_place or not self.root.is_dir():
            return 0
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(self._io, _local_calls, self.root)
        mine = {call_prefix(tenant, call_sid) for tenant, call_sid in self._live}
        moved = 0
        for (tenant, call_sid), keys in found.items():
            if call_prefix(tenant, call_sid) in mine or await loop.run_in_executor(
                None, self._is_live, tenant, call_sid
            ):
                continue
            await loop.run_in_executor(self._io, self._put, keys)
            moved += len(keys)
        if moved:
            log.info("recordings: %d files of ended calls moved to %s storage", moved, self.store.name)
        return moved

    # --- reading and erasing -----------------------------------------------------------------------------------------

    def size(self, key: str) -> int | None:
        """Bytes of a track's recording: the local file while it is being written, else storage's."""
        try:
            return self.local_path(key).stat().st_size
        except FileNotFoundError:
            return self.store.size(key)

    def read(self, key: str, start: int, end: int) -> bytes:
        path = self.local_path(key)
        try:
            with open(path, "rb") as f:
                f.seek(start)
                return f.read(max(0, end - start))
        except FileNotFoundError:
            return self.store.read(key, start, end)

    def tracks(self, tenant: str, call_sid: str, stream_sid: str) -> dict[str, str]:
        """The recorded tracks of a stream: track -> key."""
        prefix = recording_key(tenant, call_sid, stream_sid, "x").rpartition("/")[0] + "/"
        keys = set(self.store.keys(prefix)) | set(_local_keys(self.root / prefix, base=self.root))
        return {key.rpartition("/")[2].removesuffix(SUFFIX): key for key in sorted(keys)}

    async def mute(self, tenant: str, call_sid: str, stream_sid: str, spans: dict[str, list[tuple[int, int]]]) -> int:
        """Silence ``spans`` (track -> [start, end) sample indexes) in the stored recording: a redacted card
        number is gone from the file itself, not only from what is played. Samples muted."""
        live = self._live.get((tenant, call_sid))
        if live is not None and live.stream_sid == stream_sid and not live.closed:
            # What it still holds in memory reaches the file first, the span's audio with it: the mute covers
            # it rather than being written over by a later flush. (One writer thread: flush, then mute.)
            await self.flush([live])
        keys = {track: recording_key(tenant, call_sid, stream_sid, track) for track in spans}
        return await asyncio.get_running_loop().run_in_executor(
            self._io, self._mute, [(keys[t], spans[t]) for t in spans]
        )

    def _mute(self, work: list[tuple[str, list[tuple[int, int]]]]) -> int:
        muted = 0
        for key, spans in work:
            path = self.local_path(key)
            uploaded = not path.exists()
            if uploaded:  # object storage: patched in a local copy, then put back
                size = self.store.size(key)
                if size is None:
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(self.store.read(key, 0, size))
            size = path.stat().st_size
            writes: list[Write] = [(a, min(b, size) - a) for a, b in spans if a < min(b, size)]
            muted += apply_writes(path, writes)
            if uploaded:
                self.store.put(key, path)
        return muted

    async def erase(self, tenant: str, call_sid: str) -> int:
        """Remove a call's recordings everywhere (a live recording here stops first); files removed."""
        recording = self._live.pop((tenant, call_sid), None)
        if recording is not None:
            recording.closed = True
        prefix = call_prefix(tenant, call_sid)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, self._erase, prefix)

    def _erase(self, prefix: str) -> int:
        removed = self.store.delete(prefix)
        local = self.root / prefix
        if local.is_dir():  # object storage: what a dead process left here; the folder store: the call.json
            removed += len(_local_keys(local, base=self.root))
            shutil.rmtree(local, ignore_errors=True)
        return removed


def _apply_all(batch: list[tuple[Path, list[Write]]]) -> int:
    return sum(apply_writes(path, writes) for path, writes in batch)


def _write_call_file(folder: Path, tenant: str, call_sid: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CALL_FILE).write_bytes(orjson.dumps({"tenant": tenant, "call_sid": call_sid}))


def _local_calls(root: Path) -> dict[tuple[str, str], list[str]]:
    """The calls with files in the local folder, by (tenant, call_sid) as their ``call.json`` names them."""
    out: dict[tuple[str, str], list[str]] = {}
    for meta in root.glob(f"*/*/{CALL_FILE}"):
        try:
            names = orjson.loads(meta.read_bytes())
            call = (str(names["tenant"]), str(names["call_sid"]))
        except (OSError, ValueError, KeyError):
            log.warning("recordings: %s is unreadable; its folder is left alone", meta)
            continue
        keys = _local_keys(meta.parent, base=root)
        if keys:
            out[call] = keys
    return out


def _local_keys(folder: Path, *, base: Path | None = None) -> list[str]:
    base = folder if base is None else base
    if not folder.is_dir():
        return []
    return sorted(str(p.relative_to(base)) for p in folder.rglob(f"*{SUFFIX}") if p.is_file())
