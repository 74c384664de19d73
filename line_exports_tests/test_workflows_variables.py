"""digdag's built-in variables and ``${...}`` expressions: digdag's documented values, checked
at load (file:line, task, expression), filled per run from the session time in queries and
in result_settings (real Dagster runs against the sandbox, real DuckDB data)."""

from __future__ import annotations

import textwrap
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from line_exports.sandbox import SandboxServer
from line_exports.sandbox.maac import MaacStore
from line_exports.session import LAST_EXECUTED_TAG, SESSION_TIME_TAG
from line_exports.workflows import load_folder, parse_schedule
from line_exports.workflows.expressions import ExpressionError, render
from line_exports.workflows.variables import RunScope

LA = ZoneInfo("America/Los_Angeles")
TOKYO = ZoneInfo("Asia/Tokyo")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- built-in variables -----------------------------------------------------------------------


def test_builtins_have_digdags_documented_values() -> None:
    """workflow_definition.rst: session 2016-01-30T00:00:00-08:00, hourly and daily schedules."""
    session = at("2016-01-30T00:00:00-08:00")
    hourly = RunScope(
        "America/Los_Angeles",
        parse_schedule({"hourly>": "00:00"}, "America/Los_Angeles"),
        "+my_workflow+parent_task+child_task0",
    )
    daily = RunScope(
        "America/Los_Angeles",
        parse_schedule({"daily>": "00:00:00"}, "America/Los_Angeles"),
        "+wf+t",
    )
    values = hourly.variables(
        session,
        last_executed=at("2016-01-29T23:00:00-08:00"),
        session_uuid="414a8b9e-b365-4394-916a-f0ed9987bd2b",
        session_id=2381,
        attempt_id=7,
    )
    assert {k: values[k] for k in values if not k.startswith(("last_", "next_"))} == {
        "timezone": "America/Los_Angeles",
        "session_uuid": "414a8b9e-b365-4394-916a-f0ed9987bd2b",
        "session_id": 2381,
        "session_time": "2016-01-30T00:00:00-08:00",
        "session_date": "2016-01-30",
        "session_date_compact": "20160130",
        "session_local_time": "2016-01-30 00:00:00",
        "session_tz_offset": "-0800",
        "session_unixtime": 1454140800,
        "attempt_id": 7,
        "retry_attempt_name": None,
        "task_name": "+my_workflow+parent_task+child_task0",
    }
    assert {k: values[k] for k in values if k.startswith(("last_session", "next_session"))} == {
        "last_session_time": "2016-01-29T23:00:00-08:00",
        "last_session_date": "2016-01-29",
        "last_session_date_compact": "20160129",
        "last_session_local_time": "2016-01-29 23:00:00",
        "last_session_tz_offset": "-0800",
        "last_session_unixtime": 1454137200,
        "next_session_time": "2016-01-30T01:00:00-08:00",
        "next_session_date": "2016-01-30",
        "next_session_date_compact": "20160130",
        "next_session_local_time": "2016-01-30 01:00:00",
        "next_session_tz_offset": "-0800",
        "next_session_unixtime": 1454144400,
    }
    assert values["last_executed_session_time"] == "2016-01-29T23:00:00-08:00"
    assert values["last_executed_session_unixtime"] == 1454137200
    day = daily.variables(session, last_executed=at("2016-01-29T00:00:00-08:00"))
    assert (day["last_session_time"], day["last_session_unixtime"]) == (
        "2016-01-29T00:00:00-08:00",
        1454054400,
    )
    assert (day["next_session_time"], day["next_session_date_compact"]) == (
        "2016-01-31T00:00:00-08:00",
        "20160131",
    )
    assert day["next_session_unixtime"] == 1454227200
    assert day["last_executed_session_unixtime"] == 1454054400


def test_without_schedule_or_previous_run() -> None:
    """digdag: no schedule, no last_/next_session_*; no previous run, last_executed_* empty
    (tz_offset is the zone's offset at the epoch)."""
    values = RunScope("Asia/Tokyo", None, "+wf+t").variables(at("2026-11-30T00:00:00+09:00"))
    assert not any(k.startswith(("last_session", "next_session")) for k in values)
    assert (
        values["last_executed_session_time"] == ""
        and values["last_executed_session_unixtime"] == ""
    )
    assert values["last_executed_session_tz_offset"] == "+0900"
    assert values["session_time"] == "2026-11-30T00:00:00+09:00"
    utc = RunScope("UTC", None, "+wf+t").variables(at("2026-11-30T00:00:00+00:00"))
    assert (
        utc["session_time"] == "2026-11-30T00:00:00+00:00" and utc["session_tz_offset"] == "+0000"
    )
    # RuntimeParams.setEmptyTimeParameters: the offset at the epoch, not the session's (digdag's
    # operator_manager/filter_config_src.json gives "+0000" for UTC)
    assert utc["last_executed_session_tz_offset"] == "+0000"
    la = RunScope("America/Los_Angeles", None, "+wf+t").variables(at("2026-07-01T00:00:00-07:00"))
    assert (la["session_tz_offset"], la["last_executed_session_tz_offset"]) == ("-0700", "-0800")


# -- expressions --------------------------------------------------------------------------------

MOMENT_CASES = {
    # digdag-core's eval/moment.dig, session_time 2016-03-13T10:00:00Z; (UTC, Tokyo, Los Angeles)
    "${moment(session_time).format()}": (
        "2016-03-13T10:00:00+00:00",
        "2016-03-13T19:00:00+09:00",
        "2016-03-13T03:00:00-07:00",
    ),
    "${moment(session_time).add(1, 'days').format()}": (
        "2016-03-14T10:00:00+00:00",
        "2016-03-14T19:00:00+09:00",
        "2016-03-14T03:00:00-07:00",
    ),
    "${moment(session_time).add(-1, 'days').format()}": (
        "2016-03-12T10:00:00+00:00",
        "2016-03-12T19:00:00+09:00",
        "2016-03-12T03:00:00-08:00",
    ),
    "${moment(session_time).add(1, 'hours').format()}": (
        "2016-03-13T11:00:00+00:00",
        "2016-03-13T20:00:00+09:00",
        "2016-03-13T04:00:00-07:00",
    ),
    "${moment(session_time).add(-1, 'hours').format()}": (
        "2016-03-13T09:00:00+00:00",
        "2016-03-13T18:00:00+09:00",
        "2016-03-13T01:00:00-08:00",
    ),
    "${moment(session_time).utc().format()}": ("2016-03-13T10:00:00Z",) * 3,
    '${moment(session_time).format("YYYY-MM-DD HH:mm:ss Z")}': (
        "2016-03-13 10:00:00 +00:00",
        "2016-03-13 19:00:00 +09:00",
        "2016-03-13 03:00:00 -07:00",
    ),
    '${moment(session_time).format("LLL")}': (
        "March 13, 2016 10:00 AM",
        "March 13, 2016 7:00 PM",
        "March 13, 2016 3:00 AM",
    ),
}


@pytest.mark.parametrize("expression", sorted(MOMENT_CASES))
def test_digdags_moment_test_cases(expression: str) -> None:
    variables = {"session_time": "2016-03-13T10:00:00Z"}
    got = tuple(
        render(expression, variables, ZoneInfo(z))
        for z in ("UTC", "Asia/Tokyo", "America/Los_Angeles")
    )
    assert got == MOMENT_CASES[expression]


def test_digdags_documented_examples_and_literals() -> None:
    """workflow_definition.rst ('Calculating variables', America/Los_Angeles) and digdag-core's
    eval/basic, literal and template cases."""
    session = {"session_time": "2016-09-24T00:00:00-07:00"}
    assert (
        render('${moment(session_time).format("YYYY-MM-DD HH:mm:ss Z")}', session, LA)
        == "2016-09-24 00:00:00 -07:00"
    )
    assert (
        render('${moment(session_time).utc().format("YYYY-MM-DD HH:mm:ss")}', session, LA)
        == "2016-09-24 07:00:00"
    )
    assert (
        render("${moment(session_time).add(1, 'days').format(\"LLL\")}", session, LA)
        == "September 25, 2016 12:00 AM"
    )
    variables = {"timezone": "UTC", "a": "UTC", "nested": {"value": "v"}}
    assert render("${a}${a}", variables, ZoneInfo("UTC")) == "UTCUTC"
    assert render("${nested.value}", variables, ZoneInfo("UTC")) == "v"
    for text, expected in {
        "${1}": "1",
        "${0.2}": "0.2",
        '${"a"}': "a",
        "${[1]}": "[1]",
        "${undefined}": "",
        "${null}": "",
        "$": "$",
        "$$": "$",
        "p$$s": "p$s",
        "${": "${",
        "${v": "${v",
        "p${v": "p${v",
        "}": "}",
        "p${1}s": "p1s",
        "p${1}m$$m${2}s": "p1m$m2s",
    }.items():
        assert render(text, {}, ZoneInfo("UTC")) == expected, text


def test_the_issue_expression_and_javascript() -> None:
    session = {"session_time": "2026-11-30T00:00:00+09:00"}
    assert (
        render("${moment(session_time).add(-1, 'days').format(\"YYYY-MM-DD\")}", session, TOKYO)
        == "2026-11-29"
    )
    v = {"n": 3, "td": {"database": "db"}, "prefix": "m", "audiences": {"gold": {"id": 12}}}
    cases = {
        "${prefix + '_' + n}": "m_3",
        "${n * 2 + 1}": "7",
        "${n / 2}": "1.5",
        "${n > 2 ? 'big' : 'small'}": "big",
        "${n === 3 && td.database == 'db'}": "true",
        "${audiences.gold.id + 1}": "13",
        "${audiences['gold'].id}": "12",
        "${td.database.toUpperCase()}": "DB",
        "${moment(session_time).startOf('month').format('YYYY-MM-DD')}": "2026-11-01",
        "${moment(session_time).endOf('month').format('YYYY-MM-DD HH:mm:ss')}": "2026-11-30 23:59:59",
        "${moment(session_time).subtract(1, 'months').format('YYYYMM')}": "202610",
        "${moment(session_time).day()}": "1",  # a Monday
        "${moment(session_time).isoWeekday()}": "1",
        "${moment(session_time).startOf('isoWeek').add(6, 'days').format('dddd Do MMM')}": "Sunday 6th Dec",
        "${moment(session_time).unix()}": "1795964400",
        "${moment(session_time).valueOf()}": "1795964400000",
        "${moment(session_time).utc().format('YYYY-MM-DD HH:mm')}": "2026-11-29 15:00",
        "${moment(session_time).tz('America/Los_Angeles').format('YYYY-MM-DD HH:mm Z')}": "2026-11-29 07:00 -08:00",
        "${moment(session_time).diff(moment('2026-11-01T00:00:00+09:00'), 'days')}": "29",
        "${moment.unix(0).utc().format()}": "1970-01-01T00:00:00Z",
        "${moment('20261130', 'YYYYMMDD').format('YYYY-MM-DD')}": "2026-11-30",
    }
    for text, expected in cases.items():
        assert render(text, {**session, **v}, TOKYO) == expected, text
    with pytest.raises(ExpressionError, match="not supported"):
        render("${td.database.replace(/d/g, 'x')}", v, TOKYO)
    with pytest.raises(ExpressionError, match="not a JavaScript expression"):
        render("${n +* 2}", v, TOKYO)


# -- loading and running -----------------------------------------------------------------------

INCREMENTAL = """
timezone: Asia/Tokyo
schedule:
  daily>: 07:10:00
_export:
  prefix: members
+segment:
  td>: incremental.sql
  result_connection: maac_main
  result_settings:
    data_object: segments
    segment_name: ${prefix}_${session_date_compact}
"""
# 500 rows on 2024-01-01, 1,000 on 01-02, 1,500 on 01-03: what a day's run reads is exact.
INCREMENTAL_SQL = """
SELECT line_uid FROM (
  SELECT line_uid, DATE '2024-01-01' + CAST(CASE WHEN rn <= 500 THEN 0 WHEN rn <= 1500 THEN 1 ELSE 2 END AS INTEGER) AS day
  FROM (SELECT line_uid, row_number() OVER (ORDER BY line_uid) AS rn FROM segment_users)
)
WHERE day < '${session_date}' AND day >= '${last_session_date}'
  AND day = '${moment(session_time).add(-1, 'days').format("YYYY-MM-DD")}'
  AND '${last_executed_session_date}' IN ('', '${last_session_date}')
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


def _rows_read(result: dg.ExecuteInProcessResult, node: str) -> tuple[int, dict]:
    meta = result.asset_materializations_for_node(node)[0].metadata
    return meta["rows_read"].value, meta["resolved_settings"].data


def test_last_session_query_and_per_run_segment_name(
    tmp_path: Path, sandbox_env: SandboxServer
) -> None:
    folder = make_folder(
        tmp_path, **{"incremental.dig": INCREMENTAL, "incremental.sql": INCREMENTAL_SQL}
    )
    loaded = load_folder(folder)
    assert loaded.errors == []
    task = loaded.get("incremental").tasks[0]
    # Kept as written for the run (the UI shows the template; each run shows what it became).
    assert task.settings["segment_name"] == "members_${session_date_compact}"
    defs = loaded.definitions()
    job = defs.resolve_job_def("incremental")
    schedule = defs.resolve_schedule_def("incremental_schedule")
    with dg.instance_for_test() as instance:
        first = job.execute_in_process(
            instance=instance,
            tags={
                SESSION_TIME_TAG: "2024-01-03T00:00:00+09:00",
                "dagster/schedule_name": "incremental_schedule",
            },
        )
        assert _rows_read(first, "incremental__segment") == (
            1000,
            {"segment_name": "members_20240103"},
        )
        # The schedule's next run carries the previous run's session (last_executed_session_time).
        run_at = datetime(2024, 1, 4, 7, 10, tzinfo=TOKYO)
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=run_at)
        request = schedule.evaluate_tick(context).run_requests[0]
        assert request.tags[SESSION_TIME_TAG] == "2024-01-04T00:00:00+09:00"
        assert request.tags[LAST_EXECUTED_TAG] == "2024-01-03T00:00:00+09:00"
        second = job.execute_in_process(instance=instance, tags=request.tags)
        assert _rows_read(second, "incremental__segment") == (
            1500,
            {"segment_name": "members_20240104"},
        )
        # A last_executed session that is not the last one: the query's own check reads nothing.
        skipped = job.execute_in_process(
            instance=instance,
            tags={**request.tags, LAST_EXECUTED_TAG: "2024-01-01T00:00:00+09:00"},
            raise_on_error=False,
        )
        meta = skipped.asset_materializations_for_node("incremental__segment")
        assert not meta or meta[0].metadata["rows_read"].value == 0
    store = sandbox_env.sandbox.store("maac", MaacStore)
    names = sorted(s.name for s in store.segments.values())
    assert names[:2] == ["members_20240103", "members_20240104"]


def _errors(tmp_path: Path, dig: str, sql: str = "SELECT line_uid FROM segment_users\n") -> str:
    folder = make_folder(tmp_path, **{"bad.dig": dig, "q.sql": sql})
    return "\n".join(str(e) for e in load_folder(folder).errors)


def test_validate_names_file_line_task_and_expression(tmp_path: Path) -> None:
    head = "timezone: Asia/Tokyo\n+t:\n  td>: q.sql\n  result_connection: maac_main\n  result_settings:\n    data_object: segments\n"
    message = _errors(tmp_path, head + "    segment_name: ${moment(session_time).fromNow()}\n")
    assert (
        "bad.dig:7, task +t, setting result_settings.segment_name: ${moment(session_time).fromNow()}: moment has no method 'fromNow' here"
        in message
    )
    message = _errors(tmp_path, head + "    segment_name: ${moment(sesion_time).format()}\n")
    assert (
        "bad.dig:7, task +t, setting result_settings.segment_name: unresolved variable ${sesion_time} in ${moment(sesion_time).format()} (did you mean 'session_time'?)"
        in message
    )
    # last_session_* only exist with a schedule (digdag computes them from it).
    message = _errors(
        tmp_path,
        head + "    segment_name: s\n",
        "SELECT 1 WHERE '${last_session_date}' < '${session_date}'\n",
    )
    assert (
        "bad.dig:3, task +t, setting td> q.sql: last_session_date is only defined for a workflow with a schedule:"
        in message
    )
    message = _errors(tmp_path, head + "    segment_name: s_${project_id}\n")
    assert "project_id is a digdag server's number" in message
    # A setting the workflow needs at load cannot wait for the run.
    message = _errors(
        tmp_path,
        "+t:\n  td>: q.sql\n  result_connection: maac_${session_date_compact}\n  result_settings: {data_object: segments, segment_name: s}\n",
    )
    assert (
        "bad.dig:3, task +t, setting result_connection: 'maac_${session_date_compact}' depends on the run"
        in message
    )
    # A syntax error in a query file.
    message = _errors(
        tmp_path, head + "    segment_name: s\n", "SELECT 1\nFROM t\nWHERE ${1 +} = x\n"
    )
    assert "bad.dig:3, task +t, setting td> q.sql: ${1 +}: not a JavaScript expression" in message
    assert "(line 3 of q.sql)" in message
