"""Schedules like TD's and digdag's: next ticks in the workflow's timezone (Dagster's cron
iterator), the delay that keeps the session time at the tick, the session variables the query
sees, and the pause after consecutive failures on a real DagsterInstance."""

from __future__ import annotations

import textwrap
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from line_exports.session import SESSION_TIME_TAG
from line_exports.workflows import load_folder, parse_schedule
from line_exports.workflows.schedules import ScheduleError, consecutive_failures

UTC = timezone.utc


def ticks(spec: object, tz: str, after: datetime, count: int = 3) -> list[tuple[str, str]]:
    """(run time, session time) as local wall-clock strings."""
    schedule = parse_schedule(spec, tz)
    zone = ZoneInfo(tz)
    return [
        (
            r.astimezone(zone).strftime("%a %Y-%m-%d %H:%M"),
            s.astimezone(zone).strftime("%a %Y-%m-%d %H:%M"),
        )
        for r, s in schedule.ticks(after, count)
    ]


def same(*times: str) -> list[tuple[str, str]]:
    return [(t, t) for t in times]


START = datetime(2024, 1, 1, 0, 0, tzinfo=UTC)  # a Monday


def test_cron_with_named_days_and_months_in_the_workflow_timezone() -> None:
    # 09:30 Tokyo on weekdays in January and July; the first tick after 2024-01-01 00:00 UTC
    # (09:00 Tokyo) is 09:30 the same day.
    assert ticks({"cron>": "30 9 * jan,jul mon-fri"}, "Asia/Tokyo", START) == same(
        "Mon 2024-01-01 09:30", "Tue 2024-01-02 09:30", "Wed 2024-01-03 09:30"
    )
    assert ticks({"cron>": "0 12 * * SAT"}, "America/Los_Angeles", START, 2) == same(
        "Sat 2024-01-06 12:00", "Sat 2024-01-13 12:00"
    )


def test_cron_ranges_lists_and_steps() -> None:
    assert ticks({"cron>": "*/20 9-10 1,15 * *"}, "UTC", START, 7) == same(
        "Mon 2024-01-01 09:00",
        "Mon 2024-01-01 09:20",
        "Mon 2024-01-01 09:40",
        "Mon 2024-01-01 10:00",
        "Mon 2024-01-01 10:20",
        "Mon 2024-01-01 10:40",
        "Mon 2024-01-15 09:00",
    )
    assert ticks({"cron>": "30 */2 1 * *"}, "UTC", START, 3) == same(
        "Mon 2024-01-01 00:30", "Mon 2024-01-01 02:30", "Mon 2024-01-01 04:30"
    )


def test_td_day_of_month_steps_and_conflicts() -> None:
    # TD: '0 0 */5 * *' runs every 5 days starting on the 5th.
    assert [r for r, _ in ticks("0 0 */5 * *", "UTC", START, 3)] == [
        "Fri 2024-01-05 00:00",
        "Wed 2024-01-10 00:00",
        "Mon 2024-01-15 00:00",
    ]
    assert parse_schedule("0 0 5,*/10,25 * *", "UTC").cron.days == (5, 10, 20, 25, 30)
    # TD: with both day fields restricted, the one that runs more often wins: Mondays.
    assert [r for r, _ in ticks("0 0 1 * 1", "UTC", datetime(2024, 1, 2, tzinfo=UTC), 3)] == [
        "Mon 2024-01-08 00:00",
        "Mon 2024-01-15 00:00",
        "Mon 2024-01-22 00:00",
    ]


def test_td_shortcuts() -> None:
    assert ticks("@hourly", "Asia/Tokyo", START, 2) == same(
        "Mon 2024-01-01 10:00", "Mon 2024-01-01 11:00"
    )
    assert ticks({"cron>": "@daily"}, "Asia/Tokyo", START, 2) == same(
        "Tue 2024-01-02 00:00", "Wed 2024-01-03 00:00"
    )


def test_digdag_forms_session_is_the_period_start() -> None:
    assert ticks({"hourly>": "30:00"}, "UTC", START, 2) == [
        ("Mon 2024-01-01 00:30", "Mon 2024-01-01 00:00"),
        ("Mon 2024-01-01 01:30", "Mon 2024-01-01 01:00"),
    ]
    assert ticks({"daily>": "07:00:00"}, "America/Los_Angeles", START, 2) == [
        ("Mon 2024-01-01 07:00", "Mon 2024-01-01 00:00"),
        ("Tue 2024-01-02 07:00", "Tue 2024-01-02 00:00"),
    ]
    assert ticks({"weekly>": "Sun,09:00:00"}, "Asia/Tokyo", START, 2) == [
        ("Sun 2024-01-07 09:00", "Sun 2024-01-07 00:00"),
        ("Sun 2024-01-14 09:00", "Sun 2024-01-14 00:00"),
    ]
    assert ticks({"monthly>": "1,09:00:00"}, "UTC", START, 2) == [
        ("Mon 2024-01-01 09:00", "Mon 2024-01-01 00:00"),
        ("Thu 2024-02-01 09:00", "Thu 2024-02-01 00:00"),
    ]
    assert ticks({"minutes_interval>": 30}, "UTC", START, 2) == same(
        "Mon 2024-01-01 00:30", "Mon 2024-01-01 01:00"
    )


def test_delay_keeps_the_session_at_the_tick() -> None:
    # 23:00 on weekdays + 2 h: Friday's run happens on Saturday 01:00, its session stays Friday 23:00.
    assert ticks(
        {"cron>": "0 23 * * mon-fri", "delay": 7200}, "UTC", datetime(2024, 1, 5, 12, tzinfo=UTC), 2
    ) == [
        ("Sat 2024-01-06 01:00", "Fri 2024-01-05 23:00"),
        ("Tue 2024-01-09 01:00", "Mon 2024-01-08 23:00"),
    ]
    assert parse_schedule({"cron>": "0 23 * * mon-fri", "delay": 7200}, "UTC").run_crons() == [
        "0 1 * * 2,3,4,5,6"
    ]
    # A delay under a minute starts at the next minute.
    assert ticks({"cron>": "0 * * * *", "delay": 30}, "UTC", START, 1) == [
        ("Mon 2024-01-01 00:01", "Mon 2024-01-01 00:00")
    ]
    # A month-day tick pushed past midnight: a daily superset whose extra ticks are skipped.
    monthly = {"cron>": "0 23 1 * *", "delay": 3600}
    assert ticks(monthly, "UTC", START, 2) == [
        ("Tue 2024-01-02 00:00", "Mon 2024-01-01 23:00"),
        ("Fri 2024-02-02 00:00", "Thu 2024-02-01 23:00"),
    ]


def test_start_and_end_bound_the_ticks() -> None:
    spec = {"daily>": "07:00:00", "start": "2024-01-03", "end": "2024-01-04"}
    assert [s for _, s in ticks(spec, "UTC", START, 5)] == [
        "Wed 2024-01-03 00:00",
        "Thu 2024-01-04 00:00",
    ]


def test_schedule_errors_name_the_part() -> None:
    for spec, message in [
        ("0 25 * * *", "hour: 25 is outside 0-23"),
        ("0 0 * * funday", "day of week: 'funday' is not a number or a name"),
        ("0 0 * *", "must have 5 fields"),
        ({"daily>": "7am"}, "daily> '7am' must look like HH:MM:SS"),
        ({"weekly>": "Someday,09:00:00"}, "'Someday' is not a day"),
        ({"cron>": "0 * * * *", "delay": -5}, "delay -5 must be a whole number of seconds >= 0"),
        ({"cron>": "0 * * * *", "daily>": "07:00:00"}, "exactly one of"),
        ("@fortnightly", "unknown shortcut"),
    ]:
        with pytest.raises(ScheduleError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_schedule(spec, "UTC")


WORKFLOW = """
timezone: Asia/Tokyo
schedule:
  daily>: 07:00:00
  delay: 600
  pause_after_failures: 2
_retry: 0
+members:
  td>: q.sql
  result_connection: maac_main
  result_settings:
    data_object: segments
    segment_name: s
"""


def workflow_folder(tmp_path: Path, sql: str) -> Path:
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "connections.yaml").write_text("connections:\n  maac_main:\n    type: maac\n")
    (folder / "q.sql").write_text(sql)
    (folder / "daily.dig").write_text(textwrap.dedent(WORKFLOW))
    return folder


@pytest.fixture
def sandbox_env(sandbox_server, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201
    """Connections with no credentials use this test's sandbox."""
    monkeypatch.setenv("LINE_EXPORTS_SANDBOX_URL", sandbox_server.url)
    return sandbox_server


def _messages(instance: dg.DagsterInstance, run_id: str) -> str:
    return " ".join(
        r.event_log_entry.user_message for r in instance.get_records_for_run(run_id).records
    )


def test_schedule_tags_the_tick_and_the_query_sees_it(tmp_path: Path, sandbox_env: object) -> None:
    """The run at 07:10 Tokyo (07:00 + delay 600 s) stands for 00:00 Tokyo: that is what
    ${session_time} / ${session_unixtime} / ${session_date} are in the query."""
    folder = workflow_folder(
        tmp_path,
        "SELECT line_uid FROM segment_users "
        "WHERE ${session_unixtime} = 1704034800 AND '${session_date}' = '2024-01-01' "
        "AND '${session_time}' = '2024-01-01T00:00:00+09:00'\n",
    )
    loaded = load_folder(folder)
    assert loaded.errors == []
    defs = loaded.definitions()
    schedule = defs.resolve_schedule_def("daily_schedule")
    assert schedule.cron_schedule == "10 7 * * *" and schedule.execution_timezone == "Asia/Tokyo"
    run_at = datetime(2024, 1, 1, 7, 10, tzinfo=ZoneInfo("Asia/Tokyo"))
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=run_at)
        request = schedule.evaluate_tick(context).run_requests[0]
        assert request.tags[SESSION_TIME_TAG] == "2024-01-01T00:00:00+09:00"
        # As the daemon launches it: Dagster's own scheduled-time tag is the run time (07:10).
        tags = {
            **request.tags,
            "dagster/scheduled_execution_time": run_at.astimezone(UTC).isoformat(),
        }
        result = defs.resolve_job_def("daily").execute_in_process(instance=instance, tags=tags)
        assert result.success
        assert "read 3,000 rows" in _messages(instance, result.run_id)
        # Any other session time: the same query reads nothing (the filter is real).
        other = defs.resolve_job_def("daily").execute_in_process(
            instance=instance,
            tags={SESSION_TIME_TAG: "2024-01-02T00:00:00+09:00"},
            raise_on_error=False,
        )
        assert "read 0 rows" in _messages(instance, other.run_id)
        # A tick that is not 07:10 (e.g. evaluated at 08:00) is skipped, never mislabelled.
        skipped = schedule.evaluate_tick(
            dg.build_schedule_context(
                instance=instance, scheduled_execution_time=run_at.replace(hour=8)
            )
        )
        assert skipped.run_requests == [] and "not daily> 07:00:00" in (skipped.skip_message or "")


def _schedule_state(instance: dg.DagsterInstance, name: str, cron: str) -> None:
    """A running schedule as the daemon stores it (in-process code location origin)."""
    from dagster._core.definitions.run_request import InstigatorType
    from dagster._core.remote_origin import (
        InProcessCodeLocationOrigin,
        RemoteInstigatorOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.scheduler.instigation import (
        InstigatorState,
        InstigatorStatus,
        ScheduleInstigatorData,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    repo = RemoteRepositoryOrigin(
        InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=__file__)), "__repository__"
    )
    instance.add_instigator_state(
        InstigatorState(
            RemoteInstigatorOrigin(repo, name),
            InstigatorType.SCHEDULE,
            InstigatorStatus.RUNNING,
            ScheduleInstigatorData(cron),
        )
    )


def _status(instance: dg.DagsterInstance, name: str) -> str:
    from dagster._core.definitions.run_request import InstigatorType

    states = [
        s
        for s in instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)
        if s.name == name
    ]
    return states[0].status.value


def test_schedule_pauses_after_consecutive_failures(tmp_path: Path, sandbox_env: object) -> None:
    folder = workflow_folder(tmp_path, "SELECT line_uid FROM no_such_table\n")
    good_sql = "SELECT line_uid FROM segment_users LIMIT 5\n"
    defs = load_folder(folder).definitions()
    job = defs.resolve_job_def("daily")
    sensor = defs.resolve_sensor_def("daily_pause_after_failures")
    scheduled = {"dagster/schedule_name": "daily_schedule"}
    with dg.instance_for_test() as instance:
        _schedule_state(instance, "daily_schedule", "10 7 * * *")

        def fail_once() -> str:
            result = job.execute_in_process(instance=instance, tags=scheduled, raise_on_error=False)
            assert not result.success
            run = instance.get_run_by_id(result.run_id)
            context = dg.build_run_status_sensor_context(
                sensor_name=sensor.name,
                dagster_event=result.get_run_failure_event(),
                dagster_instance=instance,
                dagster_run=run,
            ).for_run_failure()
            return sensor(context).skip_message

        assert "1 consecutive failed run(s), pausing at 2" in fail_once()
        assert _status(instance, "daily_schedule") == "RUNNING"
        # A success in between resets the count.
        (folder / "q.sql").write_text(good_sql)
        ok_job = load_folder(folder).definitions().resolve_job_def("daily")
        assert ok_job.execute_in_process(instance=instance, tags=scheduled).success
        (folder / "q.sql").write_text("SELECT line_uid FROM no_such_table\n")
        assert "1 consecutive" in fail_once()
        # Manual runs do not count.
        assert not job.execute_in_process(instance=instance, raise_on_error=False).success
        assert consecutive_failures(instance, "daily", "daily_schedule", 5) == 1
        message = fail_once()
        assert message.startswith(
            "Paused schedule daily_schedule: its last 2 scheduled runs failed"
        )
        assert _status(instance, "daily_schedule") == "STOPPED"
