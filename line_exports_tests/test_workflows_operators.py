"""digdag operators around the exports, run for real: td> SQL steps (create_table, insert_into,
store_last_results -> ${td.last_results.*}) in the embedded DuckDB file, echo>, fail>, in
digdag's order with the export, and the refusals that name the operator."""

from __future__ import annotations

import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from line_exports import paths
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.maac import MaacStore
from line_exports.session import SESSION_TIME_TAG
from line_exports.workflows import load_folder

STAGED = """
timezone: Asia/Tokyo
_export:
  stage: stage_${session_date_compact}
+stage:
  td>: stage.sql
  create_table: ${stage}
+count:
  td>:
  query: SELECT count(*) AS n, min(line_uid) AS first_uid FROM ${stage}
  store_last_results: true
+say:
  echo>: staged ${td.last_results.n} members on ${session_date} (first ${td.last_results.first_uid})
+export:
  td>: export.sql
  result_connection: maac_main
  result_settings:
    data_object: segments
    segment_name: staged_${td.last_results.n}_${session_date_compact}
+append:
  query: SELECT line_uid FROM segment_users ORDER BY line_uid LIMIT 10
  insert_into: ${stage}
"""


@pytest.fixture
def sandbox_env(sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> SandboxServer:
    monkeypatch.setenv("LINE_EXPORTS_SANDBOX_URL", sandbox_server.url)
    return sandbox_server


def make_folder(tmp_path: Path, **files: str) -> Path:
    folder = tmp_path / "wf"
    folder.mkdir(exist_ok=True)
    (folder / "connections.yaml").write_text("connections:\n  maac_main:\n    type: maac\n")
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip("\n"))
    return folder


def test_sql_steps_last_results_echo_and_export_in_order(
    tmp_path: Path, sandbox_env: SandboxServer
) -> None:
    folder = make_folder(
        tmp_path,
        **{
            "staged.dig": STAGED,
            "stage.sql": "SELECT line_uid FROM segment_users ORDER BY line_uid LIMIT 1200\n",
            "export.sql": "SELECT line_uid FROM ${stage} LIMIT ${td.last_results.n}\n",
        },
    )
    loaded = load_folder(folder)
    assert loaded.errors == []
    workflow = loaded.get("staged")
    assert [s.kind for s in workflow.steps] == ["sql", "sql", "echo", "sql"]
    defs = loaded.definitions()
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("staged").execute_in_process(
            instance=instance, tags={SESSION_TIME_TAG: "2026-11-30T00:00:00+09:00"}
        )
        assert result.success
        order = [  # the tasks' steps (not the export's results-back checks, run after it)
            e.step_key
            for e in result.all_events
            if e.event_type == dg.DagsterEventType.STEP_START
            and not e.step_key.endswith(("_volume", "_results_back"))
        ]
        assert order == [
            "staged__stage",
            "staged__count",
            "staged__say",
            "staged__export",
            "staged__append",
        ]
        stage = result.asset_materializations_for_node("staged__stage")[0].metadata
        assert stage["table"].value == "stage_20261130" and stage["table_rows"].value == 1200
        count = result.asset_materializations_for_node("staged__count")[0].metadata
        first = count["line_exports/last_results"].value
        assert first["n"] == 1200 and first["first_uid"].startswith("U")
        say = result.asset_materializations_for_node("staged__say")[0].metadata
        assert say["message"].value == (
            f"staged 1200 members on 2026-11-30 (first {first['first_uid']})"
        )
        export = result.asset_materializations_for_node("staged__export")[0].metadata
        assert export["rows_read"].value == 1200
        assert export["resolved_settings"].data == {"segment_name": "staged_1200_20261130"}
        append = result.asset_materializations_for_node("staged__append")[0].metadata
        assert append["table_rows"].value == 1210
    with duckdb.connect(str(paths.default_duckdb_path()), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM stage_20261130").fetchone() == (1210,)
    store = sandbox_env.sandbox.store("maac", MaacStore)
    assert [s.name for s in store.segments.values()] == ["staged_1200_20261130"]


def test_fail_stops_the_run_with_its_message(tmp_path: Path) -> None:
    folder = make_folder(
        tmp_path,
        **{
            "stop.dig": """
            +check:
              td>:
              query: SELECT 0 AS n
              store_last_results: true
            +stop:
              fail>: nothing to send for ${session_date} (n=${td.last_results.n})
            +never:
              echo>: not reached
            """
        },
    )
    defs = load_folder(folder).definitions()
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("stop").execute_in_process(
            instance=instance,
            tags={SESSION_TIME_TAG: "2026-11-30T00:00:00+00:00"},
            raise_on_error=False,
        )
        assert not result.success
        failure = next(
            e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE
        )
        assert "+stop+stop: fail>: nothing to send for 2026-11-30 (n=0)" in str(
            failure.event_specific_data.error
        )
        started = {
            e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START
        }
        assert "stop__never" not in started


def test_other_operators_are_refused_naming_them(tmp_path: Path) -> None:
    folder = make_folder(
        tmp_path,
        **{
            "ops.dig": """
            +a:
              sh>: echo hi
            +b:
              echo>: hi
              create_table: t
            +c:
              td>:
              query: SELECT 1
              create_table: "bad name"
            +d:
              _error:
                echo>: failed
              echo>: hi
            +e:
              _parallel:
                limit: 2
              +x:
                echo>: x
            """
        },
    )
    errors = "\n".join(str(e) for e in load_folder(folder).errors)
    assert "ops.dig:2, task +a, setting sh>: 'sh>': the sh> operator is not supported" in errors
    assert (
        "ops.dig:5, task +b, setting create_table: 'create_table' is not an option of echo>"
        in errors
    )
    assert (
        "ops.dig:9, task +c, setting create_table: create_table 'bad name' is not a table name"
        in errors
    )


def test_sql_steps_run_under_the_folders_sql_guard(tmp_path: Path) -> None:
    """A SQL step is the folder's code too: no reading files, no COPY TO, no SET to undo it."""
    folder = make_folder(
        tmp_path,
        **{
            "leak.dig": """
            +read:
              td>:
              query: SELECT * FROM read_text('/etc/hostname')
              create_table: leaked
            """,
            "copy.dig": """
            +copy:
              td>:
              query: COPY (SELECT 1) TO '/tmp/line_exports_copy_test.csv'
            """,
        },
    )
    defs = load_folder(folder).definitions()
    with dg.instance_for_test() as instance:
        for job in ("leak", "copy"):
            result = defs.resolve_job_def(job).execute_in_process(
                instance=instance, raise_on_error=False
            )
            assert not result.success
            failure = next(
                e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE
            )
            assert "disabled" in str(failure.event_specific_data.error).lower(), job
    assert not Path("/tmp/line_exports_copy_test.csv").exists()
