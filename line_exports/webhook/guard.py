"""Connection guard for the receiver: read deadlines and a connection cap (slow-client defence).

LINE's platform sends a whole webhook request at once and waits at most 2 seconds for the
answer (``request_timeout`` in "Check webhook error causes and statistics",
https://developers.line.biz/en/docs/messaging-api/check-webhook-error-statistics/). A client
that trickles its headers or body is therefore never LINE, and must not hold a connection
(a file handle) for long. uvicorn alone keeps such connections open forever; this protocol
(uvicorn's httptools protocol plus three rules) does not:

* ``header_timeout``: the request line and headers must be complete this many seconds after
  the connection opened (or after the previous response, on a kept-alive connection);
* ``body_timeout``: the body must be complete this many seconds after the headers;
* ``max_connections``: at the cap, a new connection evicts the connection that has waited
  longest for a request's headers or body, skipping one whose bytes have arrived but not yet
  been read (a request already being answered is never evicted). A trickling crowd therefore
  only ever evicts itself, while a real request, which sends its headers at once, is served.

A connection that misses a deadline, or is evicted, is aborted (its file handle is freed at
once). The defaults keep file handles in reserve: at most ``(RLIMIT_NOFILE - 64) // 2``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import resource
import socket
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("line_exports.webhook")

HEADER_TIMEOUT_ENV = "LINE_EXPORTS_WEBHOOK_HEADER_TIMEOUT"
BODY_TIMEOUT_ENV = "LINE_EXPORTS_WEBHOOK_BODY_TIMEOUT"
MAX_CONNECTIONS_ENV = "LINE_EXPORTS_WEBHOOK_MAX_CONNECTIONS"
_MAX_DEFAULT_CONNECTIONS = 10_000


def raise_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65_536)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def default_max_connections() -> int:
    """Half the file handles left after a reserve of 64 (a socket may need a second handle)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, min(_MAX_DEFAULT_CONNECTIONS, (soft - 64) // 2))


@dataclass(frozen=True)
class Limits:
    """Deadlines in seconds and the cap on open connections (per worker process)."""

    header_timeout: float = 5.0
    body_timeout: float = 10.0
    max_connections: int = 0  # 0: default_max_connections()

    def __post_init__(self) -> None:
        if self.header_timeout <= 0 or self.body_timeout <= 0 or self.max_connections < 0:
            raise ValueError("timeouts must be > 0 and max_connections >= 0")

    def resolved_max_connections(self) -> int:
        return self.max_connections or default_max_connections()

    def to_env(self) -> dict[str, str]:
        return {
            HEADER_TIMEOUT_ENV: repr(self.header_timeout),
            BODY_TIMEOUT_ENV: repr(self.body_timeout),
            MAX_CONNECTIONS_ENV: str(self.max_connections),
        }

    @classmethod
    def from_env(cls) -> Limits:
        return cls(
            header_timeout=float(os.environ.get(HEADER_TIMEOUT_ENV) or cls.header_timeout),
            body_timeout=float(os.environ.get(BODY_TIMEOUT_ENV) or cls.body_timeout),
            max_connections=int(os.environ.get(MAX_CONNECTIONS_ENV) or 0),
        )


class _Waiting:
    """Per server: connections waiting for a request, oldest first, and what was dropped."""

    def __init__(self) -> None:
        self.queue: collections.OrderedDict[GuardedProtocol, None] = collections.OrderedDict()
        self.dropped = {"header_timeout": 0, "body_timeout": 0, "evicted": 0}
        self.last_report = time.monotonic()

    def count(self, reason: str) -> None:
        self.dropped[reason] += 1
        now = time.monotonic()
        if now - self.last_report >= 10.0:
            log.warning(
                "slow or idle clients dropped in the last %.0fs: %s",
                now - self.last_report,
                self.dropped,
            )
            self.dropped = dict.fromkeys(self.dropped, 0)
            self.last_report = now


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header/body deadlines and an evicting connection cap.

    ``limits`` is read from the environment (``webhook serve`` sets it for every worker) unless
    a subclass sets it (``guarded_protocol``).
    """

    limits: ClassVar[Limits | None] = None
    _cap: ClassVar[int] = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cls = type(self)
        if cls.limits is None:
            cls.limits = Limits.from_env()
        if not cls._cap:
            cls._cap = cls.limits.resolved_max_connections()
        waiting = getattr(self.server_state, "_line_oa_waiting", None)
        if waiting is None:
            waiting = _Waiting()
            self.server_state._line_oa_waiting = waiting  # type: ignore[attr-defined]
        self._waiting: _Waiting = waiting
        self._deadline: asyncio.TimerHandle | None = None

    # -- the three rules -------------------------------------------------------------------
    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire, reason)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, reason: str) -> None:
        self._deadline = None
        self._waiting.count(reason)
        self._drop()

    def _drop(self) -> None:
        self._waiting.queue.pop(self, None)
        self.connections.discard(self)  # counted out now; connection_lost comes a tick later
        if not self.transport.is_closing():
            self.transport.abort()

    def _wait_for_request(self) -> None:
        assert self.limits is not None
        self._waiting.queue[self] = None
        self._waiting.queue.move_to_end(self)
        self._arm(self.limits.header_timeout, "header_timeout")

    # -- uvicorn protocol hooks ------------------------------------------------------------
    def _has_unread_bytes(self) -> bool:
        """Bytes waiting in the kernel for this connection (it is sending, not stalling)."""
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return False
        try:
            with socket.fromfd(sock.fileno(), socket.AF_INET, socket.SOCK_STREAM) as dup:
                return bool(dup.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:  # nothing to read (EAGAIN), or no handle left to look: not sending
            return False

    def _victim(self) -> GuardedProtocol:
        """The connection waiting longest that is not in the middle of sending bytes."""
        queue = self._waiting.queue
        for _ in range(min(16, len(queue))):
            oldest = next(iter(queue))
            if oldest is self or not oldest._has_unread_bytes():
                return oldest
            queue.move_to_end(oldest)  # its request is arriving: look at the next one
        return next(iter(queue))

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_request()
        while len(self.connections) > self._cap and self._waiting.queue:
            victim = self._victim()
            self._waiting.count("evicted")
            victim._disarm()
            victim._drop()
            if victim is self:
                return

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        assert self.limits is not None
        self._arm(self.limits.body_timeout, "body_timeout")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete:
            return  # answered before its body ended: still waiting for the next request
        # The request is whole: it is being answered and is never evicted or timed out here.
        self._disarm()
        self._waiting.queue.pop(self, None)

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._wait_for_request()  # kept alive: the next request has the same deadlines

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._waiting.queue.pop(self, None)
        super().connection_lost(exc)


def guarded_protocol(limits: Limits) -> type[GuardedProtocol]:
    """A ``GuardedProtocol`` with fixed limits, for an in-process ``uvicorn.Config(http=...)``."""
    return type("GuardedProtocolWithLimits", (GuardedProtocol,), {"limits": limits, "_cap": 0})
