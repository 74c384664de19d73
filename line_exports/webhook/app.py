"""The ASGI receiver LINE posts webhook events to: ``POST /v1/task/{source_id}``.

Order of checks, cheapest and safest first, all but the last two before any body byte is read:
unknown source (404) -> no signature header (401) -> a header that cannot be a signature
(403) -> declared size over the limit (413) -> body read, stopping at the limit (413) ->
signature on the raw bytes (403) -> JSON parse (errors are kept, not refused) -> durable spool
write -> 200. Nothing is stored for a refused request, and a refused connection is closed so
its sender cannot keep streaming. Bodies are read into memory; bytes beyond the first 16 KiB
of a request count against a per-process budget (``large_body_budget``, 16 MiB) so a crowd of
large bodies with junk signatures cannot make memory grow (over budget: 503, LINE redelivers).
Deadlines and the connection cap live in ``guard``. Nothing here touches the warehouse, so
answers stay fast while landing happens later in Dagster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from line_exports.webhook.config import WebhookSource, load_sources
from line_exports.webhook.events import parse_body
from line_exports.webhook.relay import RelayPolicy, start_relays
from line_exports.webhook.signature import verify, well_formed
from line_exports.webhook.spool import SPOOL_ENV, SPOOL_URL_ENV, open_writer
from line_exports.webhook.workers import die_with_supervisor

log = logging.getLogger("line_exports.webhook")

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_LARGE_BODY_BUDGET = 16 * 1024 * 1024
_SMALL_BODY = 16 * 1024
__all__ = ["SPOOL_ENV", "SPOOL_URL_ENV", "create_app", "create_app_from_env"]
RELAY_ENV = "LINE_EXPORTS_WEBHOOK_RELAY"  # "0": this receiver forwards nothing
MAX_BODY_ENV = "LINE_EXPORTS_WEBHOOK_MAX_BODY_BYTES"
BODY_BUDGET_ENV = "LINE_EXPORTS_WEBHOOK_LARGE_BODY_BUDGET"


class _TooLarge(Exception):
    pass


class _OverBudget(Exception):
    pass


class _Budget:
    """Bytes held beyond each request's first 16 KiB, across all requests of this process."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take(self, n: int) -> None:
        if self.used + n > self.limit:
            raise _OverBudget
        self.used += n


async def _read_limited(request: Request, limit: int, budget: _Budget) -> bytes:
    """Read the body but stop as soon as it exceeds ``limit`` (chunked bodies included)."""
    body = bytearray()
    taken = 0
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise _TooLarge
            large = max(0, len(body) - _SMALL_BODY)
            if large > taken:
                budget.take(large - taken)
                taken = large
        return bytes(body)
    finally:
        budget.used -= taken


def _refuse(text: str, status: int) -> Response:
    """A refusal that also closes the connection, so the sender cannot keep streaming."""
    return PlainTextResponse(text, status_code=status, headers={"connection": "close"})


def create_app(
    sources: Sequence[WebhookSource],
    *,
    spool_path: str | Path | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    large_body_budget: int = DEFAULT_LARGE_BODY_BUDGET,
    relay: RelayPolicy | None = RelayPolicy(),
) -> Starlette:
    """Build the receiver for a fixed set of sources (one spool for all of them).

    ``spool_path``: the spool file, or a SQLAlchemy URL for a spool shared by receivers on
    several machines (PostgreSQL); default as in ``spool.resolve_spool``. Sources with
    ``relay_to`` are forwarded from the spool by background workers of this process under
    ``relay`` (one worker per target across all receivers holds the claim); None: no relay.
    """
    by_id = {s.source_id: s for s in sources}
    budget = _Budget(large_body_budget)
    writer = open_writer(spool_path)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        writer.start()
        stop_relays, relays = None, []
        if relay is not None and any(s.relay_to for s in sources):
            stop_relays, relays = start_relays(list(sources), spool_path, relay)
            writer.listeners.extend(r.wake for r in relays)
        for source in sources:
            if source.channel_secret() is None:
                log.warning(
                    "source %s: $%s is not set; its requests will be answered 503",
                    source.name,
                    source.channel_secret_env,
                )
        log.info("receiver ready for %d source(s), spool %s", len(by_id), writer.location)
        try:
            yield
        finally:
            if stop_relays is not None:
                stop_relays.set()
                for worker in relays:
                    worker.wake.set()
                    worker.join(timeout=15)
            writer.stop()

    async def receive(request: Request) -> Response:
        source = by_id.get(str(request.path_params["source_id"]).lower())
        if source is None:
            return _refuse("unknown source", 404)
        secret = source.channel_secret()
        if secret is None:
            return _refuse("source not configured", 503)
        signature = request.headers.get("x-line-signature")  # Starlette headers: case-insensitive
        if not signature:
            writer.count_reject(source.source_id, "missing_signature")
            return _refuse("missing signature", 401)
        if not well_formed(signature):
            writer.count_reject(source.source_id, "malformed_signature")
            return _refuse("bad signature", 403)
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_body_bytes):
            writer.count_reject(source.source_id, "oversize")
            return _refuse("body too large", 413)
        try:
            body = await _read_limited(request, max_body_bytes, budget)
        except _TooLarge:
            writer.count_reject(source.source_id, "oversize")
            return _refuse("body too large", 413)
        except _OverBudget:
            writer.count_reject(source.source_id, "over_memory_budget")
            return _refuse("busy, retry later", 503)
        except ClientDisconnect:
            return _refuse("client disconnected", 400)
        if not verify(secret, body, signature):
            writer.count_reject(source.source_id, "bad_signature")
            log.debug("source %s: bad signature from %s", source.name, request.client)
            return _refuse("bad signature", 403)
        parsed = parse_body(body)
        events, error = parsed.events, parsed.error
        try:
            await writer.append(
                request_id=str(uuid.uuid4()),
                source_id=source.source_id,
                received_at=time.time(),
                parse_error=error,
                event_count=len(events),
                body=body,
                signature=signature,
            )
        except RuntimeError:
            # Not stored: a 5xx makes LINE redeliver instead of us pretending we kept it.
            return PlainTextResponse("could not store", status_code=503)
        if error:
            log.warning("source %s: kept a request with a bad body: %s", source.name, error)
        return PlainTextResponse("OK", status_code=200)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/v1/task/{source_id}", receive, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def create_app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` and multi-worker serving: all settings from env.

    In a worker of ``webhook serve --workers N`` it first ties the worker's life to the
    supervisor's (see ``workers``), so a SIGKILLed supervisor leaves no worker holding the port.
    """
    die_with_supervisor()
    return create_app(
        load_sources(),
        spool_path=os.environ.get(SPOOL_URL_ENV) or os.environ.get(SPOOL_ENV) or None,
        max_body_bytes=int(os.environ.get(MAX_BODY_ENV) or DEFAULT_MAX_BODY_BYTES),
        large_body_budget=int(os.environ.get(BODY_BUDGET_ENV) or DEFAULT_LARGE_BODY_BUDGET),
        relay=None if os.environ.get(RELAY_ENV) == "0" else RelayPolicy.from_env(),
    )
