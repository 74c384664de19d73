"""Outcomes across Dagster step retries in MAAC, CAPI and LinkedIn (issue 13, ``ledger_request``).

As for LINE (``test_step_retry_outcomes.py``): the export's ``RetryPolicy`` re-runs the whole
step; when the first attempt's request reached the API but its answer was lost, and every later
attempt is answered 503, the rows are of unknown delivery (the API may hold them), never
refused. A request every attempt of which was answered 503 is of unknown delivery too (a 5xx
may have acted: ``outcomes.fate_of``). Real Dagster run,
retried step (0 s delay), HTTP to the sandbox with its faults.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from line_exports import SqlSource, build_export
from line_exports.sandbox import Fault, Sandbox, SandboxServer
from line_exports.sandbox import linkedin as linkedin_sandbox
from line_exports.sandbox import maac as maac_sandbox
from line_exports.sandbox.line_conversion import events_of
from line_exports_tests.test_outcomes import CASES, COUNTER, adds_up, outcome_metadata
from line_exports_tests.test_step_retry_outcomes import _restarts

ROWS = 3
ONE_RETRY = {"initial_retry_wait": 1, "max_retry": 1, "connection_timeout": 30}
HTTP_ATTEMPTS = ONE_RETRY["max_retry"] + 1  # of one request in one step attempt


SEGMENT = {"data_object": "segments", "segment_name": "retried", "import_key": None, "tags": None}


def _empty_segment(sandbox: Sandbox, name: str) -> None:
    store = maac_sandbox.store_of(sandbox)
    with sandbox.lock:
        segment = maac_sandbox.Segment(store.new_id(), name, "", [], time.monotonic())
        store.segments[segment.id] = segment


@dataclass(frozen=True)
class Request:
    """The one request of a small export, and what the API holds once it acted on it."""

    case: str  # in test_outcomes.CASES
    settings: dict[str, Any]
    path: str
    method: str
    delivered: Callable[[Sandbox], int]
    prepare: Callable[[Sandbox], None] = lambda s: None


REQUESTS = {
    "maac_import": Request(
        "maac",
        {},
        "/openapi/v1/member/import/",
        "POST",
        lambda s: maac_sandbox.summary(s)["members"],
    ),
    "maac_segment": Request(  # update_segment replaces the members of the segment "retried"
        "maac",
        {**SEGMENT, "update_segment": True},
        "/openapi/v1/custom_segment/",
        "PATCH",
        lambda s: maac_sandbox.summary(s)["segments"]["retried"],
        lambda s: _empty_segment(s, "retried"),
    ),
    "capi": Request(
        "line_conversion",
        {},
        "/v1/tag-o/events",
        "POST",
        lambda s: len(events_of(s, "tag-o")),
    ),
    "linkedin": Request(
        "linkedin",
        {},
        "/rest/dmpSegments/",  # BATCH_CREATE to /rest/dmpSegments/{id}/users
        "POST",
        lambda s: sum(linkedin_sandbox.summary(s)["segments"].values()),
        # A new segment takes members at once (not after LinkedIn's 404 for a few seconds).
        lambda s: setattr(linkedin_sandbox.store_of(s), "not_found_seconds", 0.0),
    ),
}


def _faults(request: Request, lost: int, then_503: bool) -> list[Fault]:
    """The request's first ``lost`` HTTP attempts act but lose their answers, then
    (``then_503``) every later one is answered 503."""
    on = {"path": request.path, "method": request.method}
    return [
        *([Fault(**on, lose_answer=True, times=lost)] if lost else []),
        *([Fault(**on, status=503, times=-1)] if then_503 else []),
    ]


def _run(
    server: SandboxServer, tmp: Path, request: Request, faults: list[Fault]
) -> tuple[dg.ExecuteInProcessResult, dict[str, Any], int]:
    """The export of ``request`` with those faults: the run, its outcome metadata and the rows
    the API holds."""
    sandbox = server.sandbox
    request.prepare(sandbox)
    for fault in faults:
        sandbox.add_fault(fault)
    case = CASES[request.case]
    frame = case.table(["valid"] * ROWS).frame  # noqa: F841 - read by DuckDB below
    db = tmp / f"r{next(COUNTER)}.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table t as select * from frame")
    settings = {**case.settings, **request.settings, **ONE_RETRY}
    result = dg.materialize(
        [
            build_export(
                f"x{next(COUNTER)}",
                destination=case.destination,
                query="select * from t",
                settings={k: v for k, v in settings.items() if v is not None},
                retry_policy=dg.RetryPolicy(max_retries=2, delay=0),
            )
        ],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            case.destination: case.resource(server),
        },
        raise_on_error=False,
    )
    return result, outcome_metadata(result), request.delivered(sandbox)


# (HTTP attempts of the first step attempt that act but lose their answers, then 503 on every
# later one) -> (rows the API holds, step restarts, success, refused, unknown, accepted)
SCENARIOS: dict[str, tuple[tuple[int, bool], tuple[int, int, bool, int, int, int]]] = {
    # The API took the rows in the first step attempt: unknown, never refused.
    "lost_then_503_is_unknown": ((HTTP_ATTEMPTS, True), (ROWS, 2, False, 0, ROWS, 0)),
    # Every attempt answered 5xx: it may have acted, unknown (here it holds nothing).
    "503_every_time_is_unknown": ((0, True), (0, 2, False, 0, ROWS, 0)),
    # A pending record is not done: the next step attempt sends the request again.
    "lost_then_through_is_accepted": ((HTTP_ATTEMPTS, False), (ROWS, 1, True, 0, 0, ROWS)),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("name", list(REQUESTS))
def test_counts_across_step_retries(
    sandbox_server: SandboxServer, tmp_path: Path, name: str, scenario: str
) -> None:
    (lost, then_503), expected = SCENARIOS[scenario]
    request = REQUESTS[name]
    result, meta, delivered = _run(
        sandbox_server, tmp_path, request, _faults(request, lost, then_503)
    )
    found = (_restarts(result), result.success, meta["rows_refused_by_api"])
    found += (meta["rows_delivery_unknown"], meta["rows_accepted"])
    assert (delivered, *found) == expected and adds_up(meta), meta


CREATE = Request(
    "maac",
    SEGMENT,
    "/openapi/v1/custom_segment/",
    "POST",
    lambda s: sum(seg.name == "retried" for seg in maac_sandbox.store_of(s).segments.values()),
)


def test_a_segment_create_whose_answer_was_lost_is_made_once(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """MAAC makes another segment of the same name for each create it takes: the resend after a
    lost answer finds the segment that create made instead of making a second."""
    faults = _faults(CREATE, 1, False)
    result, meta, segments = _run(sandbox_server, tmp_path, CREATE, faults)
    assert segments == 1 and result.success and _restarts(result) == 0, meta
    assert meta["rows_accepted"] == ROWS and meta["segment_action"] == "created" and adds_up(meta)


def test_a_step_retry_takes_the_segment_an_earlier_attempt_made(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """The first step attempt's create loses its answer, finds the segment it made, and cannot
    read its state (503); the second attempt takes that segment (the ids of the segments of
    that name before the create are in the pending record) instead of making a second."""
    next_id = maac_sandbox.store_of(sandbox_server.sandbox).next_id + 1
    state = Fault(f"/openapi/v1/segment/{next_id}/", "GET", status=503, times=HTTP_ATTEMPTS)
    faults = [*_faults(CREATE, 1, False), state]
    result, meta, segments = _run(sandbox_server, tmp_path, CREATE, faults)
    assert segments == 1 and result.success and _restarts(result) == 1, meta
    assert meta["rows_accepted"] == ROWS and meta["segment_id"] == next_id and adds_up(meta)
