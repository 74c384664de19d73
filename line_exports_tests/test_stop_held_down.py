"""Ctrl-C held down during a LINE push (VERIFY-13o G3): a SIGINT, then a signal every 50 ms
until the command exits. The second signal stops the run at once; the ones after it must not
cut the counting of that stop: before, the table said 0 of every count ("stopped by SIGINT
before reading any row") while LINE held 50 messages, or counted pushes LINE had taken as never
sent. The real ``line-exports run`` in a child process, the sandbox answering each push after
3 s, so 50 pushes (push_concurrency's default) are in flight at the first signal."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.line_messaging import store_of
from line_exports_tests.test_interrupt_reading import run_and_signal
from line_exports_tests.test_stop_counts_interrupt import (
    RECIPIENTS,
    _push_workflow,
    _table_row,
)


@pytest.mark.parametrize("held", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_held_down_still_counts_the_pushes_in_flight(
    sandbox_server: SandboxServer, tmp_path: Path, held: signal.Signals
) -> None:
    folder = tmp_path / "wf"
    _push_workflow(folder, sandbox_server.url)
    path = "/v2/bot/message/push"
    fault = sandbox_server.sandbox.add_fault(Fault(path=path, method="POST", delay=3.0, times=-1))
    signals = [signal.SIGINT] + [held] * 100
    ran = run_and_signal("push_stop", folder, lambda _: fault.hits >= 20, signals, gap=0.05)
    assert ran.code != 0, ran.text
    assert "before reading any row" not in ran.text, ran.text
    counts = _table_row(ran.out, "push_stop")
    assert (
        counts["read"]
        == RECIPIENTS
        == sum(counts[c] for c in ("rejected", "refused", "unsent", "unknown", "accepted"))
    ), ran.out
    reached = fault.hits  # every push that reached LINE (none after the stop)
    held_messages = sum(len(v) for v in store_of(sandbox_server.sandbox).inbox.values())
    assert held_messages <= reached, (held_messages, reached)
    # each push that reached LINE is accepted or of unknown delivery, never "never sent"
    assert counts["unknown"] + counts["accepted"] == reached, (counts, reached, ran.out)
