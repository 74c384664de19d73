"""What results-back reads of a send, and what it learns from the API about it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from line_exports.http import RetrySettings

# Short retries: a pull that fails is reported (check ``results_back``) and tried again the
# next day; it must not hold a run for an hour as a delivery's retries may.
RETRY = RetrySettings(max_retry=2, initial_retry_wait=1, max_retry_wait=100, connection_timeout=60)
DAY_SECONDS = 86_400
PAGE = 50


def _records(instance: dg.DagsterInstance, key: dg.AssetKey) -> Iterator[Any]:
    """The export's materialization records, newest first, a page at a time."""
    cursor = None
    while True:
        page = instance.fetch_materializations(key, limit=PAGE, cursor=cursor)
        yield from page.records
        if not page.has_more:
            return
        cursor = page.cursor


def _sent(record: Any) -> bool:
    requests = record.asset_materialization.metadata.get("requests")
    return requests is None or bool(requests.value)


TARGET_NAMES = ("segment_id", "segment_name")
"""Metadata naming the target an export writes to (LinkedIn's DMP segment). A ``mirror`` run
that only removed members made requests to that target but names none (it sent no add): the
names come from the latest materialization before it that gave them (:attr:`SentExport.named_in`)."""


@dataclass(frozen=True)
class SentExport:
    """The latest materialization of an export: when it was sent and what its metadata says
    (``segment_id``, ``audience_id``, ``api_job_ids``, ``custom_aggregation_units``, counts)."""

    asset_key: dg.AssetKey
    storage_id: int
    run_id: str
    sent_at: float  # epoch seconds of the materialization
    metadata: dict[str, Any]
    named_in: dict[str, str] = field(default_factory=dict)
    """{name in :data:`TARGET_NAMES`: run ID} of the names taken from an earlier
    materialization (the latest send removed members only)."""

    @classmethod
    def latest(cls, instance: dg.DagsterInstance, key: dg.AssetKey) -> SentExport | None:
        """The latest materialization that sent something (``requests`` > 0; one without the
        count is taken as a send). A ``diff``/``mirror`` run with nothing new sends nothing
        and names no segment/audience/unit: results back keep observing the send before it,
        and its day count goes on. A ``mirror`` run that only removed members is the latest
        send (the target changed), its target named by the send before it (:data:`TARGET_NAMES`).
        None when nothing was ever sent."""
        found: SentExport | None = None
        missing: list[str] = []
        for record in _records(instance, key):
            if record.asset_materialization is None:
                continue
            if found is None:
                if not _sent(record):
                    continue
                found = cls._of(key, record)
                if "members_removed" not in found.metadata:
                    return found  # no removal: it names its own target, if any
                missing = [n for n in TARGET_NAMES if n not in found.metadata]
            else:
                metadata = record.asset_materialization.metadata
                for name in [n for n in missing if n in metadata]:
                    found.metadata[name] = metadata[name].value
                    found.named_in[name] = record.run_id
                    missing.remove(name)
            if not missing:
                return found
        return found

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
