"""LINE's insight endpoints for pushes and multicasts (``insight.yml``), on the sandbox clock.

* ``GET /v2/bot/insight/message/event/aggregation?customAggregationUnit=&from=&to=``
  (getStatisticsPerUnit): how recipients of messages sent with that unit name interacted with
  them between two dates (yyyyMMdd, UTC+9, ``to`` at most 30 days after ``from``).
* ``GET /v2/bot/insight/message/delivery?date=`` (getNumberOfMessageDeliveries): messages the
  account sent that day (UTC+9); ``status`` is ``unready`` until the day is over.

What users do is modelled, deterministically, from what was delivered: each recipient of a
message opens it with probability ``open_rate`` at a moment drawn from a hash of (recipient,
messages, unit), up to 7 days after delivery, and taps each URL in it with probability
``click_rate``. So the figures grow as the sandbox clock moves on (``/_sandbox/clock``), and the
same sends give the same figures. As LINE documents ("Get statistics of sent messages"), a figure
is ``null`` when it, or the number of users behind it, is under 20, and statistics keep
changing for 14 days after a send. Media plays are not modelled (always ``null``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from line_exports.sandbox.clock import DAY_SECONDS, clock_of
from line_exports.sandbox.core import Sandbox
from line_exports.sandbox.line_messaging.common import Api, _error, _problems
from line_exports.sandbox.line_messaging.store import UNIT

JST = timezone(timedelta(hours=9))  # insight.yml: "Timezone: UTC+9"
PRIVACY_FLOOR = 20  # a figure under 20, or backed by under 20 users, is null
UPDATE_DAYS = 14  # statistics keep changing for 14 days (1,209,600 s) after a send
MAX_PERIOD_DAYS = 30  # ``to`` at most 30 days after ``from``
OPEN_SPREAD_SECONDS = 7 * DAY_SECONDS
URL = re.compile(r"https?://[^\s\"'<>]+")


@dataclass
class Delivery:
    """One push or multicast as delivered (blocked recipients left out)."""

    at: float  # sandbox clock, epoch seconds
    kind: str  # push | multicast
    unit: str | None
    recipients: list[str]
    messages: list[dict[str, Any]]


@dataclass
class InsightStore:
    deliveries: list[Delivery] = field(default_factory=list)
    open_rate: float = 0.6
    click_rate: float = 0.3
    per_unit_granted: bool = True
    """False: the account lacks per-unit statistics (LINE grants them per account): 403."""


def store_of(sandbox: Sandbox) -> InsightStore:
    return sandbox.store("line_insight", InsightStore)


def record(
    sandbox: Sandbox,
    kind: str,
    recipients: list[str],
    messages: list[dict[str, Any]],
    units: list[str] | None,
) -> None:
    """Called by push and multicast (under the sandbox lock) for what reached recipients."""
    if recipients:
        store_of(sandbox).deliveries.append(
            Delivery(clock_of(sandbox).now(), kind, (units or [None])[0], recipients, messages)
        )


def _fraction(*parts: str) -> float:
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _urls(message: dict[str, Any]) -> list[str]:
    """URLs a user can tap in one message bubble: ``uri``/``linkUri``/``altUri`` values, URLs in
    texts, in order of appearance, each once."""
    found: list[str] = []

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str):
            if key in ("uri", "linkUri", "desktop") and URL.fullmatch(value):
                found.append(value)
            elif key == "text":
                found.extend(URL.findall(value))

    walk(message)
    return list(dict.fromkeys(found))


@dataclass
class Event:
    user: str
    at: float
    seq: int
    url: str | None  # None: an impression of bubble ``seq``


def events(store: InsightStore, delivery: Delivery) -> Iterator[Event]:
    """What each recipient does with a delivery: deterministic from (recipient, messages, unit)."""
    body = json.dumps(delivery.messages, sort_keys=True)
    unit = delivery.unit or ""
    for user in delivery.recipients:
        if _fraction("open", user, body, unit) >= store.open_rate:
            continue
        opened = delivery.at + OPEN_SPREAD_SECONDS * _fraction("when", user, body, unit) ** 2
        for seq, message in enumerate(delivery.messages, start=1):
            yield Event(user, opened, seq, None)
            for url in _urls(message):
                if _fraction("click", user, body, unit, str(seq), url) < store.click_rate:
                    yield Event(user, opened + 60 * (1 + seq), seq, url)


def _private(count: int, users: int) -> int | None:
    return count if count >= PRIVACY_FLOOR and users >= PRIVACY_FLOOR else None


def _day(text: str | None, name: str) -> tuple[date | None, Response | None]:
    if text is None:
        return None, _problems([(name, "must not be null")])
    if not re.fullmatch(r"[0-9]{8}", text):
        return None, _problems([(name, "must match ^[0-9]{8}$")])
    try:
        return datetime.strptime(text, "%Y%m%d").date(), None
    except ValueError:
        return None, _problems([(name, "is not a valid date (yyyyMMdd)")])


def _start(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=JST).timestamp()


def statistics(
    store: InsightStore, unit: str, first: date, last: date, now: float
) -> dict[str, Any]:
    """getStatisticsPerUnit's answer for events from ``first`` to ``last`` (UTC+9) up to ``now``."""
    begin, end = _start(first), min(_start(last + timedelta(days=1)), now)
    impressions: dict[int, list[str]] = {}
    clicks: dict[tuple[int, str], list[str]] = {}
    for delivery in store.deliveries:
        if delivery.unit != unit:
            continue
        for event in events(store, delivery):
            if not (begin <= event.at < end) or event.at > delivery.at + UPDATE_DAYS * DAY_SECONDS:
                continue
            if event.url is None:
                impressions.setdefault(event.seq, []).append(event.user)
            else:
                clicks.setdefault((event.seq, event.url), []).append(event.user)
    openers = {u for users in impressions.values() for u in users}
    clickers = {u for users in clicks.values() for u in users}
    by_url: dict[str, set[str]] = {}
    for (_, url), users in clicks.items():
        by_url.setdefault(url, set()).update(users)
    media_nulls = {
        k: None
        for k in (
            "mediaPlayed",
            "mediaPlayed25Percent",
            "mediaPlayed50Percent",
            "mediaPlayed75Percent",
            "mediaPlayed100Percent",
            "uniqueMediaPlayed",
            "uniqueMediaPlayed25Percent",
            "uniqueMediaPlayed50Percent",
            "uniqueMediaPlayed75Percent",
            "uniqueMediaPlayed100Percent",
        )
    }
    return {
        "overview": {
            "uniqueImpression": _private(len(openers), len(openers)),
            "uniqueClick": _private(len(clickers), len(clickers)),
            "uniqueMediaPlayed": None,
            "uniqueMediaPlayed100Percent": None,
        },
        "messages": [
            {
                "seq": seq,
                "impression": _private(len(users), len(set(users))),
                "uniqueImpression": _private(len(set(users)), len(set(users))),
                **media_nulls,
            }
            for seq, users in sorted(impressions.items())
        ],
        "clicks": [
            {
                "seq": seq,
                "url": url,
                "click": _private(len(users), len(set(users))),
                "uniqueClick": _private(len(set(users)), len(set(users))),
                "uniqueClickOfRequest": _private(len(by_url[url]), len(by_url[url])),
            }
            for (seq, url), users in sorted(clicks.items())
        ],
    }


def deliveries_on(store: InsightStore, day: date, now: float) -> dict[str, Any]:
    """getNumberOfMessageDeliveries' answer: messages (one per recipient) sent that day."""
    begin, end = _start(day), _start(day + timedelta(days=1))
    if now < end:
        return {"status": "unready"}
    counts = {"push": 0, "multicast": 0}
    for delivery in store.deliveries:
        if begin <= delivery.at < end:
            counts[delivery.kind] += len(delivery.recipients)
    return {
        "status": "ready",
        "broadcast": 0,
        "targeting": 0,
        "autoResponse": 0,
        "welcomeResponse": 0,
        "chat": 0,
        "apiBroadcast": 0,
        "apiPush": counts["push"],
        "apiMulticast": counts["multicast"],
        "apiNarrowcast": 0,
        "apiReply": 0,
    }


def routes(api: Api) -> list[BaseRoute]:
    sandbox = api.sandbox
    store = store_of(sandbox)
    clock = clock_of(sandbox)

    async def per_unit(request: Request) -> Response:
        if (denied := api.authorized(request)) is not None:
            return denied
        if not store.per_unit_granted:
            return _error(403, "Access to this API is not available for your account")
        query = request.query_params
        unit = query.get("customAggregationUnit")
        if unit is None or not UNIT.fullmatch(unit):
            return _problems([("customAggregationUnit", "must match ^[a-zA-Z0-9_]{1,30}$")])
        first, bad = _day(query.get("from"), "from")
        if bad is not None:
            return bad
        last, bad = _day(query.get("to"), "to")
        if bad is not None:
            return bad
        assert first is not None and last is not None
        if last < first:
            return _error(400, "The end date must be on or after the start date")
        if (last - first).days > MAX_PERIOD_DAYS:
            return _error(400, "The end date can be at most 30 days after the start date")
        with sandbox.lock:
            return JSONResponse(statistics(store, unit, first, last, clock.now()))

    async def delivery(request: Request) -> Response:
        if (denied := api.authorized(request)) is not None:
            return denied
        day, bad = _day(request.query_params.get("date"), "date")
        if bad is not None:
            return bad
        assert day is not None
        with sandbox.lock:
            return JSONResponse(deliveries_on(store, day, clock.now()))

    return [
        Route("/v2/bot/insight/message/event/aggregation", per_unit, methods=["GET"]),
        Route("/v2/bot/insight/message/delivery", delivery, methods=["GET"]),
    ]
