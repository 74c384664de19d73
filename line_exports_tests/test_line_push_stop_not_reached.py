"""LINE push / multicast requests that never reached LINE (no connection could be opened) count
unsent, also over Dagster step retries: never of unknown delivery.

The first step attempt records each request ``pending`` before sending it; when no attempt of
it reached LINE the record is marked :data:`~line_exports.outcomes.NOT_REACHED`
(:meth:`~line_exports.ledger_request.LedgerRequest.failed`'s rule, shared by every destination),
so the step retry that meets it sends it again as a first send, and counts its rows unsent when
LINE is still out of reach. Without the mark, the retry took the pending record for an attempt
that may have reached LINE, and counted the rows of unknown delivery.

"Not reached" is exact here: a :class:`~line_exports.sandbox.gate.Gate` in front of the sandbox
refuses every new connection once LINE's quota was read (the pooled connection that read it
keeps working, so the quota and bot-info reads of every attempt succeed), as when the network
to LINE goes down between two calls. A cut connection or a lost answer is a different case (the
request may have reached LINE): :mod:`test_step_retry_outcomes`. Real Dagster runs with a
``RetryPolicy``, HTTP to the sandbox.
"""

from __future__ import annotations

import dagster as dg
import pytest
import requests

from line_exports import LineMessagingResource, SqlSource, build_export
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.gate import Gate
from line_exports.sandbox.line_messaging import summary
from line_exports_tests.line_coupon_runs import ROWS, TARGETS, coupon_run, expected, fates
from line_exports_tests.test_outcomes import adds_up, outcome_metadata, table_row

QUOTA_READ = b"GET /v2/bot/message/quota/consumption"
BOT_INFO = b"GET /v2/bot/info"
REOPEN = 4.0  # seconds the gate stays closed: past the first attempt's retry after 1 s
DELAY = 6.0  # the step retry starts once the gate reopened (no wait when it never reopens)
CLOSINGS = {
    # The last read before each attempt sends: the first attempt reads the quota, its retry
    # resends what the first left pending before reading anything (the gate stays shut).
    ("push_message", "append"): ([QUOTA_READ], None),
    ("multicast_message", "append"): ([QUOTA_READ], None),
    # diff: the retry reads the bot's info (the channel), then resends what the first attempt
    # left pending, before it plans.
    ("push_message", "diff"): ([QUOTA_READ, BOT_INFO], REOPEN),
    ("multicast_message", "diff"): ([QUOTA_READ, BOT_INFO], REOPEN),
}


@pytest.mark.parametrize("sync_mode", ["append", "diff"])
@pytest.mark.parametrize("target", list(TARGETS))
def test_requests_that_never_reached_line_are_unsent_after_a_step_retry(
    sandbox_server: SandboxServer, target: str, sync_mode: str
) -> None:
    sandbox = sandbox_server.sandbox
    closings, reopen = CLOSINGS[target, sync_mode]
    upstream = (sandbox_server.host, sandbox_server.port)
    with Gate(upstream, closings, reopen) as gate:
        retry = dg.RetryPolicy(max_retries=1, delay=DELAY if reopen else 0)
        result = coupon_run(gate.url, target, sync_mode, retry)
    assert gate.closings == len(closings), [(r.method, r.path) for r in sandbox.requests]
    assert sum(e.event_type_value == "STEP_RESTARTED" for e in result.all_events) == 1
    assert not result.success
    assert not [r for r in sandbox.requests if r.method == "POST"], sandbox.requests
    assert summary(sandbox)["messages_delivered"] == 0
    meta = outcome_metadata(result)
    assert adds_up(meta), meta
    assert meta["rows_read"] - meta["rows_rejected"] == ROWS, meta
    assert fates(meta) == expected(unsent=ROWS), meta
    row = table_row(result)
    assert (row["unsent"], row["unknown"]) == (ROWS, 0), row


def test_broadcasts_that_never_reached_line_are_unsent_after_a_step_retry(
    sandbox_server: SandboxServer,
) -> None:
    """The same for narrowcast's sender (a broadcast a row): the first attempt reads the quota
    and the friends LINE would reach, then its broadcast is refused a connection; the retry
    sends that one again before reading anything (refused too)."""
    sandbox = sandbox_server.sandbox
    friends = [f"U{n:032x}" for n in range(3)]
    requests.put(
        f"{sandbox_server.url}/_sandbox/line_messaging/followers",
        json={"followers": friends},
        timeout=5,
    ).raise_for_status()
    followers = b"GET /v2/bot/insight/followers"
    asset = build_export(
        "campaign",
        destination="line_messaging",
        query="SELECT 'Summer' AS campaign UNION ALL SELECT 'Autumn'",
        settings={
            "target": "broadcast",
            "template_message": '{"type": "text", "text": "{{campaign}}: 20% off"}',
            "initial_retry_wait": 1,
            "max_retry": 1,
        },
        retry_policy=dg.RetryPolicy(max_retries=1),  # the gate never reopens: no wait
    )
    upstream = (sandbox_server.host, sandbox_server.port)
    with Gate(upstream, [followers], None) as gate:
        result = dg.materialize(
            [asset],
            resources={
                "line_messaging": LineMessagingResource(base_url=gate.url, poll_seconds=0.05),
                "sql_source": SqlSource(),
            },
            raise_on_error=False,
        )
    assert gate.closings == 1, [(r.method, r.path) for r in sandbox.requests]
    assert not result.success
    assert not [r for r in sandbox.requests if r.method == "POST"], sandbox.requests
    meta = outcome_metadata(result)
    assert adds_up(meta), meta
    assert meta["rows_unsent"] == meta["rows_read"] == 2, meta
    assert meta["rows_delivery_unknown"] == 0 and meta["rows_refused_by_api"] == 0, meta
