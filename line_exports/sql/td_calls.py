"""TD function calls checked before a query runs: argument counts and constant arguments.

A ``td>`` query's TD functions run on the embedded engine (:mod:`.td_functions`), where a wrong
argument count is a DuckDB binder error and a bad constant (an unknown timezone, a format
pattern with an unterminated quote, a duration TD does not read) fails only when a row reaches
it. :func:`check_td_calls` finds both in the parsed query, so ``validate`` names the query's
line and column and the rule, as TD's reference states it:

=========================  =====  ==========================================================
function                   args   constant arguments checked
=========================  =====  ==========================================================
``TD_SCHEDULED_TIME``      0
``TD_TIME_RANGE``          2-4    start, end (a time string, in the 4th's zone), timezone
``TD_INTERVAL``            2-4    interval string (``-1d``, ``-7d/now``, ...), timezone
``TD_INTERVAL_RANGE``      1-2    interval string, timezone
``TD_TIME_FORMAT``         2-3    SimpleDateFormat pattern, timezone
``TD_TIME_STRING``         2-3    format code (``d!``, ``M``, ...), timezone
``TD_TIME_PARSE``          1-2    timezone (an unreadable text is NULL in TD, not an error)
``TD_TIME_ADD``            2-3    duration (``1d``, ``-1h``, ...), timezone
``TD_DATE_TRUNC``          2-3    unit, timezone
``TD_SESSIONIZE_WINDOW``   2
=========================  =====  ==========================================================

Reference: "Treasure Data functions" (https://api-docs.treasuredata.com/en/tools/presto/api/).
A value known only at run time (a column, a ``${...}`` placeholder) is not checked here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from line_exports.sql import td_time


@dataclass
class TdCallError(ValueError):
    """A TD function call that cannot run: the rule, and where (1-based line, column)."""

    message: str
    line: int | None = None
    column: int | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)


def _zone(value: str, _zone_name: str) -> None:
    td_time.zone(value)


def _pattern(value: str, zone_name: str) -> None:
    td_time.format_time(0, value, zone_name)


def _code(value: str, zone_name: str) -> None:
    td_time.time_string(0, value, zone_name)


def _unit(value: str, _zone_name: str) -> None:
    if value.strip().lower() not in td_time.UNITS:
        raise td_time.TdTimeError(
            f"invalid TD_DATE_TRUNC unit {value!r} (one of {', '.join(td_time.UNITS)})"
        )


def _duration(value: str, _zone_name: str) -> None:
    td_time.duration_seconds(value)


def _interval(value: str, zone_name: str) -> None:
    td_time.interval_range(value, 0, td_time.zone(zone_name))


def _bound(value: str, zone_name: str) -> None:
    td_time.time_value(value, zone_name)


Check = Callable[[str, str], None]


@dataclass(frozen=True)
class Signature:
    least: int
    most: int
    checks: dict[int, Check]
    """Argument index -> what its constant must be."""
    zone_at: int | None = None
    """The index of the timezone argument (other constants are read in it)."""

    def arguments(self) -> str:
        count = str(self.least) if self.least == self.most else f"{self.least} to {self.most}"
        return f"{count} argument{'s' if self.most != 1 else ''}"


SIGNATURES: dict[str, Signature] = {
    "TD_SCHEDULED_TIME": Signature(0, 0, {}),
    "TD_TIME_RANGE": Signature(2, 4, {1: _bound, 2: _bound, 3: _zone}, 3),
    "TD_INTERVAL": Signature(2, 4, {1: _interval, 2: _zone}, 2),
    "TD_INTERVAL_RANGE": Signature(1, 2, {0: _interval, 1: _zone}, 1),
    "TD_TIME_FORMAT": Signature(2, 3, {1: _pattern, 2: _zone}, 2),
    "TD_TIME_STRING": Signature(2, 3, {1: _code, 2: _zone}, 2),
    "TD_TIME_PARSE": Signature(1, 2, {1: _zone}, 1),
    "TD_TIME_ADD": Signature(2, 3, {1: _duration, 2: _zone}, 2),
    "TD_DATE_TRUNC": Signature(2, 3, {0: _unit, 2: _zone}, 2),
    "TD_SESSIONIZE_WINDOW": Signature(2, 2, {}),
}


def _where(node: exp.Expression, fallback: exp.Expression) -> tuple[int | None, int | None]:
    meta = node.meta or fallback.meta or {}
    return meta.get("line"), meta.get("col")


def _constant(node: exp.Expression) -> str | None:
    """A string literal's text, unless it holds a ``${...}`` placeholder (set aside before
    parsing as ``__lx_placeholder_N__``)."""
    if isinstance(node, exp.Literal) and node.is_string and "__lx_placeholder_" not in node.this:
        return str(node.this)
    return None


def check_td_calls(tree: exp.Expression) -> None:
    """Raise :class:`TdCallError` for the first TD call with a wrong argument count or a
    constant argument TD would refuse."""
    calls = sorted(tree.find_all(exp.Anonymous), key=lambda n: (n.meta or {}).get("start", 0))
    for node in calls:
        name = str(node.name).upper()
        signature = SIGNATURES.get(name)
        if signature is None:
            continue
        args: list[Any] = list(node.expressions)
        if not signature.least <= len(args) <= signature.most:
            line, column = _where(node, node)
            raise TdCallError(
                f"{name} takes {signature.arguments()}, got {len(args)}", line, column
            )
        zone_name = "UTC"
        if signature.zone_at is not None and signature.zone_at < len(args):
            zone_name = _constant(args[signature.zone_at]) or "UTC"
        # the timezone first: the other constants are read in it
        order = sorted(signature.checks, key=lambda i: i != signature.zone_at)
        for index in order:
            if index >= len(args):
                continue
            value = _constant(args[index])
            if value is None:
                continue
            try:
                signature.checks[index](value, zone_name)
            except td_time.TdTimeError as exc:
                line, column = _where(args[index], node)
                raise TdCallError(f"{name}: {exc}", line, column) from None
