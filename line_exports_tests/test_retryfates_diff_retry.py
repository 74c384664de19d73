"""A push in ``sync_mode: diff`` retried by Dagster counts only requests that went out as of
unknown delivery (VERIFY-13o G2; issue 13: outcomes that say what really happened).

The push sender records a window of pushes pending (ledger and, in diff, the sync store's
requests) just before it queues them. When LINE answers one push 503 for good, the pushes
queued behind it are never sent: their records are put back, so the step retry (and the next
tick's settle step) count their rows never sent, as append mode does, not "no answer from LINE
(an earlier push request: no answer recorded)". The first attempt's refusals, held by the retry,
say they were refused to an earlier step attempt of this run (the next tick: an earlier run). Real Dagster runs with a ``RetryPolicy`` (one
retry, no delay), HTTP over loopback to the sandbox: 5 recipients unknown to LINE (400), then,
once LINE answered 10 pushes, every push is answered 503.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from line_exports import build_export
from line_exports.destinations.line_messaging import LineMessagingResource
from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.line_messaging import store_of
from line_exports.sources import SqlSource
from line_exports_tests.test_outcomes import COUNTER, adds_up, outcome_metadata, uid

PATH = "/v2/bot/message/push"
ROWS = 20
SETTINGS = {
    "target": "push_message",
    "template_message": json.dumps({"type": "text", "text": "{{c}} sale"}),
    "push_concurrency": 1,
    "sync_mode": "diff",
    "initial_retry_wait": 1,
    "max_retry": 1,
    "connection_timeout": 30,
}
COUNTS = ("refused_by_api", "accepted", "delivery_unknown", "unsent")


def _counts(meta: dict[str, Any]) -> dict[str, int]:
    return {k: meta[f"rows_{k}"] for k in COUNTS}


def _posts(server: SandboxServer, since: int) -> dict[int, int]:
    statuses: dict[int, int] = {}
    for request in server.sandbox.requests[since:]:
        if request.method == "POST" and request.path.startswith(PATH):
            statuses[request.status] = statuses.get(request.status, 0) + 1
    return statuses


@pytest.mark.parametrize("debug", [False, True], ids=["aio", "threaded"])
def test_pushes_queued_behind_a_503_are_never_sent_not_unknown(
    sandbox_server: SandboxServer, tmp_path: Path, debug: bool
) -> None:
    sandbox = sandbox_server.sandbox
    store_of(sandbox).unknown_users.update(uid(n) for n in range(5))
    db = tmp_path / f"d{next(COUNTER)}.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(
            "create table t as select * from (values "
            + ", ".join(f"('{uid(n)}', 'c{n}')" for n in range(ROWS))
            + ") v(id, c)"
        )
    asset = build_export(
        f"g2{next(COUNTER)}",
        destination="line_messaging",
        query="select * from t",
        settings=SETTINGS,
        retry_policy=dg.RetryPolicy(max_retries=1, delay=0),
    )
    resources = {
        "sql_source": SqlSource(url=f"duckdb:///{db}"),
        "line_messaging": LineMessagingResource(
            base_url=sandbox_server.url, poll_seconds=0.05, debug=debug
        ),
    }

    def run(tick: str) -> tuple[dg.ExecuteInProcessResult, dict[str, Any]]:
        result = dg.materialize(
            [asset],
            resources=resources,
            tags={"dagster/scheduled_execution_time": tick},
            raise_on_error=False,
        )
        return result, outcome_metadata(result)

    sandbox.add_fault(Fault(path=PATH, method="POST", times=10))
    sandbox.add_fault(Fault(path=PATH, method="POST", status=503, times=-1))
    first = len(sandbox.requests)
    result, meta = run("2026-05-01T09:00:00+00:00")
    assert not result.success
    assert sum(e.event_type_value == "STEP_RESTARTED" for e in result.all_events) == 1
    # 5 refused, 5 accepted, then row 10 answered 503 twice in each step attempt: no push of
    # rows 11-19 reached LINE.
    assert _posts(sandbox_server, first) == {400: 5, 200: 5, 503: 4}
    assert adds_up(meta), meta
    assert _counts(meta) == {
        "refused_by_api": 5,
        "accepted": 5,
        "delivery_unknown": 1,
        "unsent": 9,
    }, meta
    reasons = meta["delivery_unknown_reasons"]
    assert list(reasons.values()) == [1], reasons
    assert "503" in next(iter(reasons)), reasons
    assert not any("no answer" in reason for reason in reasons), reasons
    # The first attempt's refusals, settled by the retry: refused to an earlier step attempt of
    # this run, not to "an earlier run".
    assert meta["refusals_by_answer"] == {
        "Failed to send messages [an earlier step attempt of this run; not sent again until "
        "the row changes]": 5
    }, meta

    # The next tick settles row 10's push under its retry key and sends the rest: each
    # recipient LINE knows gets one message.
    sandbox.clear_faults()
    second = len(sandbox.requests)
    result, meta = run("2026-05-02T09:00:00+00:00")
    assert adds_up(meta), meta
    assert _counts(meta) == {
        "refused_by_api": 5,
        "accepted": 15,
        "delivery_unknown": 0,
        "unsent": 0,
    }, meta
    assert _posts(sandbox_server, second) == {200: 10}
    assert meta["refusals_by_answer"] == {
        "Failed to send messages [an earlier run; not sent again until the row changes]": 5
    }, meta
    inbox = store_of(sandbox).inbox
    assert sorted(inbox) == sorted(uid(n) for n in range(5, ROWS))
    assert all(len(messages) == 1 for messages in inbox.values()), inbox
