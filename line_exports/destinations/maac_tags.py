"""MAAC ``sync_mode: mirror``: remove the tags this export attached from members who left.

MAAC's member import only ever adds tags ("the system only attaches new tags; it does not
overwrite or remove tags a member already has", ``maac-openapi.md``, member import), so a member
who leaves the query keeps them. Removal goes through MAAC's tag API (``maac-openapi.md``,
Group 標籤): ``GET /openapi/v1/tag/{?name,start}`` finds each tag's id by its exact name, and
``DELETE /openapi/v1/taglinemember/`` with ``{"tag_id": id, "line_uid": uid}`` removes one tag
from one member (204). That endpoint takes a LINE UID, so a departed member is removed only when
the export sent its ``line_uid``. MAAC publishes no rate limit for it: calls are paced at
:data:`TAG_REMOVALS_PER_SECOND`, one at a time, and each is recorded in the ledger so a re-run
of the same scope does not call again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from line_exports.destination import ExportRun, content_key
from line_exports.http import ApiError, RateLimit
from line_exports.sync import RemovalReport

if TYPE_CHECKING:
    from line_exports.destinations.maac import MaacClient, MaacSettings

TAG_REMOVALS_PER_SECOND = 10
"""Our own pace for ``DELETE /openapi/v1/taglinemember/`` (MAAC publishes no limit for it)."""
LIMITS = {"tag_member": RateLimit(requests=TAG_REMOVALS_PER_SECOND, per_seconds=1)}


def tag_ids(client: MaacClient, names: list[str]) -> dict[str, int]:
    """Tag name -> id, for the names MAAC knows (exact match; the list filter is partial)."""
    found: dict[str, int] = {}
    for name in names:
        start: str | None = None
        while True:
            params = {"name": name, **({"start": start} if start else {})}
            page = client.http.request(
                "GET", "/openapi/v1/tag/", endpoint="tag_list", params=params
            ).json()
            for tag in page.get("results", []):
                if tag.get("name") == name:
                    found[name] = int(tag["id"])
            start = page.get("next")
            if not start or name in found:
                break
    return found


def remove_tag(client: MaacClient, tag_id: int, line_uid: str) -> str | None:
    """Remove one tag from one member; None when done, else MAAC's answer. A 404 (no such
    member any more) means the tag is not on the member: done."""
    try:
        client.http.request(
            "DELETE",
            "/openapi/v1/taglinemember/",
            endpoint="tag_member",
            json={"tag_id": tag_id, "line_uid": line_uid},
        )
    except ApiError as exc:
        if exc.status == 404:
            return None
        if exc.retryable:
            raise
        return f"MAAC answered {exc.status}: {str(exc)[:200]}"
    return None


def remove_departed(
    client: MaacClient, settings: MaacSettings, departed: pd.DataFrame, run: ExportRun
) -> RemovalReport:
    """For each departed member: remove every tag this export attached (the ``tags`` setting
    and the member's own ``tags`` column as last sent). Members without a ``line_uid`` cannot
    be untagged through MAAC's API and are reported as not removed."""
    from line_exports.destinations.maac import split_tags

    report = RemovalReport()
    before = client.http.stats.requests
    common = settings.tag_list()
    own = departed["tags"].tolist() if "tags" in departed.columns else [None] * len(departed)
    wanted = sorted({*common, *(t for text in own if text for t in split_tags(text))})
    ids = tag_ids(client, wanted)
    removed = 0
    for key, uid, text in zip(departed["key"], _uids(departed), own, strict=True):
        if not uid:
            report.failed[key] = "no line_uid was sent for this member: MAAC untags by LINE UID"
            continue
        problems = []
        for name in dict.fromkeys([*common, *split_tags(text or "")]):
            if name not in ids:
                continue  # MAAC has no such tag: it is on nobody
            call = content_key("maac-untag", ids[name], uid)
            if run.ledger.done(call) is not None:
                continue
            problem = remove_tag(client, ids[name], uid)
            if problem:
                problems.append(f"tag {name!r}: {problem}")
                continue
            run.ledger.record(call, {"tag": name})
            removed += 1
        if problems:
            report.failed[key] = "; ".join(problems)
        else:
            report.removed_keys.append(key)
    report.requests = client.http.stats.requests - before
    report.metadata["tags_removed"] = removed
    return report


def _uids(departed: pd.DataFrame) -> list[Any]:
    return (
        departed["line_uid"].tolist() if "line_uid" in departed.columns else [None] * len(departed)
    )
