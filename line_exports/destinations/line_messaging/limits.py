"""The limits LINE states in prose, one table: field, limit, counting unit, and the doc that says so.

LINE's OpenAPI spec (and so ``line-bot-sdk``'s models, see :mod:`.structure`) carries types,
enums and required fields, but most lengths, counts and forms only in the Messaging API
reference's prose. Each :class:`Limit` row names its field as the reference does, its bounds,
and its unit:

- ``utf16``: UTF-16 code units, LINE's default ("Character counting in a text": 🍎 is 2);
- ``grapheme``: grapheme clusters (UAX #29), for the fields that page lists (action labels,
  postback ``displayText``/``fillInText``/``text``, message-action ``text``, buttons and
  carousel ``title``/``text``, confirm ``text``): 👨‍👩‍👧 is 1; counted with ``regex``'s ``\\X``;
- ``items``: array or object entries; ``bytes``: UTF-8 bytes of the JSON (flex sizes);
- ``value``: a number's bounds.

Each :class:`Pattern` row is a text field's form (URL schemes, IDs, hex colors, the flex
reference's size/spacing/offset keywords and ``px``/``%`` forms, ``aspectRatio``), and
:data:`FLEX_FORMS` says which flex property takes which form. A text field's problems have one
wording wherever they are found (at definition, per rendered row, in the sandbox): an empty or
blank required value is :data:`EMPTY`, an over-long one :meth:`Limit.words`.

Which field of a message falls under which row is :mod:`.fields`' walk.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
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

    @property
    def required(self) -> bool:
        """A text row whose value must hold something (``low`` of 1 or more)."""
        return self.unit in ("utf16", "grapheme") and self.low > 0

    def problem(self, value: Any) -> str | None:
        """LINE-style message when the value is out of bounds, else None."""
        if self.unit == "value":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None  # types are the models' concern
            if self.low <= value <= self.high:
                return None
            return f"Must be between {self.low:g} and {self.high:g}"
        if self.required and isinstance(value, str) and not value.strip():
            return EMPTY
        size = self.count(value)
        if self.low <= size <= self.high:
            return None
        return self.words()

    def words(self) -> str:
        """The problem of a value over ``high`` (the one wording, whoever finds it)."""
        if self.unit == "items":
            return f"Size must be between {self.low} and {self.high}"
        if self.unit == "bytes":
            return f"Must be at most {self.high // 1024} KB of JSON"
        unit = " (grapheme clusters)" if self.unit == "grapheme" else ""
        return f"Length must be at most {self.high}{unit}"

    def sizes(self, values: pd.Series) -> pd.Series:
        """:meth:`count` over a column of text (one count per distinct value)."""
        if self.unit == "utf16":
            return utf16_len_series(values)
        uniques = pd.unique(values.to_numpy(dtype=object))
        return values.map({v: grapheme_len(v) for v in uniques}).astype("int64")


EMPTY = "May not be empty"
"""The problem of a required text field that is empty or only whitespace, as LINE words it
(``{"message": "May not be empty", "property": "messages[0].text"}``), at definition, per
rendered row and in the sandbox alike."""


@dataclass(frozen=True)
class Pattern:
    """A text field's form in prose (URL schemes, IDs, colors, flex sizes): a regular
    expression the whole value must match, and ``test`` when the form has bounds a regular
    expression does not say (an ``aspectRatio``'s width and height)."""

    field: str
    pattern: str
    message: str
    doc: str
    test: Callable[[str], bool] | None = None

    def matches(self, value: str) -> bool:
        if re.fullmatch(self.pattern, value) is None:
            return False
        return self.test is None or self.test(value)

    def mask(self, values: pd.Series) -> np.ndarray:
        """:meth:`matches` over a column (True where the value has the form; NA is False)."""
        ok = values.str.fullmatch(self.pattern).to_numpy(dtype=bool, na_value=False)
        if self.test is not None and ok.any():
            text = values.fillna("")
            uniques = pd.unique(text.to_numpy(dtype=object))
            tested = text.map({v: self.matches(v) for v in uniques}).to_numpy(dtype=bool)
            ok &= tested
        return ok


_SURROGATE = re.compile("[\ud800-\udfff]")
NOT_UNICODE = (
    "Must be Unicode text: holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape without "
    "its pair), which UTF-8 cannot encode"
)
"""The problem of a string with a lone surrogate. JSON text is UTF-8 (RFC 8259 section 8.1) and
a lone surrogate has no UTF-8 form, so such a body cannot reach LINE as JSON; a valid JSON
template such as ``"Hi \\ud83d"`` is refused at definition, a row value per row."""


def lone_surrogate(text: str) -> bool:
    """True when ``text`` holds a UTF-16 surrogate code point (never valid in UTF-8)."""
    return _SURROGATE.search(text) is not None


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
    # "Be sure to set either one of the text property or contents property" (no maximum stated)
    ("flex text.text (without contents)",           1,    2**31,   "utf16",    "#f-text"),
)
# fmt: on

# The flex forms, from the reference's component tables (#bubble-style, #box, #button, #f-image,
# #f-video, #icon, #f-text, #span, #separator) and the pages they point to for the accepted
# values ("Flex Message layout": #image-size, #other-component-size, #padding-property,
# #spacing-property, #margin-property, #component-offset, #box-width, #box-height).
FLEX = "https://developers.line.biz/en/docs/messaging-api/flex-message-layout/"
_STEPS = "none|xs|sm|md|lg|xl|xxl"
_SIZES = "xxs|xs|sm|md|lg|xl|xxl|3xl|4xl|5xl"
_PX = r"\d+(?:\.\d+)?px"  # "Positive integer or decimal number suffixed with px" (0px too)
_PCT = r"\d+(?:\.\d+)?%"


def _one_of(values: str, *forms: str) -> str:
    return "|".join((values, *forms))


def _ratio(value: str) -> bool:
    """``{width}:{height}``, each 1 to 100000, the height at most three times the width."""
    width, height = (float(part) for part in value.split(":"))
    return 1 <= width <= 100_000 and 1 <= height <= 100_000 and height <= 3 * width


_FLEX_PATTERNS = (
    Pattern(
        "flex color",
        r"#[0-9A-Fa-f]{6}(?:[0-9A-Fa-f]{2})?",
        "Must be a hexadecimal color code: #RRGGBB or #RRGGBBAA",
        REF + "#box",
    ),
    Pattern(
        "flex image size",
        _one_of(_SIZES + "|full", _PX, _PCT),
        f"Must be one of {_SIZES.replace('|', ', ')}, full, or a size in px or %",
        FLEX + "#image-size",
    ),
    Pattern(
        "flex icon|text|span size",
        _one_of(_SIZES, _PX),
        f"Must be one of {_SIZES.replace('|', ', ')}, or a size in px",
        FLEX + "#other-component-size",
    ),
    Pattern(
        "flex spacing|margin",
        _one_of(_STEPS, _PX),
        f"Must be one of {_STEPS.replace('|', ', ')}, or a size in px",
        FLEX + "#spacing-property",
    ),
    Pattern(
        "flex padding",
        _one_of(_STEPS, _PX, _PCT),
        f"Must be one of {_STEPS.replace('|', ', ')}, or a size in px or %",
        FLEX + "#padding-property",
    ),
    Pattern(
        "flex offset",  # negative offsets move the other way (LINE's own samples use -2px)
        _one_of(_STEPS, "-?" + _PX, "-?" + _PCT),
        f"Must be one of {_STEPS.replace('|', ', ')}, or an offset in px or %",
        FLEX + "#component-offset",
    ),
    Pattern(
        "flex cornerRadius",
        _one_of(_STEPS, _PX),
        f"Must be one of {_STEPS.replace('|', ', ')}, or a radius in px",
        REF + "#box",
    ),
    Pattern(
        "flex borderWidth",
        _one_of("none|light|normal|medium|semi-bold|bold", _PX),
        "Must be one of none, light, normal, medium, semi-bold, bold, or a width in px",
        REF + "#box",
    ),
    Pattern(
        "flex box width|height",
        _one_of(_PX, _PCT),
        "Must be a size in px or %",
        FLEX + "#box-width",
    ),
    Pattern("flex lineSpacing", _PX, "Must be a positive number ending in px", REF + "#f-text"),
    Pattern(
        "flex background.angle",
        r"\d+(?:\.\d+)?deg",
        "Must be an angle from 0deg up to (not including) 360deg",
        REF + "#box",
        lambda value: float(value[:-3]) < 360,
    ),
    Pattern(
        "flex background.centerPosition",
        _PCT,
        "Must be a percentage from 0% to 100%",
        REF + "#box",
        lambda value: float(value[:-1]) <= 100,
    ),
    Pattern(
        "flex aspectRatio",
        r"\d+(?:\.\d+)?:\d+(?:\.\d+)?",
        "Must be {width}:{height}, each 1 to 100000, the height at most 3 times the width",
        REF + "#f-image",
        _ratio,
    ),
)
# Enums line-bot-sdk's validators do not enforce: its generated check for a one-value enum,
# ``value not in ('shrink-to-fit')``, tests a substring of a str, not membership of a 1-tuple
# (line-bot-sdk 3.27.0, ``flex_text.py``/``flex_button.py``), so "shrink", "fit" and "" pass.
# LINE's spec (``messaging-api.yml``, FlexText/FlexButton ``adjustMode``: ``enum: [shrink-to-fit]``)
# allows the one value. ``line_exports_tests`` scans the installed SDK for every such validator
# of a message model and checks each is a row here.
SDK_ONE_VALUE_ENUMS = (
    Pattern(
        "flex adjustMode",
        r"shrink-to-fit",
        "Must be one of the following values: [shrink-to-fit]",
        "https://github.com/line/line-openapi/blob/main/messaging-api.yml",
    ),
)
_OFFSETS = {f"offset{side}": "flex offset" for side in ("Top", "Bottom", "Start", "End")}
_PLACED = {"margin": "flex spacing|margin", **_OFFSETS}
FLEX_FORMS: dict[str, dict[str, str]] = {
    # flex object (component ``type``, or the bubble's block style) -> property -> form
    "block style": {"backgroundColor": "flex color", "separatorColor": "flex color"},
    "box": {
        "backgroundColor": "flex color",
        "borderColor": "flex color",
        "borderWidth": "flex borderWidth",
        "cornerRadius": "flex cornerRadius",
        **dict.fromkeys(("width", "maxWidth", "height", "maxHeight"), "flex box width|height"),
        "spacing": "flex spacing|margin",
        **dict.fromkeys(
            ("paddingAll", "paddingTop", "paddingBottom", "paddingStart", "paddingEnd"),
            "flex padding",
        ),
        **_PLACED,
    },
    "background": {
        "angle": "flex background.angle",
        "startColor": "flex color",
        "endColor": "flex color",
        "centerColor": "flex color",
        "centerPosition": "flex background.centerPosition",
    },
    "button": {"color": "flex color", "adjustMode": "flex adjustMode", **_PLACED},
    "image": {
        "size": "flex image size",
        "aspectRatio": "flex aspectRatio",
        "backgroundColor": "flex color",
        **_PLACED,
    },
    "video": {"aspectRatio": "flex aspectRatio"},
    "icon": {"size": "flex icon|text|span size", "aspectRatio": "flex aspectRatio", **_PLACED},
    "text": {
        "size": "flex icon|text|span size",
        "color": "flex color",
        "lineSpacing": "flex lineSpacing",
        "adjustMode": "flex adjustMode",
        **_PLACED,
    },
    "span": {"size": "flex icon|text|span size", "color": "flex color"},
    "separator": {"color": "flex color", "margin": "flex spacing|margin"},
}


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
        Pattern(
            "sender.name",
            # "Certain words such as LINE may not be used": LINE as a word, in any case
            # ("LINE", "Line", "LINE公式"), not inside another word ("Caroline", "Online").
            r"(?s)(?!.*(?<![A-Za-z])[Ll][Ii][Nn][Ee](?![A-Za-z])).*",
            "Certain words such as LINE may not be used",
            REF + "#icon-nickname-switch",
        ),
        *_FLEX_PATTERNS,
        *SDK_ONE_VALUE_ENUMS,
    )
}
SUBSTITUTION_KEY = re.compile(r"[0-9a-zA-Z_]{1,20}")
URL_FIELDS = {  # limit rows whose value is an HTTPS URL (LINE fetches it)
    "image.originalContentUrl", "image.previewImageUrl", "video.originalContentUrl",
    "video.previewImageUrl", "audio.originalContentUrl", "imagemap.baseUrl",
    "imagemap.video.originalContentUrl", "imagemap.video.previewImageUrl",
    "buttons.thumbnailImageUrl", "carousel.columns[].thumbnailImageUrl",
    "image_carousel.columns[].imageUrl", "quickReply.items[].imageUrl", "sender.iconUrl",
    "flex image|icon.url", "flex video.url|previewUrl",
}  # fmt: skip
URI_FIELDS = {
    "imagemap.actions[].linkUri",
    "imagemap.video.externalLink.linkUri",
    "uri action.uri",
    "uri action.altUri.desktop",
}


# The datetime picker's forms, per ``mode`` (#datetime-picker-action, "Date and time format"):
# RFC 3339 ``full-date`` 1900-01-01..2100-12-31, ``time-hour:time-minute`` 00:00..23:59, and
# ``full-date`` ``T`` or ``t`` ``time-hour:time-minute``.
_DATE, _TIME = r"\d{4}-\d{2}-\d{2}", r"\d{2}:\d{2}"


def _full_date(value: str) -> bool:
    """A real calendar day from 1900-01-01 to 2100-12-31 (``YYYY-MM-DD``)."""
    year, month, day = (int(part) for part in value.split("-"))
    if not (1900 <= year <= 2100 and 1 <= month <= 12):
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]
    return 1 <= day <= days


def _time(value: str) -> bool:
    hour, minute = (int(part) for part in value.split(":"))
    return hour <= 23 and minute <= 59


DATETIME_FORMS = {  # datetime picker ``mode`` -> the PATTERNS row its initial/min/max take
    mode: f"datetimepicker {mode}" for mode in ("date", "time", "datetime")
}
PATTERNS.update(
    {
        p.field: p
        for p in (
            Pattern(
                "datetimepicker date",
                _DATE,
                "Must be a date (full-date) from 1900-01-01 to 2100-12-31, such as 2017-06-18",
                REF + "#datetime-picker-action",
                _full_date,
            ),
            Pattern(
                "datetimepicker time",
                _TIME,
                "Must be a time (time-hour:time-minute) from 00:00 to 23:59, such as 06:15",
                REF + "#datetime-picker-action",
                _time,
            ),
            Pattern(
                "datetimepicker datetime",
                f"{_DATE}[Tt]{_TIME}",
                "Must be a date and time from 1900-01-01T00:00 to 2100-12-31T23:59, "
                "such as 2017-06-18T06:15",
                REF + "#datetime-picker-action",
                lambda value: _full_date(value[:10]) and _time(value[11:]),
            ),
        )
    }
)


@dataclass(frozen=True)
class Rule:
    """A rule LINE states between fields (mutually required, alike in every column, ordered).

    ``test`` gets the fields' values by name (None where a field is absent; a bool where only
    presence matters) and is True when they keep the rule. :mod:`.fields`' walk names the
    values and the path the problem is reported at; ``message`` is the one wording, at
    definition, per rendered row (a value filled from a placeholder) and in the sandbox."""

    name: str
    message: str
    doc: str
    test: Callable[[dict[str, Any]], bool]


def _used(value: Any) -> bool:
    """A column "uses" a title or image when it holds a non-empty one."""
    return value is not None and value != ""


def _alike_use(values: dict[str, Any]) -> bool:
    return len({_used(v) for v in values.values()}) <= 1


def _ordered(values: dict[str, Any]) -> bool:
    """``min`` < ``max`` when both have their mode's form (a bad form is its own problem)."""
    form = PATTERNS.get(DATETIME_FORMS.get(values["mode"], ""))
    low, high = values["min"], values["max"]
    if form is None or not all(isinstance(v, str) and form.matches(v) for v in (low, high)):
        return True
    return bool(low.upper() < high.upper())  # one fixed-width form: text order is time order


_COLUMN = REF + "#column-object-for-carousel"
_IMAGEMAP = REF + "#imagemap-message"
RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        # "Keep the number of actions consistent for all columns. If you use an image or title
        # for a column, make sure to do the same for all other columns." (note under the table)
        Rule(
            "carousel columns: actions alike",
            "Every column must have the same number of actions",
            _COLUMN,
            lambda values: len(set(values.values())) <= 1,
        ),
        Rule(
            "carousel columns: title alike",
            "Every column must have a title, or none may (a title in one column needs one in all)",
            _COLUMN,
            _alike_use,
        ),
        Rule(
            "carousel columns: thumbnailImageUrl alike",
            "Every column must have a thumbnailImageUrl, or none may "
            "(an image in one column needs one in all)",
            _COLUMN,
            _alike_use,
        ),
        # "*1 This property is required if you set a video to play on the imagemap."
        # (video.originalContentUrl, video.previewImageUrl, video.area.*)
        Rule(
            "imagemap video: *1",
            "Must not be null when video is set",
            _IMAGEMAP,
            lambda values: bool(values["present"]),
        ),
        # "*2 This property is required if you set a video to play and a label to display
        # after the video on the imagemap." (video.externalLink.linkUri, .label)
        Rule(
            "imagemap video: *2",
            "Must not be null when video.externalLink is set",
            _IMAGEMAP,
            lambda values: bool(values["present"]),
        ),
        # Postback action, displayText and text: "The displayText and text properties can't
        # both be used at the same time." A property is used when the object has it (values
        # are presence): a placeholder fills a string, it never removes a key, so the rule is
        # decided when the export is defined, the same for every row.
        Rule(
            "postback: displayText or text",
            "The displayText and text properties can't both be used at the same time",
            REF + "#postback-action",
            lambda values: sum(bool(v) for v in values.values()) <= 1,
        ),
        # "Send narrowcast message", Logical operator objects (recipient and demographic filter
        # alike): "Be sure to specify only one of these three properties (and, or, or not)."
        Rule(
            "operator: one of and, or, not",
            "An operator object needs exactly one of and, or, not",
            REF + "#narrowcast-recipient",
            lambda values: sum(v is not None for v in values.values()) == 1,
        ),
        # max: "Must be greater than the min value"; min: "Must be less than the max value".
        Rule(
            "datetimepicker: min < max",
            "Must be greater than the min value",
            REF + "#datetime-picker-action",
            _ordered,
        ),
    )
}
IMAGEMAP_TOGETHER = (  # (object under imagemap, its fields LINE requires together, rule)
    ("video", ("originalContentUrl", "previewImageUrl", "area"), "imagemap video: *1"),
    ("video.externalLink", ("linkUri", "label"), "imagemap video: *2"),
)

EXCLUSIVE = (  # (action or message type, its fields LINE lets at most one of be used, rule)
    ("postback", ("displayText", "text"), "postback: displayText or text"),
)

# Fields LINE's reference marks required (its parameter tables, ``props: required``) that
# ``messaging-api.yml`` leaves out of the schema's ``required:`` list, so LINE's models (and
# the SDK) let them be null. Keyed by the SDK model the object parses as (its ``type`` picks
# it); each object's table in the reference is the anchor. The spec's own ``required:`` lists
# (``ClipboardAction.clipboardText``, ``FlexVideo.url`` ...) are the models' concern.
REQUIRED: dict[str, tuple[tuple[str, ...], str]] = {
    # model              fields                          reference anchor
    "PostbackAction": (("data",), REF + "#postback-action"),
    "MessageAction": (("text",), REF + "#message-action"),
    "URIAction": (("uri",), REF + "#uri-action"),
    "DatetimePickerAction": (("data", "mode"), REF + "#datetime-picker-action"),
    "CameraAction": (("label",), REF + "#camera-action"),
    "CameraRollAction": (("label",), REF + "#camera-roll-action"),
    "LocationAction": (("label",), REF + "#location-action"),
    "RichMenuSwitchAction": (("richMenuAliasId", "data"), REF + "#richmenu-switch-action"),
    "QuickReplyItem": (("action",), REF + "#items-object"),
    "Emoji": (("index", "productId", "emojiId"), REF + "#text-message"),
}
MISSING = "Must not be null"
"""The problem of a required field that is absent or null, as LINE words it."""


@dataclass(frozen=True)
class Placement:
    """Where LINE lets an object go: ``places`` it may be set in, the problem elsewhere."""

    places: tuple[str, ...]
    message: str
    doc: str


_QUICK = "This action can be configured only with quick reply buttons"
# Action object -> the objects it may be set on (:mod:`.fields` names an action's place as the
# label table does: "quick reply", "buttons, confirm, carousel", "flex button" ...). Camera,
# camera roll, location: "This action can be configured only with quick reply buttons."; rich
# menu switch: "This action can be configured only with rich menus. It can't be used for Flex
# Messages or quick replies." (a message never holds a rich menu, so never in a message).
ACTION_PLACES: dict[str, Placement] = {
    "camera": Placement(("quick reply",), _QUICK, REF + "#camera-action"),
    "cameraRoll": Placement(("quick reply",), _QUICK, REF + "#camera-roll-action"),
    "location": Placement(("quick reply",), _QUICK, REF + "#location-action"),
    "richmenuswitch": Placement(
        ("rich menu",),
        "This action can be configured only with rich menus",
        REF + "#richmenu-switch-action",
    ),
}
# Message property -> the send endpoints it may be used with ("Send messages", Send quote
# messages: "You can only use quote tokens to send messages with the following endpoints: Send
# reply message, Send push message"; text, textV2 and sticker are the models that have it).
TARGET_ONLY: dict[str, Placement] = {
    "quoteToken": Placement(
        ("push", "reply"),
        "Quote tokens can only be used in reply or push messages",
        "https://developers.line.biz/en/docs/messaging-api/sending-messages/#send-quote-messages",
    ),
}
# Flex component types each place holds. Box ``contents``: "When the layout property is
# horizontal or vertical: box, button, image, text, separator, and filler; When the layout
# property is baseline: icon, text, and filler" (#box); bubble ``hero``: "Specify a box, an
# image or a video" (#bubble); video ``altContent``: "Specify a box or an image" (#f-video).
# A span is only a text's ``contents`` item (the models type those as spans).
FLEX_PLACES: dict[str, tuple[str, ...]] = {
    "hero": ("box", "image", "video"),
    "horizontal box": ("box", "button", "image", "text", "separator", "filler"),
    "vertical box": ("box", "button", "image", "text", "separator", "filler"),
    "baseline box": ("icon", "text", "filler"),
    "video altContent": ("box", "image"),
}
FLEX_PLACES_DOC = REF + "#box"
# "Create a Flex Message including a video", Requirements: the hero block is the video,
# "Specify the size of the bubble to kilo, mega or giga", "The bubble isn't the child element
# of a carousel" (a bubble without ``size`` is mega, #bubble).
VIDEO = "https://developers.line.biz/en/docs/messaging-api/create-flex-message-including-video/"
VIDEO_BUBBLE_SIZES = ("kilo", "mega", "giga")
VIDEO_SIZE = "A bubble with a video hero must be of size kilo, mega or giga"
VIDEO_IN_CAROUSEL = "A bubble with a video hero can't be a child of a carousel"


def flex_misplaced(kind: str, place: str) -> str | None:
    """The problem of a flex component of type ``kind`` in ``place`` (a :data:`FLEX_PLACES`
    key), or None where LINE allows it there."""
    allowed = FLEX_PLACES.get(place)
    if allowed is None or kind in allowed:
        return None
    return f"A {place} can hold only {', '.join(allowed)}, not {kind}"
