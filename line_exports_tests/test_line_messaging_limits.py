"""LINE's message rules, checked as LINE checks them: the issue's inputs, boundaries generated
from the limits table (in each field's unit), and every enum of flex components and actions,
refused both by the exporter's check and by the sandbox (over loopback HTTP)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import linebot.v3.messaging.models as sdk
import pandas as pd
import pytest
import requests

from line_exports.destinations import get_destination
from line_exports.destinations.line_messaging.fields import prose_fields
from line_exports.destinations.line_messaging.limits import (
    EMPTY,
    LIMITS,
    NOT_UNICODE,
    grapheme_len,
    utf16_len,
)
from line_exports.destinations.line_messaging.messages import (
    MessageTemplate,
    TemplateError,
    check_messages,
)
from line_exports.rules import SchemaError, check_columns
from line_exports.sandbox import SandboxServer

TOKEN = "sandbox-line-channel-token"
URL = "https://example.com/a.png"
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one grapheme cluster, 8 UTF-16 units


def validate(server: SandboxServer, messages: list[dict[str, Any]]) -> requests.Response:
    """LINE's own check of a message, as the sandbox answers it (POST .../validate/push)."""
    return requests.post(
        f"{server.url}/v2/bot/message/validate/push",
        data=json.dumps({"messages": messages}),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        timeout=10,
    )


def refused_at(server: SandboxServer, messages: list[dict[str, Any]]) -> list[str]:
    answer = validate(server, messages)
    if answer.status_code == 200:
        return []
    assert answer.status_code == 400, answer.text
    return [d["property"] for d in answer.json().get("details", [])]


def problems_at(messages: list[dict[str, Any]]) -> list[str]:
    return [path for path, _ in check_messages(messages)[0]]


def bubble(*contents: dict[str, Any], footer: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "bubble",
        "body": {"type": "box", "layout": "vertical", "contents": list(contents)},
    }
    if footer:
        body["footer"] = {"type": "box", "layout": "vertical", "contents": footer}
    return {"type": "flex", "altText": "a", "contents": body}


def button(label: str) -> dict[str, Any]:
    return {"type": "button", "action": {"type": "message", "label": label, "text": "ok"}}


def image_carousel(label: str) -> dict[str, Any]:
    column = {"imageUrl": URL, "action": {"type": "message", "label": label, "text": "ok"}}
    return {
        "type": "template",
        "altText": "a",
        "template": {"type": "image_carousel", "columns": [column]},
    }


# -- the inputs, with LINE's answer ---------------------------------------------------
def test_flex_action_labels_take_40_and_image_carousel_labels_12(
    sandbox_server: SandboxServer,
) -> None:
    for messages, path, accepted in [
        ([bubble(button("x" * 30))], "", True),
        ([bubble(button("x" * 40))], "", True),
        ([bubble(button("x" * 41))], "messages[0].contents.body.contents[0].action.label", False),
        ([image_carousel("x" * 12)], "", True),
        ([image_carousel("x" * 13)], "messages[0].template.columns[0].action.label", False),
        ([image_carousel("x" * 15)], "messages[0].template.columns[0].action.label", False),
    ]:
        assert (problems_at(messages) == []) is accepted, messages
        assert (refused_at(sandbox_server, messages) == []) is accepted, messages
        if not accepted:
            assert path in problems_at(messages)
            assert path in refused_at(sandbox_server, messages)
            with pytest.raises(TemplateError, match=re.escape(path)):
                MessageTemplate.parse(messages)


@pytest.mark.parametrize(
    ("component", "prop"),
    [
        ({"type": "text", "text": "a", "weight": "heavy"}, "weight"),
        ({"type": "text", "text": "a", "align": "left"}, "align"),
        ({"type": "text", "text": "a", "gravity": "middle"}, "gravity"),
        ({"type": "text", "text": "a", "flex": "1"}, "flex"),
        ({"type": "text", "text": "a", "color": 5}, "color"),
        ({"type": "image", "url": URL, "aspectMode": "stretch"}, "aspectMode"),
        ({"type": "text", "text": "a", "wrap": "yes"}, "wrap"),
        ({"type": "box", "layout": "diagonal", "contents": []}, "layout"),
    ],
)
def test_flex_enum_and_type_errors_are_refused(
    sandbox_server: SandboxServer, component: dict[str, Any], prop: str
) -> None:
    messages = [bubble(component)]
    path = f"messages[0].contents.body.contents[0].{prop}"
    assert path in problems_at(messages)
    assert path in refused_at(sandbox_server, messages)
    with pytest.raises(TemplateError, match=re.escape(path)):
        MessageTemplate.parse(messages)


def test_text_emoji_index_must_be_on_a_dollar(sandbox_server: SandboxServer) -> None:
    emoji = {"productId": "5ac1bfd5040ab15980c9b435", "emojiId": "001"}
    good = [
        {
            "type": "text",
            "text": "$ hello $",
            "emojis": [{**emoji, "index": 0}, {**emoji, "index": 8}],
        }
    ]
    bad = [{"type": "text", "text": "$ hello $", "emojis": [{**emoji, "index": 3}]}]
    # LINE: "index position of emojis ... must be the number and position of the code unit
    # when encoded in UTF-16" (Messaging API reference, Text message): after 😀 (2 units,
    # 1 code point) the $ is at 2, not 1.
    astral = [{"type": "text", "text": "😀$", "emojis": [{**emoji, "index": 2}]}]
    by_code_point = [{"type": "text", "text": "😀$", "emojis": [{**emoji, "index": 1}]}]
    assert problems_at(good) == [] and refused_at(sandbox_server, good) == []
    assert problems_at(astral) == [] and refused_at(sandbox_server, astral) == []
    assert "messages[0].emojis[0].index" in problems_at(by_code_point)
    assert "messages[0].emojis[0].index" in refused_at(sandbox_server, by_code_point)
    assert "messages[0].emojis[0].index" in problems_at(bad)
    assert "messages[0].emojis[0].index" in refused_at(sandbox_server, bad)


@pytest.mark.parametrize(
    ("messages", "path"),
    [
        ([{"type": "text", "text": "hi", "txet": "x"}], "messages[0].txet"),
        ([bubble({"type": "text", "text": "a", "colour": "#ffffff"})], ".contents[0].colour"),
        (
            [bubble(button("ok") | {"action": {"type": "message", "label": "l", "txt": "ok"}})],
            ".contents[0].action.txt",
        ),
        ([bubble({"type": "text", "text": "a"}) | {"sizee": "kilo"}], "messages[0].sizee"),
        (
            [
                {
                    "type": "text",
                    "text": "hi",
                    "quickReply": {
                        "items": [
                            {
                                "type": "action",
                                "action": {"type": "message", "label": "a", "text": "a"},
                                "imageURL": URL,
                            }
                        ]
                    },
                }
            ],
            "messages[0].quickReply.items[0].imageURL",
        ),
        (
            [image_carousel("ok") | {"template": {"type": "image_carousel", "colums": []}}],
            "messages[0].template.colums",
        ),
    ],
)
def test_unknown_properties_are_refused_as_line_refuses_them(
    sandbox_server: SandboxServer, messages: list[dict[str, Any]], path: str
) -> None:
    """A property LINE's models do not define (a typo the SDK would drop silently) is refused
    at definition and by the sandbox, which answers as LINE answers a property it cannot read."""
    found = [p for p in problems_at(messages) if p.endswith(path)]
    assert found, problems_at(messages)
    with pytest.raises(TemplateError, match=re.escape(found[0])):
        MessageTemplate.parse(messages)
    answer = validate(sandbox_server, messages)
    assert answer.status_code == 400
    assert answer.json() == {
        "message": f"The property, '{found[0]}', in the request body is invalid (line: -, column: -)"
    }
    pushed = requests.post(
        f"{sandbox_server.url}/v2/bot/message/push",
        json={"to": "U" + "0" * 32, "messages": messages},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert (pushed.status_code, pushed.json()) == (400, answer.json())


def test_emoji_index_is_recomputed_per_row(sandbox_server: SandboxServer) -> None:
    """``Hi {{name}} $``: the ``$`` moves with the name's length (and its UTF-16 units)."""
    emoji = {"productId": "5ac1bfd5040ab15980c9b435", "emojiId": "001"}
    template = MessageTemplate.parse(
        {
            "type": "text",
            "text": "Hi {{name}} $ and {{other}}$",
            "emojis": [{**emoji, "index": 12}, {**emoji, "index": 27}],
        }
    )
    frame = pd.DataFrame(
        {"name": ["Al", "Bartholomew", "😀😀", ""], "other": ["x", "", "🍎", "yy"]}
    )
    assert template.check_rows(frame) == []
    for rendered in template.render(frame):
        messages = json.loads(rendered)
        text = messages[0]["text"]
        units = text.encode("utf-16-le")
        for emoji_object in messages[0]["emojis"]:
            at = emoji_object["index"] * 2
            assert units[at : at + 2].decode("utf-16-le") == "$", (text, emoji_object)
        assert refused_at(sandbox_server, messages) == []
    with pytest.raises(TemplateError, match=r"emojis\[0\]\.index"):
        MessageTemplate.parse(
            {"type": "text", "text": "Hi {{name}} $", "emojis": [{**emoji, "index": 4}]}
        )


def test_buttons_text_counts_grapheme_clusters(sandbox_server: SandboxServer) -> None:
    def buttons(text: str) -> list[dict[str, Any]]:
        return [
            {
                "type": "template",
                "altText": "a",
                "template": {
                    "type": "buttons",
                    "text": text,
                    "actions": [{"type": "message", "label": "ok", "text": "ok"}],
                },
            }
        ]

    for text, accepted in [
        ("😀" * 100, True),
        ("😀" * 160, True),
        (FAMILY * 160, True),
        ("😀" * 161, False),
        (FAMILY * 161, False),
    ]:
        assert (problems_at(buttons(text)) == []) is accepted
        assert (refused_at(sandbox_server, buttons(text)) == []) is accepted


# -- boundaries generated from the table ------------------------------------------------------
EMOJI = {"productId": "5ac1bfd5040ab15980c9b435", "emojiId": "001"}
ACTIONS = [
    {"type": "postback", "label": "p", "data": "d", "displayText": "t", "fillInText": "f"},
    {"type": "postback", "label": "p", "data": "d", "text": "t"},
    {"type": "message", "label": "m", "text": "t"},
    {
        "type": "uri",
        "label": "u",
        "uri": "https://example.com/",
        "altUri": {"desktop": "https://e.com/"},
    },
    {"type": "datetimepicker", "label": "d", "data": "d", "mode": "date"},
    {"type": "richmenuswitch", "label": "r", "data": "d", "richMenuAliasId": "alias"},
    {"type": "clipboard", "label": "c", "clipboardText": "c"},
]
# Every text field the table covers appears in one of these (checked by the coverage test).
EXAMPLES: list[dict[str, Any]] = [
    {
        "type": "text",
        "text": "hi",
        "quickReply": {"items": [{"type": "action", "imageUrl": URL, "action": ACTIONS[2]}]},
        "sender": {"name": "bot", "iconUrl": URL},
    },
    {"type": "textV2", "text": "hi {a}", "substitution": {"a": {"type": "emoji", **EMOJI}}},
    {"type": "image", "originalContentUrl": URL, "previewImageUrl": URL},
    {"type": "video", "originalContentUrl": URL, "previewImageUrl": URL, "trackingId": "t"},
    {"type": "audio", "originalContentUrl": URL, "duration": 1000},
    {"type": "location", "title": "t", "address": "a", "latitude": 1.5, "longitude": 2},
    {
        "type": "imagemap",
        "baseUrl": "https://example.com/map",
        "altText": "a",
        "baseSize": {"width": 1040, "height": 1040},
        "video": {
            "originalContentUrl": URL,
            "previewImageUrl": URL,
            "area": {"x": 0, "y": 0, "width": 10, "height": 10},
            "externalLink": {"linkUri": "https://example.com/", "label": "more"},
        },
        "actions": [
            {
                "type": "uri",
                "label": "l",
                "linkUri": "https://e.com/",
                "area": {"x": 0, "y": 0, "width": 1, "height": 1},
            },
            {"type": "message", "text": "t", "area": {"x": 0, "y": 0, "width": 1, "height": 1}},
            {
                "type": "clipboard",
                "clipboardText": "c",
                "area": {"x": 0, "y": 0, "width": 1, "height": 1},
            },
        ],
    },
    {
        "type": "template",
        "altText": "a",
        "template": {
            "type": "buttons",
            "thumbnailImageUrl": URL,
            "title": "t",
            "text": "t",
            "defaultAction": ACTIONS[2],
            "actions": ACTIONS[:4],
        },
    },
    {
        "type": "template",
        "altText": "a",
        # not the rich menu switch: "configured only with rich menus" (limits.ACTION_PLACES)
        "template": {"type": "buttons", "text": "t", "actions": [ACTIONS[4], ACTIONS[6]]},
    },
    {
        "type": "template",
        "altText": "a",
        "template": {"type": "confirm", "text": "t", "actions": ACTIONS[2:4]},
    },
    {
        "type": "template",
        "altText": "a",
        "template": {
            "type": "carousel",
            "columns": [
                {"thumbnailImageUrl": URL, "title": "t", "text": "t", "actions": ACTIONS[:1]},
                {"thumbnailImageUrl": URL, "title": "u", "text": "t", "actions": ACTIONS[2:3]},
            ],
        },
    },
    {  # LINE: if one column has an image or title, every column must (so a second carousel)
        "type": "template",
        "altText": "a",
        "template": {"type": "carousel", "columns": [{"text": "t", "actions": ACTIONS[2:3]}]},
    },
    image_carousel("l"),
    {
        "type": "flex",
        "altText": "a",
        "contents": {
            "type": "bubble",
            "hero": {"type": "image", "url": URL, "action": ACTIONS[3]},
            "body": {
                "type": "box",
                "layout": "vertical",
                "contents": [
                    button("b"),
                    {"type": "text", "text": "t"},
                    # an icon only in a baseline box (limits.FLEX_PLACES)
                    {
                        "type": "box",
                        "layout": "baseline",
                        "contents": [{"type": "icon", "url": URL}],
                    },
                ],
            },
        },
    },
    {  # a video only as a bubble's hero ("Create a Flex Message including a video")
        "type": "flex",
        "altText": "a",
        "contents": {
            "type": "bubble",
            "hero": {
                "type": "video",
                "url": "https://example.com/v.mp4",
                "previewUrl": URL,
                "altContent": {"type": "image", "url": URL},
            },
        },
    },
]


def text_fields() -> Iterator[tuple[int, str, str]]:
    """(example number, property path, table row) of every text field in the examples."""
    for n, message in enumerate(EXAMPLES):
        for field in prose_fields(message, "messages[0]", "push"):
            limit = LIMITS.get(field.limit or "")
            if limit is not None and limit.unit in ("utf16", "grapheme"):
                yield n, field.path, limit.field


def test_examples_pass_and_cover_every_text_row_of_the_table() -> None:
    for message in EXAMPLES:
        assert problems_at([message]) == [], message
    covered = {row for _, _, row in text_fields()}
    rich_menu_only = {"richmenuswitch.data", "richmenuswitch.richMenuAliasId"}  # ACTION_PLACES
    rows = {k for k, v in LIMITS.items() if v.unit in ("utf16", "grapheme")}
    assert covered == rows - rich_menu_only


def filler(unit: str, script: str, n: int) -> str:
    """A string of exactly ``n`` units of ``unit``, written in ``script``."""
    if unit == "grapheme":
        return {"ascii": "a", "cjk": "漢", "emoji": "😀", "zwj": FAMILY}[script] * n
    if script == "ascii":
        return "a" * n
    if script == "cjk":
        return "漢" * n
    size = 2 if script == "emoji" else 8
    char = "😀" if script == "emoji" else FAMILY
    return char * (n // size) + "a" * (n % size)


def boundary_value(row: str, prefix: str, script: str, n: int) -> str:
    limit = LIMITS[row]
    value = prefix + filler(limit.unit, script, n - limit.count(prefix))
    assert limit.count(value) == n
    return value


def set_path(message: dict[str, Any], path: str, value: Any) -> None:
    parts = re.findall(r"\.(\w+)|\[(\d+)\]", path.removeprefix("messages[0]"))
    node: Any = message
    for key, index in parts[:-1]:
        node = node[key] if key else node[int(index)]
    key, index = parts[-1]
    node[key if key else int(index)] = value


CASES = [
    pytest.param(n, path, row, script, id=f"{row}-{script}")
    for n, path, row in dict.fromkeys(text_fields())
    for script in ("ascii", "cjk", "emoji", "zwj")
    if not (row == "video.trackingId" and script != "ascii")
    and LIMITS[row].high < 2**31  # a row with no stated maximum (a flex text's text)
]


@pytest.mark.parametrize(("n", "path", "row", "script"), CASES)
def test_limit_accepted_and_limit_plus_one_refused(
    sandbox_server: SandboxServer, n: int, path: str, row: str, script: str
) -> None:
    limit = LIMITS[row]
    prefix = ""
    if "Url" in path or path.endswith((".url", ".uri", ".linkUri", ".desktop", ".previewUrl")):
        prefix = "https://e.com/"
    for size, accepted in ((int(limit.high), True), (int(limit.high) + 1, False)):
        message = copy.deepcopy(EXAMPLES[n])
        set_path(message, path, boundary_value(row, prefix, script, size))
        found = problems_at([message])
        assert (path not in found) is accepted, (row, size, found)
        if accepted:
            assert found == []
        assert (path not in refused_at(sandbox_server, [message])) is accepted


# -- every enum of flex components and actions -------------------------------------------------
def enum_fields(klass: type) -> list[tuple[str, str]]:
    """(JSON property, field) of each enum the SDK model validates."""
    return [
        (field.alias, name)
        for name, field in klass.__fields__.items()
        if any(
            v.func.__name__.endswith("_validate_enum") for v in klass.__validators__.get(name, [])
        )
    ]


COMPONENTS: dict[str, dict[str, Any]] = {
    "FlexBox": {"type": "box", "layout": "vertical", "contents": []},
    "FlexButton": button("b"),
    "FlexImage": {"type": "image", "url": URL},
    "FlexIcon": {"type": "icon", "url": URL},
    "FlexText": {"type": "text", "text": "t"},
    "FlexSpan": {"type": "span", "text": "t"},
    "FlexSeparator": {"type": "separator"},
    "FlexFiller": {"type": "filler"},
    "FlexVideo": {
        "type": "video",
        "url": "https://example.com/v.mp4",
        "previewUrl": URL,
        "altContent": {"type": "image", "url": URL},
    },
}


def action_class(action: dict[str, Any]) -> type:
    return getattr(sdk, sdk.Action.get_discriminator_value(action))  # type: ignore[attr-defined]


ENUM_CASES = [
    pytest.param(name, prop, id=f"{name}.{prop}")
    for name in [*COMPONENTS, "FlexBubble"]
    for prop, _ in enum_fields(getattr(sdk, name))
] + [
    pytest.param(f"Action:{kind}", prop, id=f"{kind}.{prop}")
    for kind, prop in dict.fromkeys(
        (a["type"], prop) for a in ACTIONS for prop, _ in enum_fields(action_class(a))
    )
]


def enum_case(name: str, prop: str) -> tuple[list[dict[str, Any]], str]:
    if name == "FlexBubble":
        message = bubble({"type": "text", "text": "t"})
        message["contents"][prop] = "wrong"
        return [message], f"messages[0].contents.{prop}"
    if name.startswith("Action:"):
        action = next(a for a in ACTIONS if a["type"] == name.split(":")[1])
        message = bubble({"type": "button", "action": {**copy.deepcopy(action), prop: "wrong"}})
        return [message], f"messages[0].contents.body.contents[0].action.{prop}"
    if name == "FlexSpan":
        message = bubble({"type": "text", "contents": [{**COMPONENTS[name], prop: "wrong"}]})
        return [message], f"messages[0].contents.body.contents[0].contents[0].{prop}"
    message = bubble({**copy.deepcopy(COMPONENTS[name]), prop: "wrong"})
    return [message], f"messages[0].contents.body.contents[0].{prop}"


def test_enum_cases_cover_every_flex_and_action_model() -> None:
    """Every SDK flex component, container and action class with an enum is exercised."""
    covered = {getattr(sdk, n) for n in [*COMPONENTS, "FlexBubble"]} | {
        action_class(a) for a in ACTIONS
    }
    with_enums = {
        klass
        for klass in vars(sdk).values()
        if isinstance(klass, type)
        and issubclass(klass, (sdk.FlexComponent, sdk.FlexContainer, sdk.Action))
        and klass not in (sdk.FlexComponent, sdk.FlexContainer, sdk.Action)
        and enum_fields(klass)
    }
    assert with_enums - covered == set()
    assert len(ENUM_CASES) == sum(len(enum_fields(k)) for k in covered)


@pytest.mark.parametrize(("name", "prop"), ENUM_CASES)
def test_every_flex_and_action_enum_is_refused_when_wrong(
    sandbox_server: SandboxServer, name: str, prop: str
) -> None:
    messages, path = enum_case(name, prop)
    assert path in problems_at(messages), problems_at(messages)
    assert path in refused_at(sandbox_server, messages)


def test_counting_units() -> None:
    assert utf16_len(FAMILY) == 8 and grapheme_len(FAMILY) == 1
    assert utf16_len("漢") == 1 and grapheme_len("e\u0301") == 1


def test_placeholders_in_fields_the_limits_table_does_not_list_are_filled() -> None:
    """A ``{{column}}`` in any string value is filled per row, not only in the fields the limits
    table lists (a flex text's ``text``, a ``color``); multicast, which sends one body to many,
    refuses it. Before, such a template was sent with the literal ``Hi {{name}}`` to everyone."""
    flex = {
        "type": "flex",
        "altText": "Sale",
        "contents": {
            "type": "bubble",
            "body": {
                "type": "box",
                "layout": "vertical",
                "contents": [{"type": "text", "text": "Hi {{name}}", "color": "{{c}}"}],
            },
        },
    }
    template = MessageTemplate.parse(json.dumps(flex))
    assert template.columns == ["name", "c"]
    frame = pd.DataFrame({"name": ['Al "x"', "Bo"], "c": ["#ff0000", "#00ff00"]})
    rendered = [json.loads(body) for body in template.render(frame)]
    texts = [body[0]["contents"]["body"]["contents"][0] for body in rendered]
    assert texts == [
        {"type": "text", "text": 'Hi Al "x"', "color": "#ff0000"},
        {"type": "text", "text": "Hi Bo", "color": "#00ff00"},
    ]
    with pytest.raises(TemplateError, match=r"contents\[0\]\.text: Placeholders"):
        MessageTemplate.parse(json.dumps(flex), target="multicast", allow_placeholders=False)


# -- lone surrogates, flex forms, sender.name, one wording per rule ----------------------------
def post_raw(server: SandboxServer, body: bytes) -> requests.Response:
    return requests.post(
        f"{server.url}/v2/bot/message/validate/push",
        data=body,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        timeout=10,
    )


def test_a_lone_surrogate_is_refused_at_definition_and_by_the_sandbox(
    sandbox_server: SandboxServer,
) -> None:
    """``"Hi \\ud83d"`` is valid JSON but has no UTF-8 form: refused where it is written (it
    crashed the run with UnicodeEncodeError after every retry), with its path and reason."""
    template = '{"type": "text", "text": "Hi \\ud83d {{name}}"}'
    with pytest.raises(TemplateError, match=r"messages\[0\]\.text: Must be Unicode text"):
        MessageTemplate.parse(template)
    # The sandbox: escaped in ASCII JSON, refused at the property; as (CESU-8) bytes, the body
    # is not UTF-8 and so not JSON text at all.
    answer = post_raw(sandbox_server, b'{"messages": [{"type": "text", "text": "Hi \\ud83d"}]}')
    assert answer.status_code == 400
    assert answer.json()["details"] == [{"message": NOT_UNICODE, "property": "messages[0].text"}]
    raw = '{"messages": [{"type": "text", "text": "Hi \ud83d"}]}'.encode("utf-8", "surrogatepass")
    answer = post_raw(sandbox_server, raw)
    assert answer.status_code == 400 and "could not be parsed as JSON" in answer.json()["message"]
    # Row values are Arrow strings (UTF-8): a lone surrogate cannot be one.
    with pytest.raises(UnicodeEncodeError):
        pd.Series(["\ud83d"], dtype="string[pyarrow]")


FORMS = [  # (component, property, accepted values, refused values)
    ("text", "color", ["#00ff00", "#00FF0080"], ["red", "#0f0", "#00ff0", 5]),
    ("text", "size", ["xxs", "5xl", "12.5px"], ["huge", "10%", "6xl"]),
    ("span", "size", ["3xl", "20px"], ["50%"]),
    ("icon", "size", ["xl", "18px"], ["full"]),
    ("image", "size", ["full", "50%", "23.5px"], ["giant"]),
    ("box", "spacing", ["none", "xxl", "8px"], ["huge", "5%"]),
    ("text", "margin", ["md", "0px"], ["big", "-1px"]),
    ("box", "paddingAll", ["md", "10%", "4px"], ["roomy"]),
    ("text", "offsetTop", ["sm", "-2px", "10%"], ["abc", "2em"]),
    ("box", "cornerRadius", ["xxl", "12px"], ["round", "10%"]),
    ("box", "borderWidth", ["semi-bold", "1px"], ["thick"]),
    ("box", "backgroundColor", ["#00000000"], ["transparent"]),
    ("box", "width", ["120px", "50%"], ["md"]),
    ("image", "aspectRatio", ["1.91:1", "1:3", "100000:1"], ["wide", "1:3.01", "0:1", "1:100001"]),
    ("video", "aspectRatio", ["16:9"], ["1:100000"]),
    ("separator", "color", ["#cccccc"], ["gray"]),
    ("button", "color", ["#123456"], ["blue"]),
]
COMPONENT = {
    "text": {"type": "text", "text": "t"},
    "span": {"type": "text", "contents": [{"type": "span", "text": "s"}]},
    "icon": {"type": "box", "layout": "baseline", "contents": [{"type": "icon", "url": URL}]},
    "image": {"type": "image", "url": URL},
    "box": {"type": "box", "layout": "vertical", "contents": []},
    "separator": {"type": "separator"},
    "button": button("b"),
}


def with_form(kind: str, prop: str, value: Any) -> tuple[dict[str, Any], str]:
    """A flex message whose ``kind`` component has ``prop: value``, and that property's path."""
    where = "messages[0].contents.body.contents[0]"
    if kind == "video":
        video = {
            "type": "video",
            "url": "https://example.com/v.mp4",
            "previewUrl": URL,
            "altContent": {"type": "image", "url": URL},
            prop: value,
        }
        message = bubble({"type": "text", "text": "t"})
        message["contents"]["hero"] = video
        return message, f"messages[0].contents.hero.{prop}"
    component = copy.deepcopy(COMPONENT[kind])
    if kind in ("span", "icon"):
        component["contents"][0][prop] = value
        where += ".contents[0]"
    else:
        component[prop] = value
    return bubble(component), f"{where}.{prop}"


def test_flex_forms_and_sender_name_are_checked_as_the_reference_states(
    sandbox_server: SandboxServer,
) -> None:
    """Hex colors, size/spacing/padding/offset keywords and px/% forms, aspectRatio bounds, a
    flex text's non-empty text and sender.name's "Certain words such as LINE may not be used":
    the check (at definition) and the sandbox agree on each value."""
    cases: list[tuple[dict[str, Any], str, bool]] = []
    for kind, prop, good, bad in FORMS:
        cases += [(*with_form(kind, prop, v), True) for v in good]
        cases += [(*with_form(kind, prop, v), False) for v in bad]
    text_path = "messages[0].contents.body.contents[0].text"
    cases += [
        (bubble({"type": "text", "text": ""}), text_path, False),
        (
            bubble({"type": "text", "text": "", "contents": [{"type": "span", "text": "s"}]}),
            "",
            True,
        ),
    ]
    sender = {"type": "text", "text": "hi"}
    for name, accepted in [("LINE", False), ("Line shop", False), ("LINE公式", False),
                           ("line", False), ("Caroline", True), ("Online", True), ("Cony", True)]:  # fmt: skip
        cases.append(({**sender, "sender": {"name": name}}, "messages[0].sender.name", accepted))
    for message, path, accepted in cases:
        found, refused = problems_at([message]), refused_at(sandbox_server, [message])
        assert (path in found) is not accepted and (path in refused) is not accepted, (
            path,
            message,
            found,
        )
        if accepted:
            assert found == [] and refused == [], (message, found, refused)


def test_one_wording_per_rule_at_definition_per_row_and_in_the_sandbox(
    sandbox_server: SandboxServer,
) -> None:
    """A blank required text is "May not be empty" and an over-long one "Length must be at
    most N" wherever it is found: written in the template, rendered from a row, or sent to the
    sandbox (a blank flex button label was refused per row but accepted by the sandbox)."""
    label = "messages[0].contents.body.contents[0].action.label"
    data = "messages[0].template.actions[0].data"

    def postback(value: str) -> dict[str, Any]:
        action = {"type": "postback", "label": "go", "data": value}
        return {
            "type": "template",
            "altText": "a",
            "template": {"type": "buttons", "text": "t", "actions": [action]},
        }

    for literal, templated, value, path, words in [
        (bubble(button("   ")), bubble(button("{{v}}")), "   ", label, EMPTY),
        (bubble(button("x" * 41)), bubble(button("{{v}}")), "x" * 41, label,
         "Length must be at most 40 (grapheme clusters)"),
        (postback("d" * 301), postback("{{v}}"), "d" * 301, data, "Length must be at most 300"),
        (postback("😀" * 151), postback("{{v}}"), "😀" * 151, data, "Length must be at most 300"),
    ]:  # fmt: skip
        assert (path, words) in check_messages([literal])[0]
        answer = validate(sandbox_server, [literal])
        assert answer.status_code == 400
        assert {"message": words, "property": path} in answer.json()["details"]
        rows = MessageTemplate.parse(json.dumps(templated)).check_rows(
            pd.DataFrame({"v": [value, "ok"]})
        )
        assert [(p, m, mask.tolist()) for p, m, mask in rows] == [(path, words, [True, False])]


def test_a_placeholder_the_query_lacks_fails_before_any_row_is_read() -> None:
    """A ``{{c}}`` in a field the limits table does not list (a flex text's color), with no
    column ``c`` in the query: a clear, non-retried error naming the placeholder (``plan`` and
    ``run`` both check the columns first), not a KeyError mid-render."""
    flex = bubble({"type": "text", "text": "x", "color": "{{c}}"})
    flex["altText"] = "Hi {{name}}"
    dest = get_destination("line_messaging")
    settings = dest.settings_class(target="push_message", template_message=json.dumps(flex))
    with pytest.raises(SchemaError, match=r"no column 'c', which the message template's \{\{c\}\}"):
        check_columns(["id", "name"], dest.ruleset(settings), settings.model_dump())
