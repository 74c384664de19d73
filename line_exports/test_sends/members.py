"""Test sends of member exports: a ``<name>__test`` audience or segment of the sampled rows.

Each goes through the destination's own ``deliver`` (its batching, upload and checks), with
settings that point it at the test target, under the test send's ledger scope:

* LINE ``audience``: ``audience_name`` ``<audience_name>__test`` (``audience_<id>__test`` for
  ``use_audience_id``); audiences of that name are deleted first (LINE audiences are add-only,
  ``manage-audience.yml``), so the new one holds exactly the sample.
* MAAC segments: ``segment_name`` ``<segment_name>__test`` with ``update_segment`` (replaced
  whole). MAAC members: an import would change real members, so the sampled rows' ``line_uid``
  go to a segment ``<workflow>.<task>__test`` instead (rows without one are listed).
* LinkedIn: segment ``<segment_name>__test`` in add mode; the members the previous test send
  of this export added and this one does not are removed (``REMOVE`` elements), so the segment
  holds exactly the sample.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from line_exports.destination import DeliveryFailed, DeliveryReport, Destination, ExportRun
from line_exports.rules import ROW_NUMBER, reject
from line_exports.test_sends import (
    Outcome,
    Sample,
    TestSendError,
    previous_members,
    reject_lines,
    remember_members,
    spool,
    target_name,
)


def write_members(
    mode: str,
    export: str,
    dest: Destination,
    resource: Any,
    settings: Any,
    found: Sample,
    run: ExportRun,
    workdir: Path,
    outcome: Outcome,
) -> None:
    """Write the sampled rows' members to the ``__test`` target of ``mode``."""
    frame = found.valid
    values = settings.model_dump()
    extra: list[pd.DataFrame] = []
    if mode == "line_audience":
        name = target_name(
            f"audience_{settings.audience_id}"
            if settings.use_audience_id
            else settings.audience_name
        )
        values.update(
            audience_name=name, use_audience_id=False, audience_id=None, sync_mode="append"
        )
    elif mode == "maac_segment":
        if settings.data_object == "members":
            name = target_name(export.replace("/", "."))
            has = (
                frame["line_uid"].notna() & (frame["line_uid"].astype(str) != "")
                if "line_uid" in frame.columns
                else pd.Series(False, index=frame.index)
            )
            missing = frame[~has]
            if len(missing):
                extra.append(
                    reject(
                        missing[ROW_NUMBER].tolist(),
                        "line_uid",
                        "test_segment",
                        "no line_uid: a MAAC segment holds LINE UIDs, so this member is not in the test segment",
                    )
                )
            frame = frame[has][[ROW_NUMBER, "line_uid"]].reset_index(drop=True)
        else:
            name = target_name(settings.segment_name.strip())
        values.update(
            data_object="segments", segment_name=name, update_segment=True, sync_mode="append"
        )
    else:
        name = target_name(settings.segment_name)
        values.update(
            segment_name=name,
            dmp_segment_mode="add",
            ignore_invalid_records=True,
            sync_mode="append",
        )
    try:
        test_settings = dest.settings_class(**values)
    except ValueError as exc:
        raise TestSendError(f"the test target {name!r} is not valid: {exc}") from None
    reject_lines(extra, outcome)
    if not len(frame):
        outcome.say(f"    nothing written to {name!r}: no sampled row is valid")
        return
    live = resource.process_config_and_initialize()
    if mode == "line_audience":
        _delete_audiences(live, test_settings, name, outcome)
    rows = spool(frame, workdir / "test-send" / "valid.parquet")
    try:
        report = dest.deliver(live, test_settings, rows, run)
    except DeliveryFailed as exc:
        report = exc.report
        outcome.failed = True
        outcome.say(f"    stopped: {exc}")
    reject_lines(report.rejected + report.refused + report.unknown, outcome)
    if mode == "linkedin_segment" and "segment_id" in report.metadata:
        _drop_previous(live, test_settings, export, frame, report, run, outcome)
    kept = _kept(frame, report)
    ident = _ident_column(frame)
    outcome.say(
        f"    wrote {dest.target_label(test_settings)} ({_target_id(report)}): "
        f"{report.accepted_rows} of {len(frame)} sampled rows' members accepted"
    )
    for _, row in frame[frame[ROW_NUMBER].isin(kept)].iterrows():
        outcome.say(
            f"      row {int(row[ROW_NUMBER])}" + (f": {ident} {row[ident]}" if ident else "")
        )
    outcome.written.append(name)
    if report.refused_unnamed:
        outcome.say(f"    {report.refused_unnamed} of them refused by the API without naming them")


def _kept(frame: pd.DataFrame, report: DeliveryReport) -> set[int]:
    out = set(frame[ROW_NUMBER].astype(int))
    for part in report.rejected + report.refused + report.unknown:
        out -= set(part[ROW_NUMBER].astype(int))
    return out


def _ident_column(frame: pd.DataFrame) -> str | None:
    for column in (
        "line_uid",
        "id",
        "email",
        "company_name",
        "customer_id",
        "google_aid",
        "apple_idfa",
    ):
        if column in frame.columns:
            return column
    return None


def _target_id(report: DeliveryReport) -> str:
    meta = report.metadata
    for key in ("audience_id", "audience_group_id", "segment_id"):
        if key in meta:
            return f"#{meta[key]}"
    return "#" + report.job_ids[-1] if report.job_ids else "id unknown"


def _delete_audiences(resource: Any, settings: Any, name: str, outcome: Outcome) -> None:
    """LINE audiences are add-only: the previous test audiences of this name go first."""
    client = resource.get_client(settings.retry_settings())
    for group in client.audiences_named(name):
        client.delete_audience(int(group["audienceGroupId"]))
        outcome.say(
            f"    deleted the previous test audience #{group['audienceGroupId']} ({name!r})"
        )


def _drop_previous(
    resource: Any,
    settings: Any,
    export: str,
    frame: pd.DataFrame,
    report: DeliveryReport,
    run: ExportRun,
    outcome: Outcome,
) -> None:
    """LinkedIn: ``REMOVE`` the members the previous test send added and this one did not."""
    from line_exports.destinations.linkedin import company_elements, user_elements

    columns = [c for c in frame.columns if not c.startswith("_")]
    now = json.loads(frame[columns].to_json(orient="records", force_ascii=False))
    before = previous_members(run.ledger.ledger, export)
    current = {json.dumps(r, sort_keys=True) for r in now}
    stale = [r for r in before if json.dumps(r, sort_keys=True) not in current]
    if stale:
        build = user_elements if settings.audience_type == "users" else company_elements
        client = resource.get_client(settings.retry_settings())
        elements = build(pd.DataFrame(stale), "REMOVE")
        client.batch_create(str(report.metadata["segment_id"]), settings.audience_type, elements)
        outcome.say(f"    removed {len(stale)} members of the previous test send from the segment")
    remember_members(run.ledger.ledger, export, now)
