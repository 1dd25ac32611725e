"""uvicorn's default WebSocket protocol, minus a way to lose audio, with reads paused less often, and
with a direct lane for media messages.

In uvicorn's sans-I/O WebSocket protocol, when one read from the socket holds good messages followed
by a frame the parser refuses (e.g. over ``ws_max_size``), ``data_received`` sees the parser error
and closes without handing the app the good messages parsed just before it: accepted audio would be
lost (tests/test_bad_input.py shows it). This subclass delivers them first, then closes. It also closes
as RFC 6455 7.1.7 and websockets' sans-I/O layer intend: the close frame, the end of its writing, then the
peer's bytes read and dropped until the peer ends too (``LINGER_S`` at most). uvicorn closes at once, and
the kernel answers the bytes it never read with a reset, which can reach a client still sending (the rest
of a frame too big) before it has read the close frame and its code.

uvicorn also pauses reading the socket after every message it queues for the app and resumes once
the app has taken it: two epoll changes per 20 ms media message, a visible share of the API process's
CPU under many calls. Here reading pauses only once ``QUEUE_HIGH`` messages wait, and resumes when
the app has taken them all: backpressure stays, bounded at ``QUEUE_HIGH`` messages per socket.

The direct lane: ASGI hands every message to the app through a queue, a future and a task switch,
several times the work of parsing it. An app that handles its messages synchronously can take the
``mise.direct`` extension from the socket's scope and call ``deliver(sink)``: from then on each
message is passed to ``sink`` from ``data_received`` as it is parsed (text as ``str``, binary as
``bytes``), and the future it returns resolves with the close code when the socket closes (the
``websocket.disconnect`` the app would have received). Messages the app had not yet taken go to the
sink first, in order. Sending and closing stay ASGI. Under another server the extension is absent and
the app reads its messages the usual way. ``deliver(sink, media, max_media_bytes)`` also takes a media
sink: the media messages this class's frame parser finds (below) then reach it already decoded, as lists
of ``MediaTuple`` (all of one read's, up to its first other message), and every other message reaches
``sink`` as before, in order with them.

Frames are parsed here too, once the handshake is done: websockets' parser runs a generator per read and
builds a Frame object per message; this one does neither. It takes the frames a media stream is
made of (unfragmented text or binary, masked, no extension bits, within ``ws_max_size``) and pings and
pongs; at the first frame of any other kind (a close, a fragment, anything malformed), or once the app
has sent its close, it hands the bytes from that frame on to websockets' parser for good, which then
does what it always did (close handshakes, 1002, 1009). websockets' parser has seen no byte of the
stream since the handshake, so it takes over at a frame boundary. A socket that negotiated an
extension (permessage-deflate) or sent frames before the handshake was answered never uses it. With a
media sink, ``engine._wire.scan`` (C) reads a read's frames first: each that is a media message exactly
as Twilio sends one comes back decoded (``engine.codec.decode``'s Media, as a plain tuple), and it stops
at the first frame that is not one, which is parsed here as above.

Polled reads: a socket whose messages go to sinks can also be read on a tick instead of as its bytes
arrive (``deliver(..., poller=)``): the event loop stops watching it, and ``SocketPoller.read_all``
reads everything it holds in one ``read`` per socket. A media stream sends a message every 10 ms; read
as they arrive, each cost a wake-up, a read and a call into Python, more than the rest of its handling.
Ticked by the audio pump just before it pushes (actors/pump.py), the reads add no delay to audio: it
waited for that push anyway. A socket leaves polled mode (the loop watches it again) when it reaches end
of file or an error, when websockets' parser takes over, when a close is sent, and when the server
shuts down, which first reads what the socket still holds: nothing it received is left unread.
Plain TCP only (never TLS, whose bytes only the transport can read).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.utils import is_ssl
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request

from engine._wire import HAND_OVER, NEED_MORE, scan

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

QUEUE_HIGH = 32  # messages queued for the app before reading pauses (~10 KB of media messages)
DIRECT = "mise.direct"  # the scope extension: {"deliver": LosslessWebSocketProtocol.deliver}
INTERNAL_ERROR = 1011
LINGER_S = 2.0  # how long a socket this side failed reads and drops what its peer still sends
READ_SIZE = 1 << 16  # a polled read (~170 media messages); a socket holding more is read again at once
_FAST_OPCODES = frozenset((Opcode.TEXT, Opcode.BINARY, Opcode.PING, Opcode.PONG))

Sink = Callable[[str | bytes], None]
MediaTuple = tuple[int, str, str, int, int, bytes]  # engine.frames.Media's fields, in its order
MediaSink = Callable[[list[MediaTuple]], None]
log = logging.getLogger("mise.ws")


class _Disconnects:
    """The receive queue of a socket whose messages go to a sink: only its disconnect is left to tell."""

    def __init__(self, closed: asyncio.Future[int]) -> None:
        self.closed = closed

    def put_nowait(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.disconnect" and not self.closed.done():
            self.closed.set_result(int(message.get("code") or 1005))

    def empty(self) -> bool:
        return True

    def qsize(self) -> int:
        return 0

    async def get(self) -> dict[str, Any]:
        raise RuntimeError("this socket's messages go to its sink (mise.direct): receive() is not available")


class SocketPoller:
    """The sockets read on a tick (polled reads, above); ``read_all`` reads each once.

    While it reads (``reading``), ``since`` is when the round before began: what it reads now arrived after
    that, and may have waited since. Stamped with it, audio's measured delay counts the wait in the socket
    (an upper bound), as it counted the wait for the push when sockets were read as bytes arrived."""

    def __init__(self) -> None:
        self._sockets: set[LosslessWebSocketProtocol] = set()
        self.reading = False
        self.since = time.time()

    def __len__(self) -> int:
        return len(self._sockets)

    def add(self, protocol: LosslessWebSocketProtocol) -> None:
        self._sockets.add(protocol)

    def discard(self, protocol: LosslessWebSocketProtocol) -> None:
        self._sockets.discard(protocol)

    def read_all(self) -> None:
        began = time.time()
        self.reading = True
        try:
            for protocol in list(self._sockets):
                try:
                    protocol.read_now()
                except Exception:  # a bug, not bad input: that socket alone goes back to the event loop
                    log.exception("reading a polled socket failed; the event loop reads it from now on")
                    protocol.stop_polling()
        finally:
            self.reading, self.since = False, began


class LosslessWebSocketProtocol(WebSocketsSansIOProtocol):
    poller: SocketPoller | None = None  # set while the socket is read on its ticks
    fd = -1  # its file descriptor, while it is
    sink: Sink | None = None
    media_sink: MediaSink | None = None
    max_media_bytes = 0
    fast: bytearray | None = None  # unparsed bytes while this class parses the frames (None: websockets does)
    at_boundary = False  # the handshake request ended exactly where the data read so far ends
    lingering = False  # this side failed the connection and drops what still comes

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return
        if self.fast is not None:
            self.fast += data
            return self._parse_fast()
        initiated = self.handshake_initiated
        self.at_boundary = False
        self._websockets_parse(data)
        # Only the read that held the handshake request, and nothing after it: a client waits for the
        # answer before it sends frames, so websockets' parser is then at a frame boundary.
        self.at_boundary = (
            not initiated
            and self.handshake_initiated
            and data.endswith(b"\r\n\r\n")
            and not self.conn.reader.buffer
            and self.conn.parser_exc is None
        )

    def _websockets_parse(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self.handle_events()  # everything parsed before a protocol error reaches the app
        if self.conn.parser_exc is not None:
            self.handle_parser_exception()

    def handle_parser_exception(self) -> None:
        """This side failed the connection (``conn.fail``: a close frame, then the end of its writing): the app
        hears the close code, as from the parent, but the socket lingers: it reads and drops what the peer
        still sends until its end of file, ``LINGER_S`` at most, then closes. Closed at once with the peer's
        bytes unread (as the parent does), the kernel answers them with a reset, and a peer still sending (the
        rest of a frame too big, say) can lose the close frame and its code with it. The linger is the
        parent's ``close_timer``: so the app's task, which closes the socket when it returns unless a close
        handshake is under way, leaves it to the timer and to the peer's end of file."""
        close = self.conn.close_sent
        assert close is not None
        self.queue.put_nowait({"type": "websocket.disconnect", "code": close.code, "reason": close.reason})
        self.stop_polling(resume=False)
        self.close_sent = True
        self.transport.write(b"".join(self.conn.data_to_send()))
        if self.transport.is_closing() or not self.transport.can_write_eof():
            return self.transport.close()
        self.transport.write_eof()
        self.lingering = True
        if self.close_timer is not None:
            self.close_timer.cancel()
        self.close_timer = self.loop.call_later(LINGER_S, self.transport.close)
        self.read_paused = False
        self.transport.resume_reading()

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:
            self.scope["extensions"][DIRECT] = {"deliver": self.deliver}

    async def send(self, message: Any) -> None:
        accepting = message["type"] == "websocket.accept" and not self.handshake_complete
        await super().send(message)
        if accepting and self.handshake_complete and self.at_boundary and not self.conn.extensions:
            self.fast = bytearray()
        elif self.close_sent and self.fast is not None:  # the app closed: websockets sees the close through
            self._hand_over(0)

    def _hand_over(self, at: int) -> None:
        """websockets' parser takes the stream from ``self.fast[at:]`` (a frame boundary) on, for good."""
        assert self.fast is not None
        self.stop_polling()
        rest, self.fast = bytes(self.fast[at:]), None
        if rest:
            self._websockets_parse(rest)

    def _parse_fast(self) -> None:
        buf = self.fast
        assert buf is not None
        at, end, limit = 0, len(buf), self.config.ws_max_size
        while end - at >= 6:
            if self.close_sent:  # the app closed, or a handler failed: websockets reads the close through
                return self._hand_over(at)
            if self.media_sink is not None:
                at, found, stopped = scan(buf, at, limit, self.max_media_bytes)
                if found:
                    self._media_to_sink(found)
                if stopped == NEED_MORE:
                    break
                if found:
                    continue  # the sink may have closed the socket
                if stopped == HAND_OVER:
                    return self._hand_over(at)
                # the frame at ``at`` is another message, or a ping or pong: parsed below
            head, length = buf[at], buf[at + 1]
            opcode, start = head & 0x0F, at + 6
            if head & 0xF0 != 0x80 or not length & 0x80 or opcode not in _FAST_OPCODES:
                return self._hand_over(at)  # a fragment, extension bits, no mask, a close, or nonsense
            length &= 0x7F
            if length == 126:
                if end - at < 8:
                    break
                length, start = int.from_bytes(buf[at + 2 : at + 4], "big"), at + 8
            elif length == 127:
                return self._hand_over(at)  # 64 KiB or more: far over any media message
            if length > limit or (opcode >= 8 and length > 125):
                return self._hand_over(at)  # websockets refuses it as it always did (1009, 1002)
            if end - start < length:
                break
            data = apply_mask(buf[start : start + length], buf[start - 4 : start])
            at = start + length
            if opcode == Opcode.PING:
                self.conn.send_pong(data)
                self.transport.write(b"".join(self.conn.data_to_send()))
            elif opcode == Opcode.PONG:
                self.handle_pong(Frame(Opcode.PONG, data))
            else:
                self.curr_msg_data_type, self.frames = "text" if opcode == Opcode.TEXT else "bytes", [data]
                self.send_receive_event_to_app()
        del buf[:at]

    def deliver(
        self,
        sink: Sink,
        media: MediaSink | None = None,
        max_media_bytes: int = 0,
        poller: SocketPoller | None = None,
    ) -> asyncio.Future[int]:
        """Send this socket's messages to ``sink`` from now on, and with ``media`` its media messages of at most
        ``max_media_bytes`` decoded to that; with ``poller``, read the socket on its ticks (polled reads). The
        future resolves with the close code."""
        closed: asyncio.Future[int] = self.loop.create_future()
        waiting, self.queue = self.queue, _Disconnects(closed)  # type: ignore[assignment]
        self.sink, self.media_sink, self.max_media_bytes = sink, media, max_media_bytes
        while not waiting.empty():
            message: Any = waiting.get_nowait()
            if message["type"] == "websocket.receive":
                self._to_sink(message["text"] if message.get("text") is not None else message.get("bytes", b""))
            else:
                self.queue.put_nowait(message)
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        socket = self.transport.get_extra_info("socket")
        plain = socket is not None and not is_ssl(self.transport) and not self.transport.is_closing()
        if poller is not None and plain and self.fast is not None and not self.close_sent:
            self.transport.pause_reading()
            self.poller, self.fd = poller, socket.fileno()
            poller.add(self)
        return closed

    def read_now(self) -> None:
        """Polled reads: everything the socket holds, as if the loop had read it."""
        while self.poller is not None:
            try:
                data = os.read(self.fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return self.stop_polling()  # the transport reads the error for itself
            if not data:
                return self.stop_polling()  # end of file: so does it
            self.data_received(data)
            if len(data) < READ_SIZE:
                return

    def stop_polling(self, *, resume: bool = True) -> None:
        """The event loop reads this socket again (if it is still open)."""
        if self.poller is not None:
            self.poller.discard(self)
            self.poller = None
            if resume and not self.transport.is_closing():
                self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_polling(resume=False)
        super().connection_lost(exc)  # which cancels the close timer (a linger's too)

    def shutdown(self) -> None:
        if self.poller is not None:  # what the socket holds is read before the server closes it
            self.read_now()
            self.stop_polling()
        super().shutdown()

    def send_receive_event_to_app(self) -> None:
        """A whole message (``self.frames``, from either parser): to the sink, or queued for ASGI's receive."""
        if self.sink is not None:
            data = b"".join(self.frames)
            self.frames = []
            if self.close_sent:
                return
            return self._text_to_sink(data) if self.curr_msg_data_type == "text" else self._to_sink(data)
        paused = self.read_paused
        self.read_paused = True  # the parent pauses reading unless it is paused already: it is not told
        super().send_receive_event_to_app()
        self.read_paused = paused
        if not paused and self.queue.qsize() >= QUEUE_HIGH:
            self.read_paused = True
            self.transport.pause_reading()

    def _text_to_sink(self, data: bytes) -> None:
        try:
            text = data.decode()
        except UnicodeDecodeError:  # as the parent does: close 1007
            self.logger.exception("Invalid UTF-8 sequence received from client.")
            self.conn.fail(1007, "invalid UTF-8")
            self.handle_parser_exception()
            return
        self._to_sink(text)

    def _to_sink(self, data: str | bytes) -> None:
        assert self.sink is not None
        try:
            self.sink(data)
        except Exception:
            self._handler_failed()

    def _media_to_sink(self, found: list[MediaTuple]) -> None:
        assert self.media_sink is not None
        try:
            self.media_sink(found)
        except Exception:
            self._handler_failed()

    def _handler_failed(self) -> None:
        """A bug in the app's handling, not bad input (that is the sink's to refuse): this socket closes with
        1011 and its disconnect reaches the app; no other socket is touched."""
        log.exception("a WebSocket message handler failed; closing this socket (1011)")
        if not self.close_sent and not self.transport.is_closing():
            self.conn.fail(INTERNAL_ERROR, "internal error")
            self.handle_parser_exception()
