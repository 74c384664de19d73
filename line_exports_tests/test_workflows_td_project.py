"""The TD-style example project (examples/td_project) loads with ``validate`` and runs against
the sandbox: moment dates in _export, last_session_* in a TD_TIME_RANGE query, segments named
per run, SQL steps with store_last_results and echo>."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from line_exports.sandbox import SandboxServer
from line_exports.sandbox.maac import MaacStore
from line_exports.session import SESSION_TIME_TAG
from line_exports.workflows import load_folder

PROJECT = Path(__file__).resolve().parents[1] / "examples" / "td_project"


@pytest.fixture
def sandbox_env(sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> SandboxServer:
    monkeypatch.setenv("LINE_EXPORTS_SANDBOX_URL", sandbox_server.url)
    return sandbox_server


def test_td_project_validates_and_runs(sandbox_env: SandboxServer) -> None:
    loaded = load_folder(PROJECT)
    assert loaded.errors == []
    defs = loaded.definitions()
    # The sample conversion events start 28 days before today (00:00 UTC) and span ~31 hours:
    # the session of the next Tokyo day reads the purchases of the day they start.
    base = datetime.fromtimestamp(int(time.time()) // 86_400 * 86_400 - 28 * 86_400, timezone.utc)
    tokyo = timezone(timedelta(hours=9))
    day = base.astimezone(tokyo).date() + timedelta(days=1)
    session = f"{day.isoformat()}T00:00:00+09:00"
    compact = day.strftime("%Y%m%d")
    with dg.instance_for_test() as instance:
        daily = defs.resolve_job_def("daily_converters").execute_in_process(
            instance=instance, tags={SESSION_TIME_TAG: session}
        )
        assert daily.success
        meta = daily.asset_materializations_for_node("daily_converters__converters")[0].metadata
        yesterday = (day - timedelta(days=1)).isoformat()
        assert meta["resolved_settings"].data == {
            "segment_name": f"converters_{compact}",
            "segment_description": f"purchases on {yesterday} (session {session})",
        }
        assert meta["rows_read"].value > 0
        weekly = defs.resolve_job_def("weekly_buyers").execute_in_process(
            instance=instance, tags={SESSION_TIME_TAG: session}
        )
        assert weekly.success
        count = weekly.asset_materializations_for_node("weekly_buyers__count")[0].metadata
        buyers = count["line_exports/last_results"].value["buyers"]
        report = weekly.asset_materializations_for_node("weekly_buyers__report")[0].metadata
        assert report["message"].value == f"{buyers} buyers in the 7 days before {day.isoformat()}"
        export = weekly.asset_materializations_for_node("weekly_buyers__export")[0].metadata
        assert export["rows_read"].value == buyers > 0
        iso_year, iso_week, _ = day.isocalendar()
        assert export["resolved_settings"].data == {
            "segment_name": f"weekly_buyers_{iso_year}W{iso_week:02d}"
        }
    names = {s.name for s in sandbox_env.sandbox.store("maac", MaacStore).segments.values()}
    assert names == {f"converters_{compact}", f"weekly_buyers_{iso_year}W{iso_week:02d}"}
