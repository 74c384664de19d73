"""Free text travels exactly, surrounding spaces included (VERIFY-13j J5).

Every column without its own ``normalize`` was trimmed, so a MAAC ``customer_id``, a LinkedIn
``company``/``firstName`` or a CAPI ``title`` lost leading and trailing whitespace (``\\t``,
``\\n``, U+2028, U+0085 too), while the same value in a push template arrived unchanged. No
destination's reference (../shared/reference, LINE's OpenAPI, MAAC's docs) documents trimming
such a field; the README documents it only for emails, IFAs and phones. Now free text travels
as held; a value checked against a pattern, allowed values or a format (a LINE user ID, a
gender, an ``event_type``) is still trimmed before its check (README "Values travel").
"""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from line_exports import MaacResource, SqlSource, build_export
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.maac import store_of
from line_exports_tests.test_outcomes import COUNTER, adds_up
from line_exports_tests.test_values import ROW_PATHS

PADDED = ["  padded  ", "\u2028ls\u2028", "\tt\n", "\u2028line sep\x85", "\u2028\ufeff\u200b", "x"]


def _table(tmp: Path, values: list[str]) -> Path:
    path = tmp / f"w{time.monotonic_ns()}.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table t (n integer, v varchar)")
        con.executemany("insert into t values (?, ?)", list(enumerate(values, start=1)))
    return path


@pytest.mark.parametrize(
    "path",
    ["maac", "line_conversion", "linkedin_users", "linkedin_companies", "line_messaging_push"],
)
def test_free_text_keeps_its_surrounding_whitespace_in_every_destination(
    tmp_path: Path, path: str
) -> None:
    """MAAC ``customer_id``, CAPI ``title``, LinkedIn ``company``/``companyName`` and a push
    template's value: the same text the warehouse holds, byte for byte."""
    db = _table(tmp_path, PADDED)
    chunks = SqlSource(url=f"duckdb:///{db}").read_chunks("select * from t order by n", 4)
    assert ROW_PATHS[path](chunks, "UTC") == PADDED


def test_maac_receives_a_padded_customer_id_as_held_and_a_padded_uid_trimmed(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """A real run over HTTP: ``customer_id`` ``'  c1  '`` is stored as it is; ``line_uid``
    (checked against its pattern) and ``gender`` (allowed values) are trimmed before their
    checks, as before."""
    uids = [f"U{n:032x}" for n in (0xC1, 0xC2)]
    db = tmp_path / "m.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table m (line_uid varchar, customer_id varchar, gender varchar)")
        con.executemany(
            "insert into m values (?, ?, ?)",
            [(f" {uids[0]}\t", "  c1  ", "Female "), (uids[1], "\tc2\n", "male")],
        )
    export = build_export(
        f"free_text_{next(COUNTER)}",
        destination="maac",
        query="select * from m",
        settings={"data_object": "members", "import_key": "line_uid", "tags": "t"},
        retry_policy=None,
    )
    result = dg.materialize(
        [export],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            "maac": MaacResource(base_url=sandbox_server.url, poll_seconds=0.05),
        },
        raise_on_error=False,
    )
    mats = result.asset_materializations_for_node(export.key.path[-1])
    meta = {k: getattr(v, "value", v) for k, v in mats[0].metadata.items()}
    assert adds_up(meta) and meta["rows_accepted"] == 2 and meta["rows_rejected"] == 0, meta
    members = {m["line_uid"]: m for m in store_of(sandbox_server.sandbox).members.values()}
    assert members[uids[0]]["customer_id"] == "  c1  "
    assert members[uids[1]]["customer_id"] == "\tc2\n"
    assert members[uids[0]]["gender"] == "female"
