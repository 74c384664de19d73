"""A LINE message answered 500 stays of unknown delivery when LINE can no longer be reached
(VERIFY-13h N4).

LINE, "Retry failed API requests" (https://developers.line.biz/en/docs/messaging-api/
retrying-api-request): after a 5xx "there is a possibility that your message was delivered".
So a request LINE answered 500 (and delivered, ``Fault(act=True)``) is of unknown delivery,
whatever the attempts after it meet: here a :class:`~line_exports.sandbox.gate.Gate` in front
of the sandbox refuses every connection once LINE answered the first message request, so the
HTTP retry of that call (``max_retry`` 1) and the Dagster step retry never reach LINE. The
step retry sends the requests the earlier attempt left pending again first, before it reads
the quota (push, multicast and broadcast alike); it cannot, and counts them by what the earlier
attempt got (a 5xx), not unsent: 1 row of unknown delivery (the one LINE delivered), 1 never
sent. Before, a multicast or broadcast retry read the quota first, failed, and counted both
rows unsent; a 500 then a refused connection within one call counted unsent too.
Real Dagster runs with a ``RetryPolicy``, HTTP through the gate to the sandbox.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest
import requests

from line_exports import LineMessagingResource, SqlSource, build_export
from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.gate import Gate
from line_exports.sandbox.line_messaging import summary
from line_exports_tests.test_outcomes import adds_up, outcome_metadata, table_row

BROADCAST = '{"type": "text", "text": "coupon {{code}}"}'
FRIENDS = [f"U{n:032x}" for n in range(3)]
TARGETS: dict[str, tuple[str, dict[str, Any]]] = {
    "push_message": (
        "/v2/bot/message/push",
        {"template_message": '{"type": "text", "text": "coupon {{code}}"}', "push_concurrency": 1},
    ),
    "multicast_message": (
        "/v2/bot/message/multicast",
        {
            "template_message_multicast": '{"type": "text", "text": "coupon"}',
            "batch_size_multicast": 1,
            "multicast_concurrency": 1,
        },
    ),
    # a broadcast a row (narrowcast's sender): each reaches every friend
    "broadcast": ("/v2/bot/message/broadcast", {"template_message": BROADCAST}),
}


def gated_run(url: str, target: str) -> dg.ExecuteInProcessResult:
    """2 recipients, one request each, one at a time, one HTTP retry, one Dagster step retry."""
    asset = build_export(
        "coupon",
        destination="line_messaging",
        query=(
            "select 'U' || lpad(printf('%x', range), 32, '0') as id, 'C' || range as code "
            "from range(2)"
        ),
        settings={
            "target": target,
            "initial_retry_wait": 1,
            "max_retry": 1,
            "connection_timeout": 30,
            **TARGETS[target][1],
        },
        retry_policy=dg.RetryPolicy(max_retries=1, delay=0),
    )
    return dg.materialize(
        [asset],
        resources={
            "line_messaging": LineMessagingResource(base_url=url, poll_seconds=0.05),
            "sql_source": SqlSource(),
        },
        raise_on_error=False,
    )


@pytest.mark.parametrize("target", list(TARGETS))
def test_a_message_answered_500_stays_unknown_when_line_is_out_of_reach_after_it(
    sandbox_server: SandboxServer, target: str
) -> None:
    sandbox = sandbox_server.sandbox
    path = TARGETS[target][0]
    sandbox.add_fault(Fault(path=path, method="POST", status=500, act=True, times=-1))
    requests.put(
        f"{sandbox_server.url}/_sandbox/line_messaging/followers",
        json={"followers": FRIENDS},
        timeout=5,
    ).raise_for_status()
    upstream = (sandbox_server.host, sandbox_server.port)
    with Gate(upstream, [f"POST {path}".encode()]) as gate:
        result = gated_run(gate.url, target)
    assert gate.closings == 1
    assert sum(e.event_type_value == "STEP_RESTARTED" for e in result.all_events) == 1
    assert not result.success
    assert [r.status for r in sandbox.requests if r.method == "POST"] == [500]
    # LINE delivered the one it answered 500 (a broadcast: to every friend)
    assert summary(sandbox)["messages_delivered"] == (3 if target == "broadcast" else 1)
    meta = outcome_metadata(result)
    assert adds_up(meta), meta
    counts = [meta[f"rows_{k}"] for k in ("delivery_unknown", "unsent", "refused_by_api")]
    assert counts == [1, 1, 0], meta
    (reason,) = meta["delivery_unknown_reasons"]
    assert reason.startswith("a 5xx answer to 1 earlier attempt(s), then LINE was not reached"), (
        reason
    )
    assert "may have acted on it" in reason, reason
    row = table_row(result)
    assert (row["unknown"], row["unsent"]) == (1, 1), row
