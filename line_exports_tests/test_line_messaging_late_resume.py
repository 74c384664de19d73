"""A push/multicast (and narrowcast/broadcast) run that resumes its own earlier attempt late in the retry key's 24 hours
makes only the retries that end before the key does (NOTE-settle "Left"; the settle step's rule,
``sending.retries_left``): it never delivers a second time. Real Dagster runs, HTTP over
loopback to the sandbox, whose clock moves with the client's retry waits."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from line_exports import SqlSource, build_export
from line_exports.destinations.line_messaging import LineMessagingResource
from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.clock import clock_of
from line_exports.sandbox.line_messaging import store_of, summary
from line_exports_tests.sandbox_clock import line_waits_on_the_sandbox_clock
from line_exports_tests.test_line_messaging import (
    MULTICAST_TEMPLATE,
    PUSH_TEMPLATE,
    TICK,
    resource,
    user,
)
from line_exports_tests.test_outcomes import adds_up, outcome_metadata

DAY = 22 * 3600 + 59 * 60  # the first request's age when the run resumes
PATHS = {
    "push_message": "/v2/bot/message/push",
    "multicast_message": "/v2/bot/message/multicast",
    "broadcast": "/v2/bot/message/broadcast",
}


def late_export(target: str, tmp_path: Path, **retries: Any) -> dg.AssetsDefinition:
    settings: dict[str, Any] = {"target": target, "initial_retry_wait": 1, **retries}
    if target == "push_message":
        query = f"SELECT '{user(1)}' AS id, 'Ann' AS display_name, 'C1' AS coupon_code"
        settings["template_message"] = PUSH_TEMPLATE
    elif target == "broadcast":
        query = "SELECT 'Sale today' AS c"
        settings["template_message"] = json.dumps({"type": "text", "text": "{{c}}"})
    else:
        query = f"SELECT '{user(1)}' AS id"
        settings["template_message_multicast"] = MULTICAST_TEMPLATE
    return build_export(
        f"late_{target}",
        destination="line_messaging",
        query=query,
        settings=settings,
        retry_policy=None,
        ledger_path=tmp_path / "ledger.sqlite",
    )


def run(asset: dg.AssetsDefinition, line: LineMessagingResource) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [asset],
        resources={"sql_source": SqlSource(), "line_messaging": line},
        tags=TICK,  # the same run scope: a resume of the earlier attempt
        raise_on_error=False,
    )


def delivered(server: SandboxServer, target: str) -> int:
    """How many times LINE (the sandbox) delivered the message: to user(1), or broadcast."""
    if target == "broadcast":
        return int(summary(server.sandbox)["broadcasts"])
    return len(store_of(server.sandbox).received(user(1)))


def ledger_ages(path: Path) -> list[float]:
    """How long ago (seconds) each request of the ledger was first sent."""
    with sqlite3.connect(path) as con:
        rows = con.execute("select result from ledger").fetchall()
    return [time.time() - float(json.loads(r)["at"]) for (r,) in rows]


def move_ledger_back(path: Path, seconds: float) -> list[str]:
    """Every pending request of the ledger first sent ``seconds`` earlier; their states."""
    with sqlite3.connect(path) as con:
        rows = con.execute("select rowid, result from ledger").fetchall()
        for rowid, result in rows:
            state = json.loads(result)
            state["at"] = float(state["at"]) - seconds
            con.execute("update ledger set result=? where rowid=?", (json.dumps(state), rowid))
    return [json.loads(r)["state"] for _, r in rows]


@pytest.mark.parametrize(
    ("target", "debug"),
    [
        ("push_message", False),
        ("push_message", True),
        ("multicast_message", False),
        ("broadcast", False),
    ],
    ids=["push_aio", "push_threaded", "multicast", "broadcast"],
)
def test_a_late_resume_retries_only_within_the_retry_keys_day(
    sandbox_server: SandboxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    debug: bool,
) -> None:
    """LINE took the message but its answer was lost; the run resumes its attempt 22 h 59 min
    later, with settings that allow 8 retries up to an hour apart, and LINE answers 429 with
    ``Retry-After: 3600`` twice. Only what surely ends before the key's 24 hours (10 minutes to
    spare) is tried: one attempt, the run fails, the recipient has the message once. Uncut, the
    waits would take the sandbox past the key's 24 hours and the third attempt would deliver a
    second time. The resend keeps the first request's time in the ledger, so the run after, 6
    minutes later (23 h 5 min: inside the 23 h 10 min window of the default 300 s
    ``connection_timeout``), settles it with LINE's 409."""
    sandbox = sandbox_server.sandbox
    path = PATHS[target]
    line = resource(sandbox_server, debug=debug)
    sandbox.add_fault(Fault(path=path, lose_answer=True, times=-1))
    assert not run(late_export(target, tmp_path, max_retry=1), line).success
    sandbox.clear_faults()
    assert delivered(sandbox_server, target) == 1  # LINE took it; the ledger says pending
    assert move_ledger_back(tmp_path / "ledger.sqlite", DAY) == ["pending"]
    clock_of(sandbox).advance(DAY)
    line_waits_on_the_sandbox_clock(monkeypatch, sandbox)
    sandbox.add_fault(Fault(path=path, status=429, retry_after=3600, times=2))
    sent = sandbox.count("POST", path)
    late = run(late_export(target, tmp_path, max_retry=8, max_retry_wait=3600), line)
    assert delivered(sandbox_server, target) == 1  # not twice
    assert not late.success
    assert sandbox.count("POST", path) == sent + 1  # one attempt: no retry fits
    assert [age >= DAY for age in ledger_ages(tmp_path / "ledger.sqlite")] == [True]
    sandbox.clear_faults()

    clock_of(sandbox).advance(6 * 60)
    move_ledger_back(tmp_path / "ledger.sqlite", 6 * 60)
    settled = run(late_export(target, tmp_path, max_retry=8, max_retry_wait=3600), line)
    assert settled.success
    assert delivered(sandbox_server, target) == 1 and sandbox.count("POST", path) == sent + 2


@pytest.mark.parametrize("target", ["push_message", "broadcast"])
def test_a_resume_past_the_window_holds_the_request_of_unknown_delivery(
    sandbox_server: SandboxServer, tmp_path: Path, target: str
) -> None:
    """23 h 30 min after the first request (past the 23 h 10 min window of the default
    ``connection_timeout``) the request is not sent again: delivery unknown, not refused, with
    the reason, and the counts add up."""
    sandbox = sandbox_server.sandbox
    path = PATHS[target]
    line = resource(sandbox_server)
    sandbox.add_fault(Fault(path=path, lose_answer=True, times=-1))
    assert not run(late_export(target, tmp_path, max_retry=1), line).success
    sandbox.clear_faults()
    move_ledger_back(tmp_path / "ledger.sqlite", 23 * 3600 + 30 * 60)
    sent = sandbox.count("POST", path)
    late = run(late_export(target, tmp_path), line)
    meta = outcome_metadata(late)
    assert (meta["rows_delivery_unknown"], meta["rows_refused_by_api"]) == (1, 0), meta
    assert adds_up(meta) and sandbox.count("POST", path) == sent
    assert delivered(sandbox_server, target) == 1
    assert "past the window for a safe resend (23 h 10 min)" in json.dumps(
        meta.get("delivery_unknown_reasons")
    )
