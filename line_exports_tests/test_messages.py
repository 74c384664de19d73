"""LINE message objects: the ten types, their limits, placeholders and JSON-safe substitution."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from line_exports.destinations.line_messaging.messages import (
    MessageTemplate,
    TemplateError,
    check_messages,
    utf16_len,
)
from line_exports_tests.hypothesis_budget import examples

U1 = "U" + "a" * 32
# The reference's examples, one per type (all must pass).
VALID = {
    "text": {"type": "text", "text": "Hello, world"},
    "textV2": {
        "type": "textV2",
        "text": "Welcome, {user1}! {laugh}\n{everyone} There is a newcomer!",
        "substitution": {
            "user1": {"type": "mention", "mentionee": {"type": "user", "userId": U1}},
            "laugh": {"type": "emoji", "productId": "5a8555cfe6256cc92ea23c2a", "emojiId": "002"},
            "everyone": {"type": "mention", "mentionee": {"type": "all"}},
        },
    },
    "sticker": {"type": "sticker", "packageId": "446", "stickerId": "1988"},
    "image": {
        "type": "image",
        "originalContentUrl": "https://example.com/original.jpg",
        "previewImageUrl": "https://example.com/preview.jpg",
    },
    "video": {
        "type": "video",
        "originalContentUrl": "https://example.com/original.mp4",
        "previewImageUrl": "https://example.com/preview.jpg",
        "trackingId": "track-id",
    },
    "audio": {
        "type": "audio",
        "originalContentUrl": "https://example.com/original.m4a",
        "duration": 60000,
    },
    "location": {
        "type": "location",
        "title": "my location",
        "address": "1-3 Kioicho, Chiyoda-ku, Tokyo, 102-8282, Japan",
        "latitude": 35.67966,
        "longitude": 139.73669,
    },
    "imagemap": {
        "type": "imagemap",
        "baseUrl": "https://example.com/bot/images/rm001",
        "altText": "This is an imagemap",
        "baseSize": {"width": 1040, "height": 1040},
        "video": {
            "originalContentUrl": "https://example.com/video.mp4",
            "previewImageUrl": "https://example.com/video_preview.jpg",
            "area": {"x": 0, "y": 0, "width": 1040, "height": 585},
            "externalLink": {"linkUri": "https://example.com/see_more.html", "label": "See More"},
        },
        "actions": [
            {
                "type": "uri",
                "linkUri": "https://example.com/",
                "area": {"x": 0, "y": 586, "width": 520, "height": 454},
            },
            {
                "type": "message",
                "text": "Hello",
                "area": {"x": 520, "y": 586, "width": 520, "height": 454},
            },
        ],
    },
    "template": {
        "type": "template",
        "altText": "This is a buttons template",
        "template": {
            "type": "buttons",
            "thumbnailImageUrl": "https://example.com/bot/images/image.jpg",
            "imageAspectRatio": "rectangle",
            "imageSize": "cover",
            "imageBackgroundColor": "#FFFFFF",
            "title": "Menu",
            "text": "Please select",
            "defaultAction": {
                "type": "uri",
                "label": "View detail",
                "uri": "http://example.com/page/123",
            },
            "actions": [
                {"type": "postback", "label": "Buy", "data": "action=buy&itemid=123"},
                {"type": "postback", "label": "Add to cart", "data": "action=add&itemid=123"},
                {"type": "uri", "label": "View detail", "uri": "http://example.com/page/123"},
            ],
        },
    },
    "flex": {
        "type": "flex",
        "altText": "this is a flex message",
        "contents": {
            "type": "bubble",
            "body": {
                "type": "box",
                "layout": "vertical",
                "contents": [{"type": "text", "text": "hello"}, {"type": "text", "text": "world"}],
            },
        },
    },
}

# One broken variant per type, and the property LINE would name.
BROKEN = {
    "text": ({"type": "text", "text": "x" * 5001}, "messages[0].text"),
    "textV2": ({"type": "textV2", "text": "Hi {nobody}"}, "messages[0].text"),
    "sticker": ({"type": "sticker", "packageId": "446"}, "messages[0].stickerId"),
    "image": (
        {
            "type": "image",
            "originalContentUrl": "http://example.com/a.jpg",
            "previewImageUrl": "https://e.com/p.jpg",
        },
        "messages[0].originalContentUrl",
    ),
    "video": ({**VALID["video"], "trackingId": "has space"}, "messages[0].trackingId"),
    "audio": (
        {"type": "audio", "originalContentUrl": "https://e.com/a.m4a"},
        "messages[0].duration",
    ),
    "location": ({**VALID["location"], "latitude": 91}, "messages[0].latitude"),
    "imagemap": (
        {**VALID["imagemap"], "baseSize": {"width": 700, "height": 700}},
        "messages[0].baseSize.width",
    ),
    "template": (
        {
            "type": "template",
            "altText": "a",
            "template": {
                "type": "confirm",
                "text": "ok?",
                "actions": [{"type": "message", "label": "yes", "text": "yes"}],
            },
        },
        "messages[0].template.actions",
    ),
    "flex": (
        {
            "type": "flex",
            "altText": "a",
            "contents": {"type": "carousel", "contents": [{"type": "bubble"}] * 13},
        },
        "messages[0].contents.contents",
    ),
}


@pytest.mark.parametrize("kind", sorted(VALID))
def test_reference_examples_of_all_ten_types_pass(kind: str) -> None:
    assert check_messages([VALID[kind]]) == ([], [])
    assert MessageTemplate.parse(json.dumps(VALID[kind])).json()


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_each_type_refuses_what_line_refuses(kind: str) -> None:
    message, prop = BROKEN[kind]
    problems, _ = check_messages([message])
    assert prop in [p for p, _ in problems], problems
    with pytest.raises(TemplateError, match=prop.replace("[", r"\[").replace("]", r"\]")):
        MessageTemplate.parse(json.dumps(message))


def test_template_shape_rules() -> None:
    with pytest.raises(TemplateError, match="not valid JSON"):
        MessageTemplate.parse('{"type": "text", "text": "a",}')
    with pytest.raises(TemplateError, match="at most 5"):
        MessageTemplate.parse([VALID["text"]] * 6)
    with pytest.raises(TemplateError, match="Must be one of"):
        MessageTemplate.parse({"type": "coupon", "couponId": "x"})  # not one of the reference's ten
    with pytest.raises(TemplateError, match="not keys"):
        MessageTemplate.parse({"type": "text", "text": "a", "{{col}}": "x"})
    with pytest.raises(TemplateError, match="not supported here"):
        MessageTemplate.parse(
            {"type": "text", "text": "Hi {{name}}"}, target="multicast", allow_placeholders=False
        )
    with pytest.raises(TemplateError, match="Mention objects"):
        MessageTemplate.parse(VALID["textV2"], target="multicast")
    with pytest.raises(
        TemplateError, match="text: Length must be at most 60"
    ):  # buttons text with a title: 60
        MessageTemplate.parse(
            {**VALID["template"], "template": {**VALID["template"]["template"], "text": "x" * 61}}
        )
    bubble = {
        "type": "bubble",
        "body": {
            "type": "box",
            "layout": "vertical",
            "contents": [{"type": "text", "text": "x" * 31000}],
        },
    }
    with pytest.raises(TemplateError, match="30 KB"):
        MessageTemplate.parse({"type": "flex", "altText": "a", "contents": bubble})


def test_length_counts_utf16_units_like_line() -> None:
    assert utf16_len("😀") == 2 and utf16_len("あ") == 1
    assert check_messages([{"type": "text", "text": "😀" * 2500}]) == ([], [])
    problems, _ = check_messages([{"type": "text", "text": "😀" * 2501}])
    assert problems == [("messages[0].text", "Length must be at most 5000")]


def test_placeholders_are_columns_and_checked_per_row() -> None:
    template = MessageTemplate.parse(
        {
            "type": "image",
            "originalContentUrl": "{{url}}",
            "previewImageUrl": "https://e.com/{{name}}.jpg",
        }
    )
    assert template.columns == ["url", "name"]
    frame = pd.DataFrame(
        {
            "url": ["https://e.com/a.jpg", "http://insecure/a.jpg", "https://e.com/" + "x" * 2000],
            "name": ["a", "b", "c"],
        }
    )
    failures = {(path, tuple(mask)) for path, _, mask in template.check_rows(frame)}
    assert ("messages[0].originalContentUrl", (False, True, False)) in failures
    assert ("messages[0].originalContentUrl", (False, False, True)) in failures
    with pytest.raises(TemplateError, match="not columns"):
        template.render(frame[["url"]])


NASTY = [
    'He said "hi"',
    "back\\slash",
    "new\nline\ttab",
    "{braces}",
    "{{coupon}}",
    '", "injected": "x',
    "\u2028\u2029",
    "\x00\x1f",
    "😀 emoji",
    "</script>",
]


def test_substitution_is_json_safe_and_never_injects() -> None:
    template = MessageTemplate.parse(
        [
            {"type": "text", "text": "Hi {{name}}, use {{coupon}}"},
            {
                "type": "textV2",
                "text": "{greet}",
                "substitution": {
                    "greet": {"type": "emoji", "productId": "{{name}}", "emojiId": "001"}
                },
            },
        ]
    )
    frame = pd.DataFrame({"name": NASTY, "coupon": list(reversed(NASTY))})
    for i, text in enumerate(template.render(frame)):
        messages = json.loads(text)
        assert messages[0] == {"type": "text", "text": f"Hi {NASTY[i]}, use {NASTY[-1 - i]}"}
        assert set(messages[1]) == {"type", "text", "substitution"}
        assert messages[1]["substitution"]["greet"]["productId"] == NASTY[i]


@settings(max_examples=examples(quick=60, thorough=200), deadline=None)
@given(st.text(max_size=60), st.text(max_size=60))
def test_any_value_round_trips_through_the_json(a: str, b: str) -> None:
    template = MessageTemplate.parse({"type": "text", "text": "[{{a}}|{{b}}]"})
    rendered = template.render(pd.DataFrame({"a": [a], "b": [b]})).iloc[0]
    assert json.loads(rendered) == [{"type": "text", "text": f"[{a}|{b}]"}]
