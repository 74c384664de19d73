"""Outcomes across Dagster step retries (VERIFY-13b B0, ``outcomes.unanswered_before``).

The export's ``RetryPolicy`` re-runs the whole step; the last attempt must not forget that an
earlier attempt of the same run scope sent a request whose answer never came (the ledger holds
it ``pending``): a 429/5xx answered to the resend then leaves it of unknown delivery, never
refused (LINE may have delivered it; a ``diff`` run would resend a refused row). A request every
attempt of which was answered 503 is of unknown delivery too (a 5xx may have acted; a 429 stays
refused: test_fate_5xx.py). Real Dagster run, retried step (0 s delay),
HTTP to the sandbox with its faults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from line_exports import build_export
from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.line_messaging import summary
from line_exports.sources import SqlSource
from line_exports_tests.test_outcomes import CASES, COUNTER, adds_up, outcome_metadata, uid

ROWS = 3
ONE_RETRY = {"initial_retry_wait": 1, "max_retry": 1, "connection_timeout": 30}
PATHS = {"line_push": "/v2/bot/message/push", "line_multicast": "/v2/bot/message/multicast"}
BROADCAST = {
    "target": "broadcast",
    "template_message": json.dumps({"type": "text", "text": "{{c}}"}),
}


def _run(
    server: SandboxServer, tmp: Path, name: str, broadcast: bool = False
) -> tuple[dg.ExecuteInProcessResult, Any]:
    case = CASES[name]
    db = tmp / f"r{next(COUNTER)}.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(
            "create table t as select 'c0' as c"
            if broadcast
            else "create table t as select * from (values "
            + ", ".join(f"('{uid(n)}', 'n{n}')" for n in range(ROWS))
            + ") v(id, name)"
        )
    asset = build_export(
        f"s{next(COUNTER)}",
        destination=case.destination,
        query="select * from t",
        settings={**(BROADCAST if broadcast else case.settings), **ONE_RETRY},
        retry_policy=dg.RetryPolicy(max_retries=2, delay=0),
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            case.destination: case.resource(server),
        },
        raise_on_error=False,
    )
    return result, outcome_metadata(result)


def _restarts(result: dg.ExecuteInProcessResult) -> int:
    return sum(e.event_type_value == "STEP_RESTARTED" for e in result.all_events)


@pytest.mark.parametrize("name", list(PATHS))
def test_lost_answers_then_503_in_step_retries_is_unknown_never_refused(
    sandbox_server: SandboxServer, tmp_path: Path, name: str
) -> None:
    sandbox = sandbox_server.sandbox
    requests = ROWS if name == "line_push" else 1
    # Every HTTP attempt of the first step attempt acts but loses its answer, then 503 forever.
    sandbox.add_fault(Fault(path=PATHS[name], lose_answer=True, times=2 * requests))
    sandbox.add_fault(Fault(path=PATHS[name], status=503, times=-1))
    result, meta = _run(sandbox_server, tmp_path, name)
    state = summary(sandbox)
    assert state["messages_delivered"] == ROWS, state  # LINE delivered every message
    assert _restarts(result) == 2 and not result.success
    assert adds_up(meta), meta
    assert meta["rows_refused_by_api"] == 0, meta
    assert meta["rows_delivery_unknown"] == ROWS and meta["rows_accepted"] == 0, meta


def test_503_in_every_step_attempt_is_unknown(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path=PATHS["line_push"], status=503, times=-1))
    result, meta = _run(sandbox_server, tmp_path, "line_push")
    assert summary(sandbox)["messages_delivered"] == 0
    assert _restarts(result) == 2 and not result.success and adds_up(meta), meta
    assert meta["rows_refused_by_api"] == 0 and meta["rows_delivery_unknown"] == ROWS, meta


def test_lost_answers_then_409_in_a_step_retry_are_accepted(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path=PATHS["line_push"], lose_answer=True, times=2 * ROWS))
    result, meta = _run(sandbox_server, tmp_path, "line_push")
    state = summary(sandbox)
    assert state["messages_delivered"] == ROWS and state["retry_key_conflicts"] >= ROWS, state
    assert _restarts(result) == 1 and result.success, meta
    assert meta["rows_accepted"] == ROWS and meta["rows_refused_by_api"] == 0, meta


def test_broadcast_lost_answers_then_503_in_step_retries_is_unknown(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    sandbox = sandbox_server.sandbox
    path = "/v2/bot/message/broadcast"
    sandbox.add_fault(Fault(path=path, lose_answer=True, times=2))
    sandbox.add_fault(Fault(path=path, status=503, times=-1))
    result, meta = _run(sandbox_server, tmp_path, "line_push", broadcast=True)
    assert _restarts(result) == 2 and not result.success and adds_up(meta), meta
    assert meta["rows_refused_by_api"] == 0 and meta["rows_delivery_unknown"] == 1, meta
