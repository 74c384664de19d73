"""A LINE Messaging client whose retry waits move the sandbox's clock instead of waiting.

For tests that resume a run late in a retry key's 24 hours (``test_line_messaging_late_resume``,
``test_sync_settle``): LINE answers 429 with ``Retry-After: 3600``, and an uncut retry would
reach the sandbox only after the key expired, which the sandbox sees at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from line_exports.destinations.line_messaging import LineMessagingResource, aio_push
from line_exports.sandbox import Sandbox
from line_exports.sandbox.clock import Clock, clock_of


class SandboxClockAsyncio:
    """``asyncio`` for aio_push, whose retry waits move the sandbox clock instead of waiting."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await asyncio.sleep(0)


def line_waits_on_the_sandbox_clock(monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    """For the rest of the test, every LINE Messaging client's retry waits (the threaded
    client's ``http.sleep`` and aio_push's ``asyncio.sleep``) advance ``sandbox``'s clock by
    the wait (seconds) instead of sleeping."""
    clock = clock_of(sandbox)
    get_client = LineMessagingResource.get_client

    def waits_on_the_sandbox_clock(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = get_client(self, *args, **kwargs)
        client.http.sleep = clock.advance
        return client

    monkeypatch.setattr(LineMessagingResource, "get_client", waits_on_the_sandbox_clock)
    monkeypatch.setattr(aio_push, "asyncio", SandboxClockAsyncio(clock))
