"""The checks results-back adds to an export asset.

* ``<export>_results_back`` (one multi-asset check): pulls what the API reports about the latest
  send, logs it as an ``AssetObservation`` of the export asset (numbers plot over time in the
  UI), and evaluates ``results_back`` (the API answered), and per destination ``segment_ready``
  (LinkedIn) and ``match_rate`` (LinkedIn, MAAC).
* ``volume``: the latest send read no row, or fewer than ``min_volume_ratio`` of the rows the
  send before it read.
"""

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg

from line_exports.results_back.observed import Observed, SentExport

RESULTS_CHECK = "results_back"
SEGMENT_READY_CHECK = "segment_ready"
MATCH_RATE_CHECK = "match_rate"
VOLUME_CHECK = "volume"
SEGMENT_OK = frozenset({"READY", "UPDATING"})
SEGMENT_BROKEN = frozenset({"FAILED", "ERROR", "EXPIRED"})


@dataclass(frozen=True)
class ResultsBackSettings:
    """How results come back for one export (``build_results_back``'s keywords)."""

    days: int = 14
    """Pull once a day for this many days after each send (LINE's statistics keep changing for
    14 days after a send; its per-unit period is at most 30 days)."""
    line_statistics: bool = False
    """LINE: also pull the per-unit statistics of the export's ``custom_aggregation_units``
    (LINE grants that API per account: opt in where it is granted)."""
    min_match_rate: float = 0.3
    """``match_rate`` fails below this share (LinkedIn matchedCount / inputCount; MAAC members
    created or updated / imported)."""
    min_volume_ratio: float = 0.5
    """``volume`` fails when a send read fewer than this share of the previous send's rows."""
    segment_ready_hours: float = 48.0
    """``segment_ready`` fails when a LinkedIn segment is not READY this long after creation."""

    def __post_init__(self) -> None:
        if not 0 <= self.days <= 30:
            raise ValueError(f"days must be between 0 and 30 (got {self.days})")
        for name in ("min_match_rate", "min_volume_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1 (got {getattr(self, name)})")
        if self.segment_ready_hours <= 0:
            raise ValueError("segment_ready_hours must be positive")


Collector = Callable[[Any, SentExport, float], Observed]


def check_name(key: dg.AssetKey) -> str:
    """The name the export's results-back check, job and sensor start with: the key's parts
    joined by ``__``, as Dagster names an asset's op (``a_b/c`` and ``a/b_c`` stay distinct);
    the workflow loader refuses a folder whose names would still coincide."""
    return "__".join(re.sub(r"[^A-Za-z0-9_]", "_", part) for part in key.path)


def _specs(key: dg.AssetKey, destination: str, settings: ResultsBackSettings) -> list[Any]:
    specs = [
        dg.AssetCheckSpec(
            RESULTS_CHECK,
            asset=key,
            description="Fails (warning) when the API did not report the latest send's results "
            "(an error, or a task not done); the observation holds what it did report.",
        )
    ]
    if destination == "linkedin":
        specs.append(
            dg.AssetCheckSpec(
                SEGMENT_READY_CHECK,
                asset=key,
                description=f"Fails when the DMP segment is FAILED, ERROR or EXPIRED, or not "
                f"READY {settings.segment_ready_hours:g} h after it was created.",
            )
        )
    if destination in ("linkedin", "maac"):
        specs.append(
            dg.AssetCheckSpec(
                MATCH_RATE_CHECK,
                asset=key,
                description=f"Fails (warning) when fewer than {settings.min_match_rate:.0%} of "
                "the members sent were matched (known once the API reports it).",
            )
        )
    return specs


def _not_evaluated(name: str, why: str) -> dg.AssetCheckResult:
    # Dagster has no "skipped" result: a pass whose metadata says nothing was judged.
    return dg.AssetCheckResult(
        check_name=name, passed=True, metadata={"evaluated": False, "reason": why}
    )


def evaluate(
    specs: list[Any], observed: Observed, settings: ResultsBackSettings
) -> Iterator[dg.AssetCheckResult]:
    names = {s.name for s in specs}
    yield dg.AssetCheckResult(
        check_name=RESULTS_CHECK,
        passed=not observed.problems,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"problems": dg.MetadataValue.json(observed.problems)}
        if observed.problems
        else {"fields_observed": len(observed.metadata)},
    )
    if SEGMENT_READY_CHECK in names:
        status, age = observed.segment_status, observed.segment_age_hours
        if status is None:
            yield _not_evaluated(SEGMENT_READY_CHECK, "segment status unknown (see results_back)")
        else:
            reason = ""
            if status in SEGMENT_BROKEN:
                reason = f"the segment is {status}"
            elif (
                status not in SEGMENT_OK and age is not None and age >= settings.segment_ready_hours
            ):
                reason = (
                    f"the segment is still {status} {age:.0f} h after it was created (LinkedIn: "
                    f"initial processing takes up to 48 h; threshold {settings.segment_ready_hours:g} h)"
                )
            meta: dict[str, Any] = {"status": status}
            if age is not None:
                meta["age_hours"] = round(age, 2)
            if reason:
                meta["reason"] = reason
            yield dg.AssetCheckResult(
                check_name=SEGMENT_READY_CHECK,
                passed=not reason,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata=meta,
            )
    if MATCH_RATE_CHECK in names:
        rate = observed.match_rate
        if rate is None:
            yield _not_evaluated(
                MATCH_RATE_CHECK,
                f"no match figures yet (segment {observed.segment_status})"
                if observed.segment_status
                else "no match figures (see results_back)",
            )
        else:
            yield dg.AssetCheckResult(
                check_name=MATCH_RATE_CHECK,
                passed=rate >= settings.min_match_rate,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "match_rate": dg.MetadataValue.float(round(rate, 4)),
                    "threshold": dg.MetadataValue.float(settings.min_match_rate),
                    "basis": observed.match_basis,
                },
            )


def build_results_check(
    key: dg.AssetKey,
    destination: str,
    resource_key: str,
    collector: Collector,
    settings: ResultsBackSettings,
    clock: Callable[[], float],
) -> dg.AssetChecksDefinition:
    """The multi-asset check that pulls, observes and judges the latest send of ``key``."""
    specs = _specs(key, destination, settings)

    @dg.multi_asset_check(
        specs=specs,
        name=f"{check_name(key)}_results_back",
        required_resource_keys={resource_key},
        description=f"Pulls what {destination} reports about the latest send and observes it "
        "on the export asset.",
    )
    def results_back(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        sent = SentExport.latest(context.instance, key)
        if sent is None:
            observed = Observed(problems=["the export has sent nothing yet"])
            yield from evaluate(specs, observed, settings)
            return
        now = clock()
        try:
            observed = collector(getattr(context.resources, resource_key), sent, now)
        except Exception as exc:  # a results pull never fails the export's run
            observed = Observed(problems=[f"{type(exc).__name__}: {exc}"])
        if observed.metadata:
            meta: dict[str, Any] = {
                **observed.metadata,
                "days_since_send": dg.MetadataValue.float(round(sent.days_since(now), 3)),
                "sent_at": dg.MetadataValue.timestamp(sent.sent_at),
                "sent_in_run": sent.run_id,
            }
            if observed.match_rate is not None:
                meta["match_rate"] = dg.MetadataValue.float(round(observed.match_rate, 4))
            context.op_execution_context.log_event(
                dg.AssetObservation(asset_key=key, metadata=meta)
            )
        for problem in observed.problems:
            context.log.warning(f"{key.to_user_string()}: results_back: {problem}")
        yield from evaluate(specs, observed, settings)

    return results_back


def build_volume_check(key: dg.AssetKey, settings: ResultsBackSettings) -> dg.AssetChecksDefinition:
    """``volume``: runs after each materialization of the export (in the export's job)."""

    @dg.asset_check(
        asset=key,
        name=VOLUME_CHECK,
        description=f"Fails (warning) when a send read no row, or fewer than "
        f"{settings.min_volume_ratio:.0%} of the rows the send before it read.",
    )
    def volume(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        records = context.instance.fetch_materializations(key, limit=2).records
        counts = [_rows_read(r) for r in records]
        if not counts or counts[0] is None:
            return _not_evaluated(VOLUME_CHECK, "no materialization with rows_read yet")
        latest = counts[0]
        meta: dict[str, Any] = {"rows_read": latest}
        reason = "the send read 0 rows" if latest == 0 else ""
        if len(counts) > 1 and counts[1]:
            previous = counts[1]
            meta["previous_rows_read"] = previous
            meta["ratio"] = dg.MetadataValue.float(round(latest / previous, 4))
            if not reason and latest < settings.min_volume_ratio * previous:
                reason = (
                    f"the send read {latest:,} rows, {latest / previous:.0%} of the previous "
                    f"send's {previous:,} (threshold {settings.min_volume_ratio:.0%})"
                )
        if reason:
            meta["reason"] = reason
            context.log.warning(f"{key.to_user_string()}: check {VOLUME_CHECK} failed: {reason}")
        return dg.AssetCheckResult(
            passed=not reason, severity=dg.AssetCheckSeverity.WARN, metadata=meta
        )

    return volume


def _rows_read(record: Any) -> int | None:
    materialization = record.asset_materialization
    value = materialization.metadata.get("rows_read") if materialization else None
    return int(value.value) if value is not None else None
