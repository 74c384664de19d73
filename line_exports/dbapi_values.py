"""Values a DB-API driver (SQLAlchemy sources) hands over, made to travel as DuckDB's do.

DuckDB's own path reads Arrow (:func:`line_exports.values.arrow_to_pandas`); a SQLAlchemy source
gets Python objects from its driver, some of which take a detour on the way:

* PostgreSQL's ``'infinity'``/``'-infinity'`` DATE, TIMESTAMP and TIMESTAMPTZ, and finite ones
  after year 9999 or BC: psycopg raises ``DataError`` ("date too large") and the whole run
  fails with no counts (psycopg2 clamps infinity to 9999-12-31 / 0001-01-01, which cannot be
  told from real dates). The loaders below read them as
  :class:`~line_exports.values.Unsendable` ``infinite_time`` / ``time_range`` cells: a
  ``type`` reject with the same reason as on DuckDB.
* JSON / JSONB: psycopg parses them into dicts and lists (sent as Python reprs or refused as
  STRUCTs); read as their JSON text, as DuckDB's JSON is.
* NUMERIC: each value keeps its own digits (Arrow would widen a column to one scale:
  ``1.10`` next to a 9-decimal value became ``1.100000000``); ``'NaN'`` is a missing value
  and ``'Infinity'`` a ``type`` reject, as for a DOUBLE.
* TIME and TIME WITH TIME ZONE travel as PostgreSQL writes them (``24:00:00``, ``12:34:56.5``,
  ``12:34:56+09:00``, the offset as ``+hh:mm``), as DuckDB's do: PostgreSQL's ``time`` takes
  ``24:00:00`` ("Date/Time Types"), which ``datetime.time`` cannot hold (psycopg's "can't parse
  time" failed the run, blamed on the query); Arrow's time type has no offset.
* TIMESTAMPTZ near 0001-01-01 / 9999-12-31: psycopg builds the datetime in the session's
  ``TimeZone`` (a server or database default the export does not set), where the year may be
  0 or 10000 though the instant is not; such a value is read as its instant in UTC
  (:func:`utc_instant`), so it is sent or rejected by the export's zone, as on DuckDB; the
  rejects file shows PostgreSQL's text of it (:class:`~line_exports.values.PrintedTime`).
* REAL: psycopg gives a double (0.10000000149011612); read at single precision, so it is
  written as a FLOAT (``0.1``, :mod:`line_exports.float_text`).
* INTERVAL and arrays: ``type`` rejects, as DuckDB's INTERVAL and LIST are; read as
  :class:`~line_exports.values.Unsendable` cells holding PostgreSQL's text of the value (a
  ``timedelta`` or list would show as Python's text in the rejects file). Ranges,
  multiranges and composite (row) types too, built-in or the database's own (an anonymous
  ``row(...)`` of the query too, ``record``), and arrays of
  the database's types (an enum's, a domain's): psycopg read those as text or ``Range``
  objects, which were sent.

PostgreSQL is read through psycopg (3) only, the driver installed with line-exports, since only
its loaders are registered here (:func:`postgres_url`): a bare ``postgresql://`` URL, which
SQLAlchemy would give to psycopg2, uses psycopg, as the ledger's does; ``postgresql+psycopg2``
(or pg8000, asyncpg) is refused, naming the reason, when the source is defined (a URL read from
the environment: when the run starts, before a query). psycopg2 would clamp infinite dates to
9999-12-31 / 0001-01-01 and send them as if they were real.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from line_exports.values import PrintedTime, Unsendable, out_of_range

_INFINITE = (b"infinity", b"-infinity")
FLOAT_INFINITY = {"postgresql": "Infinity", "sqlite": "Inf", "trino": "Infinity"}
"""How a SQLAlchemy dialect's database prints a float Infinity (PostgreSQL's ``float8out``,
SQLite's ``CAST(x AS TEXT)``, Trino's ``CAST(infinity() AS VARCHAR)``), for the rejects file
(:data:`~line_exports.values.INFINITY_TEXT`); any other as pandas' ``inf``."""
_PG_YEAR = re.compile(rb"(\d{4,})-\d\d-\d\d")
_HOURS_OFFSET = re.compile(r"([+-]\d\d)$")
POSTGRES_DRIVER = "psycopg"


class UnsupportedDriver(Exception):
    """A SQLAlchemy URL whose PostgreSQL driver is not psycopg (3); the message never holds the
    URL (it may hold a password). Not a ``ValueError``: pydantic would wrap it in a
    ``ValidationError`` that shows the URL."""


def postgres_url(url: str) -> str:
    """``url`` with a bare ``postgresql://`` given psycopg (3); any other URL unchanged.

    Raises :class:`UnsupportedDriver` for ``postgresql+<driver>`` other than psycopg."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return url
    driver = parsed.get_driver_name() if "+" in parsed.drivername else ""
    if not driver:
        return parsed.set(drivername=f"postgresql+{POSTGRES_DRIVER}").render_as_string(
            hide_password=False
        )
    if driver != POSTGRES_DRIVER:
        raise UnsupportedDriver(
            f"SqlSource url: PostgreSQL through {driver} is not supported: only psycopg (3), "
            "installed with line-exports, reads 'infinity' dates and timestamps as the type "
            f"rejects they are ({driver} would send 9999-12-31 or another date as if real). "
            f"Write postgresql+{POSTGRES_DRIVER}://... (or postgresql://..., which uses it)"
        )
    return url


def register_psycopg_loaders(dbapi_connection: Any) -> None:
    """On a psycopg (3) connection: infinite dates and timestamps as ``infinite_time``
    markers, INTERVAL and arrays as ``interval`` / ``nested`` markers (each carrying
    PostgreSQL's text of the value, ``infinity``, ``01:30:00``, ``{1,2}``, for the rejects
    file), JSON and JSONB as text, TIME and TIMETZ as PostgreSQL's text (offset ``+hh:mm``),
    REAL as a single-precision float (``0.1``, not psycopg's double 0.10000000149011612), a
    TIMESTAMPTZ whose year is 10000 or BC in the session's zone as its instant (:func:`utc_instant`)
    (psycopg's ``Loader`` API: ``adapters.register_loader``)."""
    from psycopg import DataError
    from psycopg.types.datetime import DateLoader, TimestampLoader, TimestamptzLoader
    from psycopg.types.numeric import FloatLoader
    from psycopg.types.string import TextLoader

    def infinite(base: type, type_name: str) -> type:
        class Loader(base):  # type: ignore[valid-type,misc]
            def load(self, data: Any) -> Any:
                text = bytes(data)
                if text in _INFINITE:
                    return Unsendable("infinite_time", type_name, text=text.decode())
                try:
                    value = super().load(data)
                except DataError:
                    if type_name == "timestamptz":  # its instant, not the session's clock
                        instant = utc_instant(text)
                        if isinstance(instant, dt.datetime):  # shown as psql prints it
                            return PrintedTime.of(instant, text.decode())
                        if instant is not None:
                            return out_of_range(False, instant, text.decode())
                    found = _year(text)
                    if found is None:
                        raise
                    return out_of_range(type_name == "date", found, text.decode())
                if type_name == "timestamptz" and isinstance(value, dt.datetime):
                    try:  # local year 1 or 9999 (LMT offsets), its instant BC or in year 10000
                        value.astimezone(dt.timezone.utc)
                    except OverflowError:
                        return out_of_range(False, 0 if value.year == 1 else 10000, text.decode())
                return value

        return Loader

    class TimeTextLoader(TextLoader):  # type: ignore[misc]
        def load(self, data: Any) -> str:
            return _HOURS_OFFSET.sub(r"\1:00", super().load(data))

    def printed(kind: str, type_name: str) -> type:
        class Loader(TextLoader):  # type: ignore[misc]
            def load(self, data: Any) -> Unsendable:
                return Unsendable(kind, type_name, text=super().load(data))

        return Loader

    class SingleLoader(FloatLoader):  # type: ignore[misc]
        def load(self, data: Any) -> Any:
            return np.float32(super().load(data))  # written at single precision (float_text)

    adapters = dbapi_connection.adapters
    adapters.register_loader("float4", SingleLoader)
    adapters.register_loader("date", infinite(DateLoader, "date"))
    adapters.register_loader("timestamp", infinite(TimestampLoader, "timestamp"))
    adapters.register_loader("timestamptz", infinite(TimestamptzLoader, "timestamptz"))
    adapters.register_loader("json", TextLoader)
    adapters.register_loader("jsonb", TextLoader)
    adapters.register_loader("time", TimeTextLoader)
    adapters.register_loader("timetz", TimeTextLoader)
    adapters.register_loader("interval", printed("interval", "interval"))
    # An anonymous record (row(1, 'x y') in the query): psycopg's tuple of texts, a Python
    # list in the rejects file; a composite (row) value, shown (1,"x y") as PostgreSQL prints it.
    adapters.register_loader("record", printed("compound", "record"))
    for info in adapters.types:  # every array type: PostgreSQL's text ({1,2}), a nested cell
        if info.array_oid:
            adapters.register_loader(info.array_oid, printed("nested", f"{info.name}[]"))
        if info.__class__.__name__ in ("RangeInfo", "MultirangeInfo"):  # int4range, ...
            adapters.register_loader(info.oid, printed("compound", info.name))
    for oid, kind, type_name in _database_compounds(dbapi_connection):
        if adapters.types.get(oid) is None:  # the database's own: enum[], domain[], pair, ...
            adapters.register_loader(oid, printed(kind, type_name))


_COMPOUNDS = """
select t.oid, t.typtype::text, t.typcategory::text, coalesce(e.typname::text, t.typname::text)
from pg_catalog.pg_type t left join pg_catalog.pg_type e on e.oid = t.typelem
where t.typtype in ('c', 'r', 'm') or (t.typcategory = 'A' and t.typelem <> 0)
"""


def _database_compounds(dbapi_connection: Any) -> list[tuple[int, str, str]]:
    """The database's array, range, multirange and composite types (``pg_type``), as
    ``(oid, kind, type name)``: ``nested`` for an array (``mood[]``, an enum's; a domain's), else
    ``compound``. psycopg knows only the built-in ones: a user type's value arrived as
    PostgreSQL's text (``{sad,ok}``, ``(1,"x y")``, ``[1.5,2.5)``) and was sent as if it were
    text. One catalog query when the connection opens, committed (a SELECT: nothing to keep);
    none (no such check) when the catalog cannot be read."""
    from psycopg import Error

    try:
        rows = dbapi_connection.execute(_COMPOUNDS).fetchall()
        dbapi_connection.commit()
    except Error:
        dbapi_connection.rollback()
        return []
    return [
        (oid, "nested", f"{name}[]") if category == "A" else (oid, "compound", name)
        for oid, _, category, name in rows
    ]


_PG_TIMESTAMPTZ = re.compile(
    rb"(\d{4,})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?"
    rb"([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?( BC)?"
)
_CYCLE_YEARS = 400  # the Gregorian calendar repeats every 400 years (146097 days)


def utc_instant(text: bytes) -> dt.datetime | int | None:
    """PostgreSQL's text of a TIMESTAMPTZ that Python cannot hold in the session's zone (its
    local year there is 10000, or BC: ``10000-01-01 05:00:00+09``, ``0001-12-31 19:00:00-05
    BC``) as its instant: a UTC ``datetime`` when that is within years 0001-9999, else the
    instant's UTC year (astronomical, for :func:`~line_exports.values.out_of_range`); None when
    the text is not such a timestamp. So the session's ``TimeZone`` (``ALTER DATABASE ... SET
    timezone``, a server default the export cannot see) never decides whether a value is sent:
    the instant is judged in the export's zone, as DuckDB's TIMESTAMPTZ is."""
    match = _PG_TIMESTAMPTZ.fullmatch(text.strip())
    if match is None:
        return None
    year = int(match[1])
    if match[12]:
        year = 1 - year
    if not 0 <= year <= 10000:
        return year  # an offset (under a day) cannot bring it within 0001-9999
    shift = _CYCLE_YEARS * (1 if year > 9999 else -1 if year < 1 else 0)
    sign = 1 if match[8] == b"+" else -1
    offset = dt.timedelta(
        hours=int(match[9]), minutes=int(match[10] or 0), seconds=int(match[11] or 0)
    )
    micros = int((match[7] or b"0").ljust(6, b"0"))
    # The same wall time 400 years nearer (same weekday and leap days), less its offset, back.
    local = dt.datetime(
        year - shift,
        int(match[2]),
        int(match[3]),
        int(match[4]),
        int(match[5]),
        int(match[6]),
        micros,
    )
    utc = local - sign * offset
    if not 1 <= utc.year + shift <= 9999:
        return utc.year + shift
    return utc.replace(year=utc.year + shift, tzinfo=dt.timezone.utc)


def _year(text: bytes) -> int | None:
    """The astronomical year of PostgreSQL's text of a date or timestamp Python cannot hold
    (``10000-01-01``, ``0044-03-15 BC`` is -43), or None when it is not outside 0001-9999
    (psycopg refused it for another reason: let that error stand). ISO DateStyle, psycopg's
    default."""
    match = _PG_YEAR.match(text)
    if match is None:
        return None
    year = int(match[1])
    if text.rstrip().endswith(b" BC"):
        return 1 - year
    return year if year > 9999 else None


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
            else:  # PostgreSQL prints 'Infinity' / '-Infinity'
                marks[i] = Unsendable("infinite", "numeric", text=str(value))
                value = None
        elif isinstance(value, dt.time) and value.tzinfo is not None:
            value = value.isoformat()  # 12:34:56+09:00
        plain.append(value)
    return plain, marks
