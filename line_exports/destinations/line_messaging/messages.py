"""LINE message templates: checked as LINE checks them, rendered per row, re-checked per row.

A template is JSON text of one message object or a list of up to 5 (the ten types TD's reference
supports). Its structure (required fields, types, enums, which ``type`` goes where) is checked by
LINE's official models (:mod:`.structure`, ``line-bot-sdk``); lengths, counts and forms LINE
states in prose by the table in :mod:`.limits`, each in its field's unit (UTF-16 code units or
grapheme clusters). The same :func:`check_messages` runs when an export is defined, in the
sandbox on every request body, and (for the fields that vary) per rendered row.

Push templates may hold ``{{column}}`` placeholders inside JSON string values. Substitution is
JSON-safe by construction: the template is parsed once, each placeholder string becomes a slot,
and every value is JSON-escaped before it is spliced in, so quotes, backslashes, newlines,
braces or ``{{...}}`` in a value stay text and can never add keys or break the body. Values are
never re-scanned for placeholders. A text message's LINE emoji ``index`` (the position of a
``$``, in UTF-16 code units as LINE's reference states, see
:func:`.limits.dollar_positions`) is recomputed per row, since the ``$`` moves with the values before it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from line_exports.destinations.line_messaging.fields import prose_fields
from line_exports.destinations.line_messaging.limits import (
    EMPTY,
    LIMITS,
    NOT_UNICODE,
    PATTERNS,
    RULES,
    lone_surrogate,
    utf16_len,
    utf16_len_series,
)
from line_exports.destinations.line_messaging.structure import MESSAGE_TYPES, message_problems

__all__ = [
    "MESSAGE_TYPES",
    "PLACEHOLDER",
    "MessageTemplate",
    "TemplateError",
    "check_messages",
    "utf16_len",
]

MAX_MESSAGES = 5
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class TemplateError(ValueError):
    """A message template LINE would refuse; the message lists every problem with its path."""


def placeholders_in(text: str) -> list[str]:
    return [m.group(1) for m in PLACEHOLDER.finditer(text)]


@dataclass(frozen=True)
class Slot:
    """A string field holding placeholders, and the table rows its rendered value must meet."""

    path: str
    template: str
    limit: str | None = None
    patterns: tuple[str, ...] = ()
    braces: bool = False  # a textV2 text: a value's { and } are doubled (literal braces)

    @property
    def required(self) -> bool:
        return self.limit is not None and LIMITS[self.limit].required


@dataclass(frozen=True)
class Relation:
    """A :data:`.limits.RULES` row whose values hold placeholders: tested per rendered row.

    ``values`` are the rule's named values as the template has them (a string with
    ``{{column}}`` is filled per row, anything else is the same for every row)."""

    path: str
    rule: str
    values: tuple[tuple[str, Any], ...]


def check_messages(
    messages: Any,
    *,
    target: str = "push",
    allow_placeholders: bool = True,
    literal: bool = False,
) -> tuple[list[tuple[str, str]], list[Slot]]:
    """LINE-style problems ``(property, message)`` of a ``messages`` array, and its placeholder slots.

    Structure per LINE's models, then each field against the limits table and each rule
    between fields (:data:`.limits.RULES`). ``literal=True`` checks a body as LINE receives it
    (the sandbox): ``{{x}}`` is text, not a placeholder.
    """
    problems, slots, _ = _check(messages, target, allow_placeholders, literal)
    return problems, slots


def _check(
    messages: Any, target: str, allow_placeholders: bool, literal: bool
) -> tuple[list[tuple[str, str]], list[Slot], list[Relation]]:
    """:func:`check_messages`, plus the rules that can only be tested per rendered row."""
    if not isinstance(messages, list) or not (1 <= len(messages) <= MAX_MESSAGES):
        return [("messages", f"Size must be between 1 and {MAX_MESSAGES}")], [], []
    problems: list[tuple[str, str]] = []
    slots: list[Slot] = []
    relations: list[Relation] = []
    for i, message in enumerate(messages):
        path = f"messages[{i}]"
        broken = [(where, NOT_UNICODE) for where in _surrogate_paths(message, path)]
        if broken:  # no UTF-8 form: nothing else about this message can be sent or judged
            problems.extend(broken)
            continue
        found = message_problems(message, path)
        if found:
            problems.extend(found)
            continue
        seen: set[str] = set()
        for field in prose_fields(message, path, target):
            seen.add(field.path)
            if field.problem is not None:
                problems.append((field.path, field.problem))
                continue
            if field.rule is not None:
                values = field.value
                if not literal and any(
                    isinstance(v, str) and PLACEHOLDER.search(v) for v in values.values()
                ):
                    relations.append(Relation(field.path, field.rule, tuple(values.items())))
                elif not RULES[field.rule].test(values):
                    problems.append((field.path, RULES[field.rule].message))
                continue
            value = field.value
            names = [] if literal or not isinstance(value, str) else placeholders_in(value)
            if names:
                if not allow_placeholders:
                    problems.append(
                        (field.path, "Placeholders ({{column}}) are not supported here")
                    )
                    continue
                limit = LIMITS.get(field.limit or "")
                if (
                    limit is not None
                    and limit.unit in ("utf16", "grapheme")
                    and limit.count(PLACEHOLDER.sub("", value)) > limit.high
                ):
                    problems.append((field.path, limit.words()))
                braces = field.limit == "textV2.text"
                slots.append(Slot(field.path, value, field.limit, field.patterns, braces))
                continue
            if field.limit is not None:
                limit = LIMITS[field.limit]
                if limit.unit == "bytes" and not literal:
                    value = _without_placeholders(value)
                if (problem := limit.problem(value)) is not None:
                    problems.append((field.path, problem))
                    continue
            if isinstance(value, str):
                for name in field.patterns:
                    if not PATTERNS[name].matches(value):
                        problems.append((field.path, PATTERNS[name].message))
        if not literal:  # placeholders in string fields the limits table does not list
            for where, value in _string_fields(message, path):
                if where in seen or not placeholders_in(value):
                    continue
                if not allow_placeholders:
                    problems.append((where, "Placeholders ({{column}}) are not supported here"))
                else:
                    slots.append(Slot(where, value))
        if message.get("type") == "textV2":
            problems.extend(_brace_problems(message, path, literal))
    return problems, slots, relations


def _surrogate_paths(value: Any, path: str) -> Iterator[str]:
    """Paths of the keys and string values holding a lone surrogate (:data:`NOT_UNICODE`)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if lone_surrogate(key):
                yield f"{path}.{key}"
            else:
                yield from _surrogate_paths(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _surrogate_paths(item, f"{path}[{i}]")
    elif isinstance(value, str) and lone_surrogate(value):
        yield path


def _string_fields(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string value of a message with its LINE-style path (``a.b[0].c``)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _string_fields(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _string_fields(item, f"{path}[{i}]")
    elif isinstance(value, str):
        yield path, value


def _without_placeholders(value: Any) -> Any:
    """A JSON value with its placeholders removed (the least each row sends)."""
    if isinstance(value, str):
        return PLACEHOLDER.sub("", value)
    if isinstance(value, dict):
        return {k: _without_placeholders(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_placeholders(v) for v in value]
    return value


def _brace_problems(message: dict[str, Any], path: str, literal: bool) -> list[tuple[str, str]]:
    """textV2: ``{key}`` must name a substitution; ``{{``/``}}`` are literal braces; braces pair."""
    text = message["text"]
    substitution = message.get("substitution") or {}
    plain = (text if literal else PLACEHOLDER.sub("", text)).replace("{{", "").replace("}}", "")
    problems = [
        (f"{path}.text", f"{{{key}}} has no entry in substitution")
        for key in re.findall(r"\{([^{}]*)\}", plain)
        if key not in substitution
    ]
    rest = re.sub(r"\{[^{}]*\}", "", plain)
    if "{" in rest or "}" in rest:
        problems.append(
            (f"{path}.text", "{ and } must be used in pairs (write {{ and }} for literal braces)")
        )
    return problems


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
    relations: list[Relation] = dataclasses.field(default_factory=list)

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
        problems, slots, relations = _check(messages, target, allow_placeholders, False)
        if problems:
            raise TemplateError(
                f"the {target} template breaks LINE's message rules: {_format_problems(problems)}"
            )
        columns = list(
            dict.fromkeys(name for slot in slots for name in placeholders_in(slot.template))
        )
        return cls(messages, slots, columns, relations)

    def json(self) -> str:
        """The ``messages`` array as compact JSON (for a template without placeholders)."""
        return json.dumps(self.messages, ensure_ascii=False, separators=(",", ":"))

    def _marked(self) -> tuple[list[str], list[tuple[str, str, Any]]]:
        """The JSON text split around each value that varies by row: (segments, pieces).

        A piece is ``("text", slot template, braces doubled?)`` for a string with placeholders,
        or ``("index", text template, UTF-16 position)`` for a text message's emoji ``index``
        whose ``$`` moves with the values before it."""
        marker = "\x00slot{}\x00"
        pieces: list[tuple[str, str, Any]] = []

        def add(piece: tuple[str, str, Any]) -> str:
            pieces.append(piece)
            return marker.format(len(pieces) - 1)

        def mark(value: Any, braces: bool = False) -> Any:
            if isinstance(value, dict):
                kind = value.get("type")
                out = {k: mark(v, kind == "textV2" and k == "text") for k, v in value.items()}
                text = value.get("text")
                if kind == "text" and value.get("emojis") and PLACEHOLDER.search(text or ""):
                    out["emojis"] = [
                        {**marked, "index": add(("index", text, emoji["index"]))}
                        for marked, emoji in zip(out["emojis"], value["emojis"], strict=True)
                    ]
                return out
            if isinstance(value, list):
                return [mark(v) for v in value]
            if isinstance(value, str) and PLACEHOLDER.search(value):
                return add(("text", value, braces))
            return value

        text = json.dumps(mark(self.messages), ensure_ascii=False, separators=(",", ":"))
        # json.dumps escapes NUL as \u0000, so a marker cannot collide with template text.
        escaped = [json.dumps(marker.format(i), ensure_ascii=False) for i in range(len(pieces))]
        segments: list[str] = []
        rest = text
        for token in escaped:
            head, rest = rest.split(token, 1)
            segments.append(head)
        segments.append(rest)
        return segments, pieces

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

    @staticmethod
    def emoji_index(frame: pd.DataFrame, text: str, position: int) -> pd.Series:
        """Per row, where the ``$`` at UTF-16 ``position`` of a template text lands once the
        placeholders before it are filled (UTF-16 units, as LINE counts the index)."""
        units, cut = 0, len(text)
        for n, ch in enumerate(text):
            if units >= position:
                cut = n
                break
            units += 2 if ord(ch) > 0xFFFF else 1
        before = text[:cut]
        out = pd.Series(utf16_len(PLACEHOLDER.sub("", before)), index=frame.index, dtype="int64")
        for match in PLACEHOLDER.finditer(before):
            out = out + utf16_len_series(_values(frame[match.group(1)], False)).astype("int64")
        return out

    def render(self, frame: pd.DataFrame) -> pd.Series:
        """The ``messages`` JSON array per row; every value JSON-escaped before it is spliced in."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise TemplateError(f"placeholders {missing} are not columns of the query")
        if not self.slots:
            return pd.Series(self.json(), index=frame.index, dtype="string")
        segments, pieces = self._marked()
        needed = {
            (m.group(1), braces)
            for kind, template, braces in pieces
            if kind == "text"
            for m in PLACEHOLDER.finditer(template)
        }
        escaped = {(c, b): _json_escape(_values(frame[c], b)) for c, b in needed}
        out = pd.Series(segments[0], index=frame.index, dtype="string")
        for (kind, template, extra), segment in zip(pieces, segments[1:], strict=True):
            if kind == "index":
                out = out + self.emoji_index(frame, template, extra).astype("string") + segment
                continue
            out = out + '"'
            pos = 0
            for match in PLACEHOLDER.finditer(template):
                out = (
                    out
                    + _json_escape_literal(template[pos : match.start()])
                    + escaped[(match.group(1), extra)]
                )
                pos = match.end()
            out = out + _json_escape_literal(template[pos:]) + '"' + segment
        return out

    def check_rows(self, frame: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
        """Per-slot failures over whole columns, by the same table rows as at definition:
        (property, message, mask of failing rows)."""
        failures: list[tuple[str, str, np.ndarray]] = []
        for slot in self.slots:
            values = self.rendered_values(frame, slot.template, slot.braces)
            # Row values are Arrow strings (UTF-8): a lone surrogate cannot be in one, so only
            # a template's own text could hold it, and that is refused at definition.
            # As at definition (check_messages): the limit row first (a blank value of a
            # required field is EMPTY), the form only where the limit row held. A blank value
            # of a field with no required row (a flex color, size, margin) meets its form.
            broken = np.zeros(len(values), dtype=bool)
            if slot.required:
                empty = (values.str.strip() == "").to_numpy(dtype=bool, na_value=True)
                failures.append((slot.path, EMPTY, empty))
                broken |= empty
            if slot.limit is not None:
                limit = LIMITS[slot.limit]
                if limit.unit in ("utf16", "grapheme"):
                    sizes = limit.sizes(values.fillna(""))
                    over = (sizes > limit.high).to_numpy(dtype=bool) & ~broken
                    failures.append((slot.path, limit.words(), over))
                    broken |= over
            for name in slot.patterns:
                ok = PATTERNS[name].mask(values)
                failures.append((slot.path, PATTERNS[name].message, ~ok & ~broken))
        failures.extend(self._flex_sizes(frame))
        failures.extend(self._relations(frame))
        return [f for f in failures if f[2].any()]

    def _relations(self, frame: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
        """Each rule between fields whose values a placeholder fills, per rendered row (the
        rule's test runs once per distinct combination of values)."""
        failures = []
        for relation in self.relations:
            rule = RULES[relation.rule]
            names = [name for name, _ in relation.values]
            columns = [
                self.rendered_values(frame, value).tolist()
                if isinstance(value, str) and PLACEHOLDER.search(value)
                else [value] * len(frame)
                for _, value in relation.values
            ]
            combos = list(zip(*columns, strict=True)) if columns else []
            kept = {c: rule.test(dict(zip(names, c, strict=True))) for c in set(combos)}
            broken = np.fromiter((not kept[c] for c in combos), dtype=bool, count=len(combos))
            failures.append((relation.path, rule.message, broken))
        return failures

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
            kind = "flex bubble" if contents.get("type") == "bubble" else "flex carousel"
            limit = LIMITS[kind]
            failures.append(
                (f"messages[{i}].contents", limit.words(), (size > limit.high).to_numpy(dtype=bool))
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
