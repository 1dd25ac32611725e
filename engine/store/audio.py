"""The recordings' storage seam: where a call's closed track files live, whatever holds them.

A track is recorded into a local file while its call is live (``api/recorder.py``): appends and a few
in-place patches, which object storage cannot take. When the stream ends the file is handed to an
``AudioStore`` (``put``). The folder store keeps it where it is; object storage uploads it and the
local copy goes. Reads take byte ranges, so seeking in a long call reads only what it plays.

Keys are ``tenant/call_sid/stream_sid/track.ulaw`` (``recording_key``), each part made safe for a
path and an object name (``safe_part``): no key of one tenant's can name another tenant's file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Protocol

_SAFE = re.compile(r"[A-Za-z0-9_-]{1,64}")
SUFFIX = ".ulaw"


def safe_part(name: str) -> str:
    """``name`` as one path segment: kept when it is 1-64 of ``[A-Za-z0-9_-]`` (Twilio SIDs, tenant names),
    else a digest of it (so ``..``, slashes or a 10 KB name can never leave its folder)."""
    if _SAFE.fullmatch(name):
        return name
    return "h-" + hashlib.sha256(name.encode()).hexdigest()[:40]


def call_prefix(tenant: str, call_sid: str) -> str:
    return f"{safe_part(tenant)}/{safe_part(call_sid)}/"


def recording_key(tenant: str, call_sid: str, stream_sid: str, track: str) -> str:
    return f"{call_prefix(tenant, call_sid)}{safe_part(stream_sid)}/{safe_part(track)}{SUFFIX}"


class AudioStore(Protocol):
    name: str

    @property
    def local_root(self) -> Path | None:
        """A folder store's folder (live recordings are written there in place); None for object storage."""

    def put(self, key: str, path: Path) -> None:
        """A closed track file into storage under ``key`` (the local file may be gone afterwards)."""

    def size(self, key: str) -> int | None:
        """Bytes stored under ``key``; None when there is nothing."""

    def read(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``key`` (fewer if it is shorter)."""

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``."""

    def delete(self, prefix: str) -> int:
        """Remove every key under ``prefix``; how many there were."""


class FolderAudio:
    """Recordings as files under ``root`` (``MISE_DATA_DIR/recordings``): the embedded default. The live
    files are written there too, so ``put`` has nothing to move."""

    name = "folder"

    def __init__(self, root: Path) -> None:
        self.root = self.local_root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key

    def put(self, key: str, path: Path) -> None:
        target = self.path(key)
        if path.resolve() != target.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)

    def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            return None

    def read(self, key: str, start: int, end: int) -> bytes:
        try:
            with open(self.path(key), "rb") as f:
                f.seek(start)
                return f.read(max(0, end - start))
        except FileNotFoundError:
            return b""

    def keys(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob(f"*{SUFFIX}") if p.is_file())

    def delete(self, prefix: str) -> int:
        found = len(self.keys(prefix))
        base = self.root / prefix
        if base.is_dir():
            shutil.rmtree(base)
        return found
