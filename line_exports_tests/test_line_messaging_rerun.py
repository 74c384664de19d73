"""Kill a push export mid-way (SIGKILL, a real crash), re-run the same tick: every recipient gets
exactly one message, whatever was in flight when the process died, and the re-run's counts are
exact (the quota it needs, and accepted once each)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.line_messaging import store_of

RECIPIENTS = 300
CHILD = """
import json, sys
import dagster as dg
from line_exports import SqlSource, build_export
from line_exports.destinations.line_messaging import LineMessagingResource

query = ("SELECT 'U' || lpad(printf('%x', range), 32, '0') AS id, 'n' || range AS name FROM range({n})")
asset = build_export("push_crash", destination="line_messaging", query=query, retry_policy=None, settings={{
    "target": "push_message", "push_concurrency": 4,
    "template_message": '{{"type": "text", "text": "Hello {{{{name}}}}"}}'}})
result = dg.materialize([asset], tags={{"dagster/scheduled_execution_time": "2026-05-01T09:00:00+00:00"}},
    resources={{"sql_source": SqlSource(), "line_messaging": LineMessagingResource(base_url=sys.argv[1])}})
meta = result.get_asset_materialization_events()[0].event_specific_data.materialization.metadata
print("RESULT " + json.dumps({{k: getattr(v, "value", None) for k, v in meta.items()
                              if k in ("rows_resumed", "push_accepted", "push_already_accepted_409", "requests",
                                       "messages_needed", "messages_already_accepted",
                                       "messages_settled_pending", "rows_accepted", "rows_unsent")}}))
"""


def _child(url: str, home: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "LINE_EXPORTS_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD.format(n=RECIPIENTS), url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def test_push_killed_mid_way_then_rerun_delivers_each_message_exactly_once(
    sandbox_server: SandboxServer, line_exports_home: Path
) -> None:
    sandbox = sandbox_server.sandbox
    store = store_of(sandbox)
    # Exactly the quota the export needs: a re-run that counted the pushes LINE took but the
    # killed run had not recorded yet as still needed would fail ("needs N but only M remain").
    store.quota_limit = RECIPIENTS
    sandbox.add_fault(
        Fault(path="/v2/bot/message/push", delay=0.02, times=-1)
    )  # slow enough to kill mid-way
    first = _child(sandbox_server.url, line_exports_home)
    deadline = time.monotonic() + 60
    while store.pushes < 60:
        assert first.poll() is None, "the export finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    time.sleep(0.3)  # requests already on the wire land (or not) before the re-run starts
    delivered_before = store.pushes
    assert 60 <= delivered_before < RECIPIENTS
    sandbox.clear_faults()

    second = _child(sandbox_server.url, line_exports_home)
    out, _ = second.communicate(timeout=90)
    assert second.returncode == 0, out
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    # Recorded as accepted before the crash: skipped without a request. Accepted by LINE but not
    # yet recorded (in flight at the kill): re-sent with the same retry key, answered 409.
    assert result["rows_resumed"] + result["push_already_accepted_409"] == delivered_before
    assert result["push_accepted"] == RECIPIENTS - delivered_before
    assert result["push_already_accepted_409"] > 0  # the kill lost acceptances not yet recorded
    # The killed run recorded each window of push_concurrency pushes pending just before
    # sending it (every push that reached LINE, and at most about three windows more): the
    # re-run settles those first (409 or sent), so what it still needs against the exact quota
    # is exact: the pushes never recorded.
    taken_unrecorded = delivered_before - result["rows_resumed"]
    assert taken_unrecorded <= result["messages_settled_pending"] <= taken_unrecorded + 3 * 4
    assert result["messages_needed"] == (
        RECIPIENTS - result["rows_resumed"] - result["messages_settled_pending"]
    )
    assert result["messages_needed"] > 0
    assert result["messages_already_accepted"] == delivered_before
    assert result["rows_accepted"] == RECIPIENTS and store.quota_used == RECIPIENTS
    assert result["rows_unsent"] == 0
    for n in range(RECIPIENTS):
        received = store.received("U" + f"{n:032x}")
        assert received == [[{"type": "text", "text": f"Hello n{n}"}]], n
    assert store.pushes == RECIPIENTS
