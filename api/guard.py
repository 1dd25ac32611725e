"""Admission: what an HTTP request must pass before any route runs, and the per-key rate limits.

``Guard`` is pure ASGI middleware, for HTTP requests (the WebSocket stream has its own message limits in
``api/ingest.py``, and takes its new-stream limit from the same ``RateLimits`` once it knows the key):
- a query string over ``MAX_QUERY_BYTES`` -> 414; a body over ``max_body`` -> 413, whether it declares its
  length (refused before it is read) or comes chunked (refused once that many bytes arrived);
- search, webhook and posted-transcript requests take a token from their key's bucket, else 429 with ``Retry-After``
  (seconds). A request without a valid key takes from its client address's bucket instead (a bounded
  table), so guessing keys is rate limited too.
Every refusal is a JSON ``{"error": ...}``, counted in ``mise_requests_refused_total{reason}``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

import orjson
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import KeyRing, key_from_request
from api.metrics import Metrics

MAX_QUERY_BYTES: Final = 8192
MAX_CLIENTS: Final = 10_000  # buckets of unauthenticated clients kept (least recently used go first)
# path -> rate class; posted transcripts (/v1/calls/{call_sid}/transcripts) count as webhooks
LIMITED: Final = {"/v1/search": "search", "/v1/webhook/twilio": "webhooks", "/v1/calls/import": "webhooks"}
IMPORT_PATH: Final = "/v1/calls/import"  # a recording uploaded whole: its own body limit (max_import)


@dataclass(frozen=True)
class Rate:
    """A token bucket: ``per_s`` tokens a second, at most ``burst`` saved up. ``per_s`` 0: no limit."""

    per_s: float
    burst: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"RATE"`` or ``"RATE:BURST"`` (per second; burst defaults to twice the rate)."""
        rate, _, burst = text.partition(":")
        per_s = float(rate)
        return cls(per_s, float(burst) if burst else 2 * per_s)


class RateLimits:
    """Token buckets per (class, who); ``who`` is a key's digest or ``ip:...``."""

    def __init__(self, rates: dict[str, Rate]) -> None:
        self._rates = rates
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()  # -> (tokens, at)

    def take(self, kind: str, who: str) -> float:
        """0.0 if a request may go ahead now (a token is taken), else the seconds until one may."""
        rate = self._rates.get(kind)
        if rate is None or rate.per_s <= 0:
            return 0.0
        now = time.monotonic()
        tokens, at = self._buckets.get((kind, who), (rate.burst, now))
        tokens = min(rate.burst, tokens + (now - at) * rate.per_s)
        self._buckets[kind, who] = (tokens - 1.0 if tokens >= 1.0 else tokens, now)
        self._buckets.move_to_end((kind, who))
        while len(self._buckets) > MAX_CLIENTS:
            self._buckets.popitem(last=False)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / rate.per_s


def key_id(key: str) -> str:
    """A key's bucket name (never the key itself)."""
    return hashlib.sha256(key.encode(errors="surrogatepass")).hexdigest()[:16]


def who(conn: HTTPConnection, keys: KeyRing) -> str:
    """Whose bucket a request takes from: its key's, if the key is valid, else its client address's."""
    key = key_from_request(conn)
    if key is not None and keys.tenant_for(key) is not None:
        return key_id(key)
    return "ip:" + (conn.client.host if conn.client else "?")


class _TooLarge(BaseException):
    """Raised out of a route's body read: a BaseException, so a route's own ``except Exception`` (answering
    503, say) lets it through to ``Guard``, which answers 413."""


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: KeyRing,
        limits: RateLimits,
        metrics: Metrics,
        max_body: int,
        max_import: int = 256 << 20,
    ) -> None:
        self.app, self._keys, self._limits, self._metrics, self._max_body = app, keys, limits, metrics, max_body
        self._max_import = max_import

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if len(scope.get("query_string", b"")) > MAX_QUERY_BYTES:
            return await self._refuse(send, 414, "query_too_long", f"the query string is over {MAX_QUERY_BYTES} bytes")
        path = scope["path"].rstrip("/")
        max_body = self._max_import if path == IMPORT_PATH else self._max_body  # a whole recording
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_body):
            return await self._refuse(send, 413, "body_too_large", f"the body is over {max_body} bytes")
        kind = LIMITED.get(path) or ("webhooks" if path.endswith("/transcripts") else None)
        if kind is not None:
            wait = self._limits.take(kind, who(HTTPConnection(scope), self._keys))
            if wait > 0:
                retry = str(max(1, math.ceil(wait)))
                return await self._refuse(send, 429, "rate_limited", f"too many {kind} requests", retry)
        started, seen = False, 0

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_body:
                    raise _TooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if started:
                raise
            await self._refuse(send, 413, "body_too_large", f"the body is over {max_body} bytes")

    async def _refuse(self, send: Send, status: int, reason: str, error: str, retry_after: str | None = None) -> None:
        self._metrics.requests_refused.labels(reason).inc()
        headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
        if retry_after is not None:
            headers.append((b"retry-after", retry_after.encode()))
        body = orjson.dumps({"error": error})
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
