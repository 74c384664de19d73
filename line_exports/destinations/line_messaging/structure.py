"""Message structure as LINE's official models define it: required fields, types, enums, types' names.

The models are ``line-bot-sdk``'s ``linebot.v3.messaging.models``, generated from LINE's OpenAPI
spec (``line/line-openapi`` ``messaging-api.yml``) with its enum and strict-type validators. A
message parses as the SDK parses it (``Message.from_dict``), and a property no model defines
is refused (the SDK would drop it; see :data:`UNKNOWN_PROPERTY`); when parsing fails, the failing object is
found by parsing the object's children the same way, so each problem names its property path the
way LINE's 400 answers do (``messages[0].contents.body.contents[1].weight``). Limits the spec
states only in prose (lengths per counting unit, item counts, URL schemes) are in
:mod:`line_exports.destinations.line_messaging.limits`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from types import ModuleType
from typing import Any

from pydantic.v1 import BaseModel, ValidationError
from pydantic.v1.fields import SHAPE_DICT, SHAPE_LIST, SHAPE_MAPPING, ModelField

from line_exports.destinations.line_messaging.limits import EMPTY, MISSING, REQUIRED

# The message types TD's reference supports (LINE's coupon message is not one of them).
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
UNKNOWN_PROPERTY = "Unknown property: LINE's models define no such field here"
"""The problem of a property the message's model does not define (``{"type": "text", "text":
"hi", "txet": "x"}``). LINE reads a request body strictly; the sandbox answers it as LINE answers
a property it cannot read: 400 "The property, '...', in the request body is invalid"."""
_PARSE_ERRORS = (ValidationError, ValueError, TypeError, KeyError, AttributeError)


@cache
def sdk_models() -> ModuleType:
    """``linebot.v3.messaging.models``, imported on first use: importing it takes about 1.5 s of
    CPU, which a process that checks no LINE message (``--help``, a CAPI or MAAC run, a webhook
    receiver) does not pay."""
    import linebot.v3.messaging.models as models

    return models


_ENUM = re.compile(r"must be one of enum values \((.*)\)")
_MAX_LENGTH = re.compile(r"ensure this value has at most (\d+) characters")
_MIN_LENGTH = re.compile(r"ensure this value has at least (\d+) characters")


def message_problems(message: Any, path: str) -> list[tuple[str, str]]:
    """Problems ``(property path, message)`` of one message object, as LINE's models see them."""
    if not isinstance(message, dict):
        return [(path, "Must be a message object")]
    kind = message.get("type")
    if kind not in MESSAGE_TYPES:
        return [
            (f"{path}.type", f"Must be one of the following values: [{', '.join(MESSAGE_TYPES)}]")
        ]
    base = sdk_models().Message
    try:
        base.from_dict(message)
    except _PARSE_ERRORS:
        return _locate(base, message, path)
    return list(_type_names(base, message, path))


_CONTAINERS = (SHAPE_LIST, SHAPE_DICT, SHAPE_MAPPING)


def _children(
    klass: type[BaseModel], obj: dict[str, Any], path: str
) -> Iterator[tuple[type[BaseModel], Any, str]]:
    """(model class, value, path) of each nested object the class's fields hold."""
    for field in _model_fields(klass):
        value = obj.get(field.alias)
        if value is None:
            continue
        child, where = field.type_, f"{path}.{field.alias}"
        if field.shape == SHAPE_LIST and isinstance(value, list):
            for i, item in enumerate(value):
                yield child, item, f"{where}[{i}]"
        elif field.shape in (SHAPE_DICT, SHAPE_MAPPING) and isinstance(value, dict):
            for key, item in value.items():
                yield child, item, f"{where}.{key}"
        elif field.shape not in _CONTAINERS:
            yield child, value, where


@cache
def _model_fields(klass: type[BaseModel]) -> tuple[ModelField, ...]:
    """The fields of a class that hold models (others are checked by the class itself)."""
    return tuple(
        f
        for f in klass.__fields__.values()
        if isinstance(f.type_, type) and issubclass(f.type_, BaseModel)
    )


def _discriminated(klass: type[BaseModel]) -> bool:
    """True for a base class whose ``type`` picks the subclass (``Action``, ``FlexComponent``)."""
    return f"_{klass.__name__}__discriminator_value_class_map" in vars(klass)


def _concrete(klass: type[BaseModel], obj: dict[str, Any]) -> type[BaseModel] | str:
    """The model class an object parses as (its ``type`` picks a subclass), or a problem."""
    if not _discriminated(klass):
        return klass
    if obj.get("type") is None:
        return "Must not be null"
    name = klass.get_discriminator_value(obj)  # type: ignore[attr-defined]
    if name is None:
        mapping = vars(klass)[f"_{klass.__name__}__discriminator_value_class_map"]
        return f"Must be one of the following values: [{', '.join(mapping)}]"
    return getattr(sdk_models(), name)


def _type_names(klass: type[BaseModel], obj: Any, path: str) -> Iterator[tuple[str, str]]:
    """Objects whose ``type`` is not the one their place requires (the SDK parses a bubble's
    ``body`` as a box whatever its ``type`` says; LINE refuses it)."""
    if not isinstance(obj, dict):
        return
    concrete = _concrete(klass, obj)
    if isinstance(concrete, str):
        yield f"{path}.type", concrete
        return
    yield from _own_type(concrete, obj, path)
    yield from _unknown_properties(concrete, obj, path)
    yield from _missing(concrete, obj, path)
    for child, value, where in _children(concrete, obj, path):
        yield from _type_names(child, value, where)


@cache
def _known(klass: type[BaseModel]) -> frozenset[str]:
    """The JSON names of a model's fields (its own and those it inherits)."""
    return frozenset(f.alias for f in klass.__fields__.values())


def _unknown_properties(
    klass: type[BaseModel], obj: dict[str, Any], path: str
) -> Iterator[tuple[str, str]]:
    """Properties of an object its model does not define (the SDK drops them silently)."""
    known = _known(klass)
    for key in obj:
        if key not in known:
            yield f"{path}.{key}", UNKNOWN_PROPERTY


def _missing(klass: type[BaseModel], obj: dict[str, Any], path: str) -> Iterator[tuple[str, str]]:
    """Fields the reference requires that the spec (so the model) lets be null
    (:data:`.limits.REQUIRED`): ``{"type": "uri", "label": "Open"}`` has no ``uri``."""
    fields, _ = REQUIRED.get(klass.__name__, ((), ""))
    for key in fields:
        if obj.get(key) is None:
            yield f"{path}.{key}", MISSING


def _own_type(klass: type[BaseModel], obj: dict[str, Any], path: str) -> list[tuple[str, str]]:
    field = klass.__fields__.get("type")
    if (
        field is not None
        and not field.required
        and field.default is not None
        and obj.get("type") not in (None, field.default)
    ):
        return [(f"{path}.type", f"Must be {field.default}")]
    return []


def _locate(klass: type[BaseModel], obj: Any, path: str) -> list[tuple[str, str]]:
    """The problems of an object the SDK refuses, at the deepest object that fails."""
    if not isinstance(obj, dict):
        return [(path, "Must be an object")]
    concrete = _concrete(klass, obj)
    if isinstance(concrete, str):
        return [(f"{path}.type", concrete)]
    try:
        concrete.from_dict(obj)  # type: ignore[attr-defined]
    except _PARSE_ERRORS as exc:
        error: Exception = exc
    else:
        return list(_type_names(concrete, obj, path))
    problems = list(_unknown_properties(concrete, obj, path))
    for child, value, where in _children(concrete, obj, path):
        problems.extend(_locate(child, value, where))
    if len(problems) > sum(1 for _, m in problems if m == UNKNOWN_PROPERTY):
        return problems
    own = [*problems, *_own_type(concrete, obj, path), *_missing(concrete, obj, path)]
    if not isinstance(error, ValidationError):
        return [*own, (path, str(error))]
    return [*own, *(_explain(concrete, path, e) for e in error.errors())]


def _explain(klass: type[BaseModel], path: str, error: dict[str, Any]) -> tuple[str, str]:
    """One pydantic error as LINE words it, at the property's JSON (alias) path."""
    loc = list(error["loc"])
    head = loc[0] if loc else ""
    field = klass.__fields__.get(str(head))
    where = path + (f".{field.alias}" if field is not None else f".{head}" if head else "")
    where += "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
    message = str(error["msg"])
    kind = str(error["type"])
    if (enum := _ENUM.fullmatch(message)) is not None:
        values = [v.strip().strip("'") for v in enum.group(1).split(",")]
        return where, f"Must be one of the following values: [{', '.join(values)}]"
    if (most := _MAX_LENGTH.fullmatch(message)) is not None:
        return where, f"Length must be at most {most.group(1)}"
    if (least := _MIN_LENGTH.fullmatch(message)) is not None:
        return where, EMPTY if least.group(
            1
        ) == "1" else f"Length must be at least {least.group(1)}"
    words = {
        "value_error.missing": "Must not be null",
        "type_error.none.not_allowed": "Must not be null",
        "type_error.str": "Must be a string",
        "type_error.integer": "Must be an integer",
        "type_error.float": "Must be a number",
        "type_error.bool": "Must be a boolean",
        "type_error.list": "Must be an array",
        "type_error.dict": "Must be an object",
    }
    return where, words.get(kind, message)
