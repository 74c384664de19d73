"""A MAAC custom segment whose create got a 5xx and then 429s, and that MAAC made after the
run's lookup found nothing (a late create): a re-run of the same tick finds it by name, uses
it, sends nothing and creates nothing again, and counts its rows accepted and resumed, none of
them in ``rows_sent`` (README: ``rows_sent`` counts the rows this run's delivery sent;
VERIFY-13t N1). Real Dagster runs over HTTP to the sandbox."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb

from line_exports import build_export
from line_exports.destinations.maac import segment_csv
from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.maac import summary as maac_summary
from line_exports.sources import SqlSource
from line_exports_tests.test_outcomes import adds_up, outcome_metadata
from line_exports_tests.test_refused_by_api import CASES_HERE, ONE_RETRY, REQUEST

ROWS = 5
TICK = {"dagster/scheduled_execution_time": "2026-05-01T09:00:00+00:00"}


def test_a_rerun_takes_the_segment_a_late_create_made_and_sends_nothing(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    case = CASES_HERE["maac_segment"]
    frame = case.table(["valid"] * ROWS).frame  # noqa: F841 - read by DuckDB below
    db = tmp_path / "s.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table t as select * from frame")
    asset = build_export(
        "late_segment",
        destination="maac",
        query="select * from t",
        settings={**case.settings, **ONE_RETRY, "segment_name": "late"},
        retry_policy=None,
    )
    resource = case.resource(sandbox_server)
    resources = {"sql_source": SqlSource(url=f"duckdb:///{db}"), "maac": resource}
    sandbox = sandbox_server.sandbox
    path = REQUEST["maac_segment"]
    sandbox.add_fault(Fault(path=path, method="POST", status=500, times=1))
    sandbox.add_fault(Fault(path=path, method="POST", status=429, retry_after=0, times=-1))
    first = dg.materialize([asset], resources=resources, tags=TICK, raise_on_error=False)
    meta = outcome_metadata(first)
    assert not first.success and adds_up(meta), meta
    assert meta["rows_delivery_unknown"] == ROWS, meta
    assert len(maac_summary(sandbox)["segments"]) == 0

    # MAAC makes it late: the same name and UIDs, after the run's lookup found nothing.
    sandbox.clear_faults()
    uids = frame["line_uid"]
    made = resource.get_client().create_segment("late", None, segment_csv(uids), set())

    again = dg.materialize([asset], resources=resources, tags=TICK, raise_on_error=False)
    meta = outcome_metadata(again)
    assert again.success and adds_up(meta), meta
    assert (meta["rows_accepted"], meta["rows_sent"], meta["rows_resumed"]) == (ROWS, 0, ROWS), meta
    segments = maac_summary(sandbox)["segments"]
    assert len(segments) == 1, segments  # never created twice
    assert meta["segment_id"] == int(made["id"]), meta
