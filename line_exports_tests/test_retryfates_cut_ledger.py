"""A request a second signal cuts off before it left is never evidence of sending: its ledger
record is put back as the earlier step attempt left it (VERIFY-13o G2, the kind, for every
destination whose requests go under ``LedgerRequest``: MAAC member imports, LinkedIn
BATCH_CREATE, CAPI events).

The earlier step attempt's second request was answered 503 (twice, with its HTTP retry). The
step retry sends it again and waits for the rate limiter (used up) when a second SIGINT stops
the run at once: its rows are of unknown delivery, "a 5xx answer to 2 earlier attempt(s), then
not sent again (the run was stopped at once by SIGINT)". A re-execution of the same tick whose
resend the API answers 429 names only those 5xx answers; before, the stopped attempt's record
claimed one more attempt that got no answer ("no answer to 1 and a 5xx answer to 2 earlier
attempt(s)", "may or may not have acted"). Real Dagster runs with a ``RetryPolicy`` (one retry,
no delay), real signals to this process, HTTP over loopback to the sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg
import pytest

from line_exports import LinkedInResource, MaacResource, build_export, http
from line_exports.http import RateLimit, RateLimiter
from line_exports.sandbox import Fault, SandboxServer
from line_exports.sources import SqlSource
from line_exports_tests.test_outcomes import adds_up, outcome_metadata
from line_exports_tests.test_retryfates_campaign_cut import HeldLimiter, stopped_counts

TICK = "2026-05-01T09:00:00+00:00"
ROWS = 10
UIDS = f"select 'U' || lpad(printf('%x', range + 4096), 32, '0') as line_uid from range({ROWS})"
EMAILS = f"select 'u' || range || '@example.com' as email from range({ROWS})"


@dataclass
class Case:
    destination: str
    query: str
    settings: dict[str, Any]
    path: str
    endpoint: str
    api: str

    def resource(self, url: str) -> dg.ConfigurableResource:
        if self.destination == "maac":
            return MaacResource(base_url=url, poll_seconds=0.05)
        # past the sandbox's 404 window of a new segment: the first batch is taken at once
        return LinkedInResource(api_url=url, new_segment_wait=1)


CASES = {
    "maac": Case(
        "maac",
        UIDS,
        {"data_object": "members", "import_key": "line_uid", "tags": "t", "batch_size": 5},
        "/openapi/v1/member/import/",
        "member_import",
        "MAAC",
    ),
    "linkedin": Case(
        "linkedin",
        EMAILS,
        {"ad_account_id": "512345678", "segment_name": "cut", "batch_size": 5},
        "/rest/dmpSegments/",
        "users",
        "LinkedIn",
    ),
}
RETRY = {"initial_retry_wait": 1, "max_retry": 1, "connection_timeout": 30}


@pytest.mark.parametrize("name", list(CASES))
def test_a_request_cut_off_before_it_left_keeps_its_earlier_record(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    case = CASES[name]
    # Attempt 1: the first request taken, the second answered 503 twice: 3 requests.
    held = HeldLimiter(RateLimit(requests=1000, per_seconds=60), open_for=3)
    real = http.shared_limiter

    def limiter(scope: str, key: str, limit: RateLimit) -> RateLimiter:
        return held if key == case.endpoint else real(scope, key, limit)

    monkeypatch.setattr(http, "shared_limiter", limiter)
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path=case.path, method="POST", times=1))
    sandbox.add_fault(Fault(path=case.path, method="POST", status=503, times=-1))
    resources = {
        "sql_source": SqlSource(),
        case.destination: case.resource(sandbox_server.url),
    }

    stopper = held.stop_twice_when_held()  # attempt 2 waits to send attempt 1's request again
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [_export(case, name, retries=1)],
        resources=resources,
        instance=instance,
        tags={"dagster/scheduled_execution_time": TICK},
        raise_on_error=False,
    )
    stopper.join(timeout=10)
    assert not result.success
    assert held.calls == 4, held.calls  # the resend never got past the limiter
    meta = stopped_counts(instance, f"cut_{name}")
    assert adds_up(meta), meta
    assert (meta["rows_accepted"], meta["rows_delivery_unknown"], meta["rows_unsent"]) == (
        5,
        5,
        0,
    ), meta
    (reason,) = meta["delivery_unknown_reasons"]
    assert reason == (
        "a 5xx answer to 2 earlier attempt(s), then not sent again (the run was stopped at once "
        f"by SIGINT): {case.api} may have acted on it"
    ), reason

    # A re-execution of the same tick: the resend answered 429 (twice).
    monkeypatch.setattr(http, "shared_limiter", real)
    sandbox.clear_faults()
    sandbox.add_fault(Fault(path=case.path, method="POST", status=429, times=-1))
    again = dg.materialize(
        [_export(case, name, retries=0)],
        resources=resources,
        tags={"dagster/scheduled_execution_time": TICK},
        raise_on_error=False,
    )
    meta = outcome_metadata(again)
    assert adds_up(meta), meta
    assert meta["rows_delivery_unknown"] == 5, meta
    (reason,) = meta["delivery_unknown_reasons"]
    assert reason.startswith(f"a 5xx answer to 2 earlier attempt(s), then {case.api} answered 429")
    assert "no answer" not in reason, reason


def _export(case: Case, name: str, retries: int) -> dg.AssetsDefinition:
    return build_export(
        f"cut_{name}",
        destination=case.destination,
        query=case.query,
        settings={**case.settings, **RETRY},
        retry_policy=dg.RetryPolicy(max_retries=retries, delay=0) if retries else None,
    )
