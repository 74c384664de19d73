"""td_ddl>, wait>, mail>, _error: and _retry run for real: DDL in the embedded DuckDB file and a
SQLite warehouse, a real wait, mail through a real SMTP server on loopback (aiosmtpd), _error
tasks after a failure (the run still fails), retries counted from Dagster's events."""

from __future__ import annotations

import socket
import textwrap
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from line_exports import paths
from line_exports.session import SESSION_TIME_TAG
from line_exports.workflows import load_folder
from line_exports.workflows.retry import retry_policy
from line_exports.workflows.wait import format_duration, parse_duration

SESSION = {SESSION_TIME_TAG: "2026-11-30T00:00:00+09:00"}


class Inbox:
    """aiosmtpd handler keeping each message with its envelope."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(
            {
                "from": envelope.mail_from,
                "rcpt": list(envelope.rcpt_tos),
                "message": message_from_bytes(envelope.content, policy=policy.default),
                "login": session.auth_data,
            }
        )
        return "250 OK"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"ops", b"s3cret-pw")
    return AuthResult(success=ok, auth_data=data.login if ok else None)


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on loopback (AUTH allowed without TLS: loopback only)."""
    inbox = Inbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def mail_env(smtp: tuple[Inbox, int], monkeypatch: pytest.MonkeyPatch) -> Inbox:
    inbox, port = smtp
    inbox.messages.clear()
    monkeypatch.setenv("MAIL_HOST", "127.0.0.1")
    monkeypatch.setenv("MAIL_PORT", str(port))
    monkeypatch.setenv("MAIL_FROM", "digdag@example.com")
    monkeypatch.setenv("MAIL_USERNAME", "ops")
    monkeypatch.setenv("MAIL_PASSWORD", "s3cret-pw")
    return inbox


def make_folder(tmp_path: Path, files: dict[str, str], connections: str = "") -> Path:
    folder = tmp_path / "wf"
    folder.mkdir(exist_ok=True)
    (folder / "connections.yaml").write_text(connections or "connections: {}\n")
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text).lstrip("\n"))
    return folder


def run(folder: Path, job: str, **tags: str) -> tuple[dg.ExecuteInProcessResult, list[str]]:
    """The job's run, and every log line of it (hooks' included)."""
    loaded = load_folder(folder)
    assert loaded.errors == []
    job_def = loaded.definitions().resolve_job_def(job)
    with dg.instance_for_test() as instance:
        result = job_def.execute_in_process(
            instance=instance, tags={**SESSION, **tags}, raise_on_error=False
        )
        return result, [e.user_message for e in instance.all_logs(result.run_id)]


def events(result: dg.ExecuteInProcessResult, kind: dg.DagsterEventType) -> list[Any]:
    return [e for e in result.all_events if e.event_type == kind]


def test_durations_parse_as_digdags_durations_test() -> None:
    """digdag-plugin-utils DurationsTest: valid, invalid, formatted."""
    for text, seconds in [
        ("17d", 17 * 86_400),
        (" 17 D ", 17 * 86_400),
        ("17h", 17 * 3_600),
        ("17M", 17 * 60),
        (" 17 s ", 17),
        ("13m17s", 13 * 60 + 17),
        (" 21 H 13 M 17 S ", 21 * 3_600 + 13 * 60 + 17),
        ("3d 21h 13m 17s ", 3 * 86_400 + 21 * 3_600 + 13 * 60 + 17),
    ]:
        assert parse_duration(text).total_seconds() == seconds, text
    for text in ["", "17", "1 7s", "-4s", "foobar"]:
        with pytest.raises(ValueError):
            parse_duration(text)
    assert format_duration(parse_duration("3D21H13M17S")) == "3d 21h 13m 17s"
    assert format_duration(parse_duration(" 13 m 17 s ")) == "13m 17s"


def test_retry_maps_to_dagster_where_it_can(tmp_path: Path) -> None:
    f = tmp_path / "x.dig"
    assert retry_policy(3, f, None, 1) == dg.RetryPolicy(max_retries=3)
    assert retry_policy("2", f, None, 1) == dg.RetryPolicy(max_retries=2)
    assert retry_policy({"limit": 2, "interval": 10}, f, None, 1) == dg.RetryPolicy(
        max_retries=2, delay=10
    )
    policy_ = retry_policy({"limit": 3, "interval": 5, "interval_type": "exponential"}, f, None, 1)
    assert policy_ == dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL)
    # Dagster's exponential waits: 5, 15, 35 s (digdag's: 5, 10, 20 s), never shorter
    assert [policy_.calculate_delay(n) for n in (1, 2, 3)] == [5, 15, 35]
    for bad, said in [
        ({"limit": 2, "max_interval": 60}, "max_interval has no Dagster equivalent"),
        ({"limit": 2, "interval_type": "linear"}, "must be constant or exponential"),
        ({"interval": 2}, "needs limit"),
        ({"limit": 2, "intervall": 3}, "unknown _retry option 'intervall'"),
    ]:
        with pytest.raises(Exception, match=said):
            retry_policy(bad, f, "+t", 4)


DDL = """
timezone: Asia/Tokyo
_export:
  td:
    database: marketing
+prepare:
  td_ddl>:
  drop_tables: ["old_${session_date_compact}"]
  empty_tables: ["stage_${session_date_compact}"]
  create_tables: [audit]
+fill:
  td>:
  query: SELECT line_uid, 1 AS score FROM segment_users ORDER BY line_uid LIMIT 5
  insert_into: stage_${session_date_compact}
+swap:
  td_ddl>:
  rename_tables: [{from: "stage_${session_date_compact}", to: stage_latest}]
+pause:
  wait>: 1s
+after:
  echo>: done at ${session_date}
"""


def test_td_ddl_then_insert_into_and_a_real_wait(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, {"ddl.dig": DDL})
    db = paths.default_duckdb_path()
    duckdb.connect(str(db)).execute(
        "CREATE TABLE old_20261130 AS SELECT 1 AS x; CREATE TABLE stage_latest AS SELECT 2 AS y"
    ).close()
    result, logs = run(folder, "ddl")
    assert result.success
    ops = result.asset_materializations_for_node("ddl__prepare")[0].metadata
    assert ops["operations"].value == [
        "drop old_20261130",
        "create audit",
        "empty stage_20261130",
    ]
    pause = result.asset_materializations_for_node("ddl__pause")[0].metadata
    assert pause["waited_seconds"].value >= 1.0
    with duckdb.connect(str(db), read_only=True) as con:
        tables = {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        assert {"audit", "stage_latest"} <= tables
        assert not {"old_20261130", "stage_20261130"} & tables
        # TD's insert_into onto a td_ddl> table: the query's columns were added
        assert con.execute("SELECT count(*), sum(score) FROM stage_latest").fetchone() == (5, 5)
        columns = [r[0] for r in con.execute("DESCRIBE stage_latest").fetchall()]
        assert columns == ["time", "line_uid", "score"]


def test_td_ddl_on_a_warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    warehouse = tmp_path / "warehouse.sqlite"
    monkeypatch.setenv("WAREHOUSE_URL", f"sqlite:///{warehouse}")
    folder = make_folder(
        tmp_path,
        {
            "wh.dig": """
            +a:
              td_ddl>:
              create_tables: ["events_${session_date_compact}", keep]
            +b:
              td_ddl>:
              rename_tables: [{from: "events_${session_date_compact}", to: events}]
              drop_tables: [keep]
            """
        },
        "source:\n  url_env: WAREHOUSE_URL\nconnections: {}\n",
    )
    result, logs = run(folder, "wh")
    assert result.success
    import sqlite3

    with sqlite3.connect(warehouse) as con:
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert names == {"events"}


def test_refusals_name_the_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINE_EXPORTS_ALLOWED_ENV", "")
    folder = make_folder(
        tmp_path,
        {
            "bad.dig": """
            +a:
              td_ddl>:
              create_databases: [x]
            +b:
              wait>: 10
            +c:
              mail>:
                data: hi
              subject: s
              to: [a@example.com]
              host: smtp.evil.example
            +d:
              wait>: 1s
              poll_interval: 5s
              blocking: true
            +e:
              td_ddl>:
              create_tables: ["bad name"]
            +f:
              mail>: ../outside.txt
              subject: s
              to: [not-an-address]
            +g:
              _export:
                mail:
                  from: a@example.com
                  port: 2525
              +send:
                mail>:
                  data: hi
                subject: s
                to: [a@example.com]
            +h:
              mail>: missing.txt
              subject: s
              to: [a@example.com]
            +i:
              mail>:
                data: hi
              subject: s
              to: [a@example.com]
              attach_files:
                - path: missing.csv
            """
        },
    )
    errors = "\n".join(str(e) for e in load_folder(folder).errors)
    assert (
        "bad.dig:3, task +a, setting create_databases: create_databases is not supported" in errors
    )
    assert "bad.dig:5, task +b, setting wait>: '10' is not a duration" in errors
    assert "bad.dig:11, task +c, setting host: host is not supported by mail> here: the SMTP" in (
        errors
    )
    assert "bad.dig:14, task +d, setting poll_interval: poll_interval can't be specified" in errors
    assert "task +e, setting create_tables: create_tables 'bad name' is not a table name" in errors
    assert "task +f, setting mail>: mail body ../outside.txt resolves outside" in errors
    assert "bad.dig:27, task +g, setting mail.port: _export mail.port: the SMTP server is" in (
        errors
    )
    looked = f"(looked for {(folder / 'missing.txt').resolve()})"
    assert f"bad.dig:34, task +h, setting mail>: mail body missing.txt not found {looked}" in errors
    looked = f"(looked for {(folder / 'missing.csv').resolve()})"
    assert (
        f"bad.dig:42, task +i, setting attach_files: attachment missing.csv not found {looked}"
        in errors
    )


def test_mail_through_a_real_smtp_server(tmp_path: Path, mail_env: Inbox) -> None:
    folder = make_folder(
        tmp_path,
        {
            "notify.dig": """
            timezone: Asia/Tokyo
            _export:
              mail:
                to: [team@example.com]
            +count:
              td>:
              query: SELECT 42 AS members
              store_last_results: true
            +send:
              mail>: body.html
              subject: "${td.last_results.members} members on ${session_date}"
              cc: ["Lead <lead@example.com>"]
              bcc: [audit@example.com]
              html: true
              attach_files:
                - path: report.csv
                  content_type: text/csv
                - path: report.csv
                  filename: copy.dat
            """,
            "body.html": "<p>Segment for ${moment(session_time).add(-1, 'days')"
            ".format('YYYY-MM-DD')}: ${td.last_results.members}</p>\n",
            "report.csv": "line_uid\nU1\n",
        },
    )
    result, logs = run(folder, "notify")
    assert result.success
    [mail] = mail_env.messages
    assert mail["from"] == "digdag@example.com"
    assert sorted(mail["rcpt"]) == ["audit@example.com", "lead@example.com", "team@example.com"]
    assert mail["login"] == b"ops"
    message = mail["message"]
    assert message["Subject"] == "42 members on 2026-11-30"
    assert message["Bcc"] is None  # bcc is an envelope recipient, never a header
    assert message["Cc"] == "Lead <lead@example.com>"
    parts = list(message.iter_parts())
    assert parts[0].get_content_type() == "text/html"
    assert parts[0].get_content().rstrip() == "<p>Segment for 2026-11-29: 42</p>"
    assert [(p.get_filename(), p.get_content_type()) for p in parts[1:]] == [
        ("report.csv", "text/csv"),
        ("copy.dat", "application/octet-stream"),
    ]
    assert parts[1].get_content().splitlines() == ["line_uid", "U1"]
    assert "s3cret-pw" not in "\n".join(logs)


ON_ERROR = """
timezone: Asia/Tokyo
_error:
  mail>:
    data: "failed: ${error.message} (session ${session_time})"
  subject: "[failed] ${task_name}"
  to: [oncall@example.com]
+load:
  _error:
    echo>: load failed first
  +check:
    td>:
    query: SELECT 0 AS n
    store_last_results: true
  +stop:
    fail>: no members for ${session_date} (n=${td.last_results.n})
+never:
  echo>: not reached
"""


def test_error_tasks_run_inner_first_then_the_run_fails(tmp_path: Path, mail_env: Inbox) -> None:
    folder = make_folder(tmp_path, {"daily.dig": ON_ERROR})
    result, logs = run(folder, "daily")
    assert not result.success
    assert "daily__never" not in {
        e.step_key for e in events(result, dg.DagsterEventType.STEP_START)
    }
    [mail] = mail_env.messages
    assert mail["rcpt"] == ["oncall@example.com"]
    text = mail["message"].get_content()
    assert text.strip() == (
        "failed: no members for 2026-11-30 (n=0) (session 2026-11-30T00:00:00+09:00)"
    )
    assert mail["message"]["Subject"] == "[failed] +daily^error"
    inner = next(i for i, m in enumerate(logs) if "load failed first" in m)
    outer = next(i for i, m in enumerate(logs) if "mail>: sent" in m)
    assert inner < outer


def test_retry_then_error_once(
    tmp_path: Path, mail_env: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mail> to a closed port retries twice (_retry: 2), then the _error task runs once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    folder = make_folder(
        tmp_path,
        {
            "flaky.dig": """
            _error:
              echo>: "gave up: ${error.message}"
            +send:
              _retry: 2
              mail>:
                data: hi
              subject: s
              to: [a@example.com]
            """
        },
    )
    monkeypatch.setenv("MAIL_PORT", str(closed))
    started = time.monotonic()
    result, logs = run(folder, "flaky")
    assert not result.success
    assert len(events(result, dg.DagsterEventType.STEP_UP_FOR_RETRY)) == 2
    assert len(events(result, dg.DagsterEventType.STEP_FAILURE)) == 1
    gave_up = [m for m in logs if m.startswith("gave up:")]
    assert len(gave_up) == 1 and "mail>: ConnectionRefusedError" in gave_up[0]
    assert time.monotonic() - started < 60


def test_error_of_a_called_file_runs_before_the_callers(tmp_path: Path) -> None:
    """call>: the called file's top-level _error watches its tasks; the caller's runs after."""
    folder = make_folder(
        tmp_path,
        {
            "main.dig": """
            _error:
              echo>: "caller: ${error.message}"
            +shared:
              call>: lib/shared.dig
            +never:
              echo>: not reached
            """,
            "lib/shared.dig": """
            _error:
              echo>: "shared: ${error.message}"
            +stop:
              fail>: stopped in shared
            """,
        },
    )
    result, logs = run(folder, "main")
    assert not result.success
    said = [m for m in logs if m.startswith(("caller:", "shared:"))]
    assert said == ["shared: stopped in shared", "caller: stopped in shared"]


def test_digdags_mail_doc_example(tmp_path: Path, mail_env: Inbox) -> None:
    """digdag-docs operators/mail.md's example (step3's sh> is fail> here: sh> is refused)."""
    folder = make_folder(
        tmp_path,
        {
            "doc.dig": """
            _export:
              mail:
                from: "you@gmail.com"

            +step1:
              mail>: body.txt
              subject: workflow started
              to: [me@example.com]
              cc: [foo@example.com,bar@example.com]

            +step2:
              mail>:
                data: this is email body embedded in a .dig file
              subject: workflow started
              to: [me@example.com]
              bcc: [foo@example.com,bar@example.com]

            +step3:
              fail>: this_task_might_fail
              _error:
                mail>: body.txt
                subject: this workflow failed
                to: [me@example.com]
            """,
            "body.txt": "Session ${session_date}\n",
        },
    )
    result, _ = run(folder, "doc")
    assert not result.success
    one, two, three = mail_env.messages
    assert [m["from"] for m in (one, two, three)] == ["you@gmail.com"] * 3
    assert sorted(one["rcpt"]) == ["bar@example.com", "foo@example.com", "me@example.com"]
    assert one["message"]["Cc"] == "foo@example.com, bar@example.com"
    # no timezone: UTC, where the session 2026-11-30T00:00+09:00 is still the 29th
    assert one["message"].get_content().strip() == "Session 2026-11-29"
    assert sorted(two["rcpt"]) == sorted(one["rcpt"]) and two["message"]["Bcc"] is None
    assert two["message"].get_content().strip() == "this is email body embedded in a .dig file"
    assert three["message"]["Subject"] == "this workflow failed"


def test_digdags_td_ddl_doc_example(tmp_path: Path) -> None:
    """digdag-docs operators/td_ddl.md's steps 1-4 and its database: example."""
    folder = make_folder(
        tmp_path,
        {
            "doc.dig": """
            _export:
              td:
                database: www_access

            +step1:
              td_ddl>:
              create_tables: ["my_table_${session_date_compact}"]
            +step2:
              td_ddl>:
              drop_tables: ["my_table_${session_date_compact}"]
            +step3:
              td_ddl>:
              empty_tables: ["my_table_${session_date_compact}"]
            +step4:
              td_ddl>:
              rename_tables: [{from: "my_table_${session_date_compact}", to: "my_table"}]
            +task1:
              td_ddl>:
              create_tables: [test_ddl1, test_ddl2]
              database: test_db2
            """
        },
    )
    result, _ = run(folder, "doc")
    assert result.success
    with duckdb.connect(str(paths.default_duckdb_path()), read_only=True) as con:
        names = {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
    assert {"my_table", "test_ddl1", "test_ddl2"} <= names
    assert "my_table_20261130" not in names
