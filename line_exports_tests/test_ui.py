"""The Dagster UI, as a person uses it: materialize an export from the asset page in headless
Chromium, then see the row counts and the rejects preview there. Keeps a screenshot in
``test-artifacts/``."""

from __future__ import annotations

import os
import shutil
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
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "LINE_EXPORTS_SANDBOX_URL": sandbox_server.url,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", str(REPO / "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
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
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def _location_loaded(url: str) -> bool:
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
    body = requests.post(f"{url}/graphql", json={"query": query}, timeout=5).json()
    entries = body["data"]["workspaceOrError"]["locationEntries"]
    return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)


def _latest_run_status(url: str) -> str | None:
    query = "{ runsOrError(limit: 1) { ... on Runs { results { status } } } }"
    runs = requests.post(f"{url}/graphql", json={"query": query}, timeout=5).json()["data"]["runsOrError"]
    return runs["results"][0]["status"] if runs["results"] else None


def test_materialize_from_the_asset_page_shows_counts_and_rejects(dagster_ui: str) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{dagster_ui}/assets/maac_members", wait_until="networkidle")
        skip = page.get_by_role("button", name="Skip")  # Dagster's first-visit community dialog
        if skip.count():
            skip.first.click()
        page.get_by_role("button", name="Materialize").first.click()
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline:
            status = _latest_run_status(dagster_ui)
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(1)
        assert status == "SUCCESS", f"the run launched from the UI ended {status}"
        page.goto(f"{dagster_ui}/assets/maac_members", wait_until="networkidle")
        page.get_by_text("rows_rejected").first.wait_for(timeout=30_000)
        text = page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "ui_maac_members.png"), full_page=True)
        browser.close()
    for label in ("rows_read", "rows_valid", "rows_rejected", "rows_accepted", "rejects_preview"):
        assert label in text, label
    assert "2,880" in text or "2880" in text  # valid members accepted by the sandbox
