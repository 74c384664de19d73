"""Sandbox state shared by every destination's fake API: tokens, rate limits, faults, a log.

The sandbox is as strict as the real APIs (same paths, auth, limits, status codes) so a test
that passes against it would pass against the real service. Rate limits default to the real
ones; ``rate_scale`` multiplies them for tests and benchmarks (e.g. 100 lets MAAC take 1,500
imports a minute instead of 15).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

# Tokens the sandbox accepts out of the box; resources use them when no token is configured.
DEFAULT_TOKENS: dict[str, set[str]] = {
    "maac": {"sandbox-maac-token"},
    "line_messaging": {"sandbox-line-channel-token"},
    "line_conversion": {"sandbox-capi-token"},
    "linkedin": {"sandbox-linkedin-token"},
}


def instance_proof(instance_token: str, challenge: str) -> str:
    """What a sandbox answers to ``GET /_sandbox/health?challenge=...``: HMAC-SHA256 of the
    challenge under its per-instance token. Only the process that started the sandbox (and
    wrote the token to the data folder, owner-only) can check it, so a stranger listening on
    the sandbox's port cannot pass for it (and the token itself never crosses the wire)."""
    return hmac.new(instance_token.encode(), challenge.encode(), hashlib.sha256).hexdigest()


@dataclass
class Fault:
    """A fault to inject on requests whose path starts with ``path`` (and match ``method``).

    ``status`` answers with that code (``retry_after`` adds the header); ``delay`` sleeps
    before answering (a slow API or a timeout); ``drop`` cuts the connection mid-response;
    ``lose_answer`` lets the API act on the request, then cuts the connection before its answer
    arrives (the client cannot tell whether the request took effect); ``act`` with ``status``
    lets the API act on the request, then answers ``status`` instead of its own answer (a 5xx
    after acting: "even if you get such error, there is a possibility that your message was
    delivered", LINE's "Retry failed API requests").
    ``times`` is how many requests it hits before it is spent (-1 = until removed).
    """

    path: str
    method: str | None = None
    status: int | None = None
    delay: float = 0.0
    drop: bool = False
    lose_answer: bool = False
    act: bool = False
    retry_after: float | None = None
    times: int = 1
    body: str = ""
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return path.startswith(self.path) and (self.method is None or self.method.upper() == method)


@dataclass
class LoggedRequest:
    """What the sandbox saw of one request (never its auth header)."""

    method: str
    path: str
    status: int
    at: float
    body_bytes: int


class Sandbox:
    """All state of one sandbox server; destination modules keep theirs in ``stores``."""

    def __init__(
        self,
        *,
        rate_scale: float = 1.0,
        tokens: dict[str, set[str]] | None = None,
        job_seconds: float = 0.05,
        instance_token: str | None = None,
    ) -> None:
        self.rate_scale = rate_scale
        self.instance_token = instance_token or secrets.token_urlsafe(32)
        self.tokens = {k: set(v) for k, v in (tokens or DEFAULT_TOKENS).items()}
        for kind, defaults in DEFAULT_TOKENS.items():
            self.tokens.setdefault(kind, set(defaults))
        self.job_seconds = job_seconds  # how long an asynchronous job stays pending/processing
        self.lock = threading.RLock()
        self.faults: list[Fault] = []
        self.requests: list[LoggedRequest] = []
        self.stores: dict[str, Any] = {}
        self._factories: dict[str, Any] = {}
        self._windows: dict[str, deque[float]] = {}
        self.rate_limited = 0

    # -- faults ---------------------------------------------------------------------------
    def add_fault(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def take_fault(self, method: str, path: str) -> Fault | None:
        """The first live fault for this request, counted as used."""
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path) and (fault.times < 0 or fault.hits < fault.times):
                    fault.hits += 1
                    return fault
        return None

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    # -- rate limits ----------------------------------------------------------------------
    def over_limit(self, key: str, requests: int, per_seconds: float) -> float | None:
        """Count a call against ``requests`` per ``per_seconds`` (scaled); seconds to wait if over."""
        allowed = max(1, int(requests * self.rate_scale))
        with self.lock:
            now = time.monotonic()
            window = self._windows.setdefault(key, deque())
            while window and now - window[0] >= per_seconds:
                window.popleft()
            if len(window) >= allowed:
                self.rate_limited += 1
                return per_seconds - (now - window[0])
            window.append(now)
            return None

    def too_many(
        self, key: str, requests: int, per_seconds: float, body: dict[str, Any]
    ) -> Response | None:
        """A 429 answer when the call is over its limit, else None."""
        wait = self.over_limit(key, requests, per_seconds)
        if wait is None:
            return None
        return JSONResponse(
            body, status_code=429, headers={"Retry-After": str(max(1, int(wait + 0.999)))}
        )

    # -- auth -----------------------------------------------------------------------------
    def bearer_ok(self, request: Request, kind: str) -> bool:
        header = request.headers.get("authorization", "")
        return header.startswith("Bearer ") and header[7:] in self.tokens.get(kind, set())

    # -- log ------------------------------------------------------------------------------
    def log(self, method: str, path: str, status: int, body_bytes: int) -> None:
        with self.lock:
            self.requests.append(LoggedRequest(method, path, status, time.time(), body_bytes))

    def count(
        self, method: str | None = None, path_prefix: str = "", status: int | None = None
    ) -> int:
        """How many logged requests match (for tests and benchmarks)."""
        with self.lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method)
                and r.path.startswith(path_prefix)
                and (status is None or r.status == status)
            )

    def store(self, name: str, factory: Any) -> Any:
        """The named destination store, created by ``factory()`` on first use."""
        with self.lock:
            if name not in self.stores:
                self.stores[name] = factory()
                self._factories[name] = factory
            return self.stores[name]

    def reset(self) -> None:
        """Forget everything received: faults, the request log, rate windows and every store.

        Stores are emptied in place (made fresh by their own factory): the routes of each
        destination hold their store object, so dropping it would leave them writing to a store
        ``/_sandbox/state`` no longer shows.
        """
        with self.lock:
            self.faults.clear()
            self.requests.clear()
            for name, store in self.stores.items():
                fresh = self._factories[name]()
                store.__dict__.clear()
                store.__dict__.update(fresh.__dict__)
            self._windows.clear()
            self.rate_limited = 0
