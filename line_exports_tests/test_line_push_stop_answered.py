"""A LINE push / multicast ``diff`` run whose requests LINE answered 500 until the retries were
spent, over Dagster step retries (VERIFY-18e F2): the last attempt's counts say what happened.

Each step retry first settles the requests the earlier attempt left pending (the same body
under the same ``X-Line-Retry-Key``, :mod:`line_exports.sync_settle`) and stops at the first
resend LINE answers 500 again. Before, that stop escaped with no report and the run table read
"unsent 6, requests 0" although LINE had answered every request 500. Now its rows are counted by
:func:`line_exports.outcomes.fate_of`: the failed resend's by its answer (a 500: of unknown
delivery, LINE may have acted), those of the requests not sent again by the
ledger's record of their earlier attempt, accepted resends accepted. Real Dagster runs with a
``RetryPolicy``, HTTP to the sandbox with its faults; the metadata, the CLI's run table and the
headline agree.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest

from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.line_messaging import summary
from line_exports_tests.line_coupon_runs import GROUP, ROWS, expected, fates
from line_exports_tests.line_coupon_runs import coupon_run as run_on
from line_exports_tests.test_outcomes import adds_up, outcome_metadata, table_row

PATHS = {"push_message": "/v2/bot/message/push", "multicast_message": "/v2/bot/message/multicast"}


def requests_of(target: str) -> int:
    """Requests the first attempt sends: a push a row, a multicast a group."""
    return ROWS if target == "push_message" else ROWS // GROUP


def coupon_run(url: str, target: str) -> dg.ExecuteInProcessResult:
    """The ``diff`` export ``coupon``, two step retries (no delay)."""
    return run_on(url, target, "diff", dg.RetryPolicy(max_retries=2, delay=0))


def stopped_counts(result: dg.ExecuteInProcessResult) -> tuple[dict[str, Any], str]:
    """The failed run's metadata (checked against its run-table row) and its headline."""
    assert not result.success
    assert sum(e.event_type_value == "STEP_RESTARTED" for e in result.all_events) == 2
    meta = outcome_metadata(result)
    assert adds_up(meta), meta
    assert meta["rows_read"] == ROWS and meta["rows_rejected"] == 0, meta
    row = table_row(result)
    for column, name in (
        ("refused", "rows_refused_by_api"),
        ("unsent", "rows_unsent"),
        ("unknown", "rows_delivery_unknown"),
        ("accepted", "rows_accepted"),
        ("sent", "rows_sent"),
        ("requests", "requests"),
    ):
        assert row[column] == meta[name], (column, row, meta)
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    return meta, failure.step_failure_data.user_failure_data.description


@pytest.mark.parametrize("target", list(PATHS))
def test_500_until_the_retries_are_spent_is_of_unknown_delivery_in_every_step_attempt(
    sandbox_server: SandboxServer, target: str
) -> None:
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path=PATHS[target], status=500, times=-1))
    meta, headline = stopped_counts(coupon_run(sandbox_server.url, target))
    assert summary(sandbox)["messages_delivered"] == 0
    answered = [r for r in sandbox.requests if r.path == PATHS[target] and r.status == 500]
    # Every request twice in the first attempt, then one resend (twice) in each step retry.
    assert len(answered) == 2 * requests_of(target) + 2 * 2, len(answered)
    assert fates(meta) == expected(unknown=ROWS), meta
    assert meta["rows_sent"] == ROWS and meta["requests"] == 1, meta
    assert "answered 500" in headline, headline


@pytest.mark.parametrize("target", list(PATHS))
def test_resends_accepted_before_the_500_stay_accepted(
    sandbox_server: SandboxServer, target: str
) -> None:
    sandbox = sandbox_server.sandbox
    path = PATHS[target]
    sandbox.add_fault(Fault(path=path, status=500, times=2 * requests_of(target)))
    sandbox.add_fault(Fault(path=path, times=1))  # the first resend goes through
    sandbox.add_fault(Fault(path=path, status=500, times=-1))
    meta, _ = stopped_counts(coupon_run(sandbox_server.url, target))
    delivered = summary(sandbox)["messages_delivered"]
    first = 1 if target == "push_message" else GROUP
    assert delivered == first, delivered
    assert fates(meta) == expected(unknown=ROWS - first, accepted=first), meta


@pytest.mark.parametrize("target", list(PATHS))
def test_lost_answers_then_500_are_of_unknown_delivery(
    sandbox_server: SandboxServer, target: str
) -> None:
    sandbox = sandbox_server.sandbox
    path = PATHS[target]
    # LINE takes every request of the first attempt, its answers lost; then 500 forever.
    sandbox.add_fault(Fault(path=path, lose_answer=True, times=2 * requests_of(target)))
    sandbox.add_fault(Fault(path=path, status=500, times=-1))
    meta, headline = stopped_counts(coupon_run(sandbox_server.url, target))
    assert summary(sandbox)["messages_delivered"] == ROWS
    assert fates(meta) == expected(unknown=ROWS), meta
    assert f"{ROWS} rows of unknown delivery" in headline, headline
