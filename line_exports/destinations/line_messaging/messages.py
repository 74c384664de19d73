"""LINE message objects: the ten types the reference supports, checked before anything is sent.

Checks follow LINE's official schema (``line/line-openapi`` ``messaging-api.yml``: required fields,
enums, ``maxItems``/``maxLength``) and the limits the Messaging API reference documents for each
field (characters counted in UTF-16 code units, as LINE counts them). A template that breaks
them fails when the export is defined, not after 10,000 pushes.

Push templates may hold ``{{column}}`` placeholders inside JSON string values. Substitution is
JSON-safe by construction: the template is parsed once, each placeholder string becomes a slot,
and every value is JSON-escaped before it is spliced in, so quotes, backslashes, newlines,
braces or ``{{...}}`` in a value stay text and can never add keys or break the body. Values are
never re-scanned for placeholders. Fields that hold placeholders are checked again per row,
over whole columns (lengths, URL schemes, user IDs), once the values are known.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

MESSAGE_TYPES = (
    "text",
    "textV2",
    "sticker",
    "image",
    "video",
    "audio",
    "location",
    "imagemap",
    "template",
    "flex",
)
MAX_MESSAGES = 5
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
USER_ID = r"U[0-9a-f]{32}"
HTTPS_URL = r"https://[^\s]+"
ACTION_URI = r"(?:https?://[^\s]+|line://[^\s]+|tel:[^\s]+)"
TRACKING_ID = r"[A-Za-z0-9\-.=,+*()%$&;:@{}!?<>\[\]]+"
SUBSTITUTION_KEY = re.compile(r"[0-9a-zA-Z_]{1,20}")
ACTION_TYPES = (
    "postback",
    "message",
    "uri",
    "datetimepicker",
    "camera",
    "cameraRoll",
    "location",
    "richmenuswitch",
    "clipboard",
)
FLEX_COMPONENTS = ("box", "button", "image", "video", "icon", "text", "span", "separator", "filler")
FLEX_BUBBLE_MAX_BYTES = 30 * 1024
FLEX_CAROUSEL_MAX_BYTES = 50 * 1024


class TemplateError(ValueError):
    """A message template LINE would refuse; the message lists every problem with its path."""


def utf16_len(text: str) -> int:
    """Characters as LINE counts them: UTF-16 code units (an emoji outside the BMP counts 2)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def utf16_len_series(values: pd.Series) -> pd.Series:
    """:func:`utf16_len` over a column."""
    return values.str.len() + values.str.count("[\U00010000-\U0010ffff]")


def placeholders_in(text: str) -> list[str]:
    return [m.group(1) for m in PLACEHOLDER.finditer(text)]


def _literal(text: str) -> str:
    """A string with its placeholders removed (a lower bound of what each row sends)."""
    return PLACEHOLDER.sub("", text)


@dataclass(frozen=True)
class Slot:
    """A string field holding placeholders, and what LINE requires of its rendered value."""

    path: str
    template: str
    max_length: int | None = None
    pattern: str | None = None
    pattern_message: str = ""
    required: bool = True
    braces: bool = False  # a textV2 text: a value's { and } are doubled (literal braces)


@dataclass
class _Checker:
    """Walks message objects and collects (property path, problem) pairs, LINE-style."""

    target: str = "push"
    allow_placeholders: bool = True
    literal: bool = False  # ``{{x}}`` is plain text (a sent body, as LINE sees it)
    problems: list[tuple[str, str]] = field(default_factory=list)
    slots: list[Slot] = field(default_factory=list)

    def problem(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    # -- scalar fields ------------------------------------------------------------------------
    def string(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        *,
        required: bool = False,
        max_length: int | None = None,
        min_length: int = 0,
        pattern: str | None = None,
        pattern_message: str = "",
        allowed: Iterable[str] | None = None,
    ) -> str | None:
        where = f"{path}.{key}" if path else key
        if key not in obj or obj[key] is None:
            if required:
                self.problem(where, "Must not be null")
            return None
        value = obj[key]
        if not isinstance(value, str):
            self.problem(where, "Must be a string")
            return None
        names = [] if self.literal else placeholders_in(value)
        if names:
            if not self.allow_placeholders:
                self.problem(where, "Placeholders ({{column}}) are not supported here")
                return value
            literal = _literal(value)
            if max_length is not None and utf16_len(literal) > max_length:
                self.problem(where, f"Length must be between {min_length} and {max_length}")
            self.slots.append(Slot(where, value, max_length, pattern, pattern_message, required))
            return value
        if required and not value.strip():
            self.problem(where, "May not be empty")
        length = utf16_len(value)
        if max_length is not None and not (min_length <= length <= max_length):
            self.problem(where, f"Length must be between {min_length} and {max_length}")
        if allowed is not None and value not in allowed:
            self.problem(where, f"Must be one of the following values: [{', '.join(allowed)}]")
        if pattern is not None and value and not re.fullmatch(pattern, value):
            self.problem(where, pattern_message or f"Must match {pattern}")
        return value

    def url(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        *,
        required: bool = False,
        max_length: int = 2000,
        https: bool = True,
    ) -> None:
        pattern = HTTPS_URL if https else ACTION_URI
        message = "Must be an HTTPS URL" if https else "Must be an http(s), line or tel URI"
        self.string(
            obj,
            key,
            path,
            required=required,
            max_length=max_length,
            pattern=pattern,
            pattern_message=message,
        )

    def number(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        *,
        required: bool = False,
        integer: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> None:
        where = f"{path}.{key}"
        if key not in obj or obj[key] is None:
            if required:
                self.problem(where, "Must not be null")
            return
        value = obj[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (integer and not isinstance(value, int))
        ):
            self.problem(where, "Must be an integer" if integer else "Must be a number")
            return
        if minimum is not None and value < minimum:
            self.problem(where, f"Must be at least {minimum:g}")
        if maximum is not None and value > maximum:
            self.problem(where, f"Must be at most {maximum:g}")

    def boolean(self, obj: Mapping[str, Any], key: str, path: str) -> None:
        if key in obj and not isinstance(obj[key], bool):
            self.problem(f"{path}.{key}", "Must be a boolean")

    def obj(
        self, parent: Mapping[str, Any], key: str, path: str, *, required: bool = False
    ) -> dict[str, Any] | None:
        where = f"{path}.{key}" if path else key
        if key not in parent or parent[key] is None:
            if required:
                self.problem(where, "Must not be null")
            return None
        value = parent[key]
        if not isinstance(value, dict):
            self.problem(where, "Must be an object")
            return None
        return value

    def array(
        self,
        parent: Mapping[str, Any],
        key: str,
        path: str,
        *,
        required: bool = False,
        min_items: int = 0,
        max_items: int | None = None,
    ) -> list[Any]:
        where = f"{path}.{key}"
        if key not in parent or parent[key] is None:
            if required:
                self.problem(where, "Must not be null")
            return []
        value = parent[key]
        if not isinstance(value, list):
            self.problem(where, "Must be an array")
            return []
        if len(value) < min_items or (max_items is not None and len(value) > max_items):
            upper = f" and {max_items}" if max_items is not None else ""
            self.problem(where, f"Size must be between {min_items}{upper}")
        return value

    # -- messages -----------------------------------------------------------------------------
    def message(self, message: Any, path: str) -> None:
        if not isinstance(message, dict):
            self.problem(path, "Must be a message object")
            return
        kind = message.get("type")
        if kind not in MESSAGE_TYPES:
            self.problem(
                f"{path}.type", f"Must be one of the following values: [{', '.join(MESSAGE_TYPES)}]"
            )
            return
        getattr(self, f"_{kind}")(message, path)
        quick = self.obj(message, "quickReply", path)
        if quick is not None:
            for i, item in enumerate(
                self.array(
                    quick, "items", f"{path}.quickReply", required=True, min_items=1, max_items=13
                )
            ):
                where = f"{path}.quickReply.items[{i}]"
                if not isinstance(item, dict):
                    self.problem(where, "Must be an object")
                    continue
                self.string(item, "type", where, required=True, allowed=("action",))
                self.url(item, "imageUrl", where)
                self.action(self.obj(item, "action", where, required=True), f"{where}.action")
        sender = self.obj(message, "sender", path)
        if sender is not None:
            self.string(sender, "name", f"{path}.sender", max_length=20, min_length=1)
            self.url(sender, "iconUrl", f"{path}.sender")

    def _text(self, m: dict[str, Any], path: str) -> None:
        self.string(m, "text", path, required=True, max_length=5000, min_length=1)
        for i, emoji in enumerate(self.array(m, "emojis", path, max_items=20)):
            where = f"{path}.emojis[{i}]"
            if not isinstance(emoji, dict):
                self.problem(where, "Must be an object")
                continue
            self.number(emoji, "index", where, required=True, integer=True, minimum=0)
            self.string(emoji, "productId", where, required=True)
            self.string(emoji, "emojiId", where, required=True)
        self.string(m, "quoteToken", path)

    def _textV2(self, m: dict[str, Any], path: str) -> None:  # noqa: N802 - LINE's type name
        text = self.string(m, "text", path, required=True, max_length=5000, min_length=1) or ""
        if self.slots and self.slots[-1].path == f"{path}.text":
            self.slots[-1] = replace(self.slots[-1], braces=True)
        substitution = self.obj(m, "substitution", path) or {}
        if len(substitution) > 100:
            self.problem(f"{path}.substitution", "Size must be between 0 and 100")
        mentions = emojis = 0
        for key, value in substitution.items():
            where = f"{path}.substitution.{key}"
            if not SUBSTITUTION_KEY.fullmatch(key):
                self.problem(where, "Key must be 1-20 half-width alphanumerics or underscores")
            if not isinstance(value, dict):
                self.problem(where, "Must be an object")
                continue
            kind = self.string(value, "type", where, required=True, allowed=("mention", "emoji"))
            if kind == "mention":
                mentions += 1
                if self.target not in ("push", "reply"):
                    self.problem(
                        where, "Mention objects can only be used in reply or push messages"
                    )
                mentionee = self.obj(value, "mentionee", where, required=True)
                if mentionee is not None:
                    who = self.string(
                        mentionee,
                        "type",
                        f"{where}.mentionee",
                        required=True,
                        allowed=("user", "all"),
                    )
                    if who == "user":
                        self.string(
                            mentionee,
                            "userId",
                            f"{where}.mentionee",
                            required=True,
                            pattern=USER_ID,
                            pattern_message="Must be a LINE user ID (U and 32 hex digits)",
                        )
            elif kind == "emoji":
                emojis += 1
                self.string(value, "productId", where, required=True)
                self.string(value, "emojiId", where, required=True)
        if mentions > 20 or emojis > 20:
            self.problem(
                f"{path}.substitution", "At most 20 mentions and 20 emojis can be substituted"
            )
        # ``{key}`` must name a substitution; ``{{``/``}}`` are literal braces; braces pair up.
        plain = (
            (text if self.literal else PLACEHOLDER.sub("", text))
            .replace("{{", "")
            .replace("}}", "")
        )
        for key in re.findall(r"\{([^{}]*)\}", plain):
            if key not in substitution:
                self.problem(f"{path}.text", f"{{{key}}} has no entry in substitution")
        if re.sub(r"\{[^{}]*\}", "", plain).count("{") or re.sub(r"\{[^{}]*\}", "", plain).count(
            "}"
        ):
            self.problem(
                f"{path}.text", "{ and } must be used in pairs (write {{ and }} for literal braces)"
            )
        self.string(m, "quoteToken", path)

    def _sticker(self, m: dict[str, Any], path: str) -> None:
        self.string(m, "packageId", path, required=True)
        self.string(m, "stickerId", path, required=True)
        self.string(m, "quoteToken", path)

    def _image(self, m: dict[str, Any], path: str) -> None:
        self.url(m, "originalContentUrl", path, required=True)
        self.url(m, "previewImageUrl", path, required=True)

    def _video(self, m: dict[str, Any], path: str) -> None:
        self._image(m, path)
        self.string(
            m,
            "trackingId",
            path,
            max_length=100,
            min_length=1,
            pattern=TRACKING_ID,
            pattern_message="Must be half-width alphanumerics and -.=,+*()%$&;:@{}!?<>[]",
        )

    def _audio(self, m: dict[str, Any], path: str) -> None:
        self.url(m, "originalContentUrl", path, required=True)
        self.number(m, "duration", path, required=True, integer=True, minimum=1)

    def _location(self, m: dict[str, Any], path: str) -> None:
        self.string(m, "title", path, required=True, max_length=100, min_length=1)
        self.string(m, "address", path, required=True, max_length=100, min_length=1)
        self.number(m, "latitude", path, required=True, minimum=-90, maximum=90)
        self.number(m, "longitude", path, required=True, minimum=-180, maximum=180)

    def _area(self, parent: dict[str, Any], key: str, path: str) -> None:
        area = self.obj(parent, key, path, required=True)
        if area is not None:
            for name in ("x", "y"):
                self.number(area, name, f"{path}.{key}", required=True, integer=True, minimum=0)
            for name in ("width", "height"):
                self.number(area, name, f"{path}.{key}", required=True, integer=True, minimum=1)

    def _imagemap(self, m: dict[str, Any], path: str) -> None:
        self.url(m, "baseUrl", path, required=True)
        self.string(m, "altText", path, required=True, max_length=1500, min_length=1)
        size = self.obj(m, "baseSize", path, required=True)
        if size is not None:
            self.number(
                size,
                "width",
                f"{path}.baseSize",
                required=True,
                integer=True,
                minimum=1040,
                maximum=1040,
            )
            self.number(size, "height", f"{path}.baseSize", required=True, integer=True, minimum=1)
        for i, action in enumerate(
            self.array(m, "actions", path, required=True, min_items=1, max_items=50)
        ):
            where = f"{path}.actions[{i}]"
            if not isinstance(action, dict):
                self.problem(where, "Must be an object")
                continue
            kind = self.string(
                action, "type", where, required=True, allowed=("message", "uri", "clipboard")
            )
            self.string(action, "label", where, max_length=100)
            if kind == "message":
                self.string(action, "text", where, required=True, max_length=400, min_length=1)
            elif kind == "uri":
                self.url(action, "linkUri", where, required=True, max_length=1000, https=False)
            elif kind == "clipboard":
                self.string(
                    action, "clipboardText", where, required=True, max_length=1000, min_length=1
                )
            self._area(action, "area", where)
        video = self.obj(m, "video", path)
        if video is not None:
            where = f"{path}.video"
            self.url(video, "originalContentUrl", where, required=True)
            self.url(video, "previewImageUrl", where, required=True)
            self._area(video, "area", where)
            link = self.obj(video, "externalLink", where)
            if link is not None:
                self.url(
                    link,
                    "linkUri",
                    f"{where}.externalLink",
                    required=True,
                    max_length=1000,
                    https=False,
                )
                self.string(
                    link,
                    "label",
                    f"{where}.externalLink",
                    required=True,
                    max_length=30,
                    min_length=1,
                )

    def _template(self, m: dict[str, Any], path: str) -> None:
        self.string(m, "altText", path, required=True, max_length=1500, min_length=1)
        template = self.obj(m, "template", path, required=True)
        if template is None:
            return
        where = f"{path}.template"
        kind = self.string(
            template,
            "type",
            where,
            required=True,
            allowed=("buttons", "confirm", "carousel", "image_carousel"),
        )
        if kind == "buttons":
            has_header = bool(template.get("thumbnailImageUrl") or template.get("title"))
            self.url(template, "thumbnailImageUrl", where)
            self.string(template, "imageAspectRatio", where, allowed=("rectangle", "square"))
            self.string(template, "imageSize", where, allowed=("cover", "contain"))
            self.string(
                template,
                "imageBackgroundColor",
                where,
                pattern=r"#[0-9A-Fa-f]{6}",
                pattern_message="Must be #RRGGBB",
            )
            self.string(template, "title", where, max_length=40)
            self.string(
                template,
                "text",
                where,
                required=True,
                max_length=60 if has_header else 160,
                min_length=1,
            )
            if "defaultAction" in template:
                self.action(self.obj(template, "defaultAction", where), f"{where}.defaultAction")
            self.actions(template, where, 1, 4)
        elif kind == "confirm":
            self.string(template, "text", where, required=True, max_length=240, min_length=1)
            self.actions(template, where, 2, 2)
        elif kind == "carousel":
            self.string(template, "imageAspectRatio", where, allowed=("rectangle", "square"))
            self.string(template, "imageSize", where, allowed=("cover", "contain"))
            columns = self.array(
                template, "columns", where, required=True, min_items=1, max_items=10
            )
            counts = set()
            for i, column in enumerate(columns):
                cw = f"{where}.columns[{i}]"
                if not isinstance(column, dict):
                    self.problem(cw, "Must be an object")
                    continue
                has_header = bool(column.get("thumbnailImageUrl") or column.get("title"))
                self.url(column, "thumbnailImageUrl", cw)
                self.string(
                    column,
                    "imageBackgroundColor",
                    cw,
                    pattern=r"#[0-9A-Fa-f]{6}",
                    pattern_message="Must be #RRGGBB",
                )
                self.string(column, "title", cw, max_length=40)
                self.string(
                    column,
                    "text",
                    cw,
                    required=True,
                    max_length=60 if has_header else 120,
                    min_length=1,
                )
                if "defaultAction" in column:
                    self.action(self.obj(column, "defaultAction", cw), f"{cw}.defaultAction")
                counts.add(len(self.actions(column, cw, 1, 3)))
            if len(counts) > 1:
                self.problem(
                    f"{where}.columns", "Every column must have the same number of actions"
                )
        elif kind == "image_carousel":
            for i, column in enumerate(
                self.array(template, "columns", where, required=True, min_items=1, max_items=10)
            ):
                cw = f"{where}.columns[{i}]"
                if not isinstance(column, dict):
                    self.problem(cw, "Must be an object")
                    continue
                self.url(column, "imageUrl", cw, required=True)
                self.action(self.obj(column, "action", cw, required=True), f"{cw}.action")

    def actions(self, parent: dict[str, Any], path: str, low: int, high: int) -> list[Any]:
        items = self.array(parent, "actions", path, required=True, min_items=low, max_items=high)
        for i, action in enumerate(items):
            self.action(action, f"{path}.actions[{i}]")
        return items

    def action(self, action: Any, path: str) -> None:
        if action is None:
            return
        if not isinstance(action, dict):
            self.problem(path, "Must be an action object")
            return
        kind = self.string(action, "type", path, required=True, allowed=ACTION_TYPES)
        self.string(action, "label", path, max_length=20)
        if kind == "postback":
            self.string(action, "data", path, required=True, max_length=300)
            for name in ("displayText", "text", "fillInText"):
                self.string(action, name, path, max_length=300)
            self.string(
                action,
                "inputOption",
                path,
                allowed=("closeRichMenu", "openRichMenu", "openKeyboard", "openVoice"),
            )
        elif kind == "message":
            self.string(action, "text", path, required=True, max_length=300, min_length=1)
        elif kind == "uri":
            self.url(action, "uri", path, required=True, max_length=1000, https=False)
            alt = self.obj(action, "altUri", path)
            if alt is not None:
                self.url(alt, "desktop", f"{path}.altUri", max_length=1000, https=False)
        elif kind == "datetimepicker":
            self.string(action, "data", path, required=True, max_length=300)
            self.string(action, "mode", path, required=True, allowed=("date", "time", "datetime"))
        elif kind == "richmenuswitch":
            self.string(action, "data", path, required=True, max_length=300)
            self.string(action, "richMenuAliasId", path, required=True, max_length=32, min_length=1)
        elif kind == "clipboard":
            self.string(action, "clipboardText", path, required=True, max_length=1000, min_length=1)

    def _flex(self, m: dict[str, Any], path: str) -> None:
        self.string(m, "altText", path, required=True, max_length=1500, min_length=1)
        contents = self.obj(m, "contents", path, required=True)
        if contents is None:
            return
        where = f"{path}.contents"
        kind = self.string(contents, "type", where, required=True, allowed=("bubble", "carousel"))
        size = len(json.dumps(contents, ensure_ascii=False, separators=(",", ":")).encode())
        if kind == "bubble":
            if size > FLEX_BUBBLE_MAX_BYTES:
                self.problem(where, f"A bubble must be at most 30 KB of JSON (is {size:,} bytes)")
            self.bubble(contents, where)
        elif kind == "carousel":
            if size > FLEX_CAROUSEL_MAX_BYTES:
                self.problem(where, f"A carousel must be at most 50 KB of JSON (is {size:,} bytes)")
            for i, bubble in enumerate(
                self.array(contents, "contents", where, required=True, min_items=1, max_items=12)
            ):
                bw = f"{where}.contents[{i}]"
                if not isinstance(bubble, dict) or bubble.get("type") != "bubble":
                    self.problem(f"{bw}.type", "Must be bubble")
                    continue
                self.bubble(bubble, bw)

    def bubble(self, bubble: dict[str, Any], path: str) -> None:
        self.string(bubble, "direction", path, allowed=("ltr", "rtl"))
        self.string(
            bubble, "size", path, allowed=("nano", "micro", "deca", "hecto", "kilo", "mega", "giga")
        )
        for block in ("header", "body", "footer"):
            box = self.obj(bubble, block, path)
            if box is not None:
                if box.get("type") != "box":
                    self.problem(f"{path}.{block}.type", "Must be box")
                self.component(box, f"{path}.{block}")
        hero = self.obj(bubble, "hero", path)
        if hero is not None:
            self.component(hero, f"{path}.hero")
        if "action" in bubble:
            self.action(self.obj(bubble, "action", path), f"{path}.action")

    def component(self, comp: Any, path: str) -> None:
        if not isinstance(comp, dict):
            self.problem(path, "Must be a component object")
            return
        kind = self.string(comp, "type", path, required=True, allowed=FLEX_COMPONENTS)
        if "action" in comp and kind not in ("separator", "filler", "span"):
            self.action(self.obj(comp, "action", path), f"{path}.action")
        if kind == "box":
            self.string(
                comp, "layout", path, required=True, allowed=("horizontal", "vertical", "baseline")
            )
            for i, child in enumerate(self.array(comp, "contents", path, required=True)):
                self.component(child, f"{path}.contents[{i}]")
        elif kind == "button":
            if comp.get("action") is None:
                self.problem(f"{path}.action", "Must not be null")
            self.string(comp, "style", path, allowed=("primary", "secondary", "link"))
            self.string(comp, "height", path, allowed=("md", "sm"))
        elif kind in ("image", "icon"):
            self.url(comp, "url", path, required=True)
            self.boolean(comp, "animated", path)
        elif kind == "video":
            self.url(comp, "url", path, required=True)
            self.url(comp, "previewUrl", path, required=True)
            alt = self.obj(comp, "altContent", path, required=True)
            if alt is not None:
                self.component(alt, f"{path}.altContent")
        elif kind == "text":
            if comp.get("text") is None and not comp.get("contents"):
                self.problem(f"{path}.text", "Must not be null (unless contents holds spans)")
            self.string(comp, "text", path)
            for i, span in enumerate(self.array(comp, "contents", path)):
                if not isinstance(span, dict) or span.get("type") != "span":
                    self.problem(f"{path}.contents[{i}].type", "Must be span")
                    continue
                self.string(span, "text", f"{path}.contents[{i}]", required=True)
            self.boolean(comp, "wrap", path)
        elif kind == "span":
            self.string(comp, "text", path, required=True)


def parse_template(template: str | Mapping[str, Any] | list[Any]) -> list[dict[str, Any]]:
    """A template (JSON text of one message object or a list of up to 5) as a list of messages."""
    if isinstance(template, str):
        try:
            value = json.loads(template)
        except json.JSONDecodeError as exc:
            raise TemplateError(
                f"the template is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None
    else:
        value = copy.deepcopy(template)
    messages = [value] if isinstance(value, dict) else value
    if not isinstance(messages, list) or not messages:
        raise TemplateError(
            "the template must be a message object or a list of 1 to 5 message objects"
        )
    if len(messages) > MAX_MESSAGES:
        raise TemplateError(
            f"the template holds {len(messages)} messages; LINE sends at most {MAX_MESSAGES} per request"
        )
    _no_placeholder_keys(messages, "messages")
    return messages


def _no_placeholder_keys(value: Any, path: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if PLACEHOLDER.search(str(key)):
                raise TemplateError(
                    f"{path}: placeholders may only be JSON string values, not keys ({key!r})"
                )
            _no_placeholder_keys(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _no_placeholder_keys(item, f"{path}[{i}]")


def check_messages(
    messages: list[Any],
    *,
    target: str = "push",
    allow_placeholders: bool = True,
    literal: bool = False,
) -> tuple[list[tuple[str, str]], list[Slot]]:
    """LINE-style problems ``(property, message)`` of a ``messages`` array, and its placeholder slots.

    ``literal=True`` checks a body as LINE receives it: ``{{x}}`` is text, not a placeholder.
    """
    checker = _Checker(target=target, allow_placeholders=allow_placeholders, literal=literal)
    if not isinstance(messages, list) or not (1 <= len(messages) <= MAX_MESSAGES):
        checker.problem("messages", f"Size must be between 1 and {MAX_MESSAGES}")
        return checker.problems, []
    for i, message in enumerate(messages):
        checker.message(message, f"messages[{i}]")
    return checker.problems, checker.slots


def _format_problems(problems: list[tuple[str, str]]) -> str:
    return "; ".join(f"{prop}: {message}" for prop, message in problems[:20]) + (
        f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
    )


@dataclass
class MessageTemplate:
    """A checked template: its messages, the columns it needs, and a vectorized renderer."""

    messages: list[dict[str, Any]]
    slots: list[Slot]
    columns: list[str]

    @classmethod
    def parse(
        cls,
        template: str | Mapping[str, Any] | list[Any],
        *,
        target: str = "push",
        allow_placeholders: bool = True,
    ) -> MessageTemplate:
        """Parse and check a template; raises :class:`TemplateError` listing every problem."""
        messages = parse_template(template)
        problems, slots = check_messages(
            messages, target=target, allow_placeholders=allow_placeholders
        )
        if problems:
            raise TemplateError(
                f"the {target} template breaks LINE's message rules: {_format_problems(problems)}"
            )
        columns = list(
            dict.fromkeys(name for slot in slots for name in placeholders_in(slot.template))
        )
        return cls(messages, slots, columns)

    def json(self) -> str:
        """The ``messages`` array as compact JSON (for a template without placeholders)."""
        return json.dumps(self.messages, ensure_ascii=False, separators=(",", ":"))

    def _marked(self) -> tuple[list[str], list[tuple[str, bool]]]:
        """The JSON text split around each placeholder string: (segments, (slot template,
        braces doubled?) pairs)."""
        marker = "\x00slot{}\x00"
        templates: list[tuple[str, bool]] = []

        def mark(value: Any, braces: bool = False) -> Any:
            if isinstance(value, dict):
                text_v2 = value.get("type") == "textV2"
                return {k: mark(v, text_v2 and k == "text") for k, v in value.items()}
            if isinstance(value, list):
                return [mark(v) for v in value]
            if isinstance(value, str) and PLACEHOLDER.search(value):
                templates.append((value, braces))
                return marker.format(len(templates) - 1)
            return value

        text = json.dumps(mark(self.messages), ensure_ascii=False, separators=(",", ":"))
        # json.dumps escapes NUL as \u0000, so a marker cannot collide with template text.
        escaped = [json.dumps(marker.format(i), ensure_ascii=False) for i in range(len(templates))]
        segments: list[str] = []
        rest = text
        for token in escaped:
            head, rest = rest.split(token, 1)
            segments.append(head)
        segments.append(rest)
        return segments, templates

    def rendered_values(
        self, frame: pd.DataFrame, template: str, braces: bool = False
    ) -> pd.Series:
        """One slot's value per row, placeholders filled (plain text, not JSON-escaped)."""
        out = pd.Series("", index=frame.index, dtype="string")
        pos = 0
        for match in PLACEHOLDER.finditer(template):
            out = out + template[pos : match.start()] + _values(frame[match.group(1)], braces)
            pos = match.end()
        return out + template[pos:]

    def render(self, frame: pd.DataFrame) -> pd.Series:
        """The ``messages`` JSON array per row; every value JSON-escaped before it is spliced in."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise TemplateError(f"placeholders {missing} are not columns of the query")
        if not self.slots:
            return pd.Series(self.json(), index=frame.index, dtype="string")
        segments, templates = self._marked()
        needed = {
            (m.group(1), braces)
            for template, braces in templates
            for m in PLACEHOLDER.finditer(template)
        }
        escaped = {(c, b): _json_escape(_values(frame[c], b)) for c, b in needed}
        out = pd.Series(segments[0], index=frame.index, dtype="string")
        for (template, braces), segment in zip(templates, segments[1:], strict=True):
            out = out + '"'
            pos = 0
            for match in PLACEHOLDER.finditer(template):
                out = (
                    out
                    + _json_escape_literal(template[pos : match.start()])
                    + escaped[(match.group(1), braces)]
                )
                pos = match.end()
            out = out + _json_escape_literal(template[pos:]) + '"' + segment
        return out

    def check_rows(self, frame: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
        """Per-slot failures over whole columns: (property, message, mask of failing rows)."""
        failures: list[tuple[str, str, np.ndarray]] = []
        for slot in self.slots:
            values = self.rendered_values(frame, slot.template, slot.braces)
            if slot.required:
                failures.append(
                    (
                        slot.path,
                        "May not be empty",
                        (values.str.strip() == "").to_numpy(dtype=bool, na_value=True),
                    )
                )
            if slot.max_length is not None:
                too_long = (utf16_len_series(values) > slot.max_length).to_numpy(
                    dtype=bool, na_value=False
                )
                failures.append(
                    (
                        slot.path,
                        f"Length must be at most {slot.max_length} (UTF-16 units)",
                        too_long,
                    )
                )
            if slot.pattern is not None:
                ok = values.str.fullmatch(slot.pattern).to_numpy(dtype=bool, na_value=False)
                failures.append(
                    (
                        slot.path,
                        slot.pattern_message or f"Must match {slot.pattern}",
                        ~ok & (values != "").to_numpy(dtype=bool, na_value=False),
                    )
                )
        failures.extend(self._flex_sizes(frame))
        return [f for f in failures if f[2].any()]

    def _flex_sizes(self, frame: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
        """A flex bubble (30 KB) or carousel (50 KB) must fit after its placeholders are filled."""
        failures = []
        for i, message in enumerate(self.messages):
            contents = message.get("contents") if message.get("type") == "flex" else None
            if not isinstance(contents, dict) or not any(
                PLACEHOLDER.search(v) for v in _strings(contents)
            ):
                continue
            rendered = MessageTemplate([contents], self.slots, self.columns).render(frame)
            size = rendered.str.encode("utf-8").str.len() - 2  # without the enclosing [ ]
            bubble = contents.get("type") == "bubble"
            limit = FLEX_BUBBLE_MAX_BYTES if bubble else FLEX_CAROUSEL_MAX_BYTES
            message_text = (
                f"A {'bubble' if bubble else 'carousel'} must be at most {limit // 1024} KB of JSON"
            )
            failures.append(
                (f"messages[{i}].contents", message_text, (size > limit).to_numpy(dtype=bool))
            )
        return failures


def _strings(value: Any) -> Iterator[str]:
    """Every string value inside a JSON structure."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _values(column: pd.Series, braces: bool) -> pd.Series:
    """A column's values as text; in a textV2 text, { and } doubled so they stay literal."""
    text = column.astype("string").fillna("")
    return (
        text.str.replace("{", "{{", regex=False).str.replace("}", "}}", regex=False)
        if braces
        else text
    )


def _json_escape_literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _json_escape(values: pd.Series) -> pd.Series:
    """Each value as the inside of a JSON string (computed once per distinct value)."""
    text = values.astype("string").fillna("")
    uniques = pd.unique(text.to_numpy(dtype=object))
    table = {v: _json_escape_literal(v) for v in uniques}
    return text.map(table).astype("string")


def validate_template(
    template: str | Mapping[str, Any] | list[Any],
    *,
    target: str = "push",
    allow_placeholders: bool = True,
) -> MessageTemplate:
    """Shorthand for :meth:`MessageTemplate.parse`."""
    return MessageTemplate.parse(template, target=target, allow_placeholders=allow_placeholders)
