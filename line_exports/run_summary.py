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

FAILURE_PREFIX = "dagster._core.definitions.events.Failure: "


@dataclass
class ExportOutcome:
    """One materialized export of a run, from its metadata and check evaluations."""

    key: str
    metadata: dict[str, Any] = field(default_factory=dict)
    failed_checks: list[str] = field(default_factory=list)


class _BriefFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL step: message``; an unexpected error with its stack, a ``dg.Failure``
    without (the command's summary prints its message once)."""

    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None) or {}
        step = meta.get("step_key") or meta.get("job_name") or "run"
        message = str(meta.get("orig_message") or record.getMessage())
        event = meta.get("dagster_event")
        error = getattr(getattr(event, "event_specific_data", None), "error", None)
        if error is not None and error.cls_name != "Failure" and meta.get("step_key"):
            # An unexpected error keeps its stack; a Failure's message is in the summary.
            message = f"{message}\n{error.message.strip()}\n" + "".join(error.stack).rstrip()
        stamp = self.formatTime(record, "%H:%M:%S")
        return f"{stamp} {record.levelname:<7} {step}: {message}"


@dg.logger(
    config_schema={"log_level": dg.Field(str, default_value="INFO")},
    description="Dagster's events as short lines on stderr (a failure's message without its stack)",
)
def brief_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.getLogger("line_exports.cli.run")
    logger.setLevel(init_context.logger_config["log_level"].upper())
    logger.propagate = False
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_BriefFormatter())
        logger.addHandler(handler)
    return logger


def quiet_job(job: dg.JobDefinition) -> dg.JobDefinition:
    """``job`` logging through :func:`brief_console_logger`."""
    return job.with_logger_defs({"console": brief_console_logger})


def log_config(level: str) -> dict[str, Any]:
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def outcomes(result: Any) -> dict[str, ExportOutcome]:
    """Each materialized asset's metadata and failed checks, by asset key (``a/b``)."""
    found: dict[str, ExportOutcome] = {}
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.step_materialization_data.materialization
            key = materialization.asset_key.to_user_string()
            found.setdefault(key, ExportOutcome(key)).metadata = {
                k: getattr(v, "value", v) for k, v in materialization.metadata.items()
            }
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if not evaluation.passed:
                key = evaluation.asset_key.to_user_string()
                outcome = found.setdefault(key, ExportOutcome(key))
                outcome.failed_checks.append(_check_text(evaluation))
    return found


def _check_text(evaluation: Any) -> str:
    meta = {k: getattr(v, "value", v) for k, v in (evaluation.metadata or {}).items()}
    if "reject_rate" in meta and "threshold" in meta:
        return (
            f"check {evaluation.check_name} failed: {meta['reject_rate']:.1%} of the rows read "
            f"were rejected (threshold {meta['threshold']:.0%})"
        )
    reason = meta.get("reason")
    return f"check {evaluation.check_name} failed" + (f": {reason}" if reason else "")


def shown_path(path: str) -> str:
    """``path`` relative to the working directory when it is under it (shorter to read)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def attention_lines(found: dict[str, ExportOutcome], top: int = 3) -> list[str]:
    """Per export: the top reject reasons and the rejects file; each failed check a warning."""
    lines: list[str] = []
    for outcome in found.values():
        meta = outcome.metadata
        by_rule = meta.get("rejects_by_rule") or {}
        if by_rule:
            reasons = sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0]))
            shown = ", ".join(f"{rule} {count:,}" for rule, count in reasons[:top])
            more = f" and {len(reasons) - top} more" if len(reasons) > top else ""
            lines.append(f"{outcome.key}: {meta.get('rows_rejected', 0):,} rejected: {shown}{more}")
            if meta.get("rejects_file"):
                lines.append(f"  rejects file: {shown_path(meta['rejects_file'])}")
        if meta.get("rows_delivery_unknown"):
            lines.append(
                f"warning: {outcome.key}: {meta['rows_delivery_unknown']:,} rows of unknown "
                "delivery (sent, the answer lost and too late to ask again; rule "
                "delivery_unknown in the rejects file): check the recipients before resending"
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
