"""A step retry that fails again while it resends what the earlier attempt left pending keeps
what that attempt settled (VERIFY-13m F4, issue 13: counts that say what really happened).

The earlier attempt's rows LINE accepted are accepted (resumed) and those LINE refused are
refused with LINE's answer, as in the same run without a ``RetryPolicy``, never "never sent".
Real Dagster runs with a ``RetryPolicy`` (one retry, no delay), HTTP over loopback to the
sandbox: the first recipients are unknown to LINE (400), then, once LINE answered a number of
requests, every request is answered 503.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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

ONE_RETRY = {"initial_retry_wait": 1, "max_retry": 1, "connection_timeout": 30}
TEXT = json.dumps({"type": "text", "text": "{{c}} sale"})


@dataclass
class Kind:
    """One LINE Messaging target: its settings, its request path, how many requests LINE
    answers before the 503s, and the counts that say what happened."""

    settings: dict[str, Any]
    path: str
    answered: int
    expected: dict[str, int]
    rows: int = 20
    unknown_recipients: int = 5
    refusals: list[str] = field(default_factory=list)


KINDS = {
    # 5 refused (400), 5 accepted, the 11th push 503 in both attempts.
    "push": Kind(
        {"target": "push_message", "template_message": TEXT, "push_concurrency": 1},
        "/v2/bot/message/push",
        10,
        {"refused_by_api": 5, "accepted": 5, "delivery_unknown": 1, "unsent": 9},
    ),
    # Groups of 2: 5 refused (isolated: to[0] named, then alone), 9 accepted, the group of
    # rows 15-16 503 in both attempts.
    "multicast": Kind(
        {
            "target": "multicast_message",
            "template_message_multicast": json.dumps({"type": "text", "text": "sale"}),
            "batch_size_multicast": 2,
            "multicast_concurrency": 1,
        },
        "/v2/bot/message/multicast",
        10,
        {"refused_by_api": 5, "accepted": 9, "delivery_unknown": 2, "unsent": 4},
    ),
    "broadcast": Kind(
        {"target": "broadcast", "template_message": TEXT},
        "/v2/bot/message/broadcast",
        2,
        {"refused_by_api": 0, "accepted": 2, "delivery_unknown": 1, "unsent": 2},
        rows=5,
        unknown_recipients=0,
    ),
    "narrowcast": Kind(
        {
            "target": "narrowcast",
            "template_message": TEXT,
            "filter": json.dumps({"demographic": {"type": "gender", "oneOf": ["male", "female"]}}),
        },
        "/v2/bot/message/narrowcast",
        2,
        {"refused_by_api": 0, "accepted": 2, "delivery_unknown": 1, "unsent": 2},
        rows=5,
        unknown_recipients=0,
    ),
}


def _run(server: SandboxServer, tmp: Path, kind: Kind, retries: int) -> tuple[Any, int]:
    sandbox = server.sandbox
    store_of(sandbox).unknown_users.update(uid(n) for n in range(kind.unknown_recipients))
    # LINE answers ``answered`` requests, then 503 to every one (both step attempts).
    sandbox.add_fault(Fault(path=kind.path, method="POST", times=kind.answered))
    sandbox.add_fault(Fault(path=kind.path, method="POST", status=503, times=-1))
    db = tmp / f"r{next(COUNTER)}.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(
            "create table t as select * from (values "
            + ", ".join(f"('{uid(n)}', 'c{n}')" for n in range(kind.rows))
            + ") v(id, c)"
        )
    asset = build_export(
        f"rs{next(COUNTER)}",
        destination="line_messaging",
        query="select * from t",
        settings={**kind.settings, **ONE_RETRY},
        retry_policy=dg.RetryPolicy(max_retries=retries, delay=0) if retries else None,
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            "line_messaging": LineMessagingResource(base_url=server.url, poll_seconds=0.05),
        },
        raise_on_error=False,
    )
    restarts = sum(e.event_type_value == "STEP_RESTARTED" for e in result.all_events)
    assert not result.success
    return outcome_metadata(result), restarts


def _counts(meta: dict[str, Any]) -> dict[str, int]:
    return {
        k: meta[f"rows_{k}"] for k in ("refused_by_api", "accepted", "delivery_unknown", "unsent")
    }


@pytest.mark.parametrize("name", list(KINDS))
def test_step_retry_failing_on_its_resend_keeps_what_the_earlier_attempt_settled(
    sandbox_server: SandboxServer, tmp_path: Path, name: str
) -> None:
    kind = KINDS[name]
    meta, restarts = _run(sandbox_server, tmp_path, kind, retries=1)
    assert restarts == 1, meta
    assert adds_up(meta), meta
    assert _counts(meta) == kind.expected, meta
    if kind.expected["refused_by_api"]:  # with LINE's answer
        assert any("LINE refused" in reason for reason in meta["refusals_by_answer"]), meta


@pytest.mark.parametrize("name", ["push", "multicast"])
def test_without_a_retry_policy_the_same_counts(
    sandbox_server: SandboxServer, tmp_path: Path, name: str
) -> None:
    """The same faults in one step attempt: the figures the step retry must keep."""
    kind = KINDS[name]
    meta, restarts = _run(sandbox_server, tmp_path, kind, retries=0)
    assert restarts == 0 and adds_up(meta), meta
    assert _counts(meta) == kind.expected, meta
