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

    closed = scope["extensions"][DIRECT]["deliver"](sink)
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
            await ws.send([b"frag", b"mented"])  # a fragmented binary message arrives whole
            await ws.send(["te", "xt"])
            await ws.send("last")
            await ws.close(4001)

    asyncio.run(client())
    got = wait_closed("order")
    assert got == [("asgi", "m0"), *[f"m{i}" for i in range(1, 40)], b"fragmented", "text", "last", ("closed", 4001)]


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
    assert wait_closed("other") == [("asgi", "hello"), "still here", ("closed", 1000)]
