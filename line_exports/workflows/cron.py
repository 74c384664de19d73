"""digdag's cron: cron4j's ``SchedulingPattern`` and ``Predictor`` over zoneinfo.

digdag (``CronScheduler``, treasure-data/digdag ``digdag-standards``) hands every schedule form
to cron4j in the workflow's timezone, so a ``.dig`` cron follows cron4j's rules, not Vixie
cron's:

* fields ``minute hour day-of-month month day-of-week``; several patterns joined by ``|``;
* an element is ``*``, ``N``, ``A-B`` (``A > B`` wraps: ``sat-mon``) or any of those ``/S``,
  which keeps every S-th value of that list (``*/5`` in day-of-month is 1, 6, 11, ...;
  ``5/10`` is just 5);
* names ``jan``-``dec`` and ``sun``-``sat``; day-of-week ``7`` is Sunday; ``L`` in
  day-of-month is the month's last day;
* day-of-month AND day-of-week must both match (cron4j does not OR them as Vixie cron does).

Wall-clock times are resolved as ``java.util.GregorianCalendar`` does: a time in a DST gap is
pushed forward by the gap (02:30 on a spring-forward day runs at 03:30), an ambiguous time
takes the standard-time (later) instant.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
LAST_DAY = 32
"""cron4j's value for ``L`` in day-of-month."""
SEARCH_DAYS = 366 * 30
UTC = timezone.utc


class CronError(ValueError):
    """A cron pattern cron4j would refuse; the message names the field and element."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_offset: int = 0


FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, MONTH_NAMES, 1),
    _Field("day of week", 0, 7, DAY_NAMES, 0),
)


def _value(text: str, spec: _Field) -> int:
    if spec.name == "day of month" and text.upper() == "L":
        return LAST_DAY
    if text.isdigit():
        number = int(text)
        if not spec.low <= number <= spec.high:
            raise CronError(f"{spec.name}: {number} is outside {spec.low}-{spec.high}")
        return number % 7 if spec.name == "day of week" else number
    if text.lower() in spec.names:
        return spec.names.index(text.lower()) + spec.name_offset
    names = f" or a name ({', '.join(spec.names)})" if spec.names else ""
    raise CronError(f"{spec.name}: {text!r} is not a number{names}")


def _range(text: str, spec: _Field) -> list[int]:
    if text == "*":
        return list(range(spec.low, spec.high + 1))
    bounds = [p for p in text.split("-") if p]
    if len(bounds) not in (1, 2):
        raise CronError(f"{spec.name}: {text!r} is not a value or a range")
    first = _value(bounds[0], spec)
    if len(bounds) == 1:
        return [first]
    last = _value(bounds[1], spec)
    if first <= last:
        return list(range(first, last + 1))
    return [*range(first, spec.high + 1), *range(spec.low, last + 1)]  # cron4j wraps


def _field(text: str, spec: _Field) -> frozenset[int] | None:
    """The values of one field (``None`` for ``*``: always true)."""
    if text == "*":
        return None
    values: list[int] = []
    for element in (e for e in text.split(",") if e):
        parts = [p for p in element.split("/") if p]
        if len(parts) not in (1, 2):
            raise CronError(f"{spec.name}: {element!r} is not an element cron4j reads")
        listed = _range(parts[0], spec)
        if len(parts) == 2:
            if not parts[1].isdigit() or int(parts[1]) < 1:
                raise CronError(f"{spec.name}: step {parts[1]!r} in {element!r} must be >= 1")
            listed = listed[:: int(parts[1])]
        values.extend(listed)
    if not values:
        raise CronError(f"{spec.name}: {text!r} selects nothing")
    return frozenset(v % 7 if spec.name == "day of week" else v for v in values)


@dataclass(frozen=True)
class CronPart:
    """One ``|``-separated cron4j pattern: the allowed values of each field (None = any)."""

    minutes: frozenset[int] | None
    hours: frozenset[int] | None
    days: frozenset[int] | None
    months: frozenset[int] | None
    weekdays: frozenset[int] | None

    def day_matches(self, day: date) -> bool:
        if self.months is not None and day.month not in self.months:
            return False
        if self.days is not None and day.day not in self.days:
            last = calendar.monthrange(day.year, day.month)[1]
            if not (LAST_DAY in self.days and day.day == last):
                return False
        return self.weekdays is None or (day.isoweekday() % 7) in self.weekdays

    def matches(self, wall: datetime) -> bool:
        return (
            (self.minutes is None or wall.minute in self.minutes)
            and (self.hours is None or wall.hour in self.hours)
            and self.day_matches(wall.date())
        )

    def clock(self) -> list[tuple[int, int]]:
        """(hour, minute) pairs of a matching day, in order."""
        hours = sorted(self.hours) if self.hours is not None else range(24)
        minutes = sorted(self.minutes) if self.minutes is not None else range(60)
        return [(h, m) for h in hours for m in minutes]


def resolve_wall(day: date, hour: int, minute: int, tz: ZoneInfo) -> datetime:
    """A local wall-clock time as an instant, the way GregorianCalendar resolves it."""
    wall = datetime(day.year, day.month, day.day, hour, minute)
    early, late = wall.replace(tzinfo=tz, fold=0), wall.replace(tzinfo=tz, fold=1)
    if early.utcoffset() == late.utcoffset():
        return early
    exists = early.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall
    # Ambiguous: standard time, the later instant. Gap: fold=0 keeps the offset from before
    # the transition, which is the forward push (02:30 PST = 03:30 PDT).
    return late if exists else early


@dataclass(frozen=True)
class CronPattern:
    """A cron4j scheduling pattern evaluated in ``timezone``."""

    text: str
    parts: tuple[CronPart, ...]
    timezone: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def matches(self, moment: datetime) -> bool:
        wall = moment.astimezone(self.zone)
        return any(p.matches(wall) for p in self.parts)

    def next_after(self, moment: datetime) -> datetime | None:
        """The first tick strictly after ``moment`` (cron4j's ``Predictor.nextMatchingTime``)."""
        tz = self.zone
        start = moment.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        if self.matches(start):
            return start
        wall = start.astimezone(tz)
        found = [t for t in (self._next_wall(p, wall, tz) for p in self.parts) if t is not None]
        return min(found) if found else None

    @staticmethod
    def _next_wall(part: CronPart, wall: datetime, tz: ZoneInfo) -> datetime | None:
        clock = part.clock()
        day = wall.date()
        for offset in range(SEARCH_DAYS):
            current = day + timedelta(days=offset)
            if not part.day_matches(current):
                continue
            for hour, minute in clock:
                if offset == 0 and (hour, minute) < (wall.hour, wall.minute):
                    continue
                return resolve_wall(current, hour, minute, tz).astimezone(UTC)
        return None


def parse_pattern(text: str, timezone_name: str) -> CronPattern:
    """cron4j's pattern syntax (see the module docstring); raises :class:`CronError`."""
    parts = []
    for alternative in str(text).split("|"):
        fields = alternative.split()
        if len(fields) != 5:
            raise CronError(
                f"cron {alternative.strip()!r} must have 5 fields "
                f"(minute hour day-of-month month day-of-week), found {len(fields)}"
            )
        parts.append(CronPart(*(_field(f, spec) for f, spec in zip(fields, FIELDS, strict=True))))
    return CronPattern(str(text).strip(), tuple(parts), timezone_name)
