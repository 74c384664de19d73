"""The HTTP core over real loopback HTTP: retries, Retry-After, drops, pacing, redaction."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from line_exports.http import (
    RETRY_WAIT_SCALE,
    ApiError,
    HttpClient,
    RateLimit,
    RateLimiter,
    RetrySettings,
    redact,
)
from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.maac import store_of

TOKEN = "sandbox-maac-token"
PATH = "/openapi/v1/segment/"
FAST = RetrySettings(max_retry=3, initial_retry_wait=1, max_retry_wait=100, connection_timeout=10)


def client(server: SandboxServer, token: str = TOKEN, **kwargs: object) -> HttpClient:
    return HttpClient(
        server.url,
        auth_headers=lambda: {"Authorization": f"Bearer {token}"},
        secrets=lambda: (token,),
        retry=kwargs.pop("retry", FAST),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


def test_429_is_retried_after_retry_after(sandbox_server: SandboxServer) -> None:
    sandbox_server.sandbox.add_fault(Fault(path=PATH, status=429, retry_after=1, times=1))
    http = client(sandbox_server)
    started = time.monotonic()
    assert http.request("GET", PATH).status_code == 200
    assert 0.9 <= time.monotonic() - started < 5
    assert (http.stats.requests, http.stats.retries, http.stats.rate_limited) == (2, 1, 1)


@pytest.mark.real_retry_waits
def test_5xx_retried_with_exponential_backoff(sandbox_server: SandboxServer) -> None:
    sandbox_server.sandbox.add_fault(Fault(path=PATH, status=500, times=2))
    waits: list[float] = []
    http = client(sandbox_server, sleep=waits.append)
    assert http.request("GET", PATH).status_code == 200
    assert waits == [1, 2]  # initial_retry_wait, doubled


@pytest.mark.real_retry_waits
def test_backoff_is_capped_by_max_retry_wait(sandbox_server: SandboxServer) -> None:
    sandbox_server.sandbox.add_fault(Fault(path=PATH, status=503, times=-1))
    waits: list[float] = []
    retry = RetrySettings(
        max_retry=10, initial_retry_wait=30, max_retry_wait=100, connection_timeout=10
    )
    http = client(sandbox_server, retry=retry, sleep=waits.append)
    with pytest.raises(ApiError) as error:
        http.request("GET", PATH)
    assert error.value.status == 503
    assert waits == [30, 60, 100, 100, 100, 100, 100, 100, 100, 100]
    assert http.stats.requests == 11


def test_dropped_connection_is_retried(sandbox_server: SandboxServer) -> None:
    sandbox_server.sandbox.add_fault(Fault(path=PATH, drop=True, times=1))
    waits: list[float] = []
    http = client(sandbox_server, sleep=waits.append)
    assert http.request("GET", PATH).json()["results"] == []
    assert http.stats.requests == 2 and len(waits) == 1


def test_timeout_is_retried(sandbox_server: SandboxServer) -> None:
    sandbox_server.sandbox.add_fault(Fault(path=PATH, delay=1.5, times=1))
    http = client(sandbox_server, sleep=lambda _: None)
    http.retry = RetrySettings(
        max_retry=2, initial_retry_wait=1, max_retry_wait=100, connection_timeout=0.5
    )
    assert http.request("GET", PATH).status_code == 200
    assert http.stats.retries == 1


def test_400_is_not_retried(sandbox_server: SandboxServer) -> None:
    sandbox_server.sandbox.add_fault(Fault(path=PATH, status=400, times=-1))
    http = client(sandbox_server, sleep=lambda _: pytest.fail("a 400 must not be retried"))
    with pytest.raises(ApiError) as error:
        http.request("GET", PATH)
    assert error.value.status == 400 and not error.value.retryable
    assert http.stats.requests == 1


def test_401_refreshes_once_then_fails(sandbox_server: SandboxServer) -> None:
    tokens = ["expired-token-123", TOKEN]
    refreshed: list[bool] = []
    http = HttpClient(
        sandbox_server.url,
        auth_headers=lambda: {"Authorization": f"Bearer {tokens[0]}"},
        on_unauthorized=lambda: (refreshed.append(True), tokens.pop(0)),
        retry=FAST,
    )
    assert http.request("GET", PATH).status_code == 200
    assert refreshed == [True]


def test_secrets_never_in_error_messages(sandbox_server: SandboxServer) -> None:
    secret = "very-secret-token-value"
    http = client(sandbox_server, token=secret)
    with pytest.raises(ApiError) as error:
        http.request("GET", f"{PATH}?echo={secret}")
    text = str(error.value) + error.value.body + error.value.path
    assert error.value.status == 401
    assert secret not in text and "***" in text
    assert redact(f"a {secret} b", [secret]) == "a *** b"


def test_file_part_given_as_path_is_streamed_and_read_again_on_retry(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    uids = [f"U{i:032x}" for i in range(5000)]
    csv = tmp_path / "uids.csv"
    csv.write_text("line_uid\n" + "".join(f"{u}\n" for u in uids))
    path = "/openapi/v1/custom_segment/"
    sandbox_server.sandbox.add_fault(Fault(path=path, status=500, times=1))
    http = client(sandbox_server, sleep=lambda _: None)
    answer = http.request(
        "POST", path, data={"name": "streamed"}, files={"file": ("uids.csv", csv, "text/csv")}
    )
    assert answer.status_code == 201 and http.stats.retries == 1
    segment = store_of(sandbox_server.sandbox).segments[answer.json()["id"]]
    assert (segment.name, segment.uids) == ("streamed", uids)


def test_rate_limiter_never_exceeds_the_window_whatever_the_delays() -> None:
    """Calls reach the 'server' after random delays (a busy client, a queue): the server still
    never sees more than 5 in any 0.5 s, because a slot is held until the answer."""
    limiter = RateLimiter(RateLimit(requests=5, per_seconds=0.5))
    handled: list[float] = []
    lock = threading.Lock()
    delays = iter(
        [0.0, 0.12, 0.01, 0.2, 0.05, 0.0, 0.15, 0.02, 0.3, 0.0, 0.08, 0.01, 0.25, 0.0, 0.1]
    )

    def call(delay: float) -> None:
        limiter.acquire()
        try:
            time.sleep(delay)  # on its way to the server
            with lock:
                handled.append(time.monotonic())  # the server counts it now
            time.sleep(0.01)  # the answer on its way back
        finally:
            limiter.release()

    threads = [threading.Thread(target=call, args=(next(delays),)) for _ in range(15)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handled.sort()
    assert len(handled) == 15
    for i in range(len(handled) - 5):
        assert handled[i + 5] - handled[i] >= 0.5 - 1e-3
    assert handled[-1] - handled[0] >= 1.0


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTPS server with a self-signed certificate: (URL, certificate file)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()


def test_https_is_verified_and_a_private_ca_bundle_is_honoured(
    https_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = https_server
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    untrusting = HttpClient(url, retry=FAST, sleep=lambda _: None)
    with pytest.raises(ApiError, match="TLS verification failed") as refused:
        untrusting.request("GET", "/ping")
    assert not refused.value.retryable and untrusting.stats.retries == 0
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    trusting = HttpClient(url, retry=FAST)
    assert trusting.request("GET", "/ping").json() == {"ok": True}


def test_the_suite_s_wait_scale_shortens_only_backoff_to_a_loopback_api(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RETRY_WAIT_SCALE (conftest sets 0.05): a sandbox client's backoff is 1/20, doubling as
    configured and capped by max_retry_wait as configured; a Retry-After is waited whole; a
    client of another host keeps its waits; a factor outside (0, 1] is refused."""
    monkeypatch.setenv(RETRY_WAIT_SCALE, "0.05")
    sandbox_server.sandbox.add_fault(Fault(path=PATH, status=500, times=2))
    sandbox_server.sandbox.add_fault(Fault(path=PATH, status=429, retry_after=1, times=1))
    waits: list[float] = []
    http = client(sandbox_server, sleep=waits.append)
    assert http.request("GET", PATH).status_code == 200
    assert waits == [0.05, 0.1, 1]
    assert http.retry.initial_retry_wait == 0.05 and http.retry.max_retry_wait == 100
    for host in ("203.0.113.7", "api.example.com"):
        assert HttpClient(f"https://{host}", retry=FAST).retry == FAST
    monkeypatch.delenv(RETRY_WAIT_SCALE)
    assert client(sandbox_server).retry == FAST
    for bad in ("0", "2", "-1"):
        monkeypatch.setenv(RETRY_WAIT_SCALE, bad)
        with pytest.raises(ValueError, match=RETRY_WAIT_SCALE):
            client(sandbox_server)
