"""The first hour of a new user, through the real ``line-exports`` command (issue 15): each
mistake gets a fast, precise answer."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa

from line_exports import sql_errors
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.maac import summary as maac_summary
from line_exports_tests.cli_helpers import (
    REPO,
    line_exports,
    members_dig,
    segment_dig,
    workflow_folder,
)

MEMBERS_SQL = "SELECT line_uid, display_name, gender, email\nFROM line_members\n"


@pytest.fixture
def sandbox_env(sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> SandboxServer:
    monkeypatch.setenv("LINE_EXPORTS_SANDBOX_URL", sandbox_server.url)
    return sandbox_server


# 1. SQL errors ---------------------------------------------------------------------------


def test_sql_errors_fail_at_once_naming_query_dig_line_task_and_position(
    tmp_path: Path, sandbox_env: SandboxServer
) -> None:
    """An unknown column (the engine's binder) and a syntax error (with translate_sql: false,
    so the engine's parser sees it at run time): no retry, one precise message."""
    folder = workflow_folder(
        tmp_path,
        {
            "column": members_dig(),
            "typo": members_dig("typo.sql", task_options="translate_sql: false"),
        },
        {
            "members.sql": "SELECT line_uid,\n  loyalty\nFROM line_members\n",
            "typo.sql": "SELECT line_uid, display_name\nFORM line_members\n",
        },
    )
    ran = line_exports("run", "column", "--workflows", str(folder))
    assert ran.code == 1, ran.text
    # No retry (the default policy waits 30 s, then 90 s): the run ends at once.
    assert ran.seconds < 60, ran.seconds
    assert "Exceeded max_retries" not in ran.text and "RETRY" not in ran.text
    assert f"{folder / 'column.dig'}:3, task +members" in ran.out
    assert f"query {folder / 'queries' / 'members.sql'}" in ran.out
    assert "the query failed at members.sql line 2, column 3" in ran.out
    assert 'Binder Error: Referenced column "loyalty" not found' in ran.out
    assert "Traceback" not in ran.text and "Stack Trace" not in ran.text

    ran = line_exports("run", "typo", "--workflows", str(folder))
    assert ran.code == 1 and ran.seconds < 60, ran.text
    assert f"{folder / 'typo.dig'}:3, task +members" in ran.out
    assert 'Parser Error: syntax error at or near "line_members"' in ran.out
    assert "LINE 2: FORM line_members" in ran.out and "query line 2" in ran.out
    assert maac_summary(sandbox_env.sandbox)["imports"] == 0


def test_a_syntax_error_caught_by_the_translator_names_the_dig_line_and_the_token(
    tmp_path: Path,
) -> None:
    """With translation on (the default), a typo is found when the workflow loads: the error
    names the query file, line and column, the token and the .dig file:line of the task."""
    folder = workflow_folder(
        tmp_path,
        {"typo": members_dig("typo.sql")},
        {"typo.sql": "SELECT line_uid\nFORM line_members\n"},
    )
    ran = line_exports("validate", str(folder))
    assert ran.code == 1, ran.text
    assert f"{folder / 'queries' / 'typo.sql'}:2" in ran.out, ran.out
    assert "column 17" in ran.out and "near 'line_members'" in ran.out, ran.out
    assert f"the task's td> is at {folder / 'typo.dig'}:4" in ran.out, ran.out


def test_validate_plans_every_query_on_the_source(tmp_path: Path) -> None:
    folder = workflow_folder(
        tmp_path,
        {
            "typo": members_dig(task_options="translate_sql: false"),
            "table": members_dig("table.sql"),
            "column": members_dig("column.sql"),
            "ok": members_dig("ok.sql"),
        },
        {
            "members.sql": "SELECT line_uid\nFORM line_members\n",
            "table.sql": "SELECT line_uid FROM line_memberz",
            "column.sql": "SELECT line_uid,\n  loyalty\nFROM line_members\n",
            "ok.sql": MEMBERS_SQL,
        },
    )
    ran = line_exports("validate", str(folder))  # a folder as positional argument
    assert ran.code == 1, ran.text
    assert f"{folder / 'typo.dig'}:3, task +members: members.sql line 2: Parser Error" in ran.out
    assert (
        f"{folder / 'table.dig'}:3, task +members: table.sql line 1, column 22: Catalog Error: "
        "Table with name line_memberz does not exist!" in ran.out
    )
    assert 'Did you mean "line_members"' in ran.out
    assert (
        f"{folder / 'column.dig'}:3, task +members: column.sql line 2, column 3: Binder Error: "
        'Referenced column "loyalty" not found' in ran.out
    )
    rows = {line.split()[0]: line for line in ran.out.splitlines() if ".dig" in line[:12]}
    assert " ok " in rows["ok.dig"] and "query error" in rows["typo.dig"]
    assert "4 workflow(s) loaded, 3 error(s)" in ran.out


def test_permanent_and_transient_sql_errors_are_told_apart(tmp_path: Path) -> None:
    """Real engine errors: DuckDB's parser/catalog/binder errors and SQLite's 'no such table'
    are permanent; SQLite's 'database is locked' (another writer) is transient."""
    con = duckdb.connect()
    con.execute("create table t (a int)")
    for sql in ("select * form t", "select * from nope", "select b from t"):
        with pytest.raises(duckdb.Error) as caught:
            con.execute(sql)
        assert sql_errors.is_permanent(caught.value), sql
    db = tmp_path / "w.sqlite"
    holder = sqlite3.connect(db)
    holder.execute("create table t (a int)")
    holder.commit()
    engine = sa.create_engine(
        f"sqlite:///{db}", connect_args={"timeout": 0}, poolclass=sa.pool.NullPool
    )
    with engine.connect() as conn, pytest.raises(sa.exc.OperationalError) as caught:
        conn.exec_driver_sql("select * from nope")
    assert sql_errors.is_permanent(caught.value)
    holder.execute("begin exclusive")
    with engine.connect() as conn, pytest.raises(sa.exc.OperationalError) as caught:
        conn.exec_driver_sql("select * from t")
    assert "locked" in str(caught.value)
    assert not sql_errors.is_permanent(caught.value)
    holder.close()


# 3. Unknown columns ------------------------------------------------------------------------


def test_unknown_columns_warn_with_the_closest_known_column(
    tmp_path: Path, sandbox_env: SandboxServer
) -> None:
    sql = (
        "SELECT line_uid, display_name AS line_dispaly_name, gender AS gendr, 'gold' AS loyalty_tier\n"
        "FROM line_members\n"
    )
    folder = workflow_folder(
        tmp_path,
        {"cols": members_dig(), "strict_cols": members_dig(unknown_columns="fail")},
        {"members.sql": sql},
    )
    hint = "unknown column 'line_dispaly_name' is not sent (did you mean 'line_display_name'?)"
    plan = line_exports("plan", "cols", "--workflows", str(folder), "--preview", "0")
    assert plan.code == 0, plan.text
    assert f"warning: {hint}" in plan.out
    assert "unknown column 'gendr' is not sent (did you mean 'gender'?)" in plan.out
    assert "unknown column 'loyalty_tier' is not sent" in plan.out

    ran = line_exports("run", "cols", "--workflows", str(folder))
    assert ran.code == 0, ran.text
    assert "WARNING" in ran.err and hint in ran.err  # the run log
    assert f"warning: cols/members: {hint}" in ran.out  # the summary, from the metadata

    refused = line_exports("run", "strict_cols", "--workflows", str(folder))
    assert refused.code == 1, refused.text
    assert hint in refused.out and "unknown_columns is fail" in refused.out


# 4. Settings typos in Python ---------------------------------------------------------------


DEFS = """
import dagster as dg
from line_exports import MaacResource, SqlSource, build_export

members = build_export(
    "members",
    destination="maac",
    query={query!r},
    settings={settings},
)
defs = dg.Definitions(
    assets=[members],
    jobs=[dg.define_asset_job("members_job", selection=[members])],
    resources={{"sql_source": SqlSource(), "maac": MaacResource.from_env()}},
)
"""


def _defs(folder: Path, query: str, settings: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "defs.py"
    path.write_text(DEFS.format(query=query, settings=settings), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            '{"data_object": "members", "import_key": "line_uid", "tags": "x", "batch_sise": 500}',
            "unknown setting 'batch_sise' for maac (did you mean 'batch_size'?)",
        ),
        (
            '{"data_object": "members", "import_kye": "line_uid", "tags": "x"}',
            "unknown setting 'import_kye' for maac (did you mean 'import_key'?)",
        ),
    ],
)
def test_python_setting_typos_name_the_closest_setting(
    tmp_path: Path, settings: str, message: str
) -> None:
    defs = _defs(tmp_path / "project", "SELECT line_uid FROM line_members", settings)
    ran = line_exports("demo", "--defs", str(defs), "--job", "members_job")
    assert ran.code != 0
    assert message in ran.text, ran.text
    assert "KeyError" not in ran.text and "Traceback" not in ran.text
    assert "is required" not in ran.text


# 5. Relative query paths -------------------------------------------------------------------


def test_relative_query_path_is_relative_to_the_declaring_file(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "queries").mkdir(parents=True)
    (project / "queries" / "members.sql").write_text(MEMBERS_SQL, encoding="utf-8")
    defs = _defs(
        project,
        "queries/members.sql",
        '{"data_object": "members", "import_key": "line_uid", "tags": "vip"}',
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ran = line_exports("demo", "--defs", str(defs), "--job", "members_job", cwd=elsewhere)
    assert ran.code == 0, ran.text
    row = next(line for line in ran.out.splitlines() if line.startswith("members "))
    read, valid, rejected, sent = row.split()[5:9]
    assert read == "3,000" and sent == valid != "0", row


# 6. Empty results --------------------------------------------------------------------------


def test_empty_results_skip_with_a_warning_or_refuse_a_replace(
    tmp_path: Path, sandbox_env: SandboxServer
) -> None:
    folder = workflow_folder(
        tmp_path,
        {
            "no_members": members_dig(),
            "empty_segment": segment_dig(update_segment="true"),
            "allowed_segment": segment_dig(update_segment="true", empty_result="skip"),
        },
        {
            "members.sql": MEMBERS_SQL + "WHERE false\n",
            "segment.sql": "SELECT line_uid FROM segment_users WHERE false",
        },
    )
    plan = line_exports("plan", "--workflows", str(folder), "--preview", "0")
    assert plan.code == 1, plan.text  # the refused replace
    assert (
        "warning: would skip: no_members/members: nothing to send: the query returned no rows"
        in plan.out
    )
    assert (
        "would fail: empty_segment/segment: nothing to send: the query returned no rows; this "
        "export replaces the target's contents, and replacing them with nothing is refused"
        in plan.out
    )
    assert "warning: would skip: allowed_segment/segment" in plan.out

    skipped = line_exports("run", "no_members", "--workflows", str(folder))
    assert skipped.code == 0, skipped.text
    assert "WARNING" in skipped.err and "nothing to send" in skipped.err
    assert "warning: no_members/members: check not_empty failed" in skipped.out
    strict = line_exports("run", "no_members", "--workflows", str(folder), "--strict")
    assert strict.code == 1, strict.text

    refused = line_exports("run", "empty_segment", "--workflows", str(folder))
    assert refused.code == 1, refused.text
    assert "replacing them with nothing is refused" in refused.out
    assert line_exports("run", "allowed_segment", "--workflows", str(folder)).code == 0
    state = maac_summary(sandbox_env.sandbox)
    assert state["imports"] == 0 and state["segments"] == {}  # nothing was ever sent


# 7. Results that need attention ------------------------------------------------------------


def test_summary_shows_reasons_rejects_file_and_failed_checks(
    tmp_path: Path, sandbox_env: SandboxServer
) -> None:
    sql = (
        "SELECT line_uid,\n"
        "  CASE WHEN hash(line_uid) % 2 = 0 THEN 'unknown' ELSE 'female' END AS gender\n"
        "FROM line_members\n"
    )
    folder = workflow_folder(tmp_path, {"half": members_dig()}, {"members.sql": sql})
    ran = line_exports("run", "half", "--workflows", str(folder))
    assert ran.code == 0, ran.text
    lines = ran.out.splitlines()
    reasons = next(line for line in lines if line.startswith("half/members: "))
    assert "rejected: gender: allowed " in reasons, reasons
    rejects = next(line for line in lines if line.strip().startswith("rejects file: "))
    path = Path(rejects.split(": ", 1)[1])
    path = path if path.is_absolute() else REPO / path
    assert path.is_file() and "gender" in path.read_text(encoding="utf-8")
    assert any(
        line.startswith("warning: half/members: check reject_rate failed: ") for line in lines
    ), ran.out
    assert "WARNING" in ran.err and "check reject_rate failed" in ran.err  # the run log
    strict = line_exports("run", "half", "--workflows", str(folder), "--strict")
    assert strict.code == 1 and "--strict: a check failed" in strict.out
