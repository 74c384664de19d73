"""A second Ctrl-C (or SIGTERM) stops a LINE multicast (and a push with ``debug``, sent from
threads too) at once, its threads' requests in flight
counted of unknown delivery (they may have reached LINE: here they did, the sandbox acts on a
slow request after its client is gone), never "never sent". The run waited for every request in
flight first (its thread pool was joined, on the way out and at the interpreter's exit): up to
``connection_timeout`` after the second signal. The real ``line-exports run`` in a child process,
over HTTP to the sandbox: the first multicasts are answered at once, the next ones are slow; the
first signal asks the run to stop after them, the second stops it at once.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.line_messaging import store_of
from line_exports_tests.test_interrupt_reading import (
    HEX_ID,
    OUTCOMES,
    Export,
    exports,
    run_and_signal,
    table_row,
    workflow,
)

SLOW = 30.0  # seconds each cut-off request waits for its answer
# target: (POST path, rows, rows a request, requests side by side, requests answered at once
# (a push's window of 4 waits for its slowest: the next window is the one cut off), settings)
TARGETS: dict[str, tuple[str, int, int, int, int, str]] = {
    "multicast": (
        "/v2/bot/message/multicast",
        600,
        50,
        2,
        2,
        "    target: multicast_message\n"
        """    template_message_multicast: '{"type": "text", "text": "hi"}'\n"""
        "    batch_size_multicast: 50\n    multicast_concurrency: 2\n",
    ),
    # debug: bodies logged by the threaded client (the default sender is asyncio's)
    "push_debug": (
        "/v2/bot/message/push",
        60,
        1,
        4,
        4,
        "    target: push_message\n    push_concurrency: 4\n"
        """    template_message: '{"type": "text", "text": "hi"}'\n""",
    ),
}


@pytest.mark.parametrize(
    ("target", "second"),
    [("multicast", signal.SIGINT), ("multicast", signal.SIGTERM), ("push_debug", signal.SIGINT)],
)
def test_second_signal_stops_threaded_line_requests_at_once(
    sandbox_server: SandboxServer, tmp_path: Path, target: str, second: signal.Signals
) -> None:
    sandbox = sandbox_server.sandbox
    path, rows, size, width, fast, settings = TARGETS[target]
    connection = exports(sandbox_server.url)["push"].connection
    if target == "push_debug":
        connection += "    debug: true\n"
    folder = tmp_path / "wf"
    workflow(folder, "twice", Export(connection, f"{HEX_ID} AS id", settings), rows)
    quick = sandbox.add_fault(Fault(path=path, method="POST", delay=0.2, times=fast))
    slow = sandbox.add_fault(Fault(path=path, method="POST", delay=SLOW, times=-1))
    ran = run_and_signal(
        "twice", folder, lambda _: slow.hits >= width, [signal.SIGINT, second], gap=0.5
    )
    assert ran.code != 0, ran.text
    assert ran.seconds < SLOW - 8, (ran.seconds, ran.text)  # at once, not after the answers
    counts = table_row(ran.out, "twice")
    assert counts["read"] == rows == sum(counts[c] for c in OUTCOMES), ran.out
    assert counts["refused"] == 0 and counts["rejected"] == 0, ran.out
    assert quick.hits == fast and slow.hits == width, (quick.hits, slow.hits, ran.text)
    assert counts["accepted"] == fast * size, (counts, ran.text)
    assert counts["unknown"] == width * size, (counts, ran.text)  # the requests cut off
    assert counts["unsent"] == rows - (fast + width) * size, (counts, ran.text)
    assert f"stopped by {second.name} at once" in ran.text, ran.text
    # They did reach LINE: the sandbox delivers the slow ones once their delay is over.
    store = store_of(sandbox)
    deadline = time.monotonic() + SLOW + 30
    while len(store.inbox) < counts["sent"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(store.inbox) == counts["sent"] == (fast + width) * size, counts
