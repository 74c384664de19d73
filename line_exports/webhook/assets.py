"""Dagster assets ``<source>/line_oa_raw`` and ``<source>/line_oa_events`` plus their triggers.

Both tables of a source are landed by one step (one multi-asset), because they are written in
one transaction from one spool cursor; each still gets its own materialization and metadata.
The landing never needs the channel secret: only the receiver does, from its environment.
"""

# No "from __future__ import annotations": Dagster inspects the context/resource hints.

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from line_exports.secret_fields import SecretField
from line_exports.webhook.config import NO_SCHEDULE, SourceConfigError, WebhookSource, load_sources
from line_exports.webhook.landing import LandingResult, default_target_url, land_source
from line_exports.webhook.spool import open_reader, resolve_spool

RESOURCE_KEY = "line_oa_webhook"
SOURCE_TAG = "line_exports/line_oa_source"


class LineOaWebhookResource(dg.ConfigurableResource):
    """Where the receiver spools requests and which database the tables land in."""

    spool_path: str = Field(
        default="", description="Spool SQLite file; empty means <data dir>/webhook/spool.sqlite3"
    )
    spool_url: str = SecretField(
        "SQLAlchemy URL of a spool shared by receivers on several machines "
        "(postgresql+psycopg://...); empty means spool_path or "
        "$LINE_EXPORTS_WEBHOOK_SPOOL_URL. May hold a password, so pass it with dg.EnvVar.",
        default="",
    )
    target_url: str = SecretField(
        "SQLAlchemy URL of the target; empty means the embedded DuckDB. May hold a "
        "password (Postgres), so pass it with dg.EnvVar.",
        default="",
    )
    max_requests_per_run: int = Field(default=200_000, description="Cap per landing run")
    retention_days: float = Field(default=7.0, description="Keep landed requests this long")

    def resolved_spool(self) -> str | Path:
        return resolve_spool(self.spool_url or self.spool_path or None)

    def resolved_target(self) -> str:
        return self.target_url or default_target_url()

    def land(self, source: WebhookSource) -> LandingResult:
        return land_source(
            source,
            spool_path=self.resolved_spool(),
            target_url=self.resolved_target(),
            max_requests=self.max_requests_per_run,
            retention_days=self.retention_days,
        )

    def pending(self, source: WebhookSource) -> tuple[int, int]:
        with open_reader(self.resolved_spool()) as reader:
            return reader.pending_count(source.source_id)


def _raw_metadata(result: LandingResult) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "table": result.raw_table,
        "mode": result.mode,
        "requests_landed": result.raw_rows_landed,
        "requests_read": result.requests_read,
        "malformed_bodies_kept": result.parse_errors,
        "bad_signatures_seen": result.bad_signatures,
        "rejected_requests": dg.MetadataValue.json(result.rejects_by_reason),
        "table_replaced": result.replaced,
        "spool_cursor": result.spool_cursor,
        "requests_quarantined": result.requests_quarantined,
        "quarantine_table": result.rejects_table,
        "quarantine_reasons": dg.MetadataValue.json(result.quarantine_reasons),
    }
    if result.relay:  # the webhook relay's state per target (forwarding runs in the receiver)
        meta["relay"] = dg.MetadataValue.json(result.relay)
        meta["relay_dead_letters"] = sum(t["dead_letters"] for t in result.relay.values())
        meta["relay_backlog"] = sum(t["backlog"] for t in result.relay.values())
    return meta


def _events_metadata(result: LandingResult) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "table": result.events_table,
        "mode": result.mode,
        "events_landed": result.events_landed,
        "events_by_type": dg.MetadataValue.json(result.events_by_type),
        "duplicates_dropped": result.duplicates_dropped,
        "bad_signatures_seen": result.bad_signatures,
        "table_replaced": result.replaced,
        "values_landed_as_null": result.values_landed_as_null,
        "null_values_by_column": dg.MetadataValue.json(result.null_values_by_column),
        "requests_quarantined": result.requests_quarantined,
    }
    for name in ("lag_seconds_p50", "lag_seconds_p99", "lag_seconds_max"):
        value = getattr(result, name)
        if value is not None:
            meta[name] = dg.MetadataValue.float(float(value))
    return meta


def _source_defs(
    source: WebhookSource, group_name: str, default_status: dg.DefaultScheduleStatus
) -> tuple[dg.AssetsDefinition, Any, list[Any], list[Any]]:
    raw_key = dg.AssetKey([source.name, "line_oa_raw"])
    events_key = dg.AssetKey([source.name, "line_oa_events"])
    # The reference's Tags ("used to find this source") as Dagster label tags: assets and runs.
    labels = dict.fromkeys(source.tags, "")
    try:
        dg.AssetSpec(raw_key, tags=labels)
    except dg.DagsterInvalidDefinitionError as exc:
        raise SourceConfigError(
            f"source {source.name}: tags {list(source.tags)} are not all Dagster tags "
            "(letters, digits, '_', '-', '.'; up to 63 characters, one optional 'prefix/')"
        ) from exc
    common = {"group_name": group_name, "kinds": {"sql"}, "tags": labels}

    @dg.multi_asset(
        name=f"{source.name}__line_oa_land",
        specs=[
            dg.AssetSpec(
                raw_key,
                description=f"LINE OA webhook requests of {source.name} as received "
                f"(table {source.qualified(source.raw_table)}, mode {source.mode}).",
                **common,
            ),
            dg.AssetSpec(
                events_key,
                description=f"LINE OA webhook events of {source.name}, one row per event "
                f"(table {source.qualified(source.events_table)}, mode {source.mode}).",
                **common,
            ),
        ],
    )
    def _land(context: dg.AssetExecutionContext, line_oa_webhook: LineOaWebhookResource):  # type: ignore[no-untyped-def]
        result = line_oa_webhook.land(source)
        context.log.info(
            "%s: %d requests, %d events landed, %d duplicates dropped, %d bad signatures",
            source.name,
            result.raw_rows_landed,
            result.events_landed,
            result.duplicates_dropped,
            result.bad_signatures,
        )
        if result.requests_quarantined:
            context.log.warning(
                "%s: %d request(s) could not land and are kept in %s: %s",
                source.name,
                result.requests_quarantined,
                result.rejects_table,
                result.quarantine_reasons,
            )
        yield dg.MaterializeResult(asset_key=raw_key, metadata=_raw_metadata(result))
        yield dg.MaterializeResult(asset_key=events_key, metadata=_events_metadata(result))

    run_tags = {SOURCE_TAG: source.name, **labels}
    job = dg.define_asset_job(
        f"{source.name}__line_oa_land_job",
        selection=dg.AssetSelection.assets(raw_key, events_key),
        tags=run_tags,
    )
    schedules: list[Any] = []
    sensors: list[Any] = []
    trigger = source.schedule.strip()
    if trigger == "sensor":

        @dg.sensor(
            name=f"{source.name}__line_oa_sensor",
            job=job,
            minimum_interval_seconds=30,
            default_status=dg.DefaultSensorStatus(default_status.value),
        )
        def _sensor(context: dg.SensorEvaluationContext, line_oa_webhook: LineOaWebhookResource):  # type: ignore[no-untyped-def]
            count, newest = line_oa_webhook.pending(source)
            if count == 0:
                return dg.SkipReason("no new webhook requests")
            return dg.RunRequest(run_key=f"{source.name}-{newest}")

        sensors.append(_sensor)
    elif trigger.lower() not in NO_SCHEDULE:
        schedules.append(_schedule(source, job, default_status, run_tags))
    return _land, job, schedules, sensors


def _schedule(
    source: WebhookSource,
    job: Any,
    default_status: dg.DefaultScheduleStatus,
    tags: dict[str, str],
) -> dg.ScheduleDefinition:
    """The cron in the Scheduling Timezone; each run starts ``delay`` seconds after its tick
    (TD's Delay Transfer) and is tagged with the tick, as a delayed ``.dig`` schedule is."""
    from line_exports.workflows.schedules import ScheduleError, build_schedule, parse_schedule

    try:
        plan = parse_schedule(
            {"cron>": source.schedule.strip(), "delay": source.delay},
            source.scheduling_timezone,
        )
    except ScheduleError as exc:
        raise SourceConfigError(f"source {source.name}: schedule: {exc}") from None
    where = f"{source.schedule} in {source.scheduling_timezone}"
    return build_schedule(
        f"{source.name}__line_oa",
        job,
        plan,
        f"Lands {source.name}: {where}"
        + (f", each run {source.delay}s after its tick" if source.delay else ""),
        default_status=default_status,
        tags=tags,
    )


def build_webhook_definitions(
    sources: Sequence[WebhookSource] | None = None,
    *,
    sources_path: str | Path | None = None,
    spool_path: str | Path | None = None,
    spool_url_env: str | None = None,
    target_url: str | None = None,
    target_url_env: str | None = None,
    group_name: str = "line_oa",
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.RUNNING,
) -> dg.Definitions:
    """Assets, a landing job and a schedule or sensor per source, and the shared resource.

    ``sources`` defaults to the sources file (``sources_path`` or the default location).
    ``target_url_env`` names an env var holding the target URL (read via ``dg.EnvVar`` so a
    password never lands in run config); otherwise ``target_url`` or the embedded DuckDB.
    ``spool_url_env`` likewise names an env var holding the URL of a PostgreSQL spool shared
    by receivers on several machines; otherwise ``spool_path`` or the default spool file.
    """
    chosen = list(sources) if sources is not None else load_sources(sources_path)
    assets: list[dg.AssetsDefinition] = []
    jobs: list[Any] = []
    schedules: list[Any] = []
    sensors: list[Any] = []
    for source in chosen:
        asset, job, sch, sen = _source_defs(source, group_name, default_status)
        assets.append(asset)
        jobs.append(job)
        schedules.extend(sch)
        sensors.extend(sen)
    target: Any = dg.EnvVar(target_url_env) if target_url_env else (target_url or "")
    spool_url: Any = dg.EnvVar(spool_url_env) if spool_url_env else ""
    resource = LineOaWebhookResource(
        spool_path=str(spool_path) if spool_path else "", spool_url=spool_url, target_url=target
    )
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources={RESOURCE_KEY: resource},
    )
