"""The rule engine: column rules as data, checked a whole column at a time.

A destination describes its columns once (a :class:`RuleSet` that reads like the reference's
column table). :func:`validate` turns a chunk of query rows into the valid, normalized rows and
a rejects table with one line per broken rule: row number, column, rule, message and value.
Nothing is dropped silently: every row is either valid or named in the rejects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

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
    ``lowercase``, ``uppercase``, ``phone``: strip separators for E.164); ``hash_sha256`` hashes
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
    normalize: tuple[str, ...] = ("trim",)
    hash_sha256: bool = False
    accept_sha512: bool = False
    sensitive: bool = False
    aliases: tuple[str, ...] = ()

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
    """Row rule: at least one of the groups must be complete (every column of it present)."""

    groups: tuple[tuple[str, ...], ...]
    name: str = "any_of"

    def describe(self) -> str:
        return " or ".join("+".join(g) for g in self.groups)


@dataclass(frozen=True)
class RuleSet:
    """A destination's columns and row rules; ``keep`` lists extra columns passed through."""

    columns: tuple[Column, ...]
    row_rules: tuple[AnyOf, ...] = ()
    keep: tuple[str, ...] = ()

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


def mask_value(value: str) -> str:
    """Keep enough of a personal value to find it, not enough to leak it."""
    if len(value) <= 4:
        return "*" * len(value)
    return value[:2] + "*" * (len(value) - 4) + value[-2:]


def sha256_hex(values: pd.Series) -> pd.Series:
    """SHA-256 hex of each string, computed by DuckDB over the Arrow column (no Python loop)."""
    hash_input = pa.table({"v": pa.Array.from_pandas(values.astype("string"), type=pa.string())})  # noqa: F841
    with closing(duckdb.connect()) as con:  # DuckDB reads hash_input by its name
        digests = con.sql("select sha256(v) from hash_input").to_arrow_table().column(0)
    return pd.Series(digests.to_pandas(), index=values.index, dtype="string")


def to_text(series: pd.Series) -> pd.Series:
    """A column as nullable strings, whatever the engine returned (ints, floats, dates, bytes)."""
    if pd.api.types.is_bool_dtype(series):
        return series.map({True: "true", False: "false"}).astype("string")
    if pd.api.types.is_integer_dtype(series):
        return series.astype("Int64").astype("string")
    if pd.api.types.is_float_dtype(series):
        # Whole numbers read back as floats (a NULL-able integer column) print as integers;
        # inf, NaN-like and out-of-int64 values stay text, for the rules to refuse.
        values = series.dropna()
        if len(values) == 0 or bool(_whole_int64(values).all()):
            return series.astype("Int64").astype("string")
        return series.astype("string")
    if pd.api.types.is_datetime64_any_dtype(series):
        as_text = series.dt.strftime("%Y-%m-%dT%H:%M:%S")
        is_midnight = (series.dt.normalize() == series).fillna(False)
        return as_text.where(~is_midnight, series.dt.strftime("%Y-%m-%d")).astype("string")
    if series.dtype == object:
        sample = series.dropna()
        if len(sample) and not all(isinstance(v, str) for v in sample.head(50)):
            series = series.map(_scalar_text, na_action="ignore")
    return series.astype("string")


INT64_LIMIT = 2.0**63


def _whole_int64(values: pd.Series) -> pd.Series:
    """Finite whole numbers that fit in int64."""
    finite = np.isfinite(values)
    return finite & (values.abs() < INT64_LIMIT) & (values == np.floor(values.where(finite, 0)))


def _seconds(delta: pd.Series) -> pd.Series:
    """Whole seconds of a timedelta column (sub-second parts dropped, never a failed cast)."""
    return np.floor(delta.dt.total_seconds()).astype("Int64")


def _scalar_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "isoformat"):
        text = value.isoformat()  # type: ignore[union-attr]
        return text[:10] if text.endswith("T00:00:00") else text
    return str(value)


def to_unix_seconds(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Ints, digit strings or timestamps as UNIX seconds; second value marks unparseable cells."""
    if pd.api.types.is_datetime64_any_dtype(series):
        epoch = pd.Timestamp("1970-01-01", tz="UTC" if series.dt.tz is not None else None)
        return _seconds(series - epoch), pd.Series(False, index=series.index)
    if pd.api.types.is_integer_dtype(series):
        return series.astype("Int64"), pd.Series(False, index=series.index)
    if pd.api.types.is_float_dtype(series):
        bad = series.notna() & ~_whole_int64(series.fillna(0))
        return series.where(~bad).astype("Int64"), bad
    text = to_text(series).str.strip()
    is_digits = text.str.fullmatch(r"-?[0-9]{1,18}").fillna(False).astype(bool)  # fits in int64
    numbers = pd.to_numeric(text.where(is_digits), errors="coerce").astype("Int64")
    stamps = pd.to_datetime(text.where(~is_digits & text.notna()), errors="coerce", utc=True)
    stamp_secs = _seconds(stamps - pd.Timestamp("1970-01-01", tz="UTC"))
    out = numbers.fillna(stamp_secs)
    bad = text.notna() & (text != "") & out.isna()
    return out, bad


def _apply_normalizers(text: pd.Series, steps: Iterable[str]) -> pd.Series:
    for step in steps:
        if step == "trim":
            text = text.str.strip()
        elif step == "lowercase":
            text = text.str.lower()
        elif step == "uppercase":
            text = text.str.upper()
        elif step == "phone":
            text = text.str.replace(r"[\s\-().]", "", regex=True)
        else:
            raise ValueError(f"unknown normalizer {step!r}")
    return text


Failure = tuple[str, str, pd.Series]  # (rule, message, mask of failing rows)


def _check_column(col: Column, raw: pd.Series, required: bool) -> tuple[pd.Series, list[Failure]]:
    """Normalize one column and list its failing masks; returns the normalized column."""
    failures: list[Failure] = []
    if col.kind in ("unix_seconds", "integer"):
        values, unparseable = to_unix_seconds(raw)
        missing = values.isna() & ~unparseable
        failures.append(("type", "is not a whole number or timestamp", unparseable))
        if col.min_value is not None:
            failures.append(
                (
                    "min_value",
                    f"must be at least {col.min_value}",
                    (values < col.min_value).fillna(False),
                )
            )
        if required:
            failures.append(("required", "is required", missing))
        return values, failures
    text = _apply_normalizers(to_text(raw), col.normalize)
    text = text.mask(text == "")
    present = text.notna()
    if required:
        failures.append(("required", "is required", ~present))
    if col.kind == "boolean":
        text = text.str.lower()
        failures.append(("type", "is not true or false", present & ~text.isin(["true", "false"])))
    hashed = pd.Series(False, index=text.index)
    if col.hash_sha256:
        hashed = text.str.fullmatch(SHA256_PATTERN).fillna(False).astype(bool)
        if col.accept_sha512:
            hashed |= text.str.fullmatch(SHA512_PATTERN).fillna(False).astype(bool)
    checked = present & ~hashed
    if col.max_length is not None:
        failures.append(
            (
                "max_length",
                f"is longer than {col.max_length} characters",
                checked & (text.str.len() > col.max_length),
            )
        )
    if col.min_length is not None:
        failures.append(
            (
                "min_length",
                f"is shorter than {col.min_length} characters",
                checked & (text.str.len() < col.min_length),
            )
        )
    if col.allowed is not None:
        failures.append(
            (
                "allowed",
                f"must be one of {', '.join(col.allowed)}",
                checked & ~text.isin(col.allowed),
            )
        )
    if col.pattern is not None:
        ok = text.str.fullmatch(col.pattern).fillna(False).astype(bool)
        failures.append(
            ("pattern", col.pattern_message or f"must match {col.pattern}", checked & ~ok)
        )
    if col.format is not None:
        pattern, message = FORMATS[col.format]
        ok = text.str.fullmatch(pattern).fillna(False).astype(bool)
        if col.format == "iso_date":
            ok &= pd.to_datetime(text.where(ok), format="%Y-%m-%d", errors="coerce").notna()
        failures.append((col.format, message, checked & ~ok))
    if col.hash_sha256:
        to_hash = checked.copy()
        if to_hash.any():
            text = text.copy()
            text[to_hash] = sha256_hex(text[to_hash])
    return text, failures


def check_columns(
    frame_columns: Iterable[str], ruleset: RuleSet, settings: Mapping[str, object]
) -> None:
    """Fail before reading rows when a required column cannot be in the result at all."""
    names = set(frame_columns)
    for col in ruleset.columns:
        if col.is_required(settings) and not ({col.name, *col.aliases} & names):
            why = "is required"
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
) -> Validated:
    """Check every rule over whole columns; return normalized valid rows and a rejects table.

    Row numbers count from 1 over the whole export (``row_offset`` is the rows before this
    chunk), so a reject names the same row however the input was chunked.
    """
    settings = settings or {}
    check_columns(frame.columns, ruleset, settings)
    n = len(frame)
    index = pd.RangeIndex(n)
    frame = frame.reset_index(drop=True)
    row_numbers = np.arange(row_offset + 1, row_offset + n + 1, dtype="int64")
    known: set[str] = set()
    out: dict[str, pd.Series] = {}
    rejects: list[pd.DataFrame] = []
    bad_rows = np.zeros(n, dtype=bool)

    def add(
        column: str, rule: str, message: str, mask: pd.Series, values: pd.Series, sensitive: bool
    ) -> None:
        nonlocal bad_rows
        m = mask.to_numpy(dtype=bool, na_value=False)
        if not m.any():
            return
        bad_rows |= m
        shown = to_text(values[m]).fillna("").str.slice(0, 200)
        if sensitive:
            shown = shown.map(mask_value)
        rejects.append(
            pd.DataFrame(
                {
                    ROW_NUMBER: row_numbers[m],
                    "column": column,
                    "rule": rule,
                    "message": f"{column} {message}",
                    "value": shown.to_numpy(dtype=object),
                }
            )
        )

    for col in ruleset.columns:
        source = next((c for c in (col.name, *col.aliases) if c in frame.columns), None)
        required = col.is_required(settings)
        if source is None:
            continue
        known.add(source)
        raw = frame[source]
        normalized, failures = _check_column(col, raw, required)
        for rule, message, mask in failures:
            add(col.name, rule, message, mask, raw, col.sensitive)
        out[col.name] = normalized
    for rule in ruleset.row_rules:
        complete = np.zeros(n, dtype=bool)
        for group in rule.groups:
            group_ok = np.ones(n, dtype=bool)
            for name in group:
                series = out.get(name)
                group_ok &= (
                    series.notna().to_numpy(dtype=bool, na_value=False)
                    if series is not None
                    else np.zeros(n, dtype=bool)
                )
            complete |= group_ok
        add(
            rule.describe(),
            rule.name,
            "needs at least one of: " + rule.describe(),
            pd.Series(~complete, index=index),
            pd.Series([""] * n, index=index, dtype="string"),
            False,
        )
    for name in ruleset.keep:
        if name in frame.columns:
            known.add(name)
            out[name] = frame[name]
    valid = pd.DataFrame(out, index=index)
    valid.insert(0, ROW_NUMBER, row_numbers)
    valid = valid[~bad_rows].reset_index(drop=True)
    reject_frame = pd.concat(rejects, ignore_index=True) if rejects else empty_rejects()
    ignored = [c for c in frame.columns if c not in known]
    return Validated(valid=valid, rejects=reject_frame, rows_read=n, ignored_columns=ignored)


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
