"""The WebSocket protocol's direct lane (api/wsprotocol.py) on a real uvicorn with a real client: messages
the app had not yet taken reach the sink first and in order, fragmented and binary messages arrive whole,
a close reaches the app's future with its code, a sink that raises closes only its own socket (1011), and a
frame too big is refused with a close frame its sender reads even while it is still sending.
With a media sink, media messages reach it decoded (engine/csrc/wire.c), in order with everything else. A polled
socket is read on its poller's ticks only, leaves the poller when it ends, and is read to the end when the
server stops."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
import websockets

from api.wsprotocol import DIRECT, LosslessWebSocketProtocol, SocketPoller
from tests.support import free_port

URL: list[str] = []  # the module's server, for tests that do not take the fixture
POLLER = SocketPoller()  # read by the tests (``tick``): sockets whose path starts with "polled"
LOOPS: list[asyncio.AbstractEventLoop] = []  # the servers' event loops
received: dict[str, list[Any]] = {}  # per socket (its path): what the sink got, then ("closed", code)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "websocket"
    name = scope["path"].strip("/")
    got = received.setdefault(name, [])
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    first = await receive()  # one message the ASGI way, then the rest waits in the queue a while
    got.append(("asgi", first.get("text")))
    await asyncio.sleep(0.3)

    def sink(data: str | bytes) -> None:
        if data == "boom":
            raise RuntimeError("a handler bug")
        got.append(data)

    def media_sink(batch: list[tuple[Any, ...]]) -> None:
        if any(chunk == 666 for _, _, _, chunk, _, _ in batch):
            raise RuntimeError("a handler bug")
        got.append(("media", [chunk for _, _, _, chunk, _, _ in batch]))

    deliver = scope["extensions"][DIRECT]["deliver"]
    got.append(("own parser", deliver.__self__.fast is not None))  # frames parsed by the protocol itself
    LOOPS.append(asyncio.get_running_loop())
    if name.startswith("polled"):
        closed = deliver(sink, media_sink, 1000, POLLER)
    elif name.startswith("media"):
        closed = deliver(sink, media_sink, 1000)
    else:
        closed = deliver(sink)
    got.append(("closed", await closed))


def serve() -> tuple[uvicorn.Server, threading.Thread, str]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, ws=LosslessWebSocketProtocol, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    return server, thread, f"ws://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    server, thread, address = serve()
    URL[:] = [address]
    yield URL[0]
    server.should_exit = True
    thread.join(10)


def wait_closed(name: str) -> list[Any]:
    deadline = time.monotonic() + 5
    while not (received.get(name) and isinstance(received[name][-1], tuple) and received[name][-1][0] == "closed"):
        assert time.monotonic() < deadline, f"the app never saw {name} close: {received.get(name)}"
        time.sleep(0.02)
    return received[name]


def test_messages_reach_the_sink_in_order_and_the_close_code_reaches_the_app(url: str) -> None:
    async def client() -> None:
        async with websockets.connect(f"{url}/order", compression=None) as ws:
            for i in range(40):  # most arrive while the app sleeps: they wait in the queue, then go first
                await ws.send(f"m{i}")
            await asyncio.sleep(0.5)
            await ws.send(b"\x00binary")
            await asyncio.wait_for(await ws.ping(b"are you there"), 2)  # answered by the protocol's parser
            await ws.send("x" * 300)  # a 16-bit length
            await ws.send([b"frag", b"mented"])  # a fragment: websockets' parser takes over, for good
            await ws.send(["te", "xt"])
            await asyncio.wait_for(await ws.ping(), 2)
            await ws.send("last")
            await ws.close(4001)

    asyncio.run(client())
    got = wait_closed("order")
    assert got == [
        ("asgi", "m0"),
        ("own parser", True),
        *[f"m{i}" for i in range(1, 40)],
        b"\x00binary",
        "x" * 300,
        b"fragmented",
        "text",
        "last",
        ("closed", 4001),
    ]


def test_frames_sent_with_the_handshake_are_parsed_by_websockets_from_the_start(url: str) -> None:
    """A client that does not wait for the answer (RFC 6455 4.1 says it must): its first frame came in the
    read with the request, and websockets, which drops it as it always did, keeps parsing the stream."""
    from bench.loadgen import frame

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
        writer.write(
            b"GET /eager HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" + frame("early")
        )
        assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(0.5)
        writer.write(frame("later") + bytes([0x88, 0x82, 0, 0, 0, 0]) + (1000).to_bytes(2, "big"))
        await writer.drain()
        await reader.read()
        writer.close()

    asyncio.run(client())
    assert wait_closed("eager") == [("asgi", "later"), ("own parser", False), ("closed", 1000)]


def test_a_sink_that_raises_closes_its_own_socket_with_1011(url: str) -> None:
    async def client() -> int | None:
        async with websockets.connect(f"{url}/other", compression=None) as other:
            await other.send("hello")
            async with websockets.connect(f"{url}/bad", compression=None) as ws:
                await ws.send("first")
                await asyncio.sleep(0.5)
                await ws.send("boom")
                with pytest.raises(websockets.ConnectionClosed):
                    while True:
                        await ws.recv()
                code = ws.close_code
            await asyncio.sleep(0.5)
            await other.send("still here")  # the other socket is untouched
            await other.close()
        return code

    code = asyncio.run(client())
    assert code == 1011
    assert wait_closed("bad")[-1] == ("closed", 1011)
    assert wait_closed("other") == [("asgi", "hello"), ("own parser", True), "still here", ("closed", 1000)]


def test_a_frame_too_big_is_refused_with_1009_and_the_peer_reads_it_while_still_sending(url: str) -> None:
    """The server fails the connection on a frame's header (over ``ws_max_size``, 16 MiB here) while the
    client is still sending that frame: the client gets the close frame and then the end of the stream, and
    can go on sending meanwhile, instead of a reset (the kernel's answer to bytes a closed socket never read)
    that can destroy the close frame before the client reads it."""

    async def client() -> tuple[bytes, bytes]:
        reader, writer = await open_raw(url, "huge")
        writer.write(bytes([0x81, 0x80 | 127]) + (17 << 20).to_bytes(8, "big") + bytes(4 + (256 << 10)))
        head = await asyncio.wait_for(reader.readexactly(2), 5)
        close = head + await reader.readexactly(head[1])  # the close frame: code and reason
        await asyncio.sleep(0.3)  # the app has heard the close and returned: its task does not close the socket
        for _ in range(32):  # 2 MiB more of the frame, after the server refused it
            writer.write(bytes(64 << 10))
            await writer.drain()
        writer.write_eof()
        rest = await asyncio.wait_for(reader.read(), 5)  # then the end of the stream: no reset
        writer.close()
        return close, rest

    close, rest = asyncio.run(client())
    assert close[0] == 0x88 and int.from_bytes(close[2:4], "big") == 1009 and rest == b""
    assert wait_closed("huge") == [("asgi", "first"), ("own parser", True), ("closed", 1009)]


def media(chunk: int) -> str:
    body = {"track": "outbound", "chunk": str(chunk), "timestamp": str(20 * chunk), "payload": "/w=="}
    return json.dumps({"event": "media", "sequenceNumber": str(chunk), "media": body, "streamSid": "MZ1"})


def test_media_messages_reach_the_media_sink_decoded_and_in_order_with_the_rest() -> None:
    """All in one write (one read, most likely): each run of media messages is one list, every other message goes
    to the text sink between them, a ping is answered, a media message over the limit goes to the text sink,
    and after a fragment websockets' parser delivers everything (media too) to the text sink."""
    port_url = URL[0]
    from bench.loadgen import frame

    bad_base64 = media(5).replace("/w==", "/w=")

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(port_url.rsplit(":", 1)[1]))
        writer.write(
            b"GET /media HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
        writer.write(frame("first"))
        await asyncio.sleep(0.5)  # the app takes "first" the ASGI way, then hands over to its sinks
        writer.write(
            frame(media(1))
            + frame(media(2))
            + frame("text")
            + frame(media(3))
            + bytes([0x89, 0x82, 0, 0, 0, 0]) + b"hi"  # a ping
            + frame(media(4))
            + frame(bad_base64)
            + frame(media(6) + " " * 1000)  # over the media sink's limit
            + frame(media(7))
            + bytes([0x01, 0x82, 0, 0, 0, 0]) + b"fr" + bytes([0x80, 0x82, 0, 0, 0, 0]) + b"ag"  # fragmented
            + frame(media(8))
            + bytes([0x88, 0x82, 0, 0, 0, 0]) + (1000).to_bytes(2, "big")
        )  # fmt: skip
        await writer.drain()
        pong = await reader.readexactly(4)
        assert pong == bytes([0x8A, 2]) + b"hi"
        await reader.read()
        writer.close()

    asyncio.run(client())
    assert wait_closed("media") == [
        ("asgi", "first"),
        ("own parser", True),
        ("media", [1, 2]),
        "text",
        ("media", [3]),
        ("media", [4]),
        bad_base64,
        media(6) + " " * 1000,
        ("media", [7]),
        "frag",
        media(8),
        ("closed", 1000),
    ]


def test_a_media_sink_that_raises_closes_its_own_socket_with_1011() -> None:
    async def client() -> int | None:
        async with websockets.connect(f"{URL[0]}/media-bad", compression=None) as ws:
            await ws.send("first")
            await asyncio.sleep(0.5)
            await ws.send(media(1))
            await asyncio.sleep(0.3)  # its own read: a sink that raises loses the list it was given
            await ws.send(media(666))
            await ws.send(media(3))  # after the failure: not delivered
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await ws.recv()
            return ws.close_code

    assert asyncio.run(client()) == 1011
    assert wait_closed("media-bad") == [("asgi", "first"), ("own parser", True), ("media", [1]), ("closed", 1011)]


def tick() -> None:
    """One round of the poller, on the server's loop (as the audio pump runs it), and time for it to run."""
    LOOPS[-1].call_soon_threadsafe(POLLER.read_all)
    time.sleep(0.3)


async def open_raw(address: str, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    from bench.loadgen import frame

    reader, writer = await asyncio.open_connection("127.0.0.1", int(address.rsplit(":", 1)[1]))
    writer.write(
        f"GET /{path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n".encode()
        + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    writer.write(frame("first"))
    await asyncio.sleep(0.5)  # the app takes "first" the ASGI way, then hands the socket to its sinks
    return reader, writer


def test_a_polled_socket_is_read_on_the_pollers_ticks_only(url: str) -> None:
    from bench.loadgen import frame

    async def client() -> None:
        reader, writer = await open_raw(url, "polled")
        writer.write(frame(media(1)) + frame("text") + frame(media(2)))
        await asyncio.sleep(0.3)
        assert received["polled"] == [("asgi", "first"), ("own parser", True)], "read before its tick"
        await asyncio.to_thread(tick)
        assert received["polled"][2:] == [("media", [1]), "text", ("media", [2])]
        writer.write(frame(media(3)) + bytes([0x88, 0x82, 0, 0, 0, 0]) + (1000).to_bytes(2, "big"))
        await asyncio.to_thread(tick)  # the close: websockets' parser answers it, the loop reads the rest
        await reader.read()
        writer.close()

    asyncio.run(client())
    assert wait_closed("polled")[5:] == [("media", [3]), ("closed", 1000)]
    assert len(POLLER) == 0


def test_a_polled_socket_that_ends_without_a_close_leaves_the_poller(url: str) -> None:
    from bench.loadgen import frame

    async def client() -> None:
        _, writer = await open_raw(url, "polled-eof")
        writer.write(frame(media(1)))
        await writer.drain()
        writer.transport.abort()  # no close frame: the connection just ends

    asyncio.run(client())
    time.sleep(0.3)
    assert len(POLLER) == 1 and received["polled-eof"][2:] == []
    tick()  # the message (a short read: the end of the file is found at the next tick)
    tick()
    assert wait_closed("polled-eof")[2:] == [("media", [1]), ("closed", 1005)]
    assert len(POLLER) == 0


def test_a_server_that_stops_first_reads_what_its_polled_sockets_hold() -> None:
    """Nothing a socket received is left unread: the poller never ticks here, the shutdown reads it all."""
    from bench.loadgen import frame

    server, thread, address = serve()

    async def client() -> None:
        reader, writer = await open_raw(address, "polled-stop")
        writer.write(b"".join(frame(media(chunk)) for chunk in range(1, 41)) + frame("text"))
        await writer.drain()
        await asyncio.sleep(0.3)
        assert received["polled-stop"][2:] == []
        server.should_exit = True
        await reader.read()
        writer.close()

    asyncio.run(client())
    thread.join(10)
    got = wait_closed("polled-stop")[2:]
    assert got == [("media", list(range(1, 41))), "text", ("closed", 1012)]
