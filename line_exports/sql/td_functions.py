"""Treasure Data's functions on the embedded engine (DuckDB), with TD's semantics.

``register_td_functions(con, scheduled_time)`` defines, on one DuckDB connection, the TD
functions a migrated ``td>`` query uses (reference: "Treasure Data functions",
https://api-docs.treasuredata.com/en/tools/presto/api/):

=========================================================  ========================================
``TD_SCHEDULED_TIME()``                                     the run's session time, UNIX seconds
``TD_TIME_RANGE(time, start[, end[, default_timezone]])``   ``start <= time < end``; NULL is open
``TD_INTERVAL(time, interval[, default_timezone[, now]])``   relative range from ``now`` (UNIX s,
                                                            default TD_SCHEDULED_TIME())
``TD_INTERVAL_RANGE(interval[, default_timezone])``           ``[start, end]`` of that range
                                                            (UNIX s) from TD_SCHEDULED_TIME()
``TD_TIME_FORMAT(time, format[, timezone])``                 SimpleDateFormat text
``TD_TIME_STRING(time, code[, timezone])``                   ``'d!'``, ``'M'``, ... text
``TD_TIME_PARSE(text[, default_timezone])``                  UNIX seconds, NULL if unreadable
``TD_TIME_ADD(time, duration[, default_timezone])``          UNIX seconds moved by ``'-1d'`` ...
``TD_DATE_TRUNC(unit, time[, default_timezone])``            start of the minute .. year
=========================================================  ========================================

``TD_SESSIONIZE_WINDOW(time, timeout) OVER (...)`` is a window function, which DuckDB cannot
take from Python: the dialect translation (:mod:`line_exports.sql.dialect`) rewrites it into
DuckDB window functions.

Each public name is a macro over a Python function (``td__*``) that works on whole Arrow
vectors and computes each distinct argument combination once, so a constant bound in
``WHERE TD_TIME_RANGE(time, '2024-01-01', NULL, 'JST')`` is parsed once per vector, never per
row. Python functions run with DuckDB's external access off; they must be registered before a
connection's configuration is locked (macros may come after).
"""

from __future__ import annotations

import re
import time as _time
from collections.abc import Callable
from typing import Any

import duckdb
import pyarrow as pa

from line_exports.sql import td_time

TD_FUNCTIONS = (
    "TD_SCHEDULED_TIME",
    "TD_TIME_RANGE",
    "TD_INTERVAL",
    "TD_INTERVAL_RANGE",
    "TD_TIME_FORMAT",
    "TD_TIME_STRING",
    "TD_TIME_PARSE",
    "TD_TIME_ADD",
    "TD_DATE_TRUNC",
    "TD_SESSIONIZE_WINDOW",
)
"""The TD functions a query may use on the embedded engine."""


def _vectorized(function: Callable[..., Any], arrow_type: pa.DataType) -> Callable[..., Any]:
    """An Arrow UDF computing ``function`` once per distinct row of arguments.

    ``function`` takes Python values (None for NULL) and returns a value or None.
    """

    def run(columns: tuple[pa.ChunkedArray, ...]) -> pa.Array:
        rows = zip(*(c.to_pylist() for c in columns), strict=True)
        seen: dict[tuple[Any, ...], Any] = {}
        out = []
        for row in rows:
            if row not in seen:
                seen[row] = function(*row)
            out.append(seen[row])
        return pa.array(out, type=arrow_type)

    # DuckDB reads the arity from the signature: one positional parameter per argument.
    def one(a: pa.ChunkedArray) -> pa.Array:
        return run((a,))

    def two(a: pa.ChunkedArray, b: pa.ChunkedArray) -> pa.Array:
        return run((a, b))

    def three(a: pa.ChunkedArray, b: pa.ChunkedArray, c: pa.ChunkedArray) -> pa.Array:
        return run((a, b, c))

    return {1: one, 2: two, 3: three}[function.__code__.co_argcount]


def _bound(value: str | None, tz: str | None) -> int | None:
    """A TD_TIME_RANGE bound: UNIX seconds as given, or a time string in ``tz``; an unreadable
    string is an error (as in TD), never an empty range."""
    if value is None:
        return None
    return td_time.time_value(value, tz)


def _parse(text: str | None, tz: str | None) -> int | None:
    """TD_TIME_PARSE: NULL for NULL or an unreadable string (TD's documented behaviour)."""
    if text is None:
        return None
    try:
        return td_time.parse_time(text, tz)
    except td_time.TdTimeError as exc:
        if "timezone" in str(exc):
            raise
        return None


def _time_add(value: str | None, duration: str | None, tz: str | None) -> int | None:
    if value is None or duration is None:
        return None
    seconds = td_time.duration_seconds(duration)
    try:
        start = td_time.time_value(value, tz)
    except td_time.TdTimeError as exc:
        if "timezone" in str(exc):
            raise
        return None
    return start + seconds


def _format(unixtime: int | None, pattern: str | None, tz: str | None) -> str | None:
    if unixtime is None or pattern is None:
        return None
    return td_time.format_time(unixtime, pattern, tz)


def _time_string(unixtime: int | None, code: str | None, tz: str | None) -> str | None:
    if unixtime is None or code is None:
        return None
    return td_time.time_string(unixtime, code, tz)


def _date_trunc(unit: str | None, unixtime: int | None, tz: str | None) -> int | None:
    if unit is None or unixtime is None:
        return None
    name = unit.strip().lower()
    if name not in td_time.UNITS:
        raise td_time.TdTimeError(
            f"invalid TD_DATE_TRUNC unit {unit!r} (one of {', '.join(td_time.UNITS)})"
        )
    return td_time.truncate(unixtime, name, td_time.zone(tz))


def _interval_start(spec: str | None, tz: str | None, reference: int | None) -> int | None:
    if spec is None or reference is None:
        return None
    return td_time.interval_range(spec, reference, td_time.zone(tz))[0]


def _interval_end(spec: str | None, tz: str | None, reference: int | None) -> int | None:
    if spec is None or reference is None:
        return None
    return td_time.interval_range(spec, reference, td_time.zone(tz))[1]


_UDFS: tuple[tuple[str, Callable[..., Any], list[str], str, pa.DataType], ...] = (
    ("td__bound", _bound, ["VARCHAR", "VARCHAR"], "BIGINT", pa.int64()),
    ("td__parse", _parse, ["VARCHAR", "VARCHAR"], "BIGINT", pa.int64()),
    ("td__time_add", _time_add, ["VARCHAR", "VARCHAR", "VARCHAR"], "BIGINT", pa.int64()),
    ("td__format", _format, ["BIGINT", "VARCHAR", "VARCHAR"], "VARCHAR", pa.string()),
    ("td__time_string", _time_string, ["BIGINT", "VARCHAR", "VARCHAR"], "VARCHAR", pa.string()),
    ("td__date_trunc", _date_trunc, ["VARCHAR", "BIGINT", "VARCHAR"], "BIGINT", pa.int64()),
    ("td__interval_start", _interval_start, ["VARCHAR", "VARCHAR", "BIGINT"], "BIGINT", pa.int64()),
    ("td__interval_end", _interval_end, ["VARCHAR", "VARCHAR", "BIGINT"], "BIGINT", pa.int64()),
)

# Macros: TD's optional arguments are overloads; a time column of any integer type is read as
# BIGINT, a bound of any type as text (a string of digits is UNIX seconds, like an integer).
# TD_TIME_RANGE: "If end_time is omitted or NULL, the UDF assumes it's infinite. If start_time
# is NULL, the UDF assumes it's 0."
_TIME_RANGE = (
    "CAST(t AS BIGINT) >= coalesce(td__bound(CAST(s AS VARCHAR), CAST(tz AS VARCHAR)), 0)"
    " AND (e IS NULL OR CAST(t AS BIGINT) < td__bound(CAST(e AS VARCHAR), CAST(tz AS VARCHAR)))"
)
# TD_INTERVAL's fourth argument is the time the interval is relative to, as TD's own examples
# write it: TD_INTERVAL(time, '-1d', 'JST', TD_SCHEDULED_TIME()).
_INTERVAL = (
    "CAST(t AS BIGINT) >= td__interval_start(spec, CAST(tz AS VARCHAR), CAST(now AS BIGINT))"
    " AND CAST(t AS BIGINT) < td__interval_end(spec, CAST(tz AS VARCHAR), CAST(now AS BIGINT))"
)
# TD_INTERVAL_RANGE: "confirm the exact time range that td_interval will use", [start, end]
# (treasure-data/td-skills, sql-skills/time-filtering); the ends are UNIX seconds, as TD's
# other time functions return them.
_INTERVAL_RANGE = (
    "CASE WHEN spec IS NULL THEN NULL ELSE ["
    "td__interval_start(spec, CAST(tz AS VARCHAR), td_scheduled_time()), "
    "td__interval_end(spec, CAST(tz AS VARCHAR), td_scheduled_time())] END"
)
# name -> (parameters, optional trailing parameters with their defaults, body)
_MACROS: dict[str, tuple[list[str], list[tuple[str, str]], str]] = {
    "td_time_range": (["t", "s"], [("e", "NULL"), ("tz", "'UTC'")], _TIME_RANGE),
    "td_interval": (["t", "spec"], [("tz", "'UTC'"), ("now", "td_scheduled_time()")], _INTERVAL),
    "td_interval_range": (["spec"], [("tz", "'UTC'")], _INTERVAL_RANGE),
    "td_time_parse": (
        ["s"],
        [("tz", "'UTC'")],
        "td__parse(CAST(s AS VARCHAR), CAST(tz AS VARCHAR))",
    ),
    "td_time_add": (
        ["t", "d"],
        [("tz", "'UTC'")],
        "td__time_add(CAST(t AS VARCHAR), d, CAST(tz AS VARCHAR))",
    ),
    "td_time_format": (
        ["t", "f"],
        [("tz", "'UTC'")],
        "td__format(CAST(t AS BIGINT), f, CAST(tz AS VARCHAR))",
    ),
    "td_time_string": (
        ["t", "f"],
        [("tz", "'UTC'")],
        "td__time_string(CAST(t AS BIGINT), f, CAST(tz AS VARCHAR))",
    ),
    "td_date_trunc": (
        ["u", "t"],
        [("tz", "'UTC'")],
        "td__date_trunc(u, CAST(t AS BIGINT), CAST(tz AS VARCHAR))",
    ),
}


# TD_SESSIONIZE_WINDOW, as the dialect translation rewrites it (line_exports.sql.dialect): from
# the times of a partition up to the current row (ordered), the first time of the current
# session (a new one starts after a gap over the timeout), and a UUID-shaped id for it.
_SESSION_MACROS = (
    """td__session_start(times, timeout) AS coalesce(
         list_max(list_filter(
           list_transform(range(2, len(times) + 1),
             lambda i: CASE WHEN times[i] - times[i - 1] > timeout THEN times[i] END),
           lambda x: x IS NOT NULL)),
         times[1])""",
    """td__session_id(times, timeout, partition_key) AS regexp_replace(
         md5(partition_key || ':' || CAST(td__session_start(times, timeout) AS VARCHAR)),
         '^(.{8})(.{4})(.{4})(.{4})(.{12})$', '\\1-\\2-\\3-\\4-\\5')""",
)


def _macro_sql(name: str) -> str:
    """``CREATE MACRO`` with one overload per number of arguments (TD's optional ones)."""
    required, optional, body = _MACROS[name]
    overloads = []
    for given in range(len(optional) + 1):
        params = required + [p for p, _ in optional[:given]]
        text = body
        for param, default in optional[given:]:
            text = re.sub(rf"\b{param}\b", default, text)
        overloads.append(f"({', '.join(params)}) AS {text}")
    return f"CREATE OR REPLACE TEMP MACRO {name}" + ", ".join(overloads)


# One wrapper per function for the life of the process: connections of one process to one file
# share a database instance, so a function registered through one connection is called through
# the others after it closes; it must never be freed (DuckDB would call freed memory).
_WRAPPERS = {name: _vectorized(function, arrow_type) for name, function, _, _, arrow_type in _UDFS}


def register_td_udfs(con: duckdb.DuckDBPyConnection) -> None:
    """Register the Python functions (before the connection's configuration is locked)."""
    for name, _function, params, returns, _arrow_type in _UDFS:
        try:
            con.create_function(
                name,
                _WRAPPERS[name],
                params,  # type: ignore[arg-type]
                returns,  # type: ignore[arg-type]
                type="arrow",
                null_handling="special",
            )
        except duckdb.CatalogException as exc:
            # Connections of one process to one file share a database instance and its
            # functions: another connection registered these same functions already.
            if "already exists" not in str(exc):
                raise


def register_td_macros(con: duckdb.DuckDBPyConnection, scheduled_time: int | None = None) -> None:
    """Define the TD macros; ``TD_SCHEDULED_TIME()`` is ``scheduled_time`` (UNIX seconds), or
    the time of this call when the query runs outside a session (TD: "the time when the job
    was issued")."""
    moment = int(_time.time()) if scheduled_time is None else int(scheduled_time)
    con.execute(f"CREATE OR REPLACE TEMP MACRO td_scheduled_time() AS CAST({moment} AS BIGINT)")
    for name in _MACROS:
        con.execute(_macro_sql(name))
    for body in _SESSION_MACROS:
        con.execute(f"CREATE OR REPLACE TEMP MACRO {body}")


def register_td_functions(
    con: duckdb.DuckDBPyConnection, scheduled_time: int | None = None
) -> duckdb.DuckDBPyConnection:
    """Every TD function on ``con`` (see the module docstring); returns ``con``."""
    register_td_udfs(con)
    register_td_macros(con, scheduled_time)
    return con


__all__ = [
    "TD_FUNCTIONS",
    "register_td_functions",
    "register_td_macros",
    "register_td_udfs",
]
