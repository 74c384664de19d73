"""LINE Conversion API v1, faked faithfully: ``POST /v1/{line_tag_id}/events``.

Follows conversion-api-docs.linebiz.com: ``X-Line-TagAccessToken`` (raw token, bound to the tag;
else 401), ``X-Line-ChannelID`` (digits; required when an event carries ``user.line_uid``),
``Content-Type: application/json``, a JSON array of 1..100,000 events in at most 300 MB, never
``Transfer-Encoding: chunked`` (400). Every field is checked against the official schema (and
``user`` must carry one identifier, :data:`~line_exports.identities.CAPI_USER_IDENTIFIERS`); the
first bad event makes the whole request 400 with nothing kept; ``event_timestamp`` must lie
between 90 days before and 24 hours after arrival. 202 (no body) keeps every event, deduplicated
per tag by (``event_name``, ``deduplication_key``) as LINE documents it, the exporter's own
definition (:func:`~line_exports.destinations.line_conversion.event_identity`;
:func:`events_of`). A 500 may keep some events: :func:`fail_next_partially` makes
the next requests keep their first half and answer 500, as the real API may.

Tokens: a tag registered with :func:`register_tag` accepts only its own tokens; any other tag
accepts the default sandbox tokens (``sandbox.tokens["line_conversion"]``).
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from line_exports.destinations.line_conversion import event_identity
from line_exports.identities import CAPI_USER_IDENTIFIERS, capi_user_identified
from line_exports.sandbox.core import Sandbox

MAX_EVENTS = 100_000
MAX_BODY_BYTES = 300_000_000
WINDOW_PAST_SECONDS = 90 * 86_400
WINDOW_FUTURE_SECONDS = 86_400
INT64_MAX = 2**63 - 1
INT32_MAX = 2_147_483_647

UUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
SHA256 = re.compile(r"[0-9a-f]{64}")
CHANNEL_ID = re.compile(r"[0-9]+")
# field -> (pattern or None, max length or None), from the official schema.
EVENT_STRINGS: dict[str, tuple[re.Pattern[str] | None, int | None]] = {
    "deduplication_key": (re.compile(r"[0-9a-zA-Z\-_]{1,256}"), None),
    "event_name": (re.compile(r"[A-Za-z0-9_\-]{1,20}"), None),
}
USER_STRINGS: dict[str, tuple[re.Pattern[str] | None, int | None]] = {
    "line_uid": (re.compile(r"U[0-9a-f]{32}"), None),
    "click_id": (re.compile(r"[a-zA-Z0-9\-_]+"), None),
    "phone": (SHA256, None),
    "email": (SHA256, None),
    "ifa": (UUID, None),
    "browser_id": (UUID, None),
    "external_id": (re.compile(r"[0-9a-zA-Z\-_]{1,512}"), None),
}
WEB_STRINGS: dict[str, tuple[re.Pattern[str] | None, int | None]] = {
    "url": (re.compile(r"https?://.+", re.DOTALL), 2048),
    "referrer": (None, 2048),
    "title": (None, 1024),
    "user_agent": (None, None),
    "ip_address": (None, None),
}
EVENT_KEYS = {
    "deduplication_key",
    "event_type",
    "event_name",
    "source_type",
    "event_timestamp",
    "test_flag",
}
CUSTOM_KEYS = {"value", "currency", "quantity", "item_ids", "keywords", "category"}
ITEM_KEYS = {"event", "user", "web", "custom"}


@dataclass
class ConversionStore:
    """What the fake LINE Tags hold: events per tag by (event_name, deduplication_key), and
    counters."""

    tag_tokens: dict[str, set[str]] = field(default_factory=dict)
    events: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)
    channels: dict[str, set[str]] = field(default_factory=dict)
    received_events: int = 0
    duplicate_events: int = 0
    accepted_requests: int = 0
    refused_requests: int = 0
    partial_failures: int = 0
    refused_keys: set[str] = field(default_factory=set)
    request_sizes: list[int] = field(default_factory=list)


def store_of(sandbox: Sandbox) -> ConversionStore:
    return sandbox.store("line_conversion", ConversionStore)


def register_tag(sandbox: Sandbox, line_tag_id: str, access_token: str) -> None:
    """Bind a token to a tag: from now on the tag accepts only its registered tokens."""
    store = store_of(sandbox)
    with sandbox.lock:
        store.tag_tokens.setdefault(line_tag_id, set()).add(access_token)


def events_of(sandbox: Sandbox, line_tag_id: str) -> dict[str, dict[str, Any]]:
    """The events a tag kept, by deduplication key (a copy; of events kept under several
    event names for one key, the last: :attr:`ConversionStore.events` holds each)."""
    store = store_of(sandbox)
    with sandbox.lock:
        kept = dict(store.events.get(line_tag_id, {}))
    return {key: item for (_, key), item in kept.items()}


def fail_next_partially(sandbox: Sandbox, times: int = 1) -> None:
    """The next ``times`` valid requests keep their first half of events, then answer 500."""
    store = store_of(sandbox)
    with sandbox.lock:
        store.partial_failures += times


def refuse_events(sandbox: Sandbox, deduplication_keys: set[str] | list[str]) -> None:
    """Make LINE refuse (400) any request holding one of these events, as it does for events
    it judges invalid on its side (a test hook for what no client-side rule can foresee)."""
    store = store_of(sandbox)
    with sandbox.lock:
        store.refused_keys.update(deduplication_keys)


def _token_ok(sandbox: Sandbox, store: ConversionStore, tag: str, token: str | None) -> bool:
    if not token:
        return False
    with sandbox.lock:
        registered = store.tag_tokens.get(tag)
        allowed = (
            registered if registered is not None else sandbox.tokens.get("line_conversion", set())
        )
        return token in allowed


def _check_strings(
    obj: dict[str, Any], rules: dict[str, tuple[re.Pattern[str] | None, int | None]], where: str
) -> str | None:
    for name, value in obj.items():
        if name not in rules:
            continue
        pattern, max_length = rules[name]
        if not isinstance(value, str):
            return f"{where}.{name} must be a string"
        if max_length is not None and len(value) > max_length:
            return f"{where}.{name} is longer than {max_length} characters"
        if pattern is not None and not pattern.fullmatch(value):
            return f"{where}.{name} does not match {pattern.pattern}"
    return None


def _ip_ok(value: str) -> bool:
    """IPv4 in dotted-decimal or IPv6 in RFC 4291 text form (no zone index)."""
    if "%" in value:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _custom_problem(custom: Any) -> str | None:
    if not isinstance(custom, dict):
        return "custom must be an object"
    if unknown := set(custom) - CUSTOM_KEYS:
        return f"custom has unknown fields {sorted(unknown)}"
    value = custom.get("value")
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= INT32_MAX
    ):
        return "custom.value must be a number from 0 to 2147483647"
    currency = custom.get("currency")
    if currency is not None and not (
        isinstance(currency, str) and re.fullmatch(r"[A-Z]{3}", currency)
    ):
        return "custom.currency must be an ISO-4217 code"
    quantity = custom.get("quantity")
    if quantity is not None and not (_is_int(quantity) and 0 <= quantity <= INT32_MAX):
        return "custom.quantity must be an integer from 0 to 2147483647"
    for name, most in (("item_ids", 100), ("keywords", 10)):
        items = custom.get(name)
        if items is not None and not (
            isinstance(items, list)
            and len(items) <= most
            and all(isinstance(i, str) for i in items)
        ):
            return f"custom.{name} must be a list of at most {most} strings"
    category = custom.get("category")
    if category is not None and not (isinstance(category, str) and len(category) <= 300):
        return "custom.category must be a string of at most 300 characters"
    return None


def event_problem(item: Any, channel_id: str | None, now: float) -> str | None:
    """Why LINE would refuse this event (the first reason), or None."""
    if not isinstance(item, dict):
        return "an event must be an object"
    if unknown := set(item) - ITEM_KEYS:
        return f"unknown fields {sorted(unknown)}"
    event, user, web = item.get("event"), item.get("user"), item.get("web")
    if not isinstance(event, dict):
        return "event is required and must be an object"
    if not isinstance(user, dict):
        return "user is required and must be an object"
    if web is not None and not isinstance(web, dict):
        return "web must be an object"
    if unknown := set(event) - EVENT_KEYS:
        return f"event has unknown fields {sorted(unknown)}"
    for name in ("deduplication_key", "event_type", "source_type", "event_timestamp"):
        if event.get(name) is None:
            return f"event.{name} is required"
    if event["deduplication_key"] == "undefined":  # LINE reads it as "not sent"
        return "event.deduplication_key is required"
    if (problem := _check_strings(event, EVENT_STRINGS, "event")) is not None:
        return problem
    if event["event_type"] not in ("page_view", "conversion"):
        return "event.event_type must be page_view or conversion"
    if event["source_type"] != "web":
        return "event.source_type must be web"
    stamp = event["event_timestamp"]
    if not _is_int(stamp) or not 0 <= stamp <= INT64_MAX:
        return "event.event_timestamp must be a non-negative integer (UNIX seconds)"
    if not now - WINDOW_PAST_SECONDS <= stamp <= now + WINDOW_FUTURE_SECONDS:
        return "event.event_timestamp must be within 90 days before and 24 hours after now"
    if "test_flag" in event and not isinstance(event["test_flag"], bool):
        return "event.test_flag must be a boolean"
    if unknown := set(user) - set(USER_STRINGS):
        return f"user has unknown fields {sorted(unknown)}"
    if (problem := _check_strings(user, USER_STRINGS, "user")) is not None:
        return problem
    if not capi_user_identified(user):
        return "user must carry at least one of " + ", ".join(CAPI_USER_IDENTIFIERS)
    if "line_uid" in user and not channel_id:
        return "user.line_uid needs the X-Line-ChannelID header"
    if web is not None:
        if unknown := set(web) - set(WEB_STRINGS):
            return f"web has unknown fields {sorted(unknown)}"
        if (problem := _check_strings(web, WEB_STRINGS, "web")) is not None:
            return problem
        if "ip_address" in web and not _ip_ok(web["ip_address"]):
            return "web.ip_address is not an IPv4 or IPv6 address"
    if "custom" in item:
        return _custom_problem(item["custom"])
    return None


def _bad_request(message: str) -> Response:
    return JSONResponse({"message": message}, status_code=400)


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def routes(sandbox: Sandbox) -> list[BaseRoute]:
    store = store_of(sandbox)

    async def post_events(request: Request) -> Response:
        tag = request.path_params["line_tag_id"]
        if "chunked" in request.headers.get("transfer-encoding", "").lower():
            return _bad_request("Transfer-Encoding: chunked is not supported")
        if not _token_ok(sandbox, store, tag, request.headers.get("x-line-tagaccesstoken")):
            return JSONResponse({"message": "invalid access token"}, status_code=401)
        channel_id = request.headers.get("x-line-channelid")
        if channel_id is not None and not CHANNEL_ID.fullmatch(channel_id):
            return _bad_request("X-Line-ChannelID must be digits")
        if (
            request.headers.get("content-type", "").split(";")[0].strip().lower()
            != "application/json"
        ):
            return _bad_request("Content-Type must be application/json")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _bad_request("request body is larger than 300 MB")
        raw = await _read_capped(request, MAX_BODY_BYTES)
        if raw is None:
            return _bad_request("request body is larger than 300 MB")
        try:
            items = json.loads(raw)
        except ValueError:
            return _bad_request("request body is not JSON")
        if not isinstance(items, list) or not items:
            return _bad_request("request body must be a non-empty JSON array of events")
        if len(items) > MAX_EVENTS:
            return _bad_request(f"at most {MAX_EVENTS} events per request")
        now = time.time()
        for index, item in enumerate(items):
            problem = event_problem(item, channel_id, now)
            if problem is None and item["event"]["deduplication_key"] in store.refused_keys:
                problem = "event refused by the sandbox (refuse_events)"
            if problem is not None:
                with sandbox.lock:
                    store.refused_requests += 1
                return _bad_request(f"events[{index}]: {problem}")
        with sandbox.lock:
            partial = store.partial_failures > 0
            if partial:
                store.partial_failures -= 1
                items = items[: len(items) // 2]
            store.request_sizes.append(len(items))
            kept = store.events.setdefault(tag, {})
            for item in items:
                key = event_identity(item["event"])
                store.received_events += 1
                if key in kept:
                    store.duplicate_events += 1
                else:
                    kept[key] = item
            if channel_id:
                store.channels.setdefault(tag, set()).add(channel_id)
            if not partial:
                store.accepted_requests += 1
        if partial:
            return JSONResponse({"message": "internal server error"}, status_code=500)
        return Response(status_code=202)

    return [Route("/v1/{line_tag_id}/events", post_events, methods=["POST"])]


def summary(sandbox: Sandbox) -> dict[str, Any]:
    store = store_of(sandbox)
    with sandbox.lock:
        return {
            "events_by_tag": {tag: len(events) for tag, events in store.events.items()},
            "events_received": store.received_events,
            "duplicate_events": store.duplicate_events,
            "accepted_requests": store.accepted_requests,
            "refused_requests": store.refused_requests,
        }
