"""Workflows running for real against the sandbox (loopback HTTP, DuckDB sample data): tasks in
order, a ${secret:...} credential that reaches the API but never the run config, and the
``validate`` / ``plan`` / ``run`` commands."""

from __future__ import annotations

import argparse
import io
import re
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from line_exports.sandbox import SandboxServer
from line_exports.workflows import load_folder
from line_exports.workflows.cli import register

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "workflows"

THREE_TASKS = """
timezone: Asia/Tokyo
_export:
  td:
    database: sample_datasets
+import_members:
  td>: members.sql
  result_connection: maac_main
  result_settings:
    data_object: members
    import_key: line_uid
    tags: first, ${td.database}
    batch_size: 1000
+segments:
  _parallel: true
  +vip:
    td>: segment.sql
    result_connection: maac_main
    result_settings: {data_object: segments, segment_name: vip}
  +all:
    td>: segment.sql
    result_connection: maac_main
    result_settings: {data_object: segments, segment_name: all, update_segment: true}
+last:
  td>: segment.sql
  result_connection: maac_main
  result_settings: {data_object: segments, segment_name: last}
"""


@pytest.fixture
def sandbox_env(sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> SandboxServer:
    monkeypatch.setenv("LINE_EXPORTS_SANDBOX_URL", sandbox_server.url)
    return sandbox_server


def make_folder(
    tmp_path: Path, connections: str = "connections:\n  maac_main:\n    type: maac\n", **files: str
) -> Path:
    folder = tmp_path / "wf"
    folder.mkdir(exist_ok=True)
    (folder / "connections.yaml").write_text(connections)
    (folder / "members.sql").write_text("SELECT line_uid, display_name, email FROM line_members\n")
    (folder / "segment.sql").write_text("SELECT line_uid FROM segment_users\n")
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip("\n"))
    return folder


def test_tasks_run_in_order_against_the_sandbox(tmp_path: Path, sandbox_env: SandboxServer) -> None:
    loaded = load_folder(make_folder(tmp_path, **{"three.dig": THREE_TASKS}))
    assert loaded.errors == []
    tasks = {t.name: t for t in loaded.get("three").tasks}
    members = tasks["import_members"].key
    assert tasks["segments.vip"].deps == tasks["segments.all"].deps == [members]  # _parallel group
    assert set(tasks["last"].deps) == {tasks["segments.vip"].key, tasks["segments.all"].key}
    defs = loaded.definitions()
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("three").execute_in_process(instance=instance)
        assert result.success
        steps = {"__".join(t.key.path) for t in tasks.values()}
        order = [  # the exports' steps (each one's results-back checks run after it)
            e.step_key
            for e in result.all_events
            if e.event_type == dg.DagsterEventType.STEP_START and e.step_key in steps
        ]
        assert order[0] == "three__import_members" and order[-1] == "three__last"
        finished = {
            e.step_key: i
            for i, e in enumerate(result.all_events)
            if e.event_type == dg.DagsterEventType.STEP_SUCCESS
        }
        started = {
            e.step_key: i
            for i, e in enumerate(result.all_events)
            if e.event_type == dg.DagsterEventType.STEP_START
        }
        assert finished["three__import_members"] < started["three__segments__vip"]
        assert (
            max(finished["three__segments__vip"], finished["three__segments__all"])
            < started["three__last"]
        )
        meta = result.asset_materializations_for_node("three__import_members")[0].metadata
        assert (
            meta["rows_read"].value == 3000 and meta["import_tasks"].value == 3
        )  # batch_size 1000
    sandbox = sandbox_env.sandbox
    paths = [(r.method, r.path) for r in sandbox.requests]
    imports = [
        i
        for i, (m, p) in enumerate(paths)
        if m == "POST" and p.startswith("/openapi/v1/member/import")
    ]
    segments = [
        i
        for i, (m, p) in enumerate(paths)
        if m in ("POST", "PATCH") and p.startswith("/openapi/v1/custom_segment")
    ]
    assert len(imports) == 3 and len(segments) == 3 and max(imports) < min(segments)


def test_secret_reaches_the_api_and_never_the_run_config(
    tmp_path: Path, sandbox_env: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAAC_WF_SANDBOX_URL", sandbox_env.url)
    monkeypatch.setenv("MAAC_WF_TOKEN", "sandbox-maac-token")
    connections = (
        "connections:\n  maac_main:\n    type: maac\n    base_url_env: MAAC_WF_SANDBOX_URL\n"
    )
    folder = make_folder(
        tmp_path,
        connections,
        **{
            "secret.dig": """
        +seg:
          td>: segment.sql
          result_connection: maac_main
          result_settings:
            api_token: ${secret:maac.wf_token}
            data_object: segments
            segment_name: with secret
    """
        },
    )
    defs = load_folder(folder).definitions()
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("secret").execute_in_process(instance=instance)
        assert result.success
        stored = instance.get_run_by_id(result.run_id)
        assert "sandbox-maac-token" not in repr(
            stored.run_config
        ) and "sandbox-maac-token" not in repr(stored.tags)
    assert (
        sandbox_env.sandbox.count("POST", "/openapi/v1/custom_segment", 201)
        + sandbox_env.sandbox.count("POST", "/openapi/v1/custom_segment", 200)
        == 1
    )
    # A wrong token is refused by the sandbox: the token really is the one sent.
    monkeypatch.setenv("MAAC_WF_TOKEN", "wrong-token")
    defs = load_folder(folder).definitions()
    with dg.instance_for_test() as instance:
        assert (
            not defs.resolve_job_def("secret")
            .execute_in_process(instance=instance, raise_on_error=False)
            .success
        )


def cli(*args: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="line-exports")
    register(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(list(args))
    out = io.StringIO()
    code = ns.func(ns, out=out)
    return code, out.getvalue()


def test_cli_validate_reports_errors_and_loads_the_rest(tmp_path: Path) -> None:
    folder = make_folder(
        tmp_path,
        **{
            "ok.dig": "+t:\n  td>: segment.sql\n  result_connection: maac_main\n  result_settings: {data_object: segments, segment_name: s}\n",
            "bad.dig": "+t:\n  td>: segment.sql\n  result_connection: maac_main\n  result_settings: {data_object: segment, segment_name: s}\n",
        },
    )
    code, out = cli("validate", "--workflows", str(folder))
    assert code == 1
    assert (
        "bad.dig:4, task +t, setting result_settings.data_object: 'segment': Input should be 'members' or 'segments'"
        in out
    )
    assert re.search(r"ok\.dig\s+ok\s+1", out) and re.search(r"bad\.dig\s+error", out)
    assert "1 workflow(s) loaded, 1 error(s)" in out
    code, out = cli("validate", "--workflows", str(EXAMPLES))
    assert code == 0 and "maac_daily.dig" in out and "daily> 07:10:00" in out


def test_cli_plan_sends_nothing(tmp_path: Path, sandbox_env: SandboxServer) -> None:
    folder = make_folder(tmp_path, **{"three.dig": THREE_TASKS})
    code, out = cli("plan", "three", "--workflows", str(folder), "--preview", "2")
    assert code == 0
    assert (
        "three/import_members: read 3,000, valid 2,940, rejected 60 -> maac members by line_uid via maac_main"
        in out
    )
    assert "line_uid: pattern=30" in out and "plan only: nothing was sent" in out
    assert "| " not in out and "segments.vip" in out
    assert sandbox_env.sandbox.count() == 0


def test_cli_plan_of_a_workflow_that_did_not_load_prints_its_error(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, **{"broken.dig": "+a:\n  echo>: [unclosed\n"})
    code, out = cli("plan", "broken", "--workflows", str(folder))
    assert code == 2
    assert "broken.dig" in out and "error: no loaded workflow 'broken'" in out
    assert "Traceback" not in out


def test_cli_run_runs_the_example_with_summary(tmp_path: Path, sandbox_env: SandboxServer) -> None:
    with dg.instance_for_test() as instance:
        parser = argparse.ArgumentParser()
        register(parser.add_subparsers(required=True))
        ns = parser.parse_args(["run", "maac_crescendo", "--workflows", str(EXAMPLES)])
        out = io.StringIO()
        assert ns.func(ns, out=out, instance=instance) == 0
    text = out.getvalue()
    assert "running maac_crescendo.dig: 1 task(s) in order: td-result-into-line" in text
    assert (
        "td-result-into-line  ok      3,000  2,880       120  2,880        0       0        0     2,880"
        in text
    )
    assert "succeeded" in text
    assert sandbox_env.sandbox.count("POST", "/openapi/v1/member/import/") == 1
    code, text = cli("run", "nope", "--workflows", str(EXAMPLES))
    assert code == 2 and "no loaded workflow 'nope'" in text
