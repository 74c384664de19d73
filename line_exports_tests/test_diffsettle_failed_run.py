"""sync_mode diff / mirror after a run that failed or was stopped mid-delivery: the rows the API
accepted before it are recorded accepted, so the next tick sends only the rest (VERIFY-13q Q2:
CAPI, MAAC and LinkedIn sent every row again, also the accepted ones).

Real exports (DuckDB -> Dagster -> HTTP to the sandbox), one ledger across ticks; the sandbox
answers 503 to every request of the kind once ``ACCEPTED`` were answered (a run that fails
mid-delivery), or the run gets SIGINT then (a run stopped between requests); the sandbox is the
oracle of what each API received.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pytest

from line_exports import (
    LineConversionResource,
    LineMessagingResource,
    MaacResource,
    SqlSource,
    build_export,
)
from line_exports.sandbox import Fault, Sandbox, SandboxServer
from line_exports.sandbox import line_conversion as capi_box
from line_exports.sandbox import line_messaging as line_box
from line_exports.sandbox.linkedin import store_of as linkedin_store
from line_exports.sandbox.maac import store_of as maac_store
from line_exports_tests.test_linkedin import ACCOUNT
from line_exports_tests.test_linkedin import resource as linkedin_resource

FAST = {"initial_retry_wait": 1, "max_retry": 1, "max_retry_wait": 100}
TICKS = ("2026-05-01T09:00:00+00:00", "2026-05-02T09:00:00+00:00")
COUNTS = ("rows_rejected", "rows_refused_by_api", "rows_unsent", "rows_delivery_unknown")


@dataclass
class Case:
    """One destination: its rows, settings, requests path and how to read what the API got."""

    destination: str
    rows: int
    batch: int  # rows per request
    path: str  # the delivery requests' path prefix
    query: str
    settings: dict[str, Any]
    resource: Callable[[SandboxServer], Any]
    received: Callable[[Sandbox], int]  # rows the API received, resends included


CASES = {
    "capi": Case(
        "line_conversion",
        4_000,
        1_000,
        "/v1/",
        "select 'k' || range as deduplication_key, 'conversion' as event_type, "
        "'web' as source_type, cast(epoch(current_date) as bigint) - range as event_timestamp, "
        "'x' || range as external_id from range(4000)",
        {"max_records": 1_000},
        lambda s: LineConversionResource(line_tag_id="settle", base_url=s.url),
        lambda sb: capi_box.store_of(sb).received_events,
    ),
    "maac": Case(
        "maac",
        20,
        5,
        "/openapi/v1/member/import",
        "select 'U' || lpad(printf('%x', range + 4096), 32, '0') as line_uid from range(20)",
        {"data_object": "members", "import_key": "line_uid", "tags": "t", "batch_size": 5},
        lambda s: MaacResource(base_url=s.url, poll_seconds=0.05),
        lambda sb: 5 * len(maac_store(sb).tasks),
    ),
    "linkedin": Case(
        "linkedin",
        20,
        5,
        "/rest/dmpSegments/",
        "select 'u' || range || '@example.com' as email from range(20)",
        {"ad_account_id": ACCOUNT, "segment_name": "settle", "batch_size": 5},
        linkedin_resource,
        lambda sb: linkedin_store(sb).elements_received,
    ),
}
INSTANCE = dg.DagsterInstance.ephemeral()
ACCEPTED = 2  # requests answered before the API fails (or the run is stopped)


def after_requests(sandbox: Sandbox, path: str, answered: int, then: Callable[[], Any]) -> None:
    """Once ``answered`` POSTs to ``path`` were answered 2xx, call ``then`` on each later one
    (before the sandbox answers it); it returns the fault to answer with, or None."""
    take = sandbox.take_fault

    def take_fault(method: str, path_: str) -> Fault | None:
        if method == "POST" and path_.startswith(path):
            with sandbox.lock:
                done = [r for r in sandbox.requests if r.method == "POST" and r.status < 300]
            if sum(r.path.startswith(path) for r in done) >= answered:
                fault = then()
                if fault is not None:
                    return fault
        return take(method, path_)

    sandbox.take_fault = take_fault  # type: ignore[method-assign]


def run(server: SandboxServer, case: Case, mode: str, tick: str) -> dg.ExecuteInProcessResult:
    settings = {"sync_mode": mode, **FAST, **case.settings}
    asset = build_export(
        "settle", destination=case.destination, query=case.query, settings=settings
    )
    return dg.materialize(
        [asset],
        resources={case.destination: case.resource(server), "sql_source": SqlSource()},
        tags={"dagster/scheduled_execution_time": tick},
        instance=INSTANCE,
        raise_on_error=False,
    )


def meta(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """The delivery's metadata: the materialization's, a failure's, or (a stopped run: Dagster
    records an interrupt's failure with no metadata) the observation the export logs."""
    found = result.asset_materializations_for_node("settle")
    if found:
        return {k: v.value for k, v in found[-1].metadata.items()}
    for event in result.all_events:
        data = event.step_failure_data.user_failure_data if event.is_step_failure else None
        if data is not None and "rows_read" in data.metadata:
            return {k: getattr(v, "value", v) for k, v in data.metadata.items()}
    logs = result.dagster_run and INSTANCE.all_logs(
        result.run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION
    )
    [seen] = [e.dagster_event.asset_observation_data.asset_observation for e in logs or []]
    return {k: getattr(v, "value", v) for k, v in seen.metadata.items()}


def adds_up(m: dict[str, Any]) -> bool:
    return m["rows_read"] == sum(m[k] for k in COUNTS) + m["rows_accepted"]


def second_tick_sends_only_the_rest(
    server: SandboxServer, case: Case, mode: str, accepted: int, first: dict[str, Any]
) -> None:
    sandbox = server.sandbox
    assert adds_up(first), first
    assert first["rows_accepted"] == accepted, first
    assert case.received(sandbox) >= accepted
    sandbox.take_fault = type(sandbox).take_fault.__get__(sandbox)  # type: ignore[method-assign]
    before = case.received(sandbox)
    second = run(server, case, mode, TICKS[1])
    assert second.success
    m = meta(second)
    rest = case.rows - accepted
    assert (m["rows_sent"], m["rows_retried"], m["rows_unchanged"]) == (rest, rest, accepted), m
    assert (m["rows_added"], m["rows_accepted"]) == (0, case.rows), m
    assert case.received(sandbox) - before == rest  # none of the accepted rows sent again
    third = meta(run(server, case, mode, "2026-05-03T09:00:00+00:00"))
    assert (third["rows_sent"], third["rows_unchanged"]) == (0, case.rows), third


PARAMS = [("capi", "diff"), ("maac", "diff"), ("maac", "mirror")]
PARAMS += [("linkedin", "diff"), ("linkedin", "mirror")]


@pytest.mark.parametrize(("name", "mode"), PARAMS)
def test_failed_run_accepted_rows_are_not_sent_again(
    sandbox_server: SandboxServer, name: str, mode: str
) -> None:
    """Tick 1 fails: the API answers 503 after 2 requests. Tick 2 sends only the rows it did
    not accept (of unknown delivery, never sent), counted retried; the accepted ones are
    unchanged and reach the API once."""
    case = CASES[name]
    sandbox = sandbox_server.sandbox
    after_requests(
        sandbox, case.path, ACCEPTED, lambda: Fault(path=case.path, status=503, times=-1)
    )
    first = run(sandbox_server, case, mode, TICKS[0])
    assert not first.success
    m = meta(first)
    assert (m["rows_delivery_unknown"], m["rows_unsent"]) == (
        case.batch,
        case.rows - (ACCEPTED + 1) * case.batch,
    ), m
    second_tick_sends_only_the_rest(sandbox_server, case, mode, ACCEPTED * case.batch, m)


@pytest.mark.parametrize(("name", "mode"), [("capi", "diff"), ("linkedin", "mirror")])
def test_stopped_run_accepted_rows_are_not_sent_again(
    sandbox_server: SandboxServer, name: str, mode: str
) -> None:
    """Tick 1 gets SIGINT while its third request is in flight: it stops after that request
    (3 accepted, the rest never sent). Tick 2 sends only the rows never sent."""
    case = CASES[name]
    sandbox = sandbox_server.sandbox
    signalled = []

    def interrupt() -> None:
        if not signalled:
            signalled.append(True)
            os.kill(os.getpid(), signal.SIGINT)

    after_requests(sandbox, case.path, ACCEPTED, interrupt)
    first = run(sandbox_server, case, mode, TICKS[0])
    assert signalled and not first.success
    m = meta(first)
    assert m["rows_unsent"] == case.rows - (ACCEPTED + 1) * case.batch, m
    second_tick_sends_only_the_rest(sandbox_server, case, mode, (ACCEPTED + 1) * case.batch, m)


@pytest.mark.parametrize(
    ("target", "path", "answered", "extra"),
    [
        ("push_message", "/v2/bot/message/push", 10, {"push_concurrency": 1}),
        ("multicast_message", "/v2/bot/message/multicast", 2, {"batch_size_multicast": 5}),
    ],
)
def test_push_and_multicast_diff_still_skip_what_a_failed_run_delivered(
    sandbox_server: SandboxServer, target: str, path: str, answered: int, extra: dict[str, Any]
) -> None:
    """Push and multicast (settled from their recorded requests) as before: after a failed
    tick, the next one sends only to the recipients LINE did not get, none twice."""
    sandbox = sandbox_server.sandbox
    inbox = line_box.store_of(sandbox).inbox
    ids = "select 'U' || lpad(printf('%x', range + 4096), 32, '0') as id from range(20)"
    text = '{"type": "text", "text": "hi"}'
    settings = {"target": target, "sync_mode": "diff", **FAST, **extra}
    settings["template_message" if target == "push_message" else "template_message_multicast"] = (
        text
    )
    asset = build_export("settle", destination="line_messaging", query=ids, settings=settings)
    res = LineMessagingResource(base_url=sandbox_server.url, poll_seconds=0.05)

    def tick(when: str) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [asset],
            resources={"line_messaging": res, "sql_source": SqlSource()},
            tags={"dagster/scheduled_execution_time": when},
            instance=INSTANCE,
            raise_on_error=False,
        )

    after_requests(sandbox, path, answered, lambda: Fault(path=path, status=503, times=-1))
    assert not tick(TICKS[0]).success
    delivered = sum(len(v) for v in inbox.values())
    assert 0 < delivered < 20
    sandbox.take_fault = type(sandbox).take_fault.__get__(sandbox)  # type: ignore[method-assign]
    second = tick(TICKS[1])
    assert second.success
    m = meta(second)
    assert m["rows_accepted"] == 20 and m["rows_sent"] <= 20 - delivered, m
    assert len(inbox) == 20 and max(len(v) for v in inbox.values()) == 1
