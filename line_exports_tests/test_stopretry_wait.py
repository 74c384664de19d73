"""Ctrl-C / SIGTERM while a failed step attempt waits for the RetryPolicy's next one
(VERIFY-13k F6, :mod:`line_exports.retry_wait`).

Dagster waited the delay out in its own loop (30 s, then 90 s by default), started the step
again, and the run ended as a bare ``DagsterExecutionInterruptedError``: no counts, no "stopped
by SIGINT", no observation. Now the attempt waits itself and a signal ends the run at once with
that attempt's counts. Real ``line-exports run`` in a child process (``_retry`` with an
interval), HTTP to the sandbox, real signals; and a real Dagster run that is not signalled
still starts its next attempt after the delay, once.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from line_exports import LineMessagingResource, build_export
from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.line_messaging import store_of
from line_exports.sources import SqlSource
from line_exports_tests.test_interrupt_reading import (
    HEX_ID,
    OUTCOMES,
    run_and_signal,
    table_row,
)

ROWS = 20
CONCURRENCY = 4
INTERVAL = 30  # the step retry's delay: the test must end long before it
PUSH = "/v2/bot/message/push"


def _workflow(folder: Path, url: str) -> None:
    (folder / "queries").mkdir(parents=True)
    (folder / "queries" / "q.sql").write_text(
        f"SELECT {HEX_ID} AS id, 'n' || range AS name FROM range({ROWS})\n"
    )
    (folder / "connections.yaml").write_text(
        f"connections:\n  line:\n    type: line_messaging\n    base_url: {url}\n"
    )
    (folder / "push_wait.dig").write_text(
        "timezone: UTC\n+push_wait:\n  td>: queries/q.sql\n"
        f"  _retry:\n    limit: 2\n    interval: {INTERVAL}\n"
        "  result_connection: line\n  result_settings:\n    target: push_message\n"
        """    template_message: '{"type": "text", "text": "hi {{name}}"}'\n"""
        f"    push_concurrency: {CONCURRENCY}\n    max_retry: 1\n    initial_retry_wait: 1\n"
    )


@pytest.mark.parametrize("signo", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_step_waits_to_retry_stops_the_run_with_its_counts(
    sandbox_server: SandboxServer, tmp_path: Path, signo: signal.Signals
) -> None:
    """Every push answered 500 with LINE delivering: the first attempt's 4 pushes (2 HTTP
    attempts each) are of unknown delivery, the 16 rows behind them never sent; the step then
    waits 30 s for its next attempt, and the signal comes during that wait."""
    sandbox = sandbox_server.sandbox
    fault = sandbox.add_fault(Fault(path=PUSH, status=500, act=True, times=-1))
    folder = tmp_path / "wf"
    _workflow(folder, sandbox_server.url)
    seen: dict[str, float] = {}

    def waiting(err: str) -> bool:
        """The step waits for its next attempt: its warning came half a second ago, or (as
        before the fix, when Dagster waited without a word) 5 s have passed since the
        attempt's last push."""
        now = time.monotonic()
        if "the next starts in" in err:
            seen.setdefault("warned", now)
        if fault.hits >= 2 * CONCURRENCY:
            seen.setdefault("pushed", now)
        return now - seen.get("warned", now) > 0.5 or now - seen.get("pushed", now) > 5

    stopped = run_and_signal("push_wait", folder, waiting, [signo], timeout=120)
    at_signal = fault.hits
    text = stopped.text
    assert stopped.code == 1, text
    # at once, not after the 30 s delay; no second attempt, nothing sent after the signal
    assert stopped.seconds < INTERVAL - 10, (stopped.seconds, text)
    assert "attempt # 2" not in text and "STEP_RESTARTED" not in text, text
    assert fault.hits == at_signal == 2 * CONCURRENCY, text
    counts = table_row(stopped.out, "push_wait")
    assert counts["read"] == ROWS == sum(counts[c] for c in OUTCOMES), text
    held = sum(len(v) for v in store_of(sandbox).inbox.values())
    assert counts["unknown"] == held == CONCURRENCY, (counts, held, text)
    assert counts["unsent"] == ROWS - CONCURRENCY and counts["accepted"] == 0, text
    row = next(line for line in stopped.out.splitlines() if line.startswith("push_wait "))
    assert row.split()[1] == "stopped", text  # the status column (it said "failed")
    # the final failure (the CLI's error line) names the signal, the counts and the cause
    error = next(line for line in stopped.out.splitlines() if line.startswith("error in "))
    assert f"stopped by {signo.name} between step attempts" in error, error
    assert f"of {ROWS} rows read, 0 accepted, 0 refused by the API, {CONCURRENCY} of " in error
    assert f"{ROWS - CONCURRENCY} never sent" in error, error
    assert "step attempt 1 of 3 had failed" in error and "answered 500" in error, error
    assert "Traceback" not in stopped.err, stopped.err


def test_an_unsignalled_step_retry_waits_its_delay_once_and_resumes(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """The step waits the policy's delay itself, then Dagster starts the next attempt at once:
    the delay is waited once (not again by Dagster), the retry resumes from the ledger, and
    the counts add up."""
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path=PUSH, status=500, act=True, times=2 * CONCURRENCY))
    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(
            f"create table t as select {HEX_ID} as id, 'n' || range as name from range({ROWS})"
        )
    delay = 3
    asset = build_export(
        "push_retry_wait",
        destination="line_messaging",
        query="select * from t",
        settings={
            "target": "push_message",
            "template_message": json.dumps({"type": "text", "text": "hi {{name}}"}),
            "push_concurrency": CONCURRENCY,
            "max_retry": 1,
            "initial_retry_wait": 1,
        },
        retry_policy=dg.RetryPolicy(max_retries=1, delay=delay),
    )
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [asset],
        instance=instance,
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            "line_messaging": LineMessagingResource(base_url=sandbox_server.url),
        },
        raise_on_error=False,
    )
    events = result.all_events
    kinds = [e.event_type_value for e in events]
    assert kinds.count("STEP_UP_FOR_RETRY") == 1 and kinds.count("STEP_RESTARTED") == 1, kinds
    up = next(e for e in events if e.event_type_value == "STEP_UP_FOR_RETRY")
    assert not up.step_retry_data.seconds_to_wait  # waited by the step, not again by Dagster
    assert "LINE push failed" in (up.step_retry_data.error.cause.message or ""), up
    logs = instance.all_logs(result.run_id)
    warned = next(r for r in logs if "the next starts in 3 s" in (r.user_message or ""))
    restarted = next(
        r for r in logs if r.dagster_event and r.dagster_event.event_type_value == "STEP_RESTARTED"
    )
    # the delay, once: from the failed attempt's warning to the next attempt
    assert delay <= restarted.timestamp - warned.timestamp < 2 * delay, (warned, restarted)
    materialized = result.get_asset_materialization_events()
    assert result.success and materialized, kinds
    meta = {
        k: getattr(v, "value", v)
        for k, v in materialized[0].step_materialization_data.materialization.metadata.items()
    }
    assert (
        meta["rows_read"]
        == ROWS
        == sum(
            meta[f"rows_{c}"] for c in ("rejected", "refused_by_api", "unsent", "delivery_unknown")
        )
        + meta["rows_accepted"]
    ), meta
    inbox = store_of(sandbox).inbox
    # LINE acted on the 500s; the retry resumed: every recipient got its message once
    assert len(inbox) == ROWS and all(len(v) == 1 for v in inbox.values()), inbox
