"""Schedules exactly as digdag computes them, fired by Dagster's scheduler.

Every digdag form is a cron4j pattern in the workflow's ``timezone`` plus a delay in seconds
(treasure-data/digdag ``digdag-standards/.../scheduler/*SchedulerFactory.java``):

=====================  ====================  =============================================
form                   pattern               delay
=====================  ====================  =============================================
``cron>: C``           ``C``                 ``delay:`` seconds (0)
``minutes_interval>``  ``*/M * * * *``       ``delay:`` seconds (0)
``hourly>: MM:SS``     ``0 * * * *``         MM*60+SS (``delay:`` is ignored, as digdag does)
``daily>: HH:MM:SS``   ``0 0 * * *``         HH*3600+MM*60+SS
``weekly>: D,HH:MM:SS`` ``0 0 * * D``        same; D is a cron4j day: a name or 0-7 (2 = Tue)
``monthly>: D,H:M:S``  ``0 0 D * *``         same
=====================  ====================  =============================================

``@hourly``/``@daily``/... are cron shortcuts for ``cron>``. The session time is the tick (the
local scheduled time, e.g. 00:00 for ``daily>``); the run starts at tick + delay counted in
real seconds, so ``daily>: 02:30:00`` in America/Los_Angeles on a spring-forward day runs at
00:00 PST + 9,000 s = 03:30 PDT (10:30 UTC). ``start``/``end`` (dates, ``end`` inclusive) keep
the runs with ``start <= run time < end + 1 day``; ``last_session_time`` and
``next_session_time`` come from the same pattern (``CronScheduler.lastScheduleTime``).

Dagster fires at minute granularity: its cron (in UTC, so no wall-clock DST ambiguity) lists
every minute a run can fall on (tick + delay rounded up to the minute, under each UTC offset the
zone uses); an evaluation whose minute is not a run of this schedule is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg

from line_exports.session import LAST_EXECUTED_TAG, SESSION_TIME_TAG
from line_exports.workflows.cron import (
    LAST_DAY,
    CronError,
    CronPart,
    CronPattern,
    parse_pattern,
)

WORKFLOW_TAG = "line_exports/workflow"
DEFAULT_PAUSE_AFTER_FAILURES = 3
SCHEDULE_END = datetime(9999, 1, 1, tzinfo=timezone.utc)
"""digdag's ``BaseScheduler.SCHEDULE_END``: the 'next' time of a schedule past its ``end``."""

SHORTCUTS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
DIGDAG_FORMS = ("cron>", "hourly>", "daily>", "weekly>", "monthly>", "minutes_interval>")
OPTIONS = ("delay", "pause_after_failures", "start", "end", "skip_on_overtime")
DELAY_FORMS = ("cron>", "minutes_interval>")
"""The forms whose factory reads ``delay:`` (the others take it from their own time)."""
UTC = timezone.utc


class ScheduleError(ValueError):
    """A schedule that cannot be read; the message names the part that is wrong."""


def parse_cron(text: str, timezone_name: str = "UTC") -> CronPattern:
    """A ``cron>`` value (cron4j syntax, or a shortcut such as ``@daily``)."""
    source = str(text).strip()
    source = SHORTCUTS.get(source.lower(), source)
    if source.startswith("@"):
        raise ScheduleError(f"unknown shortcut {text!r}; use one of {', '.join(SHORTCUTS)}")
    try:
        return parse_pattern(source, timezone_name)
    except CronError as exc:
        raise ScheduleError(str(exc)) from None


def _clock(value: Any, form: str, parts: int) -> int:
    """``HH:MM:SS`` / ``MM:SS`` as seconds, as digdag's ``parseAt`` reads it (plain numbers)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # a YAML 1.1 reader's base-60 number
    text = str(value).strip()
    pieces = text.split(":")
    shape = "HH:MM:SS" if parts == 3 else "MM:SS"
    if len(pieces) != parts or not all(p.strip().isdigit() for p in pieces):
        raise ScheduleError(f"{form} {text!r} must look like {shape}")
    seconds = 0
    for piece in pieces:
        seconds = seconds * 60 + int(piece)
    return seconds


def zone_offsets(tz: str, around: datetime | None = None) -> list[int]:
    """The UTC offsets (minutes) ``tz`` uses from a year before to five years after ``around``."""
    zone = ZoneInfo(tz)
    start = (around or datetime.now(UTC)) - timedelta(days=366)
    found = set()
    for day in range(0, 366 * 6, 1):
        moment = start + timedelta(days=day)
        offset = moment.astimezone(zone).utcoffset()
        found.add(int(offset.total_seconds() // 60) if offset is not None else 0)
    return sorted(found)


@dataclass(frozen=True)
class WorkflowSchedule:
    """A cron4j pattern whose ticks are session times, and the delay before each run starts."""

    form: str
    """As written (for the UI), e.g. ``daily>: 07:00:00``."""
    cron: CronPattern
    delay_seconds: int = 0
    timezone: str = "UTC"
    pause_after_failures: int = DEFAULT_PAUSE_AFTER_FAILURES
    start: datetime | None = None
    """First local day's 00:00 (digdag ``getDateTimeStart``)."""
    end: datetime | None = None
    """The local day after ``end:`` at 00:00: runs stay strictly before it."""
    skip_on_overtime: bool = False

    @property
    def delay_minutes(self) -> int:
        return math.ceil(self.delay_seconds / 60)

    def run_time(self, session: datetime) -> datetime:
        """Session + delay in real seconds (not wall-clock: DST changes move the clock)."""
        return session.astimezone(UTC) + timedelta(seconds=self.delay_seconds)

    def _next(self, after: datetime) -> datetime:
        """digdag's ``nextWithStartEnd``: the next session, or :data:`SCHEDULE_END`."""
        after = after.astimezone(UTC)
        tick = self.cron.next_after(after)
        if tick is None:
            return SCHEDULE_END
        run = self.run_time(tick)
        if self.end is not None and self.end <= run:
            return SCHEDULE_END
        if self.start is not None and self.start > run:
            tick = self.cron.next_after(self.start - timedelta(seconds=1))
            return SCHEDULE_END if tick is None else tick
        return tick

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(ZoneInfo(self.timezone))

    def next_session(self, session: datetime) -> datetime:
        """``next_session_time`` of a session (digdag ``nextScheduleTime``)."""
        return self.local(self._next(session))

    def last_session(self, session: datetime) -> datetime:
        """``last_session_time`` of a session (digdag ``CronScheduler.lastScheduleTime``)."""
        session = session.astimezone(UTC)
        first = self.cron.next_after(session)
        second = self.cron.next_after(first) if first else None
        if first is None or second is None:
            raise ScheduleError(f"{self.form} has no tick after {session.isoformat()}")
        interval = second - first
        before = session - interval
        while True:
            before -= interval
            if before < session:
                break
        following = self.cron.next_after(before)
        while following is not None and following < session:
            before = following
            following = self.cron.next_after(before)
        return self.local(before)

    def first_session(self, now: datetime) -> datetime:
        """The first session a schedule registered at ``now`` runs (``getFirstScheduleTime``)."""
        now = now.astimezone(UTC)
        truncated = now.replace(microsecond=0)
        if truncated == now:
            truncated -= timedelta(seconds=1)
        return self.local(self._next(truncated - timedelta(seconds=self.delay_seconds)))

    def ticks(self, after: datetime, count: int) -> Iterator[tuple[datetime, datetime]]:
        """The next ``count`` (run time, session time) pairs after ``after``, local times."""
        session = self.first_session(after)
        for _ in range(count):
            if session.astimezone(UTC) >= SCHEDULE_END:
                return
            yield self.local(self.run_time(session)), session
            session = self.next_session(session)

    def session_for(self, fired: datetime) -> datetime | None:
        """The session a Dagster tick at minute ``fired`` starts, or None when no run of this
        schedule rounds up to that minute (one of the superset's extra minutes)."""
        fired = fired.astimezone(UTC).replace(second=0, microsecond=0)
        latest = fired - timedelta(seconds=self.delay_seconds)
        # Walk the tick chain from a few hours back, as digdag chains next() from the last
        # session: a wall time in a DST gap is only reached (and pushed forward) that way.
        floor = latest - timedelta(seconds=60)
        tick = self.cron.next_after(floor - timedelta(hours=3))
        while tick is not None and tick <= floor:
            tick = self.cron.next_after(tick)
        if tick is None or tick > latest:
            return None
        run = self.run_time(tick)
        if (self.start is not None and run < self.start) or (
            self.end is not None and run >= self.end
        ):
            return None
        return self.local(tick)

    def run_crons(self) -> list[str]:
        """Dagster cron strings (UTC) that include every run minute of this schedule."""
        offsets = zone_offsets(self.timezone)
        return sorted({_utc_cron(p, offsets, self.delay_minutes) for p in self.cron.parts})


def _utc_cron(part: CronPart, offsets: list[int], delay_minutes: int) -> str:
    marks = {
        hour * 60 + minute - offset + delay_minutes
        for hour, minute in part.clock()
        for offset in offsets
    }
    minutes = sorted({m % 60 for m in marks})
    hours = sorted({(m % 1440) // 60 for m in marks})
    shifts = {m // 1440 for m in marks}
    dom, month, dow = "*", "*", "*"
    days_given = part.days is not None and LAST_DAY not in part.days
    if part.days is not None and LAST_DAY in part.days:
        pass  # the last day varies: every day, the evaluation checks
    elif shifts == {0}:
        dom = _list(part.days) if days_given else "*"
        month = _list(part.months)
        dow = _list(part.weekdays)
    elif len(shifts) == 1 and part.days is None and part.months is None:
        (shift,) = shifts
        if part.weekdays is not None:
            dow = _list(frozenset((d + shift) % 7 for d in part.weekdays))
    return " ".join(
        (
            _list(frozenset(minutes)) if len(minutes) < 60 else "*",
            _list(frozenset(hours)) if len(hours) < 24 else "*",
            dom,
            month,
            dow,
        )
    )


def _list(values: frozenset[int] | None) -> str:
    return "*" if values is None else ",".join(str(v) for v in sorted(values))


def _date_bound(raw: Any, key: str, zone: ZoneInfo) -> datetime:
    """digdag's ``start``/``end``: a ``YYYY-MM-DD`` date, local 00:00 (``end``: the next day)."""
    text = str(raw).strip()
    try:
        day = datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        raise ScheduleError(f"{key} {raw!r} must be a date (YYYY-MM-DD)") from None
    if key == "end":
        day += timedelta(days=1)
    return day.replace(tzinfo=zone).astimezone(UTC)


def parse_schedule(spec: Any, timezone_name: str) -> WorkflowSchedule:
    """A digdag ``schedule:`` value (mapping with one ``xxx>:`` form and options, or a cron string)."""
    if isinstance(spec, str):
        spec = {"cron>": spec}
    if not isinstance(spec, Mapping):
        raise ScheduleError(
            "schedule must be a mapping such as {daily>: 07:00:00} or a cron string"
        )
    forms = [k for k in spec if k in DIGDAG_FORMS]
    unknown = [k for k in spec if k not in DIGDAG_FORMS and k not in OPTIONS]
    if unknown:
        from line_exports.workflows.errors import closest

        name = str(unknown[0])
        raise ScheduleError(
            f"unknown schedule option {name!r}{closest(name, (*DIGDAG_FORMS, *OPTIONS))}"
        )
    if len(forms) != 1:
        raise ScheduleError(
            f"schedule needs exactly one of {', '.join(DIGDAG_FORMS)}; found {len(forms)}"
        )
    form = forms[0]
    value = spec[form]
    if value is None or value == "":
        raise ScheduleError(f"{form} needs a value")
    delay = 0
    if form == "cron>":
        cron = parse_cron(str(value), timezone_name)
    elif form == "minutes_interval>":
        if isinstance(value, bool) or not str(value).strip().isdigit() or int(value) < 1:
            raise ScheduleError(f"minutes_interval> {value!r} must be a number of minutes")
        cron = parse_cron(f"*/{int(value)} * * * *", timezone_name)
    elif form == "hourly>":
        cron, delay = parse_cron("0 * * * *", timezone_name), _clock(value, form, 2)
    elif form == "daily>":
        cron, delay = parse_cron("0 0 * * *", timezone_name), _clock(value, form, 3)
    else:
        day, comma, clock = str(value).partition(",")
        if not comma:
            raise ScheduleError(f"{form} {value!r} must look like D,HH:MM:SS")
        day = day.strip()
        if form == "monthly>":
            if not day.isdigit():
                raise ScheduleError(f"monthly> {value!r}: {day!r} is not a day of month (1-31)")
            cron = parse_cron(f"0 0 {int(day)} * *", timezone_name)
        else:
            try:
                cron = parse_cron(f"0 0 * * {day}", timezone_name)
            except ScheduleError:
                raise ScheduleError(
                    f"weekly> {value!r}: {day!r} is not a day (Sun..Sat, or 0-7 with 0 and 7 = Sunday)"
                ) from None
        delay = _clock(clock, form, 3)
    extra = spec.get("delay", 0) or 0
    if isinstance(extra, bool) or not isinstance(extra, int) or extra < 0:
        raise ScheduleError(f"delay {extra!r} must be a whole number of seconds >= 0")
    if form in DELAY_FORMS:
        delay += extra
    elif extra:
        import logging

        logging.getLogger("line_exports.workflows").warning(
            "schedule %s %s: digdag ignores delay: for this form (the run time is in the form)",
            form,
            value,
        )
    pause = spec.get("pause_after_failures", DEFAULT_PAUSE_AFTER_FAILURES)
    if isinstance(pause, bool) or not isinstance(pause, int) or pause < 0:
        raise ScheduleError(
            f"pause_after_failures {pause!r} must be a whole number >= 0 (0 never pauses)"
        )
    zone = ZoneInfo(timezone_name)
    start = _date_bound(spec["start"], "start", zone) if spec.get("start") is not None else None
    end = _date_bound(spec["end"], "end", zone) if spec.get("end") is not None else None
    if start is not None and end is not None and start >= end:
        raise ScheduleError("The schedule of end is earlier than start")
    schedule = WorkflowSchedule(
        form=f"{form} {value}",
        cron=cron,
        delay_seconds=delay,
        timezone=timezone_name,
        pause_after_failures=pause,
        start=start,
        end=end,
        skip_on_overtime=bool(spec.get("skip_on_overtime", False)),
    )
    if cron.next_after(datetime.now(UTC)) is None:
        raise ScheduleError(f"{form} {value!r} never matches a date")
    return schedule


def build_schedule(
    name: str,
    job: Any,
    schedule: WorkflowSchedule,
    description: str,
    *,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
    tags: Mapping[str, str] | None = None,
) -> dg.ScheduleDefinition:
    """The Dagster schedule: fires at tick + delay, tags the run with the tick (its session time)
    and the session the schedule's previous run stood for (``last_executed_session_time``).
    ``tags`` (default: the workflow tag) go on the schedule and on every run it starts."""
    crons = schedule.run_crons()
    base_tags = dict(tags) if tags is not None else {WORKFLOW_TAG: name}

    def evaluate(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        run_time = context.scheduled_execution_time
        session = schedule.session_for(run_time)
        if session is None:
            return dg.SkipReason(
                f"{run_time.isoformat()} is not {schedule.form} + {schedule.delay_seconds}s"
            )
        if schedule.skip_on_overtime and context.instance is not None:
            running = context.instance.get_runs(
                dg.RunsFilter(
                    job_name=job.name,
                    statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.QUEUED],
                ),
                limit=1,
            )
            if running:
                return dg.SkipReason(
                    f"skip_on_overtime: run {running[0].run_id} of {job.name} is still going"
                )
        tags = {SESSION_TIME_TAG: session.isoformat(), **base_tags}
        if context.instance is not None:
            previous = context.instance.get_runs(
                dg.RunsFilter(
                    job_name=job.name, tags={"dagster/schedule_name": f"{name}_schedule"}
                ),
                limit=1,
            )
            if previous and previous[0].tags.get(SESSION_TIME_TAG):
                tags[LAST_EXECUTED_TAG] = previous[0].tags[SESSION_TIME_TAG]
        return dg.RunRequest(run_key=None, tags=tags)

    return dg.ScheduleDefinition(
        name=f"{name}_schedule",
        cron_schedule=crons if len(crons) > 1 else crons[0],
        execution_timezone="UTC",
        job=job,
        execution_fn=evaluate,
        description=description,
        default_status=default_status,
        tags=base_tags,
    )


def consecutive_failures(
    instance: dg.DagsterInstance, job_name: str, schedule_name: str, limit: int
) -> int:
    """How many of the schedule's latest finished runs failed in a row (looks at ``limit`` runs)."""
    runs = instance.get_runs(
        dg.RunsFilter(
            job_name=job_name,
            tags={"dagster/schedule_name": schedule_name},
            statuses=[
                dg.DagsterRunStatus.SUCCESS,
                dg.DagsterRunStatus.FAILURE,
                dg.DagsterRunStatus.CANCELED,
            ],
        ),
        limit=limit,
    )
    count = 0
    for run in runs:  # newest first
        if run.status != dg.DagsterRunStatus.FAILURE:
            break
        count += 1
    return count


def pause_schedule(
    instance: dg.DagsterInstance, schedule_name: str, repository_origin_id: str | None = None
) -> list[str]:
    """Stop every stored state of the schedule (in the run's code location when known);
    returns the origin ids it stopped. The UI then shows the schedule as stopped."""
    from dagster._core.definitions.run_request import InstigatorType
    from dagster._core.scheduler.instigation import InstigatorStatus

    stopped = []
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE):
        if state.name != schedule_name:
            continue
        if repository_origin_id and state.origin.repository_origin.get_id() != repository_origin_id:
            continue
        if state.status == InstigatorStatus.STOPPED:
            continue
        instance.update_instigator_state(state.with_status(InstigatorStatus.STOPPED))
        stopped.append(state.instigator_origin_id)
    return stopped


def build_pause_sensor(name: str, job: Any, schedule_name: str, limit: int) -> dg.SensorDefinition:
    """A run-failure sensor that stops the schedule after ``limit`` scheduled runs failed in a row
    (TD disables such jobs after notifications); its tick log says why."""

    @dg.run_failure_sensor(
        name=f"{name}_pause_after_failures",
        monitored_jobs=[job],
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Stops {schedule_name} after {limit} consecutive failed scheduled runs.",
    )
    def pause_on_failures(context: dg.RunFailureSensorContext) -> dg.SkipReason:
        run = context.dagster_run
        if run.tags.get("dagster/schedule_name") != schedule_name:
            return dg.SkipReason(f"run {run.run_id} was not started by {schedule_name}")
        failures = consecutive_failures(context.instance, run.job_name, schedule_name, limit)
        if failures < limit:
            return dg.SkipReason(
                f"{schedule_name}: {failures} consecutive failed run(s), pausing at {limit}"
            )
        origin = run.remote_job_origin
        stopped = pause_schedule(
            context.instance, schedule_name, origin.repository_origin.get_id() if origin else None
        )
        message = (
            f"Paused schedule {schedule_name}: its last {failures} scheduled runs failed "
            f"(latest {run.run_id}: {context.failure_event.message or 'failed'}). "
            "Fix the cause, then turn the schedule back on in the UI."
        )
        context.log.warning(message)
        if not stopped:
            message += " (no running schedule state was found to stop)"
        return dg.SkipReason(message)

    return pause_on_failures
