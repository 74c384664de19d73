"""Where export rows come from: a SQL query streamed in chunks.

The embedded default is a DuckDB file in the project's data folder, filled with the sample
tables on first use. Any other database is one SQLAlchemy URL away (Postgres, Snowflake,
BigQuery, Trino, SQLite, ...). Either way rows arrive as pandas DataFrames of at most
``chunk_size`` rows, so memory stays flat however large the result is.
"""

from __future__ import annotations

import fcntl
import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from line_exports import paths, private_files, sample_data
from line_exports.dbapi_values import (
    FLOAT_INFINITY,
    postgres_url,
    register_psycopg_loaders,
    special_cells,
)
from line_exports.secret_fields import SecretField
from line_exports.sql.td_functions import register_td_functions
from line_exports.values import (
    INFINITY_TEXT,
    TIME_TEXT,
    PrintedTime,
    Unsendable,
    arrow_to_pandas,
)

_SAMPLES_LOCK = threading.Lock()
SAMPLES_LOCK_WAIT = 60.0
"""Seconds a run waits for another process that holds the DuckDB file's write lock."""

# DuckDB's buffer pool keeps every table block a query reads until memory_limit (80% of RAM), so
# a plain scan of N rows holds the whole table by the end. A plan made only of these operators
# pins a few blocks per thread and column, so its memory_limit can be small; any other operator
# (join, sort, aggregate, window, union, ...) keeps DuckDB's default.
PLAIN_SCAN_OPERATORS = frozenset(
    {"SEQ_SCAN", "TABLE_SCAN", "FILTER", "PROJECTION", "STREAMING_LIMIT"}
)
# Functions whose rows differ on a second read: such a scan is never capped (see _duckdb_chunks).
VOLATILE_FUNCTIONS = ("random(", "uuid(", "setseed(", "nextval(")
SCAN_MEMORY_BASE = 16 * 1024 * 1024
SCAN_MEMORY_PER_COLUMN_AND_THREAD = 1024 * 1024


def read_sql_text(query: str | Path) -> str:
    """A query given as SQL text (a ``str``, always: never read as a file name) or as a
    ``Path`` to a ``.sql`` file (a caller's own, trusted choice)."""
    if isinstance(query, Path):
        return query.read_text(encoding="utf-8")
    return str(query)


def sandboxed_config(external_access: bool) -> dict[str, Any]:
    """DuckDB settings for SQL we did not write: with ``external_access`` off no file, network,
    ``ATTACH``, ``COPY``, ``INSTALL``/``LOAD``, and the configuration is locked so the query
    cannot ``SET`` it back (DuckDB's "Securing DuckDB" settings)."""
    if external_access:
        return {}
    return {
        "enable_external_access": False,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "lock_configuration": True,
    }


def ensure_sample_tables(database: Path, rows: int = sample_data.SAMPLE_ROWS) -> list[str]:
    """Create the sample tables that are missing from ``database``; returns those it created.

    Once they exist this only reads (a read-only connection, which any number of processes
    may hold at once); creating them takes an exclusive file lock next to the database so two
    processes never both open it read-write (DuckDB's "Could not set lock on file")."""
    with _SAMPLES_LOCK:
        if database.exists() and not _missing_sample_tables(database, read_only=True):
            return []
        private_files.private_dir(database.parent)
        lock = database.with_name(database.name + ".samples.lock")
        with open(lock, "a+", opener=private_files.private_opener) as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                if database.exists() and not _missing_sample_tables(database, read_only=True):
                    return []  # another process made them while we waited
                return _create_sample_tables(database, rows)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _missing_sample_tables(database: Path, *, read_only: bool) -> list[str]:
    con = _connect_waiting(database, read_only, {})
    with closing(con):
        existing = {
            r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()
        }
    return [t for t in sample_data.SAMPLE_TABLES if t not in existing]


def _create_sample_tables(database: Path, rows: int) -> list[str]:
    created: list[str] = []
    con = _connect_waiting(database, False, {})
    with closing(con):
        existing = {
            r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()
        }
        for table, make in sample_data.SAMPLE_TABLES.items():
            if table in existing:
                continue
            frame = make(rows)  # noqa: F841 - read by DuckDB's replacement scan below
            con.execute(f'create table "{table}" as select * from frame')
            created.append(table)
    # DuckDB creates the file with default modes (it refuses an empty pre-made one): tighten it.
    private_files.restrict(database, ".wal")
    return created


class SqlSource(dg.ConfigurableResource):
    """Runs export queries and yields their rows in DataFrame chunks.

    Leave ``url`` empty for the embedded DuckDB file (created with sample tables on first use);
    set it to a SQLAlchemy URL (``postgresql+psycopg://...``, ``snowflake://...``) for a
    warehouse. A URL may hold a password, so pass it with ``dg.EnvVar``.
    """

    url: str | None = SecretField(
        "SQLAlchemy URL of the warehouse; empty means the embedded DuckDB file."
    )
    duckdb_path: str | None = Field(
        default=None, description="Embedded DuckDB file; default data/line_exports.duckdb."
    )
    chunk_size: int = Field(default=50_000, ge=1, description="Rows per DataFrame chunk.")
    sample_tables: bool = Field(
        default=True, description="Create the sample tables in the embedded DuckDB file if missing."
    )
    external_access: bool = Field(
        default=False,
        description=(
            "Let queries on DuckDB read and write files, ATTACH and load extensions. Off: "
            "queries see only the database file, with its configuration locked."
        ),
    )

    DEPLOYMENT_FIELDS: ClassVar[tuple[str, ...]] = ("external_access",)
    """Fields only the deployment sets (a workflow folder's ``source:`` cannot)."""

    def model_post_init(self, context: Any, /) -> None:
        """A PostgreSQL driver other than psycopg is refused here (a URL from an ``EnvVar``:
        when the run reads it). Not a field validator: its error would show the URL."""
        super().model_post_init(context)
        if isinstance(self.url, str) and "://" in self.url:
            postgres_url(self.url)

    def embedded_path(self) -> Path:
        return Path(self.duckdb_path) if self.duckdb_path else paths.default_duckdb_path()

    def describe(self) -> str:
        """Where rows come from, without credentials (for logs and metadata)."""
        if not self.url:
            return f"duckdb:{self.embedded_path()}"
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    def read_chunks(
        self,
        query: str | Path,
        chunk_size: int | None = None,
        scheduled_time: int | None = None,
    ) -> Iterator[pd.DataFrame]:
        """Run ``query`` and yield its rows, at most ``chunk_size`` at a time; a result of no
        row is one frame of no row, with the result's columns (their names are checked,
        :mod:`line_exports.column_names`).

        On DuckDB the query may use TD's functions (:mod:`line_exports.sql.td_functions`);
        ``TD_SCHEDULED_TIME()`` is ``scheduled_time`` (the run's session time, UNIX seconds).
        """
        sql = read_sql_text(query)
        size = chunk_size or self.chunk_size
        if not self.url or self.url.startswith("duckdb:///"):
            yield from self._duckdb_chunks(sql, size, scheduled_time)
        else:
            yield from self._sqlalchemy_chunks(sql, size)

    def _duckdb_chunks(
        self, sql: str, size: int, scheduled_time: int | None = None
    ) -> Iterator[pd.DataFrame]:
        """Stream the query; a plain scan runs under a small memory_limit so DuckDB's block
        cache stays flat instead of growing with the table.

        Should the limit prove too small (e.g. huge text values), the scan runs again with
        DuckDB's default limit and skips the rows already yielded: a plain scan of a read-only
        file returns its rows in insertion order, the same order on each read.
        """
        path = Path(self.url.removeprefix("duckdb:///")) if self.url else self.embedded_path()
        if not self.url and self.sample_tables:
            ensure_sample_tables(path)
        read_only = path.exists()
        guard = sandboxed_config(self.external_access)
        limit = _plain_scan_limit(path, read_only, sql, guard)
        yielded = 0
        while True:
            skip = yielded
            con, capped = _connect(path, read_only, limit, guard)
            with closing(con):
                register_td_functions(con, scheduled_time)
                try:
                    relation, unions = _arrow_ready(con.sql(sql))
                    # DuckDB 2 renamed fetch_arrow_reader to to_arrow_reader; both stream.
                    to_reader = (
                        getattr(relation, "to_arrow_reader", None) or relation.fetch_arrow_reader
                    )
                    reader = to_reader(size)
                    for batch in reader:
                        if skip >= batch.num_rows:
                            skip -= batch.num_rows
                            continue
                        if skip:
                            batch, skip = batch.slice(skip), 0
                        yielded += batch.num_rows
                        # A TIMESTAMP_NS near its type's ends is converted to the export's
                        # zone at microseconds, its nanoseconds kept (values.local_times).
                        frame = _unions_marked(arrow_to_pandas(batch, duckdb_batch=True), unions)
                        frame.attrs[TIME_TEXT] = "sql"  # rejects: date-times as DuckDB prints
                        yield frame
                    if not yielded:  # no row: its columns still, to check their names
                        yield _unions_marked(arrow_to_pandas(reader.schema.empty_table()), unions)
                    return
                except (duckdb.OutOfMemoryException, OSError) as exc:
                    # Mid-stream, DuckDB's error reaches us through Arrow's reader as OSError.
                    if not capped or "Out of Memory" not in str(exc):
                        raise
                    limit = None

    def _sqlalchemy_chunks(self, sql: str, size: int) -> Iterator[pd.DataFrame]:
        """Rows of a SQLAlchemy URL, each column through Arrow's type inference: integers next
        to NULLs stay integers, Decimals keep every digit, datetimes keep their zone."""
        import sqlalchemy as sa

        engine = sa.create_engine(postgres_url(self.url))  # type: ignore[arg-type]
        if engine.dialect.driver == "psycopg":
            sa.event.listen(engine, "connect", lambda dbapi, _: register_psycopg_loaders(dbapi))
        try:
            with engine.connect() as conn:
                streaming = conn.execution_options(stream_results=True, max_row_buffer=size)
                result = streaming.execute(sa.text(sql))
                names = list(result.keys())
                infinity = FLOAT_INFINITY.get(engine.dialect.name)
                read = False
                while rows := result.fetchmany(size):
                    read = True
                    frame = rows_frame(names, rows)
                    frame.attrs[TIME_TEXT] = "sql"  # rejects: date-times as PostgreSQL prints
                    if infinity:  # the rejects file shows a float ±Infinity as it prints it
                        frame.attrs[INFINITY_TEXT] = infinity
                    yield frame
                if not read:  # no row: its columns still, to check their names
                    yield no_rows(names)
        finally:
            engine.dispose()


TEXT_TYPES = frozenset(
    {"TIME", "TIME_NS", "TIME WITH TIME ZONE", "UHUGEINT", "BIGNUM", "VARINT", "BIT"}
)
"""DuckDB types read as text in the relation, before Arrow (:func:`_arrow_ready`), and how."""


def _arrow_ready(
    relation: duckdb.DuckDBPyRelation,
) -> tuple[duckdb.DuckDBPyRelation, list[tuple[int, str]]]:
    """``relation`` with each column whose Arrow form loses or crashes on its values cast in
    DuckDB first (DuckDB's "Data Types" and "Arrow" pages):

    * TIME, TIME_NS and TIME WITH TIME ZONE as DuckDB writes them (``24:00:00``,
      ``12:34:56.5``, ``12:34:56.123456789``, ``12:34:56+09:00``): DuckDB (as PostgreSQL)
      accepts ``24:00:00``, which Python's ``datetime.time`` cannot hold (the run crashed), Arrow's
      time has no offset and pandas drops nanoseconds;
    * UHUGEINT as its digits: DuckDB exports it as a signed ``decimal128``, so values from 2**127
      arrived as negative numbers;
    * BIGNUM (VARINT before DuckDB 1.4), an integer of any size, as its digits: Arrow gets an
      opaque binary blob (it was rejected as "binary data");
    * BIT as its bit string (``0101``), the text DuckDB and PostgreSQL write for it (a
      PostgreSQL ``bit`` column arrives as that text too);
    * UNION (anywhere in the type) as its text, whose positions are returned too: each such
      cell is the ``type`` reject of a LIST, STRUCT, MAP or UNION (:func:`_unions_marked`), its
      value shown as DuckDB prints it: pandas has no form of an Arrow union (the run crashed).

    A relation without such columns is returned as it is (and no positions).
    """
    types = [str(t) for t in getattr(relation, "types", None) or ()]
    unions = [i for i, kind in enumerate(types) if "UNION(" in kind]
    if not (unions or any(kind in TEXT_TYPES for kind in types)):
        return relation, []
    columns = []
    for position, (name, kind) in enumerate(zip(relation.columns, types, strict=True), 1):
        quoted = '"' + name.replace('"', '""') + '"'
        # By position: a name two columns have would be either (the run then names it).
        text = f"CAST(#{position} AS VARCHAR)"
        if kind == "TIME WITH TIME ZONE":
            text = f"regexp_replace({text}, '([+-][0-9][0-9])$', '\\1:00')"
        elif kind not in TEXT_TYPES and "UNION(" not in kind:
            columns.append(f"#{position} AS {quoted}")
            continue
        columns.append(f"{text} AS {quoted}")
    return relation.project(", ".join(columns)), [(i, types[i]) for i in unions]


def _unions_marked(frame: pd.DataFrame, unions: list[tuple[int, str]]) -> pd.DataFrame:
    """``frame`` with the UNION columns' text (at their positions, with DuckDB's type) as
    :class:`~line_exports.values.Unsendable` ``nested`` cells carrying that text."""
    for position, kind in unions:
        text = frame.iloc[:, position]
        cells = pd.Series(None, index=frame.index, dtype=object)
        for i in np.flatnonzero(text.notna().to_numpy(dtype=bool)):
            cells.iat[i] = Unsendable("nested", kind, text=str(text.iat[i]))
        frame.isetitem(position, cells)
    return frame


def no_rows(names: list[str]) -> pd.DataFrame:
    """A result of no row with its ``names`` (two alike too), object columns."""
    frame = pd.DataFrame({i: pd.Series(dtype=object) for i in range(len(names))})
    frame.columns = pd.Index(names, dtype=object)
    return frame


def rows_frame(names: list[str], rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    """DB-API rows as a DataFrame of exact types (see :func:`line_exports.values.arrow_to_pandas`).

    A column Arrow cannot type as one (SQLite lets a column mix kinds) stays Python objects,
    and so does one mixing Python ``int`` and ``float`` (a SQLite column of INTEGER and REAL
    values: Arrow would make the INTEGER 1 a double, written ``1.0``; each is written as SQLite
    prints it, ``1`` and ``2.0``).
    """
    columns: dict[int, pd.Series] = {}
    for i, values in enumerate(zip(*rows, strict=True)):
        special = special_cells(values)
        marks: dict[int, Any] = {}
        if special is not None:
            values, marks = special  # type: ignore[assignment]
        if special is not None and all(v is None or isinstance(v, Decimal) for v in values):
            columns[i] = pd.Series(values, dtype=object)  # each NUMERIC keeps its own digits
        elif {int, float} <= (kinds := set(map(type, values))):  # SQLite: INTEGER and REAL
            columns[i] = pd.Series(values, dtype=object)  # 1 stays 1, 2.0 stays 2.0
        elif PrintedTime in kinds:  # its cells keep PostgreSQL's text (for the rejects file)
            columns[i] = pd.Series(values, dtype=object)
        else:
            try:
                array = pa.array(values)
            except (
                pa.ArrowInvalid,
                pa.ArrowTypeError,
                pa.ArrowNotImplementedError,
                OverflowError,
            ):
                columns[i] = pd.Series(values, dtype=object)
            else:
                columns[i] = arrow_to_pandas(pa.table({"v": array}))["v"]
        if marks:  # cells no field holds (see dbapi_values): type rejects naming the type
            columns[i] = pd.Series(columns[i], dtype=object)
            for position, mark in marks.items():
                columns[i].iat[position] = mark
    frame = pd.DataFrame(columns)
    frame.columns = names
    return frame


def _plain_scan_columns(plan: list[dict[str, Any]]) -> int | None:
    """Table columns a plan of only plain-scan operators reads, or None for any other plan."""
    columns = 0
    nodes = list(plan)
    while nodes:
        node = nodes.pop()
        name = str(node.get("name", "")).strip().upper()
        if name not in PLAIN_SCAN_OPERATORS:
            return None
        if name in ("SEQ_SCAN", "TABLE_SCAN"):
            read = (node.get("extra_info") or {}).get("Projections") or []
            columns += 1 if isinstance(read, str) else max(len(read), 1)
        nodes.extend(node.get("children") or [])
    return columns or None


def _plain_scan_limit(
    path: Path, read_only: bool, sql: str, guard: Mapping[str, Any]
) -> str | None:
    """The memory_limit for ``sql`` if it is a plain, repeatable table scan, else None."""
    con, _ = _connect(path, read_only, None, guard)
    with closing(con):
        register_td_functions(con)
        try:
            text = con.execute(f"EXPLAIN (FORMAT JSON) {sql}").fetchall()[0][1]
            plan = json.loads(text)
        except (duckdb.Error, IndexError, ValueError):
            return None  # not one plannable statement: leave DuckDB's defaults alone
        columns = _plain_scan_columns(plan if isinstance(plan, list) else [plan])
        if columns is None or any(f in text.lower() for f in VOLATILE_FUNCTIONS):
            return None
        threads = int(con.execute("select current_setting('threads')").fetchall()[0][0])
    limit = SCAN_MEMORY_BASE + threads * columns * SCAN_MEMORY_PER_COLUMN_AND_THREAD
    return f"{limit // (1024 * 1024)}MiB"


def _connect(
    path: Path, read_only: bool, memory_limit: str | None, guard: Mapping[str, Any]
) -> tuple[duckdb.DuckDBPyConnection, bool]:
    """A connection to ``path`` with ``memory_limit`` if given: (connection, limited?).

    The limit is a setting of the database instance, which every connection of this process
    to the file shares; if one is open with other settings, the limit is dropped, never the
    ``guard`` (:func:`sandboxed_config`): then DuckDB refuses the connection instead.
    """
    if memory_limit is not None:
        try:
            config = {**guard, "memory_limit": memory_limit}
            return _connect_waiting(path, read_only, config), True
        except duckdb.ConnectionException:
            pass
    try:
        return _connect_waiting(path, read_only, dict(guard)), False
    except duckdb.ConnectionException as exc:
        if not guard:
            raise
        raise duckdb.ConnectionException(
            f"{path} is open elsewhere in this process with other settings, so a query cannot "
            "run on it with external access off; close that connection (or give the source "
            f"external_access=True for trusted SQL only): {exc}"
        ) from None


def _connect_waiting(
    path: Path, read_only: bool, config: dict[str, Any]
) -> duckdb.DuckDBPyConnection:
    """A connection, waiting while another process briefly holds the file's write lock (the
    one-time sample creation, a webhook landing) instead of failing at once."""
    deadline = time.monotonic() + SAMPLES_LOCK_WAIT
    pause = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
