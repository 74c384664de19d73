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

import dagster as dg
import pytest

from line_exports import LineMessagingResource, build_export, http
from line_exports.http import RateLimit
from line_exports.sandbox import Fault, SandboxServer
from line_exports.sources import SqlSource
from line_exports_tests.test_outcomes import adds_up, outcome_metadata
from line_exports_tests.test_retryfates_campaign_cut import HeldLimiter, stopped_counts

TICK = {"dagster/scheduled_execution_time": "2026-05-01T09:00:00+00:00"}
ROWS = 10
UIDS = f"select 'U' || lpad(printf('%x', range + 4096), 32, '0') as id from range({ROWS})"
UPLOAD = "/v2/bot/audienceGroup/upload"
OPEN_FOR = 5
"""Audience requests let through before the held one: attempt 1's lookup by name, create (503),
lookup, create (503), then attempt 2's lookup; attempt 2's create is held."""


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
    held = HeldLimiter(RateLimit(requests=1000, per_seconds=60), open_for=OPEN_FOR)
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

    stopper = held.stop_twice_when_held()  # attempt 2 waits to send attempt 1's request again
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
    assert held.calls == OPEN_FOR + 1, held.calls  # the resend never got past the limiter
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
