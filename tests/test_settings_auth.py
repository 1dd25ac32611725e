"""Settings from MISE_* variables, API keys, Twilio signatures (real RequestValidator)."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from twilio.request_validator import RequestValidator

from api.auth import KeyRing, TwilioSignature, key_from_request
from api.settings import ConfigError, Settings


def test_defaults_and_overrides() -> None:
    s = Settings.from_env({"MISE_API_KEYS": "k-000000001:acme, k-000000002:globex", "MISE_CALLS_PER_ACTOR": "1"})
    assert s.api_keys == {"k-000000001": "acme", "k-000000002": "globex"}
    assert s.calls_per_actor == 1 and s.port == 8000 and s.ring_seconds == 60.0
    assert s.analysis().speaker_baseline  # emotion scored against each speaker's own voice by default
    assert not Settings.from_env({"MISE_EMOTION_PER_SPEAKER": "0"}).analysis().speaker_baseline


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MISE_PORT": "eighty"}, "MISE_PORT"),
        ({"MISE_CALLS_PER_ACTOR": "0"}, "MISE_CALLS_PER_ACTOR"),
        ({"MISE_RING_SECONDS": "x"}, "MISE_RING_SECONDS"),
        ({"MISE_EMOTION_PER_SPEAKER": "maybe"}, "MISE_EMOTION_PER_SPEAKER"),
        ({"MISE_API_KEYS": "justakey"}, "MISE_API_KEYS"),
        ({"MISE_API_KEYS": "short:acme"}, "MISE_API_KEYS"),
        ({"MISE_API_KEYS_FILE": "/nonexistent/keys"}, "MISE_API_KEYS_FILE"),
    ],
)
def test_a_wrong_value_names_its_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)


def test_key_file(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "keys"  # type: ignore[operator]
    path.write_text("# production keys\nkey-aaaaaaaa:acme\n\nkey-bbbbbbbb:globex\n")
    assert Settings.from_env({"MISE_API_KEYS_FILE": str(path)}).api_keys == {
        "key-aaaaaaaa": "acme",
        "key-bbbbbbbb": "globex",
    }


def test_keyring() -> None:
    ring = KeyRing({"key-aaaaaaaa": "acme", "key-bbbbbbbb": "globex"})
    assert ring.tenant_for("key-aaaaaaaa") == "acme" and ring.tenant_for("key-bbbbbbbb") == "globex"
    assert ring.tenant_for("key-aaaaaaab") is None and ring.tenant_for("") is None and ring.tenant_for(None) is None


def request(url: str, headers: dict[str, str] | None = None) -> Request:
    scheme, rest = url.split("://")
    host, _, path_q = rest.partition("/")
    path, _, query = ("/" + path_q).partition("?")
    raw = [(k.lower().encode(), v.encode()) for k, v in {"host": host, **(headers or {})}.items()]
    return Request(
        {
            "type": "http",
            "scheme": scheme,
            "server": (host, 80),
            "path": path,
            "query_string": query.encode(),
            "headers": raw,
        }
    )


def test_key_from_bearer_basic_and_query() -> None:
    assert key_from_request(request("http://h/x", {"Authorization": "Bearer abc"})) == "abc"
    assert (
        key_from_request(request("http://h/x", {"Authorization": "Basic dXNlcjpzZWNyZXQ="})) == "secret"
    )  # user:secret
    assert key_from_request(request("http://h/x?api_key=q1")) == "q1"
    assert key_from_request(request("http://h/x")) is None


def test_signature_behind_a_proxy() -> None:
    """Twilio signed the public https URL; the server sees plain http on another host and port."""
    token = "twilio-auth-token-123"
    params = {"CallSid": "CA1", "CallStatus": "ringing"}
    public = "https://mise.example.com/v1/webhook/twilio?api_key=k"
    signature = RequestValidator(token).compute_signature(public, params)
    behind_proxy = request("http://10.0.0.5:8000/v1/webhook/twilio?api_key=k")
    assert TwilioSignature(token, "https://mise.example.com").valid(behind_proxy, params, signature)
    assert not TwilioSignature(token, None).valid(behind_proxy, params, signature)
    assert not TwilioSignature(token, "https://mise.example.com").valid(
        behind_proxy, params | {"CallStatus": "busy"}, signature
    )
    assert not TwilioSignature("another-token", "https://mise.example.com").valid(behind_proxy, params, signature)


def test_websocket_signature_with_wss_url() -> None:
    token = "twilio-auth-token-123"
    signature = RequestValidator(token).compute_signature("wss://mise.example.com/v1/stream/twilio", {})
    seen = request("http://127.0.0.1:9000/v1/stream/twilio")
    assert TwilioSignature(token, "https://mise.example.com").valid(seen, {}, signature)
