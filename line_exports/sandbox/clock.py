"""The sandbox's clock: real time plus an offset that tests move forward.

What changes with time after a send (LINE's per-unit statistics and delivery counts, a LinkedIn
segment moving from BUILDING to READY) reads this clock, so a test can say "two days later"
without waiting: ``POST /_sandbox/clock {"advance_days": 2}`` (or ``advance_seconds``);
``GET /_sandbox/clock`` shows it. ``/_sandbox/reset`` sets it back to real time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from line_exports.sandbox.core import Sandbox

DAY_SECONDS = 86_400


@dataclass
class Clock:
    """Epoch seconds as the sandbox sees them."""

    offset_seconds: float = 0.0

    def now(self) -> float:
        return time.time() + self.offset_seconds

    def advance(self, seconds: float) -> float:
        self.offset_seconds += seconds
        return self.now()


def clock_of(sandbox: Sandbox) -> Clock:
    return sandbox.store("clock", Clock)


def admin_routes(sandbox: Sandbox) -> list[BaseRoute]:
    clock = clock_of(sandbox)

    async def show_or_advance(request: Request) -> Response:
        if request.method == "POST":
            try:
                body = await request.json()
                seconds = float(body.get("advance_seconds", 0)) + DAY_SECONDS * float(
                    body.get("advance_days", 0)
                )
            except (ValueError, TypeError, AttributeError):
                return JSONResponse(
                    {"message": 'body: {"advance_days": N} or {"advance_seconds": N}'},
                    status_code=400,
                )
            if seconds < 0:
                return JSONResponse({"message": "the clock only moves forward"}, status_code=400)
            with sandbox.lock:
                clock.advance(seconds)
        return JSONResponse({"now": clock.now(), "offset_seconds": clock.offset_seconds})

    return [Route("/_sandbox/clock", show_or_advance, methods=["GET", "POST"])]
