"""Property-based tests (hypothesis): the validator and LINE template substitution.

Validator, for every destination's rule set: no column of any type (strings, None, NaN, ints,
floats, bytes, booleans, timestamps, mixed object columns) makes it crash; every row is either
valid or named in the rejects, never both; valid rows satisfy the rules (validating them again
rejects nothing and changes nothing).

Templates: whatever a row holds, the rendered ``messages`` is JSON with exactly the template's
keys (values stay text: no key injection), and a row that passes the export's checks renders a
body LINE's schema accepts (checked as LINE would see it, placeholders taken literally).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from line_exports.destinations import get_destination
from line_exports.destinations.line_messaging.messages import (
    PLACEHOLDER,
    MessageTemplate,
    check_messages,
)
from line_exports.rules import (
    ROW_NUMBER,
    SHA256_PATTERN,
    SHA512_PATTERN,
    RuleSet,
    to_text,
    validate,
)
from line_exports_tests.hypothesis_budget import examples

FAST = settings(
    max_examples=examples(quick=15, thorough=35),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- the rule sets of every destination ---------------------------------------------------------
def _ruleset(type_name: str, **values: Any) -> tuple[RuleSet, dict[str, Any]]:
    dest = get_destination(type_name)
    config = dest.settings_class(**values)
    return dest.ruleset(config), config.model_dump()


PUSH_TEMPLATE = json.dumps({"type": "text", "text": "Hi {{name}}"})
RULESETS = {
    "maac_members_line_uid": (
        "maac",
        {"data_object": "members", "import_key": "line_uid", "tags": "t"},
    ),
    "maac_members_mobile": (
        "maac",
        {"data_object": "members", "import_key": "mobile", "tags": "t"},
    ),
    "maac_segments": ("maac", {"data_object": "segments", "segment_name": "s"}),
    "line_audience": ("line_messaging", {"target": "audience", "audience_name": "a"}),
    "line_audience_ifa": (
        "line_messaging",
        {"target": "audience", "audience_name": "a", "is_ifa_audience": True},
    ),
    "line_push": ("line_messaging", {"target": "push_message", "template_message": PUSH_TEMPLATE}),
    "line_multicast": (
        "line_messaging",
        {
            "target": "multicast_message",
            "template_message_multicast": json.dumps({"type": "text", "text": "x"}),
        },
    ),
    "line_conversion": ("line_conversion", {}),
    "linkedin_users": ("linkedin", {"ad_account_id": "1", "segment_name": "s"}),
    "linkedin_companies": (
        "linkedin",
        {"ad_account_id": "1", "segment_name": "s", "audience_type": "companies"},
    ),
}

# Cells a warehouse or an upstream DataFrame may hand us. Floats are finite and within int64
# (see test_non_finite_or_huge_floats_are_rejected_not_crashing for the others).
SAFE_FLOATS = st.one_of(st.floats(min_value=-9e18, max_value=9e18), st.just(float("nan")))
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
NEAR_VALID = st.sampled_from(
    [
        "U" + "0" * 32,
        "U" + "ab" * 16,
        " U" + "1" * 32 + " ",
        "u" + "0" * 32,
        "user@example.jp",
        " A@B.CO ",
        "+81 90-1234-5678",
        "0912345678",
        "1990-01-02",
        "1990-02-30",
        "male",
        "Female",
        "web",
        "conversion",
        "page_view",
        "undefined",
        "dedup-1",
        "203.0.113.7",
        "::1",
        "https://x.jp/a",
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        "EA7583CD-A667-48BC-B806-42ECB2B48606",
        "example.com",
        "JP",
        "us",
        "1700000000",
        "-5",
        "0",
        "",
        " ",
        "a" * 300,
        "a" * 64,
        "A" * 64,
        "f" * 128,
    ]
)
# Whole seconds (see test_timestamps_with_fractional_seconds_are_converted_not_crashing).
STAMPS = st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)).map(
    lambda t: t.replace(microsecond=0)
)
CELLS = st.one_of(
    st.none(),
    TEXT,
    NEAR_VALID,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    SAFE_FLOATS,
    st.booleans(),
    st.binary(max_size=20),
    st.just(float("nan")),
    st.just(pd.NaT),
    STAMPS.map(pd.Timestamp),
    st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2200, 1, 1)),
)


@st.composite
def column_values(draw: st.DrawFn, n: int) -> pd.Series:
    """One column of ``n`` cells: homogeneous (as an engine returns it) or a mixed object column."""
    kind = draw(
        st.sampled_from(["mixed", "text", "near", "int", "float", "bool", "datetime", "bytes"])
    )
    if kind == "mixed":
        return pd.Series(draw(st.lists(CELLS, min_size=n, max_size=n)), dtype=object)
    if kind == "text":
        return pd.Series(
            draw(st.lists(st.one_of(st.none(), TEXT), min_size=n, max_size=n)), dtype=object
        )
    if kind == "near":
        return pd.Series(draw(st.lists(NEAR_VALID, min_size=n, max_size=n)), dtype=object)
    if kind == "int":
        return pd.Series(
            draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)), dtype="int64"
        )
    if kind == "float":
        return pd.Series(draw(st.lists(SAFE_FLOATS, min_size=n, max_size=n)), dtype="float64")
    if kind == "bool":
        return pd.Series(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    if kind == "datetime":
        stamps = draw(st.lists(STAMPS, min_size=n, max_size=n))
        return pd.Series(pd.to_datetime(stamps), dtype="datetime64[ns]")
    return pd.Series(draw(st.lists(st.binary(max_size=12), min_size=n, max_size=n)), dtype=object)


@st.composite
def frames(draw: st.DrawFn, ruleset: RuleSet, settings_values: dict[str, Any]) -> pd.DataFrame:
    n = draw(st.integers(min_value=0, max_value=8))
    names = [c.name for c in ruleset.columns]
    required = {c.name for c in ruleset.columns if c.is_required(settings_values)}
    chosen = [name for name in names if name in required or draw(st.booleans())]
    data = {name: draw(column_values(n)) for name in chosen}
    data["unrelated"] = draw(column_values(n))
    return pd.DataFrame(data, index=pd.RangeIndex(n))


def _check_validated(
    frame: pd.DataFrame, ruleset: RuleSet, values: dict[str, Any], offset: int
) -> None:
    checked = validate(frame, ruleset, values, row_offset=offset)
    n = len(frame)
    everyone = set(range(offset + 1, offset + n + 1))
    valid = set(checked.valid[ROW_NUMBER].astype(int))
    rejected = set(checked.rejects[ROW_NUMBER].astype(int)) if len(checked.rejects) else set()
    assert checked.rows_read == n
    assert valid | rejected == everyone, "every row is valid or named in the rejects"
    assert not valid & rejected, "no row is both"
    assert len(checked.valid) == len(valid), "each valid row once"
    assert set(checked.rejects.columns) >= {ROW_NUMBER, "column", "rule", "message", "value"}
    assert "unrelated" in checked.ignored_columns
    # Valid rows satisfy the rules: validated again they are all valid and unchanged.
    again = validate(checked.valid.drop(columns=[ROW_NUMBER]), ruleset, values, row_offset=offset)
    assert len(again.rejects) == 0, again.rejects.head(3).to_dict("records")
    for col in ruleset.columns:
        if col.name not in checked.valid.columns:
            continue
        before = to_text(checked.valid[col.name]).fillna("<NA>").tolist()
        after = to_text(again.valid[col.name]).fillna("<NA>").tolist()
        assert before == after, f"{col.name} changes when validated twice"
        # And directly: present values match the column's pattern (or are digests).
        if col.pattern is not None and col.kind == "string":
            text = to_text(checked.valid[col.name]).dropna()
            digest = text.str.fullmatch(SHA256_PATTERN) | text.str.fullmatch(SHA512_PATTERN)
            ok = text.str.fullmatch(col.pattern) | (digest if col.hash_sha256 else False)
            assert bool(ok.all()), (col.name, text[~ok].tolist()[:3])
        if col.hash_sha256:
            text = to_text(checked.valid[col.name]).dropna()
            pattern = f"{SHA256_PATTERN}|{SHA512_PATTERN}" if col.accept_sha512 else SHA256_PATTERN
            assert bool(text.str.fullmatch(pattern).all()), "personal values leave only as digests"


@pytest.mark.parametrize("name", list(RULESETS))
def test_validator_never_crashes_and_accounts_for_every_row(name: str) -> None:
    ruleset, values = _ruleset(RULESETS[name][0], **RULESETS[name][1])

    @FAST
    @given(frame=frames(ruleset, values), offset=st.integers(0, 10_000))
    def check(frame: pd.DataFrame, offset: int) -> None:
        _check_validated(frame, ruleset, values, offset)

    check()


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), 1e20])
def test_non_finite_or_huge_floats_are_rejected_not_crashing(value: float) -> None:
    for type_name, values in (
        ("maac", RULESETS["maac_members_line_uid"][1]),
        ("line_conversion", {}),
    ):
        ruleset, config = _ruleset(type_name, **values)
        column = "customer_id" if type_name == "maac" else "event_timestamp"
        frame = pd.DataFrame(
            {
                "line_uid": ["U" + "0" * 32, "U" + "1" * 32],
                "deduplication_key": ["a", "b"],
                "event_type": "conversion",
                "source_type": "web",
                column: [value, 1.0],
                "unrelated": [1, 2],
            }
        )
        _check_validated(frame, ruleset, config, 0)


@pytest.mark.parametrize(
    "stamps",
    [
        pd.Series(pd.to_datetime(["2026-01-01 00:00:00.5", "2026-01-01 00:00:01.0"])),
        pd.Series(["2026-01-01T00:00:00.5", "1767225601"], dtype=object),
    ],
    ids=["datetime64", "text"],
)
def test_timestamps_with_fractional_seconds_are_converted_not_crashing(stamps: pd.Series) -> None:
    ruleset, config = _ruleset("line_conversion")
    frame = pd.DataFrame(
        {
            "deduplication_key": ["a", "b"],
            "event_type": "conversion",
            "source_type": "web",
            "event_timestamp": stamps,
            "unrelated": [1, 2],
        }
    )
    _check_validated(frame, ruleset, config, 0)


# -- LINE template substitution -----------------------------------------------------------------
# Placeholders in every kind of slot: plain text, length-limited text, URLs, a user ID, a flex
# text, a postback data field, an action label, a sender name and a quick-reply text.
TEMPLATES = {
    "text": [{"type": "text", "text": "Hi {{a}}, code {{b}}!"}],
    "text_only_placeholder": [
        {"type": "text", "text": "{{a}}"},
        {"type": "text", "text": "{{b}} / {{ a }}"},
    ],
    "image": [
        {
            "type": "image",
            "originalContentUrl": "https://cdn.example.jp/{{a}}.png",
            "previewImageUrl": "{{b}}",
        }
    ],
    "buttons": [
        {
            "type": "template",
            "altText": "{{a}}",
            "template": {
                "type": "buttons",
                "title": "{{b}}",
                "text": "Hello {{a}}",
                "actions": [
                    {"type": "uri", "label": "{{b}}", "uri": "https://shop.example.jp/?c={{a}}"},
                    {"type": "postback", "label": "ok", "data": "id={{b}}", "displayText": "{{a}}"},
                ],
            },
        }
    ],
    "flex": [
        {
            "type": "flex",
            "altText": "Order {{a}}",
            "contents": {
                "type": "bubble",
                "body": {
                    "type": "box",
                    "layout": "vertical",
                    "contents": [
                        {"type": "text", "text": "{{a}}", "wrap": True},
                        {
                            "type": "button",
                            "action": {"type": "message", "label": "{{b}}", "text": "{{a}}"},
                        },
                    ],
                },
            },
        }
    ],
    "sender_quick_reply": [
        {
            "type": "text",
            "text": "x",
            "sender": {"name": "{{b}}"},
            "quickReply": {
                "items": [
                    {
                        "type": "action",
                        "action": {"type": "message", "label": "{{b}}", "text": "{{a}}"},
                    }
                ]
            },
        }
    ],
    "location": [
        {
            "type": "location",
            "title": "{{a}}",
            "address": "{{b}} street",
            "latitude": 35.0,
            "longitude": 139.0,
        }
    ],
}
NASTY = st.sampled_from(
    [
        '"',
        "\\",
        '\\"',
        '"}, {"type": "text", "text": "injected',
        "{{a}}",
        "{{b}}",
        "{{ x }}",
        "}}",
        '{"x": 1}',
        "\n",
        "\r\n",
        "\t",
        "\x00",
        "\x1f",
        "\u2028",
        "\u2029",
        "</script>",
        "'",
        "%s",
        "${session_time}",
        "https://evil.example/",
        "javascript:alert(1)",
        "😀" * 3,
        "a" * 70,
        "é" * 2000,
        " ",
        "",
    ]
)
VALUES = st.one_of(
    TEXT,
    NASTY,
    st.lists(st.one_of(TEXT, NASTY), max_size=4).map("".join),
    st.integers().map(str),
    SAFE_FLOATS.filter(lambda f: not math.isnan(f)).map(repr),
)


def _fill(template: Any, values: dict[str, str]) -> Any:
    """What a rendered message must equal: every placeholder string with its row's text."""
    if isinstance(template, dict):
        return {k: _fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, values) for v in template]
    if isinstance(template, str):
        return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
    return template


def _push_pipeline(
    template: MessageTemplate, ruleset: RuleSet, frame: pd.DataFrame
) -> pd.DataFrame:
    """The export's own path to a push body: validate, spool-typed text, per-row message checks."""
    checked = validate(frame, ruleset, {})
    rows = checked.valid
    for name in template.columns:
        rows[name] = to_text(rows[name])
    bad = np.zeros(len(rows), dtype=bool)
    for _, _, mask in template.check_rows(rows):
        bad |= mask
    return rows[~bad].reset_index(drop=True)


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_substitution_never_injects_and_checked_rows_meet_lines_schema(name: str) -> None:
    text = json.dumps(TEMPLATES[name])
    template = MessageTemplate.parse(text, target="push")
    dest = get_destination("line_messaging")
    ruleset = dest.ruleset(dest.settings_class(target="push_message", template_message=text))

    @FAST
    @given(rows=st.lists(st.tuples(VALUES, VALUES), min_size=1, max_size=6))
    def check(rows: list[tuple[str, str]]) -> None:
        frame = pd.DataFrame(
            {
                "id": ["U" + f"{i:032x}" for i in range(len(rows))],
                "a": [r[0] for r in rows],
                "b": [r[1] for r in rows],
            }
        )
        rendered_all = template.render(frame)  # every row renders, checked or not
        for i, body in enumerate(rendered_all.tolist()):
            messages = json.loads(body)
            assert messages == _fill(TEMPLATES[name], {"a": rows[i][0], "b": rows[i][1]}), (
                "no key injection"
            )
            body.encode("utf-8")
        sendable = _push_pipeline(template, ruleset, frame)
        for body in template.render(sendable).tolist():
            problems, _ = check_messages(json.loads(body), target="push", literal=True)
            assert problems == []
            request = '{"to":"U' + "0" * 32 + '","messages":' + body + "}"
            assert set(json.loads(request)) == {"to", "messages"}

    check()


@pytest.mark.parametrize("value", ["{user}", "}", "{everyone}"])
def test_textv2_values_cannot_add_substitutions(value: str) -> None:
    template_json = [
        {
            "type": "textV2",
            "text": "Hi {{a}} {everyone}",
            "substitution": {"everyone": {"type": "mention", "mentionee": {"type": "all"}}},
        }
    ]
    template = MessageTemplate.parse(json.dumps(template_json), target="push")
    frame = pd.DataFrame({"a": [value]})
    assert not any(mask.any() for _, _, mask in template.check_rows(frame)), (
        "the row passes the checks"
    )
    messages = json.loads(template.render(frame).iloc[0])
    problems, _ = check_messages(messages, target="push", literal=True)
    assert problems == []
    text = messages[0]["text"]
    assert len(re.findall(r"(?<!\{)\{everyone\}(?!\})", text)) == 1, "the value added no mention"


def test_flex_bubble_over_30_kb_after_substitution_is_caught_before_sending() -> None:
    bubble = [
        {
            "type": "flex",
            "altText": "Order",
            "contents": {
                "type": "bubble",
                "body": {
                    "type": "box",
                    "layout": "vertical",
                    "contents": [{"type": "text", "text": "{{a}}", "wrap": True}],
                },
            },
        }
    ]
    template = MessageTemplate.parse(json.dumps(bubble), target="push")
    frame = pd.DataFrame({"a": ["x" * 31_000]})
    caught = any(mask.any() for _, _, mask in template.check_rows(frame))
    if not caught:
        problems, _ = check_messages(
            json.loads(template.render(frame).iloc[0]), target="push", literal=True
        )
        assert problems == [], "check_rows passed a row whose body LINE refuses"
