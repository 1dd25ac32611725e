"""``POST /v1/webhook/twilio``: call status callbacks and stream status callbacks.

Signature-checked with the twilio package's RequestValidator when ``TWILIO_AUTH_TOKEN`` is set (403
otherwise), scoped to the tenant of the API key in the callback URL (``?api_key=`` or basic auth).
Idempotent: a retried callback changes nothing. Stored with the call whether it arrives before,
during or after the stream; the call's status follows the highest SequenceNumber.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import KeyRing, TwilioSignature, key_from_request
from api.ingest import utc_now
from api.leases import Leases
from api.metrics import Metrics
from engine.events import CALL_STATUS
from engine.store.base import CallStore, StatusCallback

TERMINAL = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})  # a call that ended
log = logging.getLogger("mise.webhooks")

MAX_FORM_BYTES = 64 * 1024


class Webhooks:
    def __init__(
        self,
        *,
        keys: KeyRing,
        signature: TwilioSignature | None,
        metrics: Metrics,
        store: CallStore,
        publish: Callable[[list[tuple[str, dict[str, Any]]]], None] | None = None,
        leases: Leases | None = None,
    ) -> None:
        self._keys = keys
        self._signature = signature
        self._metrics = metrics
        self._store = store
        self._leases = leases
        self._publish = publish  # to the event hub, for SSE (api/events.py)

    async def __call__(self, request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return self._outcome("too_large", 413, "form over 64 KiB")
        try:
            params = dict(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False))
        except UnicodeDecodeError:
            return self._outcome("bad_request", 400, "form is not UTF-8")
        if self._signature and not self._signature.valid(request, params, request.headers.get("x-twilio-signature")):
            return self._outcome("bad_signature", 403, "X-Twilio-Signature does not match")
        tenant = self._keys.tenant_for(key_from_request(request))
        if tenant is None:
            return self._outcome("bad_key", 401, "missing or unknown API key")
        try:
            callback = parse_callback(params)
        except ValueError as exc:
            return self._outcome("bad_request", 400, str(exc))
        fresh = await run_in_threadpool(self._store.status_callback, tenant, callback)
        self._metrics.webhooks.labels("stored" if fresh else "duplicate").inc()
        if fresh and self._publish is not None:
            self._announce(tenant, callback)
        if fresh and callback.status in TERMINAL and self._leases is not None:
            # The call is over: if it still reads live but the process streaming it is gone, end it now.
            await self._leases.end_if_orphaned(tenant, callback.call_sid)
        return Response(status_code=204)

    def _announce(self, tenant: str, callback: StatusCallback) -> None:
        """A ``call.status`` event for SSE subscribers (fire-and-forget: the callback is stored already)."""
        event = {
            "type": CALL_STATUS,
            "id": f"{callback.call_sid}:status-{callback.dedup_key.replace(':', '-')}",
            "call_sid": callback.call_sid,
            "at": utc_now(),
            "status": callback.status,
            "status_at": callback.at,
            "sequence": callback.sequence,
        }
        assert self._publish is not None
        self._publish([(tenant, event)])

    def _outcome(self, outcome: str, status: int, detail: str) -> Response:
        self._metrics.webhooks.labels(outcome).inc()
        log.warning("refused a status callback: %s", detail)
        return JSONResponse({"error": outcome, "detail": detail}, status_code=status)


def parse_callback(params: dict[str, str]) -> StatusCallback:
    """A status callback from its form fields; ValueError names what is missing or wrong."""
    call_sid = params.get("CallSid", "")
    if not call_sid or len(call_sid) > 64:
        raise ValueError("CallSid is missing or too long")
    at = _iso(params.get("Timestamp"))
    if stream_event := params.get("StreamEvent"):
        key = f"stream:{params.get('StreamSid', '')}:{stream_event}"
        return StatusCallback(call_sid, params.get("AccountSid", ""), stream_event, at, None, key, params)
    status = params.get("CallStatus")
    if not status:
        raise ValueError("neither CallStatus nor StreamEvent is present")
    raw_seq = params.get("SequenceNumber")
    if raw_seq is not None and not (raw_seq.isascii() and raw_seq.isdigit() and len(raw_seq) <= 12):
        raise ValueError(f"SequenceNumber {raw_seq[:20]!r} is not a non-negative integer")
    sequence = int(raw_seq) if raw_seq is not None else None
    key = f"seq:{sequence}" if sequence is not None else f"status:{status}"
    return StatusCallback(call_sid, params.get("AccountSid", ""), status, at, sequence, key, params)


def _iso(rfc2822: str | None) -> str:
    if rfc2822:
        try:
            return (
                parsedate_to_datetime(rfc2822).astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            )
        except (TypeError, ValueError, OverflowError):
            pass
    return utc_now()
