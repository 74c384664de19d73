"""The channel's monthly message quota, read before a push or multicast sends anything.

LINE counts one message per recipient of each request (a push to a user is 1, a multicast to
500 users is 500, whatever the number of message objects; a push to a group or room counts its
members, which the client cannot know, so it is counted as 1 here). ``GET /v2/bot/message/quota``
gives the month's target limit (``type: none`` means no limit) and ``/quota/consumption`` what
was sent (``messaging-api.yml``). A run that needs more than remains fails before sending, unless
``over_quota: send_up_to_quota`` sends as many as remain and reports the rest as rejects.
"""

from __future__ import annotations

from line_exports.destination import DeliveryFailed, DeliveryReport, ExportRun
from line_exports.destinations.line_messaging.client import LineMessagingClient
from line_exports.destinations.line_messaging.settings import LineMessagingSettings


def allowance(
    client: LineMessagingClient,
    settings: LineMessagingSettings,
    needed: int,
    report: DeliveryReport,
    run: ExportRun,
    kind: str,
) -> int | None:
    """How many messages this run may send: None when the quota is no bound.

    Raises :class:`DeliveryFailed` before anything is sent when ``needed`` passes what remains
    and ``over_quota`` is ``fail``. The figures go to the run's metadata and log."""
    limit, used = client.quota()
    remaining = None if limit is None else max(0, limit - used)
    report.metadata.update(
        {
            "messages_needed": needed,
            "quota_limit": "none" if limit is None else limit,
            "quota_used": used,
            "quota_remaining": "unlimited" if remaining is None else remaining,
        }
    )
    run.log.info(
        f"LINE {kind}: {needed:,} messages needed; monthly quota "
        + ("none (no target limit)" if remaining is None else f"{remaining:,} of {limit:,} remain")
    )
    if remaining is None or needed <= remaining:
        return None
    if settings.over_quota == "fail":
        raise DeliveryFailed(
            f"LINE {kind} needs {needed:,} messages but only {remaining:,} of this month's "
            f"{limit:,} remain (used {used:,}); nothing was sent. Raise the target limit, or set "
            "over_quota: send_up_to_quota to send as many as remain.",
            report,
        )
    return remaining
