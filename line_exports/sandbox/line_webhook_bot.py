"""A downstream LINE bot, faked: the target a webhook relay forwards to.

``POST /bot/{name}/webhook`` behaves like a bot built on LINE's SDK (``WebhookParser``): it
checks ``x-line-signature`` against the raw body with the channel secret it was registered with
(the same check as our receiver: ``line_exports.webhook.signature``), answers 400 for a missing
or wrong signature or a body that is not a webhook object (``destination`` and an ``events``
list), and 200 otherwise, keeping the body and the header exactly as received, in arrival order.
An unregistered bot is 404. Register with :func:`register_bot` in process or with
``POST /_sandbox/bots`` (``{"name": ..., "channel_secret": ...}``); ``GET /_sandbox/bots/{name}``
lists what it received. Outages: stop the server, or inject faults (``/_sandbox/faults``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from line_exports.sandbox.core import Sandbox
from line_exports.webhook.signature import verify


@dataclass
class Received:
    """One delivery the bot accepted."""

    body: bytes
    signature: str
    at: float


@dataclass
class BotStore:
    """Registered bots (name -> channel secret) and what each accepted, in order."""

    secrets: dict[str, str] = field(default_factory=dict)
    received: dict[str, list[Received]] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)


def store_of(sandbox: Sandbox) -> BotStore:
    return sandbox.store("line_webhook_bot", BotStore)  # type: ignore[no-any-return]


def register_bot(sandbox: Sandbox, name: str, channel_secret: str) -> None:
    with sandbox.lock:
        store = store_of(sandbox)
        store.secrets[name] = channel_secret
        store.received.setdefault(name, [])


def received(sandbox: Sandbox, name: str) -> list[Received]:
    """What bot ``name`` accepted, in arrival order (a copy)."""
    with sandbox.lock:
        return list(store_of(sandbox).received.get(name, []))


def _is_webhook_object(body: bytes) -> bool:
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("destination"), str)
        and isinstance(doc.get("events"), list)
    )


def routes(sandbox: Sandbox) -> list[BaseRoute]:
    store = store_of(sandbox)

    async def webhook(request: Request) -> Response:
        name = request.path_params["name"]
        body = await request.body()
        with sandbox.lock:
            secret = store.secrets.get(name)
        if secret is None:
            return PlainTextResponse("no such bot", status_code=404)
        signature = request.headers.get("x-line-signature", "")
        if not signature or not verify(secret, body, signature) or not _is_webhook_object(body):
            with sandbox.lock:
                store.refused[name] = store.refused.get(name, 0) + 1
            return PlainTextResponse("invalid signature or body", status_code=400)
        with sandbox.lock:
            store.received.setdefault(name, []).append(Received(body, signature, time.time()))
        return PlainTextResponse("OK")

    async def register(request: Request) -> Response:
        spec = json.loads(await request.body())
        register_bot(sandbox, str(spec["name"]), str(spec["channel_secret"]))
        return Response(status_code=201)

    async def show(request: Request) -> Response:
        name = request.path_params["name"]
        return JSONResponse(
            {
                "received": [
                    {"body": r.body.decode("utf-8", "replace"), "signature": r.signature}
                    for r in received(sandbox, name)
                ],
                "refused": store.refused.get(name, 0),
            }
        )

    return [
        Route("/bot/{name}/webhook", webhook, methods=["POST"]),
        Route("/_sandbox/bots", register, methods=["POST"]),
        Route("/_sandbox/bots/{name}", show, methods=["GET"]),
    ]


def summary(sandbox: Sandbox) -> dict[str, Any]:
    with sandbox.lock:
        store = store_of(sandbox)
        return {
            "bots": {name: len(items) for name, items in store.received.items()},
            "refused": dict(store.refused),
        }
