"""Turning LINE webhook bodies into rows of the reference's raw and events tables.

Columns follow Treasure Data's LINE OA streaming import (``event_mode`` ... ``time``), plus one
JSON column per detail object other event types carry, plus ``event_other`` for any key LINE
adds later: an unknown event type or field is kept, never an error, never dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

# Namespace for record_uuid: uuid5(namespace, "<source_id>/<webhookEventId>") is stable, so
# landing the same event twice (redelivery, re-run) yields the same key.
RECORD_NAMESPACE = uuid.UUID("6f1d4c1e-3b0a-4c55-9a43-4e2d8f1b7a10")

# Top-level keys that have their own reference column.
_BASE_KEYS = {
    "type",
    "mode",
    "timestamp",
    "webhookEventId",
    "deliveryContext",
    "source",
    "replyToken",
}

# Detail objects by event type (LINE webhook OpenAPI) -> JSON string column.
DETAIL_COLUMNS: dict[str, str] = {
    "message": "event_message",  # message, messageEdited
    "postback": "event_postback",
    "unsend": "event_unsend",
    "follow": "event_follow",
    "joined": "event_joined",  # memberJoined
    "left": "event_left",  # memberLeft
    "videoPlayComplete": "event_videoplaycomplete",
    "beacon": "event_beacon",
    "link": "event_link",  # accountLink
    "membership": "event_membership",
    "module": "event_module",
    "chatControl": "event_chatcontrol",  # activated
    "delivery": "event_delivery",  # PNP delivery completion
}

REFERENCE_COLUMNS: list[tuple[str, str]] = [
    ("event_mode", "text"),
    ("event_type", "text"),
    ("event_deliverycontext", "text"),
    ("event_timestamp", "bigint"),
    ("destination", "text"),
    ("event_source", "text"),
    ("event_postback", "text"),
    ("event_webhookeventid", "text"),
    ("event_replytoken", "text"),
    ("record_uuid", "text"),
    ("event_message", "text"),
    ("time", "bigint"),
]

EVENT_COLUMNS: list[tuple[str, str]] = (
    REFERENCE_COLUMNS
    + [
        (col, "text")
        for key, col in DETAIL_COLUMNS.items()
        if col not in {"event_message", "event_postback"}
    ]
    + [("event_other", "text")]
)

RAW_COLUMNS: list[tuple[str, str]] = [
    ("request_id", "text"),
    ("received_at", "text"),  # ISO-8601 in the source's storage timezone
    ("source_id", "text"),
    ("signature_ok", "boolean"),
    ("parse_error", "text"),
    ("event_count", "bigint"),
    ("body", "text"),
    ("time", "bigint"),
]


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_ASCII_INT = re.compile(r"-?[0-9]{1,19}")


def _utf8_ok(text: str) -> bool:
    """False for strings a UTF-8 column cannot hold (a JSON ``\\ud800`` parses to one)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def to_json(value: Any) -> str | None:
    """Compact JSON like the reference's examples (``{"isRedelivery":false}``).

    Text stays readable (no ``\\uXXXX`` for Japanese); a value holding a lone surrogate is
    written with ASCII escapes instead, which is the same JSON value and valid UTF-8.
    """
    if value is None:
        return None
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if _utf8_ok(text) else json.dumps(value, separators=(",", ":"))


@dataclass
class ParsedBody:
    """A webhook body as read: ``error`` says why no events could be read (never raised).

    ``nulled`` counts integers too long for Python's int parsing limit
    (``sys.get_int_max_str_digits()``, 4,300 digits): they read as ``null``; the raw body keeps
    their digits.
    """

    doc: dict[str, Any] | None
    events: list[Any]
    error: str | None
    nulled: int = 0


def parse_body(body: bytes) -> ParsedBody:
    """Parse a signed body; malformed, too deep or out-of-range input is reported, not raised."""
    nulled = [0]
    limit = sys.get_int_max_str_digits() or 4300

    def parse_int(digits: str) -> int | None:
        if len(digits) - digits.startswith("-") > limit:
            nulled[0] += 1
            return None
        return int(digits)

    try:
        doc = json.loads(body.decode("utf-8"), parse_int=parse_int)
    except UnicodeDecodeError as exc:
        return ParsedBody(None, [], f"malformed JSON: {exc}"[:500])
    except json.JSONDecodeError as exc:
        return ParsedBody(None, [], f"malformed JSON: {exc}"[:500])
    except RecursionError:
        return ParsedBody(None, [], "JSON nested deeper than the parser allows")
    except ValueError as exc:  # any other value the parser refuses
        return ParsedBody(None, [], f"unreadable JSON value: {exc}"[:500])
    if not isinstance(doc, dict):
        return ParsedBody(None, [], "body is not a JSON object", nulled[0])
    events = doc.get("events")
    if events is None:
        return ParsedBody(doc, [], "body has no 'events' array", nulled[0])
    if not isinstance(events, list):
        return ParsedBody(doc, [], "'events' is not an array", nulled[0])
    return ParsedBody(doc, events, None, nulled[0])


def record_uuid(source_id: str, event: Any) -> str:
    """Stable per event: from ``webhookEventId``, else a hash of the event minus delivery info."""
    if isinstance(event, dict) and isinstance(event.get("webhookEventId"), str):
        key = event["webhookEventId"]
    else:
        stripped = (
            {k: v for k, v in event.items() if k != "deliveryContext"}
            if isinstance(event, dict)
            else event
        )
        key = (
            "sha256:"
            + hashlib.sha256(
                json.dumps(stripped, sort_keys=True, ensure_ascii=False).encode(
                    "utf-8", "surrogatepass"
                )
            ).hexdigest()
        )
    # uuid5 by its definition (RFC 4122 4.3), with lone surrogates passed through so an ID
    # holding one still gets a stable key; identical to uuid.uuid5 for every valid string.
    name = f"{source_id}/{key}".encode("utf-8", "surrogatepass")
    digest = hashlib.sha1(RECORD_NAMESPACE.bytes + name, usedforsecurity=False).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


@dataclass
class _Nulls:
    """Counts values present in an event that their column cannot hold (landed as NULL)."""

    count: int = 0
    columns: dict[str, int] = field(default_factory=dict)

    def add(self, column: str) -> None:
        self.count += 1
        self.columns[column] = self.columns.get(column, 0) + 1


def _as_int(value: Any, column: str, nulls: _Nulls) -> int | None:
    """A BIGINT column's value: int64 only; anything else present lands as NULL (counted)."""
    result: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        result = value
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and _ASCII_INT.fullmatch(value)
    ):
        result = int(value)
    if result is not None and not INT64_MIN <= result <= INT64_MAX:
        result = None
    if result is None and value is not None:
        nulls.add(column)
    return result


def _as_text(value: Any, column: str, nulls: _Nulls) -> str | None:
    """A TEXT column's value: strings as they are (NULL if not UTF-8), others as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        if _utf8_ok(value):
            return value
        nulls.add(column)
        return None
    return to_json(value)


def event_row(
    source_id: str,
    destination: Any,
    event: Any,
    received_at: float,
    partition_column: str = "time",
    nulls: _Nulls | None = None,
) -> dict[str, Any]:
    """One events-table row; every key of the event ends up in some column.

    A value its column cannot hold (an integer outside BIGINT, a string that is not valid
    UTF-8) lands as NULL and is counted in ``nulls``; the raw table keeps the body as sent.
    """
    nulls = nulls if nulls is not None else _Nulls()
    if not isinstance(event, dict):
        event = {"_unparsed": event}
    row: dict[str, Any] = {name: None for name, _ in EVENT_COLUMNS}
    row["event_mode"] = _as_text(event.get("mode"), "event_mode", nulls)
    row["event_type"] = _as_text(event.get("type"), "event_type", nulls)
    row["event_deliverycontext"] = to_json(event.get("deliveryContext"))
    row["event_timestamp"] = _as_int(event.get("timestamp"), "event_timestamp", nulls)
    row["destination"] = _as_text(destination, "destination", nulls)
    row["event_source"] = to_json(event.get("source"))
    row["event_webhookeventid"] = _as_text(
        event.get("webhookEventId"), "event_webhookeventid", nulls
    )
    row["event_replytoken"] = _as_text(event.get("replyToken"), "event_replytoken", nulls)
    row["record_uuid"] = record_uuid(source_id, event)
    other: dict[str, Any] = {}
    for key, value in event.items():
        if key in _BASE_KEYS:
            continue
        column = DETAIL_COLUMNS.get(key)
        if column is None:
            other[key] = value
        else:
            row[column] = to_json(value)
    row["event_other"] = to_json(other) if other else None
    ingest = int(received_at)
    if partition_column == "event_timestamp" and row["event_timestamp"] is not None:
        row["time"] = row["event_timestamp"] // 1000
    else:
        row["time"] = ingest
    return row


def iso_in_zone(epoch_seconds: float, zone: str) -> str:
    """Timestamps rendered in the source's storage timezone, with the offset kept."""
    return (
        datetime.fromtimestamp(epoch_seconds, tz=timezone.utc)
        .astimezone(ZoneInfo(zone))
        .isoformat(timespec="milliseconds")
    )


@dataclass
class RequestRows:
    """One spooled request as rows: its raw row and its (not yet seen) events."""

    request: Any
    raw: dict[str, Any]
    events: list[dict[str, Any]]


@dataclass
class Quarantined:
    """A request that cannot land: kept whole in the rejects table with ``reason``."""

    request: Any
    stage: str  # "parse" (rows could not be built) or "insert" (the database refused them)
    reason: str


@dataclass
class Batch:
    """What one landing run writes, plus the figures its metadata reports."""

    requests: list[RequestRows]
    quarantined: list[Quarantined]
    duplicates_in_batch: int
    parse_errors: int
    values_nulled: int = 0
    nulled_by_column: dict[str, int] = field(default_factory=dict)

    @property
    def raw_rows(self) -> list[dict[str, Any]]:
        return [r.raw for r in self.requests]

    @property
    def event_rows(self) -> list[dict[str, Any]]:
        return [e for r in self.requests for e in r.events]


def describe_error(exc: BaseException) -> str:
    """One line naming the error type and its first message line (no traceback, no body)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:500]


def _request_rows(
    req: Any, timezone_name: str, partition_column: str, seen: set[str], nulls: _Nulls
) -> tuple[RequestRows, int, bool]:
    parsed = parse_body(req.body)
    for _ in range(parsed.nulled):
        nulls.add("(inside JSON)")
    raw = {
        "request_id": req.request_id,
        "received_at": iso_in_zone(req.received_at, timezone_name),
        "source_id": req.source_id,
        "signature_ok": bool(req.signature_ok),
        "parse_error": req.parse_error or parsed.error,
        "event_count": len(parsed.events),
        "body": req.body.decode("utf-8", errors="replace"),
        "time": int(req.received_at),
    }
    destination = parsed.doc.get("destination") if parsed.doc else None
    rows: list[dict[str, Any]] = []
    mine: set[str] = set()
    duplicates = 0
    for event in parsed.events:
        row = event_row(req.source_id, destination, event, req.received_at, partition_column, nulls)
        if row["record_uuid"] in seen or row["record_uuid"] in mine:
            duplicates += 1
            continue
        mine.add(row["record_uuid"])
        rows.append(row)
    seen.update(mine)  # only once the whole request has been read
    return RequestRows(req, raw, rows), duplicates, parsed.error is not None


def build_batch(
    requests: Iterable[Any], *, timezone_name: str = "UTC", partition_column: str = "time"
) -> Batch:
    """Raw rows (one per request) and deduplicated event rows (first delivery wins).

    A request whose rows cannot be built at all is quarantined (stage ``parse``) and the
    batch goes on without it, so one poison body never holds up the ones after it.
    """
    out: list[RequestRows] = []
    quarantined: list[Quarantined] = []
    seen: set[str] = set()
    nulls = _Nulls()
    duplicates = 0
    parse_errors = 0
    for req in requests:
        try:
            rows, dupes, bad = _request_rows(req, timezone_name, partition_column, seen, nulls)
        except Exception as exc:  # noqa: BLE001 - any failure quarantines this request only
            quarantined.append(Quarantined(req, "parse", describe_error(exc)))
            continue
        out.append(rows)
        duplicates += dupes
        parse_errors += bad
    return Batch(out, quarantined, duplicates, parse_errors, nulls.count, dict(nulls.columns))
