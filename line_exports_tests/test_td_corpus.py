"""The TD-style project corpus (examples/td_corpus): every project loads with
``line-exports validate`` and every workflow runs with ``line-exports run`` against a real
sandbox (and a real SMTP server for mail>), through the CLI's own entry point; what reached the
sandbox is checked per project."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from line_exports.cli import main
from line_exports.sandbox import Sandbox, SandboxServer
from line_exports.sandbox.maac import MaacStore

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "td_corpus"
PROJECTS = sorted(p for p in CORPUS.iterdir() if p.is_dir())

# The sample purchases start 28 days before today (00:00 UTC): the session of the next Tokyo
# day reads the purchases of the day they start (as examples/td_project).
_BASE = datetime.fromtimestamp(int(time.time()) // 86_400 * 86_400 - 28 * 86_400, timezone.utc)
DAY = _BASE.astimezone(timezone(timedelta(hours=9))).date() + timedelta(days=1)
SESSION = f"{DAY.isoformat()}T00:00:00+09:00"
COMPACT = DAY.strftime("%Y%m%d")


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        from email import message_from_bytes, policy

        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def corpus_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for the module: one DuckDB file (sample tables made once) and the
    sandbox's instance token."""
    return tmp_path_factory.mktemp("corpus_home")


@pytest.fixture(autouse=True)
def line_exports_home(corpus_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Replaces conftest's per-test data folder with the module's."""
    monkeypatch.setenv("LINE_EXPORTS_HOME", str(corpus_home))
    monkeypatch.delenv("LINE_EXPORTS_SANDBOX_URL", raising=False)
    return corpus_home


@pytest.fixture(scope="module")
def servers(corpus_home: Path) -> Iterator[tuple[SandboxServer, Inbox, int]]:
    """One sandbox and one SMTP server (loopback, own ports) for the whole corpus."""
    inbox = Inbox()
    port = _free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("LINE_EXPORTS_HOME", str(corpus_home))
            with SandboxServer(Sandbox(rate_scale=100, job_seconds=0.05)) as sandbox:
                yield sandbox, inbox, port
    finally:
        smtp.stop()


@pytest.fixture
def env(
    servers: tuple[SandboxServer, Inbox, int], monkeypatch: pytest.MonkeyPatch
) -> tuple[SandboxServer, Inbox]:
    sandbox, inbox, port = servers
    monkeypatch.setenv("LINE_EXPORTS_SANDBOX_URL", sandbox.url)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for name, value in {"HOST": "127.0.0.1", "PORT": str(port), "TLS": "false"}.items():
        monkeypatch.setenv(f"MAIL_{name}", value)
    inbox.messages.clear()
    return sandbox, inbox


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def maac_segments(sandbox: SandboxServer) -> set[str]:
    return {s.name for s in sandbox.sandbox.store("maac", MaacStore).segments.values()}


EXPECTED_SEGMENTS = {
    "daily_segment": {f"birthday_{DAY.strftime('%Y%m')}"},
    "incremental_purchases": {f"buyers_{COMPACT}"},
    "staging_swap": {f"newsletter_{COMPACT}"},
    "notify_on_error": {f"vip_{COMPACT}"},
    "for_each_audiences": {f"tag_{t}_{COMPACT}" for t in ("vip", "newsletter", "coupon_2026")},
    "if_last_results": {f"recent_buyers_{COMPACT}"},
    "shared_subworkflow": {f"active_{COMPACT}"},
}
"""MAAC segments each project leaves in the sandbox (projects to other APIs: none)."""
EXPECTED_TABLES = {
    "incremental_purchases": {"purchase_history"},
    "staging_swap": {"newsletter_latest"},
    "linkedin_weekly": {f"contacts_{DAY.isocalendar()[0]}W{DAY.isocalendar()[1]:02d}"},
    "shared_subworkflow": {f"active_members_{COMPACT}"},
}
"""Tables each project's SQL and td_ddl> steps leave in the DuckDB file."""


def accepted(out: str) -> dict[str, int]:
    """Rows accepted per export task, from ``line-exports run``'s summary table."""
    rows: dict[str, int] = {}
    lines = out.splitlines()
    for i, line in enumerate(lines):
        header = line.split()
        if header[:2] == ["task", "status"]:
            column = header.index("accepted")
            for row in lines[i + 2 :]:
                cells = row.split()
                if len(cells) != len(header):
                    break
                rows[cells[0]] = int(cells[column].replace(",", ""))
    return rows


def tables() -> set[str]:
    import duckdb

    from line_exports import paths

    with duckdb.connect(str(paths.default_duckdb_path()), read_only=True) as con:
        found = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    return {r[0] for r in found}


@pytest.mark.parametrize("project", PROJECTS, ids=[p.name for p in PROJECTS])
def test_project_validates_and_runs(
    project: Path, env: tuple[SandboxServer, Inbox], capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox, inbox = env
    before = maac_segments(sandbox)
    code, out = cli(capsys, "validate", str(project))
    assert code == 0, out
    assert "0 error(s)" in out
    workflows = sorted(project.glob("*.dig"))
    for dig in workflows:
        code, out = cli(
            capsys, "run", dig.stem, "--workflows", str(project), "--session-time", SESSION
        )
        assert code == 0, out
        sent = accepted(out)
        # An export inside a run-time if> is not a row of run's table (checked in the sandbox)
        assert all(n > 0 for n in sent.values()), out
        assert sent or project.name == "if_last_results", out
    assert EXPECTED_TABLES.get(project.name, set()) <= tables()
    assert maac_segments(sandbox) - before == EXPECTED_SEGMENTS.get(project.name, set())
    if project.name == "notify_on_error":
        [report] = inbox.messages
        assert report["Subject"].startswith("[vip_sync] ")
        assert report["Subject"].endswith(f"VIPs sent for {DAY.isoformat()}")
        assert report["To"] == "crm-oncall@example.com"


def test_error_mail_of_a_failed_run(
    tmp_path: Path, env: tuple[SandboxServer, Inbox], capsys: pytest.CaptureFixture[str]
) -> None:
    """notify_on_error with a minimum no day reaches: the guard fails the run, the _error mail
    carries digdag's ${error.message}, nothing is exported."""
    sandbox, inbox = env
    project = tmp_path / "notify_on_error"
    shutil.copytree(CORPUS / "notify_on_error", project)
    dig = project / "vip_sync.dig"
    dig.write_text(dig.read_text().replace("min_vips: 100", "min_vips: 1000000"))
    before = maac_segments(sandbox)
    code, out = cli(
        capsys, "run", "vip_sync", "--workflows", str(project), "--session-time", SESSION
    )
    assert code == 1, out
    [failed] = inbox.messages
    assert failed["Subject"] == f"[vip_sync] failed for {DAY.isoformat()}"
    body = failed.get_content()
    assert "VIPs (minimum 1000000)" in body and f"Session: {SESSION}" in body
    assert maac_segments(sandbox) == before
