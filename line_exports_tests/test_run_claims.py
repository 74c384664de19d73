"""A run owns its ledger scope before it sends, on SQLite and on a real PostgreSQL server.

Real processes race: two Dagster runs of the same export and tick start at the same instant
(each in its own process, its own data folder, one shared ledger by URL). Exactly one sends;
the other fails at once naming the holder; the sandbox (over HTTP, ``/_sandbox/state``) shows
one audience, one segment, one set of imports and every CAPI event once. A holder frozen
mid-export (SIGSTOP: a hung process or a partitioned machine) keeps the scope until its
heartbeat is older than the timeout; then the next run takes over and resumes exactly once,
and the old holder, woken up, stops at its next ledger access instead of sending on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from line_exports.claims import ClaimOwner, ScopeClaimed
from line_exports.ledger import Ledger
from line_exports.sandbox import Fault, Sandbox, SandboxServer
from line_exports_tests import postgres_server
from line_exports_tests.resilience_helpers import (
    AUDIENCE,
    CASES,
    SEGMENT,
    TICK,
    LateAnswerServer,
    build,
    check_exactly_once,
    failure_text,
    materialize,
    metadata,
)

ROOT = Path(__file__).resolve().parents[1]
RACE_CASES = ("maac_members", "line_audience", "linkedin_users", "capi_events")

RACER = """
import json, sys, time
from pathlib import Path
from line_exports_tests.resilience_helpers import CASES, TICK, build, failure_text, materialize
name, url, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
case = CASES[name]
asset = build(case)
while not go.exists():
    time.sleep(0.002)
started = time.monotonic()
result = materialize(case, url, asset, tags=TICK)
print(json.dumps({"run_id": result.run_id, "success": result.success,
                  "failure": failure_text(result), "seconds": time.monotonic() - started}))
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One ledger shared by every process of a test: an SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared' / 'ledger.sqlite'}"
    return postgres_server.new_database(request.getfixturevalue("postgres_server_url"))


def _env(home: Path, ledger_url: str, claim_timeout: float = 120) -> dict[str, str]:
    return {
        **os.environ,
        "LINE_EXPORTS_HOME": str(home),
        "LINE_EXPORTS_LEDGER_URL": ledger_url,
        "LINE_EXPORTS_CLAIM_TIMEOUT": str(claim_timeout),
        "PYTHONPATH": str(ROOT),
    }


def _racer(name: str, url: str, go: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", RACER, name, url, str(go)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


@pytest.fixture
def late_server() -> Iterator[LateAnswerServer]:
    """The sandbox server of ``sandbox_server`` with held-back answers (``server.late``)."""
    with LateAnswerServer(Sandbox(rate_scale=100, job_seconds=0.05)) as server:
        yield server


def test_two_runs_of_one_tick_at_once_exactly_one_sends(
    late_server: LateAnswerServer, ledger_url: str, tmp_path: Path
) -> None:
    """The winner's first data request is acted on and its answer held back until, in every
    pair, one run has ended: the loser fails at its claim, never waiting for the winner."""
    sandbox_server = late_server
    held = threading.Event()  # set: the winners' first answers go out
    for name in RACE_CASES:
        case = CASES[name]
        sandbox_server.late.add(case.data_path, case.data_method, 0, times=1, until=held)
    go = tmp_path / "go"
    racers = {
        (name, side): _racer(
            name, sandbox_server.url, go, _env(tmp_path / f"{name}-{side}", ledger_url)
        )
        for name in RACE_CASES
        for side in ("a", "b")
    }
    time.sleep(0.5)
    go.touch()  # every racer has imported Dagster and built its asset: start together
    outcomes: dict[tuple[str, str], dict[str, object]] = {}
    ended_while_held: set[tuple[str, str]] = set()
    try:
        deadline = time.monotonic() + 180
        while not all(racers[(n, "a")].poll() is not None or racers[(n, "b")].poll() is not None
                      for n in RACE_CASES):  # fmt: skip
            assert time.monotonic() < deadline, "in some pair neither run ended: one waited"
            time.sleep(0.05)
        ended_while_held = {key for key, child in racers.items() if child.poll() is not None}
        held.set()
        for key, child in racers.items():
            out, err = child.communicate(timeout=180)
            assert child.returncode == 0, err.decode()[-3000:]
            outcomes[key] = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        held.set()
        for child in racers.values():
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)

    for name in RACE_CASES:
        pair = {side: outcomes[(name, side)] for side in ("a", "b")}
        winners = [o for o in pair.values() if o["success"]]
        losers = [side for side, o in pair.items() if not o["success"]]
        assert len(winners) == 1 and len(losers) == 1, (name, pair)
        text = str(pair[losers[0]]["failure"])
        assert "is already running: held by run " + str(winners[0]["run_id"]) in text, text
        assert "Nothing was sent" in text and " since 20" in text
        # failed at its claim while the winner's first answer was still held back
        assert ended_while_held & {(name, "a"), (name, "b")} == {(name, losers[0])}, name
        assert check_exactly_once(CASES[name], sandbox_server.sandbox) == []

    state = requests.get(f"{sandbox_server.url}/_sandbox/state", timeout=10).json()
    maac = CASES["maac_members"]
    assert state["maac"]["imports"] == -(-maac.valid // 10)  # one run's imports (batches of 10)
    assert state["maac"]["rows_imported"] == maac.valid
    audiences = [k for k in state["line_messaging"]["audiences"] if k.endswith(AUDIENCE)]
    assert len(audiences) == 1, state["line_messaging"]["audiences"]
    segments = [k for k in state["linkedin"]["segments"] if k.startswith(SEGMENT + " (")]
    assert len(segments) == 1, state["linkedin"]["segments"]
    capi = CASES["capi_events"]
    assert state["line_conversion"]["events_received"] == capi.valid
    assert state["line_conversion"]["duplicate_events"] == 0


def test_frozen_holder_is_taken_over_after_its_heartbeat_expires_and_resumed_once(
    sandbox_server: SandboxServer,
    ledger_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    timeout = 8.0  # the second run starts well within it, even on a loaded machine
    case = CASES["maac_members"]
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path=case.data_path, method=case.data_method, delay=0.3, times=-1))
    go = tmp_path / "go"
    go.touch()
    holder = _racer(
        case.name, sandbox_server.url, go, _env(tmp_path / "holder", ledger_url, timeout)
    )
    try:
        deadline = time.monotonic() + 120
        while sandbox.count("POST", case.data_path) < 2:
            assert holder.poll() is None, holder.communicate()[1].decode()[-3000:]
            assert time.monotonic() < deadline, "the holder never sent"
            time.sleep(0.005)
        os.kill(holder.pid, signal.SIGSTOP)  # hung: alive, but no heartbeat any more
        sandbox.clear_faults()
        for name, value in _env(tmp_path / "here", ledger_url, timeout).items():
            monkeypatch.setenv(name, value)

        started = time.monotonic()
        second = materialize(case, sandbox_server.url, build(case), tags=TICK)
        assert not second.success
        text = failure_text(second)
        assert f"(pid {holder.pid})" in text and "is already running" in text, text
        assert time.monotonic() - started < timeout + 30

        time.sleep(timeout + 0.5)  # the frozen holder's heartbeat is now stale
        third = materialize(case, sandbox_server.url, build(case), tags=TICK)
        assert third.success, failure_text(third)
        meta = metadata(third, case.name)
        assert meta["rows_resumed"] > 0  # what the holder recorded was not sent again
        assert meta["rows_accepted"] == case.valid
        assert check_exactly_once(case, sandbox) == []

        imports_after_takeover = len(sandbox.requests)
        os.kill(holder.pid, signal.SIGCONT)  # it wakes up: its claim is gone
        out, err = holder.communicate(timeout=120)
        woke = json.loads(out.decode().strip().splitlines()[-1])
        assert not woke["success"]
        assert "lost its claim" in woke["failure"], woke["failure"]
        # At most the one request it had in flight when frozen; the API's keys absorb it.
        assert len(sandbox.requests) - imports_after_takeover <= 2
        assert check_exactly_once(case, sandbox) == []
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait(timeout=10)


def test_killed_holder_on_this_machine_is_taken_over_without_waiting(
    sandbox_server: SandboxServer, ledger_url: str, tmp_path: Path
) -> None:
    """SIGKILL leaves its claim row behind; its process is provably gone from this machine
    (same boot and PID namespace, no such PID with that start time), so the next run takes
    the scope at once instead of waiting out the heartbeat timeout."""
    case = CASES["capi_events"]
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path=case.data_path, method=case.data_method, delay=0.3, times=-1))
    go = tmp_path / "go"
    go.touch()
    env = _env(tmp_path / "holder", ledger_url, claim_timeout=600)
    holder = _racer(case.name, sandbox_server.url, go, env)
    deadline = time.monotonic() + 120
    while sandbox.count("POST", case.data_path) < 1:
        assert holder.poll() is None, holder.communicate()[1].decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    sandbox.clear_faults()
    rerun = _racer(case.name, sandbox_server.url, go, {**env, "LINE_EXPORTS_HOME": str(tmp_path)})
    out, err = rerun.communicate(timeout=120)
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["success"], result["failure"]
    assert check_exactly_once(case, sandbox) == []


def test_claim_is_released_on_failure_and_names_holder_in_process(tmp_path: Path) -> None:
    """The claim API itself: one holder, a clear refusal, release on close, then free."""
    path = tmp_path / "ledger.sqlite"
    first, second = Ledger(path), Ledger(path)
    first.scope("export", "tick=1").claim(ClaimOwner("run-1", "host-a", 11))
    with pytest.raises(ScopeClaimed) as refused:
        second.scope("export", "tick=1").claim(ClaimOwner("run-2", "host-b", 22))
    assert "held by run run-1 on host-a (pid 11)" in str(refused.value)
    second.scope("export", "tick=2").claim(ClaimOwner("run-2", "host-b", 22))  # other tick: free
    first.close()
    second.scope("export", "tick=1").claim(ClaimOwner("run-2", "host-b", 22))
    second.close()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
