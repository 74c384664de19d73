"""A held row's reason says "delivery unknown" once (issue 18, minor).

Rows a push run sent past LINE's 24-hour retry-key window are held; the ``sync_removals``
check, the run's ``delivery_unknown_reasons`` and the rejects file give the recorded reason,
which begins "delivery unknown: ". The check used to prefix it again ("delivery unknown:
delivery unknown: ..."). Real runs over HTTP to the sandbox, the sandbox's clock moved 25 hours.
"""

from __future__ import annotations

import time

import pytest

from line_exports import sync_settle
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.clock import clock_of
from line_exports.sandbox.core import Fault
from line_exports_tests.test_sync import meta_of, sync_check
from line_exports_tests.test_sync_settle import RECIPIENTS, TICK, coupon_run


def test_a_held_rows_reason_says_delivery_unknown_once(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path="/v2/bot/message/push", status=500, times=-1))
    assert not coupon_run(sandbox_server.url, TICK).success
    sandbox.clear_faults()
    clock_of(sandbox).advance(25 * 3600)
    later = time.time() + 25 * 3600
    monkeypatch.setattr(sync_settle, "now", lambda: later)

    held = coupon_run(sandbox_server.url, "2026-06-03T10:00:00+00:00", count=RECIPIENTS + 5)
    meta = meta_of(held, "daily__coupon")
    # Pushes are recorded a window at a time just before they go out (VERIFY-18d F1): the rows
    # held are those the refused run recorded, at least its first window, not every row.
    unknown = meta["rows_delivery_unknown"]
    assert 1 <= unknown <= RECIPIENTS
    reason = str(sync_check(held).metadata["reason"].value)  # type: ignore[union-attr]
    assert reason.startswith(f"{unknown} rows held, delivery unknown: sent by an earlier run")
    assert reason.count("delivery unknown") == 1, reason
    for text in meta["delivery_unknown_reasons"]:
        assert text.count("delivery unknown") == 1, text

    again = coupon_run(sandbox_server.url, "2026-06-03T11:00:00+00:00", count=RECIPIENTS + 5)
    reason = str(sync_check(again).metadata["reason"].value)  # type: ignore[union-attr]
    assert reason.count("delivery unknown") == 1, reason
    for text in meta_of(again, "daily__coupon")["delivery_unknown_reasons"]:
        assert text.count("delivery unknown") == 1, text
