"""Narrowcast's recipient, demographic filter and limit objects: one definition for the exporter
and the sandbox.

Structure, types and enums are LINE's own models (``line-bot-sdk``'s ``Recipient``, ``Filter``
and ``Limit``, generated from ``messaging-api.yml``: ``NarrowcastRequest``). The rules LINE gives
in prose (Messaging API reference, "Send narrowcast message"):

| rule | limit | source |
|---|---|---|
| audience and redelivery objects in one ``recipient`` | at most 10 | "You can specify up to 10 recipients per request" |
| ``limit.forbidPartialDelivery`` | only with ``upToRemainingQuota: true`` | ``Limit`` in ``messaging-api.yml`` |
| ``limit.max`` | 1 or more | ``Limit.max`` ``minimum: 1`` |
| an audience used as a condition | at least 50 recipients, else the narrowcast fails (``errorCode`` 4) | ``NarrowcastProgressResponse.errorCode`` |

An audience may also be written by its name, ``{"type": "audience", "description": "spring
buyers"}`` (``description`` is LINE's name field of an audience, what an ``audience`` export's
``audience_name`` sets): the exporter resolves it to ``audienceGroupId`` before sending; LINE
itself takes only ids.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from line_exports.destinations.line_messaging.limits import RULES
from line_exports.destinations.line_messaging.structure import _PARSE_ERRORS, sdk_models

MAX_RECIPIENT_OBJECTS = 10
MIN_AUDIENCE_SIZE = 50
PROGRESS_ERROR_CODES = {
    1: "an internal error occurred",
    2: "there weren't enough recipients",
    3: "a request already accepted was retried (conflict)",
    4: "an audience of less than 50 recipients is included as a condition of sending",
    5: "delivery was canceled to prevent delivering to only a subset of the target audience",
}


class TargetingError(ValueError):
    """A recipient, filter or limit object LINE would refuse (the message names the property)."""


def parse_json_setting(text: str | None, name: str) -> Any:
    """A JSON object setting (``recipient``, ``filter``); None when empty."""
    if text is None or not str(text).strip():
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise TargetingError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise TargetingError(f"{name} must be a JSON object")
    return value


def _leaves(recipient: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(property path, audience or redelivery object) in a recipient tree."""
    if not isinstance(recipient, dict):
        return
    kind = recipient.get("type")
    if kind == "operator":
        for key in ("and", "or"):
            items = recipient.get(key)
            if isinstance(items, list):
                for i, item in enumerate(items):
                    yield from _leaves(item, f"{path}.{key}[{i}]")
        if isinstance(recipient.get("not"), dict):
            yield from _leaves(recipient["not"], f"{path}.not")
    elif kind in ("audience", "redelivery"):
        yield path, recipient


def recipient_problems(recipient: Any, path: str = "recipient") -> list[tuple[str, str]]:
    """Problems ``(property, message)`` of a recipient object as LINE sends it (ids only)."""
    if not isinstance(recipient, dict):
        return [(path, "Must be an object")]
    problems = _operator_shape(recipient, path)
    if problems:
        return problems
    try:
        sdk_models().Recipient.from_dict(recipient)
    except _PARSE_ERRORS as exc:
        return [(path, _first_error(exc))]
    leaves = list(_leaves(recipient, path))
    if not leaves:
        return [(path, "Must contain at least one audience or redelivery object")]
    if len(leaves) > MAX_RECIPIENT_OBJECTS:
        return [(path, f"Up to {MAX_RECIPIENT_OBJECTS} audience or redelivery objects per request")]
    for where, leaf in leaves:
        if leaf["type"] == "audience":
            ident = leaf.get("audienceGroupId")
            if not isinstance(ident, int) or isinstance(ident, bool) or ident < 1:
                problems.append((f"{where}.audienceGroupId", "Must be an audience group ID"))
            elif set(leaf) - {"type", "audienceGroupId"}:
                problems.append((where, "Only type and audienceGroupId are allowed"))
        elif not isinstance(leaf.get("requestId"), str) or not leaf["requestId"]:
            problems.append((f"{where}.requestId", "Must be a request ID"))
    return problems


RECIPIENT_LEAVES = ("audience", "redelivery")
DEMOGRAPHIC_LEAVES = ("gender", "age", "appType", "area", "subscriptionPeriod")


def _operator_shape(
    obj: dict[str, Any], path: str, leaves: tuple[str, ...] = RECIPIENT_LEAVES
) -> list[tuple[str, str]]:
    """An operator holds exactly one of and / or / not, never an empty array (LINE's "Logical
    operator objects", the same for a ``recipient`` and a ``filter.demographic``: the
    :data:`.limits.RULES` row "operator: one of and, or, not"); every other object is one of
    ``leaves``' types."""
    if obj.get("type") != "operator":
        if obj.get("type") not in leaves:
            kinds = ", ".join(("operator", *leaves))
            return [(f"{path}.type", f"Must be one of the following values: [{kinds}]")]
        return []
    rule = RULES["operator: one of and, or, not"]
    if not rule.test({k: obj.get(k) for k in ("and", "or", "not")}):
        return [(path, rule.message)]
    key = next(k for k in ("and", "or", "not") if obj.get(k) is not None)
    if key == "not":
        return (
            _operator_shape(obj["not"], f"{path}.not", leaves)
            if isinstance(obj["not"], dict)
            else [(f"{path}.not", "Must be an object")]
        )
    items = obj[key]
    if not isinstance(items, list) or not items:
        return [(f"{path}.{key}", "Must be a non-empty array")]
    found: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            found.append((f"{path}.{key}[{i}]", "Must be an object"))
        else:
            found.extend(_operator_shape(item, f"{path}.{key}[{i}]", leaves))
    return found


def filter_problems(value: Any, path: str = "filter") -> list[tuple[str, str]]:
    """Problems of a narrowcast ``filter`` object (``{"demographic": ...}``)."""
    if not isinstance(value, dict):
        return [(path, "Must be an object")]
    if set(value) - {"demographic"}:
        return [(path, "Only demographic is allowed")]
    demographic = value.get("demographic")
    if isinstance(demographic, dict):
        problems = _operator_shape(demographic, f"{path}.demographic", DEMOGRAPHIC_LEAVES)
        if problems:
            return problems
    try:
        sdk_models().Filter.from_dict(value)
    except _PARSE_ERRORS as exc:
        return [(path, _first_error(exc))]
    return []


def limit_problems(value: Any, path: str = "limit") -> list[tuple[str, str]]:
    """Problems of a narrowcast ``limit`` object."""
    if not isinstance(value, dict):
        return [(path, "Must be an object")]
    if set(value) - {"max", "upToRemainingQuota", "forbidPartialDelivery"}:
        return [(path, "Only max, upToRemainingQuota and forbidPartialDelivery are allowed")]
    try:
        sdk_models().Limit.from_dict(value)
    except _PARSE_ERRORS as exc:
        return [(path, _first_error(exc))]
    if value.get("forbidPartialDelivery") and not value.get("upToRemainingQuota"):
        return [
            (
                f"{path}.forbidPartialDelivery",
                "Can be true only if upToRemainingQuota is true",
            )
        ]
    return []


def _first_error(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(line.strip() for line in text[1:3]) if len(text) > 1 else str(exc)


def audience_ids(recipient: dict[str, Any]) -> list[int]:
    """Every ``audienceGroupId`` the recipient names (in order, once each)."""
    return list(
        dict.fromkeys(
            leaf["audienceGroupId"]
            for _, leaf in _leaves(recipient, "recipient")
            if leaf.get("type") == "audience" and isinstance(leaf.get("audienceGroupId"), int)
        )
    )


NAMED_BY = ("description", "export")  # an audience by its name, or by the export that made it


def resolve_names(recipient: Any, lookup: Callable[[str, str], int]) -> Any:
    """A copy of ``recipient`` whose audiences written by name (``description``) or by the
    ``audience`` export that uploads them (``export``: its asset key, ``a/b`` for a workflow
    task) carry the ``audienceGroupId`` ``lookup(field, value)`` returns."""
    if isinstance(recipient, list):
        return [resolve_names(item, lookup) for item in recipient]
    if not isinstance(recipient, dict):
        return recipient
    given = [k for k in NAMED_BY if k in recipient]
    if recipient.get("type") == "audience" and given:
        rest = {k: v for k, v in recipient.items() if k not in NAMED_BY}
        if "audienceGroupId" in rest or len(given) > 1:
            raise TargetingError(
                "an audience object names more than one of audienceGroupId, description, "
                "export; give one"
            )
        value = recipient[given[0]]
        if not isinstance(value, str) or not value.strip():
            raise TargetingError(f"an audience's {given[0]} must be a non-empty string")
        return {**rest, "audienceGroupId": lookup(given[0], value)}
    return {key: resolve_names(value, lookup) for key, value in recipient.items()}


def audience_names(recipient: Any) -> list[str]:
    """How audiences are named in a recipient before resolution (``description: x``,
    ``export: y``)."""
    found: list[str] = []
    if isinstance(recipient, list):
        for item in recipient:
            found.extend(audience_names(item))
    elif isinstance(recipient, dict):
        if recipient.get("type") == "audience":
            found.extend(
                f"{k}: {recipient[k]}" for k in NAMED_BY if isinstance(recipient.get(k), str)
            )
        for value in recipient.values():
            if isinstance(value, dict | list):
                found.extend(audience_names(value))
    return found


def upper_bound(
    recipient: dict[str, Any], sizes: dict[int, int], everyone: int | None
) -> int | None:
    """The most recipients ``recipient`` can reach, from audience sizes: ``or`` adds, ``and``
    takes the smallest, ``not`` is bounded by ``everyone`` (the channel's reachable friends, when
    known). None when no bound is known (a redelivery, or a ``not`` without ``everyone``)."""
    kind = recipient.get("type")
    if kind == "audience":
        return sizes.get(recipient["audienceGroupId"])
    if kind == "redelivery":
        return everyone
    if recipient.get("not") is not None:
        return everyone
    parts = [
        upper_bound(r, sizes, everyone) for r in recipient.get("and") or recipient.get("or") or []
    ]
    if recipient.get("and") is not None:
        known = [p for p in parts if p is not None]
        return min(known) if known else None
    if any(p is None for p in parts):
        return None
    total = sum(p for p in parts if p is not None)
    return total if everyone is None else min(total, everyone)


def request_targeting(settings: Any) -> dict[str, Any]:
    """``recipient`` (names not yet resolved), ``filter`` and ``limit`` of a narrowcast, as
    settings give them (only what is set)."""
    body: dict[str, Any] = {}
    recipient = parse_json_setting(settings.recipient, "recipient")
    if recipient is not None:
        body["recipient"] = recipient
    demographic = parse_json_setting(settings.filter, "filter")
    if demographic is not None:
        body["filter"] = demographic
    limit: dict[str, Any] = {}
    if settings.limit_max is not None:
        limit["max"] = settings.limit_max
    if settings.up_to_remaining_quota:
        limit["upToRemainingQuota"] = True
    if settings.forbid_partial_delivery:
        limit["forbidPartialDelivery"] = True
    if limit:
        body["limit"] = limit
    return body


def check_campaign_settings(settings: Any) -> None:
    """Settings of a narrowcast or broadcast export, checked when the export is defined."""
    from line_exports.destinations.line_messaging.messages import MessageTemplate

    if not (settings.template_message or "").strip():
        raise ValueError(f"template_message is required when target is {settings.target}")
    MessageTemplate.parse(settings.template_message or "", target=settings.target)
    narrowcast_only = {
        "recipient": settings.recipient,
        "filter": settings.filter,
        "limit_max": settings.limit_max,
        "up_to_remaining_quota": settings.up_to_remaining_quota or None,
        "forbid_partial_delivery": settings.forbid_partial_delivery or None,
    }
    if settings.custom_aggregation_units:
        raise ValueError(
            f"custom_aggregation_units: LINE's {settings.target} request has no such field "
            "(NarrowcastRequest, BroadcastRequest in messaging-api.yml); only push and multicast"
        )
    if settings.target == "broadcast":
        given = [name for name, value in narrowcast_only.items() if value]
        if given:
            raise ValueError(
                f"{', '.join(given)}: narrowcast settings; a broadcast goes to every friend "
                "(use target: narrowcast to choose recipients)"
            )
        return
    body = request_targeting(settings)
    problems: list[tuple[str, str]] = []
    if "recipient" in body:
        problems += recipient_problems(resolve_names(body["recipient"], lambda _, __: 1))
    if "filter" in body:
        problems += filter_problems(body["filter"])
    if "limit" in body:
        problems += limit_problems(body["limit"])
    if problems:
        raise ValueError(
            "narrowcast settings break LINE's rules: "
            + "; ".join(f"{where}: {what}" for where, what in problems)
        )
