"""Turning LINE webhook bodies into rows of the reference's raw and events tables.

Columns follow Treasure Data's LINE OA streaming import (``event_mode`` ... ``time``), plus one
JSON column per detail object other event types carry, plus ``event_other`` for any key LINE
adds later: an unknown event type or field is kept, never an error, never dropped.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
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


def to_json(value: Any) -> str | None:
    """Compact JSON like the reference's examples (``{"isRedelivery":false}``)."""
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def parse_body(body: bytes) -> tuple[dict[str, Any] | None, list[Any], str | None]:
    """(document, events, error). Malformed bodies are reported, never raised."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [], f"malformed JSON: {exc}"[:500]
    if not isinstance(doc, dict):
        return None, [], "body is not a JSON object"
    events = doc.get("events")
    if events is None:
        return doc, [], "body has no 'events' array"
    if not isinstance(events, list):
        return doc, [], "'events' is not an array"
    return doc, events, None


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
                json.dumps(stripped, sort_keys=True, ensure_ascii=False).encode("utf-8")
            ).hexdigest()
        )
    return str(uuid.uuid5(RECORD_NAMESPACE, f"{source_id}/{key}"))


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else to_json(value)


def event_row(
    source_id: str,
    destination: Any,
    event: Any,
    received_at: float,
    partition_column: str = "time",
) -> dict[str, Any]:
    """One events-table row; every key of the event ends up in some column."""
    if not isinstance(event, dict):
        event = {"_unparsed": event}
    row: dict[str, Any] = {name: None for name, _ in EVENT_COLUMNS}
    row["event_mode"] = _as_text(event.get("mode"))
    row["event_type"] = _as_text(event.get("type"))
    row["event_deliverycontext"] = to_json(event.get("deliveryContext"))
    row["event_timestamp"] = _as_int(event.get("timestamp"))
    row["destination"] = _as_text(destination)
    row["event_source"] = to_json(event.get("source"))
    row["event_webhookeventid"] = _as_text(event.get("webhookEventId"))
    row["event_replytoken"] = _as_text(event.get("replyToken"))
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
class Batch:
    """What one landing run writes, plus the figures its metadata reports."""

    raw_rows: list[dict[str, Any]]
    event_rows: list[dict[str, Any]]
    duplicates_in_batch: int
    parse_errors: int


def build_batch(
    requests: Iterable[Any], *, timezone_name: str = "UTC", partition_column: str = "time"
) -> Batch:
    """Raw rows (one per request) and deduplicated event rows (first delivery wins)."""
    raw_rows: list[dict[str, Any]] = []
    events: dict[str, dict[str, Any]] = {}
    duplicates = 0
    parse_errors = 0
    for req in requests:
        doc, items, error = parse_body(req.body)
        if error:
            parse_errors += 1
        raw_rows.append(
            {
                "request_id": req.request_id,
                "received_at": iso_in_zone(req.received_at, timezone_name),
                "source_id": req.source_id,
                "signature_ok": bool(req.signature_ok),
                "parse_error": req.parse_error or error,
                "event_count": len(items),
                "body": req.body.decode("utf-8", errors="replace"),
                "time": int(req.received_at),
            }
        )
        destination = doc.get("destination") if doc else None
        for event in items:
            row = event_row(req.source_id, destination, event, req.received_at, partition_column)
            if row["record_uuid"] in events:
                duplicates += 1
                continue
            events[row["record_uuid"]] = row
    return Batch(raw_rows, list(events.values()), duplicates, parse_errors)
