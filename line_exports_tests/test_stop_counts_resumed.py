"""``rows_sent`` of a re-run counts only the rows this run sent (README: "the rows this run's
delivery sent"; VERIFY-13f O1): batches an earlier run of the same tick delivered are resumed
from the ledger, counted accepted and ``rows_resumed``, never ``rows_sent``. Real CAPI exports
over HTTP to the sandbox, the same tick run twice on a DuckDB file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from line_exports import SqlSource, build_export
from line_exports.destinations.line_conversion import LineConversionResource
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_conversion import store_of

TICK = {"dagster/scheduled_execution_time": "2026-05-01T09:00:00+00:00"}
BATCH = 1000
STAMP = int(time.time()) - 60  # one value for both runs: the same rows, the same batches


def _table(db: Path, events: int) -> None:
    with duckdb.connect(str(db)) as con:
        con.execute(
            "create or replace table ev as select range as n, 'k' || range as deduplication_key, "
            f"'conversion' as event_type, 'web' as source_type, {STAMP} as event_timestamp, "
            f"'x' || range as external_id from range({events})"
        )


def _run(db: Path, url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run metadata, api_refusals check metadata) of one materialization of the tick."""
    asset = build_export(
        "capi_resume",
        destination="line_conversion",
        query="SELECT * EXCLUDE (n) FROM ev ORDER BY n",
        settings={"max_records": BATCH, "initial_retry_wait": 1},
        retry_policy=None,
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(duckdb_path=str(db), sample_tables=False),
            "line_conversion": LineConversionResource(line_tag_id="resume", base_url=url),
        },
        tags=TICK,
        raise_on_error=False,
    )
    assert result.success
    (event,) = result.get_asset_materialization_events()
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    (check,) = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and e.event_specific_data.check_name == "api_refusals"
    ]
    return meta, {k: v.value for k, v in check.metadata.items()}


def test_rerun_of_a_tick_counts_only_what_it_sent(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    db = tmp_path / "ev.duckdb"
    store = store_of(sandbox_server.sandbox)
    _table(db, 2 * BATCH)
    first, first_check = _run(db, sandbox_server.url)
    assert (first["rows_sent"], first["rows_resumed"], first_check["rows_sent"]) == (2000, 0, 2000)
    assert store.received_events == 2000
    # The tick's result grew: its first two batches are the ones delivered already (resumed),
    # the third is new and the only one this run sends.
    _table(db, 3 * BATCH)
    again, again_check = _run(db, sandbox_server.url)
    received = store.received_events - 2000
    assert received == BATCH
    assert again["rows_read"] == again["rows_accepted"] == 3 * BATCH
    assert again["rows_resumed"] == 2 * BATCH
    assert again["rows_sent"] == again_check["rows_sent"] == received, (again, again_check)
    assert again["requests"] == 1 and again["rows_unsent"] == 0
