"""A DECIMAL holding a whole number is a whole number (VERIFY-13n N5).

CAPI's ``event_timestamp`` (the exporter's only whole-number column, kind ``unix_seconds``;
``integer`` columns take the same path) from a DECIMAL(12,2) ``1796145652.00`` was a ``type``
reject "is not a whole number", while DOUBLE ``1796145652.0`` was sent. Now every whole
``Decimal`` is sent exactly whatever its scale (DuckDB DECIMAL, an upstream frame's Python
``Decimal`` or Arrow ``decimal128``); a fractional one (``.50``) stays a ``type`` reject with
its value as held. Real Dagster runs over HTTP to the LINE Conversion API sandbox, a real
DuckDB file.
"""

from __future__ import annotations

import csv
import decimal
import time
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from line_exports import LineConversionResource, SqlSource, build_export
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_conversion import events_of
from line_exports_tests.test_outcomes import COUNTER, adds_up

BASE = int(time.time()) - 7200


def _meta(result: dg.ExecuteInProcessResult, node: str) -> dict[str, Any]:
    assert result.success
    mats = result.asset_materializations_for_node(node)
    return {k: getattr(v, "value", v) for k, v in mats[0].metadata.items()}


def _rejects(meta: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    if not meta.get("rejects_file"):
        return []
    with open(meta["rejects_file"], newline="", encoding="utf-8") as f:
        return [(r["_row_number"], r["rule"], r["message"], r["value"]) for r in csv.DictReader(f)]


def _sent(server: SandboxServer, tag: str) -> dict[str, int]:
    return {k: e["event"]["event_timestamp"] for k, e in events_of(server.sandbox, tag).items()}


@pytest.mark.parametrize("kind", ["DECIMAL(12,2)", "DECIMAL(18,6)", "DECIMAL(38,10)"])
def test_a_whole_duckdb_decimal_is_sent_exactly_and_a_fraction_is_rejected(
    sandbox_server: SandboxServer, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:  # NULLs between, two rows a chunk
        con.execute(
            f"CREATE TABLE t AS SELECT * FROM (VALUES (0, NULL::{kind}), (1, '{BASE}.00'), "
            f"(2, NULL), (3, '{BASE}'), (4, '{BASE}.50')) v(n, ts)"
        )
    tag = f"whole_dec{next(COUNTER)}"
    query = (
        "SELECT 'k' || n AS deduplication_key, 'conversion' AS event_type, "
        "'web' AS source_type, ts AS event_timestamp, 'x' AS external_id FROM t ORDER BY n"
    )
    export = build_export(tag, destination="line_conversion", query=query, retry_policy=None)
    result = dg.materialize(
        [export],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{path}", chunk_size=2),
            "line_conversion": LineConversionResource(line_tag_id=tag, base_url=sandbox_server.url),
        },
        raise_on_error=False,
    )
    meta = _meta(result, tag)
    assert adds_up(meta) and meta["rows_accepted"] == 2, meta
    assert _sent(sandbox_server, tag) == {"k1": BASE, "k3": BASE}
    scale = int(kind.split(",")[1].rstrip(")"))
    fraction = f"{BASE}.{'50'.ljust(scale, '0')}"
    reject = ("event_timestamp is not a whole number or timestamp", fraction)
    required = ("event_timestamp is required", "")
    assert [r[2:] for r in _rejects(meta)] == [required, required, reject], _rejects(meta)


@pytest.mark.parametrize("arrow", [False, True], ids=["python", "arrow"])
def test_a_whole_upstream_decimal_is_sent_exactly(
    sandbox_server: SandboxServer, arrow: bool
) -> None:
    held = [
        decimal.Decimal(f"{BASE}.00"),
        None,
        decimal.Decimal(f"{BASE}.5"),
        decimal.Decimal(BASE + 1),
    ]
    stamps: pd.Series = pd.Series(held, dtype=object)
    if arrow:
        stamps = pd.Series(
            pa.array(held, pa.decimal128(12, 2)), dtype=pd.ArrowDtype(pa.decimal128(12, 2))
        )
    tag = f"whole_up{next(COUNTER)}"

    @dg.asset(name=f"{tag}_rows")
    def upstream() -> pd.DataFrame:
        return pd.DataFrame(
            {
                "deduplication_key": [f"k{n}" for n in range(4)],
                "event_type": "conversion",
                "source_type": "web",
                "event_timestamp": stamps,
                "external_id": "x",
            }
        )

    export = build_export(
        tag, destination="line_conversion", upstream=f"{tag}_rows", retry_policy=None
    )
    result = dg.materialize(
        [upstream, export],
        resources={
            "line_conversion": LineConversionResource(line_tag_id=tag, base_url=sandbox_server.url)
        },
        raise_on_error=False,
    )
    meta = _meta(result, tag)
    assert adds_up(meta) and meta["rows_accepted"] == 2, meta
    assert _sent(sandbox_server, tag) == {"k0": BASE, "k3": BASE + 1}
    assert sorted((r[0], r[1], r[3]) for r in _rejects(meta)) == [
        ("2", "required", ""),
        ("3", "type", f"{BASE}.50" if arrow else f"{BASE}.5"),
    ], _rejects(meta)


@pytest.mark.parametrize("holder", ["duckdb_varchar", "object", "string_pyarrow"])
def test_a_whole_number_written_with_a_zero_fraction_is_whole_in_text_too(
    sandbox_server: SandboxServer, tmp_path: Path, holder: str
) -> None:
    """NOTE-columns "Left": text ``1796145652.00`` was a ``type`` reject while the DECIMAL
    ``1796145652.00`` was sent. LINE's reference types event_timestamp a long (UNIX seconds):
    the text of a DECIMAL names the same whole number, so it is sent as one (one rule whatever
    holds the number); ``.50`` stays a ``type`` reject, shown as held."""
    held = [f"{BASE}.00", None, f" {BASE + 1}. ", f"{BASE}.50", f"{BASE + 2}.000000"]
    tag = f"whole_text{next(COUNTER)}"
    common = {"event_type": "conversion", "source_type": "web", "external_id": "x"}
    assets: list[Any] = []
    resources: dict[str, Any] = {
        "line_conversion": LineConversionResource(line_tag_id=tag, base_url=sandbox_server.url)
    }
    if holder == "duckdb_varchar":
        path = tmp_path / "t.duckdb"
        with duckdb.connect(str(path)) as con:
            con.execute("CREATE TABLE t (n INTEGER, ts VARCHAR)")
            con.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(held)))
        query = (
            "SELECT 'k' || n AS deduplication_key, 'conversion' AS event_type, "
            "'web' AS source_type, ts AS event_timestamp, 'x' AS external_id FROM t ORDER BY n"
        )
        export = build_export(tag, destination="line_conversion", query=query, retry_policy=None)
        resources["sql_source"] = SqlSource(url=f"duckdb:///{path}", chunk_size=2)
    else:
        dtype = object if holder == "object" else pd.StringDtype("pyarrow")

        @dg.asset(name=f"{tag}_rows")
        def upstream() -> pd.DataFrame:
            keys = [f"k{n}" for n in range(len(held))]
            stamps = pd.Series(held, dtype=dtype)
            return pd.DataFrame({"deduplication_key": keys, "event_timestamp": stamps, **common})

        assets.append(upstream)
        export = build_export(
            tag, destination="line_conversion", upstream=f"{tag}_rows", retry_policy=None
        )
    result = dg.materialize([*assets, export], resources=resources, raise_on_error=False)
    meta = _meta(result, tag)
    assert adds_up(meta) and meta["rows_accepted"] == 3, meta
    assert _sent(sandbox_server, tag) == {"k0": BASE, "k2": BASE + 1, "k4": BASE + 2}
    assert sorted((r[0], r[1], r[3]) for r in _rejects(meta)) == [
        ("2", "required", ""),
        ("4", "type", f"{BASE}.50"),
    ], _rejects(meta)
