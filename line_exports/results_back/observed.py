"""What results-back reads of a send, and what it learns from the API about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from line_exports.http import RetrySettings

# Short retries: a pull that fails is reported (check ``results_back``) and tried again the
# next day; it must not hold a run for an hour as a delivery's retries may.
RETRY = RetrySettings(max_retry=2, initial_retry_wait=1, max_retry_wait=100, connection_timeout=60)
DAY_SECONDS = 86_400
PAGE = 50


def _sent(record: Any) -> bool:
    requests = record.asset_materialization.metadata.get("requests")
    return requests is None or bool(requests.value)


@dataclass(frozen=True)
class SentExport:
    """The latest materialization of an export: when it was sent and what its metadata says
    (``segment_id``, ``audience_id``, ``api_job_ids``, ``custom_aggregation_units``, counts)."""

    asset_key: dg.AssetKey
    storage_id: int
    run_id: str
    sent_at: float  # epoch seconds of the materialization
    metadata: dict[str, Any]

    @classmethod
    def latest(cls, instance: dg.DagsterInstance, key: dg.AssetKey) -> SentExport | None:
        """The latest materialization that sent something (``requests`` > 0; one without the
        count is taken as a send). A ``diff``/``mirror`` run with nothing new sends nothing
        and names no segment/audience/unit: results back keep observing the send before it,
        and its day count goes on. None when nothing was ever sent."""
        cursor = None
        while True:
            page = instance.fetch_materializations(key, limit=PAGE, cursor=cursor)
            for record in page.records:
                if record.asset_materialization is not None and _sent(record):
                    return cls._of(key, record)
            if not page.has_more:
                return None
            cursor = page.cursor

    @classmethod
    def _of(cls, key: dg.AssetKey, record: Any) -> SentExport:
        return cls(
            key,
            int(record.storage_id),
            record.run_id,
            float(record.timestamp),
            {k: v.value for k, v in record.asset_materialization.metadata.items()},
        )

    def get(self, name: str, default: Any = None) -> Any:
        return self.metadata.get(name, default)

    def days_since(self, now: float) -> float:
        return (now - self.sent_at) / DAY_SECONDS


@dataclass
class Observed:
    """One pull: the observation's metadata, the API calls that failed, and what the checks
    need (None: not known, e.g. a segment still building)."""

    metadata: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    match_rate: float | None = None
    match_basis: str = ""
    segment_status: str | None = None
    segment_age_hours: float | None = None
