"""Narrowcast, broadcast, narrowcast progress and follower insight (``messaging-api.yml``,
``insight.yml``), as strict as LINE's reference.

The request is checked with the exporter's definitions (:mod:`~line_exports.destinations.
line_messaging.targeting`: LINE's models plus the prose rules; message checks from
``messages``). A narrowcast is answered ``202`` and processed asynchronously: its progress is
``waiting``, then ``sending``, then ``succeeded`` or ``failed`` (``errorCode`` 4 when an audience
of the recipient holds fewer than 50 users, 5 when ``forbidPartialDelivery`` cancels it), over
``narrowcast_seconds``. Friends are the followers set with ``PUT
/_sandbox/line_messaging/followers`` (by default every user of an uploaded audience); each has
fixed demographics derived from the user ID, so a ``filter`` selects the same users every time.
Sandbox assumption (LINE does not document it): a narrowcast without ``upToRemainingQuota``
that would pass the month's quota is answered ``429`` "You have reached your monthly limit."
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from line_exports.destinations.line_messaging.messages import check_messages
from line_exports.destinations.line_messaging.targeting import (
    MIN_AUDIENCE_SIZE,
    PROGRESS_ERROR_CODES,
    audience_ids,
    filter_problems,
    limit_problems,
    recipient_problems,
)
from line_exports.sandbox.clock import clock_of
from line_exports.sandbox.line_messaging.common import Api, _error, _invalid, _problems, _request_id
from line_exports.sandbox.line_messaging.store import IFA as UUID
from line_exports.sandbox.line_messaging.store import USER_ID

RATE = {"narrowcast": (60, 3600.0), "broadcast": (60, 3600.0), "insight": (60, 3600.0)}
AGES = ["age_15", "age_20", "age_25", "age_30", "age_35", "age_40", "age_45", "age_50"]
AGES += ["age_55", "age_60", "age_65", "age_70"]
AREAS = ["jp_13", "jp_27", "jp_01", "tw_01", "tw_02", "th_01", "id_04"]
PERIODS = {"day_7": 7, "day_30": 30, "day_90": 90, "day_180": 180, "day_365": 365}


def demographics(user: str) -> dict[str, Any]:
    """Fixed attributes of a sandbox friend, derived from its ID."""
    digest = hashlib.sha256(user.encode()).digest()
    return {
        "gender": "male" if digest[0] % 2 else "female",
        "age": AGES[digest[1] % len(AGES)],
        "appType": "ios" if digest[2] % 2 else "android",
        "area": AREAS[digest[3] % len(AREAS)],
        "days": digest[4] * 2,  # days since the user became a friend
    }


def keeps(demographic: dict[str, Any], user: str) -> bool:
    """Whether a demographic filter keeps ``user``."""
    kind = demographic.get("type")
    if kind == "operator":
        if demographic.get("and") is not None:
            return all(keeps(d, user) for d in demographic["and"])
        if demographic.get("or") is not None:
            return any(keeps(d, user) for d in demographic["or"])
        return not keeps(demographic["not"], user)
    mine = demographics(user)
    if kind in ("gender", "appType", "area"):
        return mine[kind] in (demographic.get("oneOf") or [])
    if kind == "age":
        at = AGES.index(mine["age"])
        low, high = demographic.get("gte"), demographic.get("lt")
        return (low is None or at >= AGES.index(low)) and (high is None or at < AGES.index(high))
    if kind == "subscriptionPeriod":
        low, high = demographic.get("gte"), demographic.get("lt")
        return (low is None or mine["days"] >= PERIODS[low]) and (
            high is None or mine["days"] < PERIODS[high]
        )
    return True


@dataclass
class Narrowcast:
    request_id: str
    accepted: float
    finish_at: float
    messages: list[dict[str, Any]]
    targets: list[str]
    error_code: int | None = None
    description: str | None = None
    delivered: bool = False

    def view(self, now: float) -> dict[str, Any]:
        body: dict[str, Any] = {"acceptedTime": _iso(self.accepted)}
        if now < self.accepted + (self.finish_at - self.accepted) / 3:
            return {"phase": "waiting", **body}
        if now < self.finish_at:
            return {"phase": "sending", **body, "targetCount": len(self.targets)}
        body["completedTime"] = _iso(self.finish_at)
        if self.error_code is not None:
            return {
                "phase": "failed",
                **body,
                "errorCode": self.error_code,
                "failedDescription": self.description,
                "targetCount": 0,
                "successCount": 0,
                "failureCount": 0,
            }
        return {
            "phase": "succeeded",
            **body,
            "targetCount": len(self.targets),
            "successCount": len(self.targets),
            "failureCount": 0,
        }


def _iso(epoch: float) -> str:
    stamp = datetime.fromtimestamp(epoch, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


@dataclass
class CampaignStore:
    """Narrowcasts and broadcasts the fake channel received, and its friends."""

    followers: set[str] | None = None  # None: every user of an uploaded audience
    narrowcasts: dict[str, Narrowcast] = field(default_factory=dict)
    broadcasts: int = 0
    narrowcast_seconds: float | None = None  # None: 6 x the sandbox's job_seconds


def routes(api: Api) -> list[BaseRoute]:
    sandbox, line = api.sandbox, api.store
    store: CampaignStore = sandbox.store("line_messaging_campaigns", CampaignStore)

    def friends() -> set[str]:
        if store.followers is not None:
            return set(store.followers)
        now = time.monotonic()
        found: set[str] = set()
        for audience in line.audiences.values():
            audience.settle(now)
            if not audience.is_ifa:
                found |= audience.ids
        return found

    def members(recipient: dict[str, Any], everyone: set[str]) -> set[str]:
        kind = recipient.get("type")
        if kind == "audience":
            audience = line.audiences[recipient["audienceGroupId"]]
            audience.settle(time.monotonic())
            return set(audience.ids)
        if kind == "redelivery":
            past = store.narrowcasts.get(recipient["requestId"])
            return set(past.targets) if past else set()
        if recipient.get("and") is not None:
            sets = [members(r, everyone) for r in recipient["and"]]
            return set.intersection(*sets)
        if recipient.get("or") is not None:
            return set().union(*(members(r, everyone) for r in recipient["or"]))
        return everyone - members(recipient["not"], everyone)

    def settle(now: float) -> None:
        for cast in store.narrowcasts.values():
            if not cast.delivered and now >= cast.finish_at:
                cast.delivered = True
                if cast.error_code is None:
                    for user in cast.targets:
                        line.inbox.setdefault(user, []).append(cast.messages)

    def retry_key(request: Request) -> tuple[str | None, Response | None]:
        key = request.headers.get("x-line-retry-key")
        if key is None:
            return None, None
        if not UUID.fullmatch(key):
            return None, _error(400, "The value of the X-Line-Retry-Key header is invalid")
        return key.lower(), None

    def conflict(key: str | None) -> Response | None:
        entry = line.accepted_key(key, clock_of(sandbox).now()) if key else None
        if entry is None:
            return None
        line.conflicts += 1
        return JSONResponse(
            {"message": "The retry key is already accepted"},
            status_code=409,
            headers={"x-line-request-id": _request_id(), "x-line-accepted-request-id": entry[1]},
        )

    async def checked(request: Request, kind: str, allowed: set[str]) -> Any:
        if (denied := api.authorized(request)) is not None:
            return denied
        requests_, per = RATE[kind]
        if (
            limited := sandbox.too_many(
                f"line_messaging:{kind}",
                requests_,
                per,
                {"message": "The API rate limit has been exceeded. Try again later."},
            )
        ) is not None:
            return limited
        key, bad = retry_key(request)
        if bad is not None:
            return bad
        body, problem = await api.object_body(request, allowed)
        if body is None:
            return problem
        if "notificationDisabled" in body and not isinstance(body["notificationDisabled"], bool):
            return _invalid("notificationDisabled")
        problems, _ = check_messages(body.get("messages"), target=kind, literal=True)
        return _problems(problems) if problems else (key, body)

    def over_quota(count: int) -> Response | None:
        if line.quota_limit is not None and line.quota_used + count > line.quota_limit:
            return _error(429, "You have reached your monthly limit.")
        line.quota_used += count
        return None

    async def narrowcast(request: Request) -> Response:
        result = await checked(
            request,
            "narrowcast",
            {"messages", "recipient", "filter", "limit", "notificationDisabled"},
        )
        if isinstance(result, Response):
            return result
        key, body = result
        problems: list[tuple[str, str]] = []
        if "recipient" in body:
            problems += recipient_problems(body["recipient"])
        if "filter" in body:
            problems += filter_problems(body["filter"])
        if "limit" in body:
            problems += limit_problems(body["limit"])
        if problems:
            return _problems(problems)
        with sandbox.lock:
            if (answer := conflict(key)) is not None:
                return answer
            recipient = body.get("recipient")
            for ident in audience_ids(recipient) if recipient else []:
                if ident not in line.audiences:
                    return _problems([("recipient", f"The audience group {ident} does not exist")])
            everyone = friends() - line.blocked
            chosen = members(recipient, everyone) & everyone if recipient else everyone
            demographic = (body.get("filter") or {}).get("demographic")
            if demographic:
                chosen = {u for u in chosen if keeps(demographic, u)}
            request_id = _request_id()
            targets = sorted(chosen)
            limit = body.get("limit") or {}
            rng = random.Random(request_id)  # LINE chooses at random
            if limit.get("max") is not None and len(targets) > limit["max"]:
                targets = sorted(rng.sample(targets, limit["max"]))
            code = None
            small = [
                i
                for i in (audience_ids(recipient) if recipient else [])
                if len(line.audiences[i].ids) < MIN_AUDIENCE_SIZE
            ]
            remaining = (
                None if line.quota_limit is None else max(0, line.quota_limit - line.quota_used)
            )
            if small:
                code = 4
            elif remaining is not None and len(targets) > remaining:
                if not limit.get("upToRemainingQuota"):
                    return _error(429, "You have reached your monthly limit.")
                if limit.get("forbidPartialDelivery"):
                    code = 5
                else:
                    targets = sorted(rng.sample(targets, remaining))
            if code is None and (over := over_quota(len(targets))) is not None:
                return over
            now = time.time()
            seconds = store.narrowcast_seconds or sandbox.job_seconds * 6
            store.narrowcasts[request_id] = Narrowcast(
                request_id,
                now,
                now + seconds,
                body["messages"],
                targets if code is None else [],
                code,
                PROGRESS_ERROR_CODES.get(code) if code else None,
            )
            if key is not None:
                line.retry_keys[key] = (now, request_id, [])
        return JSONResponse({}, status_code=202, headers={"x-line-request-id": request_id})

    async def progress(request: Request) -> Response:
        if (denied := api.guard(request, "validate")) is not None:
            return denied
        request_id = request.query_params.get("requestId")
        if not request_id:
            return _invalid("requestId")
        with sandbox.lock:
            now = time.time()
            settle(now)
            cast = store.narrowcasts.get(request_id)
            if cast is None:
                return _error(404, "Not found")
            return JSONResponse(cast.view(now))

    async def broadcast(request: Request) -> Response:
        result = await checked(request, "broadcast", {"messages", "notificationDisabled"})
        if isinstance(result, Response):
            return result
        key, body = result
        with sandbox.lock:
            if (answer := conflict(key)) is not None:
                return answer
            targets = friends() - line.blocked
            if (over := over_quota(len(targets))) is not None:
                return over
            request_id = _request_id()
            if key is not None:
                line.retry_keys[key] = (time.time(), request_id, [])
            for user in targets:
                line.inbox.setdefault(user, []).append(body["messages"])
            store.broadcasts += 1
        return JSONResponse({}, headers={"x-line-request-id": request_id})

    async def followers(request: Request) -> Response:
        if (denied := api.authorized(request)) is not None:
            return denied
        requests_, per = RATE["insight"]
        if (
            limited := sandbox.too_many(
                "line_messaging:insight", requests_, per, {"message": "rate limit exceeded"}
            )
        ) is not None:
            return limited
        date = request.query_params.get("date")
        if date is not None and (len(date) != 8 or not date.isdigit()):
            return _invalid("date")
        with sandbox.lock:
            everyone = friends()
            blocks = len(everyone & line.blocked)
            return JSONResponse(
                {
                    "status": "ready",
                    "followers": len(everyone),
                    "targetedReaches": len(everyone) - blocks,
                    "blocks": blocks,
                }
            )

    async def set_followers(request: Request) -> Response:
        """Admin: ``{"followers": [user IDs] or null, "narrowcast_seconds": s}``."""
        body = await request.json()
        users = body.get("followers")
        if users is not None and not all(
            isinstance(u, str) and USER_ID.fullmatch(u) for u in users
        ):
            return _error(400, "followers must be LINE user IDs")
        with sandbox.lock:
            store.followers = None if users is None else set(users)
            if "narrowcast_seconds" in body:
                store.narrowcast_seconds = body["narrowcast_seconds"]
        return JSONResponse({"followers": None if users is None else len(users)})

    return [
        Route("/v2/bot/message/narrowcast", narrowcast, methods=["POST"]),
        Route("/v2/bot/message/progress/narrowcast", progress, methods=["GET"]),
        Route("/v2/bot/message/broadcast", broadcast, methods=["POST"]),
        Route("/v2/bot/insight/followers", followers, methods=["GET"]),
        Route("/_sandbox/line_messaging/followers", set_followers, methods=["PUT"]),
    ]


def summary(sandbox: Any) -> dict[str, Any]:
    store: CampaignStore = sandbox.store("line_messaging_campaigns", CampaignStore)
    return {
        "narrowcasts": len(store.narrowcasts),
        "broadcasts": store.broadcasts,
    }
