"""A narrowcast or broadcast whose earlier step attempt got a 5xx, cut off by a second signal
before its resend went out, stays of unknown delivery (NOTE-stopretry "Left"; issue 13: outcomes
that say what really happened).

The step retry sends again first what the earlier attempt left pending. Here it waits for the
rate limiter (LINE's 60 narrowcasts an hour, used up) when a second SIGINT stops the run at
once: the resend never left, but the earlier attempt's request was answered 503 (twice, with its
HTTP retry) and LINE may have acted on it, so its row is unknown ("a 5xx answer to 2 earlier
attempt(s), then not sent again (the run was stopped at once by SIGINT)"), not never sent; the rows the earlier attempt got
accepted stay accepted. The request's ledger record is put back as the earlier attempt left it:
a re-execution whose resend LINE answers 429 names only the 5xx, not an attempt of this stopped
one that never went out. Real Dagster runs with a ``RetryPolicy`` (one retry, no delay), real
signals to this process, HTTP over loopback to the sandbox.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import dagster as dg
import pytest

from line_exports import http
from line_exports.destinations.line_messaging import LineMessagingResource
from line_exports.http import RateLimit, RateLimiter
from line_exports.interrupts import STOPPED_BY
from line_exports.sandbox import Fault, SandboxServer
from line_exports.sources import SqlSource
from line_exports_tests.test_outcomes import adds_up, outcome_metadata

ROWS = 5
TICK = "2026-05-01T09:00:00+00:00"
TEXT = json.dumps({"type": "text", "text": "{{c}} sale"})
TARGETS = {
    "narrowcast": {
        "template_message": TEXT,
        "filter": json.dumps({"demographic": {"type": "gender", "oneOf": ["male", "female"]}}),
    },
    "broadcast": {"template_message": TEXT},
}
SETTINGS = {"initial_retry_wait": 1, "max_retry": 1, "connection_timeout": 30}
COUNTS = ("refused_by_api", "accepted", "delivery_unknown", "unsent")


class HeldLimiter(RateLimiter):
    """LINE's hourly limit, used up from the ``open_for``-th request on: the request waits
    (signals still land: the wait is a loop of short waits) and :attr:`waiting` is set."""

    def __init__(self, limit: RateLimit, open_for: int) -> None:
        super().__init__(limit)
        self.open_for = open_for
        self.calls = 0
        self.waiting = threading.Event()

    def acquire(self) -> float:
        self.calls += 1
        if self.calls > self.open_for:
            self.waiting.set()
            while True:  # until the run is stopped at once (a signal raises here)
                time.sleep(0.02)
        return super().acquire()

    def stop_twice_when_held(self) -> threading.Thread:
        """A started thread that, once a request waits here (a step retry's resend), stops the
        run at once: SIGINT to this process, then a second SIGINT 0.3 s later."""

        def stop_twice() -> None:
            if self.waiting.wait(120):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.3)
                os.kill(os.getpid(), signal.SIGINT)

        stopper = threading.Thread(target=stop_twice, daemon=True)
        stopper.start()
        return stopper


def stopped_counts(instance: dg.DagsterInstance, key: str) -> dict[str, Any]:
    """The counts a stopped run logged (an observation of the export with ``stopped_by``)."""
    records = instance.fetch_observations(dg.AssetKey(key), limit=10).records
    for record in records:
        meta = record.asset_observation.metadata  # type: ignore[union-attr]
        if STOPPED_BY in meta:
            return {k: getattr(v, "value", v) for k, v in meta.items()}
    raise AssertionError(f"no observation of a stopped run: {records}")


@pytest.mark.parametrize("target", list(TARGETS))
def test_a_resend_cut_off_before_it_left_keeps_the_earlier_5xx(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    path = f"/v2/bot/message/{target}"
    # Attempt 1: 2 requests accepted, the third answered 503 twice (its retry): 4 requests.
    held = HeldLimiter(RateLimit(requests=60, per_seconds=3600), open_for=4)
    real = http.shared_limiter

    def limiter(scope: str, key: str, limit: RateLimit) -> RateLimiter:
        return held if key == target else real(scope, key, limit)

    monkeypatch.setattr(http, "shared_limiter", limiter)
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path=path, method="POST", times=2))
    sandbox.add_fault(Fault(path=path, method="POST", status=503, times=-1))
    export = _export(target, retries=1)
    resources = _resources(sandbox_server)

    stopper = held.stop_twice_when_held()  # attempt 2 waits to send attempt 1's request again
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [export],
        resources=resources,
        instance=instance,
        tags={"dagster/scheduled_execution_time": TICK},
        raise_on_error=False,
    )
    stopper.join(timeout=10)
    assert not result.success
    assert held.calls == 5, held.calls  # the resend never got past the limiter
    posts = [r.status for r in sandbox.requests if r.method == "POST" and r.path == path]
    assert [status // 100 for status in posts] == [2, 2, 5, 5], posts
    meta = stopped_counts(instance, f"cut_{target}")
    assert meta[STOPPED_BY] == "SIGINT", meta
    assert adds_up(meta), meta
    assert {k: meta[f"rows_{k}"] for k in COUNTS} == {
        "refused_by_api": 0,
        "accepted": 2,
        "delivery_unknown": 1,
        "unsent": 2,
    }, meta
    (reason,) = meta["delivery_unknown_reasons"]
    assert reason == (
        "a 5xx answer to 2 earlier attempt(s), then not sent again (the run was stopped at once "
        "by SIGINT): LINE may have acted on it"
    ), reason

    # A re-execution of the same tick: LINE answers the resend 429 (twice). Its record is the
    # earlier attempt's (a 5xx), not one more attempt that got no answer.
    monkeypatch.setattr(http, "shared_limiter", real)
    sandbox.clear_faults()
    sandbox.add_fault(Fault(path=path, method="POST", status=429, times=-1))
    again = dg.materialize(
        [_export(target, retries=0)],
        resources=resources,
        tags={"dagster/scheduled_execution_time": TICK},
        raise_on_error=False,
    )
    meta = outcome_metadata(again)
    assert adds_up(meta), meta
    assert meta["rows_delivery_unknown"] == 1, meta
    (reason,) = meta["delivery_unknown_reasons"]
    assert reason.startswith("a 5xx answer to 2 earlier attempt(s), then LINE answered 429"), reason
    assert "no answer" not in reason, reason


def _export(target: str, retries: int) -> dg.AssetsDefinition:
    from line_exports import build_export

    return build_export(
        f"cut_{target}",
        destination="line_messaging",
        query=f"select 'c' || range as c from range({ROWS})",
        settings={"target": target, **TARGETS[target], **SETTINGS},
        retry_policy=dg.RetryPolicy(max_retries=retries, delay=0) if retries else None,
    )


def _resources(server: SandboxServer) -> dict[str, Any]:
    return {
        "sql_source": SqlSource(),
        "line_messaging": LineMessagingResource(base_url=server.url, poll_seconds=0.05),
    }
