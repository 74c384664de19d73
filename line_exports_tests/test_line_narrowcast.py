"""Narrowcast and broadcast exports against the sandbox over loopback: audiences by name and id
with LINE's operators, demographic filters, limits, progress polled, quota, refusals, and a
kill-and-rerun that sends each narrowcast exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import requests
from pydantic import ValidationError

from line_exports import SqlSource
from line_exports.destinations.line_messaging import LineMessagingSettings
from line_exports.sandbox import Fault, Sandbox, SandboxServer
from line_exports.sandbox.line_messaging import store_of
from line_exports.sandbox.line_messaging.narrowcast import CampaignStore, keeps
from line_exports_tests.resilience_helpers import LateAnswerServer
from line_exports_tests.test_line_messaging import (
    TICK,
    TOKEN,
    export,
    resource,
    run,
    run_fails,
    user,
)

TEMPLATE = json.dumps({"type": "text", "text": "{{campaign}}: 20% off today"})


def campaigns(server: SandboxServer) -> CampaignStore:
    return server.sandbox.store("line_messaging_campaigns", CampaignStore)


def audience(server: SandboxServer, name: str, users: range) -> int:
    """An upload audience made over HTTP (as an audience export would), waited until READY."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = {"description": name, "audiences": [{"id": user(n)} for n in users]}
    answer = requests.post(
        f"{server.url}/v2/bot/audienceGroup/upload", json=body, headers=auth, timeout=5
    )
    answer.raise_for_status()
    ident = int(answer.json()["audienceGroupId"])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        group = requests.get(
            f"{server.url}/v2/bot/audienceGroup/{ident}", headers=auth, timeout=5
        ).json()["audienceGroup"]
        if group["status"] == "READY":
            return ident
        time.sleep(0.02)
    raise AssertionError("audience not ready")


def narrowcast(name: str, rows: str = "SELECT 'Spring' AS campaign", **settings: Any):  # type: ignore[no-untyped-def]
    return export(name, rows, target="narrowcast", template_message=TEMPLATE, **settings)


def test_narrowcast_by_name_and_id_with_operators_and_filter_progress_polled(
    sandbox_server: SandboxServer,
) -> None:
    store = store_of(sandbox_server.sandbox)
    audience(sandbox_server, "spring buyers", range(0, 80))
    lapsed = audience(sandbox_server, "lapsed", range(60, 120))
    recipient = {
        "type": "operator",
        "and": [
            {"type": "audience", "description": "spring buyers"},
            {"type": "operator", "not": {"type": "audience", "audienceGroupId": lapsed}},
        ],
    }
    demographic = {"demographic": {"type": "gender", "oneOf": ["female"]}}
    expected = [user(n) for n in range(0, 60) if keeps(demographic["demographic"], user(n))]
    meta = run(
        narrowcast(
            "line_narrowcast", recipient=json.dumps(recipient), filter=json.dumps(demographic)
        ),
        resource(sandbox_server),
        tags=TICK,
    )
    assert 10 < len(expected) < 60
    assert meta["narrowcast_target_count"] == len(expected)
    assert meta["narrowcast_success_count"] == len(expected)
    assert meta["narrowcast_failure_count"] == 0
    progress = meta["narrowcast_progress"][0]
    assert progress["phase"] == "succeeded" and progress["phases_seen"][-1] == "succeeded"
    assert len(progress["phases_seen"]) >= 2  # polled while waiting / sending
    assert meta["recipient_audience_names"] == ["description: spring buyers"]
    assert meta["messages_needed"] == 80  # upper bound: the named audience's size
    assert (meta["rows_read"], meta["rows_accepted"]) == (1, 1)
    for n in range(0, 120):
        got = store.received(user(n))
        assert got == (
            [[{"type": "text", "text": "Spring: 20% off today"}]] if user(n) in expected else []
        )


def test_narrowcast_to_the_audience_an_audience_export_uploaded(
    sandbox_server: SandboxServer,
) -> None:
    store = store_of(sandbox_server.sandbox)
    uploaded = run(
        export(
            "nc_buyers",
            "SELECT 'U' || lpad(printf('%x', range), 32, '0') AS id FROM range(0, 55)",
            target="audience",
            audience_name="buyers of the week",
        ),
        resource(sandbox_server),
    )
    recipient = json.dumps({"type": "audience", "export": "nc_buyers"})
    meta = run(narrowcast("nc_by_export", recipient=recipient), resource(sandbox_server))
    assert meta["recipient_audiences"] == {str(uploaded["audience_id"]): 55}
    assert meta["narrowcast_success_count"] == 55 and len(store.received(user(54))) == 1
    missing = json.dumps({"type": "audience", "export": "never_ran"})
    message = run_fails(narrowcast("nc_missing", recipient=missing), resource(sandbox_server))
    assert "no audience uploaded by export 'never_ran'" in message


def test_narrowcast_audience_below_50_fails_with_lines_error_code(
    sandbox_server: SandboxServer,
) -> None:
    small = audience(sandbox_server, "tiny", range(0, 49))
    recipient = json.dumps({"type": "audience", "audienceGroupId": small})
    message = run_fails(
        narrowcast("line_narrowcast_small", recipient=recipient), resource(sandbox_server)
    )
    assert "errorCode 4" in message and "less than 50" in message
    assert store_of(sandbox_server.sandbox).inbox == {}


def test_narrowcast_quota_checked_before_sending_then_capped_by_line(
    sandbox_server: SandboxServer,
) -> None:
    store = store_of(sandbox_server.sandbox)
    audience(sandbox_server, "buyers", range(0, 60))
    recipient = json.dumps({"type": "audience", "description": "buyers"})
    store.quota_limit, store.quota_used = 100, 80
    message = run_fails(narrowcast("line_nc_quota", recipient=recipient), resource(sandbox_server))
    assert "may need up to 60 messages" in message and "only 20" in message
    assert campaigns(sandbox_server).narrowcasts == {}
    # forbidPartialDelivery: LINE accepts, then cancels rather than reach only 20 of 60.
    message = run_fails(
        narrowcast(
            "line_nc_forbid",
            recipient=recipient,
            up_to_remaining_quota=True,
            forbid_partial_delivery=True,
        ),
        resource(sandbox_server),
    )
    assert "errorCode 5" in message and store.quota_used == 80
    meta = run(
        narrowcast("line_nc_up_to", recipient=recipient, over_quota="send_up_to_quota"),
        resource(sandbox_server),
    )
    assert meta["up_to_remaining_quota_set_by_over_quota"] is True
    assert meta["narrowcast_success_count"] == 20 and store.quota_used == 100
    assert sum(1 for n in range(60) if store.received(user(n))) == 20


def test_broadcast_reaches_every_friend_once_and_checks_the_quota_first(
    sandbox_server: SandboxServer,
) -> None:
    store = store_of(sandbox_server.sandbox)
    friends = [user(n) for n in range(5)]
    requests.put(
        f"{sandbox_server.url}/_sandbox/line_messaging/followers",
        json={"followers": friends},
        timeout=5,
    ).raise_for_status()
    store.blocked.add(friends[0])
    asset = export(
        "line_broadcast",
        "SELECT 'Summer' AS campaign UNION ALL SELECT 'Autumn'",
        target="broadcast",
        template_message=TEMPLATE,
        initial_retry_wait=1,
    )
    # A 500: the first broadcast is answered 500 once, then retried with its retry key.
    sandbox_server.sandbox.add_fault(Fault(path="/v2/bot/message/broadcast", status=500))
    meta = run(asset, resource(sandbox_server), tags=TICK)
    assert meta["retries"] == 1
    assert meta["messages_needed"] == 8 and "targetedReaches" in meta["messages_needed_basis"]
    assert meta["broadcast_requests_accepted"] == 2 and meta["rows_accepted"] == 2
    assert store.received(friends[0]) == []
    texts = [m[0]["text"] for m in store.received(friends[1])]
    assert texts == ["Summer: 20% off today", "Autumn: 20% off today"]
    # The same tick again, with the quota now used up: the ledger resumes, nothing is sent
    # twice, and the quota is not checked for requests already sent.
    store.quota_limit = store.quota_used
    again = run(asset, resource(sandbox_server), tags=TICK)
    assert again["messages_needed"] == 0
    assert again["rows_resumed"] == 2 and campaigns(sandbox_server).broadcasts == 2
    store.quota_limit, store.quota_used = 10, 8
    message = run_fails(
        export(
            "line_broadcast_over",
            "SELECT 'X' AS campaign",
            target="broadcast",
            template_message=TEMPLATE,
        ),
        resource(sandbox_server),
    )
    assert "may need up to 4 messages" in message and campaigns(sandbox_server).broadcasts == 2


def test_settings_and_the_sandbox_refuse_what_line_refuses(sandbox_server: SandboxServer) -> None:
    with pytest.raises(ValidationError, match="forbidPartialDelivery"):
        LineMessagingSettings(
            target="narrowcast", template_message=TEMPLATE, forbid_partial_delivery=True
        )
    with pytest.raises(ValidationError, match="custom_aggregation_units"):
        LineMessagingSettings(
            target="narrowcast", template_message=TEMPLATE, custom_aggregation_units="spring"
        )
    with pytest.raises(ValidationError, match="a broadcast goes to every friend"):
        LineMessagingSettings(target="broadcast", template_message=TEMPLATE, limit_max=5)
    with pytest.raises(ValidationError, match="age_13"):
        LineMessagingSettings(
            target="narrowcast",
            template_message=TEMPLATE,
            filter=json.dumps({"demographic": {"type": "age", "gte": "age_13"}}),
        )
    eleven = {
        "type": "operator",
        "or": [{"type": "audience", "audienceGroupId": n} for n in range(1, 12)],
    }
    with pytest.raises(ValidationError, match="Up to 10"):
        LineMessagingSettings(
            target="narrowcast", template_message=TEMPLATE, recipient=json.dumps(eleven)
        )
    # The sandbox holds the same rules over HTTP.
    auth = {"Authorization": f"Bearer {TOKEN}"}
    messages = [{"type": "text", "text": "hi"}]
    for body in (
        {"messages": messages, "recipient": eleven},
        {"messages": messages, "limit": {"max": 0}},
        {"messages": messages, "limit": {"forbidPartialDelivery": True}},
        {"messages": messages, "recipient": {"type": "audience", "audienceGroupId": 999}},
        {"messages": messages, "to": [user(1)]},
    ):
        answer = requests.post(
            f"{sandbox_server.url}/v2/bot/message/narrowcast", json=body, headers=auth, timeout=5
        )
        assert answer.status_code == 400, body
    answer = requests.post(
        f"{sandbox_server.url}/v2/bot/message/broadcast",
        json={"messages": messages, "recipient": {"type": "audience", "audienceGroupId": 1}},
        headers=auth,
        timeout=5,
    )
    assert answer.status_code == 400
    # One request per row, 60 an hour: more rows fail before anything is sent.
    message = run_fails(
        narrowcast("line_nc_rows", "SELECT 'c' || range AS campaign FROM range(61)"),
        resource(sandbox_server),
    )
    assert "60 narrowcast requests an hour" in message


HELD_ANSWER = 3.0  # seconds LINE holds the killed narrowcast's answer: far past the kill

CHILD = """
import json, sys
import dagster as dg
from line_exports import SqlSource, build_export
from line_exports.destinations.line_messaging import LineMessagingResource

asset = build_export("nc_crash", destination="line_messaging", retry_policy=None,
    query="SELECT 'c' || range AS campaign FROM range(2)", settings={
    "target": "narrowcast", "template_message": sys.argv[2], "recipient": sys.argv[3]})
dg.materialize([asset], tags={"dagster/scheduled_execution_time": "2026-05-01T09:00:00+00:00"},
    resources={"sql_source": SqlSource(),
               "line_messaging": LineMessagingResource(base_url=sys.argv[1], poll_seconds=0.1)})
"""


def test_narrowcast_killed_mid_request_then_rerun_sends_each_once(
    line_exports_home: Path,
) -> None:
    # LINE acts on the first narrowcast, then holds its answer back: the process is killed
    # while it waits, so the answer and its request id are lost. The kill is triggered on the
    # narrowcast LINE made, not on the request received (killed before the sandbox read its
    # body, LINE never acted on it: the race that once left this test waiting 300 s).
    with LateAnswerServer(Sandbox(rate_scale=100, job_seconds=0.05)) as server:
        store = store_of(server.sandbox)
        audience(server, "crash", range(0, 50))
        recipient = json.dumps({"type": "audience", "description": "crash"})
        server.late.add("/v2/bot/message/narrowcast", "POST", HELD_ANSWER, times=1)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, server.url, TEMPLATE, recipient],
            env={**os.environ, "LINE_EXPORTS_HOME": str(line_exports_home)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300  # a loaded machine takes long to start Dagster
        try:
            while len(campaigns(server).narrowcasts) < 1:
                assert child.poll() is None, "the export ended before LINE made its narrowcast"
                assert time.monotonic() < deadline
                time.sleep(0.01)
            os.killpg(child.pid, signal.SIGKILL)
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
        meta = run(
            narrowcast(
                "nc_crash", "SELECT 'c' || range AS campaign FROM range(2)", recipient=recipient
            ),
            resource(server),
            tags=TICK,
        )
        assert meta["narrowcast_already_accepted_409"] == 1  # the lost one, by its retry key
        assert len(campaigns(server).narrowcasts) == 2
        assert meta["narrowcast_success_count"] == 100
        for n in range(50):
            assert [m[0]["text"] for m in store.received(user(n))] == [
                "c0: 20% off today",
                "c1: 20% off today",
            ]


def test_narrowcast_whose_progress_cannot_be_read_is_of_unknown_delivery(
    sandbox_server: SandboxServer,
) -> None:
    """LINE took the narrowcast (200) but its progress answers 500 after the retries: the row
    is neither accepted nor unsent but of unknown delivery, with the reason (outcomes.fate_of's
    rule: the request reached LINE, what it did is not known)."""
    audience(sandbox_server, "unknown progress", range(0, 5))
    recipient = json.dumps({"type": "audience", "description": "unknown progress"})
    sandbox_server.sandbox.add_fault(
        Fault(path="/v2/bot/message/progress/narrowcast", status=500, times=-1)
    )
    asset = narrowcast("line_nc_progress", recipient=recipient, max_retry=1, initial_retry_wait=1)
    result = dg.materialize(
        [asset],
        resources={"sql_source": SqlSource(), "line_messaging": resource(sandbox_server)},
        raise_on_error=False,
    )
    assert not result.success  # LINE accepted none it could vouch for
    failure = next(e for e in result.all_events if e.is_step_failure)
    meta = {
        k: getattr(v, "value", v)
        for k, v in failure.event_specific_data.user_failure_data.metadata.items()  # type: ignore[union-attr]
    }
    assert (meta["rows_read"], meta["rows_delivery_unknown"], meta["rows_unsent"]) == (1, 1, 0)
    assert meta["rows_accepted"] == 0 and meta["rows_refused_by_api"] == 0
    [reason] = meta["delivery_unknown_reasons"]
    assert "LINE accepted narrowcast" in reason and "progress could not be read" in reason
    assert len(campaigns(sandbox_server).narrowcasts) == 1
