"""The HTTP core every destination client shares: one pool, pacing, retries, redaction.

Retries follow the reference's knobs (``max_retry``, ``initial_retry_wait``, ``max_retry_wait``,
``connection_timeout``, in seconds, with the reference's defaults and ranges). Only what is safe
to repeat is retried: 429, 5xx, dropped connections and timeouts; ``Retry-After`` is honoured.
A client-side limiter per endpoint keeps us under the API's published rate so 429s stay rare.
Bodies are never logged unless ``debug`` is on, and every secret is cut out of every message.

The transport is urllib3 directly (no ``requests`` layer): a push is a few hundred bytes, and
per-request client CPU is what caps how close one process gets to LINE's 2,000 pushes a second
(measured on loopback: 3,200 sequential posts/s through urllib3 vs 2,100 through requests).
"""

from __future__ import annotations

import functools
import ipaddress
import json as jsonlib
import logging
import os
import threading
import time
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import certifi
import urllib3
from pydantic import BaseModel, Field
from tenacity import RetryCallState, Retrying, retry_if_exception

log = logging.getLogger("line_exports.http")

T = TypeVar("T")
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def may_have_acted(status: int) -> bool:
    """Whether an HTTP answer leaves open that the API acted on the request: a 5xx. LINE,
    "Retry failed API requests" (https://developers.line.biz/en/docs/messaging-api/
    retrying-api-request): "even if you get such error [a 5xx or a timeout], there is a
    possibility that your message was delivered". A 4xx says it did not, a 429 included: "The
    Messaging API doesn't process requests that return HTTP status code 429" ("Handle HTTP
    status code 429 errors", https://developers.line.biz/en/docs/messaging-api/
    handling-http-429-errors/). :func:`line_exports.outcomes.fate_of` reads it."""
    return status >= 500


USER_AGENT = "line-exports/0.1 (+dagster)"


@dataclass(frozen=True)
class RetrySettings:
    """Retry and timeout knobs (seconds), named as in the reference docs.

    Ranges are checked where users set them (``ExportSettings``); the defaults are the
    reference's: 8 retries, 15 s first wait, 3600 s longest wait, 300 s timeout.
    """

    max_retry: int = 8
    initial_retry_wait: float = 15
    max_retry_wait: float = 3600
    connection_timeout: float = 300


RETRY_WAIT_SCALE = "LINE_EXPORTS_RETRY_WAIT_SCALE"
"""Test support only: the name of an environment variable holding a factor ``0 < f <= 1`` on
``initial_retry_wait`` (so on every backoff pause of :class:`HttpClient` and the senders that read
its ``retry``) of a client whose API is on this machine (loopback: the sandbox). Unset, the
default, or an API on another host: the waits are the ones configured. A ``Retry-After`` the API
sends is never scaled. The test suite sets 0.05 (``line_exports_tests/conftest.py``), so the
1-second minimum wait (``initial_retry_wait >= 1``) its faults meet costs 50 ms; tests that time
the waits themselves keep them whole (``@pytest.mark.real_retry_waits``)."""


def retry_for_tests(retry: RetrySettings, base_url: str) -> RetrySettings:
    """``retry`` with :data:`RETRY_WAIT_SCALE` applied when it is set and ``base_url`` is on
    loopback, else ``retry`` itself. ``ValueError`` for a factor outside (0, 1]."""
    text = os.environ.get(RETRY_WAIT_SCALE)
    if not text or not is_loopback(urlsplit(base_url).hostname):
        return retry
    scale = float(text)
    if not 0 < scale <= 1:
        raise ValueError(f"{RETRY_WAIT_SCALE} must be a factor in (0, 1], not {text!r}")
    return replace(retry, initial_retry_wait=retry.initial_retry_wait * scale)


def is_loopback(host: str | None) -> bool:
    """``localhost``, 127.0.0.0/8 or ``::1``: traffic that never leaves this machine."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_transport(url: str, carries_credentials: bool) -> None:
    """A credential (a bearer token, an access-token header, a client secret) never travels
    over plain HTTP to a host off this machine: ``ValueError`` naming the host, never the
    credential. HTTPS anywhere and loopback (the sandbox) pass."""
    if not carries_credentials or url[:8].lower() == "https://":
        return
    refused = _plain_http_off_machine("/".join(url.split("/", 3)[:3]))
    if refused:
        raise ValueError(
            f"refusing to send credentials over {refused}: use https (plain HTTP is for the "
            "loopback sandbox only)"
        )


@functools.lru_cache(maxsize=256)
def _plain_http_off_machine(origin: str) -> str | None:
    """``"<scheme> to <host>"`` when ``origin`` (``scheme://host:port``) is not HTTPS and not
    loopback, else None; cached per origin (a push's client sends thousands a second)."""
    parts = urlsplit(origin)
    if parts.scheme.lower() == "https" or is_loopback(parts.hostname):
        return None
    return f"{parts.scheme or 'an unknown scheme'} to {parts.hostname or origin!r}"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret (and its URL-encoded form) in ``text`` with ``***``."""
    from urllib.parse import quote

    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
    return text


_stop: threading.Event | None = None  # set by a signal during a delivery (stoppable_waits)


@contextmanager
def stoppable_waits(stop: threading.Event) -> Iterator[None]:
    """While in this block, setting ``stop`` (the run is asked to stop: SIGINT / SIGTERM,
    :attr:`line_exports.destination.ExportRun.stop`) ends every retry's wait at once and sends
    no further retry: the call raises its last answer's :class:`ApiError` (:func:`backoff`),
    whose fate :func:`line_exports.outcomes.fate_of` decides (a 5xx: unknown; a 429: refused,
    or unknown after an earlier 5xx). The one mechanism of every destination:
    :class:`HttpClient`'s retries, the LINE push sender's, and every own retry loop that waits
    with :func:`backoff`."""
    global _stop
    previous, _stop = _stop, stop
    try:
        yield
    finally:
        _stop = previous


def stop_requested() -> bool:
    """Whether the run was asked to stop (:func:`stoppable_waits`): send no retry."""
    stop = _stop
    return stop is not None and stop.is_set()


def backoff(seconds: float, error: ApiError, sleep: Callable[[float], None] = time.sleep) -> None:
    """The wait before a retry of a call that failed with ``error``: ``sleep(seconds)``, which
    a stop request ends at once when ``sleep`` is the real clock's (a test's own ``sleep`` is
    called as given). Raises ``error`` instead of returning when the run is asked to stop
    before or during the wait: no retry is sent, the last answer decides."""
    if not stop_requested():
        _pause(seconds, sleep)
    if stop_requested():
        raise error


def _pause(seconds: float, sleep: Callable[[float], None]) -> None:
    """``sleep(seconds)``; on the real clock while waits are stoppable, a stop ends it."""
    stop = _stop
    if sleep is time.sleep and stop is not None:
        stop.wait(seconds)
    else:
        sleep(seconds)


def poll(
    check: Callable[[], T | None],
    *,
    what: str,
    timeout: float,
    max_pause: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``check`` until it returns a value: an asynchronous job (import task, segment,
    audience) is done. Pauses start at 50 ms and double up to ``max_pause``; past ``timeout``
    an :class:`ApiError` names ``what`` was not ready."""
    deadline = time.monotonic() + timeout
    pause = min(0.05, max_pause)
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise ApiError(f"{what} was not ready after {timeout:.0f}s")
        _pause(pause, sleep)  # a stop ends it: ``check`` (its ``between``) then sees the stop
        pause = min(pause * 2, max_pause)


class ApiError(Exception):
    """An API call that failed for good; the message names the call and never holds a secret.

    ``status`` is the API's answer (None: no answer arrived). ``reached`` is False only when
    the request certainly never reached the API (no connection could be opened, TLS refused,
    credentials refused over plain HTTP); a timeout after sending or a connection cut may have
    reached it. ``unanswered`` counts earlier attempts of the same call that may have reached
    the API but got no answer, ``server_errors`` those it answered with a 5xx
    (:func:`may_have_acted`). :func:`line_exports.outcomes.fate_of` reads these.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        method: str = "",
        path: str = "",
        body: str = "",
        retryable: bool = False,
        retry_after: float | None = None,
        reached: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.method = method
        self.path = path
        self.body = body
        self.retryable = retryable
        self.retry_after = retry_after
        self.reached = reached
        self.unanswered = 0
        self.server_errors = 0


class RateLimit(BaseModel):
    """At most ``requests`` calls in any window of ``per_seconds``."""

    requests: int = Field(gt=0)
    per_seconds: float = Field(gt=0)


class RateLimiter:
    """Keeps calls under ``requests`` per ``per_seconds`` as the API counts them, provably.

    A call holds its slot from :meth:`acquire` until it has been answered (:meth:`release`)
    and then for one more window. Whatever delays a request on its way (a busy client CPU, the
    server's own queue, calls overtaking each other), the server handled it before its answer
    came back, so any ``per_seconds`` window of the server's clock sees at most ``requests``
    of our calls. The price is one response time per window: at LINE's 2,000 pushes a second
    with answers taking 20 ms, 98% of the published rate.
    """

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._answered: deque[float] = deque()  # when calls were answered, in order
        self._in_flight = 0
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)

    def acquire(self) -> float:
        """Wait for a slot; returns the seconds waited. Every acquire needs one release."""
        started = time.monotonic()
        window = self.limit.per_seconds
        with self._freed:
            while True:
                now = time.monotonic()
                while self._answered and now - self._answered[0] >= window:
                    self._answered.popleft()
                if len(self._answered) + self._in_flight < self.limit.requests:
                    self._in_flight += 1
                    return now - started
                if self._answered:
                    # A slot frees when the oldest answer leaves the window (or a call ends).
                    self._freed.wait(max(window - (now - self._answered[0]), 0.0005))
                else:
                    self._freed.wait()  # every slot is in flight: wait for an answer

    def try_acquire(self) -> float | None:
        """:meth:`acquire` without blocking (for an event loop): None when a slot was taken,
        else the seconds to wait before trying again."""
        window = self.limit.per_seconds
        with self._freed:
            now = time.monotonic()
            while self._answered and now - self._answered[0] >= window:
                self._answered.popleft()
            if len(self._answered) + self._in_flight < self.limit.requests:
                self._in_flight += 1
                return None
            if self._answered:
                return max(window - (now - self._answered[0]), 0.0005)
            return 0.001  # every slot is in flight: an answer frees one

    def release(self) -> None:
        """The call was answered (or failed): its slot stays taken for one more window."""
        with self._freed:
            self._in_flight -= 1
            self._answered.append(time.monotonic())
            self._freed.notify()


_LIMITERS: dict[tuple[str, str], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def shared_limiter(scope: str, key: str, limit: RateLimit) -> RateLimiter:
    """One limiter per (API account, endpoint) in this process, so two clients share a limit."""
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get((scope, key))
        if limiter is None or limiter.limit != limit:
            limiter = _LIMITERS[(scope, key)] = RateLimiter(limit)
        return limiter


@dataclass
class CallStats:
    """What a client did, for run metadata."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    paced_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self) -> None:
        """One more request sent (thread-safe: pushes run in parallel)."""
        with self._lock:
            self.requests += 1


class Response:
    """What an API answered: status, case-insensitive headers and the whole body."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` if it is not JSON)."""
        return jsonlib.loads(self.content)


# A file part is (filename, content, content type); content given as a Path is streamed from
# disk, so a 1.5M-ID audience file is never held in memory to be sent.
FilePart = tuple[str, "bytes | Path", str]


def _multipart(
    fields: Mapping[str, Any], files: Mapping[str, FilePart]
) -> tuple[bytes | Callable[[], Iterator[bytes]], str, int]:
    """A multipart/form-data body: bytes, or (when a part is a Path) a generator factory that
    re-reads the file on every attempt. Returns (body, content type, content length)."""
    boundary = uuid.uuid4().hex
    pieces: list[bytes | Path] = []
    for name, value in fields.items():
        pieces.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    for name, (filename, content, content_type) in files.items():
        pieces.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
        )
        pieces.append(content)
        pieces.append(b"\r\n")
    pieces.append(f"--{boundary}--\r\n".encode())
    content_type = f"multipart/form-data; boundary={boundary}"
    length = sum(p.stat().st_size if isinstance(p, Path) else len(p) for p in pieces)
    if not any(isinstance(p, Path) for p in pieces):
        return b"".join(p for p in pieces if isinstance(p, bytes)), content_type, length

    def stream() -> Iterator[bytes]:
        for piece in pieces:
            if isinstance(piece, bytes):
                yield piece
                continue
            with piece.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    yield chunk

    return stream, content_type, length


def _retry_after_seconds(response: Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return None


def _pool_manager(base_url: str, pool_size: int) -> urllib3.PoolManager:
    """A pool for ``base_url``, through the environment's proxy (``HTTPS_PROXY``, ``NO_PROXY``)
    and CA bundle (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, else certifi's), read once."""
    ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    options: dict[str, Any] = {
        "maxsize": pool_size,
        "block": False,
        "ca_certs": ca_bundle or certifi.where(),
    }
    parts = urlsplit(base_url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        auth = urllib3.util.parse_url(proxy).auth
        headers = urllib3.make_headers(proxy_basic_auth=auth) if auth else None
        return urllib3.ProxyManager(proxy, proxy_headers=headers, **options)
    return urllib3.PoolManager(**options)


@dataclass
class _Request:
    """One call as the caller gave it; its body is rebuilt for every attempt (a streamed file
    part is read again from the start)."""

    method: str
    path: str
    url: str
    endpoint: str
    headers: Mapping[str, str] | None
    json: Any
    data: bytes | str | Mapping[str, Any] | None
    files: Mapping[str, FilePart] | None
    length: int = 0

    def body(self) -> tuple[bytes | str | Iterator[bytes] | None, str | None]:
        """(body, content type to set unless the caller set one)."""
        if self.files:
            body, content_type, self.length = _multipart(dict(self.data or {}), self.files)
            if callable(body):
                # Streamed: framing by Content-Length (never chunked), set here.
                self.headers = {**(self.headers or {}), "Content-Length": str(self.length)}
                return body(), content_type
            return body, content_type
        if self.json is not None:
            body = jsonlib.dumps(self.json, separators=(",", ":"), allow_nan=False)
            return body.encode(), "application/json"
        if isinstance(self.data, Mapping):
            return urlencode(self.data, doseq=True), "application/x-www-form-urlencoded"
        return self.data, None


class HttpClient:
    """One connection pool with base URL, auth headers, pacing, retries and redaction.

    ``auth_headers`` is called before each attempt so a refreshed token is used at once;
    ``on_unauthorized`` (if given) is called once on a 401 to refresh it, then the call is
    retried a single time. ``secrets`` lists every value to cut out of messages and logs.
    Thread-safe for concurrent ``request`` calls; ``pool_size`` bounds open connections.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth_headers: Callable[[], Mapping[str, str]] = dict,
        secrets: Callable[[], Iterable[str]] = tuple,
        retry: RetrySettings | None = None,
        limits: Mapping[str, RateLimit] | None = None,
        limiter_scope: str = "",
        on_unauthorized: Callable[[], None] | None = None,
        debug: bool = False,
        pool_size: int = 10,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth_headers = auth_headers
        self.secrets = secrets
        self.retry = retry_for_tests(retry or RetrySettings(), self.base_url)
        self.limits = dict(limits or {})
        self.limiter_scope = limiter_scope or self.base_url
        self.on_unauthorized = on_unauthorized
        self.debug = debug
        self.sleep = sleep
        self.stats = CallStats()
        self._policy: tuple[RetrySettings, Retrying] | None = None
        self._timeout_cache: tuple[float, urllib3.Timeout] | None = None
        # Enough pooled connections for the client's own concurrency (e.g. parallel pushes).
        self.pool = _pool_manager(self.base_url, pool_size)

    def close(self) -> None:
        self.pool.clear()

    def redact(self, text: str) -> str:
        return redact(text, self.secrets())

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        backoff = min(
            self.retry.initial_retry_wait * (2 ** (state.attempt_number - 1)),
            self.retry.max_retry_wait,
        )
        if isinstance(error, ApiError) and error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.retry.max_retry_wait)
        return backoff

    def _sleep(self, seconds: float) -> None:
        """Tenacity's wait between attempts: :func:`backoff`'s (a stop request ends it)."""
        _pause(seconds, self.sleep)

    def _stop_retrying(self, state: RetryCallState) -> bool:
        """Retries spent, or the run asked to stop (:func:`stop_requested`): the last error
        is raised."""
        return state.attempt_number >= self.retry.max_retry + 1 or stop_requested()

    def backoff(self, seconds: float, error: ApiError) -> None:
        """:func:`backoff` with this client's ``sleep``, for a caller's own retry loop."""
        backoff(seconds, error, self.sleep)

    def _before_sleep(self, state: RetryCallState) -> None:
        self.stats.retries += 1
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "retrying after %s (attempt %d of %d, waiting %.1fs)",
            error,
            state.attempt_number,
            self.retry.max_retry + 1,
            state.upcoming_sleep,
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        endpoint: str | None = None,
        ok_status: Iterable[int] = (200, 201, 202, 204),
        retry: bool = True,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: bytes | str | Mapping[str, Any] | None = None,
        files: Mapping[str, FilePart] | None = None,
    ) -> Response:
        """Send one call with pacing and retries; return the response or raise :class:`ApiError`.

        ``endpoint`` names the rate-limit bucket (a key of ``limits``); ``ok_status`` are the
        answers returned to the caller (e.g. 409 for a repeated retry key is success). The body
        is ``json`` (encoded here), ``data`` (bytes, or a form dict), or ``files`` (multipart,
        with ``data`` as its form fields).
        """
        ok = frozenset(ok_status)
        endpoint = endpoint or path
        url = self.url(path)
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params, doseq=True)
        request = _Request(method, path, url, endpoint, headers, json, data, files)
        refreshed = False
        unanswered = 0  # attempts that may have reached the API and got no answer
        server_errors = 0  # attempts it answered with a 5xx: it may have acted on them
        last: list[ApiError] = []  # the latest attempt's error

        def send() -> Response:
            nonlocal unanswered
            try:
                return self._send(request)
            except ApiError as exc:
                exc.unanswered, exc.server_errors = unanswered, server_errors
                unanswered += exc.status is None and exc.reached
                last[:] = [exc]
                raise

        def attempt() -> Response:
            nonlocal refreshed, server_errors
            if last and stop_requested():  # asked to stop during the wait: no retry is sent,
                raise last[0]  # the last answer decides (tenacity stops and re-raises it)
            response = send()
            if response.status_code in ok:
                return response
            if response.status_code == 401 and self.on_unauthorized and not refreshed:
                refreshed = True
                self.on_unauthorized()
                response = send()
                if response.status_code in ok:
                    return response
            error = self._error(method, path, response)
            error.unanswered, error.server_errors = unanswered, server_errors
            server_errors += may_have_acted(response.status_code)
            last[:] = [error]
            raise error

        if not retry:
            return attempt()
        return self._retrying()(attempt)

    def _retrying(self) -> Retrying:
        """One retry policy per settings, reused by every call (and thread) of this client."""
        if self._policy is None or self._policy[0] != self.retry:
            policy = Retrying(
                stop=self._stop_retrying,
                wait=self._wait,
                retry=retry_if_exception(lambda e: isinstance(e, ApiError) and e.retryable),
                before_sleep=self._before_sleep,
                sleep=self._sleep,
                reraise=True,
            )
            self._policy = (self.retry, policy)
        return self._policy[1]

    def _send(self, request: _Request) -> Response:
        limit = self.limits.get(request.endpoint)
        if limit is None:
            return self._transmit(request)
        limiter = shared_limiter(self.limiter_scope, request.endpoint, limit)
        self.stats.paced_seconds += limiter.acquire()
        try:
            return self._transmit(request)
        finally:
            limiter.release()

    def _transmit(self, request: _Request) -> Response:
        auth = self.auth_headers()
        credentials = bool(auth) or any(
            name.lower() == "authorization" for name in (request.headers or {})
        )
        try:
            check_transport(request.url, credentials or any(self.secrets()))
        except ValueError as exc:
            raise ApiError(
                f"{request.method} {self.redact(request.path)}: {exc}",
                method=request.method,
                path=self.redact(request.path),
                reached=False,
            ) from None
        body, content_type = request.body()
        headers = {"User-Agent": USER_AGENT, **auth, **(request.headers or {})}
        if content_type and not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = content_type
        started = time.monotonic()
        self.stats.count()
        try:
            answer = self.pool.urlopen(
                request.method,
                request.url,
                body=body,
                headers=headers,
                timeout=self._timeout(),
                retries=False,
                redirect=False,
                preload_content=True,
            )
        except urllib3.exceptions.SSLError as exc:
            # A certificate the CA bundle does not vouch for: waiting will not change that.
            reason = exc.__context__ or exc
            raise ApiError(
                self.redact(
                    f"{request.method} {request.path}: TLS verification failed ({reason}); "
                    "a proxy or private CA needs REQUESTS_CA_BUNDLE"
                ),
                method=request.method,
                path=self.redact(request.path),
                reached=False,
            ) from None
        except urllib3.exceptions.HTTPError as exc:
            timed_out = isinstance(exc, urllib3.exceptions.TimeoutError) and not isinstance(
                exc, urllib3.exceptions.NewConnectionError
            )
            kind = "timed out" if timed_out else "connection failed"
            raise ApiError(
                self.redact(f"{request.method} {request.path} {kind}: {type(exc).__name__}"),
                method=request.method,
                path=self.redact(request.path),
                retryable=True,
                # No connection, no request: only a connect error proves it never arrived.
                reached=not isinstance(exc, urllib3.exceptions.ConnectTimeoutError),
            ) from None
        response = Response(answer.status, answer.headers, answer.data)
        log.debug(
            "%s %s -> %s in %.0f ms",
            request.method,
            self.redact(request.path),
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        if self.debug:
            shown = (
                body if isinstance(body, bytes | str) else f"<{request.length:,} bytes streamed>"
            )
            # Redact the whole text, then cut: a cut through a secret would leave its prefix.
            log.debug("request body: %s", self.redact(str(shown))[:2000])
            log.debug("response body: %s", self.redact(response.text)[:2000])
        return response

    def _timeout(self) -> urllib3.Timeout:
        seconds = self.retry.connection_timeout
        if self._timeout_cache is None or self._timeout_cache[0] != seconds:
            self._timeout_cache = (seconds, urllib3.Timeout(connect=seconds, read=seconds))
        return self._timeout_cache[1]

    def _error(self, method: str, path: str, response: Response) -> ApiError:
        status = response.status_code
        if status == 429:
            self.stats.rate_limited += 1
        # Redact the whole body, then cut: an echoed token across the cut would leak its prefix.
        body = self.redact(response.text)[:1000]
        return ApiError(
            self.redact(f"{method} {path} answered {status}: {body[:300]}"),
            status=status,
            method=method,
            path=self.redact(path),
            body=body,
            retryable=status in RETRYABLE_STATUS,
            retry_after=_retry_after_seconds(response) if status in (429, 503) else None,
        )
