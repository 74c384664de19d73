"""The export factory: a query (or upstream asset) and a destination become a Dagster asset.

One row's way: rows stream from the source in chunks, each chunk is validated over whole
columns, valid rows are spooled to a Parquet file and rejects to a CSV file, then (only if the
invalid-record policy allows) the destination delivers the spooled rows. The materialization
records what a user needs to trust the run: rows read, valid, rejected (with a preview), sent,
accepted, API job ids, requests and duration; a check flags a reject rate over a threshold.
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError, create_model

from line_exports import (
    column_names,
    export_guards,
    headlines,
    interrupts,
    output_mapping,
    paths,
    retry_wait,
    sql_errors,
    sync,
)
from line_exports.claims import ClaimLost, ClaimOwner, ScopeClaimed
from line_exports.dedup import deduplicate
from line_exports.destination import (
    DeliveryFailed,
    DeliveryReport,
    Destination,
    ExportRun,
    ExportSettings,
    ValidRows,
    release_arrow_memory,
)
from line_exports.destinations import get_destination
from line_exports.http import ApiError, stoppable_waits
from line_exports.ledger import Ledger
from line_exports.outcomes import (
    Outcome,
    acceptance_failure,
    refusal_check,
    refusal_check_spec,
)
from line_exports.private_files import private_dir, private_opener
from line_exports.rules import (
    ROW_NUMBER,
    RuleSet,
    SchemaError,
    summarize_rejects,
    to_text,
    validate,
)
from line_exports.session import (
    render_session_variables,
    run_scope,
    session_time,
    session_variables,
)
from line_exports.sources import SqlSource, read_sql_text
from line_exports.values import check_timezone

DEFAULT_RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL)
PREVIEW_ROWS = 20
REJECT_RATE_CHECK = "reject_rate"
NOT_EMPTY_CHECK = "not_empty"


@dataclass
class ValidationSummary:
    """The outcome of validating a whole export, before anything is sent."""

    rows_read: int = 0
    valid_rows: int = 0
    reject_cells: int = 0
    rejected_row_numbers: set[int] = field(default_factory=set)
    by_rule: dict[str, int] = field(default_factory=dict)
    preview: list[pd.DataFrame] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    column_hints: dict[str, str] = field(default_factory=dict)
    rejects_path: Path | None = None
    refused_by_answer: dict[str, int] = field(default_factory=dict)
    unknown_by_reason: dict[str, int] = field(default_factory=dict)
    duplicate_rows: int = 0
    sent_earlier: dict[str, int] = field(default_factory=dict)
    """Column -> rows sent without a value an earlier row sent (:attr:`Unique.per_value`);
    each listed in :attr:`sent_earlier_path`, none rejected."""
    sent_earlier_path: Path | None = None

    @property
    def rejected_rows(self) -> int:
        return len(self.rejected_row_numbers)

    def add_rejects(
        self, rejects: pd.DataFrame, refused: bool = False, unknown: bool = False
    ) -> None:
        """Rows rejected before sending (counted in ``rejected_rows``), or, with ``refused``,
        rows the API refused, or, with ``unknown``, rows sent whose delivery is unknown (both
        written to the same file and preview, counted apart by the outcome)."""
        if not len(rejects):
            return
        with interrupts.signals_held():  # counted and written, or neither (VERIFY-13k F2)
            self._add_rejects(rejects, refused, unknown)

    def _add_rejects(self, rejects: pd.DataFrame, refused: bool, unknown: bool) -> None:
        if refused or unknown:
            counts = self.refused_by_answer if refused else self.unknown_by_reason
            for message, count in rejects.groupby("message").size().items():
                key = _shortened(str(message))
                counts[key] = counts.get(key, 0) + int(count)
        else:
            self.reject_cells += len(rejects)
            self.rejected_row_numbers.update(int(r) for r in rejects[ROW_NUMBER].unique())
            for key, count in summarize_rejects(rejects).items():
                self.by_rule[key] = self.by_rule.get(key, 0) + count
        shown = sum(len(p) for p in self.preview)
        if shown < PREVIEW_ROWS:
            self.preview.append(rejects.head(PREVIEW_ROWS - shown))
        if self.rejects_path is not None:
            header = not self.rejects_path.exists()
            # Rejected rows are personal data: the file is created 0600 (in a 0700 folder).
            # RFC 4180 lines end in CRLF, so the csv writer quotes a field holding a bare CR
            # as it quotes LF, comma and quote (it quotes its line terminator's characters
            # only): a value ``ma\rle`` stays one field for every CSV reader.
            with open(
                self.rejects_path, "a", encoding="utf-8", newline="", opener=private_opener
            ) as out:
                rejects.to_csv(out, header=header, index=False, lineterminator="\r\n")

    def preview_frame(self) -> pd.DataFrame:
        return pd.concat(self.preview, ignore_index=True) if self.preview else pd.DataFrame()

    def first_reasons(self, limit: int = 5) -> str:
        frame = self.preview_frame().head(limit)
        return "; ".join(
            f"row {r[ROW_NUMBER]}, column {r['column']}: {r['message']} ({r['rule']})"
            for _, r in frame.iterrows()
        )


class Spool:
    """Valid rows written chunk by chunk to Parquet with one fixed schema, read back in batches."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None

    def write(self, frame: pd.DataFrame) -> None:
        if self._schema is None:
            self._schema = pa.Schema.from_pandas(frame, preserve_index=False)
            self._writer = pq.ParquetWriter(self.path, self._schema)
        if not len(frame):
            return
        table = pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False)
        assert self._writer is not None
        self._writer.write_table(table)
        self.rows += len(frame)

    def close(self) -> ValidRows:
        if self._writer is not None:
            self._writer.close()
        return ValidRows(self.path, self.rows)


def _stringify_extras(frame: pd.DataFrame, ruleset: RuleSet, timezone: str) -> pd.DataFrame:
    """Pass-through columns (e.g. template fields) as text, so every chunk has one schema."""
    for name in ruleset.keep:
        if name in frame.columns:
            frame[name] = to_text(frame[name], timezone)
    return frame


def validate_export(
    chunks: Iterator[pd.DataFrame],
    ruleset: RuleSet,
    settings: Mapping[str, Any],
    workdir: Path,
    log: Any = None,
    timezone: str = "UTC",
    summary: ValidationSummary | None = None,
) -> tuple[ValidationSummary, ValidRows]:
    """Validate every chunk; spool the valid rows; write every reject with its reason.

    Then the export-wide rules (``ruleset.unique``): rows repeating an earlier row's key after
    normalization are dropped from the spool and rejected as duplicates.

    ``summary``: the summary to fill (default a new one writing ``workdir/rejects.csv``); a
    caller that passes its own still holds, when reading stops (an interrupt), the rows read
    and rejected so far.
    """
    private_dir(workdir)
    if summary is None:
        summary = ValidationSummary(rejects_path=workdir / "rejects.csv")
    spool = Spool(workdir / "valid.parquet")
    last_log = time.monotonic()
    try:
        for chunk in chunks:
            checked = validate(
                chunk, ruleset, settings, row_offset=summary.rows_read, timezone=timezone
            )
            summary.rows_read += checked.rows_read
            summary.add_rejects(checked.rejects)
            spool.write(_stringify_extras(checked.valid, ruleset, timezone))
            for name in checked.ignored_columns:
                if name not in summary.ignored_columns:
                    summary.ignored_columns.append(name)
            del checked, chunk  # free this chunk's buffers before handing them back
            release_arrow_memory()
            if log is not None and time.monotonic() - last_log > 5:
                last_log = time.monotonic()
                log.info(
                    f"validated {summary.rows_read:,} rows, {summary.rejected_rows:,} rejected so far"
                )
    finally:
        rows = spool.close()
    done = deduplicate(rows, ruleset, settings)
    rows, duplicates = done.rows, done.rejects
    summary.add_rejects(duplicates)
    if len(done.notes):
        summary.sent_earlier = {
            str(k): int(v) for k, v in done.notes.groupby("column").size().items()
        }
        summary.sent_earlier_path = workdir / "sent_earlier.csv"
        with open(
            summary.sent_earlier_path, "w", encoding="utf-8", newline="", opener=private_opener
        ) as out:  # personal data, like the rejects file (values masked there too)
            done.notes.to_csv(out, index=False, lineterminator="\r\n")
        if log is not None:
            first = done.notes.iloc[0]
            log.warning(
                f"{len(done.notes):,} values were sent once, with an earlier row, and left out "
                f"of later rows still sent with their other values (first: row "
                f"{first[ROW_NUMBER]}: {first['message']}); list: {summary.sent_earlier_path}"
            )
    summary.duplicate_rows = int(duplicates[ROW_NUMBER].nunique()) if len(duplicates) else 0
    summary.valid_rows = rows.count
    return summary, rows


def frame_chunks(frame: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    """An in-memory DataFrame (an upstream asset's value) in chunks, like a query's rows (one
    chunk of no row for a frame of none: its columns, for :mod:`line_exports.column_names`)."""
    if not len(frame):
        yield frame
    for start in range(0, len(frame), size):
        yield frame.iloc[start : start + size]


def settings_with_defaults(
    settings_class: type[ExportSettings], values: Mapping[str, Any]
) -> type[ExportSettings]:
    """A subclass of ``settings_class`` whose defaults are ``values`` (shown and editable in the UI).

    Values are validated here, so a wrong setting fails when definitions load, not mid-run.
    """
    validated = settings_class(**values)
    fields: dict[str, Any] = {}
    for name in values:
        info = copy.copy(settings_class.model_fields[name])
        info.default = getattr(validated, name)
        fields[name] = (settings_class.model_fields[name].annotation, info)
    return create_model(settings_class.__name__, __base__=settings_class, **fields)


def _markdown(frame: pd.DataFrame) -> str:
    if not len(frame):
        return "_none_"
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        cells = [str(row[c]).replace("|", "\\|").replace("\n", " ") for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def export_metadata(
    summary: ValidationSummary,
    report: DeliveryReport | None,
    seconds: float,
    source: str,
    target: str,
    advice: str = "",
) -> dict[str, Any]:
    """Run metadata (numbers become plots in the UI's metadata history).

    The five outcome counts add up to ``rows_read`` (see :mod:`line_exports.outcomes`).
    ``advice``: the destination's advice for rows of unknown delivery
    (``Destination.delivery_advice``), kept as ``delivery_unknown_advice`` when there are some.
    """
    outcome = Outcome.of(summary, report)
    reject_rate = summary.rejected_rows / summary.rows_read if summary.rows_read else 0.0
    meta: dict[str, Any] = {
        "source": source,
        "destination": target,
        **outcome.metadata(),
        "reject_rate": dg.MetadataValue.float(round(reject_rate, 6)),
        "rejects_by_rule": dg.MetadataValue.json(summary.by_rule),
        "rejects_preview": dg.MetadataValue.md(_markdown(summary.preview_frame())),
        "duration_seconds": dg.MetadataValue.float(round(seconds, 3)),
    }
    if summary.duplicate_rows:
        meta["rows_duplicate"] = summary.duplicate_rows
    if summary.sent_earlier:
        meta["values_sent_with_earlier_rows"] = dg.MetadataValue.json(summary.sent_earlier)
        meta["values_sent_earlier_file"] = dg.MetadataValue.path(str(summary.sent_earlier_path))
    if summary.refused_by_answer:
        meta["refusals_by_answer"] = dg.MetadataValue.json(summary.refused_by_answer)
    if summary.unknown_by_reason:
        meta["delivery_unknown_reasons"] = dg.MetadataValue.json(summary.unknown_by_reason)
    if outcome.unknown and advice:
        meta["delivery_unknown_advice"] = advice
    if summary.rejects_path is not None and summary.rejects_path.exists():
        meta["rejects_file"] = dg.MetadataValue.path(str(summary.rejects_path))
    if summary.ignored_columns:
        meta["unknown_columns"] = dg.MetadataValue.json(
            {c: summary.column_hints.get(c, "not sent") for c in summary.ignored_columns}
        )
    if report is not None:
        meta.update(
            {
                "rows_sent": outcome.sent,  # this run's requests, resumed rows apart
                "rows_resumed": report.resumed_rows,
                "requests": report.requests,
                "api_job_ids": dg.MetadataValue.json(report.job_ids),
                "dagster/row_count": report.accepted_rows,
            }
        )
        meta.update(report.metadata)
    return meta


def _shortened(message: str, limit: int = 200) -> str:
    """``message`` cut to about ``limit`` characters for a metadata key, never inside a
    `backquoted` command (a held row's `line-exports held EXPORT --resend` stays whole)."""
    if len(message) <= limit:
        return message
    cut = limit
    if message.count("`", 0, cut) % 2:  # inside a command: up to its closing backquote
        end = message.find("`", cut)
        cut = len(message) if end < 0 else end + 1
    return message[:cut]


def _add_report(summary: ValidationSummary, report: DeliveryReport) -> None:
    """The destination's rejects (before sending), the API's refusals and the deliveries of
    unknown fate, into the summary (and the rejects file)."""
    for rejected in report.rejected:
        summary.add_rejects(rejected)
    for refused in report.refused:
        summary.add_rejects(refused, refused=True)
    for answer, count in report.refused_unnamed_answers.items():  # rows the API did not name
        key = _shortened(answer)
        summary.refused_by_answer[key] = summary.refused_by_answer.get(key, 0) + count
    for unknown in report.unknown:
        summary.add_rejects(unknown, unknown=True)


def _failure(summary: ValidationSummary, policy: str, metadata: dict[str, Any]) -> dg.Failure:
    return dg.Failure(
        description=(
            f"{summary.rejected_rows:,} of {summary.rows_read:,} rows are invalid and {policy} is false, "
            f"so nothing was sent. First reasons: {summary.first_reasons()}"
        ),
        metadata=metadata,
        allow_retries=False,
    )


def _interrupted(
    context: dg.AssetExecutionContext,
    key: dg.AssetKey,
    name: str,
    exc: BaseException,
    meta: dict[str, Any],
    stage: str,
    after: str = "",
) -> interrupts.Stopped:
    """An interrupt (SIGINT / SIGTERM) that stopped the export, as :class:`~line_exports.
    interrupts.Stopped` (the run ends interrupted, never retried), its headline saying what
    became of the rows; the counts (``meta``, with ``stopped_by``) are logged first as an
    ``AssetObservation`` of the export, where the CLI's run table and the UI find them
    (Dagster records an interrupt's failure with no metadata).

    ``stage``: ``reading`` (the query's rows, validation), ``planning`` (after validation,
    before the first request), ``delivering``, or ``waiting`` (a failed attempt waiting for
    the step's next one, :mod:`line_exports.retry_wait`: ``meta`` is its failure's, ``after``
    says when the next was due and why the attempt failed). Before delivery nothing was sent: every row
    read so far is never sent but those rejected, whose rejects file is kept. Between two
    requests (:class:`~line_exports.interrupts.DeliveryInterrupted`) every request sent was
    answered and counted. Stopped at once by a second signal, a request in flight is counted
    by what the destination knew of it (``meta``)."""
    between = isinstance(exc, interrupts.DeliveryInterrupted)
    signal_name = getattr(exc, "signal_name", "") or "an interrupt"
    meta = {**meta, interrupts.STOPPED_BY: signal_name}
    context.log_event(dg.AssetObservation(asset_key=key, metadata=meta))
    n = {k: int(getattr(v, "value", v) or 0) for k, v in meta.items() if k.startswith("rows_")}
    read = f"of {n['rows_read']:,} rows read" + (" so far" if stage == "reading" else "")
    if stage == "reading":
        when = "before sending anything (while reading and validating the rows)"
    elif stage == "planning":
        when = "before sending anything"
    elif stage == "waiting":
        when = "between step attempts"
    else:
        when = "after the request in flight" if between else "at once, mid-delivery"
    rejects = meta.get("rejects_file")
    return interrupts.Stopped(
        f"{name}: stopped by {signal_name} {when}: {read}, {n['rows_accepted']:,} accepted, "
        f"{n['rows_refused_by_api']:,} refused by the API, {n['rows_delivery_unknown']:,} of "
        f"unknown delivery, {n['rows_unsent']:,} never sent, {n['rows_rejected']:,} rejected "
        "before sending"
        + (f" (rejects file: {getattr(rejects, 'value', rejects)})" if rejects else "")
        + (
            " (the rows of a request cut off in flight are of unknown delivery: it may have "
            "reached the API)"
            if stage == "delivering" and not between
            else ""
        )
        + (f"; {after}" if after else ""),
        meta,
    )


def _cause(name: str, exc: Exception) -> str:
    """A failed attempt's cause, as its headline says it (without the export's name)."""
    cause = exc.description if isinstance(exc, dg.Failure) else None
    return (cause or f"{type(exc).__name__}: {exc}").removeprefix(f"{name}: ")


def _stopped_waiting(
    context: dg.AssetExecutionContext,
    key: dg.AssetKey,
    name: str,
    signalled: interrupts.SignalReceived,
    exc: Exception,
) -> interrupts.Stopped:
    """A signal once an attempt had failed with ``exc`` (while the step decided, logged or
    waited for its next attempt, :mod:`line_exports.retry_wait`): the run stops with that
    attempt's counts (its failure's metadata, logged as the observation :func:`_interrupted`
    logs) and its cause; no other attempt was started."""
    policy = retry_wait.retrying_policy(context, exc)
    attempts = policy.max_retries + 1 if policy else headlines.last_attempt(context)[1] + 1
    after = (
        f"step attempt {context.retry_number + 1} of {attempts} had failed, no other was "
        f"started: {_cause(name, exc)}"
    )
    meta = dict(exc.metadata) if isinstance(exc, dg.Failure) and exc.metadata else {}
    if "rows_read" in meta:
        return _interrupted(context, key, name, signalled, meta, "waiting", after)
    return interrupts.Stopped(
        f"{name}: stopped by {signalled.signal_name} between step attempts; {after}"
    )


def _render_settings(
    dest: Destination, name: str, values: dict[str, Any], fill: Callable[[str], str]
) -> tuple[ExportSettings, dict[str, Any], dict[str, Any]]:
    """Settings with every ``${`` string filled for this run, validated again, and the
    metadata that shows what they became."""
    filled = {}
    for key, value in values.items():
        if isinstance(value, str) and "${" in value:
            try:
                filled[key] = fill(value)
            except ValueError as exc:
                raise dg.Failure(
                    description=f"{name}: setting {key}: {exc}", allow_retries=False
                ) from None
    values = {**values, **filled}
    try:
        config = dest.settings_class(**values)
    except ValidationError as exc:
        raise dg.Failure(
            description=f"{name}: settings filled for this run are invalid: {exc}",
            allow_retries=False,
        ) from None
    extra = {"resolved_settings": dg.MetadataValue.json(filled)} if filled else {}
    return config, values, extra


def _reject_rate_check(
    context: dg.AssetExecutionContext,
    name: str,
    summary: ValidationSummary,
    max_reject_rate: float,
) -> dg.AssetCheckResult:
    """The reject-rate check; a failure is also a WARNING line in the run log (not only DEBUG)."""
    reject_rate = summary.rejected_rows / summary.rows_read if summary.rows_read else 0.0
    passed = reject_rate <= max_reject_rate
    if not passed:
        top = ", ".join(
            f"{k} ({v:,})" for k, v in sorted(summary.by_rule.items(), key=lambda kv: -kv[1])[:3]
        )
        context.log.warning(
            f"{name}: check {REJECT_RATE_CHECK} failed: {summary.rejected_rows:,} of "
            f"{summary.rows_read:,} rows rejected ({reject_rate:.1%} > {max_reject_rate:.0%}); "
            f"top reasons: {top}; rejects file: {summary.rejects_path}"
        )
    return dg.AssetCheckResult(
        check_name=REJECT_RATE_CHECK,
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "reject_rate": reject_rate,
            "threshold": max_reject_rate,
            "rows_rejected": summary.rejected_rows,
        },
    )


def _unknown_columns(
    context: dg.AssetExecutionContext,
    name: str,
    dest: Destination,
    config: ExportSettings,
    ruleset: RuleSet,
    summary: ValidationSummary,
    unsent: Callable[[str], dg.Failure],
) -> None:
    """Columns the destination does not know: a warning with the closest known column (in the
    log and the metadata), or a failure (``unsent``) with ``unknown_columns: fail``."""
    found = export_guards.unknown_columns(summary.ignored_columns, ruleset)
    if not found:
        return
    summary.column_hints = {u.name: str(u) for u in found}
    message = export_guards.unknown_columns_message(name, found, dest.type_name)
    if config.unknown_columns == "fail":
        raise unsent(f"{message}; unknown_columns is fail, so nothing was sent")
    context.log.warning(message)


def _empty_result(
    context: dg.AssetExecutionContext,
    name: str,
    dest: Destination,
    config: ExportSettings,
    summary: ValidationSummary,
    meta: dict[str, Any],
    max_reject_rate: float,
) -> dg.MaterializeResult:
    """No valid row: skip with a warning and a failed ``not_empty`` check, or fail (a replace
    with nothing, or ``empty_result: fail``)."""
    message, not_empty = _nothing_to_send(context, name, dest, config, summary.rows_read, meta)
    meta["skipped"] = message
    meta.update({"rows_sent": 0, "rows_accepted": 0, "requests": 0})
    mirror = config.sync_mode == "mirror"
    checks = [
        _reject_rate_check(context, name, summary, max_reject_rate),
        not_empty,
        refusal_check(context.asset_key, Outcome.of(summary, None)),
        sync.check_result(
            context.asset_key,
            config.sync_mode,
            None,
            sync.EMPTY_RESULT_REASON if mirror else "",
        ),
    ]
    if mirror:
        context.log.warning(f"{name}: check {sync.SYNC_CHECK} failed: {sync.EMPTY_RESULT_REASON}")
    return dg.MaterializeResult(metadata=meta, check_results=checks)


def _sent_something_check(
    context: dg.AssetExecutionContext,
    name: str,
    dest: Destination,
    config: ExportSettings,
    outcome: Outcome,
    meta: dict[str, Any],
) -> dg.AssetCheckResult:
    """``not_empty`` after delivery: the destination's own rules (a CAPI time window, a
    quota) may have rejected every valid row before sending; as if validation had (skip with
    a failed check, or fail where :func:`_empty_result` would)."""
    if outcome.valid:
        return dg.AssetCheckResult(
            check_name=NOT_EMPTY_CHECK, passed=True, severity=dg.AssetCheckSeverity.WARN
        )
    return _nothing_to_send(context, name, dest, config, outcome.read, meta)[1]


def _nothing_to_send(
    context: dg.AssetExecutionContext,
    name: str,
    dest: Destination,
    config: ExportSettings,
    rows_read: int,
    meta: dict[str, Any],
) -> tuple[str, dg.AssetCheckResult]:
    """No valid row to send (validation, or the destination's own rules, rejected them all):
    raises ``dg.Failure`` (``meta`` attached, not retried) for a replace with nothing or
    ``empty_result: fail``; else logs the warning and returns it with the failed ``not_empty``
    check."""
    replaces = dest.replaces_target(config)
    action = export_guards.empty_result_action(config.empty_result, replaces)
    message = export_guards.empty_result_message(name, action, replaces, rows_read)
    if action == "fail":
        raise dg.Failure(description=message, metadata=meta, allow_retries=False)
    context.log.warning(message)
    check = dg.AssetCheckResult(
        check_name=NOT_EMPTY_CHECK,
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"rows_read": rows_read, "reason": message},
    )
    return message, check


def build_export(
    name: str,
    *,
    destination: str | Destination,
    settings: Mapping[str, Any] | None = None,
    query: str | Path | None = None,
    upstream: dg.AssetKey | str | Sequence[str] | None = None,
    resource_key: str | None = None,
    source_key: str = "sql_source",
    key_prefix: str | Sequence[str] | None = None,
    group_name: str | None = "exports",
    description: str | None = None,
    max_reject_rate: float = 0.05,
    retry_policy: dg.RetryPolicy | None = DEFAULT_RETRY_POLICY,
    timezone: str = "UTC",
    chunk_size: int | None = None,
    deps: Sequence[dg.AssetKey | str] | None = None,
    tags: Mapping[str, str] | None = None,
    partitions_def: dg.PartitionsDefinition | None = None,
    ledger_path: Path | None = None,
    pool: str | None = None,
    render: Callable[[dg.AssetExecutionContext, str], str] | None = None,
    origin: str | None = None,
    query_file: Path | None = None,
) -> dg.AssetsDefinition:
    """An asset that exports ``query``'s rows (or ``upstream``'s DataFrame) to ``destination``.

        ``settings`` are the destination's ``result_settings`` (reference names); they become the
        asset's typed config with these values as defaults, editable at launch. Credentials stay on
        the resource (``resource_key``, default the destination's type name). ``${session_*}``
        variables in the query are filled with the run's scheduled time in ``timezone``.

        ``pool`` is the Dagster concurrency pool the export runs in. By default exports through one
        resource (one account: a LINE channel, a MAAC workspace) share one pool, so the instance's
        pool limit keeps them from running over that account's rate limit together, while another
        account's exports do not wait for them: ``<api>_api`` for the default resource key,
        ``<api>_api__<resource_key>`` for any other.

    ``retry_policy`` is Dagster's step retry around the HTTP retries (``max_retry`` ...): by
    default :data:`DEFAULT_RETRY_POLICY`, ``RetryPolicy(max_retries=2, delay=30,
    backoff=EXPONENTIAL)``: it waits 30 s, then 90 s; the ledger makes a new attempt resume,
    not resend. None (or ``max_retries=0``, a .dig's ``_retry: 0``) turns it off. An error no
    retry can fix is a ``dg.Failure(allow_retries=False)``; on the last of several attempts, any
    error is a failure whose description is its cause (:mod:`line_exports.headlines`).

    ``render(context, text)`` (workflows: digdag's ``${...}``) fills the query and every string
    setting holding ``${`` for this run instead; the filled settings are re-validated and shown
    in the materialization's metadata (``resolved_settings``).

    A relative ``query`` path (``"queries/members.sql"``) is relative to the file that calls
    ``build_export``, not to the working directory. ``origin`` says where the export is
    declared in error messages (default: that file and line; the workflow loader passes the
    ``.dig`` file, line and task) and ``query_file`` the file the query came from (where an
    engine error's identifier is located). A setting name that is not the destination's raises
    ``ValueError`` naming the closest one.
    """
    dest = get_destination(destination) if isinstance(destination, str) else destination
    if (query is None) == (upstream is None):
        raise ValueError(f"export {name!r}: give exactly one of query or upstream")
    settings = dict(settings or {})
    misplaced = sorted(set(settings) & set(dest.auth_fields))
    if misplaced:
        raise ValueError(
            f"export {name!r}: {', '.join(misplaced)} is a credential; set it on the {dest.type_name} resource"
        )
    export_guards.check_setting_names(
        name, dest.type_name, settings, dest.settings_class.model_fields
    )
    config_class = settings_with_defaults(dest.settings_class, settings)
    upstream_name = dg.AssetKey.from_coercible(upstream).path[-1] if upstream is not None else None
    mapping = output_mapping.parse_output_mapping(settings.get("output_mapping"))
    if mapping is not None:
        try:  # a string needing a segment value nobody gave fails at load, not mid-run
            output_mapping.resolve_context(mapping, datetime.now().astimezone(), upstream_name)
        except ValueError as exc:
            raise ValueError(f"export {name!r}: {exc}") from None
    try:
        check_timezone(timezone)
    except ValueError as exc:
        raise ValueError(f"export {name!r}: setting timezone: {exc}") from None
    try:
        sync.check_mode(dest, dest.settings_class(**settings))
    except ValueError as exc:
        raise ValueError(f"export {name!r}: {exc}") from None
    declared = export_guards.declared_at()
    if query is not None:
        query = export_guards.resolve_query_path(query, declared)
        if isinstance(query, Path):
            query_file = query_file or query
        if isinstance(query, Path) and origin is None:
            origin = f"query {query}" + (
                f", declared at {declared[0]}:{declared[1]}" if declared else ""
            )
    if origin is None and declared is not None:
        origin = f"declared at {declared[0]}:{declared[1]}"
    sql_text = read_sql_text(query) if query is not None else None
    resource_key = resource_key or dest.type_name
    pool = pool or (dest.pool if resource_key == dest.type_name else f"{dest.pool}__{resource_key}")
    key = dg.AssetKey(
        [*([key_prefix] if isinstance(key_prefix, str) else (key_prefix or [])), name]
    )
    upstream_key = dg.AssetKey.from_coercible(upstream) if upstream is not None else None
    check_spec = dg.AssetCheckSpec(
        REJECT_RATE_CHECK,
        asset=key,
        description=f"Fails (warning) when more than {max_reject_rate:.0%} of the rows read are rejected.",
    )
    empty_spec = dg.AssetCheckSpec(
        NOT_EMPTY_CHECK,
        asset=key,
        description="Fails (warning) when there was no valid row to send (the export was skipped).",
    )

    def compute(
        context: dg.AssetExecutionContext, config: ExportSettings, **inputs: Any
    ) -> dg.MaterializeResult:
        """One attempt of the step; on the last one (no retry left) an error is a failure
        whose description says the real cause (:mod:`line_exports.headlines`). A stop ends a
        step that runs in a process of its own as :class:`~line_exports.interrupts.
        StepStopped` (its run worker, which signalled it, ends the run as interrupted)."""
        try:
            return stoppable(context, config, **inputs)
        except interrupts.Stopped as stop:
            if not interrupts.own_process(context):
                raise
            raise interrupts.StepStopped(stop) from stop.__cause__

    def stoppable(
        context: dg.AssetExecutionContext, config: ExportSettings, **inputs: Any
    ) -> dg.MaterializeResult:
        """One attempt, or its stop as :class:`~line_exports.interrupts.Stopped`."""
        try:
            # a signal before delivery, or while a failed attempt waits for the next: stop at once
            with interrupts.stop_at_once():
                try:
                    return attempt(context, config, **inputs)
                except Exception as exc:
                    if isinstance(exc, interrupts.Stopped) or (
                        isinstance(exc, dg.Failure) and not exc.allow_retries
                    ):
                        raise
                    try:
                        retry_or_fail(context, exc)
                    except interrupts.SignalReceived as signalled:
                        # anywhere after the attempt failed (deciding, logging, waiting): no
                        # other attempt starts; the stop counts the failed one (NOTE-stopretry)
                        with interrupts.stopping():  # Ctrl-C held down cannot cut the counting
                            stop = _stopped_waiting(context, key, name, signalled, exc)
                        raise stop from exc
        except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt) as exc:
            if isinstance(exc, interrupts.Stopped):
                raise
            if (stop := interrupts.stop_of(exc)) is not None:
                raise stop from None  # a later signal replaced a counted stop (VERIFY-13o G3)
            # before any row was read (settings, the query's text): nothing to count
            signal_name = getattr(exc, "signal_name", "") or "an interrupt"
            raise interrupts.Stopped(
                f"{name}: stopped by {signal_name} before reading any row"
            ) from exc

    def retry_or_fail(context: dg.AssetExecutionContext, exc: Exception) -> NoReturn:
        """After a failed attempt: wait for the next one and ask Dagster for it, or raise
        ``exc`` (as the final failure on the last attempt). Dagster retries neither a
        DagsterError (its boundary re-raises it) nor anything when no attempt follows: then no
        wait either."""
        policy = retry_wait.retrying_policy(context, exc)
        if policy is None:
            last, retries = headlines.last_attempt(context)
            if not last or not retries:
                raise exc  # no retry (none, or not in this run): the error is its headline
            raise headlines.final_failure(name, exc, retries) from exc
        seconds = retry_wait.wait(context, name, policy, _cause(name, exc))
        context.log.info(f"{name}: waited {seconds:.0f} s; the step starts again")
        raise retry_wait.retry_requested(policy) from exc

    def attempt(
        context: dg.AssetExecutionContext, config: ExportSettings, **inputs: Any
    ) -> dg.MaterializeResult:
        started = time.monotonic()
        source: SqlSource | None = (
            getattr(context.resources, source_key) if sql_text is not None else None
        )
        resource = getattr(context.resources, resource_key)
        values = config.model_dump()
        extra: dict[str, Any] = {}
        if render is not None:
            config, values, extra = _render_settings(
                dest, name, values, lambda t: render(context, t)
            )
            if extra:
                context.log.info(
                    f"{name}: settings for this run: {extra['resolved_settings'].data}"
                )
        try:
            ruleset = dest.export_ruleset(config)
        except ValueError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        workdir = paths.data_dir() / "runs" / context.run.run_id / "_".join(key.path)
        if workdir.exists():
            shutil.rmtree(workdir)
        if source is not None and sql_text is not None:
            variables = session_variables(session_time(context, timezone))
            if context.has_partition_key:
                variables["partition_key"] = context.partition_key
            try:
                sql = (
                    render(context, sql_text)
                    if render is not None
                    else render_session_variables(sql_text, variables)
                )
            except ValueError as exc:
                raise dg.Failure(description=f"{name}: {exc}", allow_retries=False) from None
            chunks = column_names.checked_chunks(
                source.read_chunks(
                    sql, chunk_size, scheduled_time=int(variables["session_unixtime"])
                ),
                "the query" if query_file is None else f"the query {query_file}",
            )
            source_label = source.describe()
        else:
            frame = inputs["upstream"]
            if not isinstance(frame, pd.DataFrame):
                raise dg.Failure(
                    description=f"upstream {upstream_key} is not a pandas DataFrame",
                    allow_retries=False,
                )
            chunks = column_names.checked_chunks(
                frame_chunks(frame, chunk_size or 50_000),
                f"upstream asset {upstream_key.to_user_string() if upstream_key else ''}",
            )
            source_label = f"asset {upstream_key.to_user_string() if upstream_key else ''}"
        run_mapping = output_mapping.parse_output_mapping(values.get("output_mapping"))
        if run_mapping is not None:
            try:
                mapped = output_mapping.resolve_context(
                    run_mapping, session_time(context, timezone), upstream_name
                )
            except ValueError as exc:
                raise dg.Failure(description=f"{name}: {exc}", allow_retries=False) from None
            strings = output_mapping.built_strings(run_mapping, mapped)
            chunks = output_mapping.mapped_chunks(chunks, run_mapping, strings)
            extra["output_mapping"] = dg.MetadataValue.md(
                "\n".join(f"- `{line}`" for line in run_mapping.describe())
                + "".join(f"\n\n`{k}` = `{v}`" for k, v in strings.items())
            )
        summary = ValidationSummary(rejects_path=workdir / "rejects.csv")
        try:
            summary, rows = validate_export(
                chunks, ruleset, values, workdir, context.log, timezone=timezone, summary=summary
            )
        except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt) as exc:
            # Nothing sent: the rows read so far are never sent, but those rejected (kept in
            # the rejects file); the spool of valid rows is scratch.
            with interrupts.stopping():  # Ctrl-C held down cannot cut the counting
                (workdir / "valid.parquet").unlink(missing_ok=True)
                meta = export_metadata(
                    summary,
                    None,
                    time.monotonic() - started,
                    source_label,
                    dest.target_label(config),
                )
                stop = _interrupted(context, key, name, exc, meta, "reading")
            raise stop from exc
        except SchemaError as exc:
            raise dg.Failure(description=f"{name}: {exc}", allow_retries=False) from None
        except Exception as exc:
            if sql_errors.is_permanent(exc):
                raise dg.Failure(
                    description=sql_errors.describe(exc, name, origin, query_file, sql_text),
                    allow_retries=False,
                ) from None
            raise  # a lost connection or a lock timeout: the retry policy may help
        # The spool of valid rows is scratch: gone after the run, whatever its outcome
        # (the rejects file stays; the metadata points at it).
        target = dest.target_label(config)

        def unsent(description: str) -> dg.Failure:
            """A failure before anything was sent, with the counts (every valid row unsent)."""
            meta = export_metadata(summary, None, time.monotonic() - started, source_label, target)
            return dg.Failure(description=description, metadata=meta, allow_retries=False)

        advice = dest.delivery_advice(config)
        run: ExportRun | None = None
        counted = False  # the delivery's report is in the summary

        def stopped(
            description: str, exc: BaseException, done: DeliveryReport, retryable: bool
        ) -> dg.Failure:
            """A failure during delivery, with the counts of what ``done`` reports; its
            headline names the API and says what became of the rows (:mod:`.headlines`)."""
            _add_report(summary, done)
            meta = export_metadata(
                summary, done, time.monotonic() - started, source_label, target, advice
            )
            unknown = Outcome.of(summary, done).unknown
            description = headlines.stop_headline(
                description, exc, dest.type_name, done, unknown, advice
            )
            return dg.Failure(description=description, metadata=meta, allow_retries=retryable)

        def signalled(done: DeliveryReport) -> interrupts.Stopped:
            """A delivery that failed once the run was asked to stop (a signal during a
            retry's wait ends it, no retry sent: the call's last answer decided its rows,
            :func:`line_exports.http.stoppable_waits`): interrupted with its counts, as
            between two requests (it ended as a plain failure, the signal lost, VERIFY-13i
            F2)."""
            with interrupts.stopping():  # Ctrl-C held down cannot cut the counting
                _add_report(summary, done)
                meta = export_metadata(
                    summary, done, time.monotonic() - started, source_label, target, advice
                )
                assert run is not None
                stop = interrupts.DeliveryInterrupted(run.interrupted)
                return _interrupted(context, key, name, stop, meta, "delivering")

        try:
            context.log.info(
                # "passed validation", not "valid": a destination may reject more before
                # sending (a rich menu that does not exist, a message over LINE's limits)
                f"{name}: read {summary.rows_read:,} rows, {summary.valid_rows:,} passed "
                f"validation, {summary.rejected_rows:,} rejected"
            )
            _unknown_columns(context, name, dest, config, ruleset, summary, unsent)
            policy, skips = dest.invalid_policy(config)
            # Duplicates are sent once, not invalid: they never stop a run on their own.
            if summary.rejected_rows - summary.duplicate_rows and not skips:
                meta = export_metadata(
                    summary, None, time.monotonic() - started, source_label, target
                )
                raise _failure(summary, policy, meta)
            if summary.valid_rows == 0:
                meta = export_metadata(
                    summary, None, time.monotonic() - started, source_label, target
                )
                return _empty_result(
                    context, name, dest, config, summary, {**meta, **extra}, max_reject_rate
                )
            try:
                dest.check_total(config, summary.valid_rows)
                sync.check_mode(dest, config)
            except ValueError as exc:
                raise unsent(f"{name}: {exc}") from None
            ledger = Ledger(ledger_path)
            try:
                run = ExportRun(
                    name,
                    context.log,
                    # Claimed before the first request: a second run of this scope fails here.
                    ledger.scope("/".join(key.path), run_scope(context)).claim(
                        ClaimOwner.current(context.run.run_id), context.log
                    ),
                    rows.count,
                )
                with stoppable_waits(run.stop), interrupts.stop_between_requests(run, context.log):
                    report, synced = sync.deliver(dest, resource, config, rows, run, workdir)
            except ScopeClaimed as exc:  # before the first request
                raise unsent(f"{name}: {exc}") from None
            except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt) as exc:
                with interrupts.stopping():  # Ctrl-C held down cannot cut the counting
                    done = run.report if run is not None and run.report is not None else None
                    _add_report(summary, done or DeliveryReport())
                    counted = True
                    meta = export_metadata(
                        summary, done, time.monotonic() - started, source_label, target, advice
                    )
                    stop = _interrupted(
                        context, key, name, exc, meta, "delivering" if done else "planning"
                    )
                raise stop from exc
            except DeliveryFailed as exc:
                if run is not None and run.interrupted:
                    counted = True
                    raise signalled(exc.report) from exc
                raise stopped(f"{name}: {exc}", exc, exc.report, exc.retryable) from None
            except (ApiError, ClaimLost, dg.Failure) as exc:
                if isinstance(exc, ApiError) and run is not None and run.interrupted:
                    counted = True
                    raise signalled(run.report or DeliveryReport()) from exc
                # An error the destination did not classify: what it had done so far (its
                # report; none yet: nothing sent). A transient error whose retries are
                # exhausted stays retryable: the run's RetryPolicy may resume.
                if isinstance(exc, dg.Failure) and exc.metadata:
                    raise
                text, retryable = (
                    (exc.description or "failed", exc.allow_retries)
                    if isinstance(exc, dg.Failure)
                    else (str(exc), isinstance(exc, ApiError) and exc.retryable)
                )
                done = run.report if run is not None and run.report is not None else None
                raise stopped(f"{name}: {text}", exc, done or DeliveryReport(), retryable) from None
            finally:
                ledger.close()  # releases the claim, whatever the outcome
            _add_report(summary, report)
            counted = True
            run.progress(report.sent_rows, force=True)
            meta = export_metadata(
                summary, report, time.monotonic() - started, source_label, target, advice
            )
            outcome = Outcome.of(summary, report)
            failure = acceptance_failure(
                name,
                outcome,
                report,
                summary,
                config.min_accepted_ratio,
                meta,
                advice,
                headlines.API_NAMES.get(dest.type_name, dest.type_name),
            )
            if failure is not None:
                raise failure
            checks = [
                _reject_rate_check(context, name, summary, max_reject_rate),
                _sent_something_check(context, name, dest, config, outcome, meta),
                refusal_check(key, outcome),
                sync.check_result(key, config.sync_mode, synced),
            ]
            if synced is not None and synced.blocked:
                context.log.warning(f"{name}: check {sync.SYNC_CHECK} failed: {synced.blocked}")
            return dg.MaterializeResult(metadata={**meta, **extra}, check_results=checks)
        except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt) as exc:
            if isinstance(exc, interrupts.Stopped):
                raise
            if (stop := interrupts.stop_of(exc)) is not None:
                raise stop from None  # a later signal replaced a counted stop (VERIFY-13o G3)
            # Between validation and delivery (nothing sent), or once the delivery returned.
            with interrupts.stopping():  # Ctrl-C held down cannot cut the counting
                done = run.report if run is not None else None
                if done is not None and not counted:
                    _add_report(summary, done)
                meta = export_metadata(
                    summary, done, time.monotonic() - started, source_label, target, advice
                )
                stop = _interrupted(
                    context, key, name, exc, meta, "delivering" if done else "planning"
                )
            raise stop from exc
        finally:
            (workdir / "valid.parquet").unlink(missing_ok=True)
            (workdir / "sync.parquet").unlink(missing_ok=True)

    compute.__name__ = "_".join(key.path)
    # Real classes, not the strings ``from __future__ import annotations`` leaves: Dagster reads them.
    compute.__annotations__.update(context=dg.AssetExecutionContext, config=config_class)
    ins = {"upstream": dg.AssetIn(key=upstream_key)} if upstream_key is not None else {}
    if upstream_key is not None:
        # The input arrives as a keyword argument named after ``ins``.
        def with_upstream(
            context: dg.AssetExecutionContext, config: ExportSettings, upstream: Any
        ) -> dg.MaterializeResult:
            return compute(context, config, upstream=upstream)

        with_upstream.__annotations__.update(context=dg.AssetExecutionContext, config=config_class)
        with_upstream.__name__ = compute.__name__
        fn = with_upstream
    else:
        fn = compute
    required = {resource_key} | ({source_key} if sql_text is not None else set())
    return dg.asset(
        key=key,
        ins=ins,
        deps=deps,
        required_resource_keys=required,
        group_name=group_name,
        description=description
        or f"Exports {'query rows' if sql_text else upstream_key.to_user_string()} to {dest.type_name}.",  # type: ignore[union-attr]
        check_specs=[check_spec, empty_spec, refusal_check_spec(key), sync.check_spec(key)],
        # max_retries 0 (a .dig's _retry: 0) is no policy: Dagster would retry nothing but
        # headline the error "Exceeded max_retries of 0".
        retry_policy=retry_policy if retry_policy and retry_policy.max_retries > 0 else None,
        pool=pool,
        kinds={dest.kind, "duckdb" if sql_text is not None else "pandas"},
        tags=dict(tags or {}),
        partitions_def=partitions_def,
        metadata={
            "destination_type": dest.type_name,
            **({"query": dg.MetadataValue.md(f"```sql\n{sql_text}\n```")} if sql_text else {}),
        },
    )(fn)


def build_export_job(
    asset: dg.AssetsDefinition, name: str | None = None, **kwargs: Any
) -> dg.UnresolvedAssetJobDefinition:
    """A job that runs one export (and its check)."""
    return dg.define_asset_job(
        name or f"{asset.key.path[-1]}_job", selection=dg.AssetSelection.assets(asset), **kwargs
    )
