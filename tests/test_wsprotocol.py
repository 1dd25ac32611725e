"""The WebSocket protocol's direct lane (api/wsprotocol.py) on a real uvicorn with a real client: messages
the app had not yet taken reach the sink first and in order, fragmented and binary messages arrive whole,
a close reaches the app's future with its code, and a sink that raises closes only its own socket (1011)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
import websockets

from api.wsprotocol import DIRECT, LosslessWebSocketProtocol
from tests.support import free_port

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

    deliver = scope["extensions"][DIRECT]["deliver"]
    got.append(("own parser", deliver.__self__.fast is not None))  # frames parsed by the protocol itself
    closed = deliver(sink)
    got.append(("closed", await closed))


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, ws=LosslessWebSocketProtocol, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"ws://127.0.0.1:{port}"
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
