"""uvicorn's default WebSocket protocol, minus a way to lose audio.

In uvicorn's sans-I/O WebSocket protocol, when one read from the socket holds good messages followed
by a frame the parser refuses (e.g. over ``ws_max_size``), ``data_received`` sees the parser error
and closes without handing the app the good messages parsed just before it: accepted audio would be
lost (tests/test_bad_input.py shows it). This subclass delivers them first, then closes as before.
"""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class LosslessWebSocketProtocol(WebSocketsSansIOProtocol):
    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self.handle_events()  # everything parsed before a protocol error reaches the app
        if self.conn.parser_exc is not None:
            self.handle_parser_exception()
