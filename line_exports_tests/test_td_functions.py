"""TD's functions on the embedded engine, each against the examples of TD's function reference.

Reference: "Treasure Data functions" (https://api-docs.treasuredata.com/en/tools/presto/api/),
whose examples are quoted here as published; where the reference gives a query but no result,
the expected value is worked out from the documented rule and says so.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from line_exports.sandbox import SandboxServer
from line_exports.session import SESSION_TIME_TAG
from line_exports.sources import SqlSource
from line_exports.sql import register_td_functions
from line_exports.sql.td_time import TdTimeError, interval_range, zone
from line_exports.workflows import load_folder

# TD_INTERVAL's reference describes its ranges for TD_SCHEDULED_TIME() = 2018-08-14 01:23:45
# (a Tuesday, UTC).
SCHEDULED = 1534209825


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    return register_td_functions(duckdb.connect(), SCHEDULED)


def one(con: duckdb.DuckDBPyConnection, expr: str) -> object:
    return con.sql(f"SELECT {expr}").fetchall()[0][0]


def utc(text: str) -> int:
    from datetime import datetime, timezone

    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp())


# --- TD_TIME_FORMAT ------------------------------------------------------------------------


def test_time_format_documented_example(con: duckdb.DuckDBPyConnection) -> None:
    # "the format 'yyyy-MM-dd HH:mm:ss z' converts 1325376000 to '2012-01-01 00:00:00 UTC'"
    assert one(con, "TD_TIME_FORMAT(1325376000, 'yyyy-MM-dd HH:mm:ss z')") == (
        "2012-01-01 00:00:00 UTC"
    )
    # the reference's other two forms: the same instant in PST and JST
    assert one(con, "TD_TIME_FORMAT(1325376000, 'yyyy-MM-dd HH:mm:ss z', 'PST')") == (
        "2011-12-31 16:00:00 PST"
    )
    assert one(con, "TD_TIME_FORMAT(1325376000, 'yyyy-MM-dd HH:mm:ss z', 'JST')") == (
        "2012-01-01 09:00:00 JST"
    )


def test_time_format_java_pattern_letters(con: duckdb.DuckDBPyConnection) -> None:
    t = utc("2018-09-13 09:45:34")  # a Thursday
    assert one(con, f"TD_TIME_FORMAT({t}, 'EEE, d MMM yyyy hh:mm a Z', 'Asia/Tokyo')") == (
        "Thu, 13 Sep 2018 06:45 PM +0900"
    )
    assert one(con, f"TD_TIME_FORMAT({t}, 'EEEE MMMM yy D u XXX', 'Asia/Tokyo')") == (
        "Thursday September 18 256 4 +09:00"
    )
    assert one(con, f"TD_TIME_FORMAT({t}, '''week'' ww', 'UTC')") == "week 37"
    assert one(con, f"TD_TIME_FORMAT({t}, 'yyyyMMdd''T''HHmmssX')") == "20180913T094534Z"
    with pytest.raises(duckdb.Error, match="illegal pattern character 'b'"):
        one(con, f"TD_TIME_FORMAT({t}, 'yyyy-bb')")
    assert one(con, "TD_TIME_FORMAT(NULL, 'yyyy')") is None


# --- TD_TIME_STRING ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        # the reference's table, for 2018-09-13 16:45:34 at +0700
        ("y", "2018-01-01 00:00:00+0700"),
        ("M", "2018-09-01 00:00:00+0700"),
        ("d", "2018-09-13 00:00:00+0700"),
        ("h", "2018-09-13 16:00:00+0700"),
        ("s", "2018-09-13 16:45:34+0700"),
        ("y!", "2018"),
        ("M!", "2018-09"),
        ("d!", "2018-09-13"),
        ("h!", "2018-09-13 16"),
        ("m!", "2018-09-13 16:45"),
        ("s!", "2018-09-13 16:45:34"),
        # worked out from the rule (quarter starts Jan/Apr/Jul/Oct; weeks start Monday)
        ("q", "2018-07-01 00:00:00+0700"),
        ("q!", "2018-07"),
        ("w", "2018-09-10 00:00:00+0700"),
        ("m", "2018-09-13 16:45:00+0700"),
    ],
)
def test_time_string_reference_table(
    con: duckdb.DuckDBPyConnection, code: str, expected: str
) -> None:
    assert one(con, f"TD_TIME_STRING(1536831934, '{code}', 'Asia/Bangkok')") == expected


def test_time_string_defaults_to_utc_and_rejects_unknown_codes(
    con: duckdb.DuckDBPyConnection,
) -> None:
    assert one(con, "TD_TIME_STRING(1536831934, 'd!')") == "2018-09-13"
    with pytest.raises(duckdb.Error, match="invalid TD_TIME_STRING format 'x'"):
        one(con, "TD_TIME_STRING(1536831934, 'x')")


# --- TD_TIME_PARSE -------------------------------------------------------------------------


def test_time_parse(con: duckdb.DuckDBPyConnection) -> None:
    assert one(con, "TD_TIME_PARSE('2022-08-24', 'JST')") == utc("2022-08-23 15:00:00")
    assert one(con, "TD_TIME_PARSE('2012-01-01 00:00:00')") == 1325376000
    # "If time itself has timezone (e.g. '2012-01-01 +0700'), default_timezone is ignored"
    assert one(con, "TD_TIME_PARSE('2012-01-01 +0700', 'JST')") == utc("2011-12-31 17:00:00")
    assert one(con, "TD_TIME_PARSE('2013-01-01 PDT')") == utc("2013-01-01 07:00:00")
    assert one(con, "TD_TIME_PARSE('2013-01-01T10:00:00Z')") == utc("2013-01-01 10:00:00")
    # "If time is invalid or the UDF fails to parse, it returns NULL"
    assert one(con, "TD_TIME_PARSE('not a time')") is None
    assert one(con, "TD_TIME_PARSE(NULL)") is None


# --- TD_TIME_RANGE -------------------------------------------------------------------------


def test_time_range_reference_examples(con: duckdb.DuckDBPyConnection) -> None:
    start = utc("2019-01-01 07:00:00")  # 2019-01-01 00:00 PDT
    inside, before = start + 3600, start - 1
    cases = {
        "TD_TIME_RANGE({t}, '2019-01-01 PDT')": (True, False),
        "TD_TIME_RANGE({t}, '2019-01-01', '2019-01-02', 'PDT')": (True, False),
        "TD_TIME_RANGE({t}, '2019-01-01', NULL, 'PDT')": (True, False),
        "TD_TIME_RANGE({t}, NULL, '2019-01-01', 'PDT')": (False, True),
    }
    for expr, (at_inside, at_before) in cases.items():
        assert one(con, expr.format(t=inside)) is at_inside, expr
        assert one(con, expr.format(t=before)) is at_before, expr
    # "start_time <= time && time < end_time": the end is excluded
    assert one(con, f"TD_TIME_RANGE({start + 86400}, '2019-01-01', '2019-01-02', 'PDT')") is False
    assert one(con, f"TD_TIME_RANGE({start}, '2019-01-01', '2019-01-02', 'PDT')") is True
    # UNIX seconds as bounds; "If start_time is NULL, the UDF assumes it's 0"
    assert one(con, "TD_TIME_RANGE(1609426800, 1609426800, 1617116400, 'JST')") is True
    assert one(con, "TD_TIME_RANGE(-5, NULL, 10)") is False
    # The reference's "NG" form: 'PDT' is read as end_time, which is not a time: an error
    with pytest.raises(duckdb.Error, match="cannot read 'PDT' as a time"):
        one(con, f"TD_TIME_RANGE({inside}, '2019-01-01', 'PDT')")


def test_time_range_filters_a_column_with_a_pushed_down_constant(
    con: duckdb.DuckDBPyConnection,
) -> None:
    con.execute(
        "CREATE TABLE ev AS SELECT (1704000000 + i * 60)::BIGINT AS time FROM range(100000) t(i)"
    )
    counted = con.sql(
        "SELECT count(*) FROM ev WHERE TD_TIME_RANGE(time, '2024-01-01', '2024-01-02', 'JST')"
    ).fetchall()[0][0]
    assert counted == 1440  # one row a minute over one JST day
    plan = con.sql(
        "EXPLAIN SELECT count(*) FROM ev WHERE TD_TIME_RANGE(time, '2024-01-01', NULL, 'JST')"
    ).fetchall()[0][1]
    assert "time >= 1704034800" in plan  # folded once into a scan filter, not called per row


# --- TD_TIME_ADD ---------------------------------------------------------------------------


def test_time_add(con: duckdb.DuckDBPyConnection) -> None:
    day = utc("2013-01-01 00:00:00")
    # the reference's TD_TIME_RANGE(time, '2013-01-01', TD_TIME_ADD('2013-01-01', '1d'))
    assert one(con, "TD_TIME_ADD('2013-01-01', '1d')") == day + 86400
    assert one(con, "TD_TIME_ADD('2013-01-01', '1day', 'PDT')") == day + 7 * 3600 + 86400
    assert one(con, "TD_TIME_ADD(1465938349, '-1h')") == 1465938349 - 3600
    assert one(con, "TD_TIME_ADD(0, '1w2d3h4m5s')") == 604800 + 2 * 86400 + 3 * 3600 + 245
    assert one(con, "TD_TIME_ADD(TD_SCHEDULED_TIME(), '-1d')") == SCHEDULED - 86400
    assert one(con, "TD_TIME_ADD('garbage', '1d')") is None
    with pytest.raises(duckdb.Error, match="invalid duration '1M'"):
        one(con, "TD_TIME_ADD(0, '1M')")  # months have no fixed length: TD has none


# --- TD_DATE_TRUNC -------------------------------------------------------------------------


def test_date_trunc(con: duckdb.DuckDBPyConnection) -> None:
    t = 1416787667  # the reference's example row: 2014-11-24 00:07:47 UTC
    assert one(con, f"TD_DATE_TRUNC('day', {t})") == utc("2014-11-24 00:00:00")
    # in PST it is 2014-11-23 16:07:47, so the day starts 2014-11-23 00:00 PST = 08:00 UTC
    assert one(con, f"TD_DATE_TRUNC('day', {t}, 'PST')") == utc("2014-11-23 08:00:00")
    assert one(con, f"TD_DATE_TRUNC('hour', {t})") == utc("2014-11-24 00:00:00")
    assert one(con, f"TD_DATE_TRUNC('minute', {t})") == utc("2014-11-24 00:07:00")
    assert one(con, f"TD_DATE_TRUNC('week', {t})") == utc("2014-11-24 00:00:00")  # a Monday
    assert one(con, f"TD_DATE_TRUNC('month', {t}, 'JST')") == utc("2014-10-31 15:00:00")
    assert one(con, f"TD_DATE_TRUNC('quarter', {t})") == utc("2014-10-01 00:00:00")
    assert one(con, f"TD_DATE_TRUNC('year', {t}, 'JST')") == utc("2013-12-31 15:00:00")
    # an hour in India (+05:30) starts at :30 UTC
    assert one(con, f"TD_DATE_TRUNC('hour', {t}, 'IST')") == utc("2014-11-23 23:30:00")
    with pytest.raises(duckdb.Error, match="invalid TD_DATE_TRUNC unit 'fortnight'"):
        one(con, f"TD_DATE_TRUNC('fortnight', {t})")


# --- TD_INTERVAL ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("-1d", "2018-08-13 00:00:00", "2018-08-14 00:00:00"),  # yesterday
        ("1d", "2018-08-14 00:00:00", "2018-08-15 00:00:00"),  # today
        ("-1h", "2018-08-14 00:00:00", "2018-08-14 01:00:00"),
        ("-1w", "2018-08-06 00:00:00", "2018-08-13 00:00:00"),  # last week, Monday to Monday
        ("-1M", "2018-07-01 00:00:00", "2018-08-01 00:00:00"),
        ("-1y", "2017-01-01 00:00:00", "2018-01-01 00:00:00"),
        ("-7d", "2018-08-07 00:00:00", "2018-08-14 00:00:00"),
        ("-1d/now", "2018-08-13 00:00:00", "2018-08-14 01:23:45"),  # yesterday until now
        ("0d/now", "2018-08-14 00:00:00", "2018-08-14 01:23:45"),  # today until now
        ("0M/now", "2018-08-01 00:00:00", "2018-08-14 01:23:45"),
        ("-1d/0d", "2018-08-13 00:00:00", "2018-08-14 00:00:00"),  # same as -1d
        ("-1M/0M", "2018-07-01 00:00:00", "2018-08-01 00:00:00"),  # previous month
        ("-1d/-1d", "2018-08-12 00:00:00", "2018-08-13 00:00:00"),  # two days ago
        ("-1M/-2M", "2018-05-01 00:00:00", "2018-06-01 00:00:00"),  # three months ago
        ("-7d/-1d", "2018-08-06 00:00:00", "2018-08-13 00:00:00"),  # 7 days before yesterday
        ("-1d/2025-10-01", "2025-09-30 00:00:00", "2025-10-01 00:00:00"),
    ],
)
def test_interval_ranges(spec: str, start: str, end: str) -> None:
    assert interval_range(spec, SCHEDULED, zone("UTC")) == (utc(start), utc(end))


def test_interval_filters_from_the_scheduled_time(con: duckdb.DuckDBPyConnection) -> None:
    yesterday_jst = utc("2018-08-12 15:00:00")  # 2018-08-13 00:00 JST
    assert one(con, f"TD_INTERVAL({yesterday_jst}, '-1d', 'JST')") is True
    assert one(con, f"TD_INTERVAL({yesterday_jst - 1}, '-1d', 'JST')") is False
    assert one(con, f"TD_INTERVAL({utc('2018-08-13 12:00:00')}, '-1d')") is True
    with pytest.raises(duckdb.Error, match="invalid TD_INTERVAL string '-1x'"):
        one(con, "TD_INTERVAL(0, '-1x')")


def test_interval_fourth_argument_is_the_time_it_is_relative_to(
    con: duckdb.DuckDBPyConnection,
) -> None:
    # TD's documented form for scheduled queries: TD_INTERVAL(time, '-1d', 'JST',
    # TD_SCHEDULED_TIME()), "yesterday relative to the schedule time": the same as 3 arguments.
    yesterday_jst = utc("2018-08-12 15:00:00")  # 2018-08-13 00:00 JST
    for t in (yesterday_jst - 1, yesterday_jst, yesterday_jst + 86399, yesterday_jst + 86400):
        assert one(con, f"TD_INTERVAL({t}, '-1d', 'JST', TD_SCHEDULED_TIME())") == one(
            con, f"TD_INTERVAL({t}, '-1d', 'JST')"
        )
    # Another reference time: a week after the schedule, '-1d' is 2018-08-20 (UTC).
    later = SCHEDULED + 7 * 86400
    assert one(con, f"TD_INTERVAL({utc('2018-08-20 00:00:00')}, '-1d', 'UTC', {later})") is True
    assert one(con, f"TD_INTERVAL({utc('2018-08-13 12:00:00')}, '-1d', 'UTC', {later})") is False
    # '/now' and '0d' end at the given reference, not at TD_SCHEDULED_TIME().
    assert one(con, f"TD_INTERVAL({later - 1}, '0d/now', 'UTC', {later})") is True
    assert one(con, f"TD_INTERVAL({later}, '0d/now', 'UTC', {later})") is False
    # An offset date still wins over the reference, as with three arguments.
    assert one(con, f"TD_INTERVAL({utc('2025-09-30 12:00:00')}, '-1d/2025-10-01', 'UTC', 0)")
    # A NULL reference filters nothing in (no range), like a NULL interval string.
    assert one(con, "TD_INTERVAL(0, '-1d', 'UTC', NULL)") is None
    # In a td> query on the embedded engine, after the dialect translation.
    from line_exports.sql.dialect import translate

    sql = translate(
        "SELECT count(*) FROM (VALUES (1534118400), (1534204800)) AS v(time)"
        " WHERE TD_INTERVAL(time, '-1d', 'UTC', TD_SCHEDULED_TIME())",
        write="duckdb",
    ).sql
    assert con.sql(sql).fetchall() == [(1,)]


def test_interval_range_gives_the_range_td_interval_uses(con: duckdb.DuckDBPyConnection) -> None:
    """TD_INTERVAL_RANGE(interval[, timezone]): "confirm the exact time range that td_interval
    will use", [start, end] (TD's examples, treasure-data/td-skills sql-skills/time-filtering),
    here relative to TD_SCHEDULED_TIME() = 2018-08-14 01:23:45 UTC (10:23:45 JST)."""
    examples = {
        "TD_INTERVAL_RANGE('-7d', 'UTC')": ("2018-08-07 00:00:00", "2018-08-14 00:00:00"),
        "TD_INTERVAL_RANGE('-1d/2025-10-01', 'JST')": (
            "2025-09-29 15:00:00",
            "2025-09-30 15:00:00",
        ),
        "TD_INTERVAL_RANGE('-1d', 'JST')": ("2018-08-12 15:00:00", "2018-08-13 15:00:00"),
        "TD_INTERVAL_RANGE('0M/now', 'JST')": ("2018-07-31 15:00:00", "2018-08-14 01:23:45"),
        "TD_INTERVAL_RANGE('-1d')": ("2018-08-13 00:00:00", "2018-08-14 00:00:00"),
    }
    for expr, (start, end) in examples.items():
        assert one(con, expr) == [utc(start), utc(end)], expr
    # the same range TD_INTERVAL filters with: start <= time < end
    ((start, end),) = con.sql("SELECT TD_INTERVAL_RANGE('-1w', 'JST')").fetchall()[0]
    for t in (start - 1, start, end - 1, end):
        assert one(con, f"TD_INTERVAL({t}, '-1w', 'JST')") is (start <= t < end)
    assert one(con, "TD_INTERVAL_RANGE(NULL)") is None
    with pytest.raises(duckdb.Error, match="invalid TD_INTERVAL string '-1x'"):
        one(con, "TD_INTERVAL_RANGE('-1x')")


# --- timezones -----------------------------------------------------------------------------


def test_timezone_names_td_accepts() -> None:
    from datetime import timedelta

    assert str(zone("JST")) == "Asia/Tokyo" and str(zone("PST")) == "America/Los_Angeles"
    assert zone("EST").utcoffset(None) == timedelta(hours=-5)  # Java's fixed -05:00
    assert zone("PDT").utcoffset(None) == timedelta(hours=-7)
    assert zone("+09:00").utcoffset(None) == timedelta(hours=9)
    assert zone(None).utcoffset(None) == timedelta(0)
    with pytest.raises(TdTimeError, match="unknown timezone 'Mars/Olympus'"):
        zone("Mars/Olympus")


# --- TD_SCHEDULED_TIME: the run's session time reaches the query ---------------------------


def test_scheduled_time_reaches_sql_source(tmp_path: Path) -> None:
    # the reference's example: scheduled by cron '44 * * * *' in JST -> 1616388240
    source = SqlSource(duckdb_path=str(tmp_path / "s.duckdb"), sample_tables=False)
    frames = list(
        source.read_chunks(
            "SELECT TD_SCHEDULED_TIME() AS t, TD_TIME_FORMAT(TD_SCHEDULED_TIME(), "
            "'yyyy-MM-dd HH:mm:ssZ', 'JST') AS s",
            scheduled_time=1616388240,
        )
    )
    assert frames[0].to_dict("records") == [{"t": 1616388240, "s": "2021-03-22 13:44:00+0900"}]


def test_python_functions_work_with_external_access_off() -> None:
    locked = duckdb.connect(config={"enable_external_access": False, "lock_configuration": True})
    register_td_functions(locked, SCHEDULED)
    assert one(locked, "TD_TIME_STRING(TD_SCHEDULED_TIME(), 'd!', 'JST')") == "2018-08-14"


def test_scheduled_time_is_the_runs_session_time(
    tmp_path: Path, sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINE_EXPORTS_SANDBOX_URL", sandbox_server.url)
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "connections.yaml").write_text("connections:\n  maac_main:\n    type: maac\n")
    (folder / "q.sql").write_text(
        "SELECT line_uid FROM segment_users\n"
        "WHERE TD_SCHEDULED_TIME() = 1616388240\n"
        "  AND TD_TIME_STRING(TD_SCHEDULED_TIME(), 'h!', 'JST') = '2021-03-22 13'\n"
        "LIMIT 7\n"
    )
    (folder / "hourly.dig").write_text(
        textwrap.dedent(
            """
            timezone: Asia/Tokyo
            +seg:
              td>: q.sql
              result_connection: maac_main
              result_settings: {data_object: segments, segment_name: hourly}
            """
        )
    )
    loaded = load_folder(folder)
    assert loaded.errors == []
    job = loaded.definitions().resolve_job_def("hourly")
    with dg.instance_for_test() as instance:
        tick = job.execute_in_process(
            instance=instance, tags={SESSION_TIME_TAG: "2021-03-22T13:44:00+09:00"}
        )
        other = job.execute_in_process(
            instance=instance,
            tags={SESSION_TIME_TAG: "2021-03-22T14:44:00+09:00"},
            raise_on_error=False,
        )
    read = [
        e.materialization.metadata["rows_read"].value
        for e in tick.all_events
        if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    ]
    assert tick.success and read == [7]
    # an hour later the query selects nothing: nothing to send, so the export is skipped with
    # a failed not_empty check (issue 15) instead of sending an empty segment MAAC refuses
    checks = {
        e.event_specific_data.check_name: e.event_specific_data.passed
        for e in other.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }
    assert other.success and checks["not_empty"] is False


def test_functions_outlive_the_connection_that_registered_them(tmp_path: Path) -> None:
    """Connections of one process to one file share their functions: closing the first must
    leave the second working (a freed Python function would crash the process)."""
    import subprocess
    import sys

    script = textwrap.dedent(
        f"""
        import gc, duckdb
        from line_exports.sql import register_td_functions
        path = {str(tmp_path / "shared.duckdb")!r}
        duckdb.connect(path).close()
        first = register_td_functions(duckdb.connect(path), 1)
        second = register_td_functions(duckdb.connect(path), 2)
        first.close(); del first; gc.collect()
        print(second.sql("SELECT TD_TIME_STRING(TD_SCHEDULED_TIME(), 's!')").fetchall())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "1970-01-01 00:00:02" in done.stdout


@pytest.mark.parametrize(
    "pattern",
    ["yyyy-MM-dd", "yyyy-MM-dd HH:mm:ss", "yy/M/d H:m:s", "EEE, d MMM yyyy hh:mm a", "EEEE MMMM D"],
)
@pytest.mark.parametrize("tz", ["UTC", "JST", "America/Los_Angeles", "EST", "Europe/London"])
def test_native_time_format_matches_the_python_formatter(
    con: duckdb.DuckDBPyConnection, pattern: str, tz: str
) -> None:
    """The dialect translation runs TD_TIME_FORMAT with a constant pattern on DuckDB's own
    strftime: every row (hourly over two years, across DST changes) reads as the reference
    formatter writes it."""
    from line_exports.sql.dialect import translate

    query = (
        f"SELECT TD_TIME_FORMAT(t, '{pattern}', '{tz}') FROM "
        "(SELECT 1700000000 + i * 3599 AS t FROM range(17600) r(i)) ORDER BY t"
    )
    native = translate(query, write="duckdb").sql
    assert "STRFTIME" in native
    assert con.sql(native).fetchall() == con.sql(query).fetchall()


@pytest.mark.parametrize(
    "call",
    [
        *(
            f"TD_TIME_STRING(t, '{c}', '{{tz}}')"
            for c in ("y!", "q!", "M!", "w!", "d!", "h!", "m!")
        ),
        *(
            f"TD_DATE_TRUNC('{u}', t, '{{tz}}')"
            for u in ("minute", "hour", "day", "week", "month", "quarter", "year")
        ),
    ],
)
@pytest.mark.parametrize("tz", ["UTC", "JST", "America/Los_Angeles", "IST", "Europe/London"])
def test_native_time_string_and_date_trunc_match_python(
    con: duckdb.DuckDBPyConnection, call: str, tz: str
) -> None:
    """TD_TIME_STRING ('!' codes) and TD_DATE_TRUNC on DuckDB's own functions give the
    Python functions' text and instants, row by row (every 59 min 59 s over two years,
    through DST changes and a +05:30 zone)."""
    from line_exports.sql.dialect import translate

    query = (
        f"SELECT {call.format(tz=tz)} FROM "
        "(SELECT 1700000000 + i * 3599 AS t FROM range(17600) r(i)) ORDER BY t"
    )
    native = translate(query, write="duckdb").sql
    assert "TD_" not in native.upper().replace("TD__", "")
    assert con.sql(native).fetchall() == con.sql(query).fetchall()
