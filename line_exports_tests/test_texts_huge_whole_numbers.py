"""A whole number is whole whatever its size or holder (VERIFY-13p P6).

CAPI's ``event_timestamp`` (kind ``unix_seconds``, the exporter's whole-number column) holding a
whole number past int64 got false reasons: a DECIMAL(38,2), HUGEINT or DOUBLE ``1e30`` "is not a
whole number or timestamp", a UBIGINT 18446744073709551615 "must be at least 1" (read as int64's
-1). Such a number is whole; past int64 it is past LINE's time window, a ``time_window`` reject as
BIGINT's maximum already was (that one at sending); below int64 a ``min_value`` reject. The
rejects file shows each value as held. Real Dagster runs over HTTP to the CAPI sandbox from a
real DuckDB file, a real PostgreSQL and upstream frames (numpy, nullable, Arrow, Python objects).
"""

from __future__ import annotations

import csv
import decimal
import time
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from line_exports import LineConversionResource, SqlSource, build_export
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_conversion import events_of
from line_exports_tests.test_outcomes import COUNTER, adds_up

BASE = int(time.time()) - 7200
HUGE_U = 2**64 - 1  # UBIGINT's maximum, int64's -1 as bits
HUGE_I = 2**127 - 1  # HUGEINT's maximum
WINDOW = "event_timestamp is outside what LINE accepts"
MINIMUM = "event_timestamp must be at least 1"

DUCKDB = {  # case: (the first row's value, its rule, its message's start, the value shown)
    "decimal38": (
        "99999999999999999999999999.00::DECIMAL(38,2)",
        "time_window",
        WINDOW,
        "99999999999999999999999999.00",
    ),
    "decimal38_int64max": (
        "9223372036854775807.00::DECIMAL(38,2)",  # fits int64: refused when sending
        "time_window",
        f"{WINDOW}: between",
        "9223372036854775807",
    ),
    "hugeint_max": (f"{HUGE_I}::HUGEINT", "time_window", WINDOW, str(HUGE_I)),
    "hugeint_min": (f"(-{HUGE_I})::HUGEINT", "min_value", MINIMUM, f"-{HUGE_I}"),
    "double": ("1e30::DOUBLE", "time_window", WINDOW, "1e+30"),
    "double_negative": ("-1e30::DOUBLE", "min_value", MINIMUM, "-1e+30"),
    "ubigint": (f"{HUGE_U}::UBIGINT", "time_window", WINDOW, str(HUGE_U)),
    "varchar": (f"'{HUGE_U}'", "time_window", WINDOW, str(HUGE_U)),
    "bigint_max": ("9223372036854775807::BIGINT", "time_window", f"{WINDOW}: between",
                   "9223372036854775807"),
}  # fmt: skip


def _export(
    server: SandboxServer,
    tag: str,
    *,
    query: str | None = None,
    frame: Any = None,
    url: str | None = None,
) -> tuple[dict[int, tuple[str, str, str]], dict[str, int]]:
    """One CAPI run (chunks of 2 rows): the rejects file's (rule, message, value) by row and the
    event_timestamp the sandbox received by dedup key; the run adds up."""
    assets: list[Any] = []
    if frame is not None:

        @dg.asset(name=f"{tag}_rows")
        def upstream() -> pd.DataFrame:
            return frame

        assets.append(upstream)
    assets.append(
        build_export(
            tag,
            destination="line_conversion",
            query=query,
            upstream=f"{tag}_rows" if frame is not None else None,
            chunk_size=2,
            retry_policy=None,
        )
    )
    resources: dict[str, Any] = {
        "line_conversion": LineConversionResource(line_tag_id=tag, base_url=server.url)
    }
    if url is not None:
        resources["sql_source"] = SqlSource(url=url, chunk_size=2)
    result = dg.materialize(assets, resources=resources, raise_on_error=False)
    assert result.success
    meta = {
        k: getattr(v, "value", v)
        for k, v in result.asset_materializations_for_node(tag)[0].metadata.items()
    }
    assert adds_up(meta), meta
    with open(meta["rejects_file"], newline="", encoding="utf-8") as f:
        rejects = {
            int(r["_row_number"]): (r["rule"], r["message"], r["value"]) for r in csv.DictReader(f)
        }
    sent = {k: e["event"]["event_timestamp"] for k, e in events_of(server.sandbox, tag).items()}
    return rejects, sent


def _query(source: str) -> str:
    return (
        "SELECT 'k' || n AS deduplication_key, 'conversion' AS event_type, 'web' AS source_type, "
        f"ts AS event_timestamp, 'x' AS external_id FROM {source} ORDER BY n"
    )


@pytest.mark.parametrize("case", list(DUCKDB))
def test_a_duckdb_whole_number_past_int64_is_outside_the_window(
    sandbox_server: SandboxServer, tmp_path: Path, case: str
) -> None:
    value, rule, message, shown = DUCKDB[case]
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:  # the huge one, a NULL, one sent; 2 rows a chunk
        con.execute(
            f"CREATE TABLE t AS SELECT n, CASE n WHEN 0 THEN {value} WHEN 2 THEN "
            f"{BASE}{'::VARCHAR' if case == 'varchar' else ''} END AS ts FROM range(3) r(n)"
        )
    tag = f"huge_{case}{next(COUNTER)}"
    rejects, sent = _export(sandbox_server, tag, query=_query("t"), url=f"duckdb:///{path}")
    assert sent == {"k2": BASE}, (sent, rejects)
    assert rejects[2] == ("required", "event_timestamp is required", ""), rejects
    assert rejects[1][0] == rule and rejects[1][2] == shown, rejects
    assert rejects[1][1].startswith(message), rejects


def test_postgres_whole_numbers_past_int64(
    sandbox_server: SandboxServer, postgres_url: str
) -> None:
    values = {  # NUMERIC (psycopg's Decimal), text of digits
        "1e30::numeric": ("time_window", "1000000000000000000000000000000"),
        "99999999999999999999999999.00::numeric(38,2)": (
            "time_window",
            "99999999999999999999999999.00",
        ),
        f"'{HUGE_U}'::text": ("time_window", str(HUGE_U)),
        "(-1e30)::numeric": ("min_value", "-1000000000000000000000000000000"),
    }
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        for i, value in enumerate(values):
            conn.exec_driver_sql(
                f"create table h{i} as select n, case n when 0 then {value} when 2 then "
                f"{BASE}{'::text' if 'text' in value else ''} end as ts "
                "from generate_series(0, 2) n"
            )
    engine.dispose()
    for i, (rule, shown) in enumerate(values.values()):
        tag = f"huge_pg{i}_{next(COUNTER)}"
        rejects, sent = _export(sandbox_server, tag, query=_query(f"h{i}"), url=postgres_url)
        assert sent == {"k2": BASE}, (i, sent, rejects)
        assert rejects[1][0] == rule and rejects[1][2] == shown, (i, rejects)


UPSTREAM = {  # case: (the column; the first row is the huge one, the last is sent)
    "uint64": lambda: pd.Series(np.array([HUGE_U, BASE], dtype=np.uint64)),
    "UInt64": lambda: pd.Series(pd.array([HUGE_U, None, BASE], dtype="UInt64")),
    "arrow_uint64": lambda: pd.Series(
        pa.array([HUGE_U, None, BASE], pa.uint64()), dtype=pd.ArrowDtype(pa.uint64())
    ),
    "arrow_decimal38": lambda: pd.Series(
        pa.array([decimal.Decimal(10**37), None, decimal.Decimal(BASE)], pa.decimal128(38, 0)),
        dtype=pd.ArrowDtype(pa.decimal128(38, 0)),
    ),
    "python_int": lambda: pd.Series([10**30, None, BASE], dtype=object),
    "numpy_cells": lambda: pd.Series([np.uint64(HUGE_U), None, np.int64(BASE)], dtype=object),
    "python_float": lambda: pd.Series([1e30, None, float(BASE)], dtype=object),
    "float64": lambda: pd.Series([1e30, np.nan, float(BASE)]),
    "float32": lambda: pd.Series(np.array([1e30, np.nan, 2**30], dtype=np.float32)),
}
SHOWN = {
    "uint64": str(HUGE_U),
    "UInt64": str(HUGE_U),
    "arrow_uint64": str(HUGE_U),
    "arrow_decimal38": str(10**37),
    "python_int": str(10**30),
    "numpy_cells": str(HUGE_U),
    "python_float": "1e+30",
    "float64": "1e+30",
    "float32": "1e+30",
}


@pytest.mark.parametrize("case", list(UPSTREAM))
def test_an_upstream_whole_number_past_int64_is_outside_the_window(
    sandbox_server: SandboxServer, case: str
) -> None:
    stamps = UPSTREAM[case]()
    frame = pd.DataFrame(
        {
            "deduplication_key": [f"k{n}" for n in range(len(stamps))],
            "event_type": "conversion",
            "source_type": "web",
            "event_timestamp": stamps,
            "external_id": "x",
        }
    )
    tag = f"huge_up_{case.lower()}{next(COUNTER)}"
    rejects, sent = _export(sandbox_server, tag, frame=frame)
    rule, message, shown = rejects.pop(1)
    assert (rule, shown) == ("time_window", SHOWN[case]), (rule, message, shown)
    assert message.startswith(WINDOW), message
    last = f"k{len(stamps) - 1}"
    if case == "float32":  # 2**30: a float32 whole number in int64, sent, outside the window
        assert sent == {} and rejects[3][0] == "time_window", rejects
        return
    assert sent == {last: BASE}, (sent, rejects)
    if len(stamps) == 3:
        assert rejects == {2: ("required", "event_timestamp is required", "")}, rejects
