"""Treasure Data's time functions, in plain Python: the semantics the DuckDB functions run.

Source: Treasure Data's Presto/Trino function reference, "Treasure Data functions"
(https://api-docs.treasuredata.com/en/tools/presto/api/), and its Hive UDF reference, which
share these definitions:

- the ``time`` column is UNIX seconds (an integer, UTC);
- a time string is ``yyyy-MM-dd`` or ``yyyy-MM-dd HH:mm:ss`` (``T`` or a space between, minutes
  and seconds optional, a fraction ignored), optionally followed by a zone (``+0900``,
  ``+09:00``, ``Z``, an abbreviation such as ``JST`` or ``PDT``, an IANA name); without one the
  function's ``default_timezone`` applies (``UTC`` when omitted);
- a timezone argument is an IANA name, a fixed offset, or one of the abbreviations TD accepts:
  Java's legacy three-letter IDs (``java.time.ZoneId.SHORT_IDS``: ``JST`` -> Asia/Tokyo, ``PST``
  -> America/Los_Angeles, ``EST`` -> -05:00, ...) and the daylight abbreviations TD's own
  examples use (``PDT`` -07:00, ``EDT``, ``CDT``, ``MDT``); an unknown name is an error (Java
  would silently read it as GMT);
- formats are Java ``SimpleDateFormat`` patterns (English names), weeks in TD_DATE_TRUNC,
  TD_TIME_STRING and TD_INTERVAL start on Monday (Joda-Time, which TD's functions use).
"""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class TdTimeError(ValueError):
    """A TD time function was given a value it cannot read (the message names it)."""


# java.time.ZoneId.SHORT_IDS (JDK API documentation), which java.util.TimeZone and so TD accept.
JAVA_SHORT_IDS: dict[str, str] = {
    "ACT": "Australia/Darwin",
    "AET": "Australia/Sydney",
    "AGT": "America/Argentina/Buenos_Aires",
    "ART": "Africa/Cairo",
    "AST": "America/Anchorage",
    "BET": "America/Sao_Paulo",
    "BST": "Asia/Dhaka",
    "CAT": "Africa/Harare",
    "CNT": "America/St_Johns",
    "CST": "America/Chicago",
    "CTT": "Asia/Shanghai",
    "EAT": "Africa/Addis_Ababa",
    "ECT": "Europe/Paris",
    "EST": "-05:00",
    "HST": "-10:00",
    "IET": "America/Indiana/Indianapolis",
    "IST": "Asia/Kolkata",
    "JST": "Asia/Tokyo",
    "MIT": "Pacific/Apia",
    "MST": "-07:00",
    "NET": "Asia/Yerevan",
    "NST": "Pacific/Auckland",
    "PLT": "Asia/Karachi",
    "PNT": "America/Phoenix",
    "PRT": "America/Puerto_Rico",
    "PST": "America/Los_Angeles",
    "SST": "Pacific/Guadalcanal",
    "VST": "Asia/Ho_Chi_Minh",
}
# Daylight-time abbreviations as fixed offsets (TD's examples write '2013-01-01 PDT').
DAYLIGHT_ABBREVIATIONS: dict[str, str] = {
    "PDT": "-07:00",
    "MDT": "-06:00",
    "CDT": "-05:00",
    "EDT": "-04:00",
    "AKDT": "-08:00",
}
_UTC_NAMES = {"UTC", "GMT", "UT", "Z", "ETC/UTC", "ETC/GMT"}
_OFFSET = re.compile(r"^(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?$")


@lru_cache(maxsize=512)
def zone(name: str | None) -> tzinfo:
    """The timezone TD means by ``name`` (None or '' is UTC). Raises :class:`TdTimeError`."""
    text = (name or "UTC").strip()
    upper = text.upper()
    if upper in _UTC_NAMES:
        return timezone.utc
    alias = JAVA_SHORT_IDS.get(upper) or DAYLIGHT_ABBREVIATIONS.get(upper)
    if alias is not None:
        text = alias
    found = _OFFSET.match(text)
    if found:
        sign, hours, minutes = found.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes or 0))
        if delta >= timedelta(hours=24):
            raise TdTimeError(f"timezone offset {name!r} is out of range")
        return timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise TdTimeError(
            f"unknown timezone {name!r} (use an IANA name such as Asia/Tokyo, an offset such "
            "as +09:00, or an abbreviation TD accepts such as JST or PST)"
        ) from None


def localize(naive: datetime, tz: tzinfo) -> datetime:
    """A wall-clock time in ``tz`` (the earlier instant of an ambiguous one, like Joda)."""
    return naive.replace(tzinfo=tz)


def to_local(unixtime: int, tz: tzinfo) -> datetime:
    return datetime.fromtimestamp(int(unixtime), tz)


def to_unix(moment: datetime) -> int:
    return int(moment.timestamp())


# ---------------------------------------------------------------------------------------------
# Parsing time strings (TD_TIME_PARSE, string bounds of TD_TIME_RANGE, TD_TIME_ADD)

_TIME_STRING = re.compile(
    r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[ T]+(\d{1,2})(?::(\d{2})(?::(\d{2})(?:[.,]\d{1,9})?)?)?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?|(?:UTC|GMT)[+-]\d{1,2}(?::?\d{2})?|[A-Za-z][A-Za-z0-9_/+-]*)?\s*$"
)


def parse_time(text: str, default_timezone: str | None = "UTC") -> int:
    """UNIX seconds of a TD time string; a zone in the string wins over ``default_timezone``.

    Raises :class:`TdTimeError` naming the text when it is not a time TD reads.
    """
    found = _TIME_STRING.match(text)
    if not found:
        raise TdTimeError(
            f"cannot read {text!r} as a time (TD reads 'yyyy-MM-dd', 'yyyy-MM-dd HH:mm:ss', "
            "optionally followed by a zone such as +0900 or JST)"
        )
    year, month, day, hour, minute, second, zone_text = found.groups()
    tz = zone(zone_text) if zone_text else zone(default_timezone)
    try:
        naive = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)
        )
    except ValueError as exc:
        raise TdTimeError(f"cannot read {text!r} as a time: {exc}") from None
    return to_unix(localize(naive, tz))


def time_value(value: int | str, default_timezone: str | None = "UTC") -> int:
    """An ``int/long/string`` time argument: UNIX seconds as they are, a string parsed."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return parse_time(text, default_timezone)


# ---------------------------------------------------------------------------------------------
# Calendar arithmetic in a zone

UNITS = ("second", "minute", "hour", "day", "week", "month", "quarter", "year")
_FIXED_SECONDS = {"second": 1, "minute": 60, "hour": 3600}


def truncate(unixtime: int, unit: str, tz: tzinfo) -> int:
    """The start of ``unit`` (second .. year) holding ``unixtime``, in ``tz``; weeks start Monday."""
    if unit in _FIXED_SECONDS:
        # wall-clock units by the instant's own offset: exact in a repeated (DST) hour
        offset = int((to_local(unixtime, tz).utcoffset() or timedelta(0)).total_seconds())
        return int(unixtime) - (int(unixtime) + offset) % _FIXED_SECONDS[unit]
    local = to_local(unixtime, tz).replace(tzinfo=None)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "day":
        start = day
    elif unit == "week":
        start = day - timedelta(days=day.weekday())
    elif unit == "month":
        start = day.replace(day=1)
    elif unit == "quarter":
        start = day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    elif unit == "year":
        start = day.replace(month=1, day=1)
    else:
        raise TdTimeError(f"unknown unit {unit!r} (one of {', '.join(UNITS)})")
    return to_unix(localize(start, tz))


def add_units(unixtime: int, count: int, unit: str, tz: tzinfo) -> int:
    """``unixtime`` moved by ``count`` units; days and longer move the wall clock in ``tz``."""
    if unit in _FIXED_SECONDS or unit == "second":
        return int(unixtime) + count * _FIXED_SECONDS.get(unit, 1)
    local = to_local(unixtime, tz).replace(tzinfo=None)
    if unit in ("day", "week"):
        moved = local + timedelta(days=count * (7 if unit == "week" else 1))
    else:
        months = count * {"month": 1, "quarter": 3, "year": 12}[unit]
        total = local.year * 12 + local.month - 1 + months
        year, month = divmod(total, 12)
        last = calendar.monthrange(year, month + 1)[1]
        moved = local.replace(year=year, month=month + 1, day=min(local.day, last))
    return to_unix(localize(moved, tz))


# ---------------------------------------------------------------------------------------------
# TD_TIME_ADD durations

_DURATION_UNIT = r"(?:weeks?|w|days?|d|hours?|h|minutes?|m|seconds?|s)"
_DURATION = re.compile(rf"^([+-]?)((?:\d+{_DURATION_UNIT})+)$")
_DURATION_PART = re.compile(rf"(\d+)({_DURATION_UNIT})")
_DURATION_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def duration_seconds(text: str) -> int:
    """Seconds in a TD_TIME_ADD duration: ``Nw``, ``Nd``, ``Nh``, ``Nm``, ``Ns`` (or the unit
    spelled out, ``1day``) and sums of them (``1d12h``), with an optional sign. TD has no month or year durations (their length
    varies). Raises :class:`TdTimeError`."""
    found = _DURATION.match(text.strip())
    if not found:
        raise TdTimeError(
            f"invalid duration {text!r} for TD_TIME_ADD (e.g. '1d', '-1h', '30m', '1w', '1d12h')"
        )
    seconds = sum(int(n) * _DURATION_SECONDS[u[0]] for n, u in _DURATION_PART.findall(found[2]))
    return -seconds if found[1] == "-" else seconds


# ---------------------------------------------------------------------------------------------
# TD_INTERVAL

_INTERVAL_UNITS = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "M": "month",
    "q": "quarter",
    "y": "year",
}
_RELATIVE = r"([+-]?\d+)([smhdwMqy])"
_INTERVAL = re.compile(rf"^{_RELATIVE}(?:/(.+))?$")


def interval_range(spec: str, reference: int, tz: tzinfo) -> tuple[int, int]:
    """``[start, end)`` of a TD_INTERVAL string relative to ``reference`` (TD_SCHEDULED_TIME()).

    ``-Nu`` is the N whole units before the current one, ``Nu`` the N units from the start of
    the current one, ``0u`` the current unit up to the reference; ``/offset`` moves the
    reference: ``/now`` (the reference itself), ``/-Nu`` (N units before the current one's
    start) or ``/yyyy-MM-dd``; with an offset, the range ends at it. Units: s m h d w M q y.
    """
    found = _INTERVAL.match(spec.strip())
    if not found:
        raise TdTimeError(
            f"invalid TD_INTERVAL string {spec!r} (e.g. '-1d', '-7d/now', '-1M/2025-10-01')"
        )
    count, unit_code, offset = int(found[1]), found[2], found[3]
    unit = _INTERVAL_UNITS[unit_code]
    anchored = offset is not None
    if offset is None or offset == "now":
        base = int(reference)
    else:
        relative = re.fullmatch(_RELATIVE, offset)
        if relative:
            offset_unit = _INTERVAL_UNITS[relative[2]]
            base = add_units(
                truncate(reference, offset_unit, tz), int(relative[1]), offset_unit, tz
            )
        else:
            base = parse_time(offset, None if _has_zone(offset) else _zone_name(tz))
    start = truncate(base, unit, tz)
    if count < 0:
        return add_units(start, count, unit, tz), (base if anchored else start)
    if count > 0:
        return start, add_units(start, count, unit, tz)
    return start, base


def _has_zone(text: str) -> bool:
    found = _TIME_STRING.match(text)
    return bool(found and found[7])


def _zone_name(tz: tzinfo) -> str:
    if isinstance(tz, ZoneInfo):
        return tz.key
    offset = tz.utcoffset(None) or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


# ---------------------------------------------------------------------------------------------
# TD_TIME_STRING

# code -> (unit to truncate to, SimpleDateFormat pattern); '!' drops the zone and the zeros.
TIME_STRING_FORMATS: dict[str, tuple[str, str]] = {
    "y": ("year", "yyyy-MM-dd HH:mm:ssZ"),
    "q": ("quarter", "yyyy-MM-dd HH:mm:ssZ"),
    "M": ("month", "yyyy-MM-dd HH:mm:ssZ"),
    "w": ("week", "yyyy-MM-dd HH:mm:ssZ"),
    "d": ("day", "yyyy-MM-dd HH:mm:ssZ"),
    "h": ("hour", "yyyy-MM-dd HH:mm:ssZ"),
    "m": ("minute", "yyyy-MM-dd HH:mm:ssZ"),
    "s": ("second", "yyyy-MM-dd HH:mm:ssZ"),
    "y!": ("year", "yyyy"),
    "q!": ("quarter", "yyyy-MM"),
    "M!": ("month", "yyyy-MM"),
    "w!": ("week", "yyyy-MM-dd"),
    "d!": ("day", "yyyy-MM-dd"),
    "h!": ("hour", "yyyy-MM-dd HH"),
    "m!": ("minute", "yyyy-MM-dd HH:mm"),
    "s!": ("second", "yyyy-MM-dd HH:mm:ss"),
}


def time_string(unixtime: int, code: str, timezone_name: str | None = "UTC") -> str:
    """TD_TIME_STRING: ``unixtime`` truncated to the code's unit, in its format."""
    if code not in TIME_STRING_FORMATS:
        raise TdTimeError(
            f"invalid TD_TIME_STRING format {code!r} (one of {', '.join(TIME_STRING_FORMATS)})"
        )
    unit, pattern = TIME_STRING_FORMATS[code]
    tz = zone(timezone_name)
    return format_time(truncate(unixtime, unit, tz), pattern, tz)


# ---------------------------------------------------------------------------------------------
# SimpleDateFormat

_PATTERN_LETTERS = set("GyYMLwWDdFEuaHkKhmsSzZX")
_MONTHS = [calendar.month_name[i] for i in range(1, 13)]
_DAYS = [calendar.day_name[i] for i in range(7)]  # Monday first


@lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> tuple[tuple[str, int | str], ...]:
    """A ``SimpleDateFormat`` pattern as (letter, count) fields and ('', literal) text.

    Raises :class:`TdTimeError` on a letter Java rejects ("Illegal pattern character").
    """
    parts: list[tuple[str, int | str]] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "'":
            end = i + 1
            text = ""
            while end < len(pattern):
                if pattern[end] == "'":
                    if end + 1 < len(pattern) and pattern[end + 1] == "'":
                        text += "'"
                        end += 2
                        continue
                    break
                text += pattern[end]
                end += 1
            else:
                raise TdTimeError(f"unterminated quote in format {pattern!r}")
            parts.append(("", text if end > i + 1 else "'"))
            i = end + 1
        elif char.isascii() and char.isalpha():
            if char not in _PATTERN_LETTERS:
                raise TdTimeError(f"illegal pattern character {char!r} in format {pattern!r}")
            end = i
            while end < len(pattern) and pattern[end] == char:
                end += 1
            parts.append((char, end - i))
            i = end
        else:
            parts.append(("", char))
            i += 1
    return tuple(parts)


def _us_week(day: date) -> tuple[int, int]:
    """(week year, week of year) by Java's US rules: weeks start Sunday, week 1 holds Jan 1."""
    saturday = day + timedelta(days=(5 - day.weekday()) % 7)
    if saturday.year > day.year:
        return day.year + 1, 1
    jan1 = date(day.year, 1, 1)
    first_sunday = jan1 - timedelta(days=(jan1.weekday() + 1) % 7)
    return day.year, (day - first_sunday).days // 7 + 1


def _offset_text(moment: datetime, colon: bool, short: bool = False) -> str:
    offset = moment.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    if short:
        return f"{sign}{hours:02d}"
    return f"{sign}{hours:02d}{':' if colon else ''}{mins:02d}"


def _zone_abbreviation(moment: datetime) -> str:
    tz = moment.tzinfo
    if tz is timezone.utc:
        return "UTC"
    if isinstance(tz, ZoneInfo):
        return moment.tzname() or tz.key
    return "GMT" + _offset_text(moment, colon=True)


def _field(moment: datetime, letter: str, count: int) -> str:
    def number(value: int) -> str:
        return str(value).zfill(count)

    if letter == "G":
        return "AD" if moment.year > 0 else "BC"
    if letter in "yY":
        year = moment.year if letter == "y" else _us_week(moment.date())[0]
        return str(year % 100).zfill(2) if count == 2 else number(year)
    if letter in "ML":
        if count >= 4:
            return _MONTHS[moment.month - 1]
        if count == 3:
            return _MONTHS[moment.month - 1][:3]
        return number(moment.month)
    if letter == "w":
        return number(_us_week(moment.date())[1])
    if letter == "W":
        first = moment.replace(day=1).weekday()
        return number((moment.day - 1 + (first + 1) % 7) // 7 + 1)
    if letter == "D":
        return number(moment.timetuple().tm_yday)
    if letter == "d":
        return number(moment.day)
    if letter == "F":
        return number((moment.day - 1) // 7 + 1)
    if letter == "E":
        name = _DAYS[moment.weekday()]
        return name if count >= 4 else name[:3]
    if letter == "u":
        return number(moment.isoweekday())
    if letter == "a":
        return "AM" if moment.hour < 12 else "PM"
    if letter == "H":
        return number(moment.hour)
    if letter == "k":
        return number(moment.hour or 24)
    if letter == "K":
        return number(moment.hour % 12)
    if letter == "h":
        return number(moment.hour % 12 or 12)
    if letter == "m":
        return number(moment.minute)
    if letter == "s":
        return number(moment.second)
    if letter == "S":
        return number(moment.microsecond // 1000)
    if letter == "z":
        return _zone_abbreviation(moment)
    if letter == "Z":
        return _offset_text(moment, colon=False)
    # X: ISO 8601 zone, 'Z' for UTC
    if not moment.utcoffset():
        return "Z"
    return _offset_text(moment, colon=count >= 3, short=count == 1)


def format_time(unixtime: int, pattern: str, tz: tzinfo | str | None = "UTC") -> str:
    """TD_TIME_FORMAT: ``unixtime`` in ``tz`` written with a ``SimpleDateFormat`` pattern.

    Names are English; ``z`` writes the zone's abbreviation (``JST``, ``PDT``, ``UTC``, or
    ``GMT+09:00`` for a fixed offset) whatever its count.
    """
    zone_info = tz if isinstance(tz, tzinfo) else zone(tz)
    moment = to_local(unixtime, zone_info)
    return "".join(
        str(part) if not letter else _field(moment, letter, int(part))
        for letter, part in compile_pattern(pattern)
    )


# ---------------------------------------------------------------------------------------------
# The same, natively on DuckDB (its strftime, ICU timezones): a fast path for common patterns

_STRFTIME: dict[tuple[str, int], str] = {
    ("y", 1): "%Y",
    ("y", 2): "%y",
    ("y", 3): "%Y",
    ("y", 4): "%Y",
    ("M", 1): "%-m",
    ("M", 2): "%m",
    ("M", 3): "%b",
    ("d", 1): "%-d",
    ("d", 2): "%d",
    ("H", 1): "%-H",
    ("H", 2): "%H",
    ("h", 1): "%-I",
    ("h", 2): "%I",
    ("m", 1): "%-M",
    ("m", 2): "%M",
    ("s", 1): "%-S",
    ("s", 2): "%S",
    ("a", 1): "%p",
    ("E", 1): "%a",
    ("E", 2): "%a",
    ("E", 3): "%a",
    ("D", 1): "%-j",
    ("D", 3): "%j",
}


def duckdb_strftime(pattern: str) -> str | None:
    """The DuckDB ``strftime`` format writing what ``pattern`` writes, or None when a field
    has no exact equivalent (zones, weeks, milliseconds, ...: those use :func:`format_time`)."""
    try:
        parts = compile_pattern(pattern)
    except TdTimeError:
        return None
    out = []
    for letter, part in parts:
        if not letter:
            out.append(str(part).replace("%", "%%"))
            continue
        count = int(part)
        code = _STRFTIME.get((letter, count))
        if code is None and count >= 4 and letter in "ME":
            code = "%B" if letter == "M" else "%A"
        if code is None:
            return None
        out.append(code)
    return "".join(out)


def duckdb_zone(name: str | None) -> str | None:
    """The ICU timezone name DuckDB reads for TD's ``name``, or None when there is none."""
    try:
        tz = zone(name)
    except TdTimeError:
        return None
    if tz is timezone.utc:
        return "UTC"
    if isinstance(tz, ZoneInfo):
        return tz.key
    offset = int((tz.utcoffset(None) or timedelta(0)).total_seconds())
    if offset % 3600:
        return None
    hours = -offset // 3600  # POSIX sign: Etc/GMT-9 is nine hours east
    return "UTC" if hours == 0 else f"Etc/GMT{hours:+d}"
