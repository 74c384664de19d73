"""The SQL source: embedded DuckDB with sample tables, SQLAlchemy engines, chunked reads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
import sqlalchemy as sa

from line_exports import sample_data
from line_exports.sources import SqlSource, _plain_scan_columns, ensure_sample_tables


def test_embedded_duckdb_is_created_with_every_sample_table(line_exports_home: Path) -> None:
    source = SqlSource()
    chunks = list(source.read_chunks("select * from line_members", chunk_size=1000))
    assert [len(c) for c in chunks] == [1000, 1000, 1000]
    database = line_exports_home / "line_exports.duckdb"
    with duckdb.connect(str(database), read_only=True) as con:
        tables = {
            r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()
        }
    assert set(sample_data.SAMPLE_TABLES) <= tables
    # Invalid rows are there on purpose, and created only once.
    assert (pd.concat(chunks)["line_uid"] == "not-a-line-uid").sum() == 30
    assert ensure_sample_tables(database) == []


def test_query_from_sql_file(tmp_path: Path) -> None:
    query = tmp_path / "q.sql"
    query.write_text("select count(*) as n from segment_users\n")
    (frame,) = SqlSource().read_chunks(query)
    assert frame["n"].tolist() == [sample_data.SAMPLE_ROWS]


def test_other_duckdb_file_by_url(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table t as select range as id from range(25)")
    source = SqlSource(url=f"duckdb:///{path}", chunk_size=10)
    assert [len(c) for c in source.read_chunks("select * from t order by id")] == [10, 10, 5]


def test_sqlite_through_sqlalchemy_streams_in_chunks(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    engine = sa.create_engine(url)
    sample_data.members(2500).to_sql("line_members", engine, index=False)
    engine.dispose()
    source = SqlSource(url=url, chunk_size=1000)
    chunks = list(source.read_chunks("select line_uid, birthday from line_members"))
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    assert chunks[0].columns.tolist() == ["line_uid", "birthday"]


def test_password_hidden_in_description() -> None:
    source = SqlSource(url="postgresql+psycopg://etl:hunter2secret@db.internal:5432/crm")
    assert "hunter2secret" not in source.describe()


class _Recorded:
    """A DuckDB connection that records memory_limit when a query starts and can make the first
    read fail mid-stream with DuckDB's out-of-memory error."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, limits: list[str], fail_after: int | None
    ) -> None:
        self._con = con
        self._limits = limits
        self._fail_after = fail_after

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)

    def sql(self, query: str) -> Any:
        self._limits.append(
            self._con.execute("select current_setting('memory_limit')").fetchall()[0][0]
        )
        relation = self._con.sql(query)
        fail_after = self._fail_after if len(self._limits) == 1 else None

        class Relation:
            def to_arrow_reader(self, size: int) -> Iterator[Any]:
                for n, batch in enumerate(relation.to_arrow_reader(size)):
                    if n == fail_after:
                        raise duckdb.OutOfMemoryException(
                            "Out of Memory Error: failed to allocate data"
                        )
                    yield batch

        return Relation()


def _recording(monkeypatch: pytest.MonkeyPatch, fail_after: int | None = None) -> list[str]:
    limits: list[str] = []
    connect = duckdb.connect
    monkeypatch.setattr(
        duckdb, "connect", lambda *a, **k: _Recorded(connect(*a, **k), limits, fail_after)
    )
    return limits


def _table(tmp_path: Path, rows: int) -> Path:
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(
            f"create table t as select range as id, 'x' || range as name from range({rows})"
        )
    return path


def test_a_plain_scan_reads_under_a_small_memory_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _table(tmp_path, 25)
    limits = _recording(monkeypatch)
    source = SqlSource(url=f"duckdb:///{path}", chunk_size=10)
    assert [len(c) for c in source.read_chunks("select id, name from t where id >= 0")] == [
        10,
        10,
        5,
    ]
    # DuckDB's block cache stays small: 16 MiB + 1 MiB per thread and column read.
    threads = duckdb.sql("select current_setting('threads')").fetchall()[0][0]
    assert limits == [f"{16 + 2 * int(threads)}.0 MiB"]
    # Sorts, joins and aggregates keep DuckDB's default (they may need it).
    list(source.read_chunks("select id from t order by name"))
    list(source.read_chunks("select count(*) from t"))
    assert limits[1] == limits[2] != limits[0]


def test_a_file_open_elsewhere_in_the_process_keeps_its_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _table(tmp_path, 25)
    with duckdb.connect(str(path), read_only=True) as other:  # the same database instance
        default = other.execute("select current_setting('memory_limit')").fetchall()[0][0]
        limits = _recording(monkeypatch)
        trusted = SqlSource(url=f"duckdb:///{path}", chunk_size=10, external_access=True)
        chunks = list(trusted.read_chunks("select id from t"))
        assert [len(c) for c in chunks] == [10, 10, 5] and limits == [default]
        # Sandboxed SQL never shares an instance opened without the guard: a clear error.
        with pytest.raises(duckdb.ConnectionException, match="external access off"):
            list(SqlSource(url=f"duckdb:///{path}").read_chunks("select id from t"))


def test_a_scan_that_outgrows_its_memory_limit_is_read_again_without_repeating_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _table(tmp_path, 25)
    limits = _recording(monkeypatch, fail_after=1)
    source = SqlSource(url=f"duckdb:///{path}", chunk_size=10)
    chunks = list(source.read_chunks("select id from t"))
    assert pd.concat(chunks)["id"].tolist() == list(range(25))
    assert len(limits) == 2 and limits[0] != limits[1]  # capped, then DuckDB's default


def test_plain_scan_plans() -> None:
    def scan(*read: str) -> dict[str, Any]:
        return {"name": "SEQ_SCAN", "children": [], "extra_info": {"Projections": list(read)}}

    assert _plain_scan_columns([{"name": "PROJECTION", "children": [scan("a", "b")]}]) == 2
    assert (
        _plain_scan_columns(
            [{"name": "FILTER", "children": [{**scan(), "extra_info": {"Projections": "a"}}]}]
        )
        == 1
    )
    assert _plain_scan_columns([{"name": "ORDER_BY", "children": [scan("a")]}]) is None
    assert _plain_scan_columns([{"name": "HASH_JOIN", "children": [scan("a"), scan("b")]}]) is None
    assert _plain_scan_columns([{"name": "DUMMY_SCAN", "children": []}]) is None
