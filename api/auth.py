"""API keys (key -> tenant) and Twilio request signatures.

Keys are compared in constant time against every configured key (no early exit, so timing tells
nothing about which key or how much of it matched), and never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from starlette.requests import HTTPConnection
from twilio.request_validator import RequestValidator


class KeyRing:
    def __init__(self, keys: Mapping[str, str]) -> None:
        self._entries = [(hashlib.sha256(k.encode()).digest(), tenant) for k, tenant in keys.items()]

    def __bool__(self) -> bool:
        return bool(self._entries)

    def tenant_for(self, key: str | None) -> str | None:
        if not key:
            return None
        digest = hashlib.sha256(key.encode(errors="surrogatepass")).digest()
        found: str | None = None
        for candidate, tenant in self._entries:
            if hmac.compare_digest(digest, candidate):
                found = tenant
        return found


def key_from_request(conn: HTTPConnection) -> str | None:
    """``Authorization: Bearer K``, HTTP Basic (password, or user if no password: Twilio puts
    credentials in callback URLs), or ``?api_key=K``."""
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return password or user
    return conn.query_params.get("api_key")


class TwilioSignature:
    """Checks ``X-Twilio-Signature`` with the twilio package's RequestValidator.

    Twilio signs the URL *it* called. Behind a proxy the server sees another scheme, host or port, so
    the public base URL is configurable; and since ws/wss vs http/https and a trailing slash are known
    traps, the equivalent spellings of that one URL are all tried.
    """

    def __init__(self, auth_token: str, public_url: str | None) -> None:
        self._validator = RequestValidator(auth_token)
        self._public = public_url

    def valid(self, conn: HTTPConnection, params: Mapping[str, str], signature: str | None) -> bool:
        if not signature:
            return False
        return any(self._validator.validate(url, dict(params), signature) for url in self._candidates(conn))

    def _candidates(self, conn: HTTPConnection) -> list[str]:
        url = urlsplit(str(conn.url))
        if self._public:
            base = urlsplit(self._public)
            url = url._replace(scheme=base.scheme, netloc=base.netloc, path=base.path.rstrip("/") + url.path)
        secure = url.scheme in ("https", "wss")
        schemes = ("wss", "https") if secure else ("ws", "http")
        paths = {url.path, url.path.rstrip("/"), url.path.rstrip("/") + "/"}
        return [urlunsplit(url._replace(scheme=s, path=p)) for s in schemes for p in sorted(paths)]
