"""MAAC's member import and custom segment limits, member list and tag times, as
``maac-openapi.md`` states them: one definition for the exporter
(:mod:`line_exports.destinations.maac`, :mod:`line_exports.destinations.maac_tags`) and the
sandbox (:mod:`line_exports.sandbox.maac`).

Source: help-cresclab/ProductSpecLibrary ``maac-general/maac-openapi.md``, Group 聯絡人:

* ``GET /openapi/v1/member/{?line_uid,member_id,email,mobile,customer_id,status,
  updated_at_min,updated_at_max,all_tag,start}`` lists the account's members, 300 a page (the
  ``next`` token goes in ``start``); every filter takes one value, so a lookup by LINE UID is
  one member a request. ``updated_at_min`` / ``updated_at_max`` are dates (YYYY-MM-DD);
  ``all_tag`` 1 lists every tag of a member, 0 only the tags attached between those dates.
* Each member has ``tags`` (names) and ``tags_detail``: ``{"name", "tagged_at"}``, where
  ``tagged_at`` is "the time the tag was first attached to this member".
* A done import task's ``result`` has ``start_time`` (when MAAC started applying it): every tag
  the task attached has a ``tagged_at`` at or after it, on MAAC's own clock.

MAAC publishes no rate limit for the member list (only member import, 15 a minute).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

# POST /openapi/v1/member/import/: at most 10,000 members and 10 MB a request, 15 a minute;
# each item's fields are these (plus ``tags``), matched to a member by one of IMPORT_KEYS.
IMPORT_KEYS = ("line_uid", "customer_id", "email", "mobile")
MEMBER_FIELDS = (
    "line_uid",
    "line_display_name",
    "email",
    "mobile",
    "customer_id",
    "gender",
    "birthday",
)
IMPORT_MAX_MEMBERS = 10_000
IMPORT_MAX_BYTES = 10 * 1024 * 1024
IMPORT_PER_MINUTE = 15
# POST /openapi/v1/custom_segment/ (PATCH .../{id}/): a CSV of at most 300,000 LINE UIDs, 25 MB.
SEGMENT_MAX_UIDS = 300_000
SEGMENT_MAX_BYTES = 25 * 1024 * 1024

MEMBER_LIST_PATH = "/openapi/v1/member/"
MEMBER_PAGE_SIZE = 300
LINE_UID = re.compile(r"U[0-9a-f]{32}")
"""A LINE user ID: U and 32 lower-case hex digits (33 characters, as MAAC says)."""
MEMBER_FILTERS = (
    "line_uid",
    "member_id",
    "email",
    "mobile",
    "customer_id",
    "status",
    "updated_at_min",
    "updated_at_max",
    "all_tag",
    "start",
)
MEMBER_STATUSES = ("follow", "auth", "unfollow")
ALL_TAG_CHOICES = ("0", "1")
DATE_FILTER = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

NO_YEAR_ZERO = r"(?:[^0]|0[^0]|00[^0]|000[^0]).*|.{0,3}"
"""A member's ``birthday`` (import field) is YYYY-MM-DD (the exporter's ``iso_date`` format,
a calendar date); its year must not be 0000, which ISO 8601 calendar dates in Python cannot
hold and on which MAAC fails the whole import task: this pattern (anything not starting with
``0000``) is checked per row with it; the sandbox checks both with :func:`is_birthday`."""
BIRTHDAY_MESSAGE = "is not a birthday MAAC takes (year 0000)"


def is_birthday(text: str) -> bool:
    """Whether ``text`` is a YYYY-MM-DD date that exists in the calendar (year 0001-9999)."""
    if not (DATE_FILTER.fullmatch(text) and re.fullmatch(NO_YEAR_ZERO, text)):
        return False
    try:
        datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        return False
    return True


_TIME = re.compile(
    r"(?P<base>[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?)"
    r"(?P<zone>Z|[+-][0-9]{2}(?::?[0-9]{2})?)"
)


def parse_time(text: Any) -> datetime:
    """An ISO 8601 time with its offset, as MAAC writes them (``...+08:00``, ``...+08`` in the
    spec's examples, ``Z``). Raises ValueError for anything else (no offset: no instant)."""
    match = _TIME.fullmatch(str(text)) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not an ISO 8601 time with an offset")
    zone = match["zone"]
    if zone == "Z":
        zone = "+00:00"
    elif len(zone) == 3:
        zone += ":00"
    elif ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:]}"
    return datetime.fromisoformat(match["base"] + zone)


def tag_times(member: dict[str, Any]) -> dict[str, datetime]:
    """Tag name -> when it was first attached to ``member`` (a member list item), from its
    ``tags_detail``. Raises ValueError when the item has no such list of the spec's shape."""
    detail = member.get("tags_detail")
    if not isinstance(detail, list):
        raise ValueError("the member has no tags_detail list")
    times: dict[str, datetime] = {}
    for item in detail:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError(f"tags_detail item {item!r} has no name")
        times[item["name"]] = parse_time(item.get("tagged_at"))
    return times
