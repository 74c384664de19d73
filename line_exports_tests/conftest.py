"""Shared fixtures: a private data folder per test, a real sandbox server on loopback, and a
real PostgreSQL server per test process with a new database per module or test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from line_exports.http import RETRY_WAIT_SCALE
from line_exports.sandbox import Sandbox, SandboxServer
from line_exports_tests.hypothesis_budget import THOROUGH

# HYPOTHESIS_PROFILE=thorough: every property test draws its full count of examples
# (hypothesis_budget.examples); the profile keeps the settings in force (CI's derandomize too).
settings.register_profile(THOROUGH, settings.get_profile(settings.get_current_profile_name()))
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])


@pytest.fixture(autouse=True)
def line_exports_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data folder (DuckDB file, ledger, spools, rejects)."""
    home = tmp_path / "home"
    monkeypatch.setenv("LINE_EXPORTS_HOME", str(home))
    monkeypatch.delenv("LINE_EXPORTS_SANDBOX_URL", raising=False)
    return home


@pytest.fixture(autouse=True)
def short_retry_waits(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff waits of clients of the sandbox (loopback) are 1/20 of the configured ones
    (:data:`line_exports.http.RETRY_WAIT_SCALE`): a fault's retry after the 1 s minimum
    ``initial_retry_wait`` costs 50 ms. Child processes inherit it. A test that times the
    waits, or whose clock depends on them, keeps them whole: ``@pytest.mark.real_retry_waits``."""
    if request.node.get_closest_marker("real_retry_waits") is None:
        monkeypatch.setenv(RETRY_WAIT_SCALE, "0.05")
    else:
        monkeypatch.delenv(RETRY_WAIT_SCALE, raising=False)


@pytest.fixture(autouse=True)
def no_leaked_dagster_state() -> Iterator[None]:
    """Each test starts with no current defs-state storage: Dagster keeps the last instance's in
    a context variable, and a test instance's temporary folder is gone once it is disposed."""
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(None):
        yield


@pytest.fixture
def sandbox_server() -> Iterator[SandboxServer]:
    """A real sandbox (uvicorn on 127.0.0.1, free port) with real rate limits scaled x100
    and asynchronous jobs that finish in 50 ms."""
    with SandboxServer(Sandbox(rate_scale=100, job_seconds=0.05)) as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> Sandbox:
    return sandbox_server.sandbox


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """One real PostgreSQL server per test process (``postgres_server``: initdb + pg_ctl on a
    free loopback port), started on first use and stopped when the session ends; its
    ``postgres`` database's URL. Tests never write to that database: each takes its own from
    :func:`postgres_url` or ``postgres_server.new_database``. Skips, saying why, without
    PostgreSQL."""
    from line_exports_tests import postgres_server

    if reason := postgres_server.why_unavailable():
        pytest.skip(reason)
    with postgres_server.postgres_server() as url:
        yield url


@pytest.fixture(scope="module")
def postgres_url(postgres_server_url: str) -> str:
    """A new empty database on the shared server, one per test module; its URL."""
    from line_exports_tests import postgres_server

    return postgres_server.new_database(postgres_server_url)
