"""Values from a real PostgreSQL through SQLAlchemy (psycopg) travel as DuckDB's do (issue 13).

PostgreSQL's ``'infinity'``/``'-infinity'`` DATE, TIMESTAMP and TIMESTAMPTZ were a psycopg
``DataError`` that failed the whole run with no counts; INTERVAL went out as ISO text, JSON as
Python reprs, NUMERIC ``'NaN'``/``'Infinity'`` as text and 1.10 as 1.100000000 next to a wider
scale, TIMETZ without its offset. Now each is what the DuckDB path makes of the same value: a
``type`` reject with the same reason, or the same text (README "Values travel").
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from line_exports import LineConversionResource, SqlSource, build_export
from line_exports.rules import ROW_NUMBER
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_conversion import events_of
from line_exports_tests.test_values import (
    _duckdb_rows,
    _rows,
    _type_rejects,
    _validated,
    check_local_mean_times,
    check_mixed_times,
    maac_path,
)


def _pg_rows(url: str, sql: str) -> Iterator[pd.DataFrame]:
    table = f"t{time.monotonic_ns()}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"create table {table} as {sql}")
    engine.dispose()
    yield from SqlSource(url=url).read_chunks(f"select * from {table} order by n", 4)


# (PostgreSQL value, the same value on DuckDB): a type reject, with the same reason both ways.
REJECTED = {
    "infinite date": ("'infinity'::date", "'infinity'::date"),
    "-infinite date": ("'-infinity'::date", "'-infinity'::date"),
    "infinite timestamp": ("'infinity'::timestamp", "'infinity'::timestamp"),
    "-infinite timestamptz": ("'-infinity'::timestamptz", "'-infinity'::timestamptz"),
    "interval": ("interval '90 minutes'", "interval 90 minute"),
    "array": ("array[1, 2]", "[1, 2]"),
    "numeric Infinity": ("'Infinity'::numeric", "'Infinity'::double"),
    # finite, but after 9999 or BC: psycopg's DataError failed the run as a "query" error
    "date after 9999": ("'10000-01-01'::date", "'10000-01-01'::DATE"),
    "BC date": ("'0044-03-15 BC'::date", "'0044-03-15 (BC)'::DATE"),
    "timestamp after 9999": ("'10000-01-01 00:00:00'::timestamp", "'10000-01-01'::TIMESTAMP"),
    "timestamptz after 9999": (
        "'10000-01-01 00:00:00+00'::timestamptz",
        "'10000-01-01 00:00:00+00'::TIMESTAMPTZ",
    ),
}


@pytest.mark.parametrize("path", ["line_messaging_push", "line_conversion"])
def test_postgres_values_no_field_holds_are_the_type_rejects_duckdb_makes(
    postgres_url: str, tmp_path: Path, path: str
) -> None:
    for name, (pg, duck) in REJECTED.items():
        sql = "select * from (values (0, {}), (1, null)) v(n, v)"
        from_pg = _type_rejects(_pg_rows(postgres_url, sql.format(pg)), path)
        from_duckdb = _type_rejects(_duckdb_rows(tmp_path, sql.format(duck)), path)
        assert from_pg[ROW_NUMBER].tolist() == [1], (name, from_pg)  # the NULL row is not
        assert from_pg["message"].tolist() == from_duckdb["message"].tolist(), name
        if "9999" in name or "BC" in name:  # the true reason, naming the value's year
            year = "44 BC" if "BC" in name else "10000"
            assert f"in year {year}: no field takes a date outside" in from_pg["message"][0]


# PostgreSQL value next to a NULL -> the text a push template sends (export zone Asia/Tokyo).
SENT = {
    "numeric of 39 digits": (
        "123456789012345678901234567890.123456789::numeric",
        "123456789012345678901234567890.123456789",
    ),
    "numeric keeps its scale": ("1.10::numeric", "1.10"),
    "bigint next to a NULL": ("9007199254740993::bigint", "9007199254740993"),
    "timestamptz offset": ("'2026-11-30 12:00:00+05:30'::timestamptz", "2026-11-30T15:30:00+09:00"),
    "midnight timestamp": ("'2026-11-30 00:00:00'::timestamp", "2026-11-30T00:00:00+09:00"),
    "date": ("'2026-11-30'::date", "2026-11-30"),
    "jsonb": ("""'{"a": [1, 2]}'::jsonb""", '{"a": [1, 2]}'),
    "json": ("""'{"a":1}'::json""", '{"a":1}'),
    "timetz": ("'12:34:56+09'::timetz", "12:34:56+09:00"),
}


def test_postgres_values_travel_as_the_warehouse_holds_them(postgres_url: str) -> None:
    template = json.dumps({"type": "text", "text": "{{v}}"})
    values: dict[str, Any] = {"target": "push_message", "template_message": template}
    for name, (pg, expected) in SENT.items():
        sql = f"select * from (values (0, {pg}), (1, null)) v(n, v)"
        frames = _rows(_pg_rows(postgres_url, sql), lambda n: {"id": f"U{n:032x}"})
        rows = _validated("line_messaging", values, [frames[0].iloc[:1]], "Asia/Tokyo")
        assert rows[0]["v"].tolist() == [expected], name
    # NUMERIC 'NaN' is a missing value, as a DOUBLE NaN is: MAAC leaves the field out.
    sql = "select * from (values (0, 'NaN'::numeric), (1, 2.50)) v(n, v)"
    assert maac_path(_pg_rows(postgres_url, sql), "UTC") == [None, "2.50"]


def test_postgres_infinite_timestamp_in_a_run_is_a_counted_type_reject(
    postgres_url: str, sandbox_server: SandboxServer
) -> None:
    """A CAPI export whose PostgreSQL query holds an infinite event time: the run (which failed
    on psycopg's DataError, no counts) sends the other events and counts that one rejected."""
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "create table capi_inf as select * from (values "
            "('k1', now() - interval '1 minute'), ('k2', '-infinity'::timestamptz)) "
            "v(deduplication_key, event_time)"
        )
    engine.dispose()
    asset = build_export(
        "pg_capi",
        destination="line_conversion",
        query="select deduplication_key, event_time as event_timestamp, 'conversion' as "
        "event_type, 'web' as source_type, 'x' || deduplication_key as external_id "
        "from capi_inf order by 1",
        retry_policy=None,
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=postgres_url),
            "line_conversion": LineConversionResource(
                line_tag_id="tag-pg", base_url=sandbox_server.url
            ),
        },
        raise_on_error=False,
    )
    assert result.success
    meta = {
        k: getattr(v, "value", v)
        for k, v in result.get_asset_materialization_events()[
            0
        ].event_specific_data.materialization.metadata.items()  # type: ignore[union-attr]
    }
    assert (meta["rows_read"], meta["rows_rejected"], meta["rows_accepted"]) == (2, 1, 1)
    assert meta["rejects_by_rule"] == {"event_timestamp: type": 1}, meta["rejects_by_rule"]
    assert list(events_of(sandbox_server.sandbox, "tag-pg")) == ["k1"]


def test_postgres_timestamps_with_unsendable_cells_are_checked_as_duckdb_checks_them(
    postgres_url: str,
) -> None:
    """The DuckDB cases of :data:`~line_exports_tests.test_values.MIXED_TIMES` from PostgreSQL:
    psycopg's rows of a column holding an ``'infinity'`` are objects too; the sentinel next to it
    failed the run (NotImplementedError), a year-10000 instant was sent, Sydney's and Auckland's
    summer time on 9999-12-31 failed it (OverflowError)."""
    check_mixed_times(lambda sql: _pg_rows(postgres_url, sql))


def test_postgres_instants_whose_zone_offset_has_seconds_are_written_in_utc(
    postgres_url: str,
) -> None:
    """VERIFY-13d G4 from PostgreSQL: a local mean time offset (``+09:18:59``) is never written."""
    check_local_mean_times(lambda sql: _pg_rows(postgres_url, sql))


def test_postgres_naive_time_the_zone_shows_twice_is_a_type_reject(postgres_url: str) -> None:
    """PostgreSQL's own reading of ``2026-11-01 01:30`` in America/New_York (AT TIME ZONE) is
    the second instant (EST), Python's the first: the row is a type reject naming why, from
    PostgreSQL's rows as from DuckDB's; the hour after is sent."""
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        second = conn.exec_driver_sql(
            "select extract(epoch from timestamp '2026-11-01 01:30' at time zone "
            "'America/New_York')::bigint"
        ).scalar()
    engine.dispose()
    assert second == 1793514600  # 06:30 UTC, 01:30 EST; the first instant is 05:30 UTC
    sql = (
        "select * from (values (0, timestamp '2026-11-01 01:30'), "
        "(1, timestamp '2026-11-01 02:00')) v(n, v)"
    )
    rejects = _type_rejects(_pg_rows(postgres_url, sql), "line_messaging_push", "America/New_York")
    assert rejects[ROW_NUMBER].tolist() == [1]
    assert "is a time America/New_York's clocks show twice" in rejects["message"].iloc[0]
