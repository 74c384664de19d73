"""LINE Conversion API: a failure (503) while the run isolates the event LINE refused in a
request (VERIFY-13m F5), and a step retry whose resend of that request fails again
(VERIFY-13m F4), count what really happened (issue 13).

1,000 events in one request; LINE refuses any request holding ``k3`` (400) and answers 12
requests (the bisection down to ``k3``: 9 refused, ``k0..k1`` and ``k2`` accepted, ``k2..k3``
refused), then 503 to every one. The events of the refused requests the run never got to split
again were sent and refused whole: refused "not isolated", never "never sent"; the 3 events
LINE accepted stay accepted when a step retry's resend of the whole request is answered 503.
Real Dagster runs, HTTP over loopback to the sandbox.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from line_exports import LineConversionResource, build_export
from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.line_conversion import events_of, refuse_events
from line_exports.sources import SqlSource
from line_exports_tests.test_outcomes import COUNTER, adds_up, outcome_metadata

EVENTS = 1_000
PATH = "/v1/"
ONE_RETRY = {"initial_retry_wait": 1, "max_retry": 1, "connection_timeout": 30}


def _run(server: SandboxServer, tmp: Path, retries: int) -> tuple[dict[str, Any], int]:
    sandbox = server.sandbox
    refuse_events(sandbox, ["k3"])
    sandbox.add_fault(Fault(path=PATH, method="POST", times=12))  # answered as LINE would
    sandbox.add_fault(Fault(path=PATH, method="POST", status=503, times=-1))
    db = tmp / f"c{next(COUNTER)}.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(
            f"create table t as select 'k' || n as deduplication_key, 'conversion' as event_type, "
            f"'web' as source_type, {int(time.time()) - 60} as event_timestamp, "
            f"'x' || n as external_id from range({EVENTS}) r(n)"
        )
    asset = build_export(
        f"rc{next(COUNTER)}",
        destination="line_conversion",
        query="select * from t",
        settings=ONE_RETRY,
        retry_policy=dg.RetryPolicy(max_retries=retries, delay=0) if retries else None,
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            "line_conversion": LineConversionResource(line_tag_id="tag-r", base_url=server.url),
        },
        raise_on_error=False,
    )
    assert not result.success
    restarts = sum(e.event_type_value == "STEP_RESTARTED" for e in result.all_events)
    return outcome_metadata(result), restarts


def _counts(meta: dict[str, Any]) -> dict[str, int]:
    return {
        k: meta[f"rows_{k}"] for k in ("refused_by_api", "accepted", "delivery_unknown", "unsent")
    }


def test_a_503_while_isolating_a_refused_event_counts_its_request_refused_not_unsent(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    meta, restarts = _run(sandbox_server, tmp_path, retries=0)
    assert restarts == 0 and adds_up(meta), meta
    assert len(events_of(sandbox_server.sandbox, "tag-r")) == 3
    assert _counts(meta) == {
        "refused_by_api": EVENTS - 4,  # k4..k999: in requests LINE refused (400) whole
        "accepted": 3,
        "delivery_unknown": 1,  # k3: 503
        "unsent": 0,
    }, meta
    assert any("not isolated" in reason for reason in meta["refusals_by_answer"]), meta


def test_a_step_retry_whose_resend_fails_keeps_the_events_line_accepted(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    meta, restarts = _run(sandbox_server, tmp_path, retries=1)
    assert restarts == 1 and adds_up(meta), meta
    assert len(events_of(sandbox_server.sandbox, "tag-r")) == 3
    # The resend of the whole request was answered 503: LINE may have acted on the others.
    assert _counts(meta) == {
        "refused_by_api": 0,
        "accepted": 3,
        "delivery_unknown": EVENTS - 3,
        "unsent": 0,
    }, meta
