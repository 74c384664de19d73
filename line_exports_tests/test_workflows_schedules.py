"""Schedules like TD's and digdag's: next ticks in the workflow's timezone (Dagster's cron
iterator), the delay that keeps the session time at the tick, the session variables the query
sees, and the pause after consecutive failures on a real DagsterInstance."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
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


def dagster_fires(schedule: object, after: datetime) -> set[datetime]:
    """The next minute Dagster's own cron iterator fires each of the schedule's crons at."""
    from dagster._utils.schedules import schedule_execution_time_iterator

    return {
        next(schedule_execution_time_iterator(after.timestamp(), cron, "UTC"))
        for cron in schedule.run_crons()
    }


def first(spec: object, tz: str, now: str) -> tuple[str, str]:
    """digdag's ``getFirstScheduleTime``: (session time, run time) as ISO strings."""
    schedule = parse_schedule(spec, tz)
    session = schedule.first_session(datetime.fromisoformat(now))
    run = schedule.local(schedule.run_time(session))
    return session.isoformat(), run.isoformat()


def test_digdag_documented_first_sessions() -> None:
    """scheduling_workflow.rst: 'As of system clock: 2019-02-24 14:20:10 +0900'."""
    now = "2019-02-24T14:20:10+09:00"
    tokyo = "Asia/Tokyo"
    assert first({"hourly>": "32:32"}, tokyo, now) == (
        "2019-02-24T14:00:00+09:00",
        "2019-02-24T14:32:32+09:00",
    )
    assert first({"daily>": "10:32:32"}, tokyo, now) == (
        "2019-02-25T00:00:00+09:00",
        "2019-02-25T10:32:32+09:00",
    )
    # weekly>: 2 is cron4j's day 2, a Tuesday.
    assert first({"weekly>": "2,10:32:32"}, tokyo, now) == (
        "2019-02-26T00:00:00+09:00",
        "2019-02-26T10:32:32+09:00",
    )
    assert first({"monthly>": "2,10:32:32"}, tokyo, now) == (
        "2019-03-02T00:00:00+09:00",
        "2019-03-02T10:32:32+09:00",
    )


def test_digdag_scheduler_test_cases() -> None:
    """Cases from digdag's own scheduler tests (CronSchedulerTest, DailySchedulerTest, ...)."""
    la = "America/Los_Angeles"
    # A session on the boundary second is still the first one; a second later it is the next.
    assert first({"cron>": "00 10 * * *"}, "UTC", "2016-02-03T10:00:00+00:00")[0] == (
        "2016-02-03T10:00:00+00:00"
    )
    assert first({"cron>": "00 10 * * *"}, "UTC", "2016-02-03T10:00:01+00:00")[0] == (
        "2016-02-04T10:00:00+00:00"
    )
    assert first({"cron>": "00 10 * * *"}, la, "2016-03-13T01:59:59-08:00")[0] == (
        "2016-03-13T10:00:00-07:00"
    )
    # "daily> 10:00:00 means 10 hours later than 00:00:00": on the DST day that is 11:00 PDT.
    assert first({"daily>": "10:00:00"}, la, "2016-03-13T09:00:00-07:00") == (
        "2016-03-13T00:00:00-08:00",
        "2016-03-13T11:00:00-07:00",
    )
    assert first({"weekly>": "Wed,17:15:00"}, "Asia/Tokyo", "2016-02-03T17:15:01+09:00") == (
        "2016-02-10T00:00:00+09:00",
        "2016-02-10T17:15:00+09:00",
    )
    daily = parse_schedule({"daily>": "05:00:00"}, la)
    last = daily.last_session(datetime.fromisoformat("2016-03-14T00:00:00-07:00"))
    assert last.isoformat() == "2016-03-13T00:00:00-08:00"
    assert daily.local(daily.run_time(last)).isoformat() == "2016-03-13T06:00:00-07:00"
    nxt = parse_schedule({"daily>": "10:00:00"}, la).next_session(
        datetime.fromisoformat("2016-03-13T00:00:00-08:00")
    )
    assert nxt.isoformat() == "2016-03-14T00:00:00-07:00"
    # start/end: the first session is on start's day; past end there is no next one.
    bounded = {"cron>": "00 10 * * *", "start": "2016-03-01", "end": "2016-03-31"}
    assert first(bounded, "UTC", "2016-02-03T09:59:59+00:00")[0] == "2016-03-01T10:00:00+00:00"
    assert [s for _, s in ticks(bounded, "UTC", datetime(2016, 3, 29, tzinfo=UTC), 5)] == [
        "Tue 2016-03-29 10:00",
        "Wed 2016-03-30 10:00",
        "Thu 2016-03-31 10:00",
    ]


def test_the_issue_inputs() -> None:
    # weekly>: 2,... is Tuesday (digdag passes the day to cron4j).
    assert ticks({"weekly>": "2,10:32:32"}, "Asia/Tokyo", START, 1) == [
        ("Tue 2024-01-02 10:32", "Tue 2024-01-02 00:00")
    ]
    # daily>: 02:30:00 on the spring-forward day: session 00:00 PST, run + 9,000 s = 10:30 UTC.
    schedule = parse_schedule({"daily>": "02:30:00"}, "America/Los_Angeles")
    runs = list(schedule.ticks(datetime(2026, 3, 7, 12, tzinfo=UTC), 2))
    assert [(r.astimezone(UTC).isoformat(), s.isoformat()) for r, s in runs] == [
        ("2026-03-08T10:30:00+00:00", "2026-03-08T00:00:00-08:00"),
        ("2026-03-09T09:30:00+00:00", "2026-03-09T00:00:00-07:00"),
    ]
    # Dagster fires at both UTC minutes a run can fall on; each minute maps to its session.
    assert schedule.run_crons() == ["30 9,10 * * *"]
    assert schedule.session_for(datetime(2026, 3, 8, 10, 30, tzinfo=UTC)).isoformat() == (
        "2026-03-08T00:00:00-08:00"
    )
    assert schedule.session_for(datetime(2026, 3, 8, 9, 30, tzinfo=UTC)) is None
    # Fall back (2026-11-01): 00:00 PDT + 9,000 s is 01:30 PST (09:30 UTC).
    assert schedule.session_for(datetime(2026, 11, 1, 9, 30, tzinfo=UTC)).isoformat() == (
        "2026-11-01T00:00:00-07:00"
    )
    assert schedule.session_for(datetime(2026, 11, 1, 10, 30, tzinfo=UTC)) is None


def test_cron_in_dst_gaps_and_overlaps() -> None:
    """cron4j resolves wall times like GregorianCalendar: a gap pushes forward, an overlap
    takes standard time (one run, not two)."""
    la = "America/Los_Angeles"
    assert ticks({"cron>": "30 2 * * *"}, la, datetime(2026, 3, 7, 12, tzinfo=UTC), 2) == same(
        "Sun 2026-03-08 03:30", "Mon 2026-03-09 02:30"
    )
    overlap = parse_schedule({"cron>": "30 1 * * *"}, la)
    runs = list(overlap.ticks(datetime(2026, 10, 31, 12, tzinfo=UTC), 2))
    assert [s.isoformat() for _, s in runs] == [
        "2026-11-01T01:30:00-08:00",
        "2026-11-02T01:30:00-08:00",
    ]


# Next ticks of every form after 2026-03-07 18:00 UTC (the eve of LA's spring-forward day):
# (run time, session time), local.
AFTER = datetime(2026, 3, 7, 18, 0, tzinfo=UTC)
FORMS = {
    "cron": {"cron>": "30 2 * * *"},
    "hourly": {"hourly>": "30:00"},
    "daily": {"daily>": "02:30:00"},
    "weekly_name": {"weekly>": "Sun,02:30:00"},
    "weekly_number": {"weekly>": "0,02:30:00"},
    "monthly": {"monthly>": "8,02:30:00"},
    "minutes_interval": {"minutes_interval>": 45},
    "at_daily": "@daily",
    "at_hourly": "@hourly",
    "cron_delay": {"cron>": "0 2 * * *", "delay": 1800},
}
TABLES = {
    "Asia/Tokyo": {
        "cron": [("03-09 02:30", "03-09 02:30"), ("03-10 02:30", "03-10 02:30")],
        "hourly": [("03-08 03:30", "03-08 03:00"), ("03-08 04:30", "03-08 04:00")],
        "daily": [("03-09 02:30", "03-09 00:00"), ("03-10 02:30", "03-10 00:00")],
        "weekly_name": [("03-15 02:30", "03-15 00:00"), ("03-22 02:30", "03-22 00:00")],
        "weekly_number": [("03-15 02:30", "03-15 00:00"), ("03-22 02:30", "03-22 00:00")],
        "monthly": [("04-08 02:30", "04-08 00:00"), ("05-08 02:30", "05-08 00:00")],
        "minutes_interval": [("03-08 03:00", "03-08 03:00"), ("03-08 03:45", "03-08 03:45")],
        "at_daily": [("03-09 00:00", "03-09 00:00"), ("03-10 00:00", "03-10 00:00")],
        "at_hourly": [("03-08 03:00", "03-08 03:00"), ("03-08 04:00", "03-08 04:00")],
        "cron_delay": [("03-09 02:30", "03-09 02:00"), ("03-10 02:30", "03-10 02:00")],
    },
    "Asia/Taipei": {
        "cron": [("03-08 02:30", "03-08 02:30"), ("03-09 02:30", "03-09 02:30")],
        "hourly": [("03-08 02:30", "03-08 02:00"), ("03-08 03:30", "03-08 03:00")],
        "daily": [("03-08 02:30", "03-08 00:00"), ("03-09 02:30", "03-09 00:00")],
        "weekly_name": [("03-08 02:30", "03-08 00:00"), ("03-15 02:30", "03-15 00:00")],
        "weekly_number": [("03-08 02:30", "03-08 00:00"), ("03-15 02:30", "03-15 00:00")],
        "monthly": [("03-08 02:30", "03-08 00:00"), ("04-08 02:30", "04-08 00:00")],
        "minutes_interval": [("03-08 02:00", "03-08 02:00"), ("03-08 02:45", "03-08 02:45")],
        "at_daily": [("03-09 00:00", "03-09 00:00"), ("03-10 00:00", "03-10 00:00")],
        "at_hourly": [("03-08 02:00", "03-08 02:00"), ("03-08 03:00", "03-08 03:00")],
        "cron_delay": [("03-08 02:30", "03-08 02:00"), ("03-09 02:30", "03-09 02:00")],
    },
    "Asia/Bangkok": {
        "cron": [("03-08 02:30", "03-08 02:30"), ("03-09 02:30", "03-09 02:30")],
        "hourly": [("03-08 01:30", "03-08 01:00"), ("03-08 02:30", "03-08 02:00")],
        "daily": [("03-08 02:30", "03-08 00:00"), ("03-09 02:30", "03-09 00:00")],
        "weekly_name": [("03-08 02:30", "03-08 00:00"), ("03-15 02:30", "03-15 00:00")],
        "weekly_number": [("03-08 02:30", "03-08 00:00"), ("03-15 02:30", "03-15 00:00")],
        "monthly": [("03-08 02:30", "03-08 00:00"), ("04-08 02:30", "04-08 00:00")],
        "minutes_interval": [("03-08 01:00", "03-08 01:00"), ("03-08 01:45", "03-08 01:45")],
        "at_daily": [("03-09 00:00", "03-09 00:00"), ("03-10 00:00", "03-10 00:00")],
        "at_hourly": [("03-08 01:00", "03-08 01:00"), ("03-08 02:00", "03-08 02:00")],
        "cron_delay": [("03-08 02:30", "03-08 02:00"), ("03-09 02:30", "03-09 02:00")],
    },
    "UTC": {
        "cron": [("03-08 02:30", "03-08 02:30"), ("03-09 02:30", "03-09 02:30")],
        "hourly": [("03-07 18:30", "03-07 18:00"), ("03-07 19:30", "03-07 19:00")],
        "daily": [("03-08 02:30", "03-08 00:00"), ("03-09 02:30", "03-09 00:00")],
        "weekly_name": [("03-08 02:30", "03-08 00:00"), ("03-15 02:30", "03-15 00:00")],
        "weekly_number": [("03-08 02:30", "03-08 00:00"), ("03-15 02:30", "03-15 00:00")],
        "monthly": [("03-08 02:30", "03-08 00:00"), ("04-08 02:30", "04-08 00:00")],
        "minutes_interval": [("03-07 18:00", "03-07 18:00"), ("03-07 18:45", "03-07 18:45")],
        "at_daily": [("03-08 00:00", "03-08 00:00"), ("03-09 00:00", "03-09 00:00")],
        "at_hourly": [("03-07 18:00", "03-07 18:00"), ("03-07 19:00", "03-07 19:00")],
        "cron_delay": [("03-08 02:30", "03-08 02:00"), ("03-09 02:30", "03-09 02:00")],
    },
    "America/Los_Angeles": {  # 2026-03-08 02:00 PST -> 03:00 PDT
        "cron": [("03-08 03:30", "03-08 03:30"), ("03-09 02:30", "03-09 02:30")],
        "hourly": [("03-07 10:30", "03-07 10:00"), ("03-07 11:30", "03-07 11:00")],
        "daily": [("03-08 03:30", "03-08 00:00"), ("03-09 02:30", "03-09 00:00")],
        "weekly_name": [("03-08 03:30", "03-08 00:00"), ("03-15 02:30", "03-15 00:00")],
        "weekly_number": [("03-08 03:30", "03-08 00:00"), ("03-15 02:30", "03-15 00:00")],
        "monthly": [("03-08 03:30", "03-08 00:00"), ("04-08 02:30", "04-08 00:00")],
        "minutes_interval": [("03-07 10:00", "03-07 10:00"), ("03-07 10:45", "03-07 10:45")],
        "at_daily": [("03-08 00:00", "03-08 00:00"), ("03-09 00:00", "03-09 00:00")],
        "at_hourly": [("03-07 10:00", "03-07 10:00"), ("03-07 11:00", "03-07 11:00")],
        "cron_delay": [("03-08 03:30", "03-08 03:00"), ("03-09 02:30", "03-09 02:00")],
    },
}


@pytest.mark.parametrize("tz", sorted(TABLES))
def test_next_tick_tables(tz: str) -> None:
    zone = ZoneInfo(tz)
    for name, spec in FORMS.items():
        schedule = parse_schedule(spec, tz)
        got = [
            (r.astimezone(zone).strftime("%m-%d %H:%M"), s.astimezone(zone).strftime("%m-%d %H:%M"))
            for r, s in schedule.ticks(AFTER, 2)
        ]
        assert got == TABLES[tz][name], (tz, name)
        # Every run minute is a minute Dagster fires at, and maps back to its session.
        for run, session in schedule.ticks(AFTER, 2):
            fired = run.astimezone(UTC)
            if fired.second:
                fired = fired.replace(second=0) + timedelta(minutes=1)
            assert fired in dagster_fires(schedule, fired - timedelta(minutes=1))
            assert schedule.session_for(fired) == session


def test_cron4j_pattern_rules() -> None:
    # Steps keep every n-th value of the list: */10 in day-of-month is 1, 11, 21, 31.
    assert [r for r, _ in ticks("0 0 */10 * *", "UTC", START, 4)] == [
        "Mon 2024-01-01 00:00",
        "Thu 2024-01-11 00:00",
        "Sun 2024-01-21 00:00",
        "Wed 2024-01-31 00:00",
    ]
    # Day-of-month AND day-of-week (cron4j): the 1st only when it is a Monday.
    assert [r for r, _ in ticks("0 0 1 * 1", "UTC", START, 2)] == [
        "Mon 2024-01-01 00:00",
        "Mon 2024-04-01 00:00",
    ]
    # Wrapping ranges, names, 7 = Sunday, L = last day, alternatives with |.
    assert [r for r, _ in ticks("0 12 * * sat-mon", "UTC", START, 3)] == [
        "Mon 2024-01-01 12:00",
        "Sat 2024-01-06 12:00",
        "Sun 2024-01-07 12:00",
    ]
    assert [r for r, _ in ticks("0 0 * * 7", "UTC", START, 1)] == ["Sun 2024-01-07 00:00"]
    assert [r for r, _ in ticks("0 0 L 2 *", "UTC", START, 2)] == [
        "Thu 2024-02-29 00:00",
        "Fri 2025-02-28 00:00",
    ]
    assert [r for r, _ in ticks("0 9 * * mon|30 18 * * fri", "Asia/Tokyo", START, 3)] == [
        "Mon 2024-01-01 09:00",
        "Fri 2024-01-05 18:30",
        "Mon 2024-01-08 09:00",
    ]


def test_cron_with_named_days_and_months_in_the_workflow_timezone() -> None:
    assert ticks({"cron>": "30 9 * jan,jul mon-fri"}, "Asia/Tokyo", START) == same(
        "Mon 2024-01-01 09:30", "Tue 2024-01-02 09:30", "Wed 2024-01-03 09:30"
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
    # digdag reads delay: only for cron> and minutes_interval>; daily> has its own time.
    assert parse_schedule({"daily>": "07:00:00", "delay": 600}, "UTC").delay_seconds == 25200


def test_last_and_next_session() -> None:
    hourly = parse_schedule({"hourly>": "30:00"}, "America/Los_Angeles")
    session = datetime.fromisoformat("2016-01-30T00:00:00-08:00")
    assert hourly.last_session(session).isoformat() == "2016-01-29T23:00:00-08:00"
    assert hourly.next_session(session).isoformat() == "2016-01-30T01:00:00-08:00"
    daily = parse_schedule({"daily>": "07:00:00"}, "America/Los_Angeles")
    assert daily.last_session(session).isoformat() == "2016-01-29T00:00:00-08:00"
    assert daily.next_session(session).isoformat() == "2016-01-31T00:00:00-08:00"


def test_schedule_errors_name_the_part() -> None:
    for spec, message in [
        ("0 25 * * *", "hour: 25 is outside 0-23"),
        ("0 0 * * funday", "day of week: 'funday' is not a number or a name"),
        ("0 0 * *", "must have 5 fields"),
        ({"daily>": "7am"}, "daily> '7am' must look like HH:MM:SS"),
        ({"weekly>": "Someday,09:00:00"}, "'Someday' is not a day"),
        ({"weekly>": "9,09:00:00"}, "'9' is not a day"),
        ({"cron>": "0 * * * *", "delay": -5}, "delay -5 must be a whole number of seconds >= 0"),
        ({"cron>": "0 * * * *", "daily>": "07:00:00"}, "exactly one of"),
        ({"cron>": "0 0 31 2 *"}, "never matches"),
        ({"daily>": "07:00:00", "start": "2024-02-01", "end": "2024-01-01"}, "end is earlier"),
        ("@fortnightly", "unknown shortcut"),
    ]:
        with pytest.raises(ScheduleError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_schedule(spec, "UTC")


WORKFLOW = """
timezone: Asia/Tokyo
schedule:
  daily>: 07:10:00
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
    """The run at 07:10 Tokyo (daily>: 07:10:00) stands for 00:00 Tokyo: that is what
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
    assert schedule.cron_schedule == "10 22 * * *" and schedule.execution_timezone == "UTC"
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
        assert skipped.run_requests == [] and "not daily> 07:10:00" in (skipped.skip_message or "")


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
