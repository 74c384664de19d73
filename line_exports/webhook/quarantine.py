"""Quarantine: the rejects table for spooled requests that cannot land, and finding them.

A signed body LINE got a 200 for must never stop the landing of everything after it. Values a
column cannot hold already land as NULL (see ``events``); what is left is a request whose rows
cannot be built, or that the database itself refuses (a constraint, an encoding the server does
not accept, e.g. NUL in PostgreSQL text). Such a request goes, whole, to
``line_oa_rejects_<source>`` with its reason and its body as Base64 (exact bytes, storable in
any database), in the same transaction as the rows that did land.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from line_exports.webhook.events import Quarantined, RequestRows, describe_error, iso_in_zone

REJECT_COLUMNS: list[tuple[str, str]] = [
    ("request_id", "text"),
    ("received_at", "text"),  # ISO-8601 in the source's storage timezone
    ("source_id", "text"),
    ("stage", "text"),  # parse | insert
    ("reason", "text"),
    ("body_base64", "text"),  # the body exactly as LINE sent it
    ("quarantined_at", "text"),
    ("time", "bigint"),
]


def reject_rows(items: Sequence[Quarantined], timezone_name: str) -> list[dict[str, Any]]:
    """Rows of the rejects table for ``items``."""
    now = iso_in_zone(time.time(), timezone_name)
    return [
        {
            "request_id": q.request.request_id,
            "received_at": iso_in_zone(q.request.received_at, timezone_name),
            "source_id": q.request.source_id,
            "stage": q.stage,
            "reason": q.reason,
            "body_base64": base64.b64encode(q.request.body).decode("ascii"),
            "quarantined_at": now,
            "time": int(q.request.received_at),
        }
        for q in items
    ]


def find_refused(
    engine: sa.Engine,
    groups: list[RequestRows],
    trial: Callable[[sa.Connection, list[RequestRows]], None],
    probe: Callable[[sa.Connection], None],
) -> list[Quarantined]:
    """The requests the database refuses, found by bisection over rolled-back trial inserts.

    ``trial`` inserts a group's rows; every trial is rolled back. ``probe`` inserts one plain
    synthetic row: if even that fails, the fault is the database or the table, not a row, and
    the original error is raised instead of quarantining everything.
    """
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            probe(conn)
        finally:
            trans.rollback()

    refused: list[Quarantined] = []

    def attempt(part: list[RequestRows]) -> BaseException | None:
        with engine.connect() as conn:
            trans = conn.begin()
            try:
                trial(conn, part)
            except Exception as exc:  # noqa: BLE001 - the database's refusal is the answer
                return exc
            finally:
                trans.rollback()
        return None

    stack = [groups]
    while stack:
        part = stack.pop()
        if not part:
            continue
        error = attempt(part)
        if error is None:
            continue
        if len(part) == 1:
            refused.append(Quarantined(part[0].request, "insert", describe_error(error)))
            continue
        middle = len(part) // 2
        stack.append(part[middle:])
        stack.append(part[:middle])
    refused.sort(key=lambda q: q.request.id)
    return refused
