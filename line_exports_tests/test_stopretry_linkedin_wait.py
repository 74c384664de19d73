"""Ctrl-C / SIGTERM while a new LinkedIn segment settles (``new_segment_wait``, up to 60 s after
it is created, before the first batch of members): the wait ends at once and no batch is sent
after the signal (the wait was slept out and the first batch sent, then the run stopped). Real
``line-exports run`` in a child process, HTTP to the sandbox, a real signal."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from line_exports.sandbox import SandboxServer
from line_exports.sandbox.linkedin import store_of
from line_exports_tests.test_interrupt_reading import (
    OUTCOMES,
    exports,
    run_and_signal,
    table_row,
    workflow,
)

ROWS = 3000
WAIT = 30  # new_segment_wait: the run must end long before it


@pytest.mark.parametrize("signo", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_a_new_segment_settles_sends_no_batch(
    sandbox_server: SandboxServer, tmp_path: Path, signo: signal.Signals
) -> None:
    sandbox = sandbox_server.sandbox
    export = exports(sandbox_server.url)["linkedin"]
    export = export.__class__(
        export.connection.replace("new_segment_wait: 0", f"new_segment_wait: {WAIT}"),
        export.select,
        export.settings,
    )
    folder = tmp_path / "wf"
    workflow(folder, "li_wait", export, rows=ROWS)
    ran = run_and_signal(
        "li_wait", folder, lambda err: "created LinkedIn DMP segment" in err, [signo], timeout=120
    )
    assert ran.code != 0, ran.text
    assert ran.seconds < WAIT - 12, (ran.seconds, ran.text)  # not after the wait
    batches = [r for r in list(sandbox.requests) if r.method == "POST" and "/users" in r.path]
    assert batches == [], batches  # no batch of members after the signal
    assert sum(len(s.members) for s in store_of(sandbox).segments.values()) == 0
    counts = table_row(ran.out, "li_wait")
    assert counts["read"] == ROWS == sum(counts[c] for c in OUTCOMES), ran.out
    valid = ROWS - counts["rejected"]
    assert counts["unsent"] == valid and counts["sent"] == counts["accepted"] == 0, ran.out
    assert f"stopped by {signo.name}" in ran.text, ran.text
