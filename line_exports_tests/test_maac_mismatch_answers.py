"""MAAC members it does not match carry MAAC's answer whatever the import key (VERIFY-13c F2).

Real Dagster runs over HTTP to the MAAC sandbox: members imported by ``email``, ``mobile`` or
``customer_id`` that are no members of the account are counted refused with the answer a
``line_uid`` import gives them (the import task's id and ``mismatch_num``), in
``refusals_by_answer`` and in the failure, though MAAC's mismatch file cannot name their rows.
"""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from line_exports import MaacResource, SqlSource, build_export
from line_exports.sandbox import SandboxServer
from line_exports_tests.test_outcomes import COUNTER, adds_up, outcome_metadata

ANSWER = re.compile(
    r"MAAC did not match this member in import task \d+ \(mismatch_num: not a member, or "
    r"blocked the account\)"
)
VALUES = {
    "email": "'nobody' || i || '@example.com'",
    "mobile": "'+886933000' || lpad(i::varchar, 3, '0')",
    "customer_id": "'cust-nobody-' || i",
}


def _materialize(
    tmp: Path, url: str, key: str, query: str
) -> tuple[dg.ExecuteInProcessResult, dict]:
    db = tmp / f"m{next(COUNTER)}.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(f"create table m as select {VALUES[key]} as {key} from range(3) r(i)")
    asset = build_export(
        f"mismatch_{key}_{next(COUNTER)}",
        destination="maac",
        query=query,
        settings={"data_object": "members", "import_key": key, "tags": "t", "max_retry": 1},
        retry_policy=None,
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            "maac": MaacResource(base_url=url, poll_seconds=0.05),
        },
        raise_on_error=False,
    )
    return result, outcome_metadata(result)


@pytest.mark.parametrize("key", list(VALUES))
def test_unmatched_members_by_any_key_carry_maacs_answer(
    sandbox_server: SandboxServer, tmp_path: Path, key: str
) -> None:
    result, meta = _materialize(tmp_path, sandbox_server.url, key, f"select {key} from m")
    assert not result.success and adds_up(meta) and meta["rows_refused_by_api"] == 3, meta
    (answer,) = meta["refusals_by_answer"].items()
    assert ANSWER.fullmatch(answer[0]) and answer[1] == 3, meta
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    said = failure.step_failure_data.error.message  # type: ignore[union-attr]
    assert f"3 refused by the API (first answers: 3 rows: {answer[0]})" in said, said
