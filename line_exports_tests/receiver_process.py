"""``line-exports webhook serve`` as a real process, for the tests that need one (crash, worker
and slow-client tests): started in its own process group, awaited until ``/healthz`` answers,
killed with its workers at the end."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import requests

SECRET_ENV = "LINE_CHANNEL_SECRET_SHOP_OA"


def write_sources(path: Path, source_id: str, name: str = "shop_oa") -> Path:
    """A sources file with one source (its secret in ``LINE_CHANNEL_SECRET_<NAME>``)."""
    path.write_text(f"sources:\n  - name: {name}\n    source_id: {source_id}\n")
    return path


def start_receiver(
    port: int,
    home: Path,
    sources: Path,
    secret: str,
    workers: int = 1,
    nofile: int | None = None,
    extra: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """``webhook serve`` on ``port``, not waited for; ``nofile`` runs it under ``ulimit -n``
    (soft and hard, as on a host with a low file-handle limit)."""
    argv = [
        sys.executable, "-m", "line_exports.webhook.cli", "webhook", "serve",
        "--port", str(port), "--workers", str(workers), "--data-dir", str(home),
        "--sources", str(sources), "--no-access-log", "--log-level", "warning", *extra,
    ]  # fmt: skip
    if nofile:
        argv = ["sh", "-c", f'ulimit -n {nofile} && exec "$@"', "serve", *argv]
    env = {**os.environ, SECRET_ENV: secret}
    return subprocess.Popen(argv, env=env, start_new_session=True)


def wait_healthy(port: int, proc: subprocess.Popen[bytes], seconds: float = 60) -> bool:
    """Whether ``/healthz`` answered within ``seconds`` (False as soon as the process ended).

    60 s by default: start-up imports are slow on a busy host."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).ok:
                return True
        except requests.ConnectionError:
            time.sleep(0.05)
    return False


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the receiver's whole process group (its workers too) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@contextlib.contextmanager
def served_receiver(
    port: int,
    home: Path,
    sources: Path,
    secret: str,
    workers: int = 1,
    nofile: int | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A receiver that answers ``/healthz``; killed (group and all) when the block ends."""
    proc = start_receiver(port, home, sources, secret, workers=workers, nofile=nofile)
    try:
        if not wait_healthy(port, proc):
            raise RuntimeError("receiver did not come up")
        yield proc
    finally:
        kill(proc)
