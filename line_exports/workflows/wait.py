"""digdag's ``wait>``: wait a duration, then go on to the next task.

Source: digdag-docs ``operators/wait.md`` and ``WaitOperatorFactory`` / ``Durations`` (digdag
0.10): the duration is ``[Nd][Nh][Nm][Ns]`` (case-insensitive, spaces allowed between parts,
at least one part, no sign: ``10s``, ``1h 30m``, ``3D21H13M17S``), and at least 1 s is waited.
``blocking: true`` / ``poll_interval: DURATION`` choose how a digdag agent waits; here the step
always waits in its own process (``time.sleep``), so both are accepted and checked as digdag
checks them (``poll_interval`` with ``blocking: true`` is an error).
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any

from line_exports.workflows.errors import WorkflowError
from line_exports.workflows.opspec import OperatorSpec

DURATION = re.compile(
    r"\s*(?:(?P<days>\d+)\s*d)?\s*(?:(?P<hours>\d+)\s*h)?"
    r"\s*(?:(?P<minutes>\d+)\s*m)?\s*(?:(?P<seconds>\d+)\s*s)?\s*",
    re.IGNORECASE,
)
"""digdag's ``Durations.PATTERN``."""


def parse_duration(text: str) -> timedelta:
    """digdag's ``Durations.parseDuration``: ``"1h 30m"`` -> 5,400 s; ``ValueError`` otherwise."""
    match = DURATION.fullmatch(str(text))
    if not match or not any(match.groupdict().values()):
        raise ValueError(
            f"{text!r} is not a duration (digdag's form: [Nd][Nh][Nm][Ns], e.g. 10s, 1h 30m)"
        )
    parts = {k: int(v) for k, v in match.groupdict().items() if v}
    return timedelta(**parts)


def format_duration(value: timedelta) -> str:
    """digdag's ``Durations.formatDuration``: 3d 21h 13m 17s."""
    total = int(value.total_seconds())
    d, rest = divmod(total, 86_400)
    h, rest = divmod(rest, 3_600)
    m, s = divmod(rest, 60)
    return " ".join(f"{n}{u}" for n, u in ((d, "d"), (h, "h"), (m, "m"), (s, "s")) if n)


def _parse(parser: Any, body: Any, label: str, variables: Any, scope: Any) -> dict[str, Any]:
    def duration(setting: str) -> float:
        raw = body.get(setting)
        try:
            return parse_duration("" if raw is None else str(raw)).total_seconds()
        except ValueError as exc:
            raise WorkflowError(
                parser.file, str(exc), task=label, setting=setting, line=body.line_of(setting)
            ) from None

    seconds = duration("wait>")
    blocking = body.get("blocking", False)
    if blocking not in (True, False):
        raise WorkflowError(
            parser.file,
            f"blocking {blocking!r} must be true or false",
            task=label,
            setting="blocking",
            line=body.line_of("blocking"),
        )
    if "poll_interval" in body:
        duration("poll_interval")
        if blocking:
            raise WorkflowError(
                parser.file,
                "poll_interval can't be specified with blocking:true (digdag's rule)",
                task=label,
                setting="poll_interval",
                line=body.line_of("poll_interval"),
            )
    return {"seconds": seconds}


def _run(step: Any, context: Any, fill: Any, source: Any) -> dict[str, Any]:
    seconds = max(float(step.params["seconds"]), 1.0)  # digdag waits at least 1 second
    shown = format_duration(timedelta(seconds=step.params["seconds"])) or "0s"
    context.log.info(f"{step.scope.task_name}: wait>: {shown}")
    started = time.monotonic()
    time.sleep(seconds)
    return {"waited_seconds": round(time.monotonic() - started, 3), "duration": shown}


SPEC = OperatorSpec(
    name="wait>",
    kind="wait",
    keys=("blocking", "poll_interval"),
    parse=_parse,
    run=_run,
    what="wait>",
)
