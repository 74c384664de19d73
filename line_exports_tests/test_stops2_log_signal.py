"""Ctrl-C / SIGTERM that arrive while a failed step attempt logs around its RetryPolicy wait
(:mod:`line_exports.retry_wait`): "the next starts in 1 s" before the wait, "waited 1 s; the
step starts again" after it (NOTE-stopretry "Left": a signal there raises inside Dagster's
logging).

The signal comes from inside the logging, at the moment the line is logged: the job has a
Dagster ``@logger`` (as a user's own logger would be) whose handler sends its own process the
signals when it sees the line; blocked while both are sent, they are delivered together, the
second one while the first is being handled (Ctrl-C held down, or Ctrl-C then a SIGTERM). A
real run (``dg.execute_job`` on a persistent instance) in a child process, pushing over HTTP to
the sandbox, which answers every push 500 (LINE delivering): the first attempt's 4 pushes are of
unknown delivery, its 16 other rows never sent.

Whatever the signals hit, the stop is counted: the observation says ``stopped_by`` with the
failed attempt's counts (read = unknown + unsent), the step fails as ``Stopped`` "between step
attempts" with those counts and the attempt's cause, no next attempt starts, and nothing is
printed as a logging error.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from line_exports import LineMessagingResource, SqlSource, build_export
from line_exports.interrupts import STOPPED_BY
from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.line_messaging import store_of
from line_exports_tests.test_stops2_multiprocess import (
    CONCURRENCY,
    PUSH,
    ROOT,
    ROWS,
    dagster_home,
    duckdb_table,
    run_events,
    value,
)

NAME = "push_logsig"
JOB = "push_logsig_job"
DELAY = 1  # the RetryPolicy's delay (the signal comes while the step logs, not during it)

RUN_WORKER = """
import dagster as dg
from line_exports_tests.test_stops2_log_signal import signalled_job

with dg.DagsterInstance.get() as instance:
    dg.execute_job(dg.reconstructable(signalled_job), instance=instance, raise_on_error=False)
"""


class SignalOnLine(logging.Handler):
    """Sends this process $STOPS2_SIGNALS (comma-separated names) the first time a record holds
    $STOPS2_LINE: blocked while all are sent, so they arrive together on unblocking, here,
    inside the logging call."""

    def __init__(self) -> None:
        super().__init__()
        self.fired = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.fired or os.environ["STOPS2_LINE"] not in record.getMessage():
            return
        self.fired = True
        signals = [signal.Signals[n] for n in os.environ["STOPS2_SIGNALS"].split(",")]
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        for signo in signals:
            os.kill(os.getpid(), signo)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)


@dg.logger
def signalling(_: dg.InitLoggerContext) -> logging.Logger:
    log = logging.Logger("signalling", level=logging.DEBUG)
    log.addHandler(SignalOnLine())
    return log


def signalled_job() -> dg.JobDefinition:
    """The export in a one-step in-process job with :func:`signalling` and the console logger;
    its table and sandbox from $STOPS2_DB / $STOPS2_URL."""
    asset = build_export(
        NAME,
        destination="line_messaging",
        query="select * from t",
        settings={
            "target": "push_message",
            "template_message": '{"type": "text", "text": "hi {{name}}"}',
            "push_concurrency": CONCURRENCY,
            "max_retry": 1,
            "initial_retry_wait": 1,
        },
        retry_policy=dg.RetryPolicy(max_retries=2, delay=DELAY),
    )
    job = dg.define_asset_job(
        JOB,
        selection=[asset.key],
        executor_def=dg.in_process_executor,
        config={"loggers": {"signalling": {}, "console": {}}},
    )
    defs = dg.Definitions(
        assets=[asset],
        jobs=[job],
        loggers={"signalling": signalling, "console": dg.colored_console_logger},
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{os.environ['STOPS2_DB']}"),
            "line_messaging": LineMessagingResource(base_url=os.environ["STOPS2_URL"]),
        },
    )
    return defs.resolve_job_def(JOB)


@pytest.mark.parametrize(
    ("line", "signals"),
    [
        ("the next starts in", "SIGINT"),
        ("the next starts in", "SIGINT,SIGTERM"),
        ("the step starts again", "SIGINT"),
        ("the step starts again", "SIGINT,SIGTERM"),
    ],
)
def test_a_signal_while_the_step_logs_around_its_retry_wait_is_a_counted_stop(
    sandbox_server: SandboxServer, tmp_path: Path, line: str, signals: str
) -> None:
    sandbox = sandbox_server.sandbox
    fault = sandbox.add_fault(Fault(path=PUSH, status=500, act=True, times=-1))
    home = dagster_home(tmp_path)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "STOPS2_DB": str(duckdb_table(tmp_path)),
        "STOPS2_URL": sandbox_server.url,
        "STOPS2_LINE": line,
        "STOPS2_SIGNALS": signals,
    }
    worker = subprocess.run(
        [sys.executable, "-c", RUN_WORKER],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    text = worker.stdout + worker.stderr
    assert worker.returncode == 0, text
    records, run = run_events(home, JOB)
    events = [r.dagster_event for r in records if r.dagster_event is not None]
    kinds = [e.event_type_value for e in events]
    assert "STEP_RESTARTED" not in kinds and "STEP_UP_FOR_RETRY" not in kinds, kinds
    assert fault.hits == 2 * CONCURRENCY, text
    assert "Logging error" not in text, text
    (failure,) = [e for e in events if e.is_step_failure]
    error = failure.step_failure_data.error
    assert error is not None
    # the stop's counts (it said "stopped by SIGINT before reading any row", none logged)
    observed = [
        e.asset_observation_data.asset_observation.metadata
        for e in events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert len(observed) == 1, error.message
    meta = {k: value(v) for k, v in observed[0].items()}
    assert meta[STOPPED_BY] in signals.split(","), meta
    held = sum(len(v) for v in store_of(sandbox).inbox.values())
    assert meta["rows_delivery_unknown"] == held == CONCURRENCY, (meta, held)
    assert meta["rows_unsent"] == ROWS - CONCURRENCY and meta["rows_accepted"] == 0, meta
    assert error.cls_name == "Stopped", error
    assert f"stopped by {meta[STOPPED_BY]} between step attempts" in error.message, error
    assert f"of {ROWS} rows read, 0 accepted, 0 refused by the API, {CONCURRENCY} of " in (
        error.message
    ), error
    assert "step attempt 1 of 3 had failed" in error.message, error
    assert "answered 500" in error.message, error
    assert run.is_failure, run.status
