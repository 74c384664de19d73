"""Values as the warehouse holds and prints them, from every source (issue 13, VERIFY-13g N2, N5,
N6, F9):

* an Arrow ``timestamp[ns]`` column of an upstream frame (``pd.ArrowDtype``) holding
  ``pd.Timestamp.max`` / ``.min`` is sent with its instant through every destination's row path:
  int64's maximum is DuckDB's 'infinity' only in DuckDB's batches (it was a ``type`` reject
  "infinite DATE or TIMESTAMP" for every source);
* ``Decimal('sNaN')`` (and ``NaN``, ``-sNaN``) in an upstream object column is a missing value,
  as a float NaN is ("NaN and NULL are missing values"): it failed the run;
* the rejects file's ``value`` is the value as its warehouse prints it (DuckDB's, PostgreSQL's
  text: ``infinity``, ``01:30:00``, ``{1,2}``, a UNION's ``abc``), never an internal marker
  (``<nested list<l: string> >``), and a BLOB's bytes are escaped as DuckDB prints them
  (``\\xFF``), not decoded into U+FFFD.

Real sources (DuckDB files, PostgreSQL, upstream frames), the real rules and request builders,
and real Dagster runs over HTTP to the CAPI sandbox for the rejects file.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import sqlite3
import time
from pathlib import Path

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
from line_exports_tests.test_upstream_values import _run
from line_exports_tests.test_values import (
    ROW_PATHS,
    _duckdb_rows,
    _type_rejects,
    arrow_chunks,
    arrow_dtype_chunks,
)
from line_exports_tests.test_values_postgres import _pg_rows

LA = "America/Los_Angeles"
# pandas' ends, naive, read in Los Angeles: the maximum at -07:00; the minimum's offset there is
# a local mean time (-07:52:58), so it is written in UTC (values.LocalTimes).
ENDS_WRITTEN = ["2262-04-11T23:47:16.854775807-07:00", "1677-09-21T08:05:41.145224193+00:00"]


def _ends_table() -> pa.Table:
    ends = [pd.Timestamp.max.value, pd.Timestamp.min.value]
    return pa.table({"n": pa.array([0, 1], pa.int64()), "v": pa.array(ends, pa.timestamp("ns"))})


@pytest.mark.parametrize("path", list(ROW_PATHS))
@pytest.mark.parametrize("source", ["arrow_dtype", "arrow"])
def test_an_arrow_nanosecond_column_at_pandas_ends_is_sent_with_its_instant(
    tmp_path: Path, source: str, path: str
) -> None:
    chunks = {"arrow": arrow_chunks, "arrow_dtype": arrow_dtype_chunks}[source]
    assert ROW_PATHS[path](chunks(tmp_path, _ends_table()), LA) == ENDS_WRITTEN


def test_an_arrow_nanosecond_column_upstream_reaches_capi_with_its_instant(
    sandbox_server: SandboxServer,
) -> None:
    ends = [None, pd.Timestamp.max.value, pd.Timestamp.min.value]
    titles = pd.Series(pd.arrays.ArrowExtensionArray(pa.array(ends, pa.timestamp("ns"))))
    sent, rejects, meta = _run(sandbox_server, "arrowends", titles, LA)
    assert rejects == {} and meta["rows_accepted"] == 3
    assert sent == {"k0": None, "k1": ENDS_WRITTEN[0], "k2": ENDS_WRITTEN[1]}


def test_duckdb_infinity_is_still_a_type_reject_and_an_arrow_nat_value_is_not_missing(
    tmp_path: Path,
) -> None:
    """DuckDB's 'infinity' stays what it is; int64's minimum at nanoseconds in other Arrow data
    (one nanosecond before ``pd.Timestamp.min``), which pandas can only hold as NaT, is a type
    reject naming it rather than a silent missing value."""
    duck = _type_rejects(
        _duckdb_rows(
            tmp_path,
            "select * from (values (0, 'infinity'::TIMESTAMP_NS), "
            "(1, make_timestamp_ns(9223372036854775806))) v(n, v)",
        ),
        "line_conversion",
        LA,
    )
    assert duck[["_row_number", "value"]].values.tolist() == [[1, "infinity"]]
    raw = [np.iinfo(np.int64).min, pd.Timestamp.min.value]
    column = pd.Series(pd.arrays.ArrowExtensionArray(pa.array(raw, pa.timestamp("ns"))))
    upstream = _type_rejects(iter([pd.DataFrame({"n": [0, 1], "v": column})]), "line_conversion")
    assert upstream["_row_number"].tolist() == [1]
    assert upstream["value"].tolist() == ["1677-09-21T00:12:43.145224192"]  # isoformat's form
    assert "one nanosecond before the earliest pandas holds" in upstream["message"].iloc[0]


NANS = [decimal.Decimal(v) for v in ("sNaN", "NaN", "-sNaN", "-NaN", "1.50")]


@pytest.mark.parametrize("path", [p for p in ROW_PATHS if p != "line_messaging_push"])
def test_decimal_nans_upstream_are_missing_values(path: str) -> None:
    frame = pd.DataFrame({"n": range(len(NANS)), "v": pd.Series(NANS, dtype=object)})
    assert ROW_PATHS[path](iter([frame]), "UTC") == [None, None, None, None, "1.50"]


def test_a_signaling_nan_upstream_is_a_missing_value_in_a_run(
    sandbox_server: SandboxServer,
) -> None:
    titles = pd.Series([decimal.Decimal("sNaN"), decimal.Decimal("-sNaN"), decimal.Decimal("2")])
    sent, rejects, meta = _run(sandbox_server, "snan", titles, "UTC")
    assert rejects == {} and meta["rows_accepted"] == 3
    assert sent == {"k0": None, "k1": None, "k2": "2"}


# DuckDB value -> the rejects file's value: DuckDB's own text of it (CAST(v AS VARCHAR)).
DUCKDB_SHOWN = {
    "'infinity'::TIMESTAMP_NS": "infinity",
    "'-infinity'::DATE": "-infinity",
    "'infinity'::TIMESTAMPTZ": "infinity",
    "'-infinity'::TIMESTAMP_MS": "-infinity",
    "'10000-01-01'::DATE": "10000-01-01",
    "'0044-03-15 (BC)'::DATE": "0044-03-15 (BC)",
    "'10000-01-01 00:00+00'::TIMESTAMPTZ": "10000-01-01 00:00:00+00",
    "interval 90 minute": "01:30:00",
    "[1, 2]": "[1, 2]",
    "{'a': 1}": "{'a': 1}",
    "map([1], ['x'])": "{1=x}",
    "union_value(s := 'abc')::UNION(num INT, s VARCHAR)": "abc",
    "'\\xFF\\x00a\"'::BLOB": "\\xFF\\x00a\\x22",
    "'Infinity'::DOUBLE": "inf",
}


@pytest.mark.parametrize("path", ["line_messaging_push", "line_conversion"])
def test_duckdb_rejects_show_the_value_as_duckdb_prints_it(tmp_path: Path, path: str) -> None:
    for expr, shown in DUCKDB_SHOWN.items():
        sql = f"select * from (values (0, {expr}), (1, null)) v(n, v)"
        rejects = _type_rejects(_duckdb_rows(tmp_path, sql), path)
        assert rejects["value"].tolist() == [shown], expr
        with duckdb.connect() as con:  # the expectation is DuckDB's own text of the value
            assert con.execute(f"select CAST({expr} AS VARCHAR)").fetchone() == (shown,), expr


# PostgreSQL value -> the rejects file's value: PostgreSQL's text of it (BYTEA: as any BLOB).
POSTGRES_SHOWN = {
    "'infinity'::date": "infinity",
    "'-infinity'::timestamptz": "-infinity",
    "'0044-03-15 BC'::date": "0044-03-15 BC",
    "'10000-01-01 00:00:00'::timestamp": "10000-01-01 00:00:00",
    "interval '90 minutes'": "01:30:00",
    "array[1, 2]": "{1,2}",
    "array['a b', null]": '{"a b",NULL}',
    "'Infinity'::numeric": "Infinity",
    "'-Infinity'::numeric": "-Infinity",
    "'\\xff00'::bytea": "\\xFF\\x00",
}


def test_postgres_rejects_show_the_value_as_postgres_prints_it(postgres_url: str) -> None:
    for expr, shown in POSTGRES_SHOWN.items():
        sql = f"select * from (values (0, {expr}), (1, null)) v(n, v)"
        rejects = _type_rejects(_pg_rows(postgres_url, sql), "line_conversion")
        assert rejects["value"].tolist() == [shown], (expr, rejects.to_dict("records"))


# An upstream frame's cell -> (the type reject's words, the value as Python / pandas prints it).
# Python lists, dicts and timedeltas were sent as their Python text ("[1, 2]", "1:30:00",
# "P0DT1H30M0S"), where DuckDB's LIST and INTERVAL are type rejects.
LIST, INTERVAL = "is a LIST, STRUCT, MAP or UNION", "is an INTERVAL"
UPSTREAM_SHOWN = {
    "arrow list": (pd.arrays.ArrowExtensionArray(pa.array([[1, 2], None])), LIST, "[1, 2]"),
    "object list": (pd.Series([[1, 2], None], dtype=object), LIST, "[1, 2]"),
    "object tuple": (pd.Series([(1, "a"), None], dtype=object), LIST, "(1, 'a')"),
    "object dict": (pd.Series([{"a": 1}, None], dtype=object), LIST, "{'a': 1}"),
    "object timedelta": (pd.Series([dt.timedelta(minutes=90), None], dtype=object), INTERVAL,
                         "1:30:00"),
    "timedelta64": (pd.Series(pd.to_timedelta(["90min", None])), INTERVAL, "0 days 01:30:00"),
    "arrow duration": (pd.arrays.ArrowExtensionArray(pa.array([dt.timedelta(minutes=90), None])),
                       INTERVAL, "1:30:00"),
    "bytes": (pd.Series([b'\xff\xfe"\r\n\\ok', None], dtype=object),
              "is binary data (a BLOB)", "\\xFF\\xFE\\x22\\x0D\\x0A\\x5Cok"),
}  # fmt: skip


@pytest.mark.parametrize("path", ["line_messaging_push", "line_conversion"])
@pytest.mark.parametrize("case", list(UPSTREAM_SHOWN))
def test_upstream_values_no_field_holds_are_type_rejects_shown_as_the_frame_holds_them(
    case: str, path: str
) -> None:
    column, words, shown = UPSTREAM_SHOWN[case]
    frame = pd.DataFrame({"n": [0, 1], "v": pd.Series(column)})
    rejects = _type_rejects(iter([frame]), path)
    assert rejects["_row_number"].tolist() == [1], rejects.to_dict("records")
    assert words in rejects["message"].iloc[0] and rejects["value"].tolist() == [shown]


def _rejects_file(result: dg.ExecuteInProcessResult, name: str) -> list[dict[str, str]]:
    meta = result.asset_materializations_for_node(name)[0].metadata
    with open(meta["rejects_file"].value, newline="", encoding="utf-8") as f:  # type: ignore[attr-defined]
        return list(csv.DictReader(f))


def test_the_rejects_file_holds_duckdb_text_not_markers(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """A DuckDB query whose UNION, infinite TIMESTAMP_NS and BLOB are rejects: the rejects file
    (a real run) holds their text as DuckDB prints them, the BLOB's bytes losslessly."""
    db = tmp_path / "w.duckdb"
    now = int(time.time()) - 60
    with duckdb.connect(str(db)) as con:
        con.execute(
            "create table t as select * from (values "
            "(0, union_value(s := 'abc')::UNION(num INT, s VARCHAR), 'infinity'::TIMESTAMP_NS, "
            "'\\xFF\\xFEok'::BLOB), (1, NULL, NULL, NULL)) v(n, u, ts, b)"
        )
    asset = build_export(
        "warehouse_text",
        destination="line_conversion",
        query=f"select 'k' || n as deduplication_key, 'conversion' as event_type, 'web' as "
        f"source_type, {now} as event_timestamp, 'x' || n as external_id, u as title, "
        "ts as referrer, b as user_agent from t order by n",
        retry_policy=None,
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            "line_conversion": LineConversionResource(
                line_tag_id="wt", base_url=sandbox_server.url
            ),
        },
        raise_on_error=False,
    )
    assert result.success
    shown = {r["column"]: r["value"] for r in _rejects_file(result, "warehouse_text")}
    assert shown == {"title": "abc", "referrer": "infinity", "user_agent": "\\xFF\\xFEok"}
    assert list(events_of(sandbox_server.sandbox, "wt")) == ["k1"]


def test_a_year_1_datetime_next_to_a_date_is_a_type_reject_never_year_0(
    sandbox_server: SandboxServer,
) -> None:
    """An object column ``[date, datetime(1, 1, 1), aware datetime, 5]`` in Asia/Tokyo: the
    year-1 wall time's instant is in 1 BC UTC, a ``type`` reject (it was sent as
    ``0000-12-31T14:41:01+00:00``, VERIFY-13g N4); the others keep their values."""
    titles = pd.Series(
        [
            dt.date(2026, 1, 1),
            dt.datetime(1, 1, 1),
            dt.datetime(2026, 6, 1, 10, tzinfo=dt.timezone.utc),
            5,
        ],
        dtype=object,
    )
    sent, rejects, meta = _run(sandbox_server, "year1", titles, "Asia/Tokyo")
    assert sorted(rejects) == [2] and "in year 1 BC UTC" in rejects[2]["message"]
    assert rejects[2]["value"] == "0001-01-01T00:00:00"
    assert sent == {"k0": "2026-01-01", "k2": "2026-06-01T19:00:00+09:00", "k3": "5"}
    assert not any(v and v.startswith("0000") for v in sent.values())


def test_upstream_python_lists_and_timedeltas_are_not_sent_as_their_repr(
    sandbox_server: SandboxServer,
) -> None:
    titles = pd.Series([[1, 2], dt.timedelta(minutes=90), "ok"], dtype=object)
    sent, rejects, meta = _run(sandbox_server, "pyrepr", titles, "UTC")
    assert {n: r["value"] for n, r in rejects.items()} == {1: "[1, 2]", 2: "1:30:00"}
    assert sent == {"k2": "ok"} and meta["rows_rejected"] == 2


def _capi_rejects(server: SandboxServer, url: str, table: str, tag: str) -> dict[str, str]:
    """A CAPI export of ``table``'s ``v`` as the title (a real run): the rejects file's value by
    row number; the sandbox received the other rows."""
    now = int(time.time()) - 60
    asset = build_export(
        f"inf_{tag}",
        destination="line_conversion",
        query=f"select 'k' || n as deduplication_key, 'conversion' as event_type, 'web' as "
        f"source_type, {now} as event_timestamp, 'x' || n as external_id, v as title "
        f"from {table} order by n",
        retry_policy=None,
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=url),
            "line_conversion": LineConversionResource(line_tag_id=tag, base_url=server.url),
        },
        raise_on_error=False,
    )
    assert result.success
    assert list(events_of(server.sandbox, tag)) == ["k2"]
    return {r["_row_number"]: r["value"] for r in _rejects_file(result, f"inf_{tag}")}


def test_a_float_infinity_shows_as_its_database_prints_it(
    sandbox_server: SandboxServer, postgres_url: str, tmp_path: Path
) -> None:
    """A DOUBLE ±Infinity is a type reject from every source; the rejects file spells it as the
    database does: PostgreSQL ``Infinity``, SQLite ``Inf``, DuckDB ``inf`` (it was Python's
    ``inf`` from all)."""
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "create table pg_inf as select * from (values (0, 'Infinity'::float8), "
            "(1, '-Infinity'::float8), (2, 1.5::float8)) v(n, v)"
        )
        shown = conn.exec_driver_sql("select 'Infinity'::float8::text").scalar()
    engine.dispose()
    assert _capi_rejects(sandbox_server, postgres_url, "pg_inf", "pginf") == {
        "1": shown,
        "2": "-" + shown,
    }
    path = tmp_path / "w.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("create table t (n integer, v real)")
        con.executemany("insert into t values (?, ?)", [(0, 9e999), (1, -9e999), (2, 1.5)])
        shown = con.execute("select cast(9e999 as text)").fetchone()[0]
    assert _capi_rejects(sandbox_server, f"sqlite:///{path}", "t", "sqinf") == {
        "1": shown,
        "2": "-" + shown,
    }
    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(
            "create table t as select * from (values (0, 'inf'::DOUBLE), (1, '-inf'::DOUBLE), "
            "(2, 1.5::DOUBLE)) v(n, v)"
        )
        shown = con.execute("select CAST('inf'::DOUBLE AS VARCHAR)").fetchone()[0]  # type: ignore[index]
    assert _capi_rejects(sandbox_server, f"duckdb:///{db}", "t", "duinf") == {
        "1": shown,
        "2": "-" + shown,
    }
