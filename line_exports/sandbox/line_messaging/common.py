"""What every LINE endpoint of the sandbox shares: LINE's error bodies, auth, rate limits, JSON."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from line_exports.destinations.line_messaging.structure import UNKNOWN_PROPERTY
from line_exports.sandbox.core import Sandbox
from line_exports.sandbox.line_messaging.store import LIMITS, MAX_BODY_BYTES, LineStore


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
    """LINE's answer to a property it cannot read, quoted as in its reference's examples
    ("The property, 'chat.chatId', in the request body is invalid (line: -, column: -)")."""
    return _error(
        400, f"The property, '{prop}', in the request body is invalid (line: -, column: -)"
    )


def _problems(problems: list[tuple[str, str]]) -> JSONResponse:
    """LINE's 400 for a body it read but refuses; a property it cannot read at all (one no
    model defines) is answered first, the way LINE answers it (:func:`_invalid`)."""
    for path, message in problems:
        if message == UNKNOWN_PROPERTY:
            return _invalid(path)
    return _error(
        400,
        f"The request body has {len(problems)} error(s)",
        [{"message": m, "property": p} for p, m in problems],
    )


@dataclass
class Api:
    """The sandbox and its LINE store, with the checks every endpoint makes first."""

    sandbox: Sandbox
    store: LineStore

    def authorized(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        if token and (token in self.sandbox.tokens.get("line_messaging", set())):
            return None
        with self.sandbox.lock:
            expires = self.store.issued.get(token) or self.store.stateless.get(token)
        if token and expires is not None and expires > time.time():
            return None
        return _error(
            401,
            "Authentication failed due to the following reason: invalid token. Confirm that the access token in the authorization header is valid.",
        )

    def limited(self, kind: str) -> Response | None:
        requests, per = LIMITS[kind]
        return self.sandbox.too_many(
            f"line_messaging:{kind}",
            requests,
            per,
            {"message": "The API rate limit has been exceeded. Try again later."},
        )

    async def json_body(self, request: Request) -> tuple[Any, Response | None]:
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
            # Strict UTF-8 (RFC 8259 8.1): json.loads(bytes) would let surrogate bytes through.
            return json.loads(raw.decode("utf-8")), None
        except ValueError as exc:  # UnicodeDecodeError too
            return None, _error(
                400,
                f"The request body could not be parsed as JSON (line: 1, column: {getattr(exc, 'colno', 0)})",
            )

    async def object_body(
        self, request: Request, allowed: set[str]
    ) -> tuple[dict[str, Any] | None, Response | None]:
        """The JSON body as an object whose keys are all in ``allowed``, or LINE's answer:
        the body's size/type/JSON errors, "Must be an object", or the first unknown property."""
        body, problem = await self.json_body(request)
        if problem is not None:
            return None, problem
        if not isinstance(body, dict):
            return None, _problems([("", "Must be an object")])
        for name in body:
            if name not in allowed:
                return None, _invalid(name)
        return body, None

    def guard(self, request: Request, kind: str) -> Response | None:
        return self.authorized(request) or self.limited(kind)
