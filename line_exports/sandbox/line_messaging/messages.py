"""Message endpoints of the sandbox: push, multicast, validate (``messaging-api.yml``)."""

from __future__ import annotations

import re
import secrets
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from line_exports.destinations.line_messaging.messages import check_messages
from line_exports.sandbox.clock import clock_of
from line_exports.sandbox.line_messaging import insight
from line_exports.sandbox.line_messaging.common import Api, _error, _invalid, _problems, _request_id
from line_exports.sandbox.line_messaging.store import PUSH_TO, UNIT, USER_ID


def routes(api: Api) -> list[BaseRoute]:
    sandbox, store = api.sandbox, api.store
    guard, json_body = api.guard, api.json_body

    def common_fields(body: dict[str, Any], allowed: set[str]) -> Response | None:
        for key in body:
            if key not in allowed:
                return _invalid(key)
        if "notificationDisabled" in body and not isinstance(body["notificationDisabled"], bool):
            return _invalid("notificationDisabled")
        units = body.get("customAggregationUnits")
        if units is not None and (
            not isinstance(units, list)
            or len(units) > 1
            or not all(isinstance(u, str) and UNIT.fullmatch(u) for u in units)
        ):
            return _invalid("customAggregationUnits")
        return None

    def units_of(body: dict[str, Any]) -> list[str] | None:
        units = body.get("customAggregationUnits")
        return units if isinstance(units, list) else None

    def retry_key_of(request: Request) -> tuple[str | None, Response | None]:
        key = request.headers.get("x-line-retry-key")
        if key is None:
            return None, None
        try:
            uuid.UUID(key)
        except ValueError:
            return None, _error(400, "The value of the X-Line-Retry-Key header is invalid")
        if not re.fullmatch(
            r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", key
        ):
            return None, _error(400, "The value of the X-Line-Retry-Key header is invalid")
        return key.lower(), None

    def already(key: str | None, kind: str) -> Response | None:
        """409 when LINE accepted the key and still honours it (24 hours from its first
        request, on the sandbox clock); checked and claimed atomically."""
        if key is None:
            return None
        entry = store.accepted_key(key, clock_of(sandbox).now())
        if entry is None:
            return None
        store.conflicts += 1
        body: dict[str, Any] = {"message": "The retry key is already accepted"}
        if kind == "push":
            body["sentMessages"] = entry[2]
        return JSONResponse(
            body,
            status_code=409,
            headers={"x-line-request-id": _request_id(), "x-line-accepted-request-id": entry[1]},
        )

    def deliver(recipient: str, messages: list[dict[str, Any]]) -> None:
        if recipient not in store.blocked:
            store.inbox.setdefault(recipient, []).append(messages)

    async def send_request(
        request: Request, endpoint: str
    ) -> Response | tuple[str | None, dict[str, Any]]:
        """What push and multicast check alike: auth and rate, retry key, a JSON object body."""
        if (denied := guard(request, endpoint)) is not None:
            return denied
        key, bad_key = retry_key_of(request)
        if bad_key is not None:
            return bad_key
        body, problem = await json_body(request)
        if problem is not None:
            return problem
        if not isinstance(body, dict):
            return _error(
                400,
                "The request body has 1 error(s)",
                [{"message": "Must be an object", "property": ""}],
            )
        if (
            bad := common_fields(
                body, {"to", "messages", "notificationDisabled", "customAggregationUnits"}
            )
        ) is not None:
            return bad
        return key, body

    def over_quota(recipients: int) -> Response | None:
        """429 when the month's target limit would be passed; else count the messages (LINE
        counts one message per recipient, however many message objects a request holds)."""
        if store.quota_limit is not None and store.quota_used + recipients > store.quota_limit:
            return _error(429, "You have reached your monthly limit.")
        store.quota_used += recipients
        return None

    async def quota(request: Request) -> Response:
        if (denied := api.authorized(request)) is not None:
            return denied
        if store.quota_limit is None:
            return JSONResponse({"type": "none"})
        return JSONResponse({"type": "limited", "value": store.quota_limit})

    async def bot_info(request: Request) -> Response:
        """``GET /v2/bot/info`` (``BotInfoResponse``: userId, basicId, displayName, chatMode,
        markAsReadMode required)."""
        if (denied := api.authorized(request)) is not None:
            return denied
        return JSONResponse(
            {
                "userId": store.bot_user_id,
                "basicId": "@" + store.bot_user_id[1:9],
                "displayName": "line_exports sandbox",
                "chatMode": "bot",
                "markAsReadMode": "auto",
            }
        )

    async def consumption(request: Request) -> Response:
        if (denied := api.authorized(request)) is not None:
            return denied
        with sandbox.lock:
            return JSONResponse({"totalUsage": store.quota_used})

    async def set_quota(request: Request) -> Response:
        """Admin: ``{"limit": N or null, "used": M}`` sets the month's target limit and usage."""
        body = await request.json()
        limit, used = body.get("limit"), body.get("used", store.quota_used)
        if (limit is not None and not isinstance(limit, int)) or not isinstance(used, int):
            return _error(400, "limit must be an integer or null, used an integer")
        with sandbox.lock:
            store.quota_limit, store.quota_used = limit, used
        return JSONResponse({"limit": limit, "used": used})

    async def push(request: Request) -> Response:
        checked = await send_request(request, "push")
        if isinstance(checked, Response):
            return checked
        key, body = checked
        to = body.get("to")
        if not isinstance(to, str) or not PUSH_TO.fullmatch(to):
            return _invalid("to")
        problems, _ = check_messages(body.get("messages"), target="push", literal=True)
        if problems:
            return _problems(problems)
        with sandbox.lock:
            if (conflict := already(key, "push")) is not None:
                return conflict
            if to in store.unknown_users:
                return _error(400, "Failed to send messages")
            if (over := over_quota(1)) is not None:
                return over
            request_id = _request_id()
            sent = [
                {"id": str(store.new_id()), "quoteToken": secrets.token_urlsafe(8)}
                for _ in body["messages"]
            ]
            if key is not None:
                store.retry_keys[key] = (clock_of(sandbox).now(), request_id, sent)
            deliver(to, body["messages"])
            reached = [to] if to not in store.blocked else []
            insight.record(sandbox, "push", reached, body["messages"], units_of(body))
            store.pushes += 1
        return JSONResponse({"sentMessages": sent}, headers={"x-line-request-id": request_id})

    async def multicast(request: Request) -> Response:
        checked = await send_request(request, "multicast")
        if isinstance(checked, Response):
            return checked
        key, body = checked
        to = body.get("to")
        if not isinstance(to, list) or not 1 <= len(to) <= 500:
            return _problems([("to", "Size must be between 1 and 500")])
        for i, recipient in enumerate(to):
            if not isinstance(recipient, str) or not USER_ID.fullmatch(recipient):
                return _invalid(f"to[{i}]")
        problems, _ = check_messages(body.get("messages"), target="multicast", literal=True)
        if problems:
            return _problems(problems)
        with sandbox.lock:
            if (conflict := already(key, "multicast")) is not None:
                return conflict
            for i, recipient in enumerate(to):
                if recipient in store.unknown_users:
                    return (
                        _invalid(f"to[{i}]")
                        if store.multicast_error_names_index
                        else _error(400, "Failed to send messages")
                    )
            if (over := over_quota(len(to))) is not None:
                return over
            request_id = _request_id()
            if key is not None:
                store.retry_keys[key] = (clock_of(sandbox).now(), request_id, [])
            for recipient in to:
                deliver(recipient, body["messages"])
            reached = [r for r in to if r not in store.blocked]
            insight.record(sandbox, "multicast", reached, body["messages"], units_of(body))
            store.multicasts += 1
        return JSONResponse({}, headers={"x-line-request-id": request_id})

    async def validate(request: Request) -> Response:
        if (denied := guard(request, "validate")) is not None:
            return denied
        body, problem = await json_body(request)
        if problem is not None:
            return problem
        if not isinstance(body, dict) or set(body) - {"messages"}:
            return _invalid("messages")
        kind = request.path_params["kind"]
        problems, _ = check_messages(body.get("messages"), target=kind, literal=True)
        return _problems(problems) if problems else JSONResponse({})

    return [
        Route("/v2/bot/message/push", push, methods=["POST"]),
        Route("/v2/bot/message/quota", quota, methods=["GET"]),
        Route("/v2/bot/info", bot_info, methods=["GET"]),
        Route("/v2/bot/message/quota/consumption", consumption, methods=["GET"]),
        Route("/_sandbox/line_messaging/quota", set_quota, methods=["PUT"]),
        Route("/v2/bot/message/multicast", multicast, methods=["POST"]),
        Route("/v2/bot/message/validate/{kind:str}", validate, methods=["POST"]),
    ]
