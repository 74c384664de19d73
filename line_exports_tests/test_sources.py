"""The SQL source: embedded DuckDB with sample tables, SQLAlchemy engines, chunked reads."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import sqlalchemy as sa

from line_exports import sample_data
from line_exports.sources import SqlSource, ensure_sample_tables


def test_embedded_duckdb_is_created_with_every_sample_table(line_exports_home: Path) -> None:
    source = SqlSource()
    chunks = list(source.read_chunks("select * from line_members", chunk_size=1000))
    assert [len(c) for c in chunks] == [1000, 1000, 1000]
    database = line_exports_home / "line_exports.duckdb"
    with duckdb.connect(str(database), read_only=True) as con:
        tables = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
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
