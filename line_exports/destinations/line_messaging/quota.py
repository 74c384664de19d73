"""The channel's monthly message quota, read before a push or multicast sends anything.

LINE counts one message per recipient of each request (a push to a user is 1, a multicast to
500 users is 500, whatever the number of message objects; a push to a group or room counts its
members, which the client cannot know, so it is counted as 1 here). ``GET /v2/bot/message/quota``
gives the month's target limit (``type: none`` means no limit) and ``/quota/consumption`` what
was sent (``messaging-api.yml``). A run that needs more than remains fails before sending, unless
``over_quota: send_up_to_quota`` sends as many as remain and reports the rest as rejects.
``line-exports plan`` reads the same figures and says the same (:func:`plan_lines`).
On a resumed run, ``needed`` leaves out what the ledger shows accepted by an earlier attempt
(:func:`.push.accepted_before`, :func:`.multicast.accepted_groups`); a push or multicast resume
first settles the requests the earlier attempt left pending (re-sent under their retry keys,
:func:`.sending.left_by_earlier`), so its ``needed`` is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

from line_exports.destination import DeliveryFailed, DeliveryReport, ExportRun
from line_exports.destinations.line_messaging.client import LineMessagingClient
from line_exports.destinations.line_messaging.sending import nothing_sent
from line_exports.destinations.line_messaging.settings import LineMessagingSettings


@dataclass(frozen=True)
class Quota:
    """Messages a run needs against the month's quota (``limit`` None: no target limit)."""

    needed: int
    limit: int | None
    used: int

    @classmethod
    def read(cls, client: LineMessagingClient, needed: int) -> Quota:
        """Both quota endpoints, read now."""
        limit, used = client.quota()
        return cls(needed, limit, used)

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.used)

    @property
    def fits(self) -> bool:
        return self.remaining is None or self.needed <= self.remaining

    def metadata(self) -> dict[str, int | str]:
        return {
            "messages_needed": self.needed,
            "quota_limit": "none" if self.limit is None else self.limit,
            "quota_used": self.used,
            "quota_remaining": "unlimited" if self.remaining is None else self.remaining,
        }

    def summary(self, kind: str) -> str:
        """``LINE push: 5 messages needed; monthly quota 3 of 10 remain (7 used)``."""
        return f"LINE {kind}: {self.needed:,} messages needed; monthly quota " + (
            "none (no target limit)"
            if self.limit is None
            else f"{self.remaining:,} of {self.limit:,} remain ({self.used:,} used)"
        )

    def over(self, kind: str) -> str:
        """Why a run that needs more than remains cannot send everything."""
        return (
            f"LINE {kind} needs {self.needed:,} messages but only {self.remaining:,} of this "
            f"month's {self.limit:,} remain (used {self.used:,})"
        )


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
    quota = Quota.read(client, needed)
    report.metadata.update(quota.metadata())
    run.log.info(quota.summary(kind))
    if quota.fits:
        return None
    if settings.over_quota == "fail":
        raise DeliveryFailed(
            f"{quota.over(kind)}; {nothing_sent(run)}. Raise the target limit, or set "
            "over_quota: send_up_to_quota to send as many as remain.",
            report,
        )
    return quota.remaining


def plan_lines(quota: Quota, settings: LineMessagingSettings, kind: str) -> tuple[list[str], str]:
    """What ``line-exports plan`` shows: (lines, 'would fail: ...' or ''), as a run decides."""
    lines = [quota.summary(kind)]
    if quota.fits:
        return lines, ""
    if settings.over_quota == "fail":
        return lines, (
            f"would fail: {quota.over(kind)}; nothing would be sent (over_quota is fail)"
        )
    assert quota.remaining is not None
    lines.append(
        f"would send only up to the quota: {quota.remaining:,} of {quota.needed:,} messages; "
        f"{quota.needed - quota.remaining:,} rows would be rejected (over_quota is "
        "send_up_to_quota)"
    )
    return lines, ""
