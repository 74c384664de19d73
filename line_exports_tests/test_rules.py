"""The rule engine: every rule kind, row numbering, normalizers, hashing and the rejects table."""

from __future__ import annotations

import pandas as pd
import pytest

from line_exports.rules import (
    ROW_NUMBER,
    AnyOf,
    Column,
    RuleSet,
    SchemaError,
    mask_value,
    to_text,
    to_unix_seconds,
    validate,
)

UID = "U" + "0123456789abcdef" * 2


def rejects_of(frame: pd.DataFrame, column: Column, **settings: object) -> list[tuple[int, str]]:
    result = validate(frame, RuleSet((column,)), settings)
    return sorted(
        zip(result.rejects[ROW_NUMBER].tolist(), result.rejects["rule"].tolist(), strict=True)
    )


def test_pattern_allowed_length_and_required() -> None:
    frame = pd.DataFrame({"v": [UID, "U123", None, "  " + UID + " "]})
    assert rejects_of(frame, Column("v", required=True, pattern=r"U[0-9a-f]{32}")) == [
        (2, "pattern"),
        (3, "required"),
    ]
    frame = pd.DataFrame({"g": ["male", "Female ", "other", None]})
    col = Column("g", normalize=("trim", "lowercase"), allowed=("male", "female"))
    assert rejects_of(frame, col) == [(3, "allowed")]
    frame = pd.DataFrame({"n": ["a" * 35, "b" * 36]})
    assert rejects_of(frame, Column("n", max_length=35)) == [(2, "max_length")]


def test_required_if_follows_settings() -> None:
    frame = pd.DataFrame({"email": [None, "a@b.co"]})
    col = Column("email", required_if={"import_key": "email"}, format="email")
    assert rejects_of(frame, col, import_key="email") == [(1, "required")]
    assert rejects_of(frame, col, import_key="line_uid") == []


def test_missing_required_column_is_a_schema_error_naming_the_setting() -> None:
    col = Column("line_uid", required_if={"import_key": "line_uid"})
    with pytest.raises(SchemaError, match="no column 'line_uid'.*import_key=line_uid"):
        validate(pd.DataFrame({"email": ["x"]}), RuleSet((col,)), {"import_key": "line_uid"})


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("email", ["a.b+c@example.co.jp"], ["a@", "@b.com", "a b@c.com"]),
        ("e164", ["+819012345678"], ["09012345678", "+0123", "+81 90"]),
        ("uuid", ["123e4567-e89b-42d3-a456-426614174000"], ["123e4567e89b42d3a456426614174000"]),
        ("iso_date", ["2000-02-29", "1985-04-06"], ["2001-02-29", "1985/04/06", "85-04-06"]),
        ("ip", ["203.0.113.9", "2001:db8::1", "::1"], ["256.1.1.1", "2001:db8:::1", "host"]),
    ],
)
def test_formats(fmt: str, good: list[str], bad: list[str]) -> None:
    frame = pd.DataFrame({"v": good + bad})
    failing = [row for row, _ in rejects_of(frame, Column("v", format=fmt))]
    assert failing == list(range(len(good) + 1, len(good) + len(bad) + 1))


def test_sha256_of_raw_values_and_hashed_values_pass_unchanged() -> None:
    known = "72c7d01963513283884d192b33db2cf123a88d4a3b570c356054e2cc568f3771"  # sha256("user@example.jp"), computed outside the project
    sha512 = "a" * 128
    frame = pd.DataFrame({"email": [" User@Example.JP ", known, sha512]})
    col = Column(
        "email",
        normalize=("trim", "lowercase"),
        format="email",
        hash_sha256=True,
        accept_sha512=True,
    )
    result = validate(frame, RuleSet((col,)))
    assert result.rejects.empty
    assert result.valid["email"].tolist() == [known, known, sha512]


def test_row_numbers_span_chunks_and_valid_rows_keep_theirs() -> None:
    col = Column("v", pattern=r"[a-z]+")
    first = validate(pd.DataFrame({"v": ["a", "1"]}), RuleSet((col,)), row_offset=0)
    second = validate(pd.DataFrame({"v": ["2", "b"]}), RuleSet((col,)), row_offset=2)
    assert first.rejects[ROW_NUMBER].tolist() == [2]
    assert second.rejects[ROW_NUMBER].tolist() == [3]
    assert second.valid[ROW_NUMBER].tolist() == [4]
    assert first.rows_read + second.rows_read == len(first.valid) + len(second.valid) + 2


def test_rejects_table_names_row_column_rule_and_masks_personal_values() -> None:
    frame = pd.DataFrame({"phone": ["+81901234567", "12345678"]})
    col = Column("phone", normalize=("trim", "phone"), format="e164", sensitive=True)
    rejects = validate(frame, RuleSet((col,))).rejects
    row = rejects.iloc[0]
    assert (row[ROW_NUMBER], row["column"], row["rule"]) == (2, "phone", "e164")
    assert "E.164" in row["message"]
    assert row["value"] == mask_value("12345678") == "12****78"


def test_any_of_needs_one_complete_group() -> None:
    rule = AnyOf((("email",), ("first_name", "last_name")))
    ruleset = RuleSet(
        (Column("email"), Column("first_name"), Column("last_name")), row_rules=(rule,)
    )
    frame = pd.DataFrame(
        {
            "email": [None, "x@y.z", None],
            "first_name": ["A", None, "A"],
            "last_name": ["B", None, None],
        }
    )
    result = validate(frame, ruleset)
    assert result.rejects[ROW_NUMBER].tolist() == [3]
    assert result.rejects["rule"].tolist() == ["any_of"]


def test_aliases_and_ignored_columns() -> None:
    frame = pd.DataFrame({"display_name": ["Yuki"], "extra": [1]})
    result = validate(frame, RuleSet((Column("line_display_name", aliases=("display_name",)),)))
    assert result.valid["line_display_name"].tolist() == ["Yuki"]
    assert result.ignored_columns == ["extra"]


def test_unix_seconds_from_ints_digit_strings_and_timestamps() -> None:
    values, bad = to_unix_seconds(pd.Series(["1700000000", "2023-11-14T22:13:20Z", "soon", None]))
    assert values.tolist()[:2] == [1700000000, 1700000000]
    assert bad.tolist() == [False, False, True, False]
    stamps = pd.Series(pd.to_datetime(["2023-11-14 22:13:20"]))
    assert to_unix_seconds(stamps)[0].tolist() == [1700000000]
    col = Column("t", kind="unix_seconds", required=True, min_value=1)
    frame = pd.DataFrame({"t": ["0", "12", "x", None]})
    assert rejects_of(frame, col) == [(1, "min_value"), (3, "type"), (4, "required")]


def test_to_text_handles_engine_types() -> None:
    assert to_text(pd.Series([1.0, 2.0, None])).tolist()[:2] == ["1", "2"]
    # A midnight TIMESTAMP is still a timestamp (issue 13), written with its offset.
    assert to_text(pd.Series(pd.to_datetime(["2000-02-23"]))).tolist() == [
        "2000-02-23T00:00:00+00:00"
    ]
    assert to_text(pd.Series([True, False])).tolist() == ["true", "false"]


def test_validation_is_vectorized_fast_enough_for_large_chunks() -> None:
    """Not a timing assertion: 200,000 rows of several rules must simply complete and be exact."""
    n = 200_000
    frame = pd.DataFrame({"v": [UID] * (n - 1) + ["bad"], "e": ["a@b.co"] * n})
    ruleset = RuleSet(
        (Column("v", pattern=r"U[0-9a-f]{32}"), Column("e", format="email", hash_sha256=True))
    )
    result = validate(frame, ruleset)
    assert len(result.valid) == n - 1
    assert result.rejects[ROW_NUMBER].tolist() == [n]
