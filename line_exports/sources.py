"""Where export rows come from: a SQL query streamed in chunks.

The embedded default is a DuckDB file in the project's data folder, filled with the sample
tables on first use. Any other database is one SQLAlchemy URL away (Postgres, Snowflake,
BigQuery, Trino, SQLite, ...). Either way rows arrive as pandas DataFrames of at most
``chunk_size`` rows, so memory stays flat however large the result is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
from pydantic import Field

from line_exports import paths, sample_data

_SAMPLES_LOCK = threading.Lock()


def read_sql_text(query: str | Path) -> str:
    """A query given inline or as a path to a ``.sql`` file."""
    if isinstance(query, Path) or (
        isinstance(query, str) and query.strip().endswith(".sql") and "\n" not in query.strip()
    ):
        return Path(query).read_text(encoding="utf-8")
    return str(query)


def ensure_sample_tables(database: Path, rows: int = sample_data.SAMPLE_ROWS) -> list[str]:
    """Create the sample tables that are missing from ``database``; returns those it created."""
    created: list[str] = []
    with _SAMPLES_LOCK, closing(duckdb.connect(str(database))) as con:
        existing = {
            r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()
        }
        for table, make in sample_data.SAMPLE_TABLES.items():
            if table in existing:
                continue
            frame = make(rows)  # noqa: F841 - read by DuckDB's replacement scan below
            con.execute(f'create table "{table}" as select * from frame')
            created.append(table)
    return created


class SqlSource(dg.ConfigurableResource):
    """Runs export queries and yields their rows in DataFrame chunks.

    Leave ``url`` empty for the embedded DuckDB file (created with sample tables on first use);
    set it to a SQLAlchemy URL (``postgresql+psycopg://...``, ``snowflake://...``) for a
    warehouse. A URL may hold a password, so pass it with ``dg.EnvVar``.
    """

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the warehouse; empty means the embedded DuckDB file.",
        json_schema_extra={"dagster__is_secret": True},
    )
    duckdb_path: str | None = Field(
        default=None, description="Embedded DuckDB file; default data/line_exports.duckdb."
    )
    chunk_size: int = Field(default=50_000, ge=1, description="Rows per DataFrame chunk.")
    sample_tables: bool = Field(
        default=True, description="Create the sample tables in the embedded DuckDB file if missing."
    )

    def embedded_path(self) -> Path:
        return Path(self.duckdb_path) if self.duckdb_path else paths.default_duckdb_path()

    def describe(self) -> str:
        """Where rows come from, without credentials (for logs and metadata)."""
        if not self.url:
            return f"duckdb:{self.embedded_path()}"
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    def read_chunks(
        self, query: str | Path, chunk_size: int | None = None
    ) -> Iterator[pd.DataFrame]:
        """Run ``query`` and yield its rows, at most ``chunk_size`` at a time."""
        sql = read_sql_text(query)
        size = chunk_size or self.chunk_size
        if not self.url or self.url.startswith("duckdb:///"):
            yield from self._duckdb_chunks(sql, size)
        else:
            yield from self._sqlalchemy_chunks(sql, size)

    def _duckdb_chunks(self, sql: str, size: int) -> Iterator[pd.DataFrame]:
        path = Path(self.url.removeprefix("duckdb:///")) if self.url else self.embedded_path()
        if not self.url and self.sample_tables:
            ensure_sample_tables(path)
        with closing(duckdb.connect(str(path), read_only=path.exists())) as con:
            relation = con.sql(sql)
            # DuckDB 2 renamed fetch_arrow_reader to to_arrow_reader; both stream in batches.
            to_reader = getattr(relation, "to_arrow_reader", None) or relation.fetch_arrow_reader
            reader = to_reader(size)
            for batch in reader:
                yield batch.to_pandas()

    def _sqlalchemy_chunks(self, sql: str, size: int) -> Iterator[pd.DataFrame]:
        import sqlalchemy as sa

        engine = sa.create_engine(self.url)  # type: ignore[arg-type]
        try:
            with engine.connect() as conn:
                streaming = conn.execution_options(stream_results=True, max_row_buffer=size)
                yield from pd.read_sql_query(sa.text(sql), streaming, chunksize=size)
        finally:
            engine.dispose()
