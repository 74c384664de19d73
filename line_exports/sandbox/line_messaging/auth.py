"""Token endpoints of the sandbox (``channel-access-token.yml``)."""

from __future__ import annotations

import secrets
import time
from collections import deque

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from line_exports.sandbox.line_messaging.common import Api
from line_exports.sandbox.line_messaging.store import (
    STATELESS_SECONDS,
    TOKEN_SECONDS,
    TOKENS_PER_CHANNEL,
)


def routes(api: Api) -> list[BaseRoute]:
    sandbox, store = api.sandbox, api.store
    limited = api.limited

    async def issue_token(request: Request) -> Response:
        """Short-lived (30 days, at most 30 per channel) or, on ``/oauth2/v3/token``, stateless
        (15 minutes, no per-channel count, cannot be revoked)."""
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
        if request.url.path == "/oauth2/v3/token":
            token = "sandbox-stateless-" + secrets.token_urlsafe(24)
            with sandbox.lock:
                store.stateless[token] = time.time() + STATELESS_SECONDS
                store.stateless_issued += 1
            return JSONResponse(
                {"access_token": token, "expires_in": STATELESS_SECONDS, "token_type": "Bearer"}
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

    return [
        Route("/v2/oauth/accessToken", issue_token, methods=["POST"]),
        Route("/oauth2/v3/token", issue_token, methods=["POST"]),
    ]
