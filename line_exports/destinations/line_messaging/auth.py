"""The bearer token of a LINE channel: a long-lived one as given, or a short-lived one issued.

Follows LINE's ``channel-access-token.yml`` (``POST /v2/oauth/accessToken``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from typing import Any

from line_exports import paths
from line_exports.destination import content_key
from line_exports.destinations.line_messaging.settings import TOKEN_RENEW_BEFORE_SECONDS
from line_exports.http import ApiError, HttpClient


class TokenError(ApiError):
    """Issuing a short-lived token failed: the credentials, never a recipient, are at fault."""


def _keystream(secret: str, nonce: bytes, length: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        out += hmac.new(
            secret.encode(), nonce + counter.to_bytes(4, "big"), hashlib.sha256
        ).digest()
        counter += 1
    return out[:length]


class TokenProvider:
    """The bearer token: a long-lived one as given, or a short-lived one issued and reused.

    A channel holds at most 30 short-lived tokens (30 days each), so one issued token is cached
    (sealed with the channel secret, file mode 0600) and reused until a day before it expires,
    instead of issuing one per run. ``reissue`` replaces it once per run after a 401.
    """

    def __init__(
        self,
        http_base: str,
        method: str,
        access_token: str | None,
        client_id: str | None,
        client_secret: str | None,
        cache: bool,
    ) -> None:
        self.base = http_base
        self.method = method
        self.access_token = access_token
        self.client_id = client_id
        self.client_secret = client_secret
        self.cache = cache
        self._token: str | None = access_token if method == "channel_access_token" else None
        self._lock = threading.Lock()
        self._issued_at = 0.0
        self.reissues = 0
        self.issued = 0
        self._old: list[str] = []
        self.http: HttpClient | None = None

    def secrets(self) -> tuple[str, ...]:
        return tuple(
            s for s in (self.access_token, self.client_secret, self._token, *self._old) if s
        )

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def token(self) -> str:
        with self._lock:
            if self._token is None:
                self._token = self._cached() or self._issue()
            return self._token

    def begin_run(self) -> None:
        self.reissues = 0

    def reissue(self) -> None:
        """After a 401: issue a new short-lived token, once per run (then the 401 stands)."""
        if self.method != "short_lived_token":
            return
        with self._lock:
            if time.monotonic() - self._issued_at < 2:
                return  # another thread just replaced it
            if self.reissues >= 1:
                return
            self.reissues += 1
            if self._token:
                self._old.append(self._token)
            self._drop_cached()
            self._token = self._issue()

    # The cache: {key: {nonce, sealed, expires_at}} in the data folder.
    def _cache_path(self) -> Any:
        return paths.data_dir() / "line_messaging_tokens.json"

    def _cache_key(self) -> str:
        return content_key(
            "line-short-lived",
            self.base,
            self.client_id,
            hashlib.sha256((self.client_secret or "").encode()).hexdigest(),
        )[:24]

    def _read_cache(self) -> dict[str, Any]:
        try:
            return json.loads(self._cache_path().read_text())
        except (OSError, ValueError):
            return {}

    def _write_cache(self, data: dict[str, Any]) -> None:
        path = self._cache_path()
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out)
        os.replace(tmp, path)

    def _cached(self) -> str | None:
        if not self.cache or not self.client_secret:
            return None
        entry = self._read_cache().get(self._cache_key())
        if (
            not entry
            or float(entry.get("expires_at", 0)) - time.time() < TOKEN_RENEW_BEFORE_SECONDS
        ):
            return None
        sealed = bytes.fromhex(entry["sealed"])
        nonce = bytes.fromhex(entry["nonce"])
        plain = bytes(
            a ^ b
            for a, b in zip(sealed, _keystream(self.client_secret, nonce, len(sealed)), strict=True)
        )
        return plain.decode()

    def _drop_cached(self) -> None:
        if self.cache:
            data = self._read_cache()
            if data.pop(self._cache_key(), None) is not None:
                self._write_cache(data)

    def _issue(self) -> str:
        if not (self.client_id and self.client_secret):
            raise ValueError(
                "LineMessagingResource: short_lived_token needs client_id and client_secret"
            )
        assert self.http is not None
        try:
            response = self.http.request(
                "POST",
                "/v2/oauth/accessToken",
                endpoint="token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": self.client_id,
                    "client_secret": self.client_secret,
                },
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        except ApiError as exc:
            raise TokenError(
                f"could not issue a short-lived channel access token for channel {self.client_id}: {exc}",
                status=exc.status,
                body=exc.body,
                retryable=exc.retryable,
            ) from None
        body = response.json()
        token = str(body["access_token"])
        self.issued += 1
        self._issued_at = time.monotonic()
        if self.cache:
            nonce = os.urandom(16)
            raw = token.encode()
            sealed = bytes(
                a ^ b
                for a, b in zip(raw, _keystream(self.client_secret, nonce, len(raw)), strict=True)
            )
            data = self._read_cache()
            data[self._cache_key()] = {
                "nonce": nonce.hex(),
                "sealed": sealed.hex(),
                "expires_at": time.time() + int(body.get("expires_in", 0)),
            }
            self._write_cache(data)
        return token
