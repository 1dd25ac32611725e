"""Helpers for tests that run the real thing: a `mise serve` process, its metrics, its Ray actors."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import os
import random
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import websockets

from engine.g711 import decode_ulaw

REPO = Path(__file__).resolve().parent.parent
# Debian's chromium (make test installs it), headless, for the dashboard test and bench/dashboard.py.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
API_KEY = "test-key-acme-0001"
OTHER_KEY = "test-key-globex-002"


def data_path(relative: str) -> Path:
    """A file of the shared corpora (MISE_TEST_DATA, default ../shared/data). Missing: skip with the
    reason, except in CI, where a missing corpus is a failure."""
    root = Path(os.environ.get("MISE_TEST_DATA", REPO.parent / "shared" / "data"))
    path = root / relative
    if not path.exists():
        unavailable(f"test data {path} is absent (set MISE_TEST_DATA to the shared data folder)")
    return path


def unavailable(message: str) -> None:
    """Something a test needs is not on this machine: skip, saying what; in CI (where `make test`
    provides everything) that is a failure instead."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A real `mise serve` subprocess (uvicorn) joined to a Ray cluster, in a namespace of its own."""

    port: int
    namespace: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream/twilio"

    @classmethod
    @contextlib.contextmanager
    def start(cls, ray_address: str, data_dir: Path, **env: str) -> Iterator[Server]:
        srv = cls.launch(ray_address, data_dir, **env)
        try:
            yield srv
        finally:
            srv.stop()

    @classmethod
    @contextlib.contextmanager
    def pair(cls, ray_address: str, data_dir: Path, **env: str) -> Iterator[tuple[Server, Server]]:
        """Two API processes attached to one Ray instance, sharing one namespace (one directory, one hub)."""
        namespace = "pair" + secrets.token_hex(3)
        a = cls.launch(ray_address, data_dir, namespace=namespace, **env)
        try:
            b = cls.launch(ray_address, data_dir, namespace=namespace, **env)
        except BaseException:
            a.stop()
            raise
        try:
            yield a, b
        finally:
            a.stop()
            b.stop()

    @classmethod
    def launch(
        cls, ray_address: str, data_dir: Path, namespace: str | None = None, port: int | None = None, **env: str
    ) -> Server:
        port = port or free_port()
        namespace = namespace or "t" + secrets.token_hex(4)
        full_env = {
            **os.environ,
            "MISE_PORT": str(port),
            "MISE_DATA_DIR": str(data_dir),
            "MISE_API_KEYS": f"{API_KEY}:acme,{OTHER_KEY}:globex",
            "MISE_RAY_ADDRESS": ray_address,
            "MISE_RAY_NAMESPACE": namespace,
            "MISE_RING_SECONDS": "120",
            # The emotion model's actor (torch) costs ~0.5 GB and seconds to start: on where a test needs it.
            "MISE_EMOTION": "0",
            # Whisper's worker likewise (~200 MB, and a core's worth of work while calls stream): on where a
            # test is about words.
            "MISE_ASR": "0",
            **env,
        }
        log_path = data_dir / f"server-{port}.log"
        with open(log_path, "ab") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve"], cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT
            )
        srv = cls(port, namespace, data_dir, process, log_path, env)
        srv.wait_ready()
        return srv

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.http + "/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.cleanup_actors()

    def cleanup_actors(self) -> None:
        import ray

        if not ray.is_initialized():  # its cluster is not this process's (tests/nodes.py): it goes as a whole
            return
        with contextlib.suppress(ValueError):
            directory = ray.get_actor("mise-directory", namespace=self.namespace)
            ray.get(directory.shutdown.remote())
            ray.kill(directory)
        for name in ("mise-hub", *(f"mise-asr-{i}" for i in range(8))):
            with contextlib.suppress(ValueError):
                ray.kill(ray.get_actor(name, namespace=self.namespace))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    # --- reading the server back -------------------------------------------------------------------
    def get(self, path: str, key: str = API_KEY, **params: Any) -> httpx.Response:
        return httpx.get(self.http + path, params=params, headers={"Authorization": f"Bearer {key}"}, timeout=10)

    def metrics(self) -> dict[str, float]:
        """Prometheus samples as {'name{labels}': value}."""
        out: dict[str, float] = {}
        text = httpx.get(self.http + "/metrics", params={"api_key": API_KEY}, timeout=10).text
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def directory(self) -> Any:
        import ray

        return ray.get_actor("mise-directory", namespace=self.namespace)

    def host_of(self, call_sid: str) -> Any:
        import ray

        found = ray.get(self.directory().lookup.remote(call_sid))
        assert found is not None, f"call {call_sid} is not live"
        return found[2]

    def wait_call(
        self, call_sid: str, *, live: bool = False, timeout: float = 30.0, key: str = API_KEY
    ) -> dict[str, Any]:
        """The call record once it exists (and, unless ``live``, once the stream has ended)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.get(f"/v1/calls/{call_sid}", key=key)
            if r.status_code == 200 and (live or not r.json()["live"]):
                return dict(r.json())
            time.sleep(0.05)
        raise TimeoutError(f"call {call_sid} not {'live' if live else 'finished'} after {timeout} s")

    def wait_no_live_calls(self, timeout: float = 30.0) -> None:
        import ray

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ray.get(self.directory().live_calls.remote()) == 0:
                return
            time.sleep(0.05)
        raise TimeoutError("calls still live")


def metric_delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def track_audio(messages: list[dict[str, Any]], track: str) -> np.ndarray:
    """The decoded audio of one track of a capture, placed by timestamp (gaps as silence)."""
    media = [m["media"] for m in messages if m.get("event") == "media" and m["media"]["track"] == track]
    end = max(int(m["timestamp"]) * 8 + len(base64.b64decode(m["payload"])) for m in media)
    out = np.zeros(end, dtype=np.int16)
    for m in media:
        pcm = decode_ulaw(base64.b64decode(m["payload"]))
        at = int(m["timestamp"]) * 8
        out[at : at + len(pcm)] = pcm
    return out


def dropped_and_reordered(messages: list[dict[str, Any]], seed: int) -> tuple[list[dict[str, Any]], set[int]]:
    """The capture with 5% of its media frames dropped (their indexes returned) and another 5% moved 1-8
    messages later (arriving after frames that follow them in time); each track's last frames stay."""
    rng = random.Random(seed)
    media_idx = [i for i, m in enumerate(messages) if m["event"] == "media"][:-20]  # each track's end stays
    picked = rng.sample(media_idx, k=len(media_idx) // 10)
    dropped, reordered = set(picked[: len(picked) // 2]), set(picked[len(picked) // 2 :])
    sent = [m for i, m in enumerate(messages) if i not in dropped]
    for msg in [messages[i] for i in sorted(reordered)]:
        at = next(k for k, m in enumerate(sent) if m is msg)
        sent.insert(min(at + rng.randint(2, 9), len(sent) - 1), sent.pop(at))
    return sent, dropped


async def send_paced(ws: Any, messages: list[dict[str, Any]], speed: float) -> float:
    """Send ``messages`` over a WebSocket, each media message at its timestamp / ``speed`` (the pace of
    Twilio sped up); returns the seconds it took."""
    t0 = time.perf_counter()
    for msg in messages:
        if msg["event"] == "media":
            delay = t0 + int(msg["media"]["timestamp"]) / 1000 / speed - time.perf_counter()
            if delay > 0.001:
                await asyncio.sleep(delay)
        await ws.send(orjson.dumps(msg).decode())
    return time.perf_counter() - t0


@dataclass
class SseEvent:
    id: str
    event: str
    data: dict[str, Any]
    at: float = field(default_factory=time.time)  # when this client received it


class SseReader:
    """A real SSE client (httpx, streaming) in a thread: collects events until ``until(event)`` is true,
    ``stop()`` is called, or the server ends the stream. ``comments`` keeps the ``:`` lines."""

    def __init__(self, url: str, *, key: str = API_KEY, last_event_id: str | None = None, until: Any = None) -> None:
        self.events: list[SseEvent] = []
        self.comments: list[str] = []
        self.status: int | None = None
        self.error: BaseException | None = None
        self._url, self._key, self._last, self._until = url, key, last_event_id, until
        self._stop = threading.Event()
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self._key}"}
        if self._last:
            headers["Last-Event-ID"] = self._last
        try:
            with httpx.stream("GET", self._url, headers=headers, timeout=httpx.Timeout(60, read=60)) as r:
                self.status = r.status_code
                self.connected.set()
                fields: dict[str, str] = {}
                for line in r.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith(":"):
                        self.comments.append(line[1:].strip())
                    elif line == "":
                        if "data" in fields:
                            event = SseEvent(
                                fields.get("id", ""), fields.get("event", ""), orjson.loads(fields["data"])
                            )
                            self.events.append(event)
                            if self._until is not None and self._until(event):
                                return
                        fields = {}
                    else:
                        name, _, value = line.partition(":")
                        fields[name] = value[1:] if value.startswith(" ") else value
        except BaseException as exc:  # surfaced by wait()
            self.error = exc
        finally:
            self.connected.set()

    def wait(self, timeout: float = 60.0) -> list[SseEvent]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"SSE stream still open after {timeout} s ({len(self.events)} events)"
        if self.error is not None:
            raise self.error
        return self.events

    def stop(self) -> None:
        """Stop reading (the connection closes once the next line arrives)."""
        self._stop.set()


def stream_calls(server: Server, captures: list[list[dict[str, Any]]], speed: float, timeout: float = 120.0) -> None:
    """Stream calls together, each as Twilio would (paced by ``speed``), until the server closes them. In a
    thread of its own, so it works beside a running event loop (Playwright's sync API runs one)."""

    async def one(messages: list[dict[str, Any]]) -> None:
        async with websockets.connect(server.ws) as ws:
            await send_paced(ws, messages, speed)
            await asyncio.wait_for(ws.wait_closed(), 30)

    async def run() -> None:
        await asyncio.gather(*(one(m) for m in captures))

    failure: list[BaseException] = []
    thread = threading.Thread(target=lambda: _catch(lambda: asyncio.run(run()), failure), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the calls did not finish streaming in {timeout} s"
    if failure:
        raise failure[0]


def _catch(fn: Any, into: list[BaseException]) -> None:
    try:
        fn()
    except BaseException as exc:
        into.append(exc)


def wait_searchable(server: Server, call_sid: str, key: str = API_KEY, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The call's turns once the call has ended and every turn is searchable with the call's end known
    (``last_s`` matches only turns whose ``ms_to_end`` is set)."""
    query = {"where": {"call_sid": call_sid}, "last_s": 10**6, "limit": 0}
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        call = server.get(f"/v1/calls/{call_sid}", key=key).json()
        turns = server.get(f"/v1/calls/{call_sid}/turns", key=key).json()["turns"]
        found = httpx.post(server.http + "/v1/search", json=query, headers=headers, timeout=10).json()
        if not call["live"] and turns and found["total"] == len(turns):
            return list(turns)
        time.sleep(0.1)
    raise TimeoutError(f"call {call_sid} not fully searchable after {timeout} s:\n{server.log()}")


def ended(call_sid: str) -> Any:
    """An ``until`` for SseReader: the call's ``call.ended``."""
    return lambda e: e.event == "call.ended" and e.data.get("call_sid") == call_sid


def tiny_manifest(
    tmp_path: Path, rows: list[tuple[str, ...]], columns: tuple[str, ...] = ("path", "dataset", "speaker", "emotion")
) -> Path:
    """A manifest (``models.training.data`` format) of ``rows``: real corpus clips, paths relative to the shared data
    root (pass it with --root), or absolute paths."""
    path = tmp_path / "tiny.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)
    return path
