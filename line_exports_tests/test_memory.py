"""Memory stays flat as the table grows: 100,000 rows peak within 1.5x of 10,000 rows."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

BENCH = Path(__file__).resolve().parents[1] / "bench" / "maac_memory.py"


@pytest.fixture
def sandbox_process(tmp_path: Path) -> Iterator[str]:
    """The sandbox in its own process, so the export's memory is measured alone."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "line_exports.sandbox", "--port", str(port), "--rate-scale", "100"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if requests.get(f"{url}/_sandbox/health", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def measure(rows: int, url: str, home: Path) -> dict[str, float]:
    env = {**os.environ, "LINE_EXPORTS_HOME": str(home)}
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--rows",
            str(rows),
            "--sandbox-url",
            url,
            "--chunk-size",
            "10000",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_peak_memory_of_100k_rows_within_1_5x_of_10k(sandbox_process: str, tmp_path: Path) -> None:
    small = measure(10_000, sandbox_process, tmp_path / "a")
    large = measure(100_000, sandbox_process, tmp_path / "b")
    # The sample rows carry 3% deliberate mistakes; every valid row must be accepted.
    assert small["rows_accepted"] == small["rows_valid"] == 9_700
    assert large["rows_accepted"] == large["rows_valid"] == 97_000
    assert large["import_requests"] == 10
    assert large["peak_rss_mb"] <= 1.5 * small["peak_rss_mb"], (small, large)
