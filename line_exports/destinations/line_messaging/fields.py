"""The fields of a message under the rows of :mod:`.limits`: a walk over messages that already
parse as LINE's models (:mod:`.structure`).

:func:`prose_fields` yields each field with its :data:`.limits.LIMITS` row and
:data:`.limits.PATTERNS` forms, plus the rules that tie fields together: :data:`.limits.RULES` rows (carousel columns alike in
actions, title and image; an imagemap video's fields required together; a datetime picker's
``min`` before its ``max``) and a few more (an emoji's ``index`` on a ``$``, ``textV2``
substitution keys, a flex text's ``text`` or ``contents``). The exporter (at definition and per rendered row) and the
sandbox apply the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from line_exports.destinations.line_messaging.limits import (
    ACTION_PLACES,
    DATETIME_FORMS,
    EXCLUSIVE,
    FLEX_FORMS,
    IMAGEMAP_TOGETHER,
    LIMITS,
    SUBSTITUTION_KEY,
    TARGET_ONLY,
    URI_FIELDS,
    URL_FIELDS,
    VIDEO_BUBBLE_SIZES,
    VIDEO_IN_CAROUSEL,
    VIDEO_SIZE,
    flex_misplaced,
)


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
    rule: str | None = None  # a :data:`RULES` key: ``value`` is the named values it tests


def patterns_of(limit: str) -> tuple[str, ...]:
    if limit in URL_FIELDS:
        return ("https URL",)
    if limit in URI_FIELDS:
        return ("action URI",)
    if limit in ("video.trackingId", "sender.name"):
        return (limit,)
    return ()


def _field(obj: dict[str, Any], key: str, path: str, limit: str) -> Iterator[Field]:
    if key in obj and obj[key] is not None:
        yield Field(f"{path}.{key}", obj[key], limit, patterns_of(limit))


def _broken(path: str, message: str) -> Field:
    return Field(path, None, problem=message)


def _rule(path: str, rule: str, values: dict[str, Any]) -> Field:
    """A :data:`.limits.RULES` row over named values, its problem reported at ``path``."""
    return Field(path, values, rule=rule)


def prose_fields(message: dict[str, Any], path: str, target: str) -> Iterator[Field]:
    """Every field of one message the table covers (the message parses as LINE's models)."""
    yield from _BY_TYPE[message["type"]](message, path, target)
    for key, only in TARGET_ONLY.items():
        if message.get(key) is not None and target not in only.places:
            yield _broken(f"{path}.{key}", only.message)
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
        for place, keys, rule in IMAGEMAP_TOGETHER:
            obj: Any = m
            for part in place.split("."):
                obj = obj.get(part) if isinstance(obj, dict) else None
            if obj is not None:
                for key in keys:
                    where = f"{path}.{place}.{key}"
                    yield _rule(where, rule, {"present": obj.get(key) is not None})
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
        columns = t["columns"]
        yield _rule(
            f"{where}.columns",
            "carousel columns: actions alike",
            {f"columns[{j}]": len(column["actions"]) for j, column in enumerate(columns)},
        )
        for key in ("title", "thumbnailImageUrl"):
            yield _rule(
                f"{where}.columns",
                f"carousel columns: {key} alike",
                {f"columns[{j}]": column.get(key) for j, column in enumerate(columns)},
            )
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
    only = ACTION_PLACES.get(kind)
    if only is not None and place not in only.places:
        yield _broken(f"{path}.type", only.message)
    yield from _field(action, "label", path, f"action.label ({place})")
    if "label" not in action and LIMITS[f"action.label ({place})"].low > 0:
        yield _broken(f"{path}.label", "Must not be null")
    yield from _exclusive(action, path)
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
        if kind == "datetimepicker":
            yield from _datetimepicker(action, path)
        if kind == "richmenuswitch":
            yield from _field(action, "richMenuAliasId", path, "richmenuswitch.richMenuAliasId")
    elif kind == "clipboard":
        yield from _field(action, "clipboardText", path, "clipboard.clipboardText")


def _exclusive(obj: dict[str, Any], path: str) -> Iterator[Field]:
    """Fields LINE lets at most one of be used (:data:`.limits.EXCLUSIVE`), by presence (a
    placeholder fills a value, it never removes the key: decided at definition)."""
    for kind, keys, rule in EXCLUSIVE:
        given = [key for key in keys if obj.get(key) is not None]
        if obj.get("type") == kind and len(given) > 1:
            yield _rule(f"{path}.{given[-1]}", rule, dict.fromkeys(given, True))


def _datetimepicker(action: dict[str, Any], path: str) -> Iterator[Field]:
    """``initial``/``min``/``max`` in their ``mode``'s form, and ``min`` < ``max``
    (#datetime-picker-action; ``mode`` is required there, though LINE's models let it be null)."""
    mode = action.get("mode")
    if mode is None:
        yield _broken(f"{path}.mode", "Must not be null")
        return
    for key in ("initial", "min", "max"):
        if action.get(key) is not None:
            yield Field(f"{path}.{key}", action[key], None, (DATETIME_FORMS[mode],))
    if action.get("min") is not None and action.get("max") is not None:
        values = {"mode": mode, "min": action["min"], "max": action["max"]}
        yield _rule(f"{path}.max", "datetimepicker: min < max", values)


def _flex(m: dict[str, Any], path: str, target: str) -> Iterator[Field]:
    yield from _field(m, "altText", path, "flex.altText")
    contents, where = m["contents"], f"{path}.contents"
    if contents["type"] == "bubble":
        yield Field(where, contents, "flex bubble")
        yield from _bubble(contents, where, in_carousel=False)
    else:
        yield Field(where, contents, "flex carousel")
        yield Field(f"{where}.contents", contents["contents"], "flex carousel.contents")
        for j, bubble in enumerate(contents["contents"]):
            yield from _bubble(bubble, f"{where}.contents[{j}]", in_carousel=True)


def _bubble(bubble: dict[str, Any], path: str, in_carousel: bool) -> Iterator[Field]:
    hero = bubble.get("hero")
    if hero is not None and hero.get("type") == "video":  # .limits.VIDEO's requirements
        if bubble.get("size", "mega") not in VIDEO_BUBBLE_SIZES:
            yield _broken(f"{path}.size", VIDEO_SIZE)
        if in_carousel:
            yield _broken(f"{path}.hero", VIDEO_IN_CAROUSEL)
    for block in ("header", "hero", "body", "footer"):
        if bubble.get(block) is not None:
            yield from _component(bubble[block], f"{path}.{block}", block)
        style = (bubble.get("styles") or {}).get(block)
        if style is not None:
            yield from _forms(style, f"{path}.styles.{block}", "block style")
    if bubble.get("action") is not None:
        yield from _action(bubble["action"], f"{path}.action", "flex, other")


def _forms(obj: dict[str, Any], path: str, kind: str) -> Iterator[Field]:
    """The properties of a flex object whose form the reference states (:data:`FLEX_FORMS`)."""
    for key, form in FLEX_FORMS.get(kind, {}).items():
        value = obj.get(key)
        if value is not None:
            yield Field(f"{path}.{key}", value, None, (form,))


def _component(comp: dict[str, Any], path: str, place: str) -> Iterator[Field]:
    """A flex component in ``place`` (a block, ``{layout} box``, ``video altContent``): the
    types each place holds are :data:`.limits.FLEX_PLACES`."""
    kind = comp["type"]
    if (misplaced := flex_misplaced(kind, place)) is not None:
        yield _broken(f"{path}.type", misplaced)
    if comp.get("action") is not None:
        place = "flex button" if kind == "button" else "flex, other"
        yield from _action(comp["action"], f"{path}.action", place)
    if kind == "box":
        inside = f"{comp.get('layout')} box"
        for j, child in enumerate(comp["contents"]):
            yield from _component(child, f"{path}.contents[{j}]", inside)
        if comp.get("background") is not None:
            yield from _forms(comp["background"], f"{path}.background", "background")
    elif kind in ("image", "icon"):
        yield from _field(comp, "url", path, "flex image|icon.url")
    elif kind == "video":
        yield from _field(comp, "url", path, "flex video.url|previewUrl")
        yield from _field(comp, "previewUrl", path, "flex video.url|previewUrl")
        yield from _component(comp["altContent"], f"{path}.altContent", "video altContent")
    elif kind == "text":
        yield from _flex_text(comp, path)
    yield from _forms(comp, path, kind)


def _flex_text(comp: dict[str, Any], path: str) -> Iterator[Field]:
    """A flex text's ``text``, or its spans: "If you set the contents property, text is ignored"."""
    spans = comp.get("contents") or []
    for j, span in enumerate(spans):
        yield from _forms(span, f"{path}.contents[{j}]", "span")
    if spans:
        return
    if comp.get("text") is None:
        yield _broken(f"{path}.text", "Must not be null (unless contents holds spans)")
    else:
        yield from _field(comp, "text", path, "flex text.text (without contents)")


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
