"""A run stopped by SIGINT / SIGTERM while it reads and validates its rows (before sending
anything) says so, with counts that add up, keeps its rejects file, and is not retried by the
export's RetryPolicy (Dagster turns an interrupt into a retry by default): the real
``line-exports run`` in a child process, signalled once its log says it is validating.

Shared helpers (a workflow folder per destination, the child process, the run table) are used
by the other ``test_interrupt_*`` files."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from line_exports.rules import ROW_NUMBER
from line_exports.sandbox import SandboxServer
from line_exports_tests.cli_helpers import CLI

COLUMNS = (
    "read",
    "valid",
    "rejected",
    "sent",
    "refused",
    "unsent",
    "unknown",
    "accepted",
    "requests",
)
OUTCOMES = ("rejected", "refused", "unsent", "unknown", "accepted")
HEX_ID = "'U' || lpad(printf('%x', range + 4096), 32, '0')"
RETRY_WAIT_SCALE = "LINE_EXPORTS_RETRY_WAIT_SCALE"  # the suite's shorter HTTP retry waits
BAD_EVERY = 997  # one row in BAD_EVERY is invalid: rejected before sending
RICH_MENU = "richmenu-" + "a" * 32  # made in the sandbox by the test (test_line_rich_menu)


@dataclass(frozen=True)
class Export:
    """One destination's export as a .dig task: its connection, query columns and settings."""

    connection: str
    select: str
    settings: str


def exports(url: str) -> dict[str, Export]:
    """CAPI, MAAC (members, a segment), LinkedIn, LINE push and rich menu exports against the
    sandbox at
    ``url``; each query
    makes one row in :data:`BAD_EVERY` invalid for its destination."""
    bad = f"range % {BAD_EVERY} = 5"
    return {
        "capi": Export(
            f"    type: line_conversion\n    line_tag_id: stoptag\n    base_url: {url}\n",
            "'k' || range AS deduplication_key, "
            f"CASE WHEN {bad} THEN 'nope' ELSE 'conversion' END AS event_type, "
            "'web' AS source_type, CAST(epoch(now()) AS BIGINT) - 60 AS event_timestamp, "
            "'x' || range AS external_id",
            "    ignore_invalid_records: true\n    max_records: 1000\n",
        ),
        "maac": Export(
            f"    type: maac\n    base_url: {url}\n    poll_seconds: 0.05\n",
            f"CASE WHEN {bad} THEN 'bad' ELSE {HEX_ID} END AS line_uid, 'n' || range AS name",
            "    data_object: members\n    import_key: line_uid\n    tags: stop\n"
            "    skip_invalid_records: true\n"
            "    batch_size: 500\n",
        ),
        "maac_segment": Export(
            f"    type: maac\n    base_url: {url}\n    poll_seconds: 0.05\n",
            f"CASE WHEN {bad} THEN 'bad' ELSE {HEX_ID} END AS line_uid",
            "    data_object: segments\n    segment_name: stop_segment\n",
        ),
        "linkedin": Export(
            f"    type: linkedin\n    api_url: {url}\n    new_segment_wait: 0\n",
            f"CASE WHEN {bad} THEN 'not-an-email' ELSE 'u' || range || '@example.com' END AS email",
            "    ad_account_id: '512345678'\n    segment_name: stop_vip\n"
            "    ignore_invalid_records: true\n    batch_size: 500\n",
        ),
        "rich_menu": Export(
            f"    type: line_messaging\n    base_url: {url}\n",
            f"CASE WHEN {bad} THEN 'bad' ELSE {HEX_ID} END AS id, '{RICH_MENU}' AS rich_menu",
            "    target: rich_menu\n    skip_invalid_message: true\n",
        ),
        "push": Export(
            f"    type: line_messaging\n    base_url: {url}\n",
            f"CASE WHEN {bad} THEN 'bad' ELSE {HEX_ID} END AS id, 'n' || range AS name",
            "    target: push_message\n    skip_invalid_message: true\n"
            """    template_message: '{"type": "text", "text": "hi {{name}}"}'\n""",
        ),
    }


def workflow(folder: Path, task: str, export: Export, rows: int, retry: int = 2) -> None:
    """``folder/TASK.dig``: one ``td>`` task of ``rows`` rows to ``export``, with digdag's
    ``_retry: RETRY`` (a Dagster RetryPolicy of that many retries, 1 s apart)."""
    (folder / "queries").mkdir(parents=True)
    (folder / "queries" / "q.sql").write_text(f"SELECT {export.select} FROM range({rows})\n")
    (folder / "connections.yaml").write_text(f"connections:\n  dest:\n{export.connection}")
    (folder / f"{task}.dig").write_text(
        f"timezone: UTC\n+{task}:\n  td>: queries/q.sql\n"
        f"  _retry:\n    limit: {retry}\n    interval: 1\n"
        "  result_connection: dest\n  result_settings:\n"
        f"{export.settings}    max_retry: 1\n    initial_retry_wait: 1\n"
    )


@dataclass
class Stopped:
    code: int
    out: str
    err: str
    seconds: float  # from the first signal to the child's exit

    @property
    def text(self) -> str:
        return self.out + self.err


def run_and_signal(
    task: str,
    folder: Path,
    ready: Callable[[str], bool],
    signals: list[signal.Signals],
    gap: float = 0.0,
    timeout: float = 90,
    real_waits: bool = False,
) -> Stopped:
    """``line-exports run TASK`` in a child process (its own process group, as a terminal's
    job), sent ``signals`` ``gap`` seconds apart once ``ready(stderr so far)`` holds;
    ``real_waits``: its HTTP retry waits at their real length (not scaled down for tests)."""
    env = {k: v for k, v in os.environ.items() if not real_waits or k != RETRY_WAIT_SCALE}
    child = subprocess.Popen(
        [str(CLI), "run", task, "--workflows", str(folder)],
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=lambda s=s, into=into: into.extend(s), daemon=True)
        for s, into in ((child.stdout, out), (child.stderr, err))
    ]
    for reader in readers:
        reader.start()
    try:
        started = time.monotonic()
        while not ready("".join(err)) and time.monotonic() - started < timeout:
            assert child.poll() is None, "the run ended before it was signalled:\n" + "".join(
                out + err
            )
            time.sleep(0.02)
        assert ready("".join(err)), "never ready:\n" + "".join(out + err)
        signalled = time.monotonic()
        for i, signo in enumerate(signals):
            if i:
                time.sleep(gap)
            os.killpg(child.pid, signo)
        child.wait(timeout=timeout)
        seconds = time.monotonic() - signalled
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        for reader in readers:
            reader.join(timeout=10)
    return Stopped(child.returncode, "".join(out), "".join(err), seconds)


def table_row(out: str, task: str) -> dict[str, int]:
    """The run table's counts of ``task``."""
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("task "))
    row = next(line for line in lines if line.startswith(task + " "))
    cells = dict(zip(header.split(), row.split(), strict=True))
    return {c: int(cells[c].replace(",", "")) for c in COLUMNS}


def rejects_file(folder: Path) -> Path:
    """The one rejects file a run under ``folder``'s data directory wrote."""
    found = list(folder.rglob("rejects.csv"))
    assert len(found) == 1, found
    return found[0]


def validating(err: str) -> bool:
    """The run's log says it is validating (logged every 5 s while it reads)."""
    return "rejected so far" in err


@pytest.mark.parametrize(
    ("kind", "signo"),
    [
        ("capi", signal.SIGINT),
        ("maac", signal.SIGTERM),
        ("linkedin", signal.SIGINT),
        ("push", signal.SIGTERM),
    ],
)
def test_signal_while_reading_stops_the_run_with_its_counts_not_retried(
    sandbox_server: SandboxServer,
    tmp_path: Path,
    line_exports_home: Path,
    kind: str,
    signo: signal.Signals,
) -> None:
    data = line_exports_home
    folder = tmp_path / "wf"
    task = f"{kind}_read_stop"
    workflow(folder, task, exports(sandbox_server.url)[kind], rows=30_000_000)
    ran = run_and_signal(task, folder, validating, [signo])
    assert ran.code != 0, ran.text
    assert ran.seconds < 30, (ran.seconds, ran.text)  # stopped, not retried (nor read on)
    assert "RETRY" not in ran.err.upper().replace("MAX_RETRY", ""), ran.err  # no step retry
    counts = table_row(ran.out, task)
    assert counts["read"] > 0 and counts["rejected"] > 0, ran.out
    assert counts["read"] == sum(counts[c] for c in OUTCOMES), ran.out
    assert counts["unsent"] == counts["read"] - counts["rejected"], ran.out
    assert counts["sent"] == counts["accepted"] == counts["requests"] == 0, ran.out
    assert f"stopped by {signo.name} before sending anything" in ran.text, ran.text
    assert f"of {counts['read']:,} rows read so far" in ran.text, ran.text
    with open(rejects_file(data), newline="", encoding="utf-8") as f:
        rejected = {row[ROW_NUMBER] for row in csv.DictReader(f)}
    assert len(rejected) == counts["rejected"], (len(rejected), counts)
    assert not list(data.rglob("valid.parquet"))  # the spool of valid rows is gone
