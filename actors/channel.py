"""A node-local socket between an API process and a call host (or the event hub): no Ray call per tick.

A Ray actor call costs ~0.55 ms of CPU on each side here (``bench/ray_calls.py``), and the pump makes one per
host per 50 ms tick. When a host runs on the API process's own node, the pushes go over a Unix socket instead:
a write and a read on each side. Ray still places, opens, finishes and watches the hosts; only the push, the
one call made 20 times a second per host, leaves it. A host on another node is pushed to through Ray.

Host side, ``ChannelServer``: a listening socket in Linux's abstract namespace (no file to leave behind when the
process is killed), named and guarded by random tokens that only a Ray call to the host reveals (the first
thing a client sends is the token; anything else closes the connection). One thread per connection reads
requests and answers them in order, so one API process's pushes apply in the order it sent them, as Ray's do.

The event hub, an asyncio actor, serves the same requests on its event loop (``LoopServer``): an API process's
publish of a batch of events, every 100 ms under load, then costs no Ray call either.

API side, ``HostChannel``: an asyncio protocol; ``request`` writes one frame and returns the future of its
reply. If the connection is lost, every request waiting on it fails with ``ChannelClosed``: the caller cannot
know whether the host applied them, and asks the host through Ray (which tells a dead host from a live one).

Frames: a 4-byte big-endian length, then that many bytes. A reply's first byte says what follows: 0 a result,
1 the text of the error the handler raised (the host's other work goes on).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import secrets
import socket
import struct
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

log = logging.getLogger("mise.channel")

_LEN = struct.Struct(">I")
MAX_FRAME = 256 << 20  # a push of ~10 s of 250 calls is ~100 MB pickled; anything larger is refused
TOKEN_BYTES = 16
TOKEN_WAIT_S = 10.0
OK, FAILED = b"\x00", b"\x01"


class ChannelClosed(ConnectionError):
    """The connection to the host was lost with this request unanswered."""


class ChannelError(RuntimeError):
    """The host's handler raised on this request (its text is the message)."""


@dataclass(frozen=True, slots=True)
class Address:
    """Where a host listens and the token it expects, with the Ray node it runs on."""

    node: str
    name: bytes  # abstract socket name, leading NUL included
    token: bytes


def available() -> bool:
    return sys.platform.startswith("linux")  # abstract Unix sockets are Linux's


class _Listening:
    """What both servers share: the bound socket, its token, and turning a request into its reply frame."""

    def __init__(self, handler: Callable[[bytes], bytes], *, node: str, name: str) -> None:
        self._handler = handler
        self._token = secrets.token_bytes(TOKEN_BYTES)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(b"\0" + f"{name}-{os.getpid()}-{secrets.token_hex(8)}".encode())  # abstract namespace
        self.address = Address(node, self._sock.getsockname(), self._token)
        self.connections = 0
        self.refused = 0

    def admits(self, token: bytes) -> bool:
        """Whether a connection that opened with ``token`` is served (counted either way)."""
        if not hmac.compare_digest(token, self._token):
            self.refused += 1
            log.warning("a connection to a local channel gave a wrong token: closed")
            return False
        self.connections += 1
        return True

    def answer(self, request: bytes) -> bytes:
        """The reply frame to ``request``: the handler's result, or the error it raised (reported to the caller,
        as Ray would; the actor's other work goes on)."""
        try:
            reply = OK + self._handler(request)
        except Exception as exc:
            log.exception("a request over a local channel failed")
            reply = FAILED + f"{type(exc).__name__}: {exc}".encode()
        return _LEN.pack(len(reply)) + reply


class ChannelServer(_Listening):
    """Serves ``handler(request bytes) -> reply bytes`` on a node-local socket, one thread per connection."""

    def __init__(self, handler: Callable[[bytes], bytes], *, node: str, name: str = "mise-host") -> None:
        super().__init__(handler, node=node, name=name)
        self._sock.listen(16)
        self._closed = False
        threading.Thread(target=self._accept, name="mise-channel", daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._closed:
                    return
                log.exception("the push channel could not accept a connection; it goes on")
                continue
            threading.Thread(target=self._serve, args=(conn,), name="mise-channel-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(TOKEN_WAIT_S)  # a client that never says its token holds no thread for long
                token = _read_exact(conn, TOKEN_BYTES)
                conn.settimeout(None)
            except (OSError, EOFError):
                return
            if not self.admits(token):
                return
            while True:
                try:
                    request = _read_frame(conn)
                except (OSError, EOFError, ValueError) as exc:
                    if not isinstance(exc, EOFError):
                        log.warning("push channel connection dropped: %s", exc)
                    return
                try:
                    conn.sendall(self.answer(request))
                except OSError:
                    return


def _read_exact(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _read_frame(conn: socket.socket) -> bytes:
    return _read_exact(conn, _length(_read_exact(conn, _LEN.size)))


def _length(header: bytes | bytearray) -> int:
    """A frame's announced length; ValueError over ``MAX_FRAME``."""
    (n,) = _LEN.unpack_from(header)
    if n > MAX_FRAME:
        raise ValueError(f"frame of {n} bytes is over the limit")
    return int(n)


class _Frames:
    """Length-prefixed frames out of a byte stream, as it comes."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def push(self, data: bytes) -> None:
        self._buf += data

    def frames(self) -> list[bytes]:
        """Every whole frame received so far; ValueError for one announced over ``MAX_FRAME``."""
        out = []
        while len(self._buf) >= _LEN.size:
            n = _length(self._buf)
            if len(self._buf) < _LEN.size + n:
                break
            out.append(bytes(self._buf[_LEN.size : _LEN.size + n]))
            del self._buf[: _LEN.size + n]
        return out

    def take(self, n: int) -> bytes | None:
        """The first ``n`` raw bytes once they are here (a token before the frames)."""
        if len(self._buf) < n:
            return None
        head = bytes(self._buf[:n])
        del self._buf[:n]
        return head


class LoopServer(_Listening):
    """``ChannelServer`` for an asyncio actor (the event hub): requests handled on its event loop, in order,
    by ``handler(request bytes) -> reply bytes`` (synchronous: nothing else of the actor runs meanwhile)."""

    def __init__(self, handler: Callable[[bytes], bytes], *, node: str, name: str) -> None:
        super().__init__(handler, node=node, name=name)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.get_running_loop().create_unix_server(lambda: _Served(self), sock=self._sock)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


class _Served(asyncio.Protocol):
    def __init__(self, server: LoopServer) -> None:
        self._server = server
        self._frames = _Frames()
        self._transport: asyncio.Transport | None = None
        self._trusted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        try:
            self._frames.push(data)
            if not self._trusted:
                token = self._frames.take(TOKEN_BYTES)
                if token is None:
                    return
                if not self._server.admits(token):
                    self._transport.close()
                    return
                self._trusted = True
            requests = self._frames.frames()
        except ValueError as exc:
            log.warning("event channel connection dropped: %s", exc)
            self._transport.close()
            return
        for request in requests:
            self._transport.write(self._server.answer(request))


class HostChannel(asyncio.Protocol):
    """The API process's end: requests answered in the order they were written."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._frames = _Frames()
        self._waiting: deque[asyncio.Future[bytes]] = deque()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass, but is one

    def request(self, payload: bytes) -> asyncio.Future[bytes]:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if self.closed or self._transport is None:
            future.set_exception(ChannelClosed("the push channel is closed"))
            return future
        self._waiting.append(future)
        self._transport.writelines((_LEN.pack(len(payload)), payload))
        return future

    def data_received(self, data: bytes) -> None:
        try:
            self._frames.push(data)
            frames = self._frames.frames()
        except ValueError:
            self.close()
            return
        for frame in frames:
            if not self._waiting:  # a reply nobody asked for: this connection cannot be trusted any more
                self.close()
                return
            future = self._waiting.popleft()
            if future.done():
                continue
            if frame[:1] == OK:
                future.set_result(frame[1:])
            else:
                future.set_exception(ChannelError(frame[1:].decode(errors="replace")))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiting, self._waiting = self._waiting, deque()
        for future in waiting:
            if not future.done():
                future.set_exception(ChannelClosed(f"the push channel closed: {exc or 'end of stream'}"))

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


async def connect(address: Address) -> HostChannel:
    """Connect to a host's channel and present its token."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, address.name)
        await loop.sock_sendall(sock, address.token)
    except BaseException:
        sock.close()
        raise
    _, protocol = await loop.create_unix_connection(HostChannel, sock=sock)
    return protocol
