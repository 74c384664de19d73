"""Validation speed: rows/s through each destination's full rule set, vs a per-row pydantic model.

Ours: ``line_exports.rules.validate`` with ``DESTINATION.ruleset(settings)``, over chunks of
``--chunk`` rows (an export's default chunk size), on the sample tables' shape (about 1-4% of
rows carry deliberate mistakes). Baseline: a straightforward pydantic v2 model per row, built
from the same ``Column`` rules and run in the same process on the same rows. By default it uses
pydantic's own (Rust) checks wherever they state a rule exactly: lengths, ``Literal`` for
allowed values, and patterns in the syntax Rust's regex reads as Python's ``re`` does; the
normalizers, SHA-256 hashing, timestamps, ``iso_date`` and other patterns are Python validators.
``--baseline validators`` makes every column one Python validator instead (slower). Both sides
are timed best of ``--repeat``, run alternately. Both must agree on which rows are valid and on
every value of them (normalized and hashed), or the comparison is void (printed as AGREE /
DISAGREE).

Two figures per side: wall time (rows/s) and CPU time per row (``time.process_time``, which
counts every thread of the process: DuckDB's hashing threads and the background hasher
included). Ours hashes on every core the process may use while the baseline is one thread, so
the wall ratio falls as soon as another process takes a core; the CPU ratio does not.
``--threads 1`` pins the whole process (both sides) to one core and DuckDB to one thread: the
single-core wall ratio. The load average is printed with each case.

    .venv/bin/python bench/validation.py --rows 200000 --baseline-rows 50000
    .venv/bin/python bench/validation.py --rows 200000 --baseline-rows 50000 --threads 1
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import string
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
import phonenumbers
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    Field,
    StringConstraints,
    create_model,
    model_validator,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_header  # noqa: E402

from line_exports import sample_data  # noqa: E402
from line_exports.arrow_text import re2_compatible  # noqa: E402
from line_exports.destinations import get_destination  # noqa: E402
from line_exports.rules import (  # noqa: E402
    FORMATS,
    ROW_NUMBER,
    SHA256_PATTERN,
    SHA512_PATTERN,
    Column,
    RuleSet,
    set_duckdb_threads,
)

PUSH_TEMPLATE = '{"type":"text","text":"Hi {{display_name}}, your coupon is {{coupon_code}}"}'


def _local_phones(make: Callable[[int], pd.DataFrame], column: str, share: float):
    """The table with ``share`` of its E.164 +81 numbers written as Japanese local numbers
    (090-1234-5678), which only libphonenumber with default_region JP turns back to E.164."""

    def table(n: int) -> pd.DataFrame:
        frame = make(n)
        step = max(1, round(1 / share))
        rows = frame.index[::step]
        serial = pd.Series(rows % 10_000_000, index=rows)
        frame.loc[rows, column] = (  # distinct numbers: each is parsed once
            "090-"
            + (1000 + serial // 10_000 % 9000).astype(str)
            + "-"
            + (serial % 10_000).astype(str).str.zfill(4)
        )
        return frame

    return table


def cases() -> list[tuple[str, str, dict[str, Any], Callable[[int], pd.DataFrame]]]:
    """(label, destination, settings, table generator)."""
    return [
        ("line_conversion events (17 cols, 2 hashed)", "line_conversion", {},
         sample_data.conversion_events),
        ("line_messaging audience", "line_messaging",
         {"target": "audience", "audience_name": "bench"}, sample_data.segment_users),
        ("line_messaging push (template cols)", "line_messaging",
         {"target": "push_message", "template_message": PUSH_TEMPLATE}, sample_data.line_recipients),
        ("maac members", "maac", {"data_object": "members", "import_key": "line_uid",
                                  "tags": "bench"}, sample_data.members),
        ("maac segment", "maac", {"data_object": "segments", "segment_name": "bench"},
         sample_data.segment_users),
        ("linkedin users (email hashed)", "linkedin",
         {"ad_account_id": "512345678", "segment_name": "b"}, sample_data.linkedin_contacts),
        ("linkedin companies", "linkedin", {"ad_account_id": "512345678", "segment_name": "b",
                                            "audience_type": "companies"}, sample_data.linkedin_companies),
        ("maac members by mobile, 30% local (JP)", "maac",
         {"data_object": "members", "import_key": "mobile", "tags": "bench", "default_region": "JP"},
         _local_phones(sample_data.members, "mobile", 0.3)),
        ("line_conversion, 30% local phones (JP)", "line_conversion", {"default_region": "JP"},
         _local_phones(sample_data.conversion_events, "phone", 0.3)),
    ]  # fmt: skip


# -- the per-row baseline -----------------------------------------------------------------
class Invalid(ValueError):
    pass


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


MOBILE_TYPES = {
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
}


def _phone_for(region: str | None, mobile: bool = False) -> Callable[[str | None], str | None]:
    """E.164 as the rules write it: libphonenumber per value, E.164-shaped ones too (they may
    carry a trunk 0: ``+886 0912...`` is ``+886912...``): valid, no extension, a mobile type
    where a mobile is wanted."""

    def phone(text: str | None) -> str | None:
        if text is None:
            return text
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            raise Invalid("phone") from None
        if not phonenumbers.is_valid_number(number) or number.extension:
            raise Invalid("phone")
        if mobile and phonenumbers.number_type(number) not in MOBILE_TYPES:
            raise Invalid("mobile_number")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

    return phone


def _check_for(col: Column, required: bool, region: str | None = None) -> Callable[[Any], Any]:
    """One column's rules as a per-value function (what a hand-written validator would do)."""
    pattern = re.compile(col.pattern) if col.pattern else None
    fmt = re.compile(FORMATS[col.format][0]) if col.format in FORMATS else None
    phone = (
        _phone_for(region, col.format == "mobile") if col.format in ("phone", "mobile") else None
    )
    sha256 = re.compile(SHA256_PATTERN)
    sha512 = re.compile(SHA512_PATTERN)
    prepare = _prepare_for(col, required)
    digits = re.compile(r"-?[0-9]{1,18}")  # as the rules: digit strings that fit in int64
    allowed = set(col.allowed) if col.allowed is not None else None

    def check_number(value: Any) -> Any:
        if _missing(value):
            if required:
                raise Invalid("is required")
            return None
        if isinstance(value, int | float):
            if value != int(value):
                raise Invalid("is not a whole number")
            number = int(value)
        else:
            text = str(value).strip()
            if digits.fullmatch(text):
                number = int(text)
            else:
                try:
                    number = int(pd.Timestamp(text).timestamp())
                except ValueError:
                    raise Invalid("is not a whole number or timestamp") from None
        if col.min_value is not None and number < col.min_value:
            raise Invalid(f"must be at least {col.min_value}")
        return number

    def check_text(value: Any) -> Any:
        text = prepare(value)
        if text is None:
            return None
        if col.kind == "boolean":
            text = text.lower()
            if text not in ("true", "false"):
                raise Invalid("is not true or false")
        hashed = bool(col.hash_sha256 and sha256.fullmatch(text)) or bool(
            col.hash_sha256 and col.accept_sha512 and sha512.fullmatch(text)
        )
        if hashed:
            return text
        if col.max_length is not None and len(text) > col.max_length:
            raise Invalid("too long")
        if col.min_length is not None and len(text) < col.min_length:
            raise Invalid("too short")
        if allowed is not None and text not in allowed:
            raise Invalid("not allowed")
        if pattern is not None and not pattern.fullmatch(text):
            raise Invalid("pattern")
        if phone is not None:
            text = phone(text)
        if fmt is not None:
            if not fmt.fullmatch(text):
                raise Invalid(col.format or "")
            if col.format == "iso_date":
                try:
                    datetime.strptime(text, "%Y-%m-%d")
                except ValueError:
                    raise Invalid("iso_date") from None
        if col.hash_sha256:
            text = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return text

    return check_number if col.kind in ("unix_seconds", "integer") else check_text


ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _prepare_for(col: Column, required: bool) -> Callable[[Any], str | None]:
    """A text column's normalizers and "empty is missing" (no pydantic type says either)."""
    phone = re.compile(r"[\s\-().]")

    def prepare(value: Any) -> str | None:
        if _missing(value):
            if required:
                raise Invalid("is required")
            return None
        text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
        for step in col.steps:
            if step == "trim":
                text = text.strip()
            elif step == "lowercase":
                text = text.lower()
            elif step == "ascii_lowercase":
                text = text.translate(ASCII_LOWER)
            elif step == "uppercase":
                text = text.upper()
            elif step == "phone":
                text = phone.sub("", text)
            elif step == "undefined_as_missing":
                text = "" if text == "undefined" else text
            else:
                raise ValueError(f"the baseline does not know normalize step {step!r}")
        if text == "":
            if required:
                raise Invalid("is required")
            return None
        return text

    return prepare


def _native_field(col: Column, required: bool, region: str | None = None) -> Any:
    """One column as pydantic types: its own checks where they state the rule exactly."""
    if col.kind != "string" or col.hash_sha256:
        # Timestamps, booleans and "hash unless already a digest" have no pydantic spelling.
        return Annotated[Any, BeforeValidator(_check_for(col, required, region))]
    constraints: dict[str, Any] = {}
    after: list[AfterValidator] = []
    if col.max_length is not None:
        constraints["max_length"] = col.max_length
    if col.min_length is not None:
        constraints["min_length"] = col.min_length
    if col.format in ("phone", "mobile"):
        phone = _phone_for(region, col.format == "mobile")
        after.append(AfterValidator(phone))
    for pattern in (col.pattern, FORMATS[col.format][0] if col.format in FORMATS else None):
        if pattern is None:
            continue
        if re2_compatible(pattern) and "pattern" not in constraints:
            constraints["pattern"] = f"^(?:{pattern})$"  # Rust's regex, as re would read it
            continue
        compiled = re.compile(pattern)

        def full_match(text: str | None, compiled: re.Pattern[str] = compiled) -> str | None:
            if text is not None and not compiled.fullmatch(text):
                raise Invalid("pattern")
            return text

        after.append(AfterValidator(full_match))
    if col.format == "iso_date":

        def real_date(text: str | None) -> str | None:
            if text is not None:
                datetime.strptime(text, "%Y-%m-%d")
            return text

        after.append(AfterValidator(real_date))
    base: Any = Annotated[str, StringConstraints(**constraints)]
    if col.allowed is not None:
        base = Annotated[Literal[col.allowed], StringConstraints(**constraints)]  # type: ignore[valid-type]
    metadata = (base | None, BeforeValidator(_prepare_for(col, required)), *after)
    return Annotated[metadata]  # type: ignore[valid-type]


def pydantic_model(
    ruleset: RuleSet, settings: dict[str, Any], present: set[str], native: bool = True
) -> type[BaseModel]:
    """A pydantic v2 model of the rule set: one field per column, AnyOf as a model validator."""
    fields: dict[str, Any] = {}
    for col in ruleset.columns:
        names = [n for n in (col.name, *col.aliases) if n in present]
        if not names:
            continue
        required = col.is_required(settings)
        region = settings.get("default_region")
        field_type = (
            _native_field(col, required, region)
            if native
            else Annotated[Any, BeforeValidator(_check_for(col, required, region))]
        )
        fields[col.name] = (field_type, Field(None, validation_alias=AliasChoices(*names)))
    groups = [rule.groups for rule in ruleset.row_rules]

    def any_of(self: BaseModel) -> BaseModel:
        for rule_groups in groups:
            if not any(all(getattr(self, n, None) is not None for n in g) for g in rule_groups):
                raise ValueError("needs one identifier group")
        return self

    validators = {"any_of": model_validator(mode="after")(any_of)} if groups else {}
    return create_model("Row", __validators__=validators, **fields)  # type: ignore[call-overload]


@dataclass(frozen=True)
class Took:
    """One timed run: wall seconds and CPU seconds of the whole process (every thread)."""

    wall: float
    cpu: float


class _Clock:
    """Started when made; ``took()`` is the time since."""

    def __init__(self) -> None:
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def took(self) -> Took:
        return Took(time.perf_counter() - self.wall, time.process_time() - self.cpu)


def baseline(records: list[dict[str, Any]], model: type[BaseModel]) -> tuple[list[int], Took]:
    """(positions of the valid rows, time): validate row by row, as a per-row pipeline would."""
    valid: list[int] = []
    clock = _Clock()
    for i, record in enumerate(records):
        try:
            model.model_validate(record)
            valid.append(i)
        except ValueError:
            pass
    return valid, clock.took()


# -- ours ---------------------------------------------------------------------------------
def ours(
    frame: pd.DataFrame, ruleset: RuleSet, settings: dict[str, Any], chunk: int
) -> tuple[list[pd.DataFrame], Took]:
    """(valid rows of each chunk, time)."""
    from line_exports.rules import validate

    valid = []
    clock = _Clock()
    for start in range(0, len(frame), chunk):
        result = validate(frame.iloc[start : start + chunk], ruleset, settings, row_offset=start)
        valid.append(result.valid)
    return valid, clock.took()


def pin(cores: int) -> list[int]:
    """Run this process (every thread it has and will have) on ``cores`` cores, and DuckDB
    with as many threads. Returns the cores (the last ones this process may use)."""
    chosen = sorted(os.sched_getaffinity(0))[-cores:]
    for thread in os.listdir("/proc/self/task"):  # threads inherit their creator's affinity
        os.sched_setaffinity(int(thread), chosen)
    set_duckdb_threads(cores)
    return chosen


def _plain(value: Any) -> Any:
    return None if value is None or value is pd.NA or value != value else value


def agreement(
    valid_frames: list[pd.DataFrame],
    records: list[dict[str, Any]],
    valid_rows: list[int],
    model: type[BaseModel],
) -> str:
    """Whether both sides keep the same rows with the same (normalized, hashed) values."""
    valid = pd.concat(valid_frames, ignore_index=True)
    if valid[ROW_NUMBER].tolist() != [i + 1 for i in valid_rows]:
        return f"DISAGREE on rows ({len(valid):,} vs {len(valid_rows):,} valid)"
    names = list(model.model_fields)
    ours_values = valid[names].astype(object).itertuples(index=False, name=None)
    for i, row in zip(valid_rows, ours_values, strict=True):
        dumped = model.model_validate(records[i]).model_dump()
        theirs = tuple(_plain(dumped[name]) for name in names)
        if tuple(_plain(v) for v in row) != theirs:
            return f"DISAGREE on the values of row {i + 1}"
    return f"AGREE ({len(valid_rows):,} rows, every value)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows for our validator")
    parser.add_argument("--baseline-rows", type=int, default=50_000, help="rows for the baseline")
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5, help="best of N, for both sides")
    parser.add_argument("--baseline", choices=("native", "validators"), default="native")
    parser.add_argument("--only", help="run only cases whose label contains this")
    parser.add_argument(
        "--threads",
        type=int,
        help="pin the process (both sides) to this many cores and DuckDB to as many threads",
    )
    args = parser.parse_args(argv)
    print_header("validation speed")
    if args.threads:
        print(f"pinned to core(s) {pin(args.threads)}, DuckDB threads {args.threads}")
    print(f"ours: rules.validate over {args.rows:,} rows in chunks of {args.chunk:,}; baseline: "
          f"per-row pydantic v2 model ({args.baseline}) over {args.baseline_rows:,} rows; "
          f"both best of {args.repeat}, wall and CPU (all threads) taken separately")  # fmt: skip
    print(f"{'rule set':44} {'ours rows/s':>12} {'pydantic rows/s':>16} {'speed-up':>9}  "
          f"{'ours CPU us/row':>15} {'pydantic CPU':>12} {'speed-up':>9}  {'load':>5}  "
          "valid rows")  # fmt: skip
    ok = True
    for label, dest_name, values, make in cases():
        if args.only and args.only not in label:
            continue
        dest = get_destination(dest_name)
        settings = dest.settings_class(**values)
        ruleset = dest.ruleset(settings)
        settings_map = settings.model_dump()
        frame = make(args.rows)
        sub = frame.iloc[: args.baseline_rows]
        records = sub.astype(object).where(sub.notna(), None).to_dict("records")
        native = args.baseline == "native"
        model = pydantic_model(ruleset, settings_map, set(frame.columns), native=native)
        best = best_base = Took(math.inf, math.inf)
        valid_ours: list[pd.DataFrame] = []
        valid_base: list[int] = []
        for _ in range(args.repeat):  # interleaved, so both sides see the same machine load
            valid_ours, took = ours(frame, ruleset, settings_map, args.chunk)
            best = Took(min(best.wall, took.wall), min(best.cpu, took.cpu))
            valid_base, took = baseline(records, model)
            best_base = Took(min(best_base.wall, took.wall), min(best_base.cpu, took.cpu))
        ours_rate = len(frame) / best.wall
        base_rate = len(records) / best_base.wall
        ours_cpu = best.cpu / len(frame) * 1e6  # microseconds per row
        base_cpu = best_base.cpu / len(records) * 1e6
        # The two must agree on the same rows: which are valid, and every value they keep.
        valid_sub, _ = ours(sub, ruleset, settings_map, args.chunk)
        verdict = agreement(valid_sub, records, valid_base, model)
        ok &= verdict.startswith("AGREE")
        speedup = ours_rate / base_rate
        kept = sum(len(v) for v in valid_ours)
        print(f"{label:44} {ours_rate:12,.0f} {base_rate:16,.0f} {speedup:8.1f}x  "
              f"{ours_cpu:15.3f} {base_cpu:12.2f} {base_cpu / ours_cpu:8.1f}x  "
              f"{os.getloadavg()[0]:5.2f}  "
              f"{kept:,}/{len(frame):,}; on the baseline's rows {verdict}")  # fmt: skip
    print("goals: >= 10x the per-row baseline; >= 300,000 CAPI rows/s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
