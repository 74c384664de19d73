"""The Dagster UI, as a person uses it: materialize an export from the asset page in headless
Chromium, then see the row counts and the rejects preview there. Keeps a screenshot in
``test-artifacts/``."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from line_exports.sandbox import SandboxServer

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

ASSET = "maac_crescendo/td_result_into_line"  # the MAAC reference workflow in examples/workflows
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs Chromium from the system packages (Debian: apt-get install chromium); .ci/run installs it",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dagster_ui(tmp_path: Path, sandbox_server: SandboxServer) -> Iterator[str]:
    """``dagster dev`` on the example project, its sandbox pointed at this test's sandbox."""
    with _dagster_dev(tmp_path, REPO / "workspace.yaml", REPO, sandbox_server.url) as url:
        yield url


@contextlib.contextmanager
def _dagster_dev(
    tmp_path: Path, workspace: Path, cwd: Path, sandbox_url: str, log: Path | None = None
) -> Iterator[str]:
    """``dagster dev -w workspace`` on a free port until the code locations have loaded;
    its output goes to ``log`` when given."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "LINE_EXPORTS_SANDBOX_URL": sandbox_url}
    output = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-w",
            str(workspace),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=cwd,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/server_info", timeout=1).ok and _location_loaded(url):
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("dagster dev did not load the example code locations within 120 s")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a slow shutdown: its code servers and daemon too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        if log:
            output.close()  # type: ignore[union-attr]


def _location_loaded(url: str) -> bool:
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
    body = requests.post(f"{url}/graphql", json={"query": query}, timeout=5).json()
    entries = body["data"]["workspaceOrError"]["locationEntries"]
    return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)


def _graphql(url: str, query: str, variables: dict[str, object] | None = None) -> dict:
    answer = requests.post(
        f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=10
    )
    answer.raise_for_status()
    return answer.json()["data"]


def _runs(url: str) -> list[dict]:
    query = "{ runsOrError(limit: 10) { ... on Runs { results { runId status } } } }"
    return _graphql(url, query)["runsOrError"]["results"]


def _wait_for_run(url: str, known: set[str]) -> dict:
    """The first run not in ``known``, once it has ended."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        new = [r for r in _runs(url) if r["runId"] not in known]
        if new and new[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return new[0]
        time.sleep(1)
    pytest.fail("the run launched from the UI did not end within 180 s")


def _run_log_messages(url: str, run_id: str) -> list[str]:
    query = """query Logs($runId: ID!) { logsForRun(runId: $runId) {
        ... on EventConnection { events { ... on MessageEvent { message } } } } }"""
    events = _graphql(url, query, {"runId": run_id})["logsForRun"]["events"]
    return [e.get("message") or "" for e in events]


def test_materialize_from_the_asset_page_shows_counts_rejects_progress_and_plots(
    dagster_ui: str,
) -> None:
    """Two materializations of a workflow's export, launched by clicking Materialize: the asset
    page shows the counts and the rejects preview, the run's logs show rows sent so far, and
    the metadata's Plots view draws rows sent and rows rejected over the materializations."""
    from playwright.sync_api import sync_playwright

    # Dagster shows a first-visit community dialog on localhost; mark it seen, as a user would.
    _graphql(dagster_ui, "mutation { setNuxSeen }")
    ARTIFACTS.mkdir(exist_ok=True)
    asset_page = f"{dagster_ui}/assets/{ASSET}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        runs = []
        for _ in range(2):
            known = {r["runId"] for r in _runs(dagster_ui)}
            page.goto(asset_page, wait_until="networkidle")
            page.get_by_role("button", name="Materialize").first.click()
            runs.append(_wait_for_run(dagster_ui, known))
            assert runs[-1]["status"] == "SUCCESS", (
                f"the run launched from the UI ended {runs[-1]['status']}"
            )
        page.goto(asset_page, wait_until="networkidle")
        page.get_by_text("rows_rejected").first.wait_for(timeout=30_000)
        overview = page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "ui_export_asset.png"), full_page=True)
        # The metadata section's Plots view: one chart per numeric entry over materializations.
        page.get_by_role("button", name="Plots").first.click()
        page.locator("canvas").first.wait_for(timeout=30_000)
        plots = page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "ui_export_plots.png"), full_page=True)
        browser.close()
    for label in ("rows_read", "rows_valid", "rows_rejected", "rows_accepted", "rejects_preview"):
        assert label in overview, label
    assert "2,880" in overview or "2880" in overview  # valid members accepted by the sandbox
    assert "rows_sent" in plots and "rows_rejected" in plots
    progress = [
        m for m in _run_log_messages(dagster_ui, runs[-1]["runId"]) if " rows" in m and "sent " in m
    ]
    assert progress and "sent 2,880 of 2,880 rows" in progress[-1], progress


def _masked_defaults(url: str, location: str, job: str) -> list[str]:
    """Secret config fields whose default the launchpad would show (masked) for ``job``."""
    query = """query Schema($selector: PipelineSelector!) {
      runConfigSchemaOrError(selector: $selector) { ... on RunConfigSchema {
        allConfigTypes { ... on CompositeConfigType {
          fields { name isSecret defaultValueAsJson } } } } } }"""
    selector = {
        "repositoryLocationName": location,
        "repositoryName": "__repository__",
        "pipelineName": job,
    }
    types = _graphql(url, query, {"selector": selector})["runConfigSchemaOrError"]
    fields = [f for t in types["allConfigTypes"] for f in t.get("fields") or []]
    assert any(f["isSecret"] for f in fields)  # the schema was read: secrets are there
    return [f["name"] for f in fields if f["isSecret"] and f["defaultValueAsJson"] is not None]


BROKEN_DIG = """timezone: UTC

+members:
  td>: queries/sample.sql
  result_connection: your_connection_name
  result_settings:
    data_object: members
    import_kye: line_uid
    tags: vip
"""


def _browser(pw: object) -> object:
    return pw.chromium.launch(  # type: ignore[attr-defined]
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
    )


def test_a_broken_workflow_stays_visible_with_its_error(
    tmp_path: Path, sandbox_server: SandboxServer
) -> None:
    """A misspelled setting in a .dig: the code location still loads, and where the workflow
    would be the UI shows a job of its name and an asset whose description and failing check
    carry the error (file:line, task, setting, closest name); dagster dev's log says it too."""
    from playwright.sync_api import sync_playwright

    project = tmp_path / "project"
    shutil.copytree(REPO / "examples" / "workflows", project / "workflows")
    (project / "workflows" / "broken_members.dig").write_text(BROKEN_DIG, encoding="utf-8")
    workspace = project / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_file:\n      relative_path: workflows/definitions.py\n"
        "      working_directory: .\n      location_name: workflows\n",
        encoding="utf-8",
    )
    log = tmp_path / "dagster_dev.log"
    error = "unknown setting 'import_kye' for maac (did you mean 'import_key'?)"
    ARTIFACTS.mkdir(exist_ok=True)
    with _dagster_dev(tmp_path, workspace, project, sandbox_server.url, log) as url:
        _graphql(url, "mutation { setNuxSeen }")
        with sync_playwright() as pw:
            browser = _browser(pw)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/assets/broken_members/workflow_error", wait_until="networkidle")
            page.get_by_text("import_kye").first.wait_for(timeout=30_000)
            asset_page = page.inner_text("body")
            page.screenshot(path=str(ARTIFACTS / "ui_broken_workflow.png"), full_page=True)
            page.goto(f"{url}/locations/workflows/jobs/broken_members", wait_until="networkidle")
            page.get_by_text("BROKEN WORKFLOW").first.wait_for(timeout=30_000)
            job_page = page.inner_text("body")
            page.screenshot(path=str(ARTIFACTS / "ui_broken_workflow_job.png"), full_page=True)
            # Launched anyway (by a person or a schedule): the run fails with the error and the
            # workflow_loads check is recorded as failed.
            known = {r["runId"] for r in _runs(url)}
            page.goto(f"{url}/assets/broken_members/workflow_error", wait_until="networkidle")
            page.get_by_role("button", name="Materialize").first.click()
            run = _wait_for_run(url, known)
            page.goto(
                f"{url}/assets/broken_members/workflow_error?view=checks", wait_until="networkidle"
            )
            page.get_by_text("workflow_loads").first.wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "ui_broken_workflow_check.png"), full_page=True)
            browser.close()
        checks = _graphql(
            url,
            """{ assetNodeOrError(assetKey: {path: ["broken_members", "workflow_error"]}) {
                 ... on AssetNode { description
                   assetChecksOrError { ... on AssetChecks { checks { name description
                     executionForLatestMaterialization { status evaluation { success } } } } } } } }""",
        )["assetNodeOrError"]
        messages = "\n".join(_run_log_messages(url, run["runId"]))
        masked = _masked_defaults(url, "workflows", "maac_crescendo")
    assert "BROKEN WORKFLOW broken_members.dig" in asset_page and error in asset_page
    assert "broken_members.dig:8, task +members, setting result_settings.import_kye" in asset_page
    assert "BROKEN WORKFLOW broken_members.dig" in job_page
    assert error in checks["description"]
    [check] = checks["assetChecksOrError"]["checks"]
    assert check["name"] == "workflow_loads" and error in check["description"]
    assert error in log.read_text(encoding="utf-8", errors="replace")
    assert run["status"] == "FAILURE" and error in messages
    assert check["executionForLatestMaterialization"]["evaluation"]["success"] is False
    # The launchpad shows no masked value for a secret that was never set (api_token, url).
    assert masked == [], masked
