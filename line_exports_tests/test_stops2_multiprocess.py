"""A run on Dagster's multiprocess executor stopped while an export's step waits for its
RetryPolicy's next attempt (:mod:`line_exports.retry_wait`): terminated as Dagster terminates
a run, or its run worker sent SIGTERM / SIGINT.

Dagster terminates a run (``DefaultRunLauncher.terminate``) by marking it CANCELING
(``DagsterInstance.report_run_canceling``) and interrupting its run worker: the run worker's
termination thread sends itself SIGINT (``dagster_shared.ipc.send_interrupt``); its
multiprocess executor, seeing the interrupt, sets each running step's termination event, and
the step process's termination thread sends SIGINT to that process in turn
(``dagster._core.executor.multiprocess``). Here the run worker is a real child process running
the job (``dg.execute_job`` on a persistent instance, a temporary DAGSTER_HOME), its step in
a process of its own, pushing over HTTP to the sandbox, which answers every push 500 (LINE
delivering): the first attempt's 4 pushes are of unknown delivery, its 16 other rows never
sent, and the step waits 30 s for its next attempt when the signal comes.

The step must end at once, with that attempt's counts and cause in the event log (the
observation ``stopped_by`` and the step's failure), and the run end as an interrupted run
(canceled when terminated), never as a crash of the step process ("During multiprocess
execution errors occurred in child processes").
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus, RunsFilter

from line_exports import LineMessagingResource, SqlSource, build_export
from line_exports.interrupts import STOPPED_BY
from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.line_messaging import store_of
from line_exports_tests.test_interrupt_reading import HEX_ID

ROOT = Path(__file__).resolve().parents[1]
ROWS = 20
CONCURRENCY = 4
DELAY = 30  # the RetryPolicy's delay: the step must end long before it
PUSH = "/v2/bot/message/push"
NAME = "push_mp"

RUN_WORKER = """
import dagster as dg
from line_exports_tests.test_stops2_multiprocess import multiprocess_job

with dg.DagsterInstance.get() as instance:
    dg.execute_job(dg.reconstructable(multiprocess_job), instance=instance, raise_on_error=False)
"""


def multiprocess_job() -> dg.JobDefinition:
    """The export as a one-step job on the multiprocess executor (reconstructable by name: the
    step process imports this module); its table and sandbox from $STOPS2_DB / $STOPS2_URL."""
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
        "push_mp_job", selection=[asset.key], executor_def=dg.multiprocess_executor
    )
    defs = dg.Definitions(
        assets=[asset],
        jobs=[job],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{os.environ['STOPS2_DB']}"),
            "line_messaging": LineMessagingResource(base_url=os.environ["STOPS2_URL"]),
        },
    )
    return defs.resolve_job_def("push_mp_job")


def value(v: object) -> object:
    """A metadata entry's plain value."""
    return getattr(v, "value", v)


def duckdb_table(folder: Path) -> Path:
    """A DuckDB file under ``folder`` with table ``t``: :data:`ROWS` LINE user IDs and names."""
    db = folder / "w.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(
            f"create table t as select {HEX_ID} as id, 'n' || range as name from range({ROWS})"
        )
    return db


def dagster_home(folder: Path) -> Path:
    """A persistent Dagster instance's home under ``folder`` (SQLite storage)."""
    home = folder / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


def run_events(home: Path, job: str) -> tuple[list[EventLogEntry], DagsterRun]:
    """The event log of the one run of ``job`` in the instance at ``home``, and the run."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs(RunsFilter(job_name=job))
        return list(instance.all_logs(run.run_id)), run


@pytest.mark.parametrize("how", ["terminated", "worker SIGTERM", "worker SIGINT", "group SIGINT"])
def test_a_multiprocess_run_stopped_while_the_step_waits_to_retry_keeps_its_counts(
    sandbox_server: SandboxServer, tmp_path: Path, how: str
) -> None:
    sandbox = sandbox_server.sandbox
    fault = sandbox.add_fault(Fault(path=PUSH, status=500, act=True, times=-1))
    home = dagster_home(tmp_path)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "STOPS2_DB": str(duckdb_table(tmp_path)),
        "STOPS2_URL": sandbox_server.url,
        "PYTHONUNBUFFERED": "1",
    }
    worker = subprocess.Popen(
        [sys.executable, "-c", RUN_WORKER],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's job
    )
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(worker.stdout or []), daemon=True)
    reader.start()
    try:
        started = time.monotonic()
        while "the next starts in" not in "".join(out) and time.monotonic() - started < 240:
            assert worker.poll() is None, "the run ended before it was stopped:\n" + "".join(out)
            time.sleep(0.05)
        assert "the next starts in" in "".join(out), "never waited:\n" + "".join(out)
        time.sleep(0.5)  # in the wait
        at_signal = fault.hits
        with dg.DagsterInstance.from_config(str(home)) as instance:
            (run,) = instance.get_runs(RunsFilter(job_name="push_mp_job"))
            signalled = time.time()
            if how == "terminated":  # as DefaultRunLauncher.terminate and the run worker do
                instance.report_run_canceling(run)
                os.kill(worker.pid, signal.SIGINT)
            elif how == "group SIGINT":  # Ctrl-C in the terminal: the step process gets it too
                os.killpg(worker.pid, signal.SIGINT)
            else:
                os.kill(worker.pid, getattr(signal, how.split()[1]))
            worker.wait(timeout=60)
            reader.join(timeout=10)
            text = "".join(out)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    records, run = run_events(home, "push_mp_job")
    events = [r.dagster_event for r in records if r.dagster_event is not None]
    kinds = [e.event_type_value for e in events]
    # the step ends at once, not after the 30 s delay (its process then takes its time to end,
    # under load); no second attempt, nothing sent after the signal
    (failure,) = [r for r in records if r.dagster_event and r.dagster_event.is_step_failure]
    assert failure.timestamp - signalled < DELAY - 20, (failure.timestamp - signalled, text)
    assert "STEP_RESTARTED" not in kinds, kinds
    assert fault.hits == at_signal == 2 * CONCURRENCY, text
    # the failed attempt's counts and cause: the observation and the step's failure
    (observed,) = [
        e.asset_observation_data.asset_observation.metadata
        for e in events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    meta = {k: value(v) for k, v in observed.items()}
    # the run worker hands any signal on to its step process as SIGINT (send_interrupt)
    assert meta[STOPPED_BY] == "SIGINT", meta
    held = sum(len(v) for v in store_of(sandbox).inbox.values())
    assert meta["rows_delivery_unknown"] == held == CONCURRENCY, (meta, held)
    assert meta["rows_unsent"] == ROWS - CONCURRENCY and meta["rows_accepted"] == 0, meta
    assert (
        meta["rows_read"]
        == ROWS
        == sum(
            meta[f"rows_{c}"]
            for c in ("rejected", "refused_by_api", "unsent", "delivery_unknown", "accepted")
        )
    ), meta
    error = failure.dagster_event.step_failure_data.error
    assert error.cls_name == "StepStopped", error  # (it was the step process's crash)
    assert f"stopped by {meta[STOPPED_BY]} between step attempts" in error.message, error
    assert f"of {ROWS} rows read, 0 accepted, 0 refused by the API, {CONCURRENCY} of " in (
        error.message
    ), error
    assert "step attempt 1 of 3 had failed" in error.message, error
    assert "answered 500" in error.message, error
    failed = failure.dagster_event.step_failure_data.user_failure_data
    assert failed is not None
    assert {k: value(v) for k, v in failed.metadata.items()} == meta
    # the run ends interrupted (canceled when terminated), not as a crash of the step process
    assert "errors occurred in child processes" not in text, text[-6000:]
    assert "DagsterSubprocessError" not in text, text[-6000:]
    (ended,) = [
        e for e in events if e.event_type_value in ("PIPELINE_CANCELED", "PIPELINE_FAILURE")
    ]
    if how == "terminated":
        assert run.status == DagsterRunStatus.CANCELED, (run.status, ended.message)
        assert ended.message == 'Execution of run for "push_mp_job" canceled.', ended.message
    else:  # as Dagster ends any run its run worker was signalled to stop, unasked
        assert run.status == DagsterRunStatus.FAILURE, run.status
        assert "Execution was interrupted unexpectedly." in (ended.message or ""), ended
