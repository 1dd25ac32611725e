"""Every route against two tenants, rate limits, size limits, /metrics access and CORS, on real servers.

The route table must name every route the app has: a new route without a row here fails
``test_the_table_covers_every_route``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from api.app import create_app
from api.settings import Settings
from tests.support import API_KEY, OTHER_KEY, Server, free_port, send_paced
from tests.test_webhooks import callback

pytestmark = pytest.mark.integration
NO_KEY = ""
BAD_KEY = "not-a-key-at-all"


@pytest.fixture(scope="module")
def acme_call(server: Server, synthetic_capture: Path) -> str:
    """A finished call of tenant acme (the first 15 s of the synthetic dialogue), searchable."""
    from api.simulate import load_jsonl, with_fresh_sids

    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    call_sid = messages[1]["start"]["callSid"]

    async def run() -> None:
        async with websockets.connect(server.ws) as ws:
            await send_paced(ws, [*messages[:1502], messages[-1]], 50.0)
            await asyncio.wait_for(ws.wait_closed(), 30)

    asyncio.run(run())
    server.wait_call(call_sid)
    return call_sid


def request(server: Server, method: str, path: str, key: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if path.endswith("events"):  # SSE: the status and headers, then hang up
        with httpx.stream(method, server.http + path, headers=headers, timeout=10, **kw) as r:
            return r
    return httpx.request(method, server.http + path, headers=headers, timeout=10, **kw)


def mentions(sid: str, r: httpx.Response) -> bool:
    return sid in r.text


def lacks(sid: str, r: httpx.Response) -> bool:
    return sid not in r.text


# (method, route, concrete path, key, status, check(sid, response) or None); {sid} is acme's call.
ROWS: list[tuple[str, str, str, str, int, Any]] = [
    ("GET", "/v1/calls", "/v1/calls", API_KEY, 200, mentions),
    ("GET", "/v1/calls", "/v1/calls", OTHER_KEY, 200, lacks),
    ("GET", "/v1/calls", "/v1/calls", NO_KEY, 401, None),
    ("GET", "/v1/calls", "/v1/calls", BAD_KEY, 401, None),
    ("GET", "/v1/calls/{call_sid}", "/v1/calls/{sid}", API_KEY, 200, mentions),
    ("GET", "/v1/calls/{call_sid}", "/v1/calls/{sid}", OTHER_KEY, 404, lacks),
    ("GET", "/v1/calls/{call_sid}", "/v1/calls/{sid}", NO_KEY, 401, None),
    ("GET", "/v1/calls/{call_sid}/turns", "/v1/calls/{sid}/turns", API_KEY, 200, mentions),
    ("GET", "/v1/calls/{call_sid}/turns", "/v1/calls/{sid}/turns", OTHER_KEY, 404, lacks),
    ("GET", "/v1/calls/{call_sid}/turns", "/v1/calls/{sid}/turns", BAD_KEY, 401, None),
    ("GET", "/v1/calls/{call_sid}/events", "/v1/calls/{sid}/events", API_KEY, 200, None),
    ("GET", "/v1/calls/{call_sid}/events", "/v1/calls/{sid}/events", OTHER_KEY, 404, None),
    ("GET", "/v1/calls/{call_sid}/events", "/v1/calls/{sid}/events", NO_KEY, 401, None),
    # Posted transcripts: acme's call found (then its empty body refused); another tenant's is not there.
    ("POST", "/v1/calls/{call_sid}/transcripts", "/v1/calls/{sid}/transcripts", API_KEY, 400, None),
    ("POST", "/v1/calls/{call_sid}/transcripts", "/v1/calls/{sid}/transcripts", OTHER_KEY, 404, lacks),
    ("POST", "/v1/calls/{call_sid}/transcripts", "/v1/calls/{sid}/transcripts", NO_KEY, 401, None),
    ("GET", "/v1/calls/{call_sid}/audio", "/v1/calls/{sid}/audio", API_KEY, 200, lambda _, r: r.content[:4] == b"RIFF"),
    ("GET", "/v1/calls/{call_sid}/audio", "/v1/calls/{sid}/audio", OTHER_KEY, 404, lacks),
    ("GET", "/v1/calls/{call_sid}/audio", "/v1/calls/{sid}/audio", NO_KEY, 401, None),
    # Erasure by acme itself: tests/test_erasure.py (here the call must stay for the other rows).
    ("DELETE", "/v1/calls/{call_sid}", "/v1/calls/{sid}", OTHER_KEY, 404, lacks),
    ("DELETE", "/v1/calls/{call_sid}", "/v1/calls/{sid}", NO_KEY, 401, None),
    ("DELETE", "/v1/calls/{call_sid}", "/v1/calls/{sid}", BAD_KEY, 401, None),
    # Imports by acme itself: tests/test_import.py. Here: no key, and a body that is no recording.
    ("POST", "/v1/calls/import", "/v1/calls/import", NO_KEY, 401, None),
    ("POST", "/v1/calls/import", "/v1/calls/import", BAD_KEY, 401, None),
    ("POST", "/v1/calls/import", "/v1/calls/import", OTHER_KEY, 400, None),
    ("GET", "/v1/events", "/v1/events", API_KEY, 200, None),
    ("GET", "/v1/events", "/v1/events", BAD_KEY, 401, None),
    ("GET", "/v1/search", "/v1/search?call_sid={sid}", API_KEY, 200, mentions),
    ("GET", "/v1/search", "/v1/search?call_sid={sid}", OTHER_KEY, 200, lacks),
    ("POST", "/v1/search", "/v1/search", NO_KEY, 401, None),
    ("GET", "/healthz", "/healthz", NO_KEY, 200, None),  # open: for load balancers
    ("GET", "/metrics", "/metrics", NO_KEY, 401, None),  # operator data: a key (or a port of its own)
    ("GET", "/metrics", "/metrics", BAD_KEY, 401, None),
    ("GET", "/metrics", "/metrics", API_KEY, 200, lambda _, r: "mise_frames_received_total" in r.text),
    ("GET", "/", "/", NO_KEY, 200, lambda _, r: "<html" in r.text.lower()),  # the dashboard asks for its key
]


@pytest.mark.parametrize(("method", "route", "path", "key", "status", "check"), ROWS)
def test_every_route_for_two_tenants(
    server: Server, acme_call: str, method: str, route: str, path: str, key: str, status: int, check: Any
) -> None:
    r = request(server, method, path.format(sid=acme_call), key)
    assert r.status_code == status, (route, key, r.status_code)
    if check is not None:
        assert check(acme_call, r), (route, key)


def test_webhooks_and_streams_stay_in_their_tenant(server: Server, acme_call: str) -> None:
    for key, status, call_status in (
        (API_KEY, 204, "completed"),
        (OTHER_KEY, 204, "no-answer"),
        (BAD_KEY, 401, "busy"),
        (NO_KEY, 401, "busy"),
    ):
        query = {"api_key": key} if key else {}
        r = httpx.post(server.http + "/v1/webhook/twilio", params=query, data=callback(acme_call, 9, call_status))
        assert r.status_code == status, (key, r.text)
    # globex's callback for the same SID is globex's own call: acme's record is acme's.
    assert server.get(f"/v1/calls/{acme_call}").json()["status"] == "completed"
    assert server.get(f"/v1/calls/{acme_call}", key=OTHER_KEY).json()["status"] == "no-answer"

    async def handshake(key: str) -> int:
        try:
            async with websockets.connect(server.ws + f"?api_key={key}"):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(handshake(BAD_KEY)) == 403
    assert asyncio.run(handshake(API_KEY)) == 101


def test_the_table_covers_every_route() -> None:
    app = create_app(Settings(api_keys={API_KEY: "acme"}))
    routes = {getattr(r, "path", "") or "/" for r in app.routes}  # the dashboard's mount is "/"
    tested = {row[1] for row in ROWS} | {"/v1/webhook/twilio", "/v1/stream/twilio"}
    assert routes == tested, routes ^ tested


def test_sizes_are_limited_on_every_route(server: Server) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    big = b"x" * (64 * 1024 + 1)
    for path in ("/v1/search", "/v1/webhook/twilio", "/v1/calls", "/healthz"):
        r = httpx.post(server.http + path, content=big, headers=headers)
        assert r.status_code == 413 and "body" in r.json()["error"], path

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b"y" * 4096

    r = httpx.post(server.http + "/v1/search", content=chunks(), headers=headers)
    assert r.status_code == 413
    r = httpx.get(server.http + "/v1/calls", params={"q": "z" * 9000}, headers=headers)
    assert r.status_code == 414
    assert httpx.post(server.http + "/v1/search", json={"text": "hello"}, headers=headers).status_code == 200


def test_cors_is_off_by_default(server: Server) -> None:
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    r = httpx.options(server.http + "/v1/calls", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    r = httpx.get(
        server.http + "/v1/calls", headers={"Origin": "https://evil.example", "Authorization": f"Bearer {API_KEY}"}
    )
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


@pytest.fixture(scope="module")
def strict(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Low limits, one allowed browser origin, a key of its own for /metrics."""
    with Server.start(
        ray_address,
        tmp_path_factory.mktemp("strict"),
        MISE_RATE_SEARCH="1:2",
        MISE_RATE_WEBHOOKS="1:2",
        MISE_RATE_STREAMS="0.2:1",
        MISE_CORS_ORIGINS="https://app.example",
        MISE_METRICS_KEY="scrape-key-0123",
    ) as srv:
        yield srv


def test_rate_limits_are_per_key_with_retry_after(strict: Server) -> None:
    def search(key: str) -> httpx.Response:
        return httpx.get(strict.http + "/v1/search", headers={"Authorization": f"Bearer {key}"})

    codes = [search(API_KEY).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    limited = search(API_KEY)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert search(OTHER_KEY).status_code == 200  # another key has its own bucket
    hooks = [
        httpx.post(strict.http + "/v1/webhook/twilio", params={"api_key": API_KEY}, data=callback("CAx", i, "ringing"))
        for i in range(3)
    ]
    assert [h.status_code for h in hooks] == [204, 204, 429] and "retry-after" in hooks[2].headers
    guesses = [search(f"guess-{i:08d}").status_code for i in range(3)]  # wrong keys: the address's bucket
    assert guesses == [401, 401, 429]

    async def handshake() -> tuple[int, str | None]:
        try:
            async with websockets.connect(strict.ws + f"?api_key={API_KEY}"):
                return 101, None
        except InvalidStatus as exc:
            return exc.response.status_code, exc.response.headers.get("retry-after")

    assert asyncio.run(handshake())[0] == 101
    status, retry = asyncio.run(handshake())
    assert status == 429 and retry is not None and int(retry) >= 1
    metrics = httpx.get(strict.http + "/metrics", headers={"Authorization": "Bearer scrape-key-0123"}).text
    assert 'mise_requests_refused_total{reason="rate_limited"} 4.0' in metrics
    assert 'mise_connections_rejected_total{reason="rate_limited"} 1.0' in metrics


def test_metrics_answer_their_own_key_and_cors_its_origin(strict: Server) -> None:
    assert httpx.get(strict.http + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 401
    assert httpx.get(strict.http + "/metrics", params={"api_key": "scrape-key-0123"}).status_code == 200
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    ok = httpx.options(strict.http + "/v1/calls", headers={"Origin": "https://app.example", **preflight})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
    other = httpx.options(strict.http + "/v1/calls", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers


def test_metrics_on_a_port_of_their_own(ray_address: str, tmp_path: Path) -> None:
    port = free_port()
    with Server.start(ray_address, tmp_path, MISE_METRICS_PORT=str(port)) as srv:
        main = httpx.get(srv.http + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
        assert main.status_code == 404 and str(port) in main.json()["error"]
        alone = httpx.get(f"http://127.0.0.1:{port}/metrics")
        assert alone.status_code == 200 and "mise_live_calls" in alone.text
        assert httpx.get(f"http://127.0.0.1:{port}/v1/calls").status_code == 404
