"""The rejects file shows a refused date-time as its source prints it (VERIFY-13l L6).

A naive TIMESTAMP the export's zone shows twice (a DST fold) was shown ``2026-11-01T01:30:00``
where DuckDB and PostgreSQL print ``2026-11-01 01:30:00``; a PostgreSQL TIMESTAMPTZ read with
the session TimeZone America/Los_Angeles was shown in UTC (``9999-12-31T20:00:00+00:00``) where
psql prints ``9999-12-31 12:00:00-08``; an upstream ``datetime.max`` in Los Angeles was
``10000-01-01T07:59:59.999999+00:00`` in a ``datetime64[us, tz]`` column and
``9999-12-31T23:59:59.999999-08:00`` in an object column. Now: from a ``SqlSource``, the
warehouse's own text (each expectation below is DuckDB's or PostgreSQL's ``v::VARCHAR`` /
``v::text``, asked of the same database); from an upstream frame, ISO 8601 as the value's
``isoformat`` writes it, in its own zone, the same in a typed or an object column. Real runs
(DuckDB file, PostgreSQL, upstream asset) to the CAPI sandbox over HTTP, reading the rejects file.
"""

from __future__ import annotations

import csv
import datetime as dt
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import pandas as pd
import pytest
import sqlalchemy as sa

from line_exports import LineConversionResource, SqlSource, build_export
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_conversion import events_of
from line_exports_tests.test_upstream_values import _run

LA, TOKYO = "America/Los_Angeles", "Asia/Tokyo"
FOLD = "2026-11-01 01:30:00"  # Los Angeles' clocks show it twice


def _warehouse_rejects(
    server: SandboxServer, url: str, table: str, tag: str, zone: str
) -> tuple[dict[int, dict[str, str]], list[str]]:
    """A CAPI export of ``table``'s ``v`` as the title in ``zone`` (a real run): the rejects
    file's rows by row number, and the dedup keys the sandbox received."""
    now = int(time.time()) - 60
    asset = build_export(
        f"times_{tag}",
        destination="line_conversion",
        query=f"select 'k' || n as deduplication_key, 'conversion' as event_type, 'web' as "
        f"source_type, {now} as event_timestamp, 'x' || n as external_id, v as title "
        f"from {table} order by n",
        timezone=zone,
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
    meta = result.asset_materializations_for_node(f"times_{tag}")[0].metadata
    with open(meta["rejects_file"].value, newline="", encoding="utf-8") as f:  # type: ignore[attr-defined]
        rejects = {int(r["_row_number"]): r for r in csv.DictReader(f)}
    return rejects, sorted(events_of(server.sandbox, tag))


DUCKDB_TIMES = {  # table: (export zone, values; the last is sent, the others refused)
    "naive": (
        LA,
        [
            f"TIMESTAMP '{FOLD}'",
            f"TIMESTAMP '{FOLD}.25'",
            f"TIMESTAMP_NS '{FOLD}.000000001'",
            f"TIMESTAMP_MS '{FOLD}.5'",
            "TIMESTAMP '2026-06-01 10:00:00'",
        ],
    ),
    "aware": (
        TOKYO,
        [
            "TIMESTAMPTZ '9999-12-31 20:00:00+00'",  # year 10000 in Tokyo
            "TIMESTAMPTZ '9999-12-31 23:59:59.5+00'",
            "TIMESTAMPTZ '2026-06-01 10:00:00+00'",
        ],
    ),
}


@pytest.mark.parametrize("table", list(DUCKDB_TIMES))
def test_a_duckdb_date_time_is_shown_as_duckdb_prints_it(
    sandbox_server: SandboxServer, tmp_path: Path, table: str
) -> None:
    zone, values = DUCKDB_TIMES[table]
    db = tmp_path / f"{table}.duckdb"
    rows = ", ".join(f"({n}, {v})" for n, v in enumerate(values))
    with duckdb.connect(str(db)) as con:  # a new session, as the source's: its TimeZone too
        con.execute(f"create table t as select * from (values {rows}) v(n, v)")
        printed = [t for (t,) in con.execute("select v::VARCHAR from t order by n").fetchall()]
    assert printed[0] in (f"{FOLD}", "9999-12-31 20:00:00+00")
    rejects, sent = _warehouse_rejects(sandbox_server, f"duckdb:///{db}", "t", f"d{table}", zone)
    refused = len(values) - 1
    assert {n: r["value"] for n, r in rejects.items()} == {
        n + 1: printed[n] for n in range(refused)
    }
    assert all(r["rule"] == "type" for r in rejects.values()) and sent == [f"k{refused}"]


def test_a_postgres_date_time_is_shown_as_psql_prints_it_in_the_session_zone(
    sandbox_server: SandboxServer, postgres_url: str
) -> None:
    """The database's TimeZone is America/Los_Angeles: a TIMESTAMPTZ refused in an export in
    Asia/Tokyo is shown in that zone, as psql prints it (it was shown in UTC, ``T`` form)."""
    engine = sa.create_engine(postgres_url)
    database = sa.engine.make_url(postgres_url).database
    with engine.begin() as conn:
        conn.exec_driver_sql(f"alter database \"{database}\" set timezone to '{LA}'")
    engine.dispose()
    engine = sa.create_engine(postgres_url)
    printed: dict[str, list[str]] = {}
    with engine.begin() as conn:  # a new session: the database's TimeZone is in force
        assert conn.exec_driver_sql("show timezone").scalar() == LA
        conn.exec_driver_sql(
            "create table tz as select * from (values (0, '9999-12-31 20:00:00+00'::timestamptz),"
            " (1, '9999-12-31 23:30:00.25+00'::timestamptz),"
            " (2, '2026-06-01 10:00:00+00'::timestamptz)) v(n, v)"
        )
        conn.exec_driver_sql(
            f"create table naive as select * from (values (0, '{FOLD}'::timestamp),"
            f" (1, '{FOLD}.000001'::timestamp), (2, '2026-06-01 10:00:00'::timestamp)) v(n, v)"
        )
        for table in ("tz", "naive"):
            rows = conn.exec_driver_sql(f"select v::text from {table} order by n").fetchall()
            printed[table] = [t for (t,) in rows]
    engine.dispose()
    assert printed["tz"][0] == "9999-12-31 12:00:00-08"
    for table, zone in (("tz", TOKYO), ("naive", LA)):
        rejects, sent = _warehouse_rejects(sandbox_server, postgres_url, table, f"p{table}", zone)
        assert {n: r["value"] for n, r in rejects.items()} == {
            1: printed[table][0],
            2: printed[table][1],
        }, table
        assert sent == ["k2"], table


PACIFIC = ZoneInfo(LA)
NO_END = dt.datetime.max.replace(tzinfo=PACIFIC)  # its instant is in year 10000 UTC


@pytest.mark.parametrize("holder", ["typed", "object"])
def test_an_upstream_date_time_is_shown_as_its_isoformat_in_a_typed_or_an_object_column(
    sandbox_server: SandboxServer, holder: str
) -> None:
    """The same values refused in a ``datetime64`` column or an object one: one text each,
    ``isoformat``'s in the value's own zone (the typed column's was UTC)."""
    aware = [NO_END, dt.datetime(2026, 6, 1, 10, tzinfo=PACIFIC)]
    naive = [pd.Timestamp(FOLD), pd.Timestamp(f"{FOLD}.000000001"), pd.Timestamp("2026-06-01")]
    for name, values, zone, shown in (
        ("aware", aware, LA, {1: "9999-12-31T23:59:59.999999-08:00"}),
        ("naive", naive, LA, {1: "2026-11-01T01:30:00", 2: "2026-11-01T01:30:00.000000001"}),
    ):
        column = pd.Series(values, dtype=object)
        if holder == "typed":
            column = pd.Series(values)
            assert pd.api.types.is_datetime64_any_dtype(column), column.dtype
        sent, rejects, meta = _run(sandbox_server, f"{name}_{holder}", column, zone)
        got = {n: r["value"] for n, r in rejects.items()}
        assert got == shown, (name, holder, rejects)
        assert meta["rows_rejected"] == len(shown) and len(sent) == len(values) - len(shown)


@pytest.mark.parametrize(
    ("session", "value", "shown"),
    [
        ("Asia/Tokyo", "9999-12-31 20:00:00+00", "10000-01-01 05:00:00+09"),
        ("Asia/Tokyo", "9999-12-31 23:30:00.25+00", "10000-01-01 08:30:00.25+09"),
        ("Etc/GMT+12", "0001-01-01 03:00:00+00", "0001-12-31 15:00:00-12 BC"),
        # Tokyo's LMT: psycopg builds year 1 there, whose instant is BC (VERIFY-13s S5: sent)
        ("Asia/Tokyo", "0001-01-01 00:30:00+09", "0001-01-01 00:48:59+09:18:59"),
    ],
)
def test_a_postgres_instant_python_cannot_hold_in_the_session_zone_is_shown_as_psql_prints_it(
    sandbox_server: SandboxServer, postgres_server_url: str, session: str, value: str, shown: str
) -> None:
    """NOTE-texts "Left": a TIMESTAMPTZ whose year in the session's TimeZone is 10000 or BC
    (psycopg cannot build it there; read as its instant in UTC) was shown in UTC
    (``9999-12-31 20:00:00+00``) when refused; now as psql prints it in that zone. Exported in
    the session's zone, where its year is outside 0001-9999: a ``type`` reject."""
    from line_exports_tests import postgres_server

    url = postgres_server.new_database(postgres_server_url)
    database = sa.engine.make_url(url).database
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"alter database \"{database}\" set timezone to '{session}'")
    engine.dispose()
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # a new session: the database's TimeZone is in force
        conn.exec_driver_sql(
            f"create table t as select * from (values (0, '{value}'::timestamptz),"
            " (1, '2026-06-01 10:00:00+00'::timestamptz)) v(n, v)"
        )
        printed = conn.exec_driver_sql("select v::text from t where n = 0").scalar()
    engine.dispose()
    assert printed == shown
    rejects, sent = _warehouse_rejects(sandbox_server, url, "t", "pprinted", session)
    assert list(rejects) == [1] and rejects[1]["rule"] == "type", rejects
    assert rejects[1]["value"] == shown and "TIMESTAMP in year" in rejects[1]["message"], rejects
    assert sent == ["k1"]
