"""A ``td>`` query in the source's dialect: TD's Presto/Trino (or Hive) SQL through ``sqlglot``.

A migrated query was written for TD's Trino engine (``engine: hive`` for Hive); the source it
now runs on speaks its own dialect (the embedded DuckDB, or the SQLAlchemy URL's: PostgreSQL,
Snowflake, BigQuery, Trino, ...). :func:`translate` rewrites it with ``sqlglot``:

- ``${...}`` placeholders (session variables, filled per run) are set aside before parsing and
  put back unchanged, so they survive the transpiler whatever their position;
- TD's functions stay as they are on DuckDB, which defines them
  (:mod:`line_exports.sql.td_functions`), except ``TD_SESSIONIZE_WINDOW(...) OVER (...)``,
  rewritten into DuckDB window functions; on another engine, ``TD_SCHEDULED_TIME()`` becomes
  ``${session_unixtime}``, ``TD_TIME_ADD`` by a fixed duration becomes arithmetic,
  ``TD_TIME_RANGE`` becomes two comparisons and a TD function of constants becomes its value;
  anything else TD-specific is refused, naming it;
- a construct the target cannot express (``sqlglot``'s unsupported errors) or a syntax error is
  a :class:`TranslationError` with its line and column in the query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, UnsupportedError

from line_exports.sql import td_time
from line_exports.sql.td_calls import TdCallError, check_td_calls
from line_exports.sql.td_functions import TD_FUNCTIONS

TD_DIALECTS = {"presto": "trino", "trino": "trino", "hive": "hive"}
"""TD's ``engine:`` values -> the dialect their queries are written in."""

# SQLAlchemy backend name -> sqlglot dialect.
BACKEND_DIALECTS = {
    "duckdb": "duckdb",
    "postgresql": "postgres",
    "postgres": "postgres",
    "redshift": "redshift",
    "snowflake": "snowflake",
    "bigquery": "bigquery",
    "trino": "trino",
    "presto": "presto",
    "mysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlite",
    "mssql": "tsql",
    "oracle": "oracle",
    "databricks": "databricks",
    "hive": "hive",
    "clickhouse": "clickhouse",
}
_PLACEHOLDER = re.compile(r"\$\{[^{}]*\}")
_TOKEN = "__lx_placeholder_{}__"


class TranslationError(ValueError):
    """A query that cannot run in the target dialect: what, where (1-based line, column)."""

    def __init__(
        self,
        message: str,
        line: int | None = None,
        column: int | None = None,
        construct: str = "",
        *,
        dialect: bool = True,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.construct = construct
        self.dialect = dialect
        """False when the query cannot run in any dialect (a TD call TD itself refuses)."""

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.message}" if self.line else self.message


@dataclass(frozen=True)
class Translation:
    """A query as written and as it runs."""

    sql: str
    source_sql: str
    read: str
    write: str

    @property
    def changed(self) -> bool:
        return self.sql.strip() != self.source_sql.strip()


def dialect_of_url(url: Any) -> str:
    """The sqlglot dialect of a SQLAlchemy URL (a string or ``dg.EnvVar``); DuckDB when empty.

    Raises ValueError for a backend with no known dialect.
    """
    if hasattr(url, "get_value"):  # dg.EnvVar (a str subclass that refuses str use)
        url = url.get_value()
    if not url:
        return "duckdb"
    from sqlalchemy.engine import make_url

    backend = make_url(str(url)).get_backend_name()
    if backend not in BACKEND_DIALECTS:
        raise ValueError(
            f"no SQL dialect known for {backend!r} sources; set translate_sql: false and write "
            "the query in its own dialect"
        )
    return BACKEND_DIALECTS[backend]


def read_dialect(engine: str | None) -> str:
    """The dialect a ``td>`` query is written in, from the task's ``engine:`` (default presto)."""
    name = str(engine or "presto").lower()
    if name not in TD_DIALECTS:
        raise ValueError(f"unknown engine {engine!r} (presto, trino or hive)")
    return TD_DIALECTS[name]


def translate(sql: str, read: str = "trino", write: str = "duckdb") -> Translation:
    """``sql`` (TD's dialect ``read``) in dialect ``write``; raises :class:`TranslationError`."""
    protected, placeholders = _protect(sql)
    try:
        trees = [t for t in sqlglot.parse(protected, read=read) if t is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        near = str(first.get("highlight") or "").strip()
        for token, original in placeholders.items():
            near = near.replace(token, original)
        where = f", column {first['col']}" if first.get("col") else ""
        raise TranslationError(
            f"cannot parse the query as {read} SQL{where}: {first.get('description', exc)}"
            + (f" near {near[:60]!r}" if near else ""),
            first.get("line"),
            first.get("col"),
        ) from None
    out, same = [], True
    for tree in trees:
        as_written = tree.sql(dialect=read)
        try:
            check_query(tree)
            tree = _td_functions(tree, write, sql, placeholders)
        except TranslationError as exc:
            for token, original in placeholders.items():
                exc.message = exc.message.replace(token, original)
            exc.args = (exc.message,)
            raise
        if write in ("postgres", "sqlite", "mysql"):
            tree = tree.transform(_exact_distinct)
        try:
            flat = tree.sql(dialect=write, unsupported_level=ErrorLevel.RAISE)
            out.append(tree.sql(dialect=write, unsupported_level=ErrorLevel.RAISE, pretty=True))
        except UnsupportedError as exc:
            message = str(exc).strip().splitlines()[0]
            raise TranslationError(
                f"{write} has no equivalent: {message}", construct=message
            ) from None
        same = same and flat == as_written
    if same:  # nothing differs for the target: the query runs as written (comments, layout)
        return Translation(sql, sql, read, write)
    text = ";\n".join(out)
    return Translation(_restore(text, placeholders), sql, read, write)


def check_query(tree: exp.Expression) -> None:
    """TD calls with a wrong argument count or a constant TD refuses
    (:func:`.td_calls.check_td_calls`), as a :class:`TranslationError` with line and column."""
    try:
        check_td_calls(tree)
    except TdCallError as exc:
        raise TranslationError(exc.message, exc.line, exc.column, dialect=False) from None


def check_as_written(sql: str, dialect: str) -> None:
    """:func:`check_query` on a query that runs as written (``translate_sql: false``); a query
    sqlglot cannot parse is left to the engine."""
    protected, placeholders = _protect(sql)
    try:
        trees = [t for t in sqlglot.parse(protected, read=dialect) if t is not None]
    except (ParseError, ValueError):
        return
    for tree in trees:
        try:
            check_query(tree)
        except TranslationError as exc:
            for token, original in placeholders.items():
                exc.message = exc.message.replace(token, original)
            exc.args = (exc.message,)
            raise


# --- placeholders --------------------------------------------------------------------------


def _protect(sql: str) -> tuple[str, dict[str, str]]:
    placeholders: dict[str, str] = {}

    def hide(match: re.Match[str]) -> str:
        token = _TOKEN.format(len(placeholders))
        placeholders[token] = match.group(0)
        return token

    return _PLACEHOLDER.sub(hide, sql), placeholders


def _restore(sql: str, placeholders: dict[str, str]) -> str:
    for token, original in placeholders.items():
        # an identifier the target dialect chose to quote is a placeholder all the same
        sql = re.sub(rf"[\"`\[]?{re.escape(token)}[\"`\]]?(?![A-Za-z0-9_])", original, sql)
    left = re.search(r"__lx_placeholder_\d+__", sql)
    if left:
        raise TranslationError(f"a ${{...}} placeholder did not survive translation ({left[0]})")
    return sql


# --- TD functions --------------------------------------------------------------------------


def _where(sql: str, node: exp.Expression) -> tuple[int | None, int | None]:
    meta = node.meta or {}
    return meta.get("line"), meta.get("col")


def _refuse(node: exp.Expression, message: str, sql: str) -> TranslationError:
    line, column = _where(sql, node)
    return TranslationError(message, line, column, construct=node.name.upper())


def _td_name(node: exp.Expression) -> str | None:
    if isinstance(node, exp.Anonymous) and str(node.name).upper().startswith("TD_"):
        return str(node.name).upper()
    return None


def _td_functions(
    tree: exp.Expression, write: str, sql: str, placeholders: dict[str, str]
) -> exp.Expression:
    unknown = [
        n for n in tree.find_all(exp.Anonymous) if _td_name(n) and _td_name(n) not in TD_FUNCTIONS
    ]
    if unknown:
        name = _td_name(unknown[0])
        raise _refuse(
            unknown[0],
            f"{name} is a Treasure Data function with no equivalent here (available: "
            f"{', '.join(TD_FUNCTIONS)})",
            sql,
        )
    if write == "duckdb":
        return _bottom_up(tree, lambda n: _native(_sessionize(n, sql)))
    return _bottom_up(tree, lambda n: _portable(n, write, sql, placeholders))


def _bottom_up(tree: exp.Expression, rewrite: Any) -> exp.Expression:
    """``rewrite`` applied to every node, children first (so nested TD calls are rewritten
    before the call that holds them)."""
    for node in reversed(list(tree.walk(bfs=False))):
        new = rewrite(node)
        if new is not node:
            if node is tree:
                tree = new
            else:
                node.replace(new)
    return tree


def _sessionize(node: exp.Expression, sql: str) -> exp.Expression:
    """``TD_SESSIONIZE_WINDOW(time, timeout) OVER (PARTITION BY k ORDER BY time)`` on DuckDB.

    TD: rows of one partition, in order, share a session while each follows the previous one
    by at most ``timeout`` seconds; each session gets an id (TD's is a random UUID, ours is a
    UUID-shaped digest of the partition key and the session's first time, the same on every
    run). Each row reads the times before it in its partition, so cost grows with the square
    of a partition's rows.
    """
    if not isinstance(node, exp.Window) or _td_name(node.this) != "TD_SESSIONIZE_WINDOW":
        if _td_name(node) == "TD_SESSIONIZE_WINDOW" and not isinstance(node.parent, exp.Window):
            raise _refuse(
                node, "TD_SESSIONIZE_WINDOW needs OVER (PARTITION BY ... ORDER BY time)", sql
            )
        return node
    args = node.this.expressions
    if len(args) != 2:
        raise _refuse(node.this, "TD_SESSIONIZE_WINDOW takes (time, timeout_seconds)", sql)
    time_arg, timeout = args
    partition = node.args.get("partition_by") or []
    times = exp.Window(
        this=exp.Anonymous(this="list", expressions=[exp.cast(time_arg.copy(), "BIGINT")]),
        partition_by=[p.copy() for p in partition],
        order=node.args.get("order").copy() if node.args.get("order") else None,
        spec=exp.WindowSpec(
            kind="ROWS", start="UNBOUNDED", start_side="PRECEDING", end="CURRENT ROW"
        ),
    )
    key = (
        exp.cast(exp.Anonymous(this="row", expressions=[p.copy() for p in partition]), "VARCHAR")
        if partition
        else exp.Literal.string("")
    )
    return exp.Anonymous(this="td__session_id", expressions=[times, timeout.copy(), key])


# TD_TIME_STRING's '!' codes: (unit, DuckDB strftime format of the local wall clock)
_NATIVE_TIME_STRING = {
    "y!": ("year", "%Y"),
    "q!": ("quarter", "%Y-%m"),
    "M!": ("month", "%Y-%m"),
    "w!": ("week", "%Y-%m-%d"),
    "d!": ("day", "%Y-%m-%d"),
    "h!": ("hour", "%Y-%m-%d %H"),
    "m!": ("minute", "%Y-%m-%d %H:%M"),
    "s!": ("second", "%Y-%m-%d %H:%M:%S"),
}


def _call(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


def _native(node: exp.Expression) -> exp.Expression:
    """TD_TIME_FORMAT, TD_TIME_STRING ('!' codes) and TD_DATE_TRUNC with constant pattern,
    unit and zone, as DuckDB's own functions (ICU zones, strftime, date_trunc): 10-100x the
    Python functions, which stay for everything else (zone names in the text, weeks of the
    year, milliseconds, ...). ``test_td_functions`` checks both give the same text or instant."""
    name = _td_name(node)
    args = list(node.expressions) if name else []
    if name not in ("TD_TIME_FORMAT", "TD_TIME_STRING", "TD_DATE_TRUNC") or len(args) not in (2, 3):
        return node
    constants = args[:1] if name == "TD_DATE_TRUNC" else args[1:2]
    time_arg = args[1] if name == "TD_DATE_TRUNC" else args[0]
    zone_node = args[2] if len(args) == 3 else exp.Literal.string("UTC")
    if not all(isinstance(a, exp.Literal) and a.is_string for a in (*constants, zone_node)):
        return node
    icu = td_time.duckdb_zone(zone_node.this)
    if icu is None:
        return node
    seconds = exp.cast(time_arg.copy(), "BIGINT")
    local = _call("timezone", exp.Literal.string(icu), _call("to_timestamp", seconds))
    if name == "TD_TIME_FORMAT":
        pattern = td_time.duckdb_strftime(constants[0].this)
        if pattern is None:
            return node
        return _call("strftime", local, exp.Literal.string(pattern))
    if name == "TD_TIME_STRING":
        if constants[0].this not in _NATIVE_TIME_STRING:
            return node
        unit, pattern = _NATIVE_TIME_STRING[constants[0].this]
        truncated = _call("date_trunc", exp.Literal.string(unit), local)
        return _call("strftime", truncated, exp.Literal.string(pattern))
    unit = constants[0].this.strip().lower()
    if unit not in td_time.UNITS:
        return node  # the Python function says what is wrong
    # the local wall clock read as UTC: its seconds minus the instant's are the zone's offset
    wall = exp.cast(_call("epoch", local), "BIGINT")
    if unit in ("second", "minute", "hour"):
        size = {"second": 1, "minute": 60, "hour": 3600}[unit]
        return exp.paren(
            exp.Sub(
                this=seconds.copy(),
                expression=exp.Mod(this=wall, expression=exp.Literal.number(size)),
            )
        )
    start = _call(
        "timezone",
        exp.Literal.string(icu),
        _call("date_trunc", exp.Literal.string(unit), local.copy()),
    )
    return exp.cast(_call("epoch", start), "BIGINT")


def _literal_value(node: exp.Expression) -> Any:
    """The Python value of a literal or NULL; raises LookupError for anything else."""
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        return int(node.this) if re.fullmatch(r"-?\d+", node.this) else float(node.this)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        return -int(node.this.this)
    raise LookupError


def _has_placeholder(node: exp.Expression) -> bool:
    return "__lx_placeholder_" in node.sql()


def _portable(
    node: exp.Expression, write: str, sql: str, placeholders: dict[str, str]
) -> exp.Expression:
    name = _td_name(node)
    if name is None:
        return node
    args = list(node.expressions)
    if name == "TD_SCHEDULED_TIME":
        token = _TOKEN.format(len(placeholders))
        placeholders[token] = "${session_unixtime}"
        return exp.cast(exp.column(token), "BIGINT")
    try:
        values = [_literal_value(a) for a in args]
    except LookupError:
        values = None
    if values is not None and not any(isinstance(v, str) and "__lx_" in v for v in values):
        return _fold(node, name, values, sql)
    if name == "TD_TIME_ADD" and len(args) >= 2 and isinstance(args[1], exp.Literal):
        if isinstance(args[0], exp.Literal) and args[0].is_string:
            return node  # a time string with a placeholder: not known before the run
        seconds = td_time.duration_seconds(args[1].this)
        return exp.paren(exp.Add(this=args[0].copy(), expression=exp.Literal.number(seconds)))
    if name == "TD_TIME_RANGE" and 2 <= len(args) <= 4:
        return _time_range(node, args, sql)
    raise _refuse(
        node,
        f"{name} with values known only at run time has no {write} equivalent; run the query "
        "on the embedded engine, or write the condition in the source's SQL "
        "(translate_sql: false)",
        sql,
    )


def _fold(node: exp.Expression, name: str, values: list[Any], sql: str) -> exp.Expression:
    """A TD function of constants, replaced by its value."""
    from line_exports.sql import td_functions as f

    calls = {
        "TD_TIME_PARSE": lambda v, tz="UTC": f._parse(v, tz),
        "TD_TIME_ADD": lambda t, d, tz="UTC": f._time_add(str(t), d, tz),
        "TD_TIME_FORMAT": lambda t, p, tz="UTC": f._format(t, p, tz),
        "TD_TIME_STRING": lambda t, c, tz="UTC": f._time_string(t, c, tz),
        "TD_DATE_TRUNC": lambda u, t, tz="UTC": f._date_trunc(u, t, tz),
    }
    if name not in calls:
        if name == "TD_TIME_RANGE":
            return _time_range(node, list(node.expressions), sql)
        raise _refuse(node, f"{name} has no equivalent outside the embedded engine", sql)
    try:
        value = calls[name](*values)
    except (td_time.TdTimeError, TypeError) as exc:
        raise _refuse(node, f"{name}: {exc}", sql) from None
    if value is None:
        return exp.Null()
    return exp.Literal.string(value) if isinstance(value, str) else exp.Literal.number(value)


def _time_range(node: exp.Expression, args: list[exp.Expression], sql: str) -> exp.Expression:
    """``TD_TIME_RANGE(t, start[, end[, tz]])`` as ``t >= start AND t < end`` in UNIX seconds."""
    time_arg, start = args[0], args[1]
    end = args[2] if len(args) > 2 else exp.Null()
    tz_node = args[3] if len(args) > 3 else exp.Literal.string("UTC")
    if not (isinstance(tz_node, exp.Literal) and tz_node.is_string):
        raise _refuse(node, "TD_TIME_RANGE's timezone must be a constant here", sql)

    def bound(arg: exp.Expression) -> exp.Expression | None:
        if isinstance(arg, exp.Null):
            return None
        if isinstance(arg, exp.Literal) and arg.is_string:
            if _has_placeholder(arg):
                raise _refuse(
                    node,
                    f"TD_TIME_RANGE bound {arg.this!r} is known only at run time; outside the "
                    "embedded engine use UNIX-second bounds such as "
                    "TD_TIME_ADD(TD_SCHEDULED_TIME(), '-1d')",
                    sql,
                )
            try:
                return exp.Literal.number(td_time.time_value(arg.this, tz_node.this))
            except td_time.TdTimeError as exc:
                raise _refuse(node, f"TD_TIME_RANGE: {exc}", sql) from None
        return arg.copy()

    low = bound(start) or exp.Literal.number(0)
    high = bound(end)
    condition: exp.Expression = exp.GTE(this=time_arg.copy(), expression=low)
    if high is not None:
        condition = exp.and_(condition, exp.LT(this=time_arg.copy(), expression=high))
    return exp.paren(condition)


def _exact_distinct(node: exp.Expression) -> exp.Expression:
    """``approx_distinct(x)`` where the target has no approximation: the exact count."""
    if isinstance(node, exp.ApproxDistinct):
        return exp.Count(this=exp.Distinct(expressions=[node.this.copy()]))
    return node
