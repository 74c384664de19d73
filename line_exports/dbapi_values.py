"""Values a DB-API driver (SQLAlchemy sources) hands over, made to travel as DuckDB's do.

DuckDB's own path reads Arrow (:func:`line_exports.values.arrow_to_pandas`); a SQLAlchemy source
gets Python objects from its driver, some of which take a detour on the way:

* PostgreSQL's ``'infinity'``/``'-infinity'`` DATE, TIMESTAMP and TIMESTAMPTZ: psycopg raises
  ``DataError`` ("date too large") and the whole run fails with no counts (psycopg2 clamps
  them to 9999-12-31 / 0001-01-01, which cannot be told from real dates). The loaders below
  read them as :class:`~line_exports.values.Unsendable` ``infinite_time`` cells: a ``type``
  reject with the same reason as on DuckDB.
* JSON / JSONB: psycopg parses them into dicts and lists (sent as Python reprs or refused as
  STRUCTs); read as their JSON text, as DuckDB's JSON is.
* NUMERIC: each value keeps its own digits (Arrow would widen a column to one scale:
  ``1.10`` next to a 9-decimal value became ``1.100000000``); ``'NaN'`` is a missing value
  and ``'Infinity'`` a ``type`` reject, as for a DOUBLE.
* TIME WITH TIME ZONE keeps its offset (``12:34:56+09:00``; Arrow's time type has none).
* INTERVAL arrives as a ``timedelta``: a ``type`` reject (:func:`~line_exports.values.arrow_to_pandas`
  marks Arrow durations as it marks DuckDB's INTERVAL).
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Sequence
from typing import Any

from line_exports.values import Unsendable

_INFINITE = (b"infinity", b"-infinity")


def register_psycopg_loaders(dbapi_connection: Any) -> None:
    """On a psycopg (3) connection: infinite dates and timestamps as ``infinite_time``
    markers, JSON and JSONB as text (psycopg's ``Loader`` API: ``adapters.register_loader``)."""
    from psycopg.types.datetime import DateLoader, TimestampLoader, TimestamptzLoader
    from psycopg.types.string import TextLoader

    def infinite(base: type, type_name: str) -> type:
        class Loader(base):  # type: ignore[valid-type,misc]
            def load(self, data: Any) -> Any:
                if bytes(data) in _INFINITE:
                    return Unsendable("infinite_time", type_name)
                return super().load(data)

        return Loader

    adapters = dbapi_connection.adapters
    adapters.register_loader("date", infinite(DateLoader, "date"))
    adapters.register_loader("timestamp", infinite(TimestampLoader, "timestamp"))
    adapters.register_loader("timestamptz", infinite(TimestamptzLoader, "timestamptz"))
    adapters.register_loader("json", TextLoader)
    adapters.register_loader("jsonb", TextLoader)


def special_cells(values: Sequence[Any]) -> tuple[list[Any], dict[int, Unsendable]] | None:
    """``values`` (one column of a chunk) with the cells above made plain: (values for Arrow,
    markers by position), or None when the column holds none of them (most columns: one
    C-level pass over the cells' types)."""
    kinds = set(map(type, values))
    if not kinds & {Unsendable, decimal.Decimal, dt.time}:
        return None
    plain: list[Any] = []
    marks: dict[int, Unsendable] = {}
    for i, value in enumerate(values):
        if isinstance(value, Unsendable):
            marks[i] = value
            value = None
        elif isinstance(value, decimal.Decimal) and not value.is_finite():
            if value.is_nan():
                value = None  # NaN is a missing value, as a DOUBLE's
            else:
                marks[i] = Unsendable("infinite", "numeric")
                value = None
        elif isinstance(value, dt.time) and value.tzinfo is not None:
            value = value.isoformat()  # 12:34:56+09:00
        plain.append(value)
    return plain, marks
