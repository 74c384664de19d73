"""TD's Presto/Hive queries translated to the source's dialect (sqlglot), run on DuckDB.

Realistic TD queries (time ranges, approx_distinct, CROSS JOIN UNNEST, JSON extraction, window
functions, sessionization) go to DuckDB and to PostgreSQL; each translation runs on a real
DuckDB database (PostgreSQL's output too, where DuckDB reads PostgreSQL's syntax) and must give
the rows computed by hand from the data. Workflows: the translated SQL is what runs and what
``plan`` shows; a construct with no equivalent fails ``validate`` naming file:line and itself.
"""

from __future__ import annotations

import argparse
import io
import textwrap
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from line_exports.session import render_session_variables
from line_exports.sql import register_td_functions
from line_exports.sql.dialect import TranslationError, dialect_of_url, translate
from line_exports.workflows import load_folder
from line_exports.workflows.cli import register

SESSION = 1704067200  # 2024-01-01 00:00:00 UTC = 09:00 JST


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    con = register_td_functions(duckdb.connect(), SESSION)
    con.execute(
        """CREATE TABLE access AS SELECT * FROM (VALUES
        (1704034800, 'u1', '{"user": {"id": "A"}, "tags": ["x", "y"]}', ['x', 'y']),
        (1704038400, 'u2', '{"user": {"id": "B"}, "tags": ["z"]}', ['z']),
        (1704039000, 'u2', '{"user": {"id": "B"}, "tags": []}', []),
        (1704120000, 'u1', '{"user": {"id": "A"}, "tags": []}', []),
        (1703980000, 'u3', '{"user": {"id": "C"}}', ['q'])
        ) t(time, user_id, payload, tags)"""
    )
    return con


def run(con: duckdb.DuckDBPyConnection, sql: str, write: str) -> list[tuple[object, ...]]:
    translated = translate(sql, read="trino", write=write).sql
    filled = render_session_variables(translated, {"session_unixtime": str(SESSION)})
    return con.sql(filled).fetchall()


QUERIES = {
    # 2024-01-01 in JST is [1704034800, 1704121200): four rows, users u1 and u2
    "time range": (
        "SELECT approx_distinct(user_id) AS users, count(*) AS n FROM access "
        "WHERE TD_TIME_RANGE(time, '2024-01-01', '2024-01-02', 'JST')",
        [(2, 4)],
    ),
    # the day before the session time: [1703980800, 1704067200)
    "scheduled range": (
        "SELECT count(*) FROM access WHERE TD_TIME_RANGE(time, "
        "TD_TIME_ADD(TD_SCHEDULED_TIME(), '-1d'), TD_SCHEDULED_TIME())",
        [(3,)],
    ),
    "open range": (
        "SELECT count(*) FROM access WHERE TD_TIME_RANGE(time, NULL, '2024-01-01 09:00:00', 'JST')",
        [(4,)],
    ),
    "cross join unnest": (
        "SELECT user_id, tag FROM access CROSS JOIN UNNEST(tags) AS t(tag) ORDER BY user_id, tag",
        [("u1", "x"), ("u1", "y"), ("u2", "z"), ("u3", "q")],
    ),
    "window functions": (
        "SELECT user_id, time, row_number() OVER (PARTITION BY user_id ORDER BY time DESC) AS rn, "
        "lag(time) OVER (PARTITION BY user_id ORDER BY time) AS prev "
        "FROM access ORDER BY user_id, time",
        [
            ("u1", 1704034800, 2, None),
            ("u1", 1704120000, 1, 1704034800),
            ("u2", 1704038400, 2, None),
            ("u2", 1704039000, 1, 1704038400),
            ("u3", 1703980000, 1, None),
        ],
    ),
}


@pytest.mark.parametrize("write", ["duckdb", "postgres"])
@pytest.mark.parametrize("name", sorted(QUERIES))
def test_td_queries_translate_and_run(
    con: duckdb.DuckDBPyConnection, name: str, write: str
) -> None:
    sql, expected = QUERIES[name]
    assert run(con, sql, write) == expected


def test_postgres_forms(con: duckdb.DuckDBPyConnection) -> None:
    """What PostgreSQL gets: folded TD functions, an exact count for approx_distinct, and
    PostgreSQL's JSON functions (DuckDB does not read their variadic path form, so the JSON
    query runs on DuckDB from its DuckDB translation)."""
    ranged = translate(QUERIES["time range"][0], write="postgres").sql
    assert "COUNT(DISTINCT user_id)" in ranged
    assert "time >= 1704034800" in ranged and "time < 1704121200" in ranged
    scheduled = translate(QUERIES["scheduled range"][0], write="postgres").sql
    assert "CAST(${session_unixtime} AS BIGINT) + -86400" in scheduled
    json_sql = (
        "SELECT json_extract_scalar(payload, '$.user.id') AS uid, "
        "json_array_length(json_extract(payload, '$.tags')) AS n FROM access ORDER BY time"
    )
    pg = translate(json_sql, write="postgres").sql
    assert "JSON_EXTRACT_PATH_TEXT(payload, 'user', 'id')" in pg
    assert run(con, json_sql, "duckdb") == [("C", None), ("A", 2), ("B", 1), ("B", 0), ("A", 0)]


def test_sessionize_window_on_duckdb(con: duckdb.DuckDBPyConnection) -> None:
    sql = (
        "SELECT user_id, time, TD_SESSIONIZE_WINDOW(time, 3600) "
        "OVER (PARTITION BY user_id ORDER BY time) AS session_id FROM access ORDER BY user_id, time"
    )
    rows = run(con, sql, "duckdb")
    sessions = {(user, time): sid for user, time, sid in rows}
    # u1's two events are a day apart: two sessions; u2's are 600 s apart: one session
    assert sessions[("u1", 1704034800)] != sessions[("u1", 1704120000)]
    assert sessions[("u2", 1704038400)] == sessions[("u2", 1704039000)]
    assert len(set(sessions.values())) == 4
    assert all(len(sid) == 36 and sid.count("-") == 4 for sid in sessions.values())
    assert run(con, sql, "duckdb") == rows  # the same ids on every run


def test_hive_queries(con: duckdb.DuckDBPyConnection) -> None:
    sql = (
        "SELECT get_json_object(payload, '$.user.id') AS uid, tag FROM access "
        "LATERAL VIEW explode(tags) t AS tag WHERE TD_TIME_RANGE(time, '2024-01-01', NULL, 'JST') "
        "ORDER BY uid, tag"
    )
    translated = translate(sql, read="hive", write="duckdb").sql
    assert con.sql(translated).fetchall() == [("A", "x"), ("A", "y"), ("B", "z")]


@pytest.mark.parametrize("write", ["duckdb", "postgres", "snowflake", "bigquery", "trino"])
def test_placeholders_survive(write: str) -> None:
    sql = (
        "SELECT line_uid, '${session_date}' AS day FROM users_${td_suffix} "
        "WHERE approx_distinct(x) > 0 AND hash(line_uid) % 4 = ${partition_key} "
        "AND day_key = '${session_date_compact}'"
    )
    out = translate(sql, write=write).sql
    for placeholder in ("'${session_date}'", "${partition_key}", "'${session_date_compact}'"):
        assert placeholder in out, (write, out)
    assert "${td_suffix}" in out


def test_a_query_the_target_reads_as_is_is_kept_as_written() -> None:
    sql = "-- members\nSELECT line_uid,\n  email\nFROM line_members\n"
    assert translate(sql, write="duckdb").sql == sql


def test_untranslatable_constructs_name_themselves_and_their_line() -> None:
    with pytest.raises(TranslationError) as err:
        translate("SELECT 1\nFROM t\nWHERE TD_PARSE_AGENT(ua)['os'] = 'iOS'", write="duckdb")
    assert err.value.line == 3 and "TD_PARSE_AGENT" in str(err.value)
    with pytest.raises(TranslationError, match="TD_INTERVAL with values known only at run time"):
        translate("SELECT 1 FROM t WHERE TD_INTERVAL(time, '-1d', 'JST')", write="postgres")
    with pytest.raises(TranslationError, match=r"bound '\$\{session_date\}' is known only"):
        translate("SELECT 1 FROM t WHERE TD_TIME_RANGE(time, '${session_date}')", write="postgres")
    with pytest.raises(TranslationError, match="cannot parse") as err:
        translate("SELECT a,\nFROM WHERE", write="duckdb")
    assert err.value.line == 2
    # a TD function of constants folds to its value outside the embedded engine
    folded = translate("SELECT TD_TIME_FORMAT(1325376000, 'yyyy-MM-dd', 'JST')", write="postgres")
    assert folded.sql.strip().endswith("'2012-01-01'")


def test_dialect_of_url(monkeypatch: pytest.MonkeyPatch) -> None:
    import dagster as dg

    assert dialect_of_url(None) == "duckdb"
    assert dialect_of_url("postgresql+psycopg://u@h/db") == "postgres"
    assert dialect_of_url("snowflake://u@acct/db") == "snowflake"
    assert dialect_of_url("bigquery://project/dataset") == "bigquery"
    monkeypatch.setenv("WAREHOUSE_URL", "trino://u@h:8080/hive")
    assert dialect_of_url(dg.EnvVar("WAREHOUSE_URL")) == "trino"


# --- workflows ------------------------------------------------------------------------------


def workflow(tmp_path: Path, query: str, options: str = "", source: str = "") -> Path:
    folder = tmp_path / "wf"
    folder.mkdir(exist_ok=True)
    (folder / "connections.yaml").write_text(
        source + "connections:\n  maac_main:\n    type: maac\n"
    )
    (folder / "q.sql").write_text(query)
    (folder / "daily.dig").write_text(
        textwrap.dedent(
            """
            timezone: Asia/Tokyo
            +seg:
              td>: q.sql
              result_connection: maac_main
              result_settings: {data_object: segments, segment_name: daily}
            """
        )
        + "".join(f"  {line}\n" for line in options.splitlines())
    )
    return folder


def cli(*args: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(list(args))
    out = io.StringIO()
    return ns.func(ns, out), out.getvalue()


def test_validate_names_the_query_file_line_and_construct(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql+psycopg://u@127.0.0.1/db")
    query = "SELECT line_uid\nFROM segment_users\nWHERE TD_INTERVAL(time, '-1d', 'JST')\n"
    folder = workflow(tmp_path, query, source="source:\n  url_env: WAREHOUSE_URL\n")
    code, out = cli("validate", "--workflows", str(folder))
    assert code == 1
    assert f"{folder / 'q.sql'}:3" in out and "TD_INTERVAL" in out and "postgres" in out
    # translate_sql: false: the query is the source's own SQL, loaded as written
    folder = workflow(
        tmp_path, query, "translate_sql: false", source="source:\n  url_env: WAREHOUSE_URL\n"
    )
    loaded = load_folder(folder)
    assert loaded.errors == []
    task = loaded.get("daily").tasks[0]
    assert task.translation is None and task.sql == query


def test_validate_refuses_td_calls_td_would_refuse_at_the_query_line(tmp_path: Path) -> None:
    """A constant TD cannot read (zone, pattern, unit, duration, interval, bound) or a wrong
    argument count fails validate naming the query file, line and rule, with or without
    translation; a value known only at run time is left to the run."""
    bad = {
        "TD_TIME_RANGE(time, '2024-01-01', NULL, 'Mars/Olympus')": "unknown timezone 'Mars/Olympus'",
        "TD_TIME_FORMAT(time, 'yyyy''x', 'JST') = ''": "unterminated quote in format",
        "TD_TIME_FORMAT(time) = ''": "TD_TIME_FORMAT takes 2 to 3 arguments, got 1",
        "TD_DATE_TRUNC('fortnight', time) > 0": "invalid TD_DATE_TRUNC unit 'fortnight'",
        "TD_TIME_ADD(time, '1M') > 0": "invalid duration '1M'",
        "TD_INTERVAL(time, '-1x', 'JST')": "invalid TD_INTERVAL string '-1x'",
        "TD_TIME_RANGE(time, 'yesterday')": "TD_TIME_RANGE: cannot read 'yesterday' as a time",
        "TD_TIME_STRING(time, 'zz') = ''": "invalid TD_TIME_STRING format 'zz'",
    }
    for condition, rule in bad.items():
        query = f"SELECT line_uid\nFROM segment_users\nWHERE {condition}\n"
        for options in ("", "translate_sql: false"):
            errors = [str(e) for e in load_folder(workflow(tmp_path, query, options)).errors]
            assert len(errors) == 1 and errors[0].startswith(f"{tmp_path / 'wf' / 'q.sql'}:3, "), (
                condition,
                errors,
            )
            assert rule in errors[0] and "translate_sql: false runs" not in errors[0], errors
    fine = "SELECT line_uid FROM segment_users WHERE TD_TIME_RANGE(time, '${session_date}', NULL, 'JST')"
    assert load_folder(workflow(tmp_path, fine)).errors == []


def test_engine_hive_and_a_wrong_engine(tmp_path: Path) -> None:
    hive = "SELECT line_uid FROM segment_users LATERAL VIEW explode(array(1, 2)) t AS n\n"
    loaded = load_folder(workflow(tmp_path, hive, "engine: hive"))
    assert loaded.errors == []
    assert "UNNEST" in loaded.get("daily").tasks[0].sql
    loaded = load_folder(workflow(tmp_path, hive, "engine: spark"))
    assert "unknown engine 'spark'" in str(loaded.errors[0])


def test_plan_shows_and_runs_the_translated_sql(tmp_path: Path) -> None:
    query = (
        "SELECT line_uid FROM (\n"
        "  SELECT line_uid, approx_distinct(line_uid) OVER () AS n,\n"
        "         TD_TIME_FORMAT(TD_SCHEDULED_TIME(), 'yyyy-MM-dd HH:mm', 'JST') AS at\n"
        "  FROM segment_users\n"
        ") WHERE n > 0 AND at = '2024-01-01 09:00'\n"
        "LIMIT 5\n"
    )
    folder = workflow(tmp_path, query)
    code, out = cli(
        "plan", "daily", "--workflows", str(folder), "--session-time", "2024-01-01T09:00:00+09:00"
    )
    assert "SQL translated from trino to duckdb" in out
    assert "APPROX_COUNT_DISTINCT(line_uid)" in out
    assert "read 5" in out, out


# --- on a real PostgreSQL server ------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_url(postgres_server_url: str) -> str:
    """A new database on the shared server (conftest) holding the ``access`` table."""
    import sqlalchemy as sa

    from line_exports_tests import postgres_server

    url = postgres_server.new_database(postgres_server_url)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                """CREATE TABLE access AS SELECT * FROM (VALUES
                (1704034800, 'u1', '{"user": {"id": "A"}, "tags": ["x", "y"]}'::json, ARRAY['x', 'y']),
                (1704038400, 'u2', '{"user": {"id": "B"}, "tags": ["z"]}'::json, ARRAY['z']),
                (1704039000, 'u2', '{"user": {"id": "B"}, "tags": []}'::json, ARRAY[]::text[]),
                (1704120000, 'u1', '{"user": {"id": "A"}, "tags": []}'::json, ARRAY[]::text[]),
                (1703980000, 'u3', '{"user": {"id": "C"}}'::json, ARRAY['q'])
                ) t(time, user_id, payload, tags)"""
            )
        )
    engine.dispose()
    return url


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_postgres_translations_run_on_postgres(postgres_url: str, name: str) -> None:
    """The same TD queries, translated to PostgreSQL and run through the source on a real
    PostgreSQL server, give the same rows as on DuckDB."""
    from line_exports.sources import SqlSource

    sql, expected = QUERIES[name]
    translated = translate(sql, read="trino", write=dialect_of_url(postgres_url)).sql
    filled = render_session_variables(translated, {"session_unixtime": str(SESSION)})
    frames = list(SqlSource(url=postgres_url).read_chunks(filled))
    rows = [
        # NULL is pd.NA in a nullable integer column (no float detour), NaN/None elsewhere.
        tuple(
            None if v is pd.NA or v is None or v != v else (int(v) if isinstance(v, float) else v)
            for v in row
        )
        for row in frames[0].itertuples(index=False)
    ]
    assert rows == expected


def test_postgres_json_extraction_runs_on_postgres(postgres_url: str) -> None:
    from line_exports.sources import SqlSource

    sql = (
        "SELECT json_extract_scalar(payload, '$.user.id') AS uid, "
        "json_array_length(json_extract(payload, '$.tags')) AS n FROM access ORDER BY time"
    )
    translated = translate(sql, write="postgres").sql
    frame = next(SqlSource(url=postgres_url).read_chunks(translated))
    assert frame["uid"].tolist() == ["C", "A", "B", "B", "A"]
    assert [None if n is pd.NA else int(n) for n in frame["n"]] == [None, 2, 1, 0, 0]
