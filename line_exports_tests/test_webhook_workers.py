"""``webhook serve --workers 2``: a SIGKILL of the supervisor takes its workers with it.

Real processes: the CLI is started, its two uvicorn workers are found in /proc, only the
supervisor is SIGKILLed (as the OOM killer or ``kill -9`` would), and then the workers must be
gone and a new ``serve`` on the same port must bind and answer at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

try:  # works whether or not line_exports_tests becomes a package
    from line_exports_tests.receiver_process import (
        kill,
        start_receiver,
        wait_healthy,
        write_sources,
    )
    from line_exports_tests.webhook_helpers import base_event, body_of, free_port, signed_headers
except ImportError:
    from receiver_process import kill, start_receiver, wait_healthy, write_sources
    from webhook_helpers import base_event, body_of, free_port, signed_headers

SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigkill_of_the_supervisor_takes_the_workers_and_a_restart_binds(tmp_path: Path) -> None:
    home = tmp_path / "home"
    source_id = str(uuid.uuid4())
    sources = write_sources(tmp_path / "sources.yaml", source_id)
    port = free_port()
    first = start_receiver(port, home, sources, SECRET, workers=2)
    second: subprocess.Popen[bytes] | None = None
    workers: list[int] = []
    try:
        assert wait_healthy(port, first), "receiver did not come up"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(workers) < 2:
            workers = [p for p in _children(first.pid) if _alive(p)]
            time.sleep(0.1)
        assert len(workers) >= 2, workers

        os.kill(first.pid, signal.SIGKILL)  # the supervisor only, not its process group
        first.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.05)
        assert not [p for p in workers if _alive(p)], "workers outlived their supervisor"

        started = time.monotonic()
        second = start_receiver(port, home, sources, SECRET, workers=2)
        assert wait_healthy(port, second), "restart could not bind"
        body = body_of([base_event("follow", 1)])
        resp = requests.post(
            f"http://127.0.0.1:{port}/v1/task/{source_id}",
            data=body,
            headers=signed_headers(SECRET, body),
            timeout=5,
        )
        assert resp.status_code == 200
        assert time.monotonic() - started < 60
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                kill(proc)
        for pid in workers:  # only if the fix failed: never leave our own orphans behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
