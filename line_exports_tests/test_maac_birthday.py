"""A MAAC birthday in year 0000 is rejected per row, not sent to fail the whole import task
(VERIFY-13c F13). One definition (``maac_spec.BIRTHDAY_PATTERN`` / ``is_birthday``) for the
exporter and the sandbox. A real Dagster run over HTTP to the MAAC sandbox."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb

from line_exports import MaacResource, SqlSource, build_export
from line_exports.maac_spec import BIRTHDAY_MESSAGE
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.maac import store_of
from line_exports_tests.test_outcomes import COUNTER, adds_up, outcome_metadata


def test_a_year_0000_birthday_is_rejected_and_the_good_members_imported(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    db = tmp_path / "b.duckdb"
    uids = [f"U{n:032x}" for n in (0xB1, 0xB2, 0xB3)]
    with duckdb.connect(str(db)) as con:
        con.execute("create table m (line_uid varchar, birthday varchar)")
        con.executemany(
            "insert into m values (?, ?)",
            [(uids[0], "1990-01-02"), (uids[1], "0000-01-01"), (uids[2], None)],
        )
    asset = build_export(
        f"birthday_{next(COUNTER)}",
        destination="maac",
        query="select * from m",
        settings={"data_object": "members", "import_key": "line_uid", "tags": "t"},
        retry_policy=None,
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            "maac": MaacResource(base_url=sandbox_server.url, poll_seconds=0.05),
        },
        raise_on_error=False,
    )
    meta = outcome_metadata(result)
    assert adds_up(meta) and meta["rows_rejected"] == 1 and meta["rows_accepted"] == 2, meta
    assert meta["rejects_by_rule"] == {"birthday: pattern": 1}, meta
    assert BIRTHDAY_MESSAGE in Path(meta["rejects_file"]).read_text(), meta
    members = store_of(sandbox_server.sandbox).members
    assert uids[0] in str(members) and uids[1] not in str(members)
