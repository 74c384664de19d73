"""A LINE audience create a second signal cuts off before it left is never evidence of sending:
its ledger record is put back as the earlier step attempt left it (VERIFY-13o G2's kind, as
test_retryfates_cut_ledger for MAAC, LinkedIn and CAPI).

The earlier step attempt's create was answered 503 (twice, with its HTTP retry; the lookup by
name between them found nothing). The step retry sends it again and waits for the rate limiter
(used up) when a second SIGINT stops the run at once: its rows are of unknown delivery, "a 5xx
answer to 2 earlier attempt(s), then not sent again". A re-execution of the same tick whose
create LINE answers 429 names only those 5xx answers; a stopped attempt's record must not claim
one more attempt that got no answer. Real Dagster runs with a ``RetryPolicy``, real signals to
this process, HTTP over loopback to the sandbox.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import dagster as dg
import pytest

from line_exports import LineMessagingResource, build_export, http
from line_exports.http import RateLimit, RateLimiter
from line_exports.sandbox import Fault, SandboxServer
from line_exports.sources import SqlSource
from line_exports_tests.test_outcomes import adds_up, outcome_metadata
from line_exports_tests.test_retryfates_campaign_cut import stopped_counts

TICK = {"dagster/scheduled_execution_time": "2026-05-01T09:00:00+00:00"}
ROWS = 10
UIDS = f"select 'U' || lpad(printf('%x', range + 4096), 32, '0') as id from range({ROWS})"
UPLOAD = "/v2/bot/audienceGroup/upload"


class PostHeld(RateLimiter):
    """LINE's audience limit, used up for the create (a POST) once ``hold`` is set: the request
    waits (signals still land) and :attr:`waiting` is set; lookups (GETs) pass."""

    def __init__(self, limit: RateLimit) -> None:
        super().__init__(limit)
        self.hold = False
        self.waiting = threading.Event()
        self.posts = 0

    def acquire(self) -> float:
        if _posting():
            self.posts += 1
            if self.hold:
                self.waiting.set()
                while True:  # until the run is stopped at once (a signal raises here)
                    time.sleep(0.02)
        return super().acquire()


def _posting() -> bool:
    import inspect

    return any(f.function in ("upload_json", "upload_file") for f in inspect.stack(0)[:12])


def _export(retries: int) -> dg.AssetsDefinition:
    return build_export(
        "cut_audience",
        destination="line_messaging",
        query=UIDS,
        settings={
            "target": "audience",
            "audience_name": "cut audience",
            "initial_retry_wait": 1,
            "max_retry": 1,
        },
        retry_policy=dg.RetryPolicy(max_retries=retries, delay=0) if retries else None,
    )


def test_an_audience_create_cut_off_before_it_left_keeps_its_earlier_record(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = PostHeld(RateLimit(requests=1000, per_seconds=60))
    real = http.shared_limiter
    monkeypatch.setattr(
        http, "shared_limiter", lambda s, k, lim: held if k == "audience" else real(s, k, lim)
    )
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path=UPLOAD, method="POST", status=503, times=-1))
    resources = {
        "sql_source": SqlSource(),
        "line_messaging": LineMessagingResource(base_url=sandbox_server.url, poll_seconds=0.05),
    }

    def stop_twice() -> None:
        while held.posts < 2:  # attempt 1: the create and its HTTP retry, answered 503
            time.sleep(0.01)
        held.hold = True
        if held.waiting.wait(120):  # attempt 2 waits to send attempt 1's create again
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGINT)

    stopper = threading.Thread(target=stop_twice, daemon=True)
    stopper.start()
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [_export(retries=1)],
        resources=resources,
        instance=instance,
        tags=TICK,
        raise_on_error=False,
    )
    stopper.join(timeout=10)
    assert not result.success
    assert held.posts == 3, held.posts  # the resend never got past the limiter
    meta = stopped_counts(instance, "cut_audience")
    assert adds_up(meta), meta
    assert (meta["rows_accepted"], meta["rows_delivery_unknown"]) == (0, ROWS), meta
    (reason,) = meta["delivery_unknown_reasons"]
    assert reason.startswith("a 5xx answer to 2 earlier attempt(s), then not sent again"), reason

    # A re-execution of the same tick: the create answered 429 (twice).
    monkeypatch.setattr(http, "shared_limiter", real)
    sandbox.clear_faults()
    sandbox.add_fault(Fault(path=UPLOAD, method="POST", status=429, retry_after=0, times=-1))
    again = dg.materialize(
        [_export(retries=0)], resources=resources, tags=TICK, raise_on_error=False
    )
    meta = outcome_metadata(again)
    assert adds_up(meta), meta
    assert meta["rows_delivery_unknown"] == ROWS, meta
    (reason,) = meta["delivery_unknown_reasons"]
    assert reason.startswith("a 5xx answer to 2 earlier attempt(s), then LINE answered 429"), reason
    assert "no answer" not in reason, reason
