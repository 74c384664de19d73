"""Phone numbers to E.164 (libphonenumber) and emails normalized, before matching or hashing.

JP ``090-1234-5678``, TW ``0912-345-678`` and TH ``081-234-5678`` are accepted with their
``default_region``; values already E.164 never meet the parser; local numbers of a plain
national form take a vectorized route that must agree with the parser on every value
(hypothesis); the rest are parsed once per distinct value. CAPI hashes the E.164 form, so a
local number and its E.164 spelling hash alike, over HTTP to the sandbox.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import phonenumbers
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from line_exports import LineConversionResource, SqlSource, build_export
from line_exports.destinations.line_conversion import LineConversionSettings
from line_exports.destinations.maac import MaacSettings
from line_exports.digit_automaton import compile_checks
from line_exports.phones import _TYPES, _national_route, e164_column, read_number, to_e164
from line_exports.rules import E164_PATTERN, Column, RuleSet, validate
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_conversion import events_of
from line_exports_tests.hypothesis_budget import examples

E164 = re.compile(E164_PATTERN)
PHONE = Column("mobile", normalize=("trim", "phone"), format="phone")
ROUTED = ["JP", "TW", "TH", "ID", "VN", "MY", "PH", "IN", "DE", "FR"]


@pytest.mark.parametrize(
    ("region", "local", "e164"),
    [
        ("JP", "090-1234-5678", "+819012345678"),
        ("TW", "0912-345-678", "+886912345678"),
        ("TH", "081-234-5678", "+66812345678"),
        ("JP", "03-1234-5678", "+81312345678"),
        ("TW", "(02) 2345-6789", "+886223456789"),
    ],
)
def test_local_numbers_become_e164_with_default_region(region: str, local: str, e164: str) -> None:
    frame = pd.DataFrame({"mobile": [local, e164, " " + e164.replace("+", "+ ") + " "]})
    checked = validate(frame, RuleSet((PHONE,)), {"default_region": region})
    assert not len(checked.rejects)
    assert checked.valid["mobile"].tolist() == [e164, e164, e164]


def test_without_a_region_local_numbers_are_refused_and_say_what_to_set() -> None:
    frame = pd.DataFrame({"mobile": ["090-1234-5678", "+819012345678"]})
    checked = validate(frame, RuleSet((PHONE,)), {"default_region": None})
    assert checked.valid["mobile"].tolist() == ["+819012345678"]
    (message,) = checked.rejects["message"].tolist()
    assert "set default_region" in message


def test_e164_values_skip_the_parser_and_locals_are_parsed_once_each() -> None:
    read_number.cache_clear()
    # TW's 09XX mobiles take the vectorized route; JP-style numbers under TW meet the parser.
    values = ["+886912345678"] * 1000 + ["0912345678"] * 500 + ["1-800-555-0199"] * 300
    frame = pd.DataFrame({"mobile": values})
    checked = validate(frame, RuleSet((PHONE,)), {"default_region": "TW"})
    assert checked.valid["mobile"].tolist()[:1500] == ["+886912345678"] * 1500
    assert read_number.cache_info().misses == 1  # one distinct value left for the parser
    # A mobile field: E.164 mobiles of the region are typed without the parser too.
    read_number.cache_clear()
    mobile = Column("mobile", normalize=("trim", "phone"), format="mobile")
    checked = validate(frame, RuleSet((mobile,)), {"default_region": "TW"})
    assert checked.valid["mobile"].tolist() == ["+886912345678"] * 1500
    assert checked.rejects["rule"].unique().tolist() == ["phone"]  # not a TW number
    assert read_number.cache_info().misses == 1


MOBILE = Column("mobile", normalize=("trim", "phone"), format="mobile")


@pytest.mark.parametrize("column", [PHONE, MOBILE])
def test_an_extension_is_refused_with_its_reason_not_dropped(column: Column) -> None:
    frame = pd.DataFrame(
        {"mobile": ["+886-912-345-671 ext. 2", "0912-345-671 #2", "tel:+886912345671;ext=2"]}
    )
    checked = validate(frame, RuleSet((column,)), {"default_region": "TW"})
    assert not len(checked.valid)
    assert checked.rejects["rule"].tolist() == ["phone_extension"] * 3
    assert "extension" in checked.rejects["message"].iloc[0]


@pytest.mark.parametrize(
    ("region", "mobiles", "others"),
    [
        (
            "TW",
            ["0912-345-678", "+886 912 345 678"],
            ["(02) 2345-6789", "+886223456789", "0800-000-123"],
        ),
        (
            "JP",
            ["090-1234-5678", "+818012345678"],
            ["03-1234-5678", "+81312345678", "0120-123-456"],
        ),
        ("TH", ["081-234-5678"], ["02-123-4567", "+6621234567"]),
        ("US", ["+1 510-555-1234"], ["+1 800-555-0199"]),  # US: FIXED_LINE_OR_MOBILE
    ],
)
def test_a_mobile_field_takes_mobiles_only_in_any_spelling(
    region: str, mobiles: list[str], others: list[str]
) -> None:
    frame = pd.DataFrame({"mobile": mobiles + others})
    checked = validate(frame, RuleSet((MOBILE,)), {"default_region": region})
    assert checked.valid["mobile"].tolist() == [to_e164(m, region) for m in mobiles]
    assert checked.rejects["rule"].tolist() == ["mobile_number"] * len(others)
    assert "not a mobile" in checked.rejects["message"].iloc[0]
    # A phone field (CAPI) takes them all.
    checked = validate(
        frame.rename(columns={"mobile": "phone"}),
        RuleSet((Column("phone", normalize=("trim", "phone"), format="phone"),)),
        {"default_region": region},
    )
    assert not len(checked.rejects)


def test_region_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="default_region"):
        MaacSettings(data_object="members", import_key="mobile", tags="t", default_region="XX")
    assert LineConversionSettings(default_region="jp").default_region == "JP"
    assert MaacSettings(data_object="members", import_key="mobile", tags="t").default_region == "TW"


national = st.builds(
    lambda first, rest, seps: (
        "0" + first + "".join(d + s for d, s in zip(rest, seps, strict=False))
    ),
    st.sampled_from("0123456789"),
    st.text("0123456789", min_size=0, max_size=13),
    st.lists(st.sampled_from(["", "", "", "-", " "]), max_size=13),
)


@settings(max_examples=examples(quick=100, thorough=300), deadline=None)
@given(
    values=st.lists(national, min_size=1, max_size=40),
    region=st.sampled_from(ROUTED),
    mobile=st.booleans(),
)
def test_vectorized_route_agrees_with_libphonenumber(
    values: list[str], region: str, mobile: bool
) -> None:
    """Local numbers (0 + national) and E.164-shaped numbers of the region: the vectorized
    reading equals libphonenumber's, value by value."""
    route = _national_route(region)
    assert route is not None
    digits = [v.replace("-", "").replace(" ", "") for v in values]
    e164 = [f"+{route.country_code}{d[1:]}" for d in digits]
    text = pa.array(digits + e164)
    n = len(text)
    shaped = np.array([False] * len(digits) + [E164.fullmatch(v) is not None for v in e164])
    got, ok, _ = e164_column(text, region, np.ones(n, dtype=bool), shaped, mobile)
    for value, out, good in zip(text.to_pylist(), got.to_pylist(), ok.tolist(), strict=True):
        # E.164-shaped values too: kept as written only when libphonenumber writes them so
        assert (out if good else None) == to_e164(value, region, mobile), value


# Calling codes of one region, shared ones (NANP +1, +7 RU/KZ, +44 GB/GG/JE/IM, +47, +61, +262,
# +590), codes whose main region strips a national prefix or has leading-zero numbers (+39, +54).
COUNTRIES = [
    "US",
    "CA",
    "JM",
    "RU",
    "KZ",
    "GB",
    "GG",
    "JE",
    "IM",
    "NO",
    "SJ",
    "AU",
    "CX",
    "RE",
    "YT",
    "GP",
    "BL",
    "IT",
    "AR",
    "MX",
    "BR",
    "CN",
    "KR",
    "JP",
    "TW",
    "TH",
    "DE",
    "GA",
]
KINDS = [
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE,
    phonenumbers.PhoneNumberType.TOLL_FREE,
]


@st.composite
def international(draw: st.DrawFn) -> str:
    """An E.164-shaped number near a region's example number (changed, cut or extended)."""
    region, kind = draw(st.sampled_from(COUNTRIES)), draw(st.sampled_from(KINDS))
    example = phonenumbers.example_number_for_type(region, kind) or (
        phonenumbers.example_number(region)
    )
    digits = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)[1:]
    cc = str(example.country_code)
    national = list(digits[len(cc) :])
    for _ in range(draw(st.integers(0, 2))):
        national[draw(st.integers(0, len(national) - 1))] = draw(st.sampled_from("0123456789"))
    cut = draw(st.integers(-1, 1))
    tail = national[:cut] if cut < 0 else national + ["7"] * cut
    return "+" + cc + "".join(tail)


@settings(max_examples=examples(quick=80, thorough=200), deadline=None)
@given(
    values=st.lists(international(), min_size=1, max_size=30), region=st.sampled_from([None, "JP"])
)
def test_e164_mobiles_of_every_country_agree_with_libphonenumber(
    values: list[str], region: str | None
) -> None:
    """A mobile field's E.164 values of any calling code (shared ones too): the vectorized
    reading equals libphonenumber's, value by value, with or without a default_region."""
    text = pa.array(values)
    shaped = np.array([E164.fullmatch(v) is not None for v in values])
    got, ok, refused = e164_column(text, region, np.ones(len(values), dtype=bool), shaped, True)
    not_mobile = refused.get("mobile_number", np.zeros(len(values), dtype=bool))
    for value, out, good, flagged in zip(values, got.to_pylist(), ok, not_mobile, strict=True):
        expected, why = read_number(value, region, True)
        assert (out if good else None) == expected, value
        assert bool(flagged) == (why == "mobile_number"), value


@pytest.mark.parametrize("mobile", [True, False])
def test_e164_mobiles_of_any_country_skip_the_parser(mobile: bool) -> None:
    """E.164 mobiles of countries other than default_region's are typed without the parser,
    as mobiles (MAAC's mobile) and as valid numbers of any type (CAPI's phone)."""
    values = [f"+81901{i:07d}" for i in range(500)] + [f"+1201555{i:04d}" for i in range(500)]
    values += [f"+447400{i:06d}" for i in range(500)]  # GB mobiles (+44 shared with GG/JE/IM)
    values += [f"+8869123{i:05d}" for i in range(500)]  # TW, after a run of another code
    read_number.cache_clear()
    text = pa.array(values)
    shaped = np.ones(len(values), dtype=bool)
    got, ok, _ = e164_column(text, None, shaped, shaped, mobile)
    assert ok.all() and got.to_pylist() == values
    assert read_number.cache_info().misses == 0


def _near(number: str) -> list[str]:
    """``number`` (E.164) and its near misses: each national digit changed, one digit more or
    less, a trunk 0 or 1 after the calling code."""
    cc = str(phonenumbers.parse(number).country_code)
    head, national = number[: 1 + len(cc)], number[1 + len(cc) :]
    near = [number, number[:-1], number + "5", head + "0" + national, head + "1" + national]
    for i in range(len(national)):
        near.append(head + national[:i] + str((int(national[i]) + 3) % 10) + national[i + 1 :])
    return near


def test_e164_shaped_values_of_every_calling_code_agree_with_libphonenumber() -> None:
    """Every region's example numbers of every type, and their near misses, E.164-shaped, as
    phones and as mobiles: the vectorized reading (calling code from the first digits, one
    pattern per length) equals libphonenumber's, value by value."""
    values = sorted(
        {
            near
            for region in phonenumbers.SUPPORTED_REGIONS
            for kind in range(12)
            if (example := phonenumbers.example_number_for_type(region, kind)) is not None
            for near in _near(
                phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            )
            if E164.fullmatch(near)
        }
    )
    assert len(values) > 10_000
    text = pa.array(values)
    everything = np.ones(len(values), dtype=bool)
    for mobile in (False, True):
        got, ok, _ = e164_column(text, None, everything, everything, mobile)
        for value, out, good in zip(values, got.to_pylist(), ok, strict=True):
            assert (out if good else None) == read_number(value, None, mobile)[0], (value, mobile)


def test_capi_hashes_local_and_e164_spellings_alike(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    now = int(time.time()) - 60
    frame = pd.DataFrame(  # noqa: F841 - read by DuckDB below
        {
            "deduplication_key": ["a", "b", "c"],
            "event_type": "conversion",
            "source_type": "web",
            "event_timestamp": now,
            "phone": ["090-1234-5678", "+81 90 1234 5678", "0912-345-678"],
            "email": [" Ann@Example.COM", "ann@example.com", None],
        }
    )
    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table t as select * from frame")
    asset = build_export(
        "c",
        destination="line_conversion",
        query="select * from t",
        settings={"initial_retry_wait": 1, "default_region": "JP"},
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            "line_conversion": LineConversionResource(
                line_tag_id="tag-p", base_url=sandbox_server.url
            ),
        },
    )
    assert result.success
    events = events_of(sandbox_server.sandbox, "tag-p")
    digest = hashlib.sha256(b"+819012345678").hexdigest()
    assert events["a"]["user"]["phone"] == events["b"]["user"]["phone"] == digest
    assert events["a"]["user"]["email"] == hashlib.sha256(b"ann@example.com").hexdigest()
    assert "c" not in events  # a TW mobile is not a JP number: rejected, with its reason
    meta = result.asset_materializations_for_node("c")[0].metadata
    assert meta["rejects_by_rule"].value == {"phone: phone": 1}


@st.composite
def trunk_zero(draw: st.DrawFn) -> str:
    """An E.164-shaped number with a 0 after the calling code: the national trunk prefix kept
    (``+886 0912 345 678`` written without separators) or a near miss of one."""
    number = draw(international())
    cc = str(phonenumbers.parse(number).country_code)
    zeros = draw(st.sampled_from(["0", "0", "00"]))
    return ("+" + cc + zeros + number[1 + len(cc) :])[:16]


@settings(max_examples=examples(quick=80, thorough=200), deadline=None)
@given(
    values=st.lists(st.one_of(trunk_zero(), international()), min_size=1, max_size=30),
    region=st.sampled_from([None, "TW", "JP", "TH"]),
)
def test_e164_shaped_phones_of_every_country_agree_with_libphonenumber(
    values: list[str], region: str | None
) -> None:
    """A phone field (CAPI's ``phone``, hashed): an E.164-shaped value is kept as written only
    when it is libphonenumber's E.164 of a valid number; a trunk 0 after the calling code is
    read by the parser (``+8860912345678`` is ``+886912345678``), value by value."""
    text = pa.array(values)
    shaped = np.array([E164.fullmatch(v) is not None for v in values])
    got, ok, _ = e164_column(text, region, np.ones(len(values), dtype=bool), shaped)
    for value, out, good in zip(values, got.to_pylist(), ok, strict=True):
        assert (out if good else None) == read_number(value, region)[0], value


TRUNK_ZERO = {  # written with the trunk 0 kept -> libphonenumber's E.164
    "tw1": ("+886 0912 345 678", "+886912345678"),
    "tw2": ("+886-0912-345-678", "+886912345678"),
    "tw3": ("+8860912345678", "+886912345678"),
    "jp": ("+81 090 1234 5678", "+819012345678"),
    "th": ("+66 081 234 5678", "+66812345678"),
    "ok": ("+886912345678", "+886912345678"),
}


def test_capi_hashes_a_kept_trunk_zero_as_libphonenumber_e164(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """VERIFY-13b B1: what the sandbox received is sha256 of libphonenumber's E.164."""
    now = int(time.time()) - 60
    frame = pd.DataFrame(  # noqa: F841 - read by DuckDB below
        {
            "deduplication_key": list(TRUNK_ZERO),
            "event_type": "conversion",
            "source_type": "web",
            "event_timestamp": now,
            "phone": [written for written, _ in TRUNK_ZERO.values()],
        }
    )
    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table t as select * from frame")
    asset = build_export(
        "tz",
        destination="line_conversion",
        query="select * from t",
        settings={"initial_retry_wait": 1, "default_region": "TW"},
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            "line_conversion": LineConversionResource(
                line_tag_id="tag-tz", base_url=sandbox_server.url
            ),
        },
    )
    assert result.success
    events = events_of(sandbox_server.sandbox, "tag-tz")
    for key, (written, e164) in TRUNK_ZERO.items():
        assert (
            phonenumbers.format_number(
                phonenumbers.parse(written, "TW"), phonenumbers.PhoneNumberFormat.E164
            )
            == e164
        )
        assert events[key]["user"]["phone"] == hashlib.sha256(e164.encode()).hexdigest(), written


@st.composite
def patterns_and_numbers(draw: st.DrawFn) -> tuple[str, str, list[str]]:
    """Two number patterns of one region (general, a type) and digit strings near its example
    numbers (a digit changed, cut or extended) or random."""
    region = draw(st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)))
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    descs = [
        desc.national_number_pattern
        for desc in (getattr(metadata, name) for name in ("general_desc", *_TYPES))
        if desc is not None and desc.national_number_pattern
    ]
    wanted, unwanted = draw(st.sampled_from(descs)), draw(st.sampled_from(descs))
    examples = [
        desc.example_number
        for desc in (getattr(metadata, name) for name in _TYPES)
        if desc is not None and desc.example_number
    ] or ["1234567"]
    numbers = []
    for _ in range(draw(st.integers(1, 20))):
        digits = list(draw(st.sampled_from(examples)))
        for _ in range(draw(st.integers(0, 2))):
            digits[draw(st.integers(0, len(digits) - 1))] = draw(st.sampled_from("0123456789"))
        numbers.append("".join(digits)[: draw(st.integers(1, 17))])
    return wanted, unwanted, numbers


@settings(max_examples=examples(quick=60, thorough=150), deadline=None)
@given(case=patterns_and_numbers(), want_both=st.booleans())
def test_digit_automaton_reads_number_patterns_as_re_does(
    case: tuple[str, str, list[str]], want_both: bool
) -> None:
    """Numbers of one length against libphonenumber's patterns (one wanted, one wanted or
    unwanted): the automaton's answer is re.fullmatch's, number by number."""
    wanted, other, numbers = case
    for length in {len(n) for n in numbers}:
        same = [n for n in numbers if len(n) == length]
        automaton = compile_checks(((wanted, True), (other, want_both)), length)
        assert automaton is not None  # every metadata pattern is plain enough
        got = automaton.run(np.array([[int(c) for c in n] for n in same]))
        for number, passed in zip(same, got.tolist(), strict=True):
            both = re.fullmatch(wanted, number), re.fullmatch(other, number)
            assert passed == bool(both[0] and (both[1] if want_both else not both[1])), number


def test_digit_automaton_reads_every_region_pattern_as_re_does() -> None:
    """Every region's general and type patterns against its example numbers of every type and
    their near misses (a digit changed, one less, one more), length by length: the automaton
    answers as re.fullmatch, number by number."""
    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        descs = [getattr(metadata, name) for name in ("general_desc", *_TYPES)]
        patterns = [d.national_number_pattern for d in descs if d and d.national_number_pattern]
        examples = {d.example_number for d in descs if d and d.example_number}
        numbers = examples | {n[:-1] for n in examples} | {n + "7" for n in examples}
        numbers |= {n[:2] + str((int(n[2]) + 5) % 10) + n[3:] for n in examples if len(n) > 3}
        for length in {len(n) for n in numbers}:
            same = sorted(n for n in numbers if len(n) == length)
            digits = np.array([[int(c) for c in n] for n in same])
            for pattern in patterns:
                automaton = compile_checks(((pattern, True),), length)
                assert automaton is not None, (region, pattern)
                expected = [re.fullmatch(pattern, n) is not None for n in same]
                assert automaton.run(digits).tolist() == expected, (region, pattern, same)
                checked += len(same)
    assert checked > 20_000
