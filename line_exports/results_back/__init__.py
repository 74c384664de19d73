"""Results back into Dagster: what the APIs report after a send, as observations and checks.

``build_results_back(export)`` adds to an export asset (from :func:`line_exports.build_export`):

* the check ``<export>_results_back``, which runs in the export's own job right after each send
  and then once a day for ``days`` days (a job and a sensor of the same name): it pulls what the
  API reports about the latest send and logs it as an ``AssetObservation`` of the export asset,
  so each number (impressions, clicks, matched count, ...) plots over time in the UI;
* the checks ``results_back``, ``segment_ready`` (LinkedIn), ``match_rate`` (LinkedIn, MAAC)
  and ``volume`` (every export), see :mod:`.checks`.

What is pulled per destination: LINE (:mod:`.line`) per-unit statistics of the export's
``custom_aggregation_units`` (opt in: ``line_statistics=True``), the account's delivery counts of
the send's day, an audience's status and size; MAAC (:mod:`.maac`) import results (created,
updated, mismatched, the mismatch file and its rows) or a segment's member count; LinkedIn
(:mod:`.linkedin`) the DMP segment's status, matched count and audience size. Other
destinations get the ``volume`` check only.
"""

import time
from collections.abc import Callable
from typing import Any

import dagster as dg

from line_exports.results_back import line, linkedin, maac
from line_exports.results_back.checks import (
    MATCH_RATE_CHECK,
    RESULTS_CHECK,
    SEGMENT_READY_CHECK,
    VOLUME_CHECK,
    Collector,
    ResultsBackSettings,
    build_results_check,
    build_volume_check,
    check_name,
)
from line_exports.results_back.observed import DAY_SECONDS, Observed, SentExport

__all__ = [
    "MATCH_RATE_CHECK",
    "Observed",
    "RESULTS_CHECK",
    "SEGMENT_READY_CHECK",
    "VOLUME_CHECK",
    "ResultsBackSettings",
    "SentExport",
    "build_results_back",
    "results_back_for",
]

SENSOR_INTERVAL_SECONDS = 3600


def _collector(destination: str, settings: ResultsBackSettings) -> Collector | None:
    if destination == "line_messaging":
        return lambda r, sent, now: line.observe(r, sent, now, settings.line_statistics)
    if destination == "maac":
        return lambda r, sent, now: maac.observe(r, sent)
    if destination == "linkedin":
        return linkedin.observe
    return None


def _resource_key(export: dg.AssetsDefinition, destination: str, given: str | None) -> str:
    if given:
        return given
    keys = set(export.required_resource_keys) - {"sql_source"}
    if destination in keys:
        return destination
    if len(keys) == 1:
        return next(iter(keys))
    raise ValueError(
        f"results_back for {export.key.to_user_string()}: give resource_key (one of {sorted(keys)})"
    )


def build_results_back(
    export: dg.AssetsDefinition,
    *,
    days: int = 14,
    line_statistics: bool = False,
    min_match_rate: float = 0.3,
    min_volume_ratio: float = 0.5,
    segment_ready_hours: float = 48.0,
    resource_key: str | None = None,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    clock: Callable[[], float] = time.time,
) -> dg.Definitions:
    """Checks, a job and a sensor that bring ``export``'s results back (see the module doc).

    ``days`` (0..30, default 14): daily pulls after each send (0: only the pull in the send's
    own run). ``clock`` is epoch seconds "now" (tests move it with the sandbox's clock). Raises
    ``ValueError`` for a partitioned export (not supported) or a bad setting.
    """
    settings = ResultsBackSettings(
        days=days,
        line_statistics=line_statistics,
        min_match_rate=min_match_rate,
        min_volume_ratio=min_volume_ratio,
        segment_ready_hours=segment_ready_hours,
    )
    key = export.key
    if export.partitions_def is not None:
        raise ValueError(
            f"results_back for {key.to_user_string()}: partitioned exports are not supported"
        )
    destination = str(export.metadata_by_key.get(key, {}).get("destination_type", ""))
    checks: list[dg.AssetChecksDefinition] = [build_volume_check(key, settings)]
    collector = _collector(destination, settings)
    if collector is None:
        return dg.Definitions(asset_checks=checks)
    results = build_results_check(
        key,
        destination,
        _resource_key(export, destination, resource_key),
        collector,
        settings,
        clock,
    )
    checks.append(results)
    name = f"{check_name(key)}_results_back"
    job = dg.define_asset_job(f"{name}_job", selection=dg.AssetSelection.checks(results))
    sensor = build_daily_sensor(key, name, job, settings.days, default_status, clock)
    return dg.Definitions(asset_checks=checks, jobs=[job], sensors=[sensor])


def build_daily_sensor(
    key: dg.AssetKey,
    name: str,
    job: Any,
    days: int,
    default_status: dg.DefaultSensorStatus,
    clock: Callable[[], float],
) -> dg.SensorDefinition:
    """Requests the results job once a day from 1 to ``days`` days after the latest send (run
    key: the materialization and the day, so each day runs once; a new send starts over)."""

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=default_status,
        description=f"Pulls {key.to_user_string()}'s results once a day for {days} days after "
        "each send (the send's own run pulls them once right after it).",
    )
    def daily(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        sent = SentExport.latest(context.instance, key)
        if sent is None:
            return dg.SkipReason(f"{key.to_user_string()} has not been sent yet")
        age = clock() - sent.sent_at
        day = int(age // DAY_SECONDS)
        if day < 1:
            return dg.SkipReason(
                f"sent {age / 3600:.1f} h ago; the first daily pull is 24 h after the send"
            )
        if day > days:
            return dg.SkipReason(f"the last send is over {days} days old: nothing more to pull")
        return dg.RunRequest(
            run_key=f"{sent.storage_id}:day{day}",
            tags={"line_exports/results_day": str(day), "line_exports/sent_in_run": sent.run_id},
        )

    return daily


def results_back_for(exports: list[dg.AssetsDefinition], **kwargs: Any) -> dg.Definitions:
    """:func:`build_results_back` for each export, merged (the same keywords for all)."""
    return dg.Definitions.merge(*(build_results_back(e, **kwargs) for e in exports))
