"""A killed push ``diff`` run leaves recorded (and so resent as it was) only what was in flight:
re-executing the same tick with a fixed template sends the fixed text to every recipient the
killed run never reached (VERIFY-18d F1).

A real child process SIGKILLed mid-send (the kill triggered on what the sandbox delivered), a
real ledger file, HTTP to the sandbox.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from line_exports.sandbox import line_messaging as line_box
from line_exports_tests.test_sync import meta_of, store_statuses
from line_exports_tests.test_sync_settle import (
    RECIPIENTS,
    TICK,
    adds_up,
    coupon_run,
    inbox_counts,
    kept_recipients,
    killed_tick,
    uid,
)

WIDTH = 2  # coupon_run's push_concurrency


def push_day_debug(url: str) -> dg.ExecuteInProcessResult:
    """The tick's push run by the threaded sender (the resource's ``debug``)."""
    return coupon_run(url, TICK, debug=True)


@pytest.mark.parametrize(
    ("child", "module"),
    [("push_day", "test_sync_settle"), ("push_day_debug", "test_push_window")],
    ids=["aiohttp", "threaded"],
)
def test_a_rerun_with_a_fixed_template_sends_it_to_everyone_the_killed_run_never_reached(
    line_exports_home: Path, child: str, module: str
) -> None:
    """SIGKILL the tick's push run once LINE delivered 12 requests; the run recorded pending
    only a window or so past them (push_concurrency at a time), not the whole 2,000-row batch.
    Fix the template and re-run the tick: the recorded requests are resent as they were (409
    for those LINE took), every other recipient gets the fixed text, each exactly one message,
    and the counts add up. Both senders: aiohttp and (``debug``) the thread pool."""
    with killed_tick(
        line_exports_home, "push_message", child, "/v2/bot/message/push", 12, module
    ) as (
        server,
        delivered,
    ):
        sandbox = server.sandbox
        store = line_box.store_of(sandbox)
        reached = {uid(n) for n in range(RECIPIENTS) if delivered[n]}
        kept = kept_recipients()
        assert reached <= kept  # recorded pending before it could reach LINE
        # In flight, queued and being queued: about three windows past what LINE took.
        assert len(kept - reached) <= 3 * WIDTH, (len(kept), len(reached))

        again = coupon_run(server.url, TICK, text="coupon (fixed typo)")
        assert again.success
        meta = meta_of(again, "daily__coupon")
        assert inbox_counts(sandbox) == [1] * RECIPIENTS
        assert adds_up(meta) and meta["rows_accepted"] == RECIPIENTS, meta
        assert meta["earlier_requests_resent"] == len(kept)
        assert 1 <= meta["earlier_requests_409"] == store.conflicts
        assert meta["rows_sent"] == RECIPIENTS - len(kept)
        assert store_statuses("daily/coupon") == {"accepted": RECIPIENTS}
        with sandbox.lock:
            texts = {uid(n): store.received(uid(n))[0][0]["text"] for n in range(RECIPIENTS)}
        old = {to for to, text in texts.items() if "fixed typo" not in text}
        assert old == kept  # only the recorded requests went out with the killed run's text
        assert len(old - reached) <= 3 * WIDTH
