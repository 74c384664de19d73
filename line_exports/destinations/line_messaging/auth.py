"""The bearer token of a LINE channel (LINE's ``channel-access-token.yml``).

- ``channel_access_token``: a long-lived token, used as given.
- ``stateless_token`` (preferred with a channel ID and secret): a stateless channel access token
  (``POST /oauth2/v3/token``, ``client_credentials``) issued for the run and renewed in memory
  before its 15 minutes end. It does not count against the channel's 30 short-lived tokens and
  nothing is stored.
- ``short_lived_token``: a 30-day token (``POST /v2/oauth/accessToken``). A channel holds at
  most 30, so one is cached across runs: sealed with AES-GCM (``cryptography``) under a key
  derived by HKDF from the channel secret (never the raw secret, which also signs webhooks),
  written to a unique temporary file and renamed, under a lock across processes; a cache that
  cannot be read or written costs a token issue, never the run.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from line_exports import paths
from line_exports.destination import content_key
from line_exports.destinations.line_messaging.settings import TOKEN_RENEW_BEFORE_SECONDS
from line_exports.http import ApiError, HttpClient

log = logging.getLogger(__name__)
STATELESS_RENEW_BEFORE_SECONDS = 60  # a stateless token lives 15 minutes; renew in its last one
ISSUE_PATHS = {"stateless_token": "/oauth2/v3/token", "short_lived_token": "/v2/oauth/accessToken"}


class TokenError(ApiError):
    """Issuing a token failed: the credentials, never a recipient, are at fault."""


class TokenProvider:
    """The bearer token for every call of one client (thread-safe).

    ``reissue`` replaces an issued token once per run after a 401 (then the 401 stands)."""

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
        self.cache = cache and method == "short_lived_token"
        self._token: str | None = access_token if method == "channel_access_token" else None
        self._expires = float("inf")  # monotonic time the current token should be renewed by
        self._lock = threading.Lock()
        self._issued_at = 0.0
        self.reissues = 0
        self.issued = 0
        self._old: list[str] = []
        self._entry: dict[str, Any] = {}  # the last issued token and when it expires
        self.http: HttpClient | None = None

    def secrets(self) -> tuple[str, ...]:
        return tuple(
            s for s in (self.access_token, self.client_secret, self._token, *self._old) if s
        )

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def token(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._expires:
                if self._token is not None:
                    self._old.append(self._token)
                self._token = self._cached_or_issued() if self.cache else self._issue()
            return self._token

    def begin_run(self) -> None:
        self.reissues = 0

    def reissue(self) -> None:
        """After a 401: issue a new token, once per run (then the 401 stands)."""
        if self.method == "channel_access_token":
            return
        with self._lock:
            if time.monotonic() - self._issued_at < 2:
                return  # another thread just replaced it
            if self.reissues >= 1:
                return
            self.reissues += 1
            if self._token:
                self._old.append(self._token)
            if self.cache:
                with self._locked():
                    self._token = self._issue()
                    self._store(self._entry)
            else:
                self._token = self._issue()

    def _issue(self) -> str:
        if not (self.client_id and self.client_secret):
            raise ValueError(
                f"LineMessagingResource: {self.method} needs client_id and client_secret"
            )
        assert self.http is not None
        try:
            response = self.http.request(
                "POST",
                ISSUE_PATHS[self.method],
                endpoint="token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": self.client_id,
                    "client_secret": self.client_secret,
                },
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        except ApiError as exc:
            kind = "stateless" if self.method == "stateless_token" else "short-lived"
            raise TokenError(
                f"could not issue a {kind} channel access token for channel {self.client_id}: {exc}",
                status=exc.status,
                body=exc.body,
                retryable=exc.retryable,
            ) from None
        body = response.json()
        token = str(body["access_token"])
        lifetime = int(body.get("expires_in", 0))
        self.issued += 1
        self._issued_at = time.monotonic()
        if self.method == "stateless_token":
            self._expires = self._issued_at + max(0, lifetime - STATELESS_RENEW_BEFORE_SECONDS)
        self._entry = {"token": token, "expires_at": time.time() + lifetime}
        return token

    def _cached_or_issued(self) -> str:
        """The cached token, or a new one written to the cache, under one lock across
        processes from the read to the write: processes asking at once issue one token."""
        with self._locked():
            token = self._cached()
            if token is None:
                token = self._issue()
                self._store(self._entry)
            return token

    # -- the short-lived token cache: {key: {nonce, sealed}} in the data folder ------------------
    def _cache_path(self) -> Path:
        return paths.data_dir() / "line_messaging_tokens.json"

    def _cache_key(self) -> str:
        return content_key(
            "line-short-lived",
            self.base,
            self.client_id,
            hashlib.sha256((self.client_secret or "").encode()).hexdigest(),
        )[:24]

    def _cipher(self) -> AESGCM:
        """AES-256-GCM under a key derived from the channel secret (HKDF-SHA256, bound to the
        channel and host), so the secret itself never keys anything but webhook signatures."""
        key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=f"line-exports token cache v1 {self.client_id} {self.base}".encode(),
        ).derive((self.client_secret or "").encode())
        return AESGCM(key)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock across processes (``flock`` on a sibling lock file), held by the
        caller around the cache read, the issue and the write. A lock that cannot be taken
        (an unwritable folder) is logged and the work goes on unlocked: never the run."""
        handle = None
        try:
            path = self._cache_path().with_suffix(".lock")
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = path.open("a")
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as exc:
            log.warning("could not lock the LINE token cache (%s); going on unlocked", exc)
            if handle is not None:
                handle.close()
                handle = None
        try:
            yield
        finally:
            if handle is not None:
                handle.close()  # closing the file releases the flock

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self._cache_path().read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _cached(self) -> str | None:
        """The cached token unless it expires within a day; anything unreadable is a miss.
        The caller holds :meth:`_locked`."""
        try:
            entry = self._read().get(self._cache_key())
            if not isinstance(entry, dict):
                return None
            nonce = base64.b64decode(entry["nonce"])
            plain = self._cipher().decrypt(nonce, base64.b64decode(entry["sealed"]), None)
            value = json.loads(plain)
        except (OSError, ValueError, KeyError, TypeError, InvalidTag):
            return None
        if float(value.get("expires_at", 0)) - time.time() < TOKEN_RENEW_BEFORE_SECONDS:
            return None
        self._expires = float("inf")
        return str(value["token"])

    def _store(self, value: dict[str, Any]) -> None:
        """Write this channel's entry (the caller holds :meth:`_locked`): to a unique temporary
        file renamed over the cache, so a reader sees the old or the new file, never a part.
        A failure is logged, never raised."""
        try:
            data = self._read()
            nonce = os.urandom(12)
            sealed = self._cipher().encrypt(nonce, json.dumps(value).encode(), None)
            data[self._cache_key()] = {
                "nonce": base64.b64encode(nonce).decode(),
                "sealed": base64.b64encode(sealed).decode(),
            }
            path = self._cache_path()
            fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "w") as out:  # mkstemp makes it 0600
                    json.dump(data, out)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            log.warning("could not write the LINE token cache (%s); the run goes on", exc)
