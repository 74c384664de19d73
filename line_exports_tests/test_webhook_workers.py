"""``webhook serve --workers 2``: a SIGKILL of the supervisor takes its workers with it.

Real processes: the CLI is started, its two uvicorn workers are found in /proc, only the
supervisor is SIGKILLed (as the OOM killer or ``kill -9`` would), and then the workers must be
gone and a new ``serve`` on the same port must bind and answer at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

try:  # works whether or not line_exports_tests becomes a package
    from line_exports_tests.webhook_helpers import base_event, body_of, free_port, signed_headers
except ImportError:
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


def _serve(port: int, home: Path, sources: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LINE_CHANNEL_SECRET_SHOP_OA": SECRET}
    cmd = [
        sys.executable, "-m", "line_exports.webhook.cli", "webhook", "serve",
        "--port", str(port), "--workers", "2", "--data-dir", str(home),
        "--sources", str(sources), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return subprocess.Popen(cmd, env=env, start_new_session=True)


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).ok:
                return True
        except requests.ConnectionError:
            time.sleep(0.1)
    return False


def test_sigkill_of_the_supervisor_takes_the_workers_and_a_restart_binds(tmp_path: Path) -> None:
    home = tmp_path / "home"
    source_id = str(uuid.uuid4())
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"sources:\n  - name: shop_oa\n    source_id: {source_id}\n")
    port = free_port()
    first = _serve(port, home, sources)
    second: subprocess.Popen[bytes] | None = None
    workers: list[int] = []
    try:
        assert _wait_healthy(port, first, 60), "receiver did not come up"
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
        second = _serve(port, home, sources)
        assert _wait_healthy(port, second, 60), "restart could not bind"
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
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for pid in workers:  # only if the fix failed: never leave our own orphans behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
