"""Schedules as TD and digdag define them, on Dagster's scheduler.

* ``cron>:`` (and a plain string) is TD's cron: named days and months, ranges, lists, ``*/n``;
  as TD documents, ``*/n`` in day-of-month means every n-th day counted from the n-th
  (``*/5`` = 5, 10, ... 30), and when day-of-month and day-of-week are both restricted, the one
  that runs more often wins (``0 0 1 * 1`` runs on Mondays).
* ``@hourly`` / ``@daily`` (also ``@weekly``, ``@monthly``, ``@yearly``) are TD's shortcuts.
* ``hourly>: MM:SS``, ``daily>: HH:MM:SS``, ``weekly>: DDD,HH:MM:SS``, ``monthly>: D,HH:MM:SS``
  and ``minutes_interval>: M`` are digdag's: the session time is the start of the hour/day and
  the run starts MM:SS / HH:MM:SS later.
* ``delay: SECONDS`` is TD's "delay execution": the run starts later, the session time
  (``TD_SCHEDULED_TIME()``, ``${session_time}``) stays the tick.

Both offsets are one mechanism: a tick of a base cron plus a delay. The Dagster schedule fires
at tick + delay (rounded up to the minute) and tags the run with the tick, which the query sees.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg

from line_exports.session import SESSION_TIME_TAG

WORKFLOW_TAG = "line_exports/workflow"
DEFAULT_PAUSE_AFTER_FAILURES = 3

DAY_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
MONTH_NAMES = {
    m: i + 1
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, MONTH_NAMES),
    ("day of week", 0, 6, DAY_NAMES),
)
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


class ScheduleError(ValueError):
    """A schedule that cannot be read; the message names the part that is wrong."""


@dataclass(frozen=True)
class Cron:
    """An expanded cron: the allowed values of each field (``None`` = any)."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...] | None
    months: tuple[int, ...] | None
    weekdays: tuple[int, ...] | None

    def matches(self, moment: datetime) -> bool:
        """Is this wall-clock time a tick?"""
        return (
            moment.second == 0
            and moment.minute in self.minutes
            and moment.hour in self.hours
            and (self.days is None or moment.day in self.days)
            and (self.months is None or moment.month in self.months)
            and (self.weekdays is None or (moment.isoweekday() % 7) in self.weekdays)
        )

    def text(self) -> str:
        return " ".join(
            _render(v, lo, hi)
            for v, (_, lo, hi, _names) in zip(
                (self.minutes, self.hours, self.days, self.months, self.weekdays),
                FIELDS,
                strict=True,
            )
        )


def _render(values: tuple[int, ...] | None, lo: int, hi: int) -> str:
    if values is None or tuple(values) == tuple(range(lo, hi + 1)):
        return "*"
    return ",".join(str(v) for v in values)


def _value(text: str, field: str, lo: int, hi: int, names: Mapping[str, int]) -> int:
    token = text.strip().lower()
    if token in names:
        return names[token]
    if not token.isdigit():
        raise ScheduleError(
            f"{field}: {text!r} is not a number{' or a name (' + ', '.join(names) + ')' if names else ''}"
        )
    number = int(token)
    if field == "day of week" and number == 7:
        return 0
    if not lo <= number <= hi:
        raise ScheduleError(f"{field}: {number} is outside {lo}-{hi}")
    return number


def _field(text: str, index: int) -> tuple[int, ...] | None:
    field, lo, hi, names = FIELDS[index]
    if text == "*":
        return None
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ScheduleError(f"{field}: empty list item in {text!r}")
        step = 1
        base = part
        if "/" in part:
            base, _, step_text = part.partition("/")
            if not step_text.isdigit() or int(step_text) < 1:
                raise ScheduleError(
                    f"{field}: step {step_text!r} in {part!r} must be a positive number"
                )
            step = int(step_text)
        if base == "*":
            # TD counts */n in day-of-month from the n-th day (*/5 = 5, 10, ...), elsewhere from the minimum.
            start, end = (step, hi) if (field == "day of month" and "/" in part) else (lo, hi)
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _value(first, field, lo, hi, names), _value(last, field, lo, hi, names)
            if end < start:
                raise ScheduleError(f"{field}: range {base!r} runs backwards")
        else:
            start = _value(base, field, lo, hi, names)
            end = hi if "/" in part else start
        values.update(range(start, end + 1, step))
    if not values:
        raise ScheduleError(f"{field}: {text!r} selects nothing")
    ordered = tuple(sorted(values))
    return None if ordered == tuple(range(lo, hi + 1)) else ordered


def parse_cron(text: str) -> Cron:
    """TD's cron (5 fields, names, ranges, lists, steps) or a shortcut such as ``@daily``."""
    source = str(text).strip()
    source = SHORTCUTS.get(source.lower(), source)
    if source.startswith("@"):
        raise ScheduleError(f"unknown shortcut {text!r}; use one of {', '.join(SHORTCUTS)}")
    parts = source.split()
    if len(parts) != 5:
        raise ScheduleError(
            f"cron {text!r} must have 5 fields (minute hour day-of-month month day-of-week), found {len(parts)}"
        )
    fields = [_field(p, i) for i, p in enumerate(parts)]
    minutes = fields[0] or tuple(range(60))
    hours = fields[1] or tuple(range(24))
    days, months, weekdays = fields[2], fields[3], fields[4]
    if days is not None and weekdays is not None:
        # TD: "the specification requesting to execute more often is followed".
        if len(weekdays) / 7 >= len(days) / 31:
            days = None
        else:
            weekdays = None
    return Cron(minutes, hours, days, months, weekdays)


def _clock(value: Any, form: str, parts: int) -> int:
    """``HH:MM:SS`` / ``MM:SS`` as seconds (YAML 1.1 may already have made it base-60 seconds)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    pieces = text.split(":")
    if len(pieces) != parts or not all(p.isdigit() for p in pieces):
        raise ScheduleError(
            f"{form} {text!r} must look like {'HH:MM:SS' if parts == 3 else 'MM:SS'}"
        )
    numbers = [int(p) for p in pieces]
    limits = (24, 60, 60)[-parts:]
    for number, limit in zip(numbers, limits, strict=True):
        if number >= limit:
            raise ScheduleError(f"{form} {text!r}: {number} is out of range")
    seconds = 0
    for number in numbers:
        seconds = seconds * 60 + number
    return seconds


@dataclass(frozen=True)
class WorkflowSchedule:
    """A base cron whose ticks are session times, and the delay before each run starts."""

    form: str
    """As written (for the UI), e.g. ``daily>: 07:00:00``."""
    cron: Cron
    delay_seconds: int = 0
    timezone: str = "UTC"
    pause_after_failures: int = DEFAULT_PAUSE_AFTER_FAILURES
    start: datetime | None = None
    end: datetime | None = None
    skip_on_overtime: bool = False

    @property
    def delay_minutes(self) -> int:
        return math.ceil(self.delay_seconds / 60)

    def run_crons(self) -> list[str]:
        """Dagster cron strings for tick + delay; exact when a cron can say it, else a
        daily superset whose extra ticks the evaluation skips."""
        shift = self.delay_minutes
        if shift == 0:
            return [self.cron.text()]
        by_day: dict[tuple[int, int], list[int]] = defaultdict(list)
        for hour in self.cron.hours:
            for minute in self.cron.minutes:
                total = hour * 60 + minute + shift
                by_day[(total // 1440, (total % 1440) // 60)].append(total % 60)
        day_shifts = {k for k, _ in by_day}
        c = self.cron
        exact_days = day_shifts == {0} or (c.days is None and c.months is None)
        hours_by_minutes: dict[tuple[int, tuple[int, ...]], list[int]] = defaultdict(list)
        for (day_shift, hour), minutes in by_day.items():
            key_shift = day_shift if exact_days and c.weekdays is not None else 0
            hours_by_minutes[(key_shift, tuple(sorted(set(minutes))))].append(hour)
        crons = []
        for (day_shift, minutes), hours in sorted(hours_by_minutes.items()):
            if exact_days:
                weekdays = (
                    None
                    if c.weekdays is None
                    else tuple(sorted((d + day_shift) % 7 for d in c.weekdays))
                )
                days, months = (c.days, c.months) if day_shifts == {0} else (None, None)
            else:
                days = months = weekdays = None
            crons.append(Cron(minutes, tuple(sorted(set(hours))), days, months, weekdays).text())
        return sorted(set(crons))

    def session_for(self, run_time: datetime) -> datetime | None:
        """The tick a run at ``run_time`` stands for, or None if it is a skipped superset tick."""
        tz = ZoneInfo(self.timezone)
        wall = run_time.astimezone(tz).replace(tzinfo=None) - timedelta(minutes=self.delay_minutes)
        if not self.cron.matches(wall):
            return None
        tick = wall.replace(tzinfo=tz)
        if self.start and tick < self.start:
            return None
        if self.end and tick > self.end:
            return None
        return tick

    def ticks(self, after: datetime, count: int) -> Iterator[tuple[datetime, datetime]]:
        """The next ``count`` (run time, session time) pairs after ``after`` (Dagster's cron iterator)."""
        from dagster._utils.schedules import schedule_execution_time_iterator

        crons = self.run_crons()
        found = 0
        for run_time in schedule_execution_time_iterator(
            after.timestamp(), crons if len(crons) > 1 else crons[0], self.timezone
        ):
            if run_time <= after:
                continue
            session = self.session_for(run_time)
            if session is not None:
                found += 1
                yield run_time, session
                if found >= count:
                    return
            if self.end and run_time - timedelta(minutes=self.delay_minutes) > self.end:
                return


def parse_schedule(spec: Any, timezone: str) -> WorkflowSchedule:
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
    offset = 0
    if form == "cron>":
        cron = parse_cron(str(value))
    elif form == "hourly>":
        cron, offset = parse_cron("0 * * * *"), _clock(value, form, 2)
    elif form == "daily>":
        cron, offset = parse_cron("0 0 * * *"), _clock(value, form, 3)
    elif form == "weekly>":
        day, _, clock = str(value).partition(",")
        if day.strip().lower()[:3] not in DAY_NAMES:
            raise ScheduleError(f"weekly> {value!r}: {day!r} is not a day (Sun, Mon, ... Sat)")
        cron, offset = parse_cron(f"0 0 * * {day.strip().lower()[:3]}"), _clock(clock, form, 3)
    elif form == "monthly>":
        day, _, clock = str(value).partition(",")
        if not day.strip().isdigit() or not 1 <= int(day) <= 31:
            raise ScheduleError(f"monthly> {value!r}: {day!r} is not a day of month (1-31)")
        cron, offset = parse_cron(f"0 0 {int(day)} * *"), _clock(clock, form, 3)
    else:
        if not str(value).isdigit() or not 1 <= int(value) <= 60:
            raise ScheduleError(f"minutes_interval> {value!r} must be a number of minutes (1-60)")
        cron = parse_cron(f"*/{int(value)} * * * *")
    delay = spec.get("delay", 0) or 0
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
        raise ScheduleError(f"delay {delay!r} must be a whole number of seconds >= 0")
    pause = spec.get("pause_after_failures", DEFAULT_PAUSE_AFTER_FAILURES)
    if isinstance(pause, bool) or not isinstance(pause, int) or pause < 0:
        raise ScheduleError(
            f"pause_after_failures {pause!r} must be a whole number >= 0 (0 never pauses)"
        )
    tz = ZoneInfo(timezone)
    bounds = []
    for key in ("start", "end"):
        raw = spec.get(key)
        if raw is None:
            bounds.append(None)
            continue
        try:
            moment = datetime.fromisoformat(str(raw))
        except ValueError:
            raise ScheduleError(f"{key} {raw!r} must be a date (YYYY-MM-DD)") from None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=tz)
        bounds.append(
            moment
            + (
                timedelta(days=1) - timedelta(seconds=1)
                if key == "end" and len(str(raw)) == 10
                else timedelta()
            )
        )
    return WorkflowSchedule(
        form=f"{form} {value}",
        cron=cron,
        delay_seconds=offset + delay,
        timezone=timezone,
        pause_after_failures=pause,
        start=bounds[0],
        end=bounds[1],
        skip_on_overtime=bool(spec.get("skip_on_overtime", False)),
    )


def build_schedule(
    name: str, job: Any, schedule: WorkflowSchedule, description: str
) -> dg.ScheduleDefinition:
    """The Dagster schedule: fires at tick + delay, tags the run with the tick (its session time)."""
    crons = schedule.run_crons()

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
        return dg.RunRequest(
            run_key=None, tags={SESSION_TIME_TAG: session.isoformat(), WORKFLOW_TAG: name}
        )

    return dg.ScheduleDefinition(
        name=f"{name}_schedule",
        cron_schedule=crons if len(crons) > 1 else crons[0],
        execution_timezone=schedule.timezone,
        job=job,
        execution_fn=evaluate,
        description=description,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        tags={WORKFLOW_TAG: name},
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
