"""LINE's Messaging API, faked faithfully: tokens, push, multicast, validate, upload audiences.

Follows LINE's official OpenAPI (``messaging-api.yml``, ``manage-audience.yml``,
``channel-access-token.yml``) and the Messaging API reference: Bearer auth (fixed channel tokens
plus short-lived ones issued by ``/v2/oauth/accessToken``, at most 30 per channel), per-endpoint
rate limits (push 2,000/s, multicast 200/s, audiences 60/min together, token 370/s), ``413``
over 2 MB, message schemas, ``X-Line-Retry-Key`` (a UUID; ``409`` for a key accepted in the last
24 hours), audiences whose upload jobs finish asynchronously (at most 10 running per audience),
and file uploads on the data host path. It records what each recipient received.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from line_exports.messages import check_messages
from line_exports.sandbox.core import Sandbox

CLIENTS = {"1650000001": "sandbox-line-channel-secret"}  # channel ID -> channel secret
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_FILE_BYTES = 64 * 1024 * 1024
TOKEN_SECONDS = 30 * 24 * 3600
TOKENS_PER_CHANNEL = 30
RETRY_KEY_SECONDS = 24 * 3600
AUDIENCE_JSON_MAX = 10_000
AUDIENCE_FILE_MAX = 1_500_000
AUDIENCE_MAX = 1_000
AUDIENCE_CONCURRENT_JOBS = 10
AUDIENCE_RETENTION_SECONDS = 180 * 24 * 3600
USER_ID = re.compile(r"U[0-9a-f]{32}")
PUSH_TO = re.compile(r"[UCR][0-9a-f]{32}")
IFA = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
UNIT = re.compile(r"[a-zA-Z0-9_]{1,30}")
LIMITS = {  # key -> (requests, per seconds), as LINE publishes them
    "push": (2000, 1.0),
    "multicast": (200, 1.0),
    "audience": (60, 60.0),
    "token": (370, 1.0),
    "validate": (2000, 1.0),
}


@dataclass
class Job:
    id: int
    audience_id: int
    description: str
    created: float
    finish_at: float
    count: int
    ids: list[str] | None

    def status(self, now: float) -> str:
        if now >= self.finish_at:
            return "FINISHED"
        return "QUEUED" if now < self.created + (self.finish_at - self.created) / 3 else "WORKING"


@dataclass
class Audience:
    id: int
    description: str
    is_ifa: bool
    created: int
    ids: set[str] = field(default_factory=set)
    jobs: list[Job] = field(default_factory=list)

    def settle(self, now: float) -> None:
        """Apply finished jobs (LINE adds IDs asynchronously)."""
        for job in self.jobs:
            if job.ids is not None and now >= job.finish_at:
                self.ids.update(job.ids)
                job.ids = None

    def view(self, now: float) -> dict[str, Any]:
        self.settle(now)
        ready = any(j.ids is None and j.count > 0 for j in self.jobs)
        return {
            "audienceGroupId": self.id,
            "createRoute": "MESSAGING_API",
            "type": "UPLOAD",
            "description": self.description,
            "status": "READY" if ready else "IN_PROGRESS",
            "audienceCount": len(self.ids),
            "created": self.created,
            "permission": "READ_WRITE",
            "isIfaAudience": self.is_ifa,
            "expireTimestamp": self.created + AUDIENCE_RETENTION_SECONDS,
        }


@dataclass
class LineStore:
    """What the fake LINE channel holds."""

    clients: dict[str, str] = field(default_factory=lambda: dict(CLIENTS))
    issued: dict[str, float] = field(default_factory=dict)  # short-lived token -> expires (epoch)
    issued_by_client: dict[str, deque[str]] = field(default_factory=dict)
    retry_keys: dict[str, tuple[float, str, list[dict[str, Any]]]] = field(default_factory=dict)
    inbox: dict[str, list[list[dict[str, Any]]]] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)  # 200, but nothing arrives (LINE's rule)
    unknown_users: set[str] = field(default_factory=set)  # not in this channel: 400
    multicast_error_names_index: bool = True  # LINE names the bad ``to[i]`` in its message
    audiences: dict[int, Audience] = field(default_factory=dict)
    pushes: int = 0
    multicasts: int = 0
    conflicts: int = 0
    tokens_issued: int = 0
    next_id: int = 1_000_000_000_000

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def received(self, recipient: str) -> list[list[dict[str, Any]]]:
        """Every ``messages`` array that reached ``recipient``, in order."""
        return self.inbox.get(recipient, [])

    def revoke_issued(self) -> None:
        """Revoke every short-lived token (as if they expired or were revoked)."""
        self.issued.clear()
        self.issued_by_client.clear()


def store_of(sandbox: Sandbox) -> LineStore:
    return sandbox.store("line_messaging", LineStore)


def _error(
    status: int,
    message: str,
    details: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"message": message}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def _request_id() -> str:
    return str(uuid.uuid4())


def _invalid(prop: str) -> JSONResponse:
    return _error(400, f"The property, {prop}, in the request body is invalid (line: -, column: -)")


def _problems(problems: list[tuple[str, str]]) -> JSONResponse:
    return _error(
        400,
        f"The request body has {len(problems)} error(s)",
        [{"message": m, "property": p} for p, m in problems],
    )


def routes(sandbox: Sandbox) -> list[BaseRoute]:
    store = store_of(sandbox)

    def authorized(request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        if token and (token in sandbox.tokens.get("line_messaging", set())):
            return None
        with sandbox.lock:
            expires = store.issued.get(token)
        if token and expires is not None and expires > time.time():
            return None
        return _error(
            401,
            "Authentication failed due to the following reason: invalid token. Confirm that the access token in the authorization header is valid.",
        )

    def limited(kind: str) -> Response | None:
        requests, per = LIMITS[kind]
        return sandbox.too_many(
            f"line_messaging:{kind}",
            requests,
            per,
            {"message": "The API rate limit has been exceeded. Try again later."},
        )

    async def json_body(request: Request) -> tuple[Any, Response | None]:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return None, _error(
                413,
                "Request exceeds the max size of 2MB. Make the request smaller than 2MB and try again.",
            )
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        if kind != "application/json":
            return None, _error(415, f"The content type, {kind or 'none'}, is not supported")
        try:
            return json.loads(raw), None
        except ValueError as exc:
            return None, _error(
                400,
                f"The request body could not be parsed as JSON (line: 1, column: {getattr(exc, 'colno', 0)})",
            )

    def guard(request: Request, kind: str) -> Response | None:
        return authorized(request) or limited(kind)

    # -- tokens ---------------------------------------------------------------------------
    async def issue_token(request: Request) -> Response:
        if (limit := limited("token")) is not None:
            return limit
        if (
            request.headers.get("content-type", "").split(";")[0].strip()
            != "application/x-www-form-urlencoded"
        ):
            return JSONResponse(
                {"error": "invalid_request", "error_description": "unsupported content type"},
                status_code=400,
            )
        form = await request.form()
        if form.get("grant_type") != "client_credentials":
            return JSONResponse(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "grant_type must be client_credentials",
                },
                status_code=400,
            )
        client_id, secret = str(form.get("client_id") or ""), str(form.get("client_secret") or "")
        if not client_id or not secret:
            return JSONResponse(
                {
                    "error": "invalid_request",
                    "error_description": "some parameters missed or invalid",
                },
                status_code=400,
            )
        if store.clients.get(client_id) != secret:
            return JSONResponse(
                {
                    "error": "invalid_client",
                    "error_description": "invalid client_id or client_secret",
                },
                status_code=400,
            )
        token = "sandbox-short-" + secrets.token_urlsafe(24)
        with sandbox.lock:
            tokens = store.issued_by_client.setdefault(client_id, deque())
            tokens.append(token)
            while len(tokens) > TOKENS_PER_CHANNEL:  # the oldest is revoked
                store.issued.pop(tokens.popleft(), None)
            store.issued[token] = time.time() + TOKEN_SECONDS
            store.tokens_issued += 1
        return JSONResponse(
            {"access_token": token, "expires_in": TOKEN_SECONDS, "token_type": "Bearer"}
        )

    # -- messages -------------------------------------------------------------------------
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
        """409 when the key was accepted in the last 24 hours (checked and claimed atomically)."""
        if key is None:
            return None
        entry = store.retry_keys.get(key)
        if entry is None or time.time() - entry[0] >= RETRY_KEY_SECONDS:
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
            request_id = _request_id()
            sent = [
                {"id": str(store.new_id()), "quoteToken": secrets.token_urlsafe(8)}
                for _ in body["messages"]
            ]
            if key is not None:
                store.retry_keys[key] = (time.time(), request_id, sent)
            deliver(to, body["messages"])
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
            request_id = _request_id()
            if key is not None:
                store.retry_keys[key] = (time.time(), request_id, [])
            for recipient in to:
                deliver(recipient, body["messages"])
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

    # -- audiences ------------------------------------------------------------------------
    def audience_error(message: str, detail: str, status: int = 400) -> JSONResponse:
        return _error(status, message, [{"message": detail}])

    def name_problem(name: Any) -> JSONResponse | None:
        if not isinstance(name, str) or not name.strip():
            return audience_error("audience group name is empty", "AUDIENCE_GROUP_NAME_EMPTY")
        if len(name) > 120:
            return audience_error("size over audienceGroupName", "AUDIENCE_GROUP_NAME_SIZE_OVER")
        if re.search(r"[\x00-\x1f\x7f]", name):
            return audience_error("invalid audienceGroupName", "AUDIENCE_GROUP_NAME_WRONG")
        return None

    def ids_problem(ids: list[str], is_ifa: bool, limit: int) -> JSONResponse | None:
        if len(ids) > limit:
            return audience_error(
                "too many audience ids", "UPLOAD_AUDIENCE_GROUP_TOO_MANY_AUDIENCE_IDS"
            )
        pattern = IFA if is_ifa else USER_ID
        for value in ids:
            if not pattern.fullmatch(value):  # one bad ID fails the whole request
                return audience_error(
                    "invalid audience id format", "UPLOAD_AUDIENCE_GROUP_INVALID_AUDIENCE_ID_FORMAT"
                )
        return None

    def add_job(audience: Audience, ids: list[str], description: str) -> Response | None:
        now = time.monotonic()
        running = sum(1 for j in audience.jobs if j.status(now) != "FINISHED")
        if running >= AUDIENCE_CONCURRENT_JOBS:
            return _error(429, "The number of concurrent operations has exceeded the limit.")
        finish = now + sandbox.job_seconds * (1 + len(ids) / 1_000_000)
        audience.jobs.append(
            Job(store.new_id(), audience.id, description, now, finish, len(ids), ids)
        )
        return None

    def create(name: Any, is_ifa: bool, ids: list[str], upload_description: str) -> Response:
        with sandbox.lock:
            if len(store.audiences) >= AUDIENCE_MAX:
                return audience_error(
                    "audience group count max over", "AUDIENCE_GROUP_COUNT_MAX_OVER"
                )
            audience = Audience(store.new_id(), name, is_ifa, int(time.time()))
            store.audiences[audience.id] = audience
            if ids:
                add_job(audience, ids, upload_description)
            view = audience.view(time.monotonic())
        keep = (
            "audienceGroupId",
            "createRoute",
            "type",
            "description",
            "created",
            "permission",
            "expireTimestamp",
            "isIfaAudience",
        )
        return JSONResponse({k: view[k] for k in keep}, status_code=202)

    def add(audience_id: Any, ids: list[str], upload_description: str) -> Response:
        with sandbox.lock:
            audience = store.audiences.get(audience_id) if isinstance(audience_id, int) else None
            if audience is None:
                return audience_error("audience group not found", "AUDIENCE_GROUP_NOT_FOUND")
            if time.time() > audience.created + AUDIENCE_RETENTION_SECONDS:
                return audience_error(
                    "audience group expired", "AUDIENCE_GROUP_CAN_NOT_UPLOAD_STATUS_EXPIRED"
                )
            if (problem := ids_problem(ids, audience.is_ifa, AUDIENCE_FILE_MAX)) is not None:
                return problem
            if (busy := add_job(audience, ids, upload_description)) is not None:
                return busy
        return JSONResponse({}, status_code=202)

    async def upload_json(request: Request) -> Response:
        if (denied := guard(request, "audience")) is not None:
            return denied
        body, problem = await json_body(request)
        if problem is not None:
            return problem
        if not isinstance(body, dict):
            return _invalid("body")
        upload_description = body.get("uploadDescription") or ""
        if not isinstance(upload_description, str) or len(upload_description) > 300:
            return audience_error(
                "size over uploadDescription", "AUDIENCE_GROUP_UPLOAD_DESCRIPTION_SIZE_OVER"
            )
        audiences = body.get("audiences", [])
        if not isinstance(audiences, list) or not all(
            isinstance(a, dict) and isinstance(a.get("id"), str) for a in audiences
        ):
            return _invalid("audiences")
        if len(audiences) > AUDIENCE_JSON_MAX:
            return audience_error(
                "too many audience ids", "UPLOAD_AUDIENCE_GROUP_TOO_MANY_AUDIENCE_IDS"
            )
        ids = [a["id"] for a in audiences]
        if request.method == "POST":
            if set(body) - {"description", "isIfaAudience", "uploadDescription", "audiences"}:
                return _invalid(
                    sorted(
                        set(body)
                        - {"description", "isIfaAudience", "uploadDescription", "audiences"}
                    )[0]
                )
            if (bad := name_problem(body.get("description"))) is not None:
                return bad
            is_ifa = body.get("isIfaAudience", False)
            if not isinstance(is_ifa, bool):
                return _invalid("isIfaAudience")
            if (bad := ids_problem(ids, is_ifa, AUDIENCE_JSON_MAX)) is not None:
                return bad
            return create(body["description"], is_ifa, ids, upload_description)
        if set(body) - {"audienceGroupId", "uploadDescription", "audiences"}:
            return _invalid(
                sorted(set(body) - {"audienceGroupId", "uploadDescription", "audiences"})[0]
            )
        if not ids:
            return audience_error(
                "no valid audience ids", "UPLOAD_AUDIENCE_GROUP_NO_VALID_AUDIENCE_IDS"
            )
        return add(body.get("audienceGroupId"), ids, upload_description)

    async def upload_file(request: Request) -> Response:
        if (denied := guard(request, "audience")) is not None:
            return denied
        if request.headers.get("content-type", "").split(";")[0].strip() != "multipart/form-data":
            return _error(415, "The content type is not supported")
        form = await request.form(max_files=1, max_part_size=MAX_FILE_BYTES)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return _invalid("file")
        if (upload.content_type or "").split(";")[0].strip() != "text/plain":
            return _error(415, "Unsupported media type: the file must be text/plain")
        upload_description = str(form.get("uploadDescription") or "")
        if len(upload_description) > 300:
            return audience_error(
                "size over uploadDescription", "AUDIENCE_GROUP_UPLOAD_DESCRIPTION_SIZE_OVER"
            )
        text = (await upload.read()).decode("utf-8", errors="replace")
        ids = [line.strip() for line in text.splitlines() if line.strip()]
        if not ids:
            return audience_error(
                "no valid audience ids", "UPLOAD_AUDIENCE_GROUP_NO_VALID_AUDIENCE_IDS"
            )
        if len(ids) > AUDIENCE_FILE_MAX:
            return audience_error(
                "too many audience ids", "UPLOAD_AUDIENCE_GROUP_TOO_MANY_AUDIENCE_IDS"
            )
        if request.method == "POST":
            if (bad := name_problem(form.get("description"))) is not None:
                return bad
            flag = str(form.get("isIfaAudience") or "false").lower()
            if flag not in ("true", "false"):
                return _invalid("isIfaAudience")
            if (bad := ids_problem(ids, flag == "true", AUDIENCE_FILE_MAX)) is not None:
                return bad
            return create(str(form["description"]), flag == "true", ids, upload_description)
        try:
            audience_id = int(str(form.get("audienceGroupId")))
        except ValueError:
            return _invalid("audienceGroupId")
        return add(audience_id, ids, upload_description)

    async def one_audience(request: Request) -> Response:
        if (denied := guard(request, "audience")) is not None:
            return denied
        audience_id = int(request.path_params["audience_id"])
        with sandbox.lock:
            audience = store.audiences.get(audience_id)
            if audience is None:
                return audience_error("audience group not found", "AUDIENCE_GROUP_NOT_FOUND")
            if request.method == "DELETE":
                del store.audiences[audience_id]
                return JSONResponse({})
            now = time.monotonic()
            view = audience.view(now)
            jobs = [
                {
                    "audienceGroupJobId": j.id,
                    "audienceGroupId": audience.id,
                    "description": j.description,
                    "type": "DIFF_ADD",
                    "jobStatus": j.status(now),
                    "audienceCount": j.count,
                    "created": int(time.time()),
                }
                for j in reversed(audience.jobs[-50:])
            ]
        return JSONResponse({"audienceGroup": view, "jobs": jobs})

    async def list_audiences(request: Request) -> Response:
        if (denied := guard(request, "audience")) is not None:
            return denied
        try:
            page = int(request.query_params["page"])
            size = int(request.query_params.get("size", 20))
        except (KeyError, ValueError):
            return _invalid("page")
        if page < 1 or not 1 <= size <= 40:
            return _invalid("page" if page < 1 else "size")
        name = (request.query_params.get("description") or "").lower()
        now = time.monotonic()
        with sandbox.lock:
            found = [a.view(now) for a in store.audiences.values() if name in a.description.lower()]
        start = (page - 1) * size
        return JSONResponse(
            {
                "audienceGroups": found[start : start + size],
                "hasNextPage": start + size < len(found),
                "totalCount": len(found),
                "readWriteAudienceGroupTotalCount": len(found),
                "page": page,
                "size": size,
            }
        )

    return [
        Route("/v2/oauth/accessToken", issue_token, methods=["POST"]),
        Route("/v2/bot/message/push", push, methods=["POST"]),
        Route("/v2/bot/message/multicast", multicast, methods=["POST"]),
        Route("/v2/bot/message/validate/{kind:str}", validate, methods=["POST"]),
        Route("/v2/bot/audienceGroup/upload", upload_json, methods=["POST", "PUT"]),
        Route("/v2/bot/audienceGroup/upload/byFile", upload_file, methods=["POST", "PUT"]),
        Route("/v2/bot/audienceGroup/list", list_audiences, methods=["GET"]),
        Route("/v2/bot/audienceGroup/{audience_id:int}", one_audience, methods=["GET", "DELETE"]),
    ]


def summary(sandbox: Sandbox) -> dict[str, Any]:
    store = store_of(sandbox)
    with sandbox.lock:
        now = time.monotonic()
        return {
            "pushes": store.pushes,
            "multicasts": store.multicasts,
            "retry_key_conflicts": store.conflicts,
            "recipients": len(store.inbox),
            "messages_delivered": sum(len(v) for v in store.inbox.values()),
            "tokens_issued": store.tokens_issued,
            "audiences": {
                f"{a.id} {a.description}": a.view(now)["audienceCount"]
                for a in store.audiences.values()
            },
        }
