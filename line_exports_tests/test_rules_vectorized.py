"""The vectorized engine's shortcuts mean exactly what Python's ``re`` and str methods mean.

Patterns run as word sets, as byte-class shapes, as prefix checks, by RE2 or by ``re``; each is
compared with ``re.fullmatch`` on generated text, including Arrow arrays with an offset, with
bytes hidden under null slots and as 32-bit ``string``. Normalizers are compared with the str
methods pandas used before; hashing with hashlib, whatever cells are missing or pre-hashed.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from line_exports.arrow_text import compile_matcher, normalize
from line_exports.destinations.line_conversion import COLUMNS as CAPI_COLUMNS
from line_exports.destinations.line_messaging import AGGREGATION_UNIT, PUSH_TO_PATTERN
from line_exports.destinations.linkedin import COMPANY_COLUMNS, USER_COLUMNS
from line_exports.destinations.maac import MEMBER_COLUMNS
from line_exports.rules import (
    DISTINCT_SAMPLE,
    FORMATS,
    ROW_NUMBER,
    SHA256_PATTERN,
    SHA512_PATTERN,
    Column,
    RuleSet,
    validate,
)
from line_exports_tests.hypothesis_budget import examples

RULE_PATTERNS = sorted(
    {
        c.pattern
        for c in (*CAPI_COLUMNS, *USER_COLUMNS, *COMPANY_COLUMNS, *MEMBER_COLUMNS)
        if c.pattern
    }
    | {p for p, _ in FORMATS.values()}
    | {SHA256_PATTERN, SHA512_PATTERN, PUSH_TO_PATTERN, AGGREGATION_UNIT}
)
# Every road through compile_matcher, and the constructs RE2 reads differently.
EDGE_PATTERNS = [
    r"[1-9][0-9]{2}",
    r"[a-c][a-z]+",
    r"x[0-9a-f]{0,3}",
    r"[0-9]-?[0-9]",
    r"ab?c?.*",
    r"é.+",
    r"https?://.+",
    r"(?!no$)[a-z]{1,5}",
    r"(?!no$)a|b",
    r"no|yes|",
    r"A-B|C_D",
    r"\s+",
    r"\d{2}",
    r"\w+",
    r"a$",
    r"^a",
    r"[[:alpha:]]+",
    r"(?i)ab",
    r"[]a]+",
    r"a{,3}",
    r"a{b",
    r"[^a-c]+",
    r"(?:ab)+",
    r"é[a-z]",
    r".{2,3}",
]
ALPHABET = st.sampled_from(
    list("aAbBcfFzZU09-_.:/+éß\u0130 \t\n\x0b\x1c\u3000@")
    + ["no", "yes", "https://", "http://", "undefined"]
)
TEXT = st.lists(ALPHABET, max_size=12).map("".join)


def _hex(n: int) -> st.SearchStrategy[str]:
    return st.text("0123456789abcdefABCDEF", min_size=n, max_size=n)


NEAR = st.one_of(
    TEXT,
    _hex(32).map(lambda h: "U" + h),
    st.tuples(_hex(8), _hex(4), _hex(4), _hex(4), _hex(12)).map("-".join),
    _hex(64),
    _hex(128),
    st.sampled_from(
        [
            "+819012345678",
            "+0123456",
            "2024-02-30",
            "203.0.113.9",
            "a@b.co",
            "JP",
            "example.com",
            "https://a\n",
            "http://\n",
            "https://x",
            "ab\n",
            "abc",
            "é\nx",
            "éx",
            "undefined\n",
            "no",
        ]
    ),
)
# Near IP and email addresses (arrow_addresses): octets around 255, leading zeros, IPv6 forms;
# local parts with '@'-free punctuation, labels of 0-64 characters, edge hyphens and dots.
IP_LIKE = st.lists(
    st.sampled_from(
        ["0", "1", "2", "5", "9", "25", "199", "255", "256", "01", ".", ":", "::", "f"]
    ),
    max_size=10,
).map("".join)
LABEL = st.one_of(
    st.text("ab1-", max_size=4), st.sampled_from(["a" * 63, "b" * 64, "a-b", "-a", "a-"])
)
EMAIL_LIKE = st.tuples(
    st.text("aZ0._+-@é ", max_size=5), st.lists(LABEL, min_size=1, max_size=3).map(".".join)
).map("@".join)
NEAR = st.one_of(NEAR, IP_LIKE, EMAIL_LIKE)
CELLS = st.lists(st.one_of(st.none(), NEAR), max_size=14)
FAST = settings(
    max_examples=examples(quick=60, thorough=150),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def _arrays(values: list[str | None], junk_text: str = "U0000\n é") -> list[pa.Array]:
    """The same values as several Arrow layouts the engine may meet."""
    padded = ["pad", *values, "pad"]
    large = pa.array(values, pa.large_string())
    # Null slots that still own bytes (Arrow allows it): a copy with junk under each null.
    junk = [v if v is not None else junk_text for v in values]
    base = pa.array(junk, pa.large_string())
    validity = (
        pa.array([v is not None for v in values], pa.bool_()).buffers()[1] if values else None
    )
    hidden = pa.Array.from_buffers(
        pa.large_string(),
        len(values),
        [validity if None in values else None, *base.buffers()[1:]],
        null_count=values.count(None),
    )
    return [
        large,
        pa.array(values, pa.string()),
        pa.array(padded, pa.large_string()).slice(1, len(values)),
        pa.array(padded, pa.string()).slice(1, len(values)),
        hidden,
    ]


def _check_pattern(pattern: str, values: list[str | None], junk: str) -> None:
    expected = np.array(
        [v is not None and re.fullmatch(pattern, v) is not None for v in values], dtype=bool
    )
    matcher = compile_matcher(pattern)
    for array in _arrays(values, junk):
        assert matcher(array).tolist() == expected.tolist(), (pattern, values, array.type, matcher)


@pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")  # "[[:alpha:]]" on purpose
@pytest.mark.parametrize("pattern", RULE_PATTERNS + EDGE_PATTERNS)
def test_matchers_agree_with_python_re(pattern: str) -> None:
    @FAST
    @given(values=CELLS, junk=NEAR)
    def check(values: list[str | None], junk: str) -> None:
        _check_pattern(pattern, values, junk)

    check()


@pytest.mark.parametrize(
    "pattern", [r"U[0-9a-f]{32}", r"[0-9]{4}-[0-9]{2}-[0-9]{2}", r"[1-9][0-9]{2}"]
)
def test_fixed_width_shapes_with_many_values_of_other_sizes(pattern: str) -> None:
    @settings(
        max_examples=examples(quick=15, thorough=40),
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(values=st.lists(st.one_of(st.none(), NEAR), min_size=100, max_size=300), junk=NEAR)
    def check(values: list[str | None], junk: str) -> None:
        _check_pattern(pattern, values, junk)

    check()


@pytest.mark.parametrize(
    ("pattern", "right_size"),
    [
        (r"U[0-9a-f]{32}", _hex(32).map(lambda h: "U" + h)),
        (
            r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
            st.sampled_from(["2024-01-02", "2024-1-022", "abcdefghij"]),
        ),
    ],
)
def test_fixed_width_shapes_with_a_few_values_of_other_sizes(
    pattern: str, right_size: st.SearchStrategy[str]
) -> None:
    """Mostly values of the pattern's width (so laid out in runs), a few others among them."""

    @settings(
        max_examples=examples(quick=15, thorough=40),
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        right=st.lists(st.one_of(st.none(), right_size), min_size=300, max_size=400),
        odd=st.lists(st.tuples(st.integers(0, 299), NEAR), max_size=3),
        junk=NEAR,
    )
    def check(right: list[str | None], odd: list[tuple[int, str]], junk: str) -> None:
        values = list(right)
        for at, value in odd:
            values[at] = value
        _check_pattern(pattern, values, junk)

    check()


def test_matchers_take_the_fast_roads_for_the_rule_sets_patterns() -> None:
    """Not a semantic test: the rule sets' patterns must not fall back to a Python loop."""
    assert all(compile_matcher(p).python is None for p in RULE_PATTERNS)
    assert (
        compile_matcher(r"\s+").python is not None and compile_matcher(r"(?i)ab").python is not None
    )


NORMALIZE_TEXT = st.lists(
    st.one_of(
        st.none(),
        st.text(
            st.sampled_from(list(" \t\n\x0b\x0c\r\x1c\x1f\x85\xa0\u2000\u3000-().+0123aBcÉßİ")),
            max_size=10,
        ),
    ),
    max_size=10,
)


@pytest.mark.parametrize(
    "steps",
    [
        ("trim",),
        ("trim", "lowercase"),
        ("trim", "uppercase"),
        ("trim", "phone"),
        ("trim", "phone", "lowercase"),
    ],
)
def test_normalizers_agree_with_pandas_str_methods(steps: tuple[str, ...]) -> None:
    @FAST
    @given(values=NORMALIZE_TEXT)
    def check(values: list[str | None]) -> None:
        series = pd.Series(values, dtype="string")
        for step in steps:
            if step == "trim":
                series = series.str.strip()
            elif step == "lowercase":
                series = series.str.lower()
            elif step == "uppercase":
                series = series.str.upper()
            else:
                series = series.str.replace(r"[\s\-().]", "", regex=True)
        for array in _arrays(values)[:4]:
            assert (
                normalize(array, steps).to_pylist()
                == series.astype(object).where(series.notna(), None).tolist()
            )

    check()


def test_hashes_match_hashlib_when_cells_before_them_are_missing_or_hashed() -> None:
    """Each digest belongs to its own row (a digest once landed on the wrong row after a gap)."""
    digest = "a" * 64
    emails = [None, " B@Example.JP ", digest, "c@example.jp", "", "not an email", "d@example.jp"]
    col = Column("email", normalize=("trim", "lowercase"), format="email", hash_sha256=True)
    result = validate(pd.DataFrame({"email": emails}), RuleSet((col,)))
    assert result.valid[ROW_NUMBER].tolist() == [1, 2, 3, 4, 5, 7]
    assert result.valid["email"].fillna("-").tolist() == [
        "-",
        hashlib.sha256(b"b@example.jp").hexdigest(),
        digest,
        hashlib.sha256(b"c@example.jp").hexdigest(),
        "-",
        hashlib.sha256(b"d@example.jp").hexdigest(),
    ]
    assert result.rejects[ROW_NUMBER].tolist() == [6]


def test_dedup_key_refuses_undefined_as_re_does() -> None:
    col = next(c for c in CAPI_COLUMNS if c.name == "deduplication_key")
    frame = pd.DataFrame(
        {"deduplication_key": ["undefined", "undefined\n", "undefined_", "Undefined", "a-1"]}
    )
    assert validate(frame, RuleSet((col,))).rejects[ROW_NUMBER].tolist() == [1, 2]


def test_hashes_of_repeated_values_and_of_rows_another_column_rejects() -> None:
    """Hashing runs in the background on the cells that pass their own column, each distinct
    value once when values repeat; the kept rows carry hashlib's digest of their own value,
    and rejects keep the rule set's order."""
    n = DISTINCT_SAMPLE * 2 + 7
    emails = [f"u{i % 50}@example.jp" if i % 9 else None for i in range(n)]
    emails[5] = "not an email"
    ids = ["U" + "0" * 32 if i % 11 else "bad" for i in range(n)]
    cols = (
        Column("line_uid", pattern=r"U[0-9a-f]{32}"),
        Column("email", normalize=("trim", "lowercase"), format="email", hash_sha256=True),
    )
    result = validate(pd.DataFrame({"line_uid": ids, "email": emails}), RuleSet(cols))
    kept = [i for i in range(n) if i % 11 and i != 5]
    assert result.valid[ROW_NUMBER].tolist() == [i + 1 for i in kept]
    assert result.valid["email"].fillna("-").tolist() == [
        "-" if emails[i] is None else hashlib.sha256(emails[i].encode()).hexdigest() for i in kept
    ]
    assert result.rejects["column"].tolist()[0] == "line_uid"  # the rule set's order
    assert result.rejects.loc[result.rejects["column"] == "email", ROW_NUMBER].tolist() == [6]


def test_patterns_matched_once_per_distinct_value_agree_with_python_re(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Columns whose first values repeat are matched per distinct value (RE2 route): same answer
    as re.fullmatch on every cell, nulls (with bytes under them) and values seen only later."""
    pattern = FORMATS["ip"][0]
    assert compile_matcher(pattern).re2 is not None
    encoded: list[int] = []
    encode = pa.compute.dictionary_encode

    def spy(values: pa.Array) -> pa.Array:
        encoded.append(len(values))
        return encode(values)

    monkeypatch.setattr(pa.compute, "dictionary_encode", spy)
    rng = np.random.default_rng(5)
    pool = ["203.0.113.9", "256.1.1.1", "::1", "1::2::3", "01.2.3.4", "fe80::1", "", "x"]
    values: list[str | None] = [pool[i] for i in rng.integers(0, len(pool), 6_000)]
    values[::97] = [None] * len(values[::97])
    values[5_000:5_010] = [f"10.0.0.{i}" for i in range(250, 260)]  # new values after the sample
    _check_pattern(pattern, values, "203.0.113.9")
    _check_pattern(pattern, [None] * 5_000, "::1")
    assert encoded and set(encoded) == {6_000, 5_000}  # the distinct route was taken
