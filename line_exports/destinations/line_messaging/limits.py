"""The limits LINE states in prose, one table: field, limit, counting unit, and the doc that says so.

LINE's OpenAPI spec (and so ``line-bot-sdk``'s models, see :mod:`.structure`) carries types,
enums and required fields, but most lengths and counts only in the Messaging API reference's
prose. Each :class:`Limit` row names its field as the reference does, its bounds, and its unit:

- ``utf16``: UTF-16 code units, LINE's default ("Character counting in a text": 🍎 is 2);
- ``grapheme``: grapheme clusters (UAX #29), for the fields that page lists (action labels,
  postback ``displayText``/``fillInText``/``text``, message-action ``text``, buttons and
  carousel ``title``/``text``, confirm ``text``): 👨‍👩‍👧 is 1; counted with ``regex``'s ``\\X``;
- ``items``: array or object entries; ``bytes``: UTF-8 bytes of the JSON (flex sizes);
- ``value``: a number's bounds.

:func:`prose_fields` walks messages that already parse as LINE's models and yields each field
with its row, plus the few rules that tie fields together (an emoji's ``index`` on a ``$``,
carousel columns with the same number of actions, ``textV2`` substitution keys). An emoji's
``index`` counts UTF-16 code units, as the reference's "Text message" note states (see
:func:`dollar_positions`); ``textV2`` places emojis by ``{key}``, with no index. The exporter
(at definition and per rendered row) and the sandbox apply the same rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
import regex

Unit = Literal["utf16", "grapheme", "items", "bytes", "value"]
REF = "https://developers.line.biz/en/reference/messaging-api/"
COUNTING = "https://developers.line.biz/en/docs/messaging-api/text-character-count/"
LABELS = REF + "#action-object-label-spec"
_GRAPHEME = regex.compile(r"\X")


@dataclass(frozen=True)
class Limit:
    """One prose limit: ``field`` (as the reference names it) holds ``low``..``high`` ``unit``s."""

    field: str
    low: int | float
    high: int | float
    unit: Unit
    doc: str

    def count(self, value: Any) -> int | float:
        """The value's size in this row's unit."""
        if self.unit == "utf16":
            return utf16_len(value)
        if self.unit == "grapheme":
            return grapheme_len(value)
        if self.unit == "bytes":
            return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
        if self.unit == "items":
            return len(value)
        return value  # type: ignore[no-any-return]

    def problem(self, value: Any) -> str | None:
        """LINE-style message when the value is out of bounds, else None."""
        if self.unit == "value":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None  # types are the models' concern
            if self.low <= value <= self.high:
                return None
            return f"Must be between {self.low:g} and {self.high:g}"
        size = self.count(value)
        if self.low <= size <= self.high:
            return None
        return self.words()

    def words(self) -> str:
        if self.unit == "items":
            return f"Size must be between {self.low} and {self.high}"
        if self.unit == "bytes":
            return f"Must be at most {self.high // 1024} KB of JSON"
        unit = " (grapheme clusters)" if self.unit == "grapheme" else ""
        return f"Length must be between {self.low} and {self.high}{unit}"

    def sizes(self, values: pd.Series) -> pd.Series:
        """:meth:`count` over a column of text (one count per distinct value)."""
        if self.unit == "utf16":
            return utf16_len_series(values)
        uniques = pd.unique(values.to_numpy(dtype=object))
        return values.map({v: grapheme_len(v) for v in uniques}).astype("int64")


@dataclass(frozen=True)
class Pattern:
    """A text field's form in prose (URL schemes, IDs, colors)."""

    field: str
    pattern: str
    message: str
    doc: str

    def matches(self, value: str) -> bool:
        return re.fullmatch(self.pattern, value) is not None


def utf16_len(text: str) -> int:
    """Characters as LINE counts them by default: UTF-16 code units (an emoji outside the BMP is 2)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def utf16_len_series(values: pd.Series) -> pd.Series:
    """:func:`utf16_len` over a column."""
    return values.str.len() + values.str.count("[\U00010000-\U0010ffff]")


def grapheme_len(text: str) -> int:
    """User-perceived characters (UAX #29 extended grapheme clusters), per ``regex``'s ``\\X``."""
    return len(_GRAPHEME.findall(text))


def _limits(*rows: tuple[str, int | float, int | float, Unit, str]) -> dict[str, Limit]:
    return {
        field: Limit(field, low, high, unit, REF + anchor)
        for field, low, high, unit, anchor in rows
    }


# fmt: off
LIMITS: dict[str, Limit] = _limits(
    # field                                         low   high     unit        doc anchor
    ("text.text",                                   1,    5000,    "utf16",    "#text-message"),
    ("text.emojis",                                 0,    20,      "items",    "#text-message"),
    ("textV2.text",                                 1,    5000,    "utf16",    "#text-message-v2"),
    ("textV2.substitution",                         0,    100,     "items",    "#text-message-v2"),
    ("image.originalContentUrl",                    1,    2000,    "utf16",    "#image-message"),
    ("image.previewImageUrl",                       1,    2000,    "utf16",    "#image-message"),
    ("video.originalContentUrl",                    1,    2000,    "utf16",    "#video-message"),
    ("video.previewImageUrl",                       1,    2000,    "utf16",    "#video-message"),
    ("video.trackingId",                            1,    100,     "utf16",    "#video-message"),
    ("audio.originalContentUrl",                    1,    2000,    "utf16",    "#audio-message"),
    ("audio.duration",                              1,    2**53,   "value",    "#audio-message"),
    ("location.title",                              1,    100,     "utf16",    "#location-message"),
    ("location.address",                            1,    100,     "utf16",    "#location-message"),
    ("location.latitude",                           -90,  90,      "value",    "#location-message"),
    ("location.longitude",                          -180, 180,     "value",    "#location-message"),
    ("imagemap.baseUrl",                            1,    2000,    "utf16",    "#imagemap-message"),
    ("imagemap.altText",                            1,    1500,    "utf16",    "#imagemap-message"),
    ("imagemap.baseSize.width",                     1040, 1040,    "value",    "#imagemap-message"),
    ("imagemap.baseSize.height",                    1,    2**31,   "value",    "#imagemap-message"),
    ("imagemap.actions",                            1,    50,      "items",    "#imagemap-message"),
    ("imagemap.actions[].label",                    0,    100,     "utf16",    "#imagemap-action-objects"),
    ("imagemap.actions[].text",                     1,    400,     "utf16",    "#imagemap-message-action-object"),
    ("imagemap.actions[].linkUri",                  1,    1000,    "utf16",    "#imagemap-uri-action-object"),
    ("imagemap.actions[].clipboardText",            1,    1000,    "utf16",    "#imagemap-clipboard-action-object"),
    ("imagemap area.x|y",                           0,    2**31,   "value",    "#imagemap-area-object"),
    ("imagemap area.width|height",                  1,    2**31,   "value",    "#imagemap-area-object"),
    ("imagemap.video.originalContentUrl",           1,    2000,    "utf16",    "#imagemap-message"),
    ("imagemap.video.previewImageUrl",              1,    2000,    "utf16",    "#imagemap-message"),
    ("imagemap.video.externalLink.linkUri",         1,    1000,    "utf16",    "#imagemap-message"),
    ("imagemap.video.externalLink.label",           1,    30,      "utf16",    "#imagemap-message"),
    ("template.altText",                            1,    1500,    "utf16",    "#template-messages"),
    ("buttons.thumbnailImageUrl",                   1,    2000,    "utf16",    "#buttons"),
    ("buttons.title",                               0,    40,      "grapheme", "#buttons"),
    ("buttons.text",                                1,    160,     "grapheme", "#buttons"),
    ("buttons.text (with image or title)",          1,    60,      "grapheme", "#buttons"),
    ("buttons.actions",                             1,    4,       "items",    "#buttons"),
    ("confirm.text",                                1,    240,     "grapheme", "#confirm"),
    ("confirm.actions",                             2,    2,       "items",    "#confirm"),
    ("carousel.columns",                            1,    10,      "items",    "#carousel"),
    ("carousel.columns[].thumbnailImageUrl",        1,    2000,    "utf16",    "#column-object-for-carousel"),
    ("carousel.columns[].title",                    0,    40,      "grapheme", "#column-object-for-carousel"),
    ("carousel.columns[].text",                     1,    120,     "grapheme", "#column-object-for-carousel"),
    ("carousel.columns[].text (with image or title)", 1,  60,      "grapheme", "#column-object-for-carousel"),
    ("carousel.columns[].actions",                  1,    3,       "items",    "#column-object-for-carousel"),
    ("image_carousel.columns",                      1,    10,      "items",    "#image-carousel"),
    ("image_carousel.columns[].imageUrl",           1,    2000,    "utf16",    "#column-object-for-image-carousel"),
    ("action.label (buttons, confirm, carousel)",   1,    20,      "grapheme", "#action-object-label-spec"),
    ("action.label (defaultAction)",                0,    20,      "grapheme", "#action-object-label-spec"),
    ("action.label (image carousel)",               0,    12,      "grapheme", "#action-object-label-spec"),
    ("action.label (quick reply)",                  1,    20,      "grapheme", "#action-object-label-spec"),
    ("action.label (flex button)",                  1,    40,      "grapheme", "#action-object-label-spec"),
    ("action.label (flex, other)",                  0,    40,      "grapheme", "#action-object-label-spec"),
    ("postback.data",                               0,    300,     "utf16",    "#postback-action"),
    ("postback.displayText",                        0,    300,     "grapheme", "#postback-action"),
    ("postback.text",                               0,    300,     "grapheme", "#postback-action"),
    ("postback.fillInText",                         0,    300,     "grapheme", "#postback-action"),
    ("message action.text",                         1,    300,     "grapheme", "#message-action"),
    ("uri action.uri",                              1,    1000,    "utf16",    "#uri-action"),
    ("uri action.altUri.desktop",                   1,    1000,    "utf16",    "#uri-action"),
    ("datetimepicker.data",                         0,    300,     "utf16",    "#datetime-picker-action"),
    ("richmenuswitch.data",                         0,    300,     "utf16",    "#richmenu-switch-action"),
    ("richmenuswitch.richMenuAliasId",              1,    32,      "utf16",    "#richmenu-switch-action"),
    ("clipboard.clipboardText",                     1,    1000,    "utf16",    "#clipboard-action"),
    ("quickReply.items",                            1,    13,      "items",    "#items-object"),
    ("quickReply.items[].imageUrl",                 1,    2000,    "utf16",    "#items-object"),
    ("sender.name",                                 1,    20,      "utf16",    "#icon-nickname-switch"),
    ("sender.iconUrl",                              1,    2000,    "utf16",    "#icon-nickname-switch"),
    ("flex.altText",                                1,    1500,    "utf16",    "#flex-message"),
    ("flex bubble",                                 0,    30 * 1024, "bytes",  "#f-bubble"),
    ("flex carousel",                               0,    50 * 1024, "bytes",  "#f-carousel"),
    ("flex carousel.contents",                      1,    12,      "items",    "#f-carousel"),
    ("flex image|icon.url",                         1,    2000,    "utf16",    "#f-image"),
    ("flex video.url|previewUrl",                   1,    2000,    "utf16",    "#f-video"),
)
# fmt: on

_HTTPS = Pattern("https URL", r"https://\S+", "Must be an HTTPS URL", REF + "#image-message")
_URI = Pattern(
    "action URI",
    r"(?:https?|line|tel):\S+",
    "Must be an http, https, line or tel URI",
    REF + "#uri-action",
)
PATTERNS: dict[str, Pattern] = {
    p.field: p
    for p in (
        _HTTPS,
        _URI,
        Pattern(
            "video.trackingId",
            r"[A-Za-z0-9\-.=,+*()%$&;:@{}!?<>\[\]]+",
            "Must be half-width alphanumerics and -.=,+*()%$&;:@{}!?<>[]",
            REF + "#video-message",
        ),
        Pattern("color", r"#[0-9A-Fa-f]{6}", "Must be #RRGGBB", REF + "#buttons"),
        Pattern(
            "imageAspectRatio",
            r"rectangle|square",
            "Must be one of the following values: [rectangle, square]",
            REF + "#buttons",
        ),
        Pattern(
            "imageSize",
            r"cover|contain",
            "Must be one of the following values: [cover, contain]",
            REF + "#buttons",
        ),
        Pattern(
            "mentionee.userId",
            r"U[0-9a-f]{32}",
            "Must be a LINE user ID (U and 32 hex digits)",
            REF + "#text-message-v2-mentionee-user",
        ),
    )
}
SUBSTITUTION_KEY = re.compile(r"[0-9a-zA-Z_]{1,20}")
_URL_FIELDS = {  # limit rows whose value is an HTTPS URL (LINE fetches it)
    "image.originalContentUrl", "image.previewImageUrl", "video.originalContentUrl",
    "video.previewImageUrl", "audio.originalContentUrl", "imagemap.baseUrl",
    "imagemap.video.originalContentUrl", "imagemap.video.previewImageUrl",
    "buttons.thumbnailImageUrl", "carousel.columns[].thumbnailImageUrl",
    "image_carousel.columns[].imageUrl", "quickReply.items[].imageUrl", "sender.iconUrl",
    "flex image|icon.url", "flex video.url|previewUrl",
}  # fmt: skip
_URI_FIELDS = {
    "imagemap.actions[].linkUri",
    "imagemap.video.externalLink.linkUri",
    "uri action.uri",
    "uri action.altUri.desktop",
}


@dataclass(frozen=True)
class Field:
    """One field of a message under a row of the table: its path, row key and value.

    ``limit`` is a :data:`LIMITS` key (or None), ``patterns`` :data:`PATTERNS` keys; ``problem``
    set means the walk found a rule broken that ties fields together (``value`` is unused)."""

    path: str
    value: Any
    limit: str | None = None
    patterns: tuple[str, ...] = ()
    problem: str | None = None


def patterns_of(limit: str) -> tuple[str, ...]:
    if limit in _URL_FIELDS:
        return ("https URL",)
    if limit in _URI_FIELDS:
        return ("action URI",)
    if limit == "video.trackingId":
        return ("video.trackingId",)
    return ()


def _field(obj: dict[str, Any], key: str, path: str, limit: str) -> Iterator[Field]:
    if key in obj and obj[key] is not None:
        yield Field(f"{path}.{key}", obj[key], limit, patterns_of(limit))


def _broken(path: str, message: str) -> Field:
    return Field(path, None, problem=message)


def prose_fields(message: dict[str, Any], path: str, target: str) -> Iterator[Field]:
    """Every field of one message the table covers (the message parses as LINE's models)."""
    yield from _BY_TYPE[message["type"]](message, path, target)
    quick = message.get("quickReply")
    if quick is not None:
        items = quick.get("items") or []
        yield Field(f"{path}.quickReply.items", items, "quickReply.items")
        for j, item in enumerate(items):
            where = f"{path}.quickReply.items[{j}]"
            if item.get("action") is None:
                yield _broken(f"{where}.action", "Must not be null")
            else:
                yield from _action(item["action"], f"{where}.action", "quick reply")
            yield from _field(item, "imageUrl", where, "quickReply.items[].imageUrl")
    sender = message.get("sender")
    if sender is not None:
        yield from _field(sender, "name", f"{path}.sender", "sender.name")
        yield from _field(sender, "iconUrl", f"{path}.sender", "sender.iconUrl")


def _text(m: dict[str, Any], path: str, target: str) -> Iterator[Field]:
    yield from _field(m, "text", path, "text.text")
    emojis = m.get("emojis")
    if emojis is not None:
        yield Field(f"{path}.emojis", emojis, "text.emojis")
        seen: set[int] = set()
        for j, emoji in enumerate(emojis):
            where = f"{path}.emojis[{j}]"
            for key in ("index", "productId", "emojiId"):
                if emoji.get(key) is None:
                    yield _broken(f"{where}.{key}", "Must not be null")
            index = emoji.get("index")
            if not isinstance(index, int):
                continue
            if index in seen:
                yield _broken(f"{where}.index", "Two emojis must not share an index")
            elif index not in dollar_positions(m["text"]):
                yield _broken(
                    f"{where}.index", "Must be the position of a $ in text (UTF-16 units)"
                )
            seen.add(index)


def _text_v2(m: dict[str, Any], path: str, target: str) -> Iterator[Field]:
    yield from _field(m, "text", path, "textV2.text")
    substitution = m.get("substitution") or {}
    yield Field(f"{path}.substitution", substitution, "textV2.substitution")
    counts = {"mention": 0, "emoji": 0}
    for key, value in substitution.items():
        where = f"{path}.substitution.{key}"
        if not SUBSTITUTION_KEY.fullmatch(key):
            yield _broken(where, "Key must be 1-20 half-width alphanumerics or underscores")
        kind = value.get("type")
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "mention":
            if target not in ("push", "reply"):
                yield _broken(where, "Mention objects can only be used in reply or push messages")
            mentionee = value["mentionee"]
            if mentionee.get("type") == "user":
                yield Field(
                    f"{where}.mentionee.userId", mentionee["userId"], None, ("mentionee.userId",)
                )
        elif kind == "emoji":
            for name in ("productId", "emojiId"):
                if value.get(name) is None:
                    yield _broken(f"{where}.{name}", "Must not be null")
    if counts["mention"] > 20 or counts["emoji"] > 20:
        yield _broken(
            f"{path}.substitution", "At most 20 mentions and 20 emojis can be substituted"
        )


def _sticker(m: dict[str, Any], path: str, target: str) -> Iterator[Field]:
    yield from ()


def _image(m: dict[str, Any], path: str, target: str) -> Iterator[Field]:
    yield from _field(m, "originalContentUrl", path, "image.originalContentUrl")
    yield from _field(m, "previewImageUrl", path, "image.previewImageUrl")


def _video(m: dict[str, Any], path: str, target: str) -> Iterator[Field]:
    yield from _field(m, "originalContentUrl", path, "video.originalContentUrl")
    yield from _field(m, "previewImageUrl", path, "video.previewImageUrl")
    yield from _field(m, "trackingId", path, "video.trackingId")


def _audio(m: dict[str, Any], path: str, target: str) -> Iterator[Field]:
    yield from _field(m, "originalContentUrl", path, "audio.originalContentUrl")
    yield from _field(m, "duration", path, "audio.duration")


def _location(m: dict[str, Any], path: str, target: str) -> Iterator[Field]:
    for key in ("title", "address", "latitude", "longitude"):
        yield from _field(m, key, path, f"location.{key}")


def _area(obj: dict[str, Any], path: str) -> Iterator[Field]:
    area = obj.get("area") or {}
    for key in ("x", "y"):
        yield from _field(area, key, f"{path}.area", "imagemap area.x|y")
    for key in ("width", "height"):
        yield from _field(area, key, f"{path}.area", "imagemap area.width|height")


def _imagemap(m: dict[str, Any], path: str, target: str) -> Iterator[Field]:
    yield from _field(m, "baseUrl", path, "imagemap.baseUrl")
    yield from _field(m, "altText", path, "imagemap.altText")
    yield from _field(m["baseSize"], "width", f"{path}.baseSize", "imagemap.baseSize.width")
    yield from _field(m["baseSize"], "height", f"{path}.baseSize", "imagemap.baseSize.height")
    yield Field(f"{path}.actions", m["actions"], "imagemap.actions")
    for j, action in enumerate(m["actions"]):
        where = f"{path}.actions[{j}]"
        yield from _field(action, "label", where, "imagemap.actions[].label")
        for key in ("text", "linkUri", "clipboardText"):
            yield from _field(action, key, where, f"imagemap.actions[].{key}")
        yield from _area(action, where)
    video = m.get("video")
    if video is not None:
        where = f"{path}.video"
        yield from _field(video, "originalContentUrl", where, "imagemap.video.originalContentUrl")
        yield from _field(video, "previewImageUrl", where, "imagemap.video.previewImageUrl")
        yield from _area(video, where)
        link = video.get("externalLink")
        if link is not None:
            for key in ("linkUri", "label"):
                yield from _field(
                    link, key, f"{where}.externalLink", f"imagemap.video.externalLink.{key}"
                )


def _has_header(obj: dict[str, Any]) -> bool:
    return bool(obj.get("thumbnailImageUrl") or obj.get("title"))


def _template(m: dict[str, Any], path: str, target: str) -> Iterator[Field]:
    yield from _field(m, "altText", path, "template.altText")
    t, where = m["template"], f"{path}.template"
    kind = t["type"]
    if kind == "buttons":
        yield from _field(t, "thumbnailImageUrl", where, "buttons.thumbnailImageUrl")
        yield from _image_settings(t, where)
        yield from _field(t, "title", where, "buttons.title")
        text = "buttons.text (with image or title)" if _has_header(t) else "buttons.text"
        yield from _field(t, "text", where, text)
        yield from _actions(t, where, "buttons.actions")
        if t.get("defaultAction") is not None:
            yield from _action(t["defaultAction"], f"{where}.defaultAction", "defaultAction")
    elif kind == "confirm":
        yield from _field(t, "text", where, "confirm.text")
        yield from _actions(t, where, "confirm.actions")
    elif kind == "carousel":
        yield Field(f"{where}.columns", t["columns"], "carousel.columns")
        yield from _image_settings(t, where)
        counts = set()
        for j, column in enumerate(t["columns"]):
            cw = f"{where}.columns[{j}]"
            yield from _field(
                column, "thumbnailImageUrl", cw, "carousel.columns[].thumbnailImageUrl"
            )
            yield from _image_settings(column, cw)
            yield from _field(column, "title", cw, "carousel.columns[].title")
            text = "carousel.columns[].text"
            yield from _field(
                column, "text", cw, text + (" (with image or title)" if _has_header(column) else "")
            )
            yield from _actions(column, cw, "carousel.columns[].actions")
            if column.get("defaultAction") is not None:
                yield from _action(column["defaultAction"], f"{cw}.defaultAction", "defaultAction")
            counts.add(len(column["actions"]))
        if len(counts) > 1:
            yield _broken(f"{where}.columns", "Every column must have the same number of actions")
    elif kind == "image_carousel":
        yield Field(f"{where}.columns", t["columns"], "image_carousel.columns")
        for j, column in enumerate(t["columns"]):
            cw = f"{where}.columns[{j}]"
            yield from _field(column, "imageUrl", cw, "image_carousel.columns[].imageUrl")
            yield from _action(column["action"], f"{cw}.action", "image carousel")


def _image_settings(obj: dict[str, Any], path: str) -> Iterator[Field]:
    """A template's image settings the spec enumerates only in prose."""
    if obj.get("imageBackgroundColor") is not None:
        yield Field(f"{path}.imageBackgroundColor", obj["imageBackgroundColor"], None, ("color",))
    for key in ("imageAspectRatio", "imageSize"):
        if obj.get(key) is not None:
            yield Field(f"{path}.{key}", obj[key], None, (key,))


def _actions(obj: dict[str, Any], path: str, limit: str) -> Iterator[Field]:
    yield Field(f"{path}.actions", obj["actions"], limit)
    for j, action in enumerate(obj["actions"]):
        yield from _action(action, f"{path}.actions[{j}]", "buttons, confirm, carousel")


def _action(action: dict[str, Any], path: str, place: str) -> Iterator[Field]:
    """An action object; ``place`` picks its label's row ("Specifications of the label")."""
    kind = action["type"]
    yield from _field(action, "label", path, f"action.label ({place})")
    if "label" not in action and LIMITS[f"action.label ({place})"].low > 0:
        yield _broken(f"{path}.label", "Must not be null")
    if kind == "postback":
        for key in ("data", "displayText", "text", "fillInText"):
            yield from _field(action, key, path, f"postback.{key}")
    elif kind == "message":
        yield from _field(action, "text", path, "message action.text")
    elif kind == "uri":
        yield from _field(action, "uri", path, "uri action.uri")
        alt = action.get("altUri")
        if alt is not None:
            yield from _field(alt, "desktop", f"{path}.altUri", "uri action.altUri.desktop")
    elif kind in ("datetimepicker", "richmenuswitch"):
        yield from _field(action, "data", path, f"{kind}.data")
        if kind == "richmenuswitch":
            yield from _field(action, "richMenuAliasId", path, "richmenuswitch.richMenuAliasId")
    elif kind == "clipboard":
        yield from _field(action, "clipboardText", path, "clipboard.clipboardText")


def _flex(m: dict[str, Any], path: str, target: str) -> Iterator[Field]:
    yield from _field(m, "altText", path, "flex.altText")
    contents, where = m["contents"], f"{path}.contents"
    if contents["type"] == "bubble":
        yield Field(where, contents, "flex bubble")
        yield from _bubble(contents, where)
    else:
        yield Field(where, contents, "flex carousel")
        yield Field(f"{where}.contents", contents["contents"], "flex carousel.contents")
        for j, bubble in enumerate(contents["contents"]):
            yield from _bubble(bubble, f"{where}.contents[{j}]")


def _bubble(bubble: dict[str, Any], path: str) -> Iterator[Field]:
    for block in ("header", "hero", "body", "footer"):
        if bubble.get(block) is not None:
            yield from _component(bubble[block], f"{path}.{block}")
    if bubble.get("action") is not None:
        yield from _action(bubble["action"], f"{path}.action", "flex, other")


def _component(comp: dict[str, Any], path: str) -> Iterator[Field]:
    kind = comp["type"]
    if comp.get("action") is not None:
        place = "flex button" if kind == "button" else "flex, other"
        yield from _action(comp["action"], f"{path}.action", place)
    if kind == "box":
        for j, child in enumerate(comp["contents"]):
            yield from _component(child, f"{path}.contents[{j}]")
    elif kind in ("image", "icon"):
        yield from _field(comp, "url", path, "flex image|icon.url")
    elif kind == "video":
        yield from _field(comp, "url", path, "flex video.url|previewUrl")
        yield from _field(comp, "previewUrl", path, "flex video.url|previewUrl")
        yield from _component(comp["altContent"], f"{path}.altContent")
    elif kind == "text" and comp.get("text") is None and not comp.get("contents"):
        yield _broken(f"{path}.text", "Must not be null (unless contents holds spans)")


_BY_TYPE = {
    "text": _text,
    "textV2": _text_v2,
    "sticker": _sticker,
    "image": _image,
    "video": _video,
    "audio": _audio,
    "location": _location,
    "imagemap": _imagemap,
    "template": _template,
    "flex": _flex,
}


def dollar_positions(text: str) -> set[int]:
    """UTF-16 positions of each ``$`` in a text (where a text message's LINE emojis go).

    LINE's Messaging API reference, "Text message" (note "Number of characters and index
    position of emojis"; ``line/line-developers-docs-source``
    ``docs/en/reference/messaging-api/index.html.md``): "The number of characters and index
    position of emojis in text set to the property must be the number and position of the code
    unit when encoded in UTF-16." So 😀 before a ``$`` moves it by 2, not 1."""
    positions, at = set(), 0
    for ch in text:
        if ch == "$":
            positions.add(at)
        at += 2 if ord(ch) > 0xFFFF else 1
    return positions
