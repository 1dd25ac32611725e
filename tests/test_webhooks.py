"""Status callbacks and signed streams against a server with a Twilio auth token configured.

Signatures are made with the twilio package's own RequestValidator, as Twilio makes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator
from websockets.exceptions import InvalidStatus

from api.simulate import load_jsonl, play, with_fresh_sids
from tests.support import API_KEY, OTHER_KEY, Server, metric_delta

pytestmark = pytest.mark.integration

TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = "https://mise.example.com"  # what Twilio calls; the server sits behind a proxy
validator = RequestValidator(TOKEN)


@pytest.fixture(scope="module")
def server(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server.start(
        ray_address, tmp_path_factory.mktemp("signed"), TWILIO_AUTH_TOKEN=TOKEN, MISE_PUBLIC_URL=PUBLIC
    ) as srv:
        yield srv


def callback(call_sid: str, seq: int, status: str, **extra: str) -> dict[str, str]:
    return {
        "CallSid": call_sid,
        "AccountSid": "AC" + "0" * 32,
        "From": "+15550100",
        "To": "+15550199",
        "CallStatus": status,
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
        "Timestamp": format_datetime(datetime(2026, 11, 24, 10, 0, seq, tzinfo=UTC)),
        "SequenceNumber": str(seq),
        "CallbackSource": "call-progress-events",
        **extra,
    }


def post(server: Server, form: dict[str, str], *, key: str = API_KEY, signature: str | None = None) -> httpx.Response:
    path = f"/v1/webhook/twilio?api_key={key}"
    sig = signature if signature is not None else validator.compute_signature(PUBLIC + path, form)
    return httpx.post(server.http + path, data=form, headers={"X-Twilio-Signature": sig}, timeout=10)


def test_signed_callbacks_are_accepted_and_wrong_ones_get_403(server: Server) -> None:
    before = server.metrics()
    sid = "CA" + "1" * 32
    assert post(server, callback(sid, 0, "initiated")).status_code == 204
    forged = post(server, callback(sid, 1, "completed"), signature="bm90IGEgc2lnbmF0dXJl")
    assert forged.status_code == 403
    tampered_sig = validator.compute_signature(
        PUBLIC + f"/v1/webhook/twilio?api_key={API_KEY}", callback(sid, 1, "ringing")
    )
    assert post(server, callback(sid, 1, "completed"), signature=tampered_sig).status_code == 403
    unsigned = httpx.post(server.http + f"/v1/webhook/twilio?api_key={API_KEY}", data=callback(sid, 1, "x"), timeout=10)
    assert unsigned.status_code == 403
    after = server.metrics()
    assert metric_delta(before, after, 'mise_webhooks_total{outcome="bad_signature"}') == 3
    assert metric_delta(before, after, 'mise_webhooks_total{outcome="stored"}') == 1
    assert server.wait_call(sid)["status"] == "initiated"


def test_out_of_order_and_retried_callbacks_end_in_the_right_status(server: Server) -> None:
    sid = "CA" + "2" * 32
    for seq, status in [(3, "completed"), (0, "initiated"), (2, "in-progress"), (2, "in-progress"), (1, "ringing")]:
        extra = {"CallDuration": "57"} if status == "completed" else {}
        assert post(server, callback(sid, seq, status, **extra)).status_code == 204
    call = server.wait_call(sid)
    assert call["status"] == "completed" and call["call_duration_s"] == 57
    assert [(e["sequence"], e["status"]) for e in call["lifecycle"]] == [
        (0, "initiated"),
        (1, "ringing"),
        (2, "in-progress"),
        (3, "completed"),
    ]
    assert call["lifecycle"][0]["at"] == "2026-11-24T10:00:00.000Z"
    assert (call["from"], call["to"], call["direction"]) == ("+15550100", "+15550199", "inbound")


def test_callbacks_before_during_and_after_the_stream_land_on_one_call(server: Server, synthetic_capture: Path) -> None:
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    sid = messages[1]["start"]["callSid"]
    assert post(server, callback(sid, 0, "initiated")).status_code == 204  # before
    ws_path = "/v1/stream/twilio"
    signature = validator.compute_signature("wss://mise.example.com" + ws_path, {})

    async def stream() -> Any:
        async def during() -> None:
            await asyncio.sleep(0.3)
            await asyncio.to_thread(post, server, callback(sid, 1, "in-progress"))

        result, _ = await asyncio.gather(
            play(server.ws, messages, speed=20, headers={"X-Twilio-Signature": signature}), during()
        )
        return result

    result = asyncio.run(stream())
    assert result.close_code == 1000
    assert post(server, callback(sid, 2, "completed", CallDuration="57")).status_code == 204  # after
    call = server.wait_call(sid)
    assert call["status"] == "completed" and call["end_reason"] == "stop"
    assert [e["status"] for e in call["lifecycle"]] == ["initiated", "in-progress", "completed"]
    assert call["tracks"]["inbound"]["duration_ms"] == 56660


def test_stream_handshake_without_a_valid_signature_is_refused(server: Server, synthetic_capture: Path) -> None:
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    before = server.metrics()

    async def attempt(headers: dict[str, str]) -> int:
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(server.ws, additional_headers=headers):
                pass
        return int(info.value.response.status_code)

    wrong_url = validator.compute_signature("wss://evil.example.com/v1/stream/twilio", {})
    assert asyncio.run(attempt({})) == 403
    assert asyncio.run(attempt({"X-Twilio-Signature": wrong_url})) == 403
    assert metric_delta(before, server.metrics(), 'mise_connections_rejected_total{reason="bad_signature"}') == 2
    assert server.get(f"/v1/calls/{messages[1]['start']['callSid']}").status_code == 404


def test_callbacks_need_a_key_and_stay_in_their_tenant(server: Server) -> None:
    sid = "CA" + "3" * 32
    assert post(server, callback(sid, 0, "ringing"), key="unknown-key-123").status_code == 401
    assert post(server, callback(sid, 0, "ringing"), key=OTHER_KEY).status_code == 204
    assert server.get(f"/v1/calls/{sid}").status_code == 404
    assert server.get(f"/v1/calls/{sid}", key=OTHER_KEY).json()["status"] == "ringing"


def test_malformed_callbacks_get_400(server: Server) -> None:
    assert post(server, {"CallStatus": "ringing"}).status_code == 400
    bad_seq = callback("CA" + "4" * 32, 0, "ringing", SequenceNumber="first")
    assert post(server, bad_seq).status_code == 400


def test_stream_status_callbacks(server: Server) -> None:
    sid = "CA" + "5" * 32
    form = {
        "CallSid": sid,
        "AccountSid": "AC1",
        "StreamSid": "MZ1",
        "StreamEvent": "stream-error",
        "StreamError": "boom",
        "Timestamp": format_datetime(datetime(2026, 11, 24, tzinfo=UTC)),
    }
    assert post(server, form).status_code == 204
    assert post(server, form).status_code == 204  # retried: stored once
    call = server.wait_call(sid)
    assert [e["status"] for e in call["lifecycle"]] == ["stream-error"]
