"""uvicorn's default WebSocket protocol, minus a way to lose audio, and with reads paused less often.

In uvicorn's sans-I/O WebSocket protocol, when one read from the socket holds good messages followed
by a frame the parser refuses (e.g. over ``ws_max_size``), ``data_received`` sees the parser error
and closes without handing the app the good messages parsed just before it: accepted audio would be
lost (tests/test_bad_input.py shows it). This subclass delivers them first, then closes as before.

uvicorn also pauses reading the socket after every message it queues for the app and resumes once
the app has taken it: two epoll changes per 20 ms media message, a visible share of the API process's
CPU under many calls. Here reading pauses only once ``QUEUE_HIGH`` messages wait, and resumes when
the app has taken them all: backpressure stays, bounded at ``QUEUE_HIGH`` messages per socket.
"""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

QUEUE_HIGH = 32  # messages queued for the app before reading pauses (~10 KB of media messages)


class LosslessWebSocketProtocol(WebSocketsSansIOProtocol):
    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self.handle_events()  # everything parsed before a protocol error reaches the app
        if self.conn.parser_exc is not None:
            self.handle_parser_exception()

    def send_receive_event_to_app(self) -> None:
        paused = self.read_paused
        self.read_paused = True  # the parent pauses reading unless it is paused already: it is not told
        super().send_receive_event_to_app()
        self.read_paused = paused
        if not paused and self.queue.qsize() >= QUEUE_HIGH:
            self.read_paused = True
            self.transport.pause_reading()
