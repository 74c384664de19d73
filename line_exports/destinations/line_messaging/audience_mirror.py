"""Audience target, ``sync_mode: mirror``: rebuild the audience when members left.

LINE's upload audiences are add-only (``manage-audience.yml`` has no call that removes IDs), so
mirror rebuilds: a new audience under the same name (``audience_name``, the stable name users
reference) receives every current ID, the run waits until it is READY, then the audiences it
replaces are deleted (``DELETE /v2/bot/audienceGroup/{audienceGroupId}``). It rebuilds when
members left the result, and also when the audience expires within
:data:`EXPIRY_MARGIN_SECONDS` (an upload audience expires 180 days after it was created:
``expireTimestamp``). The audiences to replace are recorded in the ledger before the new one
is created, so a re-run of the same scope finishes the same rebuild instead of starting another.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pandas as pd

from line_exports.destination import DeliveryReport, ExportRun, ValidRows, content_key
from line_exports.destinations.line_messaging.audience import deliver_audience, writable
from line_exports.destinations.line_messaging.client import LineMessagingClient
from line_exports.destinations.line_messaging.settings import LineMessagingSettings
from line_exports.http import ApiError
from line_exports.sync import RemovalReport

EXPIRY_MARGIN_SECONDS = 7 * 24 * 3600
"""Rebuild an audience this long before its ``expireTimestamp``."""


def _current(client: LineMessagingClient, settings: LineMessagingSettings) -> list[dict]:
    return [
        g
        for g in client.audiences_named(settings.audience_name or "")
        if writable(g) and bool(g.get("isIfaAudience")) == settings.is_ifa_audience
    ]


def rebuild_reason(client: LineMessagingClient, settings: LineMessagingSettings) -> str:
    """Why the audience must be rebuilt although no member left ('' when it need not): the
    newest audience of that name expires within the margin, or has expired."""
    groups = _current(client, settings)
    if not groups:
        return ""
    newest = max(groups, key=lambda g: int(g.get("created") or 0))
    expires = newest.get("expireTimestamp")
    if expires is None:
        return ""
    left = float(expires) - time.time()
    if left > EXPIRY_MARGIN_SECONDS and newest.get("status") != "EXPIRED":
        return ""
    when = datetime.fromtimestamp(float(expires), timezone.utc).isoformat(timespec="seconds")
    return f"audience #{newest['audienceGroupId']} expires at {when}"


def rebuild(
    client: LineMessagingClient,
    settings: LineMessagingSettings,
    rows: ValidRows,
    departed: pd.DataFrame,
    run: ExportRun,
    reason: str,
) -> tuple[DeliveryReport, RemovalReport]:
    """Every current ID to a new audience of the same name, READY, then the old ones deleted."""
    old_key = content_key("audience-rebuild-old", settings.audience_name, settings.is_ifa_audience)
    recorded = run.ledger.done(old_key)
    if recorded is not None:
        old = [int(i) for i in recorded["ids"]]
    else:
        old = sorted(int(g["audienceGroupId"]) for g in _current(client, settings))
        run.ledger.record(old_key, {"ids": old, "reason": reason})
    run.log.info(
        f"{run.name}: rebuilding audience {settings.audience_name!r} ({reason}): "
        f"{rows.count:,} IDs to a new audience, then deleting {old or 'none'}"
    )
    report = deliver_audience(client, settings, rows, run, exclude=frozenset(old))
    new_id = int(report.metadata["audience_id"])
    deleted = []
    for audience_id in old:
        if audience_id == new_id:
            continue
        key = content_key("audience-deleted", audience_id)
        if run.ledger.done(key) is None:
            try:
                client.delete_audience(audience_id)
            except ApiError as exc:
                if exc.status not in (400, 404):  # 400/404: already gone
                    raise
            run.ledger.record(key, {"replaced_by": new_id})
        deleted.append(audience_id)
    report.metadata.update(
        audience_action="rebuilt", audiences_deleted=deleted, rebuild_reason=reason
    )
    return report, RemovalReport(removed_keys=departed["key"].tolist())
