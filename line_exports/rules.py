"""The rule engine: column rules as data, checked a whole column at a time.

A destination describes its columns once (a :class:`RuleSet` that reads like the reference's
column table). :func:`validate` turns a chunk of query rows into the valid, normalized rows and
a rejects table with one line per broken rule: row number, column, rule, message and value.
Nothing is dropped silently: every row is either valid or named in the rejects.

Text columns are checked as Arrow arrays (no Python object per cell), with the same results as
pandas' string methods and Python's ``re`` (``arrow_text``); SHA-256 is computed by DuckDB,
each distinct value once, in the background while the other columns are checked.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from line_exports.arrow_text import bools, compile_matcher, normalize, value_offsets
from line_exports.identities import blank, one_of_reason
from line_exports.phones import (
    EXTENSION,
    INVALID,
    NOT_MOBILE,
    REGION_SETTING,
    check_region,
    e164_column,
)
from line_exports.values import (
    INFINITY_TEXT,
    TIME_TEXT,
    LocalTimes,
    PrintedTime,
    dense_columns,
    dictionary_decoded,
    held_text,
    infinity_text,
    iso_dates,
    iso_dates_or_timestamps,
    iso_text,
    local_times,
    missing_nans,
    numpy_times,
    object_dates_or_timestamps,
    out_of_range,
    plain_dtypes,
    plain_times,
    scalar_text,
    time_text,
    time_texts,
    to_text,
    unicode_text,
    unsendable,
    whole_int64,
)

ROW_NUMBER = "_row_number"
REJECT_COLUMNS = [ROW_NUMBER, "column", "rule", "message", "value"]

EMAIL_PATTERN = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
E164_PATTERN = r"\+[1-9][0-9]{6,14}"
UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
SHA256_PATTERN = r"[0-9a-f]{64}"
SHA512_PATTERN = r"[0-9a-f]{128}"
ISO_DATE_PATTERN = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_IPV4 = r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_H = r"[0-9a-fA-F]{1,4}"
_IPV6 = (
    rf"(?:(?:{_H}:){{7}}{_H}|(?:{_H}:){{1,7}}:|(?:{_H}:){{1,6}}:{_H}|(?:{_H}:){{1,5}}(?::{_H}){{1,2}}"
    rf"|(?:{_H}:){{1,4}}(?::{_H}){{1,3}}|(?:{_H}:){{1,3}}(?::{_H}){{1,4}}|(?:{_H}:){{1,2}}(?::{_H}){{1,5}}"
    rf"|{_H}:(?::{_H}){{1,6}}|:(?:(?::{_H}){{1,7}}|:)|::(?:ffff(?::0{{1,4}})?:)?{_IPV4}"
    rf"|(?:{_H}:){{1,4}}:{_IPV4})"
)
IP_PATTERN = rf"{_IPV4}|{_IPV6}"

# Formats a column can be checked against: name -> (full-match pattern, message).
FORMATS: dict[str, tuple[str, str]] = {
    "email": (EMAIL_PATTERN, "is not an email address"),
    "e164": (E164_PATTERN, "is not a phone number in E.164 form (+ and country code)"),
    "uuid": (UUID_PATTERN, "is not a UUID"),
    "iso_date": (ISO_DATE_PATTERN, "is not an ISO date (YYYY-MM-DD)"),
    "ip": (IP_PATTERN, "is not an IPv4 or IPv6 address"),
}


class SchemaError(ValueError):
    """The query's columns cannot satisfy the destination (e.g. a required column is missing)."""


@dataclass(frozen=True)
class Column:
    """One column of a destination's table: what it must hold and how it is normalized.

    ``required_if`` maps setting names to the value(s) that make the column required, e.g.
    ``{"import_key": "line_uid"}``. ``normalize`` steps run before the checks (``trim``,
    ``lowercase``, ``uppercase``, ``phone``: strip separators). ``format="phone"`` writes every
    phone number in E.164, reading local numbers with the ``default_region`` setting
    (:mod:`line_exports.phones`); ``format="mobile"`` also refuses numbers that are not mobiles;
    ``hash_sha256`` hashes
    values after they pass, unless they already are a SHA-256 (or SHA-512) hex digest.
    ``sensitive`` masks the value in rejects previews (personal data).
    """

    name: str
    required: bool = False
    required_if: Mapping[str, str | tuple[str, ...]] | None = None
    kind: str = "string"  # string | integer | unix_seconds | boolean
    pattern: str | None = None
    pattern_message: str | None = None
    format: str | None = None
    max_length: int | None = None
    min_length: int | None = None
    allowed: tuple[str, ...] | None = None
    min_value: int | None = None
    too_large: tuple[str, str] = (
        "type",
        "is a whole number outside the 64-bit integers (-9223372036854775808 to "
        "9223372036854775807) this field holds",
    )
    """The reject (rule, message) of an ``integer``/``unix_seconds`` column's whole number past
    int64's maximum (below its minimum too, where there is no ``min_value``): a UBIGINT,
    HUGEINT, DECIMAL(38,2) or DOUBLE value is whole at any size, just not sendable."""
    normalize: tuple[str, ...] | None = None  # None: see steps
    hash_sha256: bool = False
    accept_sha512: bool = False
    sensitive: bool = False
    blank_is_missing: bool = False
    """Text of only white space is no value (:func:`~line_exports.identities.blank`): missing
    for every rule, never sent (a LinkedIn name, company or title: it names nothing), while a
    present value still travels exactly as held."""
    aliases: tuple[str, ...] = ()
    required_by: str | None = None  # what needs it, for the missing-column error

    @property
    def steps(self) -> tuple[str, ...]:
        """The normalize steps run: ``normalize`` if given, else ``trim`` for a value checked
        against a pattern, allowed values, a format or a type (an ID, a code, a date: `` U…\t``
        is that UID) and none for free text (a name, a title, a ``customer_id``), which travels
        exactly as held, surrounding spaces included: no destination's reference documents
        trimming it (VERIFY-13j J5; README "Values travel")."""
        if self.normalize is not None:
            return self.normalize
        checked = self.pattern or self.allowed or self.format or self.kind != "string"
        return ("trim",) if checked else ()

    def is_required(self, settings: Mapping[str, object]) -> bool:
        if self.required:
            return True
        if not self.required_if:
            return False
        for setting, wanted in self.required_if.items():
            values = (wanted,) if isinstance(wanted, str) else tuple(wanted)
            if settings.get(setting) in values:
                return True
        return False


@dataclass(frozen=True)
class AnyOf:
    """Row rule: at least one of the groups must be complete (every column of it present).

    A row breaking it is rejected with :meth:`describe` as its column and :meth:`message` as its
    reason: why the API needs one (``reason``, by default the identity rule's own,
    :func:`~line_exports.identities.one_of_reason`)."""

    groups: tuple[tuple[str, ...], ...]
    name: str = "any_of"
    reason: str = ""

    def describe(self) -> str:
        return " or ".join("+".join(g) for g in self.groups)

    def message(self) -> str:
        """The reject's reason after its column (:meth:`describe`): none of the groups is
        complete, and why one must be."""
        reason = self.reason or one_of_reason(self.groups)
        missing = "is missing, and one is needed"
        return f"{missing}: {reason}" if reason else missing


@dataclass(frozen=True)
class Unique:
    """Export rule: no two rows carry the same ``columns`` values (after normalization).

    The first row is sent; each later one is rejected as a ``duplicate`` naming the first, so a
    key is never sent twice in one request, import or upload. NULLs match each other; rows
    whose ``columns`` are all missing are never duplicates. ``required_if`` limits the rule to
    some settings (e.g. MAAC's ``import_key``), like :attr:`Column.required_if`.
    """

    columns: tuple[str, ...]
    required_if: Mapping[str, str | tuple[str, ...]] | None = None
    name: str = "duplicate"
    only_without: tuple[str, ...] = ()
    """Only rows whose ``only_without`` columns are all missing are compared (a sync key's
    fallback: LinkedIn users with no ID, keyed by name)."""
    match: tuple[str, ...] = ()
    """Of ``columns``, those compared as names (:func:`~line_exports.identities.name_keys`:
    trimmed, lower-cased) rather than as held: LinkedIn's company and user names. The row sent
    keeps its own spelling."""
    per_value: bool = False
    """Each of ``columns`` on its own: a value once per export. A row whose value repeats an
    earlier row's is still sent, without that value (the cell emptied, the row noted with the
    row that sent it), while it has another of ``columns`` to send; a row with none left is a
    ``duplicate`` reject (LinkedIn's userIds, each identifying a member: a new email is sent
    although the row's GOOGLE_AID went with an earlier row)."""

    def applies(self, settings: Mapping[str, object]) -> bool:
        if not self.required_if:
            return True
        for setting, wanted in self.required_if.items():
            values = (wanted,) if isinstance(wanted, str) else tuple(wanted)
            value = settings.get(setting)
            if getattr(value, "value", value) in values:
                return True
        return False

    def describe(self) -> str:
        return "+".join(self.columns)


@dataclass(frozen=True)
class RuleSet:
    """A destination's columns and row rules; ``keep`` lists extra columns passed through.

    ``unique`` rules span the whole export (every chunk): they are checked on the spooled
    valid rows, see :func:`line_exports.dedup.drop_duplicates`.
    """

    columns: tuple[Column, ...]
    row_rules: tuple[AnyOf, ...] = ()
    keep: tuple[str, ...] = ()
    unique: tuple[Unique, ...] = ()

    def keyed(
        self,
        columns: tuple[str, ...],
        settings: Mapping[str, object],
        fallback: tuple[str, ...] = (),
    ) -> RuleSet:
        """These rules with ``columns`` (a ``sync_mode`` diff / mirror key, every row carries
        one) unique across the export too: a rule of these settings over the same columns
        already says it; one over more columns is replaced (each of its repeats repeats the
        key), so a row is one ``duplicate`` reject, naming the key's first row. ``fallback``
        (:attr:`~line_exports.sync.SyncSpec.fallback_key`): unique too among the rows with no
        key column."""
        key = set(columns)
        applied = [r for r in self.unique if r.applies(settings)]
        extra = (Unique(fallback, only_without=columns),) if fallback else ()
        if any(set(r.columns) == key for r in applied):
            return replace(self, unique=(*self.unique, *extra)) if extra else self
        kept = tuple(r for r in self.unique if not (r in applied and set(r.columns) > key))
        return replace(self, unique=(*kept, Unique(columns), *extra))

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)


@dataclass
class Validated:
    """One chunk after validation: rows to send, and why the others were refused."""

    valid: pd.DataFrame
    rejects: pd.DataFrame
    rows_read: int
    ignored_columns: list[str] = field(default_factory=list)


def empty_rejects() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in REJECT_COLUMNS}).astype(
        {ROW_NUMBER: "int64"}
    )


SHOWN_CHARACTERS = 200
"""The characters of a refused value the rejects file shows (:func:`shown_value`)."""


def shown_value(text: str, sensitive: bool = False) -> str:
    """A refused value's text as the rejects file shows it: a ``sensitive`` one masked over the
    whole value (:func:`mask_value`); one longer than :data:`SHOWN_CHARACTERS` characters (code
    points, as the length rules count them) cut to its first 200 followed by
    ``… (1000 characters)``, its length in all, so a "longer than 255 characters" reason never
    sits beside a value that looks whole; a lone surrogate escaped
    (:func:`~line_exports.values.unicode_text`)."""
    if sensitive:
        text = mask_value(text)
    if len(text) > SHOWN_CHARACTERS:
        text = f"{text[:SHOWN_CHARACTERS]}\u2026 ({len(text)} characters)"
    return unicode_text(text)


def mask_value(value: str) -> str:
    """Keep enough of a personal value to find it, not enough to leak it."""
    if len(value) <= 4:
        return "*" * len(value)
    return value[:2] + "*" * (len(value) - 4) + value[-2:]


def _seconds(delta: pd.Series) -> pd.Series:
    """Whole seconds of a timedelta column (sub-second parts dropped, never a failed cast)."""
    return np.floor(delta.dt.total_seconds()).astype("Int64")


def to_unix_seconds(
    series: pd.Series, timezone: str = "UTC", times: LocalTimes | None = None
) -> tuple[pd.Series, pd.Series]:
    """Ints, digit strings or timestamps as UNIX seconds; second value marks unparseable cells.

    A naive timestamp, and a timestamp string without a UTC offset (``2026-11-30 12:00:00``),
    is wall-clock time in ``timezone``, read by one rule (:func:`line_exports.values.localized`;
    a time the zone shows twice is marked unparseable);
    a string with an offset or ``Z`` is that instant. A string ending in ``GMT+9``/``UTC-5``
    (:data:`POSIX_OFFSET_MESSAGE`) is unparseable: dateutil would read it with the POSIX sign,
    the opposite of what most writers mean, so it is refused rather than guessed. ``times``:
    a timestamp ``series`` already converted (:func:`~line_exports.values.local_times`). A whole
    number outside int64 (:attr:`_Seconds.above`, :attr:`_Seconds.below`) is marked too.
    """
    found = _unix_seconds(series, timezone, times)
    return found.values, found.unparseable | found.repeated | found.above | found.below


INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
WHOLE_TEXT = r"-?[0-9]+(?:\.0*)?"
"""A whole number's text: digits, a sign, a fraction of zeros (a DECIMAL's ``1796145652.00``)."""
ZERO_FRACTION = r"\.0*$"


@dataclass
class _Seconds:
    """A column as UNIX seconds (``values``, Int64; NA where a mask below is set or the cell
    is missing) and why a present cell has none: ``unparseable`` (no whole number nor
    timestamp), ``repeated`` (a naive time the zone's clocks show twice), ``above``/``below``:
    a whole number past int64's maximum / below its minimum (a UBIGINT, HUGEINT, DECIMAL(38),
    DOUBLE ``1e30`` or text of digits), whole whatever its size, which no int64 holds."""

    values: pd.Series
    unparseable: pd.Series
    repeated: pd.Series
    above: pd.Series
    below: pd.Series


def _unix_seconds(series: pd.Series, timezone: str, times: LocalTimes | None) -> _Seconds:
    """:func:`to_unix_seconds`, with the reasons apart (:class:`_Seconds`). One rule for a whole
    number whatever holds it: an integer, unsigned or not, a float, a ``Decimal`` or a text of
    digits is whole at any size; one outside int64 is marked ``above``/``below``, never read
    as another number (a UBIGINT 18446744073709551615 was int64's -1) nor called not whole."""
    series = plain_dtypes(series)
    none = pd.Series(False, index=series.index)
    if pd.api.types.is_datetime64_any_dtype(series):
        if times is None:
            times = local_times(series, timezone)
            if times.repeated is not None:
                repeated = pd.Series(times.repeated, index=series.index)
                times = times.without(times.repeated)
            else:
                repeated = none
        else:
            repeated = none
        seconds = _seconds(times.utc - pd.Timestamp("1970-01-01"))
        seconds.index = series.index
        return _Seconds(seconds, none, repeated, none, none)
    if pd.api.types.is_integer_dtype(series):
        if isinstance(series.dtype, pd.UInt64Dtype) or series.dtype == np.uint64:
            unsigned = series.astype("UInt64")
            above = (unsigned > np.uint64(INT64_MAX)).fillna(False).astype(bool)
            return _Seconds(unsigned.where(~above).astype("Int64"), none, none, above, none)
        return _Seconds(series.astype("Int64"), none, none, none, none)
    if pd.api.types.is_float_dtype(series):
        numbers = series.astype("float64").fillna(np.nan)
        finite = np.isfinite(numbers)
        whole = finite & (numbers == np.floor(numbers.where(finite, 0)))
        fits = whole_int64(numbers.fillna(0))
        above, below = whole & ~fits & (numbers > 0), whole & ~fits & (numbers < 0)
        bad = series.notna() & ~whole
        return _Seconds(series.where(fits).astype("Int64"), bad, none, above, below)
    if series.dtype == object:
        series = _whole_numbers(series)
    text = to_text(series, timezone).str.strip()
    # Digits, or digits with a fraction of zeros: a DECIMAL's text (1796145652.00) is the
    # whole number the DECIMAL is (one rule whatever holds the number; LINE's reference types
    # event_timestamp a long, and 1796145652.00 is one); 1796145652.50 is not.
    is_digits = text.str.fullmatch(WHOLE_TEXT).fillna(False).astype(bool)
    digits = text.where(~is_digits, text.str.replace(ZERO_FRACTION, "", regex=True))
    numbers, above, below = _whole_texts(digits, is_digits)
    candidates = text.where(~is_digits & text.notna() & ~posix_offsets(text))
    stamps, repeated = _timestamp_strings(candidates, timezone)
    stamp_secs = _seconds(stamps - pd.Timestamp("1970-01-01", tz="UTC"))
    out = numbers.fillna(stamp_secs)
    bad = text.notna() & (text != "") & out.isna() & ~repeated & ~above & ~below
    return _Seconds(out, bad, repeated, above, below)


def _whole_texts(text: pd.Series, whole: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """The ``whole`` cells of ``text`` (digits, a sign) as exact integers: (Int64 values, past
    int64's maximum, below its minimum). Up to 18 digits pandas reads them; longer ones (a
    UBIGINT's or DECIMAL(38)'s digits) Python's ``int``, exactly, each on its own."""
    none = pd.Series(False, index=text.index)
    long = whole & (text.str.len() > 18).fillna(False).astype(bool)
    numbers = pd.to_numeric(text.where(whole & ~long), errors="coerce").astype("Int64")
    if not long.any():
        return numbers, none, none
    above, below = none.copy(), none.copy()
    for index, digits in text[long].items():
        value = int(digits)
        if value > INT64_MAX:
            above[index] = True
        elif value < INT64_MIN:
            below[index] = True
        else:
            numbers[index] = value
    return numbers, above, below


def _whole_numbers(series: pd.Series) -> pd.Series:
    """An object column with its whole number cells as Python ints: a ``Decimal`` (a
    DECIMAL(12,2) holding ``1796145652.00``), a Python or numpy float, a numpy integer, so a
    whole number is one whatever its scale, holder or size (as a whole DOUBLE is); a
    fractional one (``.50``) is left as it is and stays a ``type`` reject."""
    cells = series.to_numpy()
    whole = np.fromiter((_whole_cell(v) for v in cells), bool, len(cells))
    if not whole.any():
        return series
    cells = cells.copy()
    cells[whole] = [int(v) for v in cells[whole]]
    return pd.Series(cells, index=series.index, dtype=object)


def _whole_cell(value: object) -> bool:
    """``value`` is a finite whole number held as a ``Decimal``, a float or a numpy integer."""
    if isinstance(value, decimal.Decimal):
        return value.is_finite() and value == value.to_integral_value()
    if isinstance(value, (float, np.floating)):
        return bool(np.isfinite(value)) and float(value) == np.floor(float(value))
    return isinstance(value, np.integer)


# "GMT+9", "UTC-05:00", "UT+3" at the end: dateutil reads them with the POSIX TZ sign (GMT+9 is
# 9 hours *west* of UTC), people mostly write them meaning east. Refused as ambiguous.
_POSIX_OFFSET = r"(?i)(?:GMT|UTC?)\s*[+-]\s*[0-9]{1,2}(?::?[0-9]{2})?$"
POSIX_OFFSET_MESSAGE = (
    "ends in a GMT+h / UTC+h offset, which is ambiguous (POSIX and dateutil read GMT+9 as 9 hours "
    "west of UTC, people mostly mean east): write the offset alone, as +09:00"
)


def posix_offsets(text: pd.Series) -> pd.Series:
    """Boolean mask of strings ending in a ``GMT±h``/``UTC±h`` offset (refused, see above)."""
    return text.str.contains(_POSIX_OFFSET).fillna(False).astype(bool)


# A time of day followed by a UTC offset or Z, at the end of an ISO 8601 string (a date alone,
# 2026-11-30, ends in digits after a "-" too, but has no time before them).
_ISO_OFFSET = r"[Tt ][0-9][0-9:.,]*\s*(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)$"


def _timestamp_strings(candidates: pd.Series, timezone: str) -> tuple[pd.Series, pd.Series]:
    """Timestamp strings as UTC instants; those without an offset are wall time in ``timezone``.

    ISO 8601 in any of its forms with pandas' fast parser, each value on its own (inferring one
    format from the first value would refuse later values written another way); what is left is
    parsed value by value as dateutil reads it. Unparseable values are NaT, and so are wall times
    the zone's clocks show twice, which the second value marks (:func:`repeated_message`).
    """
    stamps = pd.to_datetime(candidates, errors="coerce", utc=True, format="ISO8601")
    rest = candidates.notna() & (candidates != "") & stamps.isna()
    naive = stamps.notna() & ~candidates.str.contains(_ISO_OFFSET).fillna(False).astype(bool)
    if rest.any():
        stamps[rest] = pd.to_datetime(candidates[rest], errors="coerce", utc=True, format="mixed")
        for index, value in candidates[rest & stamps.notna()].items():
            naive[index] = pd.to_datetime(value, format="mixed").tzinfo is None
    repeated = pd.Series(False, index=candidates.index)
    if naive.any():
        # Parsed as if UTC: their UTC wall time is the written wall time.
        wall = stamps[naive].dt.tz_localize(None)
        times = local_times(wall, timezone)
        stamps[naive] = times.utc.dt.tz_localize("UTC")
        if times.repeated is not None:
            repeated[naive] = times.repeated
            stamps[repeated] = pd.NaT
    return stamps, repeated


def _arrow_text(
    series: pd.Series,
    timezone: str = "UTC",
    as_date: bool = False,
    times: LocalTimes | None = None,
) -> pa.Array:
    """:func:`to_text` as one Arrow array (free for the Arrow strings an engine returns).

    ``as_date``: a timestamp column bound for a date field keeps its date where the time is
    local midnight (see :func:`~line_exports.values.iso_dates_or_timestamps`). ``times``: a
    timestamp ``series`` already converted to ``timezone`` (written from those, not again).
    """
    dtype = series.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        values = series.array.__arrow_array__()  # what to_text's astype("string") would hold
    elif times is not None:
        values = (iso_dates(times) if as_date else iso_text(times)).array.__arrow_array__()
    elif as_date and pd.api.types.is_datetime64_any_dtype(series):
        values = iso_dates_or_timestamps(series, timezone).array.__arrow_array__()
    elif as_date and series.dtype == object:  # each datetime on its own, whatever its neighbours
        values = object_dates_or_timestamps(series, timezone).array.__arrow_array__()
    else:
        values = to_text(series, timezone).array.__arrow_array__()
    if isinstance(values, pa.ChunkedArray):
        return values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    return values


def _string_series(text: pa.Array) -> pd.Series:
    return pd.Series(pd.arrays.ArrowStringArray(text))


Failure = tuple[str, str, np.ndarray]  # (rule, message, mask of failing rows)


@dataclass
class _Checked:
    """One column after its checks: normalized values, which cells are present, what failed.

    ``to_hash`` marks the cells still to be hashed. ``hashing`` hashes those that pass the
    column's own rules, in the background (:func:`_hash_soon`); a row another column rejects
    may be hashed too, but only kept rows' digests are ever used.
    """

    values: pa.Array | pd.api.extensions.ExtensionArray
    present: np.ndarray
    failures: list[Failure]
    to_hash: np.ndarray | None = None
    hashing: Future[pa.Array] | None = None  # the column with its marked cells hashed


UNSENDABLE = {
    "binary": "is binary data (a BLOB), not text: cast it to a text type in the query",
    "infinite": "is not a finite number (Infinity): no field takes one",
    "infinite_time": "is an infinite DATE or TIMESTAMP ('infinity'/'-infinity'): no field takes one",
    "nat_time": "is a TIMESTAMP one nanosecond before the earliest pandas holds "
    "(1677-09-21 00:12:43.145224193; int64's minimum is its NaT, a missing value): no field "
    "takes it as held",
    "fine_time": "is a date-time with digits finer than a nanosecond (a numpy datetime64 in "
    "ps, fs or as), which no warehouse type nor pandas holds, so it cannot travel exactly: "
    "round it to nanoseconds in the asset",
    "time_range": "is a {detail}: no field takes a date outside years 0001-9999 (after 9999 or "
    "BC; ISO 8601 dates have four-digit years)",
    "not_unicode": "is not Unicode text: it holds a lone UTF-16 surrogate (a \\ud800-\\udfff "
    "code point without its pair), which UTF-8 cannot encode, so no request can carry it",
    "compound": "is a range, multirange or composite (row) value, which no field takes: pick "
    "its parts in the query (lower(r), upper(r), (c).field; a pandas Interval's .left, .right)",
    "interval": "is an INTERVAL, which no field takes: cast it to a number or text in the query",
    "complex": "is a complex number, which no warehouse type holds nor JSON writes: no field "
    "takes one",
    "fraction": "is a fraction (a Python Fraction such as 1/3), which no warehouse type holds "
    "exactly: write it as a DECIMAL or a float in the asset",
    "period": "is a pandas Period longer or shorter than a day (a span of time such as a month, "
    "not a date nor a timestamp), which no field takes: write its start_time or a date",
    "nested": "is a LIST, STRUCT, MAP or UNION, which this field cannot hold: pick or join its items in the query",
}
"""Messages of the ``type`` rule for :func:`~line_exports.values.unsendable` cells."""


def _unsendable_failures(raw: pd.Series) -> tuple[list[Failure], np.ndarray | None]:
    """``type`` failures for cells no request can carry, and their mask (None if there are none)."""
    found = unsendable(raw)
    if not found:
        return [], None
    failures: list[Failure] = []
    for key, mask in found.items():  # "kind" or "kind: detail" (values.unsendable)
        kind, _, detail = key.partition(": ")
        failures.append(("type", UNSENDABLE[kind].format(detail=detail), mask))
    return failures, np.logical_or.reduce(list(found.values()))


def _times_in_zone(
    raw: pd.Series, timezone: str, as_date: bool = False
) -> tuple[list[Failure], np.ndarray | None, LocalTimes | None]:
    """A timestamp column's one conversion to the export's ``timezone``
    (:func:`~line_exports.values.local_times`), which its text or UNIX seconds are then made
    of, and the ``time_range`` failures of the values it cannot write, one per year, with their
    mask (None when there are none); ``([], None, None)`` for a column of another type.

    Engines' out-of-range values are marked earlier (:func:`~line_exports.values.arrow_to_pandas`);
    these are in range until localized, and only on the calendar's first or last day:

    * a TIMESTAMPTZ instant whose year as written in ``timezone`` is not 0001-9999 (``9999-12-31
      20:00+00`` is year 10000 in Asia/Tokyo);
    * a naive TIMESTAMP (wall time in ``timezone``) whose instant is not in 0001-9999 UTC
      (``9999-12-31 23:59:59`` in America/New_York is 10000-01-01 04:59:59 UTC).

    No timezone arithmetic (Python's ``datetime``, pandas: an ``OverflowError`` that failed the
    whole run) holds them, so they are found before the conversion, value by value
    (:func:`_years_at_the_ends`). Unless the column is bound for a date field (``as_date``),
    a naive time the zone's clocks show twice is refused too (:func:`repeated_message`). The
    refused cells are NaT in the times returned.
    """
    series = plain_dtypes(raw)
    if not pd.api.types.is_datetime64_any_dtype(series):
        return [], None, None
    found: list[Failure] = []
    refused: np.ndarray | None = None
    years = _years_at_the_ends(series, timezone)
    if years is not None:
        outside = ((years > 9999) | (years < 1)).to_numpy(dtype=bool, na_value=False)
        naive = not isinstance(series.dtype, pd.DatetimeTZDtype)
        # A naive value held in year 10000 (datetime64[s]) is refused for its own year, though
        # its instant may be in 9999 (10000-01-01 00:30 in Asia/Tokyo): say which one.
        held = (series.dt.year.between(1, 9999) if naive else series.notna()).to_numpy(
            dtype=bool, na_value=False
        )
        for year in sorted(set(years[outside].astype(int))):
            text = out_of_range(False, int(year)).detail
            mask = outside & (years == year).to_numpy(dtype=bool, na_value=False)
            if naive and (mask & held).any():
                # "TIMESTAMP in year 10000" -> "TIMESTAMP whose instant is in year 10000 UTC"
                instant = text.replace(" in year ", " whose instant is in year ", 1) + (
                    " UTC (its wall time read in the export's timezone)"
                )
                message = UNSENDABLE["time_range"].format(detail=instant)
                found.append(("type", message, mask & held))
                mask = mask & ~held
            if mask.any():
                found.append(("type", UNSENDABLE["time_range"].format(detail=text), mask))
        if outside.any():
            refused, series = outside, series.where(~outside)
    times = local_times(series, timezone)
    if not as_date and times.repeated is not None:  # a date field needs no instant
        found.append(("type", repeated_message(timezone), times.repeated))
        refused = times.repeated if refused is None else refused | times.repeated
        times = times.without(times.repeated)
    return found, refused, times


def repeated_message(timezone: str) -> str:
    """The ``type`` reason of a naive time ``timezone``'s clocks show twice
    (:func:`~line_exports.values.localized`)."""
    return (
        f"is a time {timezone}'s clocks show twice (they are set back, as when DST ends), so it "
        "names no one instant (PostgreSQL and DuckDB read the second, Python and Trino west of "
        "UTC the first): give it its offset in the query (a TIMESTAMPTZ, or AT TIME ZONE)"
    )


def _object_times_in_zone(
    raw: pd.Series, timezone: str, as_date: bool
) -> tuple[list[Failure], np.ndarray | None]:
    """:func:`_times_in_zone`'s failures for the ``datetime`` cells of an object column that
    holds other values too (dates, text, numbers, or naive and aware datetimes together: an
    upstream asset's Python objects), which are written cell by cell: a year-9999 cell there
    failed the run, a year-1 one was written in year 0."""
    cells = raw.to_numpy()
    found = np.fromiter((isinstance(v, dt.datetime) for v in cells), bool, len(cells))
    if not found.any():
        return [], None
    failures: list[Failure] = []
    outside = np.zeros(len(cells), dtype=bool)
    for aware in (False, True):
        group = found & np.fromiter(
            (isinstance(v, dt.datetime) and (v.tzinfo is not None) == aware for v in cells),
            bool,
            len(cells),
        )
        if not group.any():
            continue
        # Years and DST need no nanosecond: read at microseconds, so a pd.Timestamp with them
        # next to a year nanoseconds cannot hold (datetime(9999, 12, 31)) is checked too.
        times = plain_times(raw[group], exact=False)
        crossed, out = [], None
        if times.dtype == object:  # an aware value whose instant is past 9999 or BC
            crossed, out = _unsendable_failures(times)
            if out is not None:
                times = plain_times(times.where(~out), exact=False)
        more, also, _ = _times_in_zone(times, timezone, as_date)
        crossed += more
        if also is not None:
            out = also if out is None else out | also
        if out is None:
            continue
        where = np.flatnonzero(group)
        for rule, message, mask in crossed:
            full = np.zeros(len(cells), dtype=bool)
            full[where[mask]] = True
            failures.append((rule, message, full))
        outside[where[out]] = True
    return (failures, outside) if outside.any() else ([], None)


_FIRST_DAY_ENDS, _LAST_DAY = np.datetime64("0001-01-02"), np.datetime64("9999-12-31")


def _years_at_the_ends(series: pd.Series, timezone: str) -> pd.Series | None:
    """The years values of ``series`` on 0001-01-01 or 9999-12-31 (UTC for instants, as held
    for naive wall times) have across the export's ``timezone``, the only days a UTC offset
    (under a day) can move out of 0001-9999: a naive wall time's instant's UTC year, an
    instant's year as written in ``timezone`` (its UTC year where the zone's offset is a local
    mean time, written in UTC: :class:`~line_exports.values.LocalTimes`). A value held outside
    0001-9999 (a ``datetime64[us, tz]`` column's ``datetime.max`` with a ``tzinfo``: its instant
    is in year 10000) has its own year, as DuckDB's TIMESTAMPTZ there is refused. numpy's
    arithmetic, value by value (Python's ``datetime`` has no year 0 or 10000, which failed the
    run); the offset is the zone's at that wall time (no zone changes offset on those days).
    None when no value is on them; other values are NA."""
    aware = isinstance(series.dtype, pd.DatetimeTZDtype)
    held = (series.dt.tz_convert(None) if aware else series).to_numpy()
    ends = (held >= _LAST_DAY) | (held < _FIRST_DAY_ENDS)  # NaT compares False
    if not ends.any():
        return None
    zone = ZoneInfo(timezone)
    years = pd.Series(pd.NA, index=series.index, dtype="Int64")
    for i in np.flatnonzero(ends):
        value = held[i].astype("datetime64[us]")
        clamped = min(max(value, _FIRST), _LAST)
        offset = zone.utcoffset(pd.Timestamp(clamped).to_pydatetime()) or dt.timedelta(0)
        if value != clamped or (aware and offset.total_seconds() % 60):  # as held / in UTC
            years.iat[i] = _year(value)
        else:
            shift = np.timedelta64(int(offset.total_seconds()), "s")
            years.iat[i] = _year(value + shift if aware else value - shift)
    return years


_FIRST = np.datetime64("0001-01-01T00:00:00.000000", "us")
_LAST = np.datetime64("9999-12-31T23:59:59.999999", "us")


def _year(value: np.datetime64) -> int:
    """The year of a ``datetime64`` (astronomical: 0 is 1 BC), past 9999 too."""
    return int(value.astype("datetime64[Y]").astype("int64")) + 1970


def _check_numbers(
    col: Column, raw: pd.Series, required: bool, timezone: str, times: LocalTimes | None = None
) -> _Checked:
    """A whole-number column (``integer``, ``unix_seconds``): its values as Int64 and failures.
    A whole number past int64's maximum is :attr:`Column.too_large`'s reject; one below its
    minimum the ``min_value`` reject where the column has a minimum, else that one too."""
    too_small: np.ndarray | None = None
    ambiguous: np.ndarray | None = None
    repeated: np.ndarray | None = None
    above = below = np.zeros(len(raw), dtype=bool)
    if raw.dtype == np.int64:  # to_unix_seconds of int64, without pandas round trips
        numbers = raw.to_numpy()
        values = pd.array(numbers, dtype="Int64")
        present = np.ones(len(numbers), dtype=bool)
        bad_type = np.zeros(len(numbers), dtype=bool)
        if col.min_value is not None:
            too_small = numbers < col.min_value
    else:
        found = _unix_seconds(raw, timezone, times)
        series = found.values
        values = series.array
        present = series.notna().to_numpy(dtype=bool)
        bad_type = found.unparseable.to_numpy(dtype=bool, na_value=False)
        repeated = found.repeated.to_numpy(dtype=bool, na_value=False)
        above = found.above.to_numpy(dtype=bool, na_value=False)
        below = found.below.to_numpy(dtype=bool, na_value=False)
        if bad_type.any() and not pd.api.types.is_numeric_dtype(raw.dtype):
            text = raw.where(bad_type).astype("string").str.strip()
            ambiguous = posix_offsets(text).to_numpy(dtype=bool, na_value=False)
            bad_type &= ~ambiguous
        if col.min_value is not None:  # below int64 is below any minimum: say that one
            too_small = (series < col.min_value).to_numpy(dtype=bool, na_value=False) | below
    outside = above | below  # whole numbers, present: neither missing nor malformed
    failures: list[Failure] = [("type", "is not a whole number or timestamp", bad_type)]
    if ambiguous is not None:
        failures.append(("type", POSIX_OFFSET_MESSAGE, ambiguous))
        bad_type = bad_type | ambiguous
    if repeated is not None and repeated.any():
        failures.append(("type", repeated_message(timezone), repeated))
        bad_type = bad_type | repeated
    if outside.any():
        rule, message = col.too_large
        failures.append((rule, message, above if col.min_value is not None else outside))
    if too_small is not None:
        failures.append(("min_value", f"must be at least {col.min_value}", too_small))
    if required:
        failures.append(("required", "is required", ~present & ~bad_type & ~outside))
    return _Checked(values, present, failures)


def _check_column(
    col: Column,
    raw: pd.Series,
    required: bool,
    timezone: str = "UTC",
    settings: Mapping[str, object] | None = None,
) -> _Checked:
    """Normalize one column and list its failing masks, in the rules' fixed order."""
    raw = dictionary_decoded(raw)  # a categorical column: its values' own type
    failures, bad = _unsendable_failures(raw)
    # Cells refused for their type are not also missing or malformed; date-times left in an
    # object column (those cells taken out, or an upstream asset's Python datetimes) are a
    # datetime column again, checked and written as an engine's.
    held = raw.where(~bad) if bad is not None else raw
    raw = plain_times(held)
    if raw is not held and raw.dtype == object:  # what it could not convert: past 9999 or BC
        late, marked = _unsendable_failures(raw)
        if marked is not None:
            failures += late
            bad = marked if bad is None else bad | marked
            raw = plain_times(raw.where(~marked))
    as_date = col.format == "iso_date"
    crossed, outside, times = _times_in_zone(raw, timezone, as_date)
    if outside is None and raw.dtype == object:
        crossed, outside = _object_times_in_zone(raw, timezone, as_date)
    if outside is not None:
        failures += crossed
        bad = outside if bad is None else bad | outside
        raw = raw.where(~outside)
    if col.kind in ("unix_seconds", "integer"):
        checked = _check_numbers(col, raw, required, timezone, times)
        if bad is not None:
            checked.failures = [
                (rule, message, mask & ~bad if rule == "required" else mask)
                for rule, message, mask in checked.failures
            ] + failures
        return checked
    text = normalize(_arrow_text(raw, timezone, as_date, times), col.steps)
    sizes = np.diff(value_offsets(text))  # bytes: >= characters
    present = sizes > 0
    if text.null_count:
        present &= text.is_valid().to_numpy(zero_copy_only=False)
    if col.blank_is_missing and present.any():
        present &= ~blank(text)
    if text.null_count + int(np.count_nonzero(present)) != len(text):  # empty strings: missing
        text = pc.if_else(pa.array(present), text, pa.scalar(None, text.type))
    if required:
        failures.append(("required", "is required", ~present if bad is None else ~present & ~bad))
    if col.kind == "boolean":
        text = pc.utf8_lower(text)
        is_bool = bools(pc.is_in(text, value_set=pa.array(["true", "false"], text.type)))
        failures.append(("type", "is not true or false", present & ~is_bool))
    checked = present
    if col.hash_sha256:
        # Already a digest: 64 (or 128) lowercase hex characters, so 64 (or 128) bytes.
        digest_size = (sizes == 64) | ((sizes == 128) if col.accept_sha512 else False)
        if digest_size.any():
            hashed = compile_matcher(SHA256_PATTERN)(text)
            if col.accept_sha512:
                hashed |= compile_matcher(SHA512_PATTERN)(text)
            checked = present & ~hashed
    if col.max_length is not None:
        too_long = np.zeros(len(text), dtype=bool)
        if sizes.size and sizes.max() > col.max_length:
            too_long = pc.fill_null(pc.utf8_length(text), 0).to_numpy() > col.max_length
        failures.append(
            ("max_length", f"is longer than {col.max_length} characters", checked & too_long)
        )
    if col.min_length is not None:
        too_short = pc.fill_null(pc.utf8_length(text), 0).to_numpy() < col.min_length
        failures.append(
            ("min_length", f"is shorter than {col.min_length} characters", checked & too_short)
        )
    if col.allowed is not None:
        allowed = bools(pc.is_in(text, value_set=pa.array(col.allowed, text.type)))
        failures.append(("allowed", f"must be one of {', '.join(col.allowed)}", checked & ~allowed))
    if col.pattern is not None:
        ok = compile_matcher(col.pattern)(text)
        failures.append(
            ("pattern", col.pattern_message or f"must match {col.pattern}", checked & ~ok)
        )
    if col.format in ("phone", "mobile"):
        text, phone_failures = _phones(col, text, checked, settings)
        failures += phone_failures
    elif col.format is not None:
        pattern, message = FORMATS[col.format]
        ok = compile_matcher(pattern)(text)
        if col.format == "iso_date" and ok.any():
            dates = _string_series(text).where(ok)
            ok &= pd.to_datetime(dates, format="%Y-%m-%d", errors="coerce").notna().to_numpy()
        failures.append((col.format, message, checked & ~ok))
    return _Checked(text, present, failures, checked if col.hash_sha256 else None)


def _phones(
    col: Column, text: pa.Array, checked: np.ndarray, settings: Mapping[str, object] | None
) -> tuple[pa.Array, list[Failure]]:
    """The column with its phone numbers in E.164, and the phone rules' failures."""
    region = check_region(str((settings or {}).get(REGION_SETTING) or "") or None)
    mobile = col.format == "mobile"
    already = compile_matcher(E164_PATTERN)(text) & checked
    text, ok, refused = e164_column(text, region, checked, already, mobile)
    kind = "mobile number" if mobile else "phone number"
    where = f"a valid local number of {region} (default_region)" if region else None
    message = (
        f"is not a {kind} in E.164 form (+ and country code) nor {where}"
        if where
        else f"is not a {kind} in E.164 form (+ and country code); set default_region to read local numbers"
    )
    extension = refused.get(EXTENSION, np.zeros(len(text), dtype=bool))
    not_mobile = refused.get(NOT_MOBILE, np.zeros(len(text), dtype=bool))
    return text, [
        (INVALID, message, checked & ~ok & ~extension & ~not_mobile),
        (
            EXTENSION,
            "has an extension, which E.164 cannot carry (send the number alone)",
            extension,
        ),
        (
            NOT_MOBILE,
            "is a valid number but not a mobile one (libphonenumber's type for it is a landline, "
            "toll-free, ...); this field takes mobile numbers",
            not_mobile,
        ),
    ]


_DUCKDB: tuple[int, duckdb.DuckDBPyConnection] | None = None
HASH_BATCH_ROWS = 4096  # rows per Arrow batch handed to DuckDB: its unit of parallel work
_DUCKDB_LOCK = threading.Lock()


def _duckdb_cursor() -> duckdb.DuckDBPyConnection:
    """A cursor of this process's in-memory DuckDB: connecting costs ~10 ms, a cursor ~3 us."""
    global _DUCKDB
    with _DUCKDB_LOCK:
        if _DUCKDB is None or _DUCKDB[0] != os.getpid():  # a forked child connects anew
            _DUCKDB = (os.getpid(), duckdb.connect())
        return _DUCKDB[1].cursor()


def set_duckdb_threads(threads: int) -> None:
    """Threads of this process's in-memory DuckDB, which hashes (default: one per core).

    ``bench/validation.py --threads 1`` uses it to measure on one core.
    """
    with closing(_duckdb_cursor()) as cursor:
        cursor.execute(f"SET threads = {int(threads)}")


_HASHER: tuple[int, ThreadPoolExecutor] | None = None
DISTINCT_SAMPLE = 4096  # values looked at to decide whether hashing distinct values pays


def _hash_soon(text: pa.Array, mark: np.ndarray) -> Future[pa.Array]:
    """:func:`sha256_column` in a background thread (DuckDB hashes without holding the GIL)."""
    global _HASHER
    with _DUCKDB_LOCK:
        if _HASHER is None or _HASHER[0] != os.getpid():  # a forked child has no threads
            _HASHER = (os.getpid(), ThreadPoolExecutor(2, thread_name_prefix="sha256"))
        hasher = _HASHER[1]
    return hasher.submit(sha256_column, text, mark)


def sha256_column(text: pa.Array, mark: np.ndarray) -> pa.Array:
    """``text`` with its marked cells replaced by their SHA-256 hex (lower case).

    Each distinct value is hashed once where values repeat (one user's events): the marked
    values are dictionary-encoded and only the dictionary is hashed, when a sample shows
    repeats; otherwise every value is hashed as it comes.
    """
    values = text if mark.all() else text.filter(pa.array(mark))
    sample = values.slice(0, DISTINCT_SAMPLE)
    if len(values) > DISTINCT_SAMPLE and pc.count_distinct(sample).as_py() < 0.8 * len(sample):
        encoded = pc.dictionary_encode(values)
        digests = _sha256_hex(encoded.dictionary).take(encoded.indices)
    else:
        digests = _sha256_hex(values)
    if mark.all():
        return digests
    return pc.replace_with_mask(text, pa.array(mark), digests)


def _sha256_hex(values: pa.Array) -> pa.Array:
    """SHA-256 hex of every value, by DuckDB (in C, no Python string per value, on all cores:
    it scans an Arrow table's batches in parallel and keeps their order)."""
    table = pa.table({"v": values})
    table = pa.Table.from_batches(table.to_batches(max_chunksize=HASH_BATCH_ROWS), table.schema)
    with closing(_duckdb_cursor()) as cursor:
        result = cursor.from_arrow(table).project("sha256(v)").to_arrow_table()
    return result.column(0).combine_chunks().cast(values.type)


def check_columns(
    frame_columns: Iterable[str], ruleset: RuleSet, settings: Mapping[str, object]
) -> None:
    """Fail before reading rows when a required column cannot be in the result at all."""
    names = set(frame_columns)
    for col in ruleset.columns:
        if col.is_required(settings) and not ({col.name, *col.aliases} & names):
            why = f"{col.required_by} needs" if col.required_by else "is required"
            if col.required_if and not col.required:
                why = "is required when " + ", ".join(
                    f"{k}={getattr(settings.get(k), 'value', settings.get(k))}"
                    for k in col.required_if
                )
            raise SchemaError(f"the query result has no column '{col.name}', which {why}")


def validate(
    frame: pd.DataFrame,
    ruleset: RuleSet,
    settings: Mapping[str, object] | None = None,
    row_offset: int = 0,
    timezone: str = "UTC",
) -> Validated:
    """Check every rule over whole columns; return normalized valid rows and a rejects table.

    Row numbers count from 1 over the whole export (``row_offset`` is the rows before this
    chunk), so a reject names the same row however the input was chunked. ``timezone`` is the
    export's: timestamps are written with its offset, naive ones are read as its wall time.
    """
    settings = settings or {}
    check_columns(frame.columns, ruleset, settings)
    n = len(frame)
    infinity = frame.attrs.get(INFINITY_TEXT, "inf")  # how the warehouse prints a float ±inf
    sql_times = frame.attrs.get(TIME_TEXT) == "sql"  # and a date-time: DuckDB's, PostgreSQL's
    frame = missing_nans(dense_columns(frame.reset_index(drop=True)))
    row_numbers = np.arange(row_offset + 1, row_offset + n + 1, dtype="int64")
    known: set[str] = set()
    columns: dict[str, _Checked] = {}
    rejects: list[tuple[np.ndarray, str, str, str, np.ndarray]] = []
    bad_rows = np.zeros(n, dtype=bool)

    def add(
        column: str,
        rule: str,
        message: str,
        m: np.ndarray,
        values: pd.Series | None,
        sensitive: bool,
    ) -> None:
        nonlocal bad_rows
        if not m.any():
            return
        bad_rows |= m
        if values is None:  # a row rule: no single value to show
            shown = np.full(int(np.count_nonzero(m)), "", dtype=object)
        else:
            shown = _shown(values, m, sensitive, infinity, sql_times)
        rejects.append((row_numbers[m], column, rule, f"{column} {message}", shown))

    sources: dict[str, str] = {}
    for col in ruleset.columns:
        source = next((c for c in (col.name, *col.aliases) if c in frame.columns), None)
        if source is not None:
            sources[col.name] = source
            known.add(source)
    # Hashed columns first: their hashing (DuckDB, off the GIL) starts on the cells that pass
    # their own rules and runs while the other columns are checked. Rejects are still listed
    # in the rule set's order, and only kept rows' digests are used (see _valid_rows).
    order = sorted(
        (col for col in ruleset.columns if col.name in sources), key=lambda c: not c.hash_sha256
    )
    for col in order:
        raw = frame[sources[col.name]]
        checked = _check_column(col, raw, required=col.is_required(settings), timezone=timezone,
                                settings=settings)  # fmt: skip
        if checked.to_hash is not None and isinstance(checked.values, pa.Array):
            mark = checked.to_hash.copy()
            for _, _, mask in checked.failures:
                mark &= ~mask
            if mark.any():
                checked.hashing = _hash_soon(checked.values, mark)
        columns[col.name] = checked
    for col in ruleset.columns:
        if col.name in columns:
            raw = frame[sources[col.name]]
            for rule, message, mask in columns[col.name].failures:
                add(col.name, rule, message, mask, raw, col.sensitive)
    for rule in ruleset.row_rules:
        complete = np.zeros(n, dtype=bool)
        for group in rule.groups:
            group_ok = np.ones(n, dtype=bool)
            for name in group:
                column = columns.get(name)
                group_ok &= _identifying(column) if column is not None else np.zeros(n, dtype=bool)
            complete |= group_ok
        add(
            rule.describe(),
            rule.name,
            rule.message(),
            ~complete,
            None,
            False,
        )
    valid = _valid_rows(frame, ruleset, columns, ~bad_rows, row_numbers, known)
    reject_frame = _rejects_frame(rejects) if rejects else empty_rejects()
    ignored = [c for c in frame.columns if c not in known]
    return Validated(valid=valid, rejects=reject_frame, rows_read=n, ignored_columns=ignored)


def _shown(
    values: pd.Series,
    rows: np.ndarray,
    sensitive: bool,
    infinity: str = "inf",
    sql_times: bool = False,
) -> np.ndarray:
    """The refused cells as the rejects table shows them: text (:func:`shown_value`: a longer
    one cut to 200 characters, saying so and how long it was), each
    value as its warehouse prints it (:func:`~line_exports.values.scalar_text`: a BLOB's bytes
    escaped as DuckDB prints them, an unsendable cell's own text, never a marker; a float
    ±Infinity spelled ``infinity``, :data:`~line_exports.values.INFINITY_TEXT`; a date-time as
    it is held, ``sql_times`` as DuckDB and PostgreSQL print it, else ISO 8601,
    :func:`~line_exports.values.time_text`, in a typed column or an object one alike). A
    ``sensitive`` column's values (emails, phones) are masked (:func:`mask_value`)."""
    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        refused = values.array.__arrow_array__().filter(pa.array(rows))
        text = pc.fill_null(refused, "").to_pylist()
    else:
        refused = plain_dtypes(values[rows])
        if pd.api.types.is_datetime64_any_dtype(refused):  # each as held, in its own zone
            shown = pd.Series(time_texts(refused, sql_times), dtype=object)
        elif refused.dtype == object:  # each cell as its warehouse prints it, every one
            present = refused.notna().to_numpy()
            shown = pd.Series(
                [
                    _cell_shown(v, infinity, sql_times) if p else ""
                    for v, p in zip(refused, present, strict=True)
                ],
                dtype=object,
            )
        elif pd.api.types.is_float_dtype(refused):
            numbers = refused.to_numpy(dtype="float64", na_value=np.nan)
            spelled = [infinity_text(v, infinity) for v in numbers[np.isinf(numbers)]]
            shown = to_text(refused)
            shown[np.isinf(numbers)] = spelled
        elif isinstance(refused.dtype, pd.StringDtype):  # its str cells, lone surrogates too
            shown = refused.astype(object)
        else:
            shown = to_text(refused)
        text = shown.fillna("").tolist()
    return np.array([shown_value(v, sensitive) for v in text], dtype=object)


def _cell_shown(value: object, infinity: str = "inf", sql_times: bool = False) -> str:
    """One refused cell of an object column as it is held: a date-time (an ``np.datetime64``
    too, read as :func:`~line_exports.values.numpy_times` reads it) as
    :func:`~line_exports.values.time_text` shows it (a naive one without offset, an aware one
    with its own, nanoseconds kept), anything else as
    :func:`~line_exports.values.scalar_text` writes it."""
    if isinstance(value, np.datetime64):
        value = numpy_times(pd.Series([value], dtype=object)).iloc[0]
    if isinstance(value, PrintedTime):  # a warehouse's text Python cannot hold
        return value.printed
    if isinstance(value, dt.datetime):
        try:
            return time_text(value, sql_times)
        except (ValueError, OverflowError, NotImplementedError):
            return held_text(value)
    return scalar_text(value, infinity=infinity)


def _identifying(checked: _Checked) -> np.ndarray:
    """The cells of a column that can name someone for a one-of rule (:class:`AnyOf`): present
    and, for text, not only white space. A blank company name names no company; free text is
    still sent as held (README "Values travel"), but it does not make a row identifiable."""
    values = checked.values
    if isinstance(values, pa.Array) and (
        pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
    ):
        return checked.present & ~blank(values)
    return checked.present


def _rejects_frame(parts: list[tuple[np.ndarray, str, str, str, np.ndarray]]) -> pd.DataFrame:
    """One rejects table from every rule's refused rows, built once."""
    counts = [len(rows) for rows, *_ in parts]

    def repeated(i: int) -> np.ndarray:
        return np.repeat(np.array([part[i] for part in parts], dtype=object), counts)

    return pd.DataFrame(
        {
            ROW_NUMBER: np.concatenate([part[0] for part in parts]),
            "column": repeated(1),
            "rule": repeated(2),
            "message": repeated(3),
            "value": np.concatenate([part[4] for part in parts]),
        }
    )


def _valid_rows(
    frame: pd.DataFrame,
    ruleset: RuleSet,
    columns: Mapping[str, _Checked],
    keep: np.ndarray,
    row_numbers: np.ndarray,
    known: set[str],
) -> pd.DataFrame:
    """The kept rows of every checked (and passed-through) column, hashed where marked.

    Columns go to the frame as arrays (a Series would be aligned on its index, per column).
    """
    every_row = bool(keep.all())
    kept_rows = None if every_row else pa.array(keep)  # Arrow filters by mask fastest
    out: dict[str, Any] = {ROW_NUMBER: row_numbers if every_row else row_numbers[keep]}
    for name, checked in columns.items():
        values = checked.values
        if name == ROW_NUMBER:
            raise ValueError(f"cannot insert {ROW_NUMBER}, already exists")
        if not isinstance(values, pa.Array):
            out[name] = values if every_row else values[keep]
            continue
        if checked.hashing is not None:
            values = checked.hashing.result()  # kept rows pass every rule: their cells are hashed
        out[name] = values if kept_rows is None else values.filter(kept_rows)
    for name, values in out.items():
        if isinstance(values, pa.Array):
            out[name] = pd.arrays.ArrowStringArray(values)
    for name in ruleset.keep:
        if name in frame.columns:
            known.add(name)
            kept = frame[name]
            out[name] = kept if every_row else kept[keep].reset_index(drop=True)
    size = len(keep) if every_row else int(np.count_nonzero(keep))
    return pd.DataFrame(out, index=pd.RangeIndex(size), copy=False)


def summarize_rejects(rejects: pd.DataFrame) -> dict[str, int]:
    """Rejected cells by 'column: rule', for metadata."""
    if not len(rejects):
        return {}
    counts = rejects.groupby(["column", "rule"]).size()
    return {f"{c}: {r}": int(v) for (c, r), v in counts.items()}


def reject(
    row_numbers: Iterable[int],
    column: str,
    rule: str,
    message: str,
    value: Callable[[int], str] | None = None,
) -> pd.DataFrame:
    """Rejects raised after validation (e.g. a recipient the API refused), same table shape."""
    rows = list(row_numbers)
    return pd.DataFrame(
        {
            ROW_NUMBER: pd.Series(rows, dtype="int64"),
            "column": column,
            "rule": rule,
            "message": message,
            "value": [value(r) if value else "" for r in rows],
        }
    )
