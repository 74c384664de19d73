"""The sandbox's ASGI app: every destination's fake API behind one loopback server.

Each module of this package that defines ``routes(sandbox)`` contributes its API (and may
define ``summary(sandbox)`` for ``/_sandbox/state``), so a new destination adds one module and
touches nothing else. Admin routes under ``/_sandbox/`` inject faults and show what arrived.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import pkgutil
from types import ModuleType
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from line_exports.sandbox.clock import admin_routes as clock_routes
from line_exports.sandbox.core import Fault, Sandbox, instance_proof

_INFRA = {"app", "clock", "core", "server", "__main__"}


def destination_modules() -> list[ModuleType]:
    """The destination modules of this package, in name order."""
    import line_exports.sandbox as package

    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name in _INFRA:
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if hasattr(module, "routes"):
            found.append(module)
    return found


class FaultsAndLog:
    """ASGI middleware: applies injected faults first, and logs every answer's status."""

    def __init__(self, app: ASGIApp, sandbox: Sandbox) -> None:
        self.app = app
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox"):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        body_bytes = 0

        async def counting_receive() -> Message:
            nonlocal body_bytes
            message = await receive()
            body_bytes += len(message.get("body", b""))
            return message

        fault = self.sandbox.take_fault(method, path)
        if fault is not None:
            if fault.delay:
                # A slow API still gets the whole request and acts on it, even if the client
                # gives up meanwhile: read the body now, answer late, replay it to the handler.
                body = await _read_body(receive)
                body_bytes = len(body)
                receive = _replay(body, receive)
                await asyncio.sleep(fault.delay)
            if fault.lose_answer:
                # The API acts on the request; its answer never reaches the client.
                handled = 0

                async def swallow(message: Message) -> None:
                    nonlocal handled
                    if message["type"] == "http.response.start":
                        handled = message["status"]

                await self.app(scope, counting_receive, swallow)
                self.sandbox.log(method, path, handled, body_bytes)
            if fault.drop or fault.lose_answer:
                if fault.drop:
                    self.sandbox.log(method, path, 0, body_bytes)
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", b"4096"),
                        ],
                    }
                )
                await send(
                    {"type": "http.response.body", "body": b'{"partial":', "more_body": True}
                )
                raise ConnectionResetError("sandbox fault: connection dropped mid-response")
            if fault.status is not None and fault.act:
                # The API acts on the request, then answers the fault's status instead.
                async def discard(message: Message) -> None:
                    return None

                await self.app(scope, counting_receive, discard)
            if fault.status is not None:
                headers = (
                    {"Retry-After": str(int(fault.retry_after))}
                    if fault.retry_after is not None
                    else {}
                )
                response = JSONResponse(
                    {"message": fault.body or f"sandbox fault {fault.status}"},
                    status_code=fault.status,
                    headers=headers,
                )
                self.sandbox.log(method, path, fault.status, body_bytes)
                await response(scope, receive, send)
                return

        status = 0

        async def logging_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, counting_receive, logging_send)
        self.sandbox.log(method, path, status, body_bytes)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the buffered body out once, then waits on the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def create_app(sandbox: Sandbox | None = None) -> Starlette:
    """The sandbox app; pass a :class:`Sandbox` to keep a handle on its state."""
    sandbox = sandbox or Sandbox()
    modules = destination_modules()

    async def health(request: Request) -> Response:
        body: dict[str, Any] = {
            "ok": True,
            "destinations": [m.__name__.rsplit(".", 1)[1] for m in modules],
            "pid": os.getpid(),
        }
        challenge = request.query_params.get("challenge", "")
        if 16 <= len(challenge) <= 256:
            body["instance_proof"] = instance_proof(sandbox.instance_token, challenge)
        return JSONResponse(body)

    async def state(_: Request) -> Response:
        body: dict[str, Any] = {
            "requests": len(sandbox.requests),
            "rate_limited": sandbox.rate_limited,
        }
        for module in modules:
            if hasattr(module, "summary"):
                body[module.__name__.rsplit(".", 1)[1]] = module.summary(sandbox)
        return JSONResponse(body)

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            sandbox.clear_faults()
            return Response(status_code=204)
        spec = json.loads(await request.body())
        fault = sandbox.add_fault(Fault(**spec))
        return JSONResponse({"path": fault.path, "times": fault.times}, status_code=201)

    async def reset(_: Request) -> Response:
        sandbox.reset()
        return Response(status_code=204)

    routes: list[BaseRoute] = [
        Route("/_sandbox/health", health),
        Route("/_sandbox/state", state),
        Route("/_sandbox/faults", faults, methods=["POST", "DELETE"]),
        Route("/_sandbox/reset", reset, methods=["POST"]),
        *clock_routes(sandbox),
    ]
    for module in modules:
        routes.extend(module.routes(sandbox))
    app = Starlette(routes=routes)
    app.state.sandbox = sandbox
    app.add_middleware(FaultsAndLog, sandbox=sandbox)
    return app
