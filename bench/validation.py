"""Validation speed: rows/s through each destination's full rule set, vs a per-row pydantic model.

Ours: ``line_exports.rules.validate`` with ``DESTINATION.ruleset(settings)``, over chunks of
``--chunk`` rows (an export's default chunk size), on the sample tables' shape (about 1-4% of
rows carry deliberate mistakes). Baseline: a straightforward pydantic v2 model per row, built
from the same ``Column`` rules (same normalizers, patterns, formats, lengths, allowed values,
SHA-256 hashing, AnyOf row rules), run in the same process on the same rows. Both must agree on
how many rows are valid, or the comparison is void (printed as AGREE / DISAGREE).

    .venv/bin/python bench/validation.py --rows 200000 --baseline-rows 50000
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from pydantic import AliasChoices, BaseModel, BeforeValidator, Field, create_model, model_validator

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_header  # noqa: E402

from line_exports import sample_data  # noqa: E402
from line_exports.destinations import get_destination  # noqa: E402
from line_exports.rules import FORMATS, SHA256_PATTERN, SHA512_PATTERN, Column, RuleSet  # noqa: E402

PUSH_TEMPLATE = '{"type":"text","text":"Hi {{display_name}}, your coupon is {{coupon_code}}"}'


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
    ]  # fmt: skip


# -- the per-row baseline -----------------------------------------------------------------
class Invalid(ValueError):
    pass


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _check_for(col: Column, required: bool) -> Callable[[Any], Any]:
    """One column's rules as a per-value function (what a hand-written validator would do)."""
    pattern = re.compile(col.pattern) if col.pattern else None
    fmt = re.compile(FORMATS[col.format][0]) if col.format else None
    sha256 = re.compile(SHA256_PATTERN)
    sha512 = re.compile(SHA512_PATTERN)
    phone = re.compile(r"[\s\-().]")
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
            if re.fullmatch(r"-?[0-9]{1,19}", text):
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
        if _missing(value):
            if required:
                raise Invalid("is required")
            return None
        text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
        for step in col.normalize:
            if step == "trim":
                text = text.strip()
            elif step == "lowercase":
                text = text.lower()
            elif step == "uppercase":
                text = text.upper()
            elif step == "phone":
                text = phone.sub("", text)
        if text == "":
            if required:
                raise Invalid("is required")
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


def pydantic_model(ruleset: RuleSet, settings: dict[str, Any], present: set[str]) -> type[BaseModel]:
    """A pydantic v2 model of the rule set: one field per column, AnyOf as a model validator."""
    fields: dict[str, Any] = {}
    for col in ruleset.columns:
        names = [n for n in (col.name, *col.aliases) if n in present]
        if not names:
            continue
        required = col.is_required(settings)
        fields[col.name] = (
            Annotated[Any, BeforeValidator(_check_for(col, required))],
            Field(None, validation_alias=AliasChoices(*names)),
        )
    groups = [rule.groups for rule in ruleset.row_rules]

    def any_of(self: BaseModel) -> BaseModel:
        for rule_groups in groups:
            if not any(all(getattr(self, n, None) is not None for n in g) for g in rule_groups):
                raise ValueError("needs one identifier group")
        return self

    validators = {"any_of": model_validator(mode="after")(any_of)} if groups else {}
    return create_model("Row", __validators__=validators, **fields)  # type: ignore[call-overload]


def baseline(records: list[dict[str, Any]], model: type[BaseModel]) -> tuple[int, float]:
    """(valid rows, seconds): validate row by row, as a per-row pipeline would."""
    valid = 0
    started = time.perf_counter()
    for record in records:
        try:
            model.model_validate(record)
            valid += 1
        except ValueError:
            pass
    return valid, time.perf_counter() - started


# -- ours ---------------------------------------------------------------------------------
def ours(frame: pd.DataFrame, ruleset: RuleSet, settings: dict[str, Any], chunk: int) -> tuple[int, float]:
    from line_exports.rules import validate

    valid = 0
    started = time.perf_counter()
    for start in range(0, len(frame), chunk):
        result = validate(frame.iloc[start : start + chunk], ruleset, settings, row_offset=start)
        valid += len(result.valid)
    return valid, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows for our validator")
    parser.add_argument("--baseline-rows", type=int, default=50_000, help="rows for the baseline")
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N for ours")
    parser.add_argument("--only", help="run only cases whose label contains this")
    args = parser.parse_args(argv)
    print_header("validation speed")
    print(f"ours: rules.validate over {args.rows:,} rows in chunks of {args.chunk:,}, best of "
          f"{args.repeat}; baseline: per-row pydantic v2 model over {args.baseline_rows:,} rows")  # fmt: skip
    print(f"{'rule set':44} {'ours rows/s':>12} {'pydantic rows/s':>16} {'speed-up':>9}  valid rows")
    ok = True
    for label, dest_name, values, make in cases():
        if args.only and args.only not in label:
            continue
        dest = get_destination(dest_name)
        settings = dest.settings_class(**values)
        ruleset = dest.ruleset(settings)
        settings_map = settings.model_dump()
        frame = make(args.rows)
        best = math.inf
        valid_ours = 0
        for _ in range(args.repeat):
            valid_ours, seconds = ours(frame, ruleset, settings_map, args.chunk)
            best = min(best, seconds)
        ours_rate = len(frame) / best
        sub = frame.iloc[: args.baseline_rows]
        records = sub.astype(object).where(sub.notna(), None).to_dict("records")
        model = pydantic_model(ruleset, settings_map, set(frame.columns))
        valid_base, seconds_base = baseline(records, model)
        base_rate = len(records) / seconds_base
        # The two must agree on the same rows.
        valid_ours_sub, _ = ours(sub, ruleset, settings_map, args.chunk)
        agree = valid_ours_sub == valid_base
        ok &= agree
        speedup = ours_rate / base_rate
        print(f"{label:44} {ours_rate:12,.0f} {base_rate:16,.0f} {speedup:8.1f}x  "
              f"{valid_ours:,}/{len(frame):,}; on the baseline's rows "
              f"{'AGREE' if agree else 'DISAGREE'} ({valid_ours_sub:,} vs {valid_base:,})")  # fmt: skip
    print("goals: >= 10x the per-row baseline; >= 300,000 CAPI rows/s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
