"""SQL errors a retry cannot fix, told apart from transient ones, and a query checked before a run.

A syntax error, an unknown table or column, or a missing permission fails the same way on
every attempt, so it fails at once, naming the query and the engine's own message (which
carries the position: DuckDB's ``LINE n:`` with a caret, PostgreSQL's ``LINE n:``). A lost
connection, a lock or statement timeout, a deadlock or a serialization failure may pass on the
next attempt, so the run's retry policy still applies to those.

Sources of the classes: DuckDB's Python exception hierarchy (``ProgrammingError`` covers parser,
catalog and binder errors), PEP 249 (``ProgrammingError``, ``DataError``, ``IntegrityError``,
``OperationalError``), PostgreSQL's SQLSTATE classes (Appendix A: 08 connection, 40 transaction
rollback, 53 insufficient resources, 55P03 lock not available, 57 operator intervention are
transient; 42 syntax error or access rule violation, 28 invalid authorization are not).
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb

# PostgreSQL (and Redshift, CockroachDB, ...) SQLSTATE prefixes worth another attempt.
TRANSIENT_SQLSTATE = ("08", "40", "53", "55P03", "57", "58")
# SQLite reports syntax errors and missing tables as OperationalError: tell them by message.
SQLITE_PERMANENT = ("syntax error", "no such table", "no such column", "no such function")
DUCKDB_PERMANENT = (
    duckdb.ProgrammingError,  # parser, catalog (unknown table), binder (unknown column)
    duckdb.PermissionException,
    duckdb.ConversionException,
    duckdb.InvalidInputException,
    duckdb.NotImplementedException,
)


def _sqlstate(exc: BaseException) -> str | None:
    for candidate in (exc, getattr(exc, "orig", None)):
        for attr in ("sqlstate", "pgcode"):
            code = getattr(candidate, attr, None)
            if isinstance(code, str) and code:
                return code
    return None


def is_permanent(exc: BaseException) -> bool:
    """True when the same query would fail the same way on every attempt."""
    if isinstance(exc, DUCKDB_PERMANENT):
        return True
    if isinstance(exc, duckdb.Error):
        return False  # IO (a lock held by another process), transaction conflicts, ...
    code = _sqlstate(exc)
    if code is not None:
        return not code.startswith(TRANSIENT_SQLSTATE)
    orig = getattr(exc, "orig", exc)  # SQLAlchemy wraps the driver's exception
    if isinstance(orig, sqlite3.OperationalError):
        return any(s in str(orig).lower() for s in SQLITE_PERMANENT)
    names = {cls.__name__ for cls in type(exc).__mro__} | {
        cls.__name__ for cls in type(orig).__mro__
    }
    if "OperationalError" in names or "InterfaceError" in names:
        return False
    return bool(names & {"ProgrammingError", "DataError", "IntegrityError", "NotSupportedError"})


def engine_message(exc: BaseException) -> str:
    """The engine's own words (with its position marker), without SQLAlchemy's wrapping."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return re.sub(r"\n\(Background on this error at: [^)]*\)", "", text).strip()


def error_line(message: str) -> int | None:
    """The query line an engine message points at (``LINE 3:`` in DuckDB and PostgreSQL)."""
    found = re.search(r"\bLINE (\d+):", message)
    return int(found.group(1)) if found else None


def locate(message: str, texts: list[str]) -> tuple[int, int] | None:
    """(line, column) of the identifier an engine message names (``column "x" not found``,
    ``Table with name x``, ``relation "x" does not exist``) in the first text holding it, for
    engines whose message gives no position (DuckDB's binder and catalog errors)."""
    found = re.search(
        r'(?:[Cc]olumn|[Tt]able with name|relation|table)\s+"?([A-Za-z_][\w.]*)"?', message
    )
    if not found:
        return None
    name = found.group(1).split(".")[-1]
    for text in texts:
        for number, line in enumerate(text.splitlines(), start=1):
            hit = re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", line)
            if hit:
                return number, hit.start() + 1
    return None


def describe(
    exc: BaseException,
    export: str,
    origin: str | None,
    query_file: Path | None = None,
    sql: str | None = None,
) -> str:
    """One message: which export, where it is declared, the engine's message and position
    (the engine's own ``LINE n``, else where the identifier it names is in the query file)."""
    message = engine_message(exc)
    where = f" ({origin})" if origin else ""
    line = error_line(message)
    at = f" at query line {line}" if line else ""
    if line is None:
        texts = []
        if query_file is not None and query_file.is_file():
            texts.append(query_file.read_text(encoding="utf-8"))
        spot = locate(message, [*texts, *([sql] if sql else [])])
        if spot is not None:
            file = query_file.name if texts and query_file is not None else "query"
            at = f" at {file} line {spot[0]}, column {spot[1]}"
    return (
        f"{export}{where}: the query failed{at} and a retry cannot fix it "
        f"(syntax, unknown table or column, or permission):\n{message}"
    )


def explain(source: Any, sql: str) -> str | None:
    """Plan ``sql`` on ``source`` without running it; the engine's message if it cannot.

    ``source`` is a :class:`~line_exports.sources.SqlSource`: the embedded DuckDB file (sample
    tables created first, as a run would; the query is parsed and bound on a read-only
    connection, not run) or a SQLAlchemy URL (``EXPLAIN``, understood by PostgreSQL, MySQL,
    SQLite, Snowflake, Trino and Redshift).
    """
    from line_exports.sources import ensure_sample_tables
    from line_exports.sql.td_functions import register_td_functions

    url = source.url
    try:
        if not url or url.startswith("duckdb:///"):
            path = source.embedded_path() if not url else url.removeprefix("duckdb:///")
            if not url and source.sample_tables:
                ensure_sample_tables(path)
            with closing(duckdb.connect(str(path), read_only=True)) as con:
                register_td_functions(con)  # TD_TIME_RANGE & co., as a run has them
                con.sql(sql)  # parsed and bound into a relation, not run (read-only anyway)
            return None
        import sqlalchemy as sa

        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"EXPLAIN {sql}")
        finally:
            engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - every engine's error is reported, not raised
        return engine_message(exc)
