"""One ephemeral Dagster instance per test for the runs a test materializes in this process.

``dg.materialize`` without an instance builds a new ephemeral one per call (in-memory run and
event-log storages created and stamped by alembic: ~90 ms CPU, ~0.3 s under load), so a test of
four runs built four. A deployment keeps one instance across runs; so does a test that passes
``instance=run_instance()``. The instance is the test's: conftest gives each test its own
data folder (``LINE_EXPORTS_HOME``), and a new folder gets a new instance (the previous one
disposed), so no run of another test is ever seen.
"""

from __future__ import annotations

import os

import dagster as dg

_CURRENT: tuple[str, int, dg.DagsterInstance] | None = None


def run_instance() -> dg.DagsterInstance:
    """The ephemeral Dagster instance of this test (of its data folder, in this process)."""
    global _CURRENT
    owner = os.environ.get("LINE_EXPORTS_HOME", "")
    if _CURRENT is not None and (_CURRENT[0], _CURRENT[1]) == (owner, os.getpid()):
        return _CURRENT[2]
    if _CURRENT is not None and _CURRENT[1] == os.getpid():
        _CURRENT[2].dispose()
    _CURRENT = (owner, os.getpid(), dg.DagsterInstance.ephemeral())
    return _CURRENT[2]
