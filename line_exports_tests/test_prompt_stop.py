"""No new request after Ctrl-C / SIGTERM (VERIFY-13i F1): the real ``line-exports run`` in a
child process, a slow sandbox, the signal sent once a window of requests is in flight. The run
finishes the requests in flight and sends none of those queued behind them; its counts add up
and match what the sandbox holds."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.line_messaging import store_of as line_store
from line_exports_tests.cli_helpers import CLI
from line_exports_tests.test_stop_counts_interrupt import _table_row

RECIPIENTS = 60
OUTCOMES = ("rejected", "refused", "unsent", "unknown", "accepted")


def stopped_run(
    task: str, folder: Path, fault: Fault, hits: int, signo: signal.Signals = signal.SIGINT
) -> tuple[int, str, str, int, float]:
    """``line-exports run TASK`` in a child process, sent ``signo`` (to its process group, as a
    terminal's Ctrl-C) once ``fault`` has seen ``hits`` requests: (exit code, stdout, stderr,
    requests the sandbox had seen when the signal was sent, seconds from the signal to the
    exit)."""
    env = {k: v for k, v in os.environ.items() if k != "LINE_EXPORTS_RETRY_WAIT_SCALE"}
    child = subprocess.Popen(
        [str(CLI), "run", task, "--workflows", str(folder)],
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        started = time.monotonic()
        while fault.hits < hits and child.poll() is None and time.monotonic() - started < 240:
            time.sleep(0.01)
        assert child.poll() is None, "the run ended before it was interrupted"
        at_signal = fault.hits
        os.killpg(child.pid, signo)
        signalled = time.monotonic()
        out, err = child.communicate(timeout=120)
        seconds = time.monotonic() - signalled
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
    return child.returncode, out, err, at_signal, seconds


def line_workflow(folder: Path, url: str, settings: str) -> None:
    """Task ``stop`` of ``line_local`` (the sandbox): one row per recipient, ``settings``
    (YAML lines under result_settings) added."""
    (folder / "queries").mkdir(parents=True)
    (folder / "queries" / "p.sql").write_text(
        "SELECT 'U' || lpad(printf('%x', range + 4096), 32, '0') AS id, 'n' || range AS name "
        f"FROM range({RECIPIENTS})\n"
    )
    (folder / "connections.yaml").write_text(
        f"connections:\n  line_local:\n    type: line_messaging\n    base_url: {url}\n"
    )
    (folder / "stop.dig").write_text(
        "timezone: UTC\n+stop:\n  td>: queries/p.sql\n  _retry: 0\n"
        "  result_connection: line_local\n  result_settings:\n"
        + "".join(f"    {line}\n" for line in settings.strip().splitlines())
    )


TEXT = """template_message: '{"type": "text", "text": "hi {{name}}"}'"""


@pytest.mark.parametrize(
    ("target", "settings", "width", "signo"),
    [
        ("push", f"target: push_message\npush_concurrency: 4\n{TEXT}", 4, signal.SIGINT),
        ("push", f"target: push_message\npush_concurrency: 4\n{TEXT}", 4, signal.SIGTERM),
        (
            "multicast",
            "target: multicast_message\nbatch_size_multicast: 5\nmulticast_concurrency: 2\n"
            'template_message_multicast: \'{"type": "text", "text": "hi"}\'',
            2,
            signal.SIGINT,
        ),
    ],
)
def test_signal_sends_no_request_queued_behind_those_in_flight(
    sandbox_server: SandboxServer,
    tmp_path: Path,
    target: str,
    settings: str,
    width: int,
    signo: signal.Signals,
) -> None:
    """The signal arrives while ``width`` requests are in flight (answered after 1 s): those
    are answered and counted, and not one more reaches LINE. (It sent up to 2 x
    push_concurrency more pushes and multicast_concurrency more multicasts: the windows
    queued behind those in flight.)"""
    folder = tmp_path / "wf"
    line_workflow(folder, sandbox_server.url, settings)
    fault = sandbox_server.sandbox.add_fault(
        Fault(path=f"/v2/bot/message/{target}", method="POST", delay=1.0, times=-1)
    )
    returncode, out, err, at_signal, _ = stopped_run("stop", folder, fault, width, signo)
    assert returncode != 0, out + err
    counts = _table_row(out, "stop")
    held = sum(len(v) for v in line_store(sandbox_server.sandbox).inbox.values())
    assert counts["read"] == RECIPIENTS == sum(counts[c] for c in OUTCOMES), out
    assert at_signal == width and fault.hits == width, (at_signal, fault.hits, out)
    per_request = 5 if target == "multicast" else 1
    assert counts["accepted"] == held == width * per_request, (counts, held, out)
    assert counts["unsent"] == RECIPIENTS - held, out
    assert f"stopped by {signo.name} after the request in flight" in out + err, out + err
