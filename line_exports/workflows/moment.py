"""Moment.js as digdag bundles it (moment 2.21, locale ``en``), over zoneinfo.

digdag evaluates ``${...}`` in a JavaScript context whose local time zone is the workflow's
``timezone`` (``GraalJsEngine``: ``Context.Builder.timeZone``), so ``moment(session_time)``
shows the session in that zone. This is moment's documented API (momentjs.com/docs) for the
calls workflows make: parsing ISO 8601 strings, epoch numbers and explicit formats; ``add`` /
``subtract`` (calendar units move the wall clock, time units move the instant); ``startOf`` /
``endOf``; getters and setters; ``format`` with moment's tokens and long formats; ``utc`` /
``local`` / ``utcOffset``; ``unix`` / ``valueOf`` / ``toISOString``; ``diff``; comparisons.
``tz(name)`` is moment-timezone's (digdag does not bundle it; it is accepted here).

Wall-clock times resolve as JavaScript's Date does: a time in a DST gap moves forward, an
ambiguous one takes the earlier instant.
"""

from __future__ import annotations

import calendar
import math
import re
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MomentError(ValueError):
    """A call moment does not have (or an argument it cannot take)."""


UNITS = {
    **dict.fromkeys(("y", "year", "years"), "year"),
    **dict.fromkeys(("Q", "quarter", "quarters"), "quarter"),
    **dict.fromkeys(("M", "month", "months"), "month"),
    **dict.fromkeys(("w", "week", "weeks"), "week"),
    **dict.fromkeys(("W", "isoWeek", "isoWeeks", "isoweek", "isoweeks"), "isoWeek"),
    **dict.fromkeys(("d", "day", "days"), "day"),
    **dict.fromkeys(("D", "date", "dates"), "date"),
    **dict.fromkeys(("h", "hour", "hours"), "hour"),
    **dict.fromkeys(("m", "minute", "minutes"), "minute"),
    **dict.fromkeys(("s", "second", "seconds"), "second"),
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), "millisecond"),
}
MS = {"week": 604_800_000, "day": 86_400_000, "hour": 3_600_000, "minute": 60_000, "second": 1000}
MS["millisecond"] = 1
MONTHS = [calendar.month_name[i] for i in range(1, 13)]
WEEKDAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
LONG_FORMATS = {
    "LTS": "h:mm:ss A",
    "LT": "h:mm A",
    "L": "MM/DD/YYYY",
    "LL": "MMMM D, YYYY",
    "LLL": "MMMM D, YYYY h:mm A",
    "LLLL": "dddd, MMMM D, YYYY h:mm A",
    "l": "M/D/YYYY",
    "ll": "MMM D, YYYY",
    "lll": "MMM D, YYYY h:mm A",
    "llll": "ddd, MMM D, YYYY h:mm A",
}
LONG_TOKEN = re.compile(r"(\[[^\[]*\])|(\\)?(LTS|LT|LL?L?L?|l{1,4})")
TOKEN = re.compile(
    r"(\[[^\[]*\])|(\\)?([Hh]mm(ss)?|Mo|MM?M?M?|Do|DDDo|DD?D?D?|ddd?d?|do?|w[o|w]?|W[o|W]?|Qo?"
    r"|YYYYYY|YYYYY|YYYY|YY|gg(ggg?)?|GG(GGG?)?|e|E|a|A|hh?|HH?|kk?|mm?|ss?|S{1,9}|x|X|zz?|ZZ?|.)",
    re.S,
)
ISO = re.compile(
    r"^\s*([+-]\d{6}|\d{4})-?(\d\d)(?:-?(\d\d))?"
    r"(?:[T ](\d\d)(?::?(\d\d)(?::?(\d\d)(?:[.,](\d+))?)?)?)?"
    r"\s*(Z|[+-]\d\d(?::?\d\d)?)?\s*$"
)


def ordinal(number: int) -> str:
    """English ordinals as moment's ``en`` locale writes them (1st, 2nd, 3rd, 11th...)."""
    if (number % 100) // 10 == 1:
        return f"{number}th"
    return f"{number}" + {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")


def resolve(wall: datetime, zone: tzinfo) -> datetime:
    """A naive wall time in ``zone`` as an instant, the way a JavaScript Date resolves it."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _offset_minutes(text: str) -> int:
    if text == "Z":
        return 0
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return sign * (int(digits[:2]) * 60 + int(digits[2:4] or 0))


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or value is None:
        raise MomentError(f"{what} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        return value
    try:
        return float(str(value).strip())
    except ValueError:
        raise MomentError(f"{what} must be a number, got {value!r}") from None


def _unit(name: Any) -> str:
    unit = UNITS.get(str(name)) or UNITS.get(str(name).lower())
    if unit is None:
        raise MomentError(f"unknown unit {name!r} (years, months, weeks, days, hours, ...)")
    return unit


class Moment:
    """A moment: an instant (ms since the epoch) and the zone it is shown in."""

    def __init__(self, ms: int, zone: tzinfo, is_utc: bool = False) -> None:
        self.ms = int(ms)
        self.zone = zone
        self.is_utc = is_utc

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def create(cls, local: tzinfo, args: list[Any], utc: bool = False) -> Moment:
        zone: tzinfo = UTC if utc else local
        if not args or args[0] is None and len(args) == 1:
            if args and args[0] is None:
                raise MomentError("moment(null) is an invalid date")
            now = datetime.now(UTC)
            return cls(int(now.timestamp() * 1000), zone, utc)
        value = args[0]
        if isinstance(value, Moment):
            return cls(value.ms, UTC if utc else value.zone, utc or value.is_utc)
        if isinstance(value, bool):
            raise MomentError(f"moment({value!r}) is an invalid date")
        if isinstance(value, (int, float)):
            return cls(int(value), zone, utc)
        if isinstance(value, str):
            if len(args) > 1 and isinstance(args[1], str):
                return cls(_parse_format(value, args[1], zone), zone, utc)
            return cls(_parse_iso(value, zone), zone, utc)
        raise MomentError(f"moment() cannot read {type(value).__name__} {value!r}")

    def clone(self) -> Moment:
        return Moment(self.ms, self.zone, self.is_utc)

    # -- views --------------------------------------------------------------------------------
    @property
    def instant(self) -> datetime:
        return EPOCH + timedelta(milliseconds=self.ms)

    @property
    def wall(self) -> datetime:
        return self.instant.astimezone(self.zone)

    def _set_wall(self, wall: datetime) -> Moment:
        naive = wall.replace(tzinfo=None)
        self.ms = round((resolve(naive, self.zone) - EPOCH) / timedelta(milliseconds=1))
        return self

    def utcOffset(self, *args: Any) -> Any:  # noqa: N802 - moment's name
        if not args:
            offset = self.wall.utcoffset() or timedelta()
            return int(offset.total_seconds() // 60)
        value = args[0]
        minutes = _offset_minutes(value) if isinstance(value, str) else _number(value, "utcOffset")
        if isinstance(value, (int, float)) and abs(minutes) < 16:
            minutes *= 60
        self.zone = timezone(timedelta(minutes=minutes))
        self.is_utc = minutes == 0
        return self

    def utc(self) -> Moment:
        self.zone, self.is_utc = UTC, True
        return self

    def local(self, local: tzinfo) -> Moment:
        self.zone, self.is_utc = local, False
        return self

    def tz(self, *args: Any) -> Any:
        if not args:
            return getattr(self.zone, "key", None)
        try:
            self.zone = ZoneInfo(str(args[0]))
        except (KeyError, ValueError):
            raise MomentError(f"unknown time zone {args[0]!r}") from None
        self.is_utc = False
        return self

    # -- arithmetic -------------------------------------------------------------------------
    def add(self, amount: Any, unit: Any = "ms", sign: int = 1) -> Moment:
        if isinstance(amount, dict):
            for key, value in amount.items():
                self.add(value, key, sign)
            return self
        if isinstance(amount, str) and not _is_numeric(amount):  # add('days', 1), deprecated
            amount, unit = unit, amount
        number = _number(amount, "the amount") * sign
        name = _unit(unit)
        if name in ("year", "quarter", "month"):
            months = round(number) * {"year": 12, "quarter": 3, "month": 1}[name]
            return self._add_months(months)
        if name in ("day", "date", "week", "isoWeek"):
            days = round(number) * (7 if name in ("week", "isoWeek") else 1)
            wall = self.wall.replace(tzinfo=None) + timedelta(days=days)
            return self._set_wall(wall)
        self.ms += round(number * MS[name])
        return self

    def subtract(self, amount: Any, unit: Any = "ms") -> Moment:
        return self.add(amount, unit, -1)

    def _add_months(self, months: int) -> Moment:
        wall = self.wall.replace(tzinfo=None)
        index = wall.year * 12 + wall.month - 1 + months
        year, month = divmod(index, 12)
        day = min(wall.day, calendar.monthrange(year, month + 1)[1])
        return self._set_wall(wall.replace(year=year, month=month + 1, day=day))

    def startOf(self, unit: Any) -> Moment:  # noqa: N802
        name = _unit(unit)
        wall = self.wall.replace(tzinfo=None)
        if name == "year":
            wall = wall.replace(month=1, day=1)
        elif name == "quarter":
            wall = wall.replace(month=(wall.month - 1) // 3 * 3 + 1, day=1)
        elif name == "month":
            wall = wall.replace(day=1)
        elif name == "week":
            wall -= timedelta(days=wall.isoweekday() % 7)
        elif name == "isoWeek":
            wall -= timedelta(days=wall.isoweekday() - 1)
        if name in ("year", "quarter", "month", "week", "isoWeek", "day", "date"):
            wall = wall.replace(hour=0, minute=0, second=0, microsecond=0)
        elif name == "hour":
            wall = wall.replace(minute=0, second=0, microsecond=0)
        elif name == "minute":
            wall = wall.replace(second=0, microsecond=0)
        elif name == "second":
            wall = wall.replace(microsecond=0)
        return self._set_wall(wall)

    def endOf(self, unit: Any) -> Moment:  # noqa: N802
        name = _unit(unit)
        if name == "millisecond":
            return self
        step = {"date": "day", "isoWeek": "week"}.get(name, name)
        return self.startOf(name).add(1, step).subtract(1, "ms")

    # -- getters / setters ---------------------------------------------------------------------
    def _field(self, name: str, args: tuple[Any, ...]) -> Any:
        wall = self.wall
        current = {
            "year": wall.year,
            "month": wall.month - 1,
            "date": wall.day,
            "hour": wall.hour,
            "minute": wall.minute,
            "second": wall.second,
            "millisecond": wall.microsecond // 1000,
        }[name]
        if not args:
            return current
        value = int(_number(args[0], name))
        if name == "month":
            return self._add_months(value - current)
        if name == "year":
            naive = wall.replace(tzinfo=None)
            day = min(naive.day, calendar.monthrange(value, naive.month)[1])
            return self._set_wall(naive.replace(year=value, day=day))
        if name == "date":
            return self.add(value - current, "day")
        return self.add(value - current, name)

    def year(self, *a: Any) -> Any:
        return self._field("year", a)

    def month(self, *a: Any) -> Any:
        return self._field("month", a)

    def date(self, *a: Any) -> Any:
        return self._field("date", a)

    def hour(self, *a: Any) -> Any:
        return self._field("hour", a)

    def minute(self, *a: Any) -> Any:
        return self._field("minute", a)

    def second(self, *a: Any) -> Any:
        return self._field("second", a)

    def millisecond(self, *a: Any) -> Any:
        return self._field("millisecond", a)

    years, months, dates, hours, minutes, seconds, milliseconds = (
        year,
        month,
        date,
        hour,
        minute,
        second,
        millisecond,
    )

    def day(self, *a: Any) -> Any:
        current = self.wall.isoweekday() % 7
        return current if not a else self.add(int(_number(a[0], "day")) - current, "day")

    days = weekday = day

    def isoWeekday(self, *a: Any) -> Any:  # noqa: N802
        current = self.wall.isoweekday()
        return current if not a else self.add(int(_number(a[0], "isoWeekday")) - current, "day")

    def dayOfYear(self, *a: Any) -> Any:  # noqa: N802
        current = self.wall.timetuple().tm_yday
        return current if not a else self.add(int(_number(a[0], "dayOfYear")) - current, "day")

    def quarter(self) -> int:
        return (self.wall.month - 1) // 3 + 1

    def week(self) -> int:
        return _week_of_year(self.wall.date(), 0, 6)[0]

    weeks = week

    def isoWeek(self) -> int:  # noqa: N802
        return _week_of_year(self.wall.date(), 1, 4)[0]

    isoWeeks = isoWeek  # noqa: N815

    def weekYear(self) -> int:  # noqa: N802
        return _week_of_year(self.wall.date(), 0, 6)[1]

    def isoWeekYear(self) -> int:  # noqa: N802
        return _week_of_year(self.wall.date(), 1, 4)[1]

    def daysInMonth(self) -> int:  # noqa: N802
        wall = self.wall
        return calendar.monthrange(wall.year, wall.month)[1]

    def unix(self) -> int:
        return math.floor(self.ms / 1000)

    def valueOf(self) -> int:  # noqa: N802
        return self.ms

    def isValid(self) -> bool:  # noqa: N802
        return True

    # -- comparisons --------------------------------------------------------------------------
    def _other(self, other: Any) -> Moment:
        return other if isinstance(other, Moment) else Moment.create(self.zone, [other])

    def diff(self, other: Any, unit: Any = "ms", precise: Any = False) -> float:
        that = self._other(other)
        name = _unit(unit)
        if name in ("year", "quarter", "month"):
            result = _month_diff(self, that) / {"year": 12, "quarter": 3, "month": 1}[name]
        else:
            delta = self.ms - that.ms
            if name in ("day", "date", "week", "isoWeek"):
                delta -= (that.utcOffset() - self.utcOffset()) * 60_000
            result = delta / MS[{"date": "day", "isoWeek": "week"}.get(name, name)]
        if precise:
            return result
        return math.floor(result) if result >= 0 else math.ceil(result)

    def _compare(self, other: Any, unit: Any) -> tuple[int, int, int]:
        that = self._other(other)
        if unit is None:
            return self.ms, that.ms, that.ms
        start = that.clone().startOf(unit).ms
        end = that.clone().endOf(unit).ms
        return self.ms, start, end

    def isBefore(self, other: Any, unit: Any = None) -> bool:  # noqa: N802
        mine, start, end = self._compare(other, unit)
        return (mine < start) if unit is not None else mine < start

    def isAfter(self, other: Any, unit: Any = None) -> bool:  # noqa: N802
        mine, start, end = self._compare(other, unit)
        return mine > end

    def isSame(self, other: Any, unit: Any = None) -> bool:  # noqa: N802
        mine, start, end = self._compare(other, unit)
        return start <= mine <= end

    def isSameOrBefore(self, other: Any, unit: Any = None) -> bool:  # noqa: N802
        return self.isSame(other, unit) or self.isBefore(other, unit)

    def isSameOrAfter(self, other: Any, unit: Any = None) -> bool:  # noqa: N802
        return self.isSame(other, unit) or self.isAfter(other, unit)

    # -- output ------------------------------------------------------------------------------
    def format(self, fmt: Any = None) -> str:
        if fmt is None or fmt == "":
            fmt = "YYYY-MM-DDTHH:mm:ss[Z]" if self.is_utc else "YYYY-MM-DDTHH:mm:ssZ"
        return format_moment(self, str(fmt))

    def toISOString(self) -> str:  # noqa: N802
        return format_moment(self.clone().utc(), "YYYY-MM-DDTHH:mm:ss.SSS[Z]")

    toJSON = toISOString  # noqa: N815

    def toString(self) -> str:  # noqa: N802
        return format_moment(self, "ddd MMM DD YYYY HH:mm:ss [GMT]ZZ")

    def __repr__(self) -> str:
        return f"moment({self.format()})"


def _is_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _month_diff(a: Moment, b: Moment) -> float:
    """moment's ``monthDiff``: whole months plus the fraction of the month in between."""
    wa, wb = a.wall, b.wall
    whole = (wb.year - wa.year) * 12 + (wb.month - wa.month)
    anchor = a.clone()._add_months(whole)
    if b.ms - anchor.ms < 0:
        anchor2 = a.clone()._add_months(whole - 1)
        adjust = (b.ms - anchor.ms) / (anchor.ms - anchor2.ms)
    else:
        anchor2 = a.clone()._add_months(whole + 1)
        adjust = (b.ms - anchor.ms) / (anchor2.ms - anchor.ms)
    return -(whole + adjust) or 0.0


def _week_of_year(day: date, dow: int, doy: int) -> tuple[int, int]:
    """moment's ``weekOfYear`` (en: dow 0, doy 6; ISO: dow 1, doy 4): (week, week year)."""

    def first_offset(year: int) -> int:
        fwd = 7 + dow - doy
        fwdlw = (7 + (date(year, 1, fwd).isoweekday() % 7) - dow) % 7
        return -fwdlw + fwd - 1

    def weeks_in(year: int) -> int:
        days = 366 if calendar.isleap(year) else 365
        return (days - first_offset(year) + first_offset(year + 1)) // 7

    year = day.year
    week = (day.timetuple().tm_yday - first_offset(year) - 1) // 7 + 1
    if week < 1:
        return week + weeks_in(year - 1), year - 1
    if week > weeks_in(year):
        return week - weeks_in(year), year + 1
    return week, year


def _offset_text(moment: Moment, sep: str) -> str:
    minutes = moment.utcOffset()
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}{sep}{minutes % 60:02d}"


def _token(moment: Moment, token: str) -> str:
    w = moment.wall
    hour12 = w.hour % 12 or 12
    week = _week_of_year(w.date(), 0, 6)
    iso = _week_of_year(w.date(), 1, 4)
    dow = w.isoweekday() % 7
    values: dict[str, Any] = {
        "M": w.month,
        "Mo": ordinal(w.month),
        "MM": f"{w.month:02d}",
        "MMM": MONTHS[w.month - 1][:3],
        "MMMM": MONTHS[w.month - 1],
        "Q": (w.month - 1) // 3 + 1,
        "Qo": ordinal((w.month - 1) // 3 + 1),
        "D": w.day,
        "Do": ordinal(w.day),
        "DD": f"{w.day:02d}",
        "DDD": w.timetuple().tm_yday,
        "DDDo": ordinal(w.timetuple().tm_yday),
        "DDDD": f"{w.timetuple().tm_yday:03d}",
        "d": dow,
        "do": ordinal(dow),
        "dd": WEEKDAYS[dow][:2],
        "ddd": WEEKDAYS[dow][:3],
        "dddd": WEEKDAYS[dow],
        "e": dow,
        "E": w.isoweekday(),
        "w": week[0],
        "wo": ordinal(week[0]),
        "ww": f"{week[0]:02d}",
        "W": iso[0],
        "Wo": ordinal(iso[0]),
        "WW": f"{iso[0]:02d}",
        "YY": f"{w.year % 100:02d}",
        "YYYY": f"{w.year:04d}",
        "YYYYY": f"{w.year:05d}",
        "YYYYYY": f"{'-' if w.year < 0 else '+'}{abs(w.year):06d}",
        "Y": w.year,
        "gg": f"{week[1] % 100:02d}",
        "gggg": f"{week[1]:04d}",
        "ggggg": f"{week[1]:05d}",
        "GG": f"{iso[1] % 100:02d}",
        "GGGG": f"{iso[1]:04d}",
        "GGGGG": f"{iso[1]:05d}",
        "a": "am" if w.hour < 12 else "pm",
        "A": "AM" if w.hour < 12 else "PM",
        "H": w.hour,
        "HH": f"{w.hour:02d}",
        "h": hour12,
        "hh": f"{hour12:02d}",
        "k": w.hour or 24,
        "kk": f"{w.hour or 24:02d}",
        "m": w.minute,
        "mm": f"{w.minute:02d}",
        "s": w.second,
        "ss": f"{w.second:02d}",
        "hmm": f"{hour12}{w.minute:02d}",
        "hmmss": f"{hour12}{w.minute:02d}{w.second:02d}",
        "Hmm": f"{w.hour}{w.minute:02d}",
        "Hmmss": f"{w.hour}{w.minute:02d}{w.second:02d}",
        "X": moment.unix(),
        "x": moment.ms,
        "Z": _offset_text(moment, ":"),
        "ZZ": _offset_text(moment, ""),
    }
    if token in values:
        return str(values[token])
    if token.startswith("S"):
        return f"{moment.ms % 1000:03d}{'0' * 6}"[: len(token)]
    if token in ("z", "zz"):
        if moment.is_utc:
            return "UTC"
        return w.tzname() or "" if isinstance(moment.zone, ZoneInfo) else ""
    return token


def format_moment(moment: Moment, fmt: str) -> str:
    """moment's ``format``: long formats expanded, then each token replaced."""
    for _ in range(5):  # long formats may nest
        expanded = LONG_TOKEN.sub(
            lambda m: m.group(0) if m.group(1) or m.group(2) else LONG_FORMATS[m.group(3)], fmt
        )
        if expanded == fmt:
            break
        fmt = expanded
    out = []
    for match in TOKEN.finditer(fmt):
        if match.group(1):
            out.append(match.group(1)[1:-1])
        elif match.group(2):
            out.append(match.group(3))
        else:
            out.append(_token(moment, match.group(3)))
    return "".join(out)


def _parse_iso(text: str, zone: tzinfo) -> int:
    match = ISO.match(text)
    if not match:
        raise MomentError(
            f"moment({text!r}): not an ISO 8601 date (give a format: moment(text, 'YYYY/MM/DD'))"
        )
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        wall = datetime(
            int(year),
            int(month),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int(((fraction or "0") + "000")[:3]) * 1000,
        )
    except ValueError as exc:
        raise MomentError(f"moment({text!r}): {exc}") from None
    return _to_ms(wall, offset, zone)


def _to_ms(wall: datetime, offset: str | None, zone: tzinfo) -> int:
    if offset is not None:
        instant = wall.replace(tzinfo=UTC) - timedelta(minutes=_offset_minutes(offset))
    else:
        instant = resolve(wall, zone)
    return round((instant - EPOCH) / timedelta(milliseconds=1))


PARSE_TOKENS = {
    "YYYY": r"(?P<year>\d{4})",
    "YY": r"(?P<year2>\d{2})",
    "MM": r"(?P<month>\d{2})",
    "M": r"(?P<month>\d{1,2})",
    "DD": r"(?P<day>\d{2})",
    "D": r"(?P<day>\d{1,2})",
    "HH": r"(?P<hour>\d{2})",
    "H": r"(?P<hour>\d{1,2})",
    "mm": r"(?P<minute>\d{2})",
    "m": r"(?P<minute>\d{1,2})",
    "ss": r"(?P<second>\d{2})",
    "s": r"(?P<second>\d{1,2})",
    "SSS": r"(?P<ms>\d{3})",
    "Z": r"(?P<offset>Z|[+-]\d\d:?\d\d)",
    "ZZ": r"(?P<offset>Z|[+-]\d\d:?\d\d)",
    "X": r"(?P<unix>-?\d+)",
    "x": r"(?P<epoch_ms>-?\d+)",
}


def _parse_format(text: str, fmt: str, zone: tzinfo) -> int:
    """``moment(text, format)`` for the numeric tokens (YYYY MM DD HH mm ss SSS Z X x)."""
    pattern = []
    for match in re.finditer(r"\[[^\]]*\]|YYYY|YY|SSS|ZZ|MM?|DD?|HH?|mm?|ss?|Z|X|x|.", fmt):
        piece = match.group(0)
        if piece.startswith("["):
            pattern.append(re.escape(piece[1:-1]))
        elif piece in PARSE_TOKENS:
            pattern.append(PARSE_TOKENS[piece])
        elif piece.isalpha():
            raise MomentError(
                f"moment(text, {fmt!r}): parsing the token {piece!r} is not supported"
            )
        else:
            pattern.append(re.escape(piece))
    found = re.match("".join(pattern), text.strip())
    if not found:
        raise MomentError(f"moment({text!r}, {fmt!r}): the text does not match the format")
    g = {k: v for k, v in found.groupdict().items() if v is not None}
    if "unix" in g:
        return int(g["unix"]) * 1000
    if "epoch_ms" in g:
        return int(g["epoch_ms"])
    year = int(g["year"]) if "year" in g else None
    if "year2" in g:  # moment: 69-99 are 19xx, 00-68 are 20xx
        year = int(g["year2"]) + (1900 if int(g["year2"]) > 68 else 2000)
    if year is None:
        year = datetime.now(zone).year
    try:
        wall = datetime(
            year,
            int(g.get("month", 1)),
            int(g.get("day", 1)),
            int(g.get("hour", 0)),
            int(g.get("minute", 0)),
            int(g.get("second", 0)),
            int(g.get("ms", 0)) * 1000,
        )
    except ValueError as exc:
        raise MomentError(f"moment({text!r}, {fmt!r}): {exc}") from None
    return _to_ms(wall, g.get("offset"), zone)
