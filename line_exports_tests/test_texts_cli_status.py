"""``line-exports run``: a task's status is its own step's (VERIFY-13j J3).

The table matched failed steps by substring, so task ``push`` showed ``failed`` when the task
``push_email`` (step ``w__push_email`` holds ``w__push``) failed, although ``push`` sent its
rows and succeeded.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_messaging.store import store_of
from line_exports_tests.cli_helpers import workflow_folder
from line_exports_tests.test_workflows_run import cli

TASK = """
+{name}:
  td>: queries/{query}
  result_connection: line_messaging_sample
  result_settings:
    target: push_message
    template_message: '{{"type": "text", "text": "Hi {{{{name}}}}"}}'
"""


def uid(n: int) -> str:
    return f"U{n:032x}"


def test_a_task_is_not_failed_by_another_task_whose_name_starts_with_its_name(
    sandbox_server: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``push`` runs and succeeds, then ``push_email``'s query fails (tasks run in order, so
    the failing one comes second): only ``push_email`` is failed."""
    monkeypatch.setenv("LINE_EXPORTS_SANDBOX_URL", sandbox_server.url)
    good = TASK.format(name="push", query="push.sql")
    bad = TASK.format(name="push_email", query="broken.sql")
    rows = ", ".join(f"('{uid(n)}', 'n{n}')" for n in range(1, 4))
    folder = workflow_folder(
        tmp_path,
        {"w": "timezone: UTC\n" + good + bad},
        {
            "push.sql": f"SELECT * FROM (VALUES {rows}) v(id, name)",
            "broken.sql": "SELECT id, name FROM no_such_table",
        },
    )
    code, out = cli("run", "w", "--workflows", str(folder))
    assert code == 1, out
    assert "error in w__push_email" in out, out
    #              task  status read valid rejected sent refused unsent unknown accepted
    assert re.search(r"\npush\s+ok\s+3\s+3\s+0\s+3\s+0\s+0\s+0\s+3\s", out), out
    assert re.search(r"\npush_email\s+failed\s", out), out
    assert store_of(sandbox_server.sandbox).pushes == 3
