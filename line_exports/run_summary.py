"""What the CLI says after a run: the counts, why rows were rejected, where the rejects file is,
which checks failed, and a console log a person can read (a failure's message, not Dagster's
stack trace).

Shared by ``line-exports demo`` and ``line-exports run``; ``--strict`` turns a failed check
into a non-zero exit code.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import dagster as dg

from line_exports.interrupts import STOPPED_BY

FAILURE_PREFIX = "dagster._core.definitions.events.Failure: "
STOPPED_PREFIX = "line_exports.interrupts.Stopped: "
"""How Dagster names an export stopped by a signal in a step's error message (its headline
follows, :class:`line_exports.interrupts.Stopped`)."""


def failure_text(message: str) -> str:
    """A failed step's error message without the exception's class: its headline."""
    return message.removeprefix(FAILURE_PREFIX).removeprefix(STOPPED_PREFIX)


@dataclass
class ExportOutcome:
    """One export of a run: its metadata (a materialization's, or a failed step's: a failure
    after the rows were read carries the same counts) and its failed checks."""

    key: str
    metadata: dict[str, Any] = field(default_factory=dict)
    failed_checks: list[str] = field(default_factory=list)
    failed: bool = False

    @property
    def stopped(self) -> bool:
        """A signal (Ctrl-C, SIGTERM) stopped this export: its counts say ``stopped_by``."""
        return bool(self.metadata.get(STOPPED_BY))


def task_status(outcome: ExportOutcome | None, failure: str | None) -> str:
    """A task's status in a run table: ``stopped`` (a Ctrl-C or SIGTERM stopped it: its
    counts say ``stopped_by``, or its step's error is a :class:`line_exports.interrupts.
    Stopped`, e.g. before it read a row), ``failed`` (its step failed: ``failure``, the step's
    error message, or its counts say so), ``ok``, or ``not run`` (nothing recorded)."""
    if (outcome is not None and outcome.stopped) or (failure or "").startswith(STOPPED_PREFIX):
        return "stopped"
    if failure is not None or (outcome is not None and outcome.failed):
        return "failed"
    return "ok" if outcome is not None else "not run"


class _BriefFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL step: message``; an unexpected error with its stack, a ``dg.Failure``
    without (the command's summary prints its message once)."""

    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None) or {}
        step = meta.get("step_key") or meta.get("job_name") or "run"
        message = str(meta.get("orig_message") or record.getMessage())
        event = meta.get("dagster_event")
        error = getattr(getattr(event, "event_specific_data", None), "error", None)
        if error is not None and error.cls_name == "Stopped":
            error = None  # stopped by a signal: its headline (the counts) is in the summary
        if error is not None and error.cls_name == "Failure":
            # The last attempt's failure for an unexpected error (line_exports.headlines): that
            # error, its cause, keeps its stack.
            error = (
                error.cause
                if error.cause is not None and error.cause.cls_name != "Failure"
                else None
            )
        if error is not None and meta.get("step_key"):
            # An unexpected error keeps its stack; a Failure's message is in the summary.
            message = f"{message}\n{error.message.strip()}\n" + "".join(error.stack).rstrip()
        stamp = self.formatTime(record, "%H:%M:%S")
        return f"{stamp} {record.levelname:<7} {step}: {message}"


class _StderrNow(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is when a record is logged, not as it was when the handler
    was made (the handler lives as long as the process; ``main`` may run more than once in it,
    each time with its own stderr, e.g. under a caller that captures it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


@dg.logger(
    config_schema={"log_level": dg.Field(str, default_value="INFO")},
    description="Dagster's events as short lines on stderr (a failure's message without its stack)",
)
def brief_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.getLogger("line_exports.cli.run")
    logger.setLevel(init_context.logger_config["log_level"].upper())
    logger.propagate = False
    if not logger.handlers:
        handler = _StderrNow()
        handler.setFormatter(_BriefFormatter())
        logger.addHandler(handler)
    return logger


def quiet_job(job: dg.JobDefinition) -> dg.JobDefinition:
    """``job`` logging through :func:`brief_console_logger`."""
    return job.with_logger_defs({"console": brief_console_logger})


def log_config(level: str) -> dict[str, Any]:
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def _values(metadata: Any) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in (metadata or {}).items()}


def _failed_asset(result: Any, event: Any) -> str:
    """The asset key (``a/b``) a failed step computes, else its step key."""
    try:
        assets = result.job_def.asset_layer.get_assets_def_for_node(event.node_handle)
    except Exception:  # a job without assets, or a node of another kind
        assets = None
    keys = list(assets.keys) if assets is not None else []
    return keys[0].to_user_string() if len(keys) == 1 else str(event.step_key)


def outcomes(result: Any, instance: Any = None) -> dict[str, ExportOutcome]:
    """Each export's metadata and failed checks, by asset key (``a/b``): a materialized
    asset's, and a failed step's whose failure carries counts (``rows_read``, see
    :mod:`line_exports.outcomes`), or an interrupted one's (logged as an observation with
    ``stopped_by``, :mod:`line_exports.interrupts`), marked ``failed``.

    ``instance``: the Dagster instance the run ran on. An observation logged by a step that
    then raised is in its event log, not in ``result.all_events`` (Dagster yields a step's
    logged events once it returns), so an interrupted export's counts are read from there."""
    found: dict[str, ExportOutcome] = {}
    failed_checks: list[Any] = []
    events = list(result.all_events)
    if instance is not None:
        logged = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION)
        events += [r.dagster_event for r in logged if r.dagster_event is not None]
    for event in events:
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.step_materialization_data.materialization
            key = materialization.asset_key.to_user_string()
            found.setdefault(key, ExportOutcome(key)).metadata = _values(materialization.metadata)
        elif event.event_type == dg.DagsterEventType.ASSET_OBSERVATION:
            observation = event.asset_observation_data.asset_observation
            meta = _values(observation.metadata)
            if STOPPED_BY in meta and "rows_read" in meta:  # an interrupted export's counts
                key = observation.asset_key.to_user_string()
                outcome = found.setdefault(key, ExportOutcome(key))
                outcome.metadata, outcome.failed = meta, True
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            failure = event.step_failure_data.user_failure_data
            meta = _values(failure.metadata if failure is not None else None)
            if "rows_read" in meta:
                key = _failed_asset(result, event)
                outcome = found.setdefault(key, ExportOutcome(key))
                outcome.metadata, outcome.failed = meta, True
        elif (
            event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
            and not event.event_specific_data.passed
        ):
            failed_checks.append(event.event_specific_data)
    for evaluation in failed_checks:  # after the loop: a check's text reads the run's counts
        key = evaluation.asset_key.to_user_string()
        outcome = found.setdefault(key, ExportOutcome(key))
        outcome.failed_checks.append(_check_text(evaluation, outcome.metadata))
    return found


def _refused_text(meta: dict[str, Any], run: dict[str, Any]) -> str:
    """``of N rows sent refused by the API``, true also when some were refused by an earlier
    run and held (``sync_mode`` diff / mirror: ``rows_refused_earlier``, not sent again)."""
    earlier = int(run.get("rows_refused_earlier") or 0)
    if not earlier:
        return f"of {meta['rows_sent']:,} rows sent refused by the API"
    now = meta["rows_refused_by_api"] - earlier
    return (
        f"refused by the API ({earlier:,} by an earlier run, not sent again until they change; "
        f"{now:,} of the {meta['rows_sent']:,} rows this run sent)"
    )


def _check_text(evaluation: Any, run: dict[str, Any]) -> str:
    """A failed check in a line; ``run``: the export's run metadata (its counts)."""
    meta = _values(evaluation.metadata)
    if "reject_rate" in meta and "threshold" in meta:
        return (
            f"check {evaluation.check_name} failed: {meta['reject_rate']:.1%} of the rows read "
            f"were rejected (threshold {meta['threshold']:.0%})"
        )
    if "rows_refused_by_api" in meta and "rows_sent" in meta:  # api_refusals
        parts = [
            f"{meta[name]:,} {label}"
            for name, label in (
                ("rows_refused_by_api", _refused_text(meta, run)),
                ("rows_delivery_unknown", "of unknown delivery"),
                ("rows_unaccounted", "unaccounted for by the API's counts"),
            )
            if meta.get(name)
        ]
        return f"check {evaluation.check_name} failed: " + ", ".join(parts)
    reason = meta.get("reason")
    return f"check {evaluation.check_name} failed" + (f": {reason}" if reason else "")


def _top(counts: dict[str, int], top: int, form: str = "{} {:,}") -> str:
    """``reason count, ...`` of the ``top`` most frequent reasons (and how many more)."""
    reasons = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(form.format(reason, count) for reason, count in reasons[:top])
    return shown + (f" and {len(reasons) - top} more" if len(reasons) > top else "")


def shown_path(path: str) -> str:
    """``path`` relative to the working directory when it is under it (shorter to read)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def attention_lines(found: dict[str, ExportOutcome], top: int = 3) -> list[str]:
    """Per export: the rows rejected and refused by the API with their top reasons, the
    rejects file; each failed check a warning."""
    lines: list[str] = []
    for outcome in found.values():
        meta = outcome.metadata
        by_rule = meta.get("rejects_by_rule") or {}
        if by_rule:
            lines.append(
                f"{outcome.key}: {meta.get('rows_rejected', 0):,} rejected: {_top(by_rule, top)}"
            )
        refused = meta.get("rows_refused_by_api") or 0
        if refused:
            answers = meta.get("refusals_by_answer") or {}
            lines.append(
                f"{outcome.key}: {refused:,} refused by the API"
                + (f": {_top(answers, top, '{} ({:,})')}" if answers else "")
            )
        if meta.get("rejects_file") and (by_rule or refused or meta.get("rows_delivery_unknown")):
            lines.append(f"  rejects file: {shown_path(meta['rejects_file'])}")
        if meta.get("rows_delivery_unknown"):
            reasons = meta.get("delivery_unknown_reasons") or {}
            lines.append(
                f"warning: {outcome.key}: {meta['rows_delivery_unknown']:,} rows of unknown "
                "delivery (sent, and whether the API took them nobody can tell; rule "
                "delivery_unknown in the rejects file)"
                + (f": {_top(reasons, top, '{} ({:,})')}" if reasons else "")
                + (
                    f"; {meta['delivery_unknown_advice']}"
                    if meta.get("delivery_unknown_advice")
                    else ""
                )
            )
        for name, hint in (meta.get("unknown_columns") or {}).items():
            lines.append(f"warning: {outcome.key}: {hint}" if hint else f"warning: {name}")
        if meta.get("skipped"):
            lines.append(f"warning: {meta['skipped']}")
        for check in outcome.failed_checks:
            lines.append(f"warning: {outcome.key}: {check}")
    return lines


def report(found: dict[str, ExportOutcome], out: TextIO) -> bool:
    """Print :func:`attention_lines`; True when a check failed (``--strict`` exits 1)."""
    lines = attention_lines(found)
    if lines:
        print("", file=out)
        for line in lines:
            print(line, file=out)
    return any(o.failed_checks for o in found.values())
