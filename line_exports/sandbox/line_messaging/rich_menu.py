"""Rich menus of the sandbox (``messaging-api.yml``): the menu list, aliases (create, get,
update, delete, list), per-user menus, and bulk link / unlink of at most 500 users, answered
``202`` and applied asynchronously (after the sandbox's ``job_seconds``).

Menus are created with ``PUT /_sandbox/line_messaging/richmenus`` (``{"richmenus": [IDs]}``): the
real ``POST /v2/bot/richmenu`` needs an image upload that no export makes.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from line_exports.destinations.line_messaging.rich_menu import (
    ALIAS_PATTERN,
    BULK_MAX_USERS,
    RICH_MENU_ID_PATTERN,
)
from line_exports.sandbox.line_messaging.common import Api, _error, _invalid, _problems
from line_exports.sandbox.line_messaging.store import USER_ID

MENU_ID = re.compile(RICH_MENU_ID_PATTERN)
ALIAS = re.compile(ALIAS_PATTERN)


@dataclass
class RichMenuStore:
    menus: set[str] = field(default_factory=set)
    aliases: dict[str, str] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # user -> rich menu ID
    pending: list[tuple[float, str, list[str]]] = field(default_factory=list)  # (at, menu, users)
    bulk_requests: int = 0
    users_in_requests: int = 0

    def settle(self, now: float) -> None:
        """Apply the bulk operations whose time has come (LINE applies them asynchronously)."""
        due = [p for p in self.pending if p[0] <= now]
        self.pending = [p for p in self.pending if p[0] > now]
        for _, menu, users in due:
            for user in users:
                if menu:
                    self.links[user] = menu
                else:
                    self.links.pop(user, None)


def store_of(sandbox: Any) -> RichMenuStore:
    return sandbox.store("line_messaging_rich_menus", RichMenuStore)


def routes(api: Api) -> list[BaseRoute]:
    sandbox = api.sandbox
    store = store_of(sandbox)

    async def body_of(request: Request, allowed: set[str]) -> Any:
        if (denied := api.guard(request, "validate")) is not None:
            return denied
        body, problem = await api.object_body(request, allowed)
        return problem if body is None else body

    def users_problem(users: Any) -> Response | None:
        if not isinstance(users, list) or not 1 <= len(users) <= BULK_MAX_USERS:
            return _problems([("userIds", f"Size must be between 1 and {BULK_MAX_USERS}")])
        for i, user in enumerate(users):
            if not isinstance(user, str) or not USER_ID.fullmatch(user):
                return _invalid(f"userIds[{i}]")
        return None

    async def bulk(request: Request) -> Response:
        if request.path_params["op"] not in ("link", "unlink"):
            return _error(404, "Not found")
        link = request.path_params["op"] == "link"
        body = await body_of(request, {"richMenuId", "userIds"} if link else {"userIds"})
        if isinstance(body, Response):
            return body
        if (bad := users_problem(body.get("userIds"))) is not None:
            return bad
        menu = body.get("richMenuId", "") if link else ""
        with sandbox.lock:
            if link and menu not in store.menus:
                return _error(400, "richmenu not found")
            store.pending.append((time.monotonic() + sandbox.job_seconds, menu, body["userIds"]))
            store.bulk_requests += 1
            store.users_in_requests += len(body["userIds"])
        return JSONResponse({}, status_code=202)

    async def menu_of(request: Request) -> Response:
        if (denied := api.guard(request, "validate")) is not None:
            return denied
        user = request.path_params["user"]
        with sandbox.lock:
            store.settle(time.monotonic())
            menu = store.links.get(user)
        if menu is None:
            return _error(404, "the user has no richmenu")
        return JSONResponse({"richMenuId": menu})

    async def menus(request: Request) -> Response:
        if (denied := api.authorized(request)) is not None:
            return denied
        if (
            limited := sandbox.too_many(
                "line_messaging:richmenu_list", 10, 1.0, {"message": "rate limit exceeded"}
            )
        ) is not None:
            return limited
        with sandbox.lock:
            return JSONResponse({"richmenus": [{"richMenuId": m} for m in sorted(store.menus)]})

    async def aliases(request: Request) -> Response:
        if (denied := api.guard(request, "validate")) is not None:
            return denied
        with sandbox.lock:
            return JSONResponse(
                {
                    "aliases": [
                        {"richMenuAliasId": a, "richMenuId": m}
                        for a, m in sorted(store.aliases.items())
                    ]
                }
            )

    async def create_alias(request: Request) -> Response:
        body = await body_of(request, {"richMenuAliasId", "richMenuId"})
        if isinstance(body, Response):
            return body
        alias, menu = body.get("richMenuAliasId"), body.get("richMenuId")
        if not isinstance(alias, str) or not ALIAS.fullmatch(alias):
            return _invalid("richMenuAliasId")
        with sandbox.lock:
            if menu not in store.menus:
                return _error(400, "richmenu not found")
            if alias in store.aliases:
                return _error(400, "conflict richmenu alias id")
            store.aliases[alias] = menu
        return JSONResponse({})

    async def alias(request: Request) -> Response:
        name = request.path_params["alias"]
        if request.method == "POST":
            body = await body_of(request, {"richMenuId"})
            if isinstance(body, Response):
                return body
        elif (denied := api.guard(request, "validate")) is not None:
            return denied
        with sandbox.lock:
            if name not in store.aliases:
                return _error(400, "richmenu alias not found")
            if request.method == "GET":
                return JSONResponse({"richMenuAliasId": name, "richMenuId": store.aliases[name]})
            if request.method == "DELETE":
                del store.aliases[name]
                return JSONResponse({})
            if body.get("richMenuId") not in store.menus:
                return _error(400, "richmenu not found")
            store.aliases[name] = body["richMenuId"]
        return JSONResponse({})

    async def create_menus(request: Request) -> Response:
        """Admin: ``{"richmenus": [rich menu IDs]}`` exist from now on."""
        body = await request.json()
        found = body.get("richmenus")
        if not isinstance(found, list) or not all(
            isinstance(m, str) and MENU_ID.fullmatch(m) for m in found
        ):
            return _error(400, "richmenus must be rich menu IDs (richmenu- and 32 hex digits)")
        with sandbox.lock:
            store.menus.update(found)
        return JSONResponse({"richmenus": len(store.menus)})

    return [
        Route("/v2/bot/richmenu/bulk/{op:str}", bulk, methods=["POST"]),
        Route("/v2/bot/richmenu/list", menus, methods=["GET"]),
        Route("/v2/bot/richmenu/alias/list", aliases, methods=["GET"]),
        Route("/v2/bot/richmenu/alias", create_alias, methods=["POST"]),
        Route("/v2/bot/richmenu/alias/{alias:str}", alias, methods=["GET", "POST", "DELETE"]),
        Route("/v2/bot/user/{user:str}/richmenu", menu_of, methods=["GET"]),
        Route("/_sandbox/line_messaging/richmenus", create_menus, methods=["PUT"]),
    ]


def summary(sandbox: Any) -> dict[str, Any]:
    store = store_of(sandbox)
    return {"rich_menu_links": len(store.links), "rich_menu_bulk_requests": store.bulk_requests}
