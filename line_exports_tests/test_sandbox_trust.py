"""The sandbox never receives real data by accident, and its reset resets what it shows.

``ensure_sandbox`` trusts only a sandbox this deployment started (it proves a per-instance
token kept owner-only in the data folder); a stranger answering on the sandbox's port, even
one that looks like a sandbox, gets nothing. ``POST /_sandbox/reset`` empties every store the
routes write to, so ``/_sandbox/state`` afterwards shows exactly what arrived since.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest
import requests

from line_exports import MaacResource, SqlSource, build_export
from line_exports.sandbox import Sandbox, SandboxServer, ensure_sandbox
from line_exports.sandbox.app import destination_modules
from line_exports_tests.resilience_helpers import CASES, build, materialize


class Impostor(BaseHTTPRequestHandler):
    """Answers like a sandbox's health check; records every request it gets."""

    seen: list[tuple[str, str, int]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        Impostor.seen.append((self.command, self.path, len(body)))
        payload = json.dumps({"ok": True, "destinations": ["maac"]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def impostor() -> Iterator[str]:
    Impostor.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_stranger_on_the_sandbox_port_gets_no_data(
    impostor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINE_EXPORTS_SANDBOX_URL", impostor)
    asset = build_export(
        "maac_members",
        destination="maac",
        query="select line_uid, display_name from line_members",
        settings={"data_object": "members", "import_key": "line_uid", "tags": "x"},
        retry_policy=None,
    )
    result = dg.materialize(
        [asset],
        resources={"sql_source": SqlSource(), "maac": MaacResource()},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    text = str(failure.step_failure_data.error)
    assert "not a sandbox this deployment started" in text, text
    assert {method for method, _, _ in Impostor.seen} == {"GET"}  # health checks only
    assert all(path.startswith("/_sandbox/health") for _, path, _ in Impostor.seen)


def test_a_real_sandbox_not_started_here_is_not_trusted(
    sandbox_server: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another deployment's (another user's) sandbox: its token is not in our data folder."""
    assert ensure_sandbox(sandbox_server.url) == sandbox_server.url  # registered by its starter
    monkeypatch.setenv("LINE_EXPORTS_HOME", str(tmp_path / "another-deployment"))
    with pytest.raises(dg.Failure, match="not a sandbox this deployment started"):
        ensure_sandbox(sandbox_server.url)
    assert sandbox_server.sandbox.count() == 0


def test_ensure_sandbox_starts_one_then_trusts_it_and_only_it(line_exports_home: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    assert ensure_sandbox(url) == url
    pid = int(requests.get(f"{url}/_sandbox/health", timeout=5).json()["pid"])
    try:
        assert pid != os.getpid()
        token_file = line_exports_home / "sandbox" / f"127.0.0.1_{url.rsplit(':', 1)[1]}.token"
        assert token_file.exists() and oct(token_file.stat().st_mode & 0o777) == "0o600"
        assert ensure_sandbox(url) == url  # the same process, trusted: none started
        assert int(requests.get(f"{url}/_sandbox/health", timeout=5).json()["pid"]) == pid
        token_file.write_text("a-token-that-is-not-its-own")  # as if someone else had started it
        with pytest.raises(dg.Failure, match="not a sandbox this deployment started"):
            ensure_sandbox(url)
    finally:
        os.kill(pid, signal.SIGTERM)


def test_reset_really_resets_what_state_shows(sandbox_server: SandboxServer) -> None:
    """Send to every destination, reset, send again: the state shows the second sends only,
    and equals a fresh sandbox's state after the same sends."""
    url = sandbox_server.url
    names = ("maac_members", "line_audience", "capi_events", "linkedin_users")

    def send_all() -> None:
        for name in names:
            result = materialize(CASES[name], url, build(CASES[name], name=f"{name}_x"))
            assert result.success, name

    send_all()
    requests.post(f"{url}/_sandbox/reset", timeout=10).raise_for_status()
    state = requests.get(f"{url}/_sandbox/state", timeout=10).json()
    fresh = Sandbox()
    empty = {m.__name__.rsplit(".", 1)[1]: m.summary(fresh) for m in destination_modules()}
    for module, figures in empty.items():
        assert state[module] == figures, module
    assert state["requests"] == 0

    send_all()  # a new tick's ledger scope is not needed: the run ids differ
    after = requests.get(f"{url}/_sandbox/state", timeout=10).json()
    maac = CASES["maac_members"]
    assert after["maac"]["members"] == maac.valid  # not 0 (a store the routes no longer use)
    assert after["maac"]["imports"] == -(-maac.valid // 10)  # not doubled
    assert after["line_conversion"]["events_received"] == CASES["capi_events"].valid
    assert after["line_conversion"]["duplicate_events"] == 0
    assert len(after["linkedin"]["segments"]) == 1
    assert len(after["line_messaging"]["audiences"]) == 1


def test_sandbox_on_a_busy_port_says_so_and_claims_nothing(
    line_exports_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`line-exports sandbox --port P` with P taken: no "sandbox on ..." line, a clear error,
    exit 2, and the running server's trust record is left alone."""
    from line_exports.cli import main
    from line_exports.sandbox.server import _instance_file, register_instance

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        register_instance(url, "the running sandbox's token")
        assert main(["sandbox", "--port", str(port)]) == 2
        out, err = capsys.readouterr()
        assert "sandbox on" not in out
        assert f"error: cannot listen on 127.0.0.1:{port}: the address is already in use" in err
        assert f"line-exports sandbox --stop --port {port}" in err
        assert _instance_file(url).read_text() == "the running sandbox's token"
