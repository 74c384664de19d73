"""digdag's built-in variables, and ``${...}`` in workflow values: checked at load, filled per run.

The built-ins and their formats are digdag's (``workflow_definition.rst``, and
``RuntimeParams``/``AttemptBuilder`` in treasure-data/digdag):

=================================  ==================================================
``timezone``                       the workflow's timezone (``Asia/Tokyo``)
``session_time``                   ``2016-01-30T00:00:00-08:00`` (``yyyy-MM-dd'T'HH:mm:ssxxx``)
``session_date`` / ``_compact``    ``2016-01-30`` / ``20160130``
``session_local_time``             ``2016-01-30 00:00:00``
``session_tz_offset``              ``-0800``
``session_unixtime``               ``1454140800`` (a number)
``last_session_*``/``next_session_*``  the same six from the schedule (only a scheduled workflow
                                   has them, as in digdag: elsewhere they are not defined)
``last_executed_session_time``     the session of the schedule's previous run (and ``_date``,
                                   ``_unixtime``, ...); empty strings when there is none
``session_uuid`` / ``session_id``  the Dagster run id of the session's first run / its number
``attempt_id``                     this run's number in the Dagster instance
``task_name``                      ``+workflow+parent+child``
=================================  ==================================================

``project_id`` (a digdag server's number for an uploaded project) has no meaning here and is
not defined: a workflow using it fails ``validate`` naming it.

A value whose ``${...}`` reads a run variable (or calls ``moment``) is kept as written and
filled when the run starts; any other is filled at load. Either way it is evaluated at load
against a sample session, so a mistake fails ``validate`` with file:line, task and expression.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from line_exports.workflows.errors import WorkflowError, closest
from line_exports.workflows.expressions import ExpressionError, Template, parse_template
from line_exports.workflows.schedules import WorkflowSchedule

TIME_SUFFIXES = ("time", "date", "date_compact", "local_time", "tz_offset", "unixtime")
RUN_NAMES = frozenset(
    {
        *(f"session_{s}" for s in TIME_SUFFIXES),
        *(f"last_session_{s}" for s in TIME_SUFFIXES),
        *(f"next_session_{s}" for s in TIME_SUFFIXES),
        *(f"last_executed_session_{s}" for s in TIME_SUFFIXES),
        "session_uuid",
        "session_id",
        "attempt_id",
        "retry_attempt_name",
        "task_name",
        "moment",
        "error",
    }
)
"""Names whose value depends on the run: a value reading one is filled at run time
(``error``: only defined in ``_error:`` tasks, :mod:`.on_error`)."""
UNDEFINED_HERE = {
    "project_id": "project_id is a digdag server's number for an uploaded project; "
    "a workflow folder has none here",
}
SCHEDULE_ONLY = ("last_session_", "next_session_")
GLOBALS = frozenset(
    {"moment", "Math", "JSON", "parseInt", "parseFloat", "String", "Number", "Boolean", "isNaN"}
    | {"undefined", "NaN", "Infinity"}
)
UTC = timezone.utc
LAST_RESULTS_KEY = "\0td.last_results"
"""Where :func:`run_variables` puts the run's ``td.last_results`` (never a variable name)."""


def session_text(moment: datetime) -> str:
    """``session_time``'s format: seconds and a ``+09:00`` offset (``+00:00`` for UTC)."""
    return moment.replace(microsecond=0).isoformat()


def time_variables(prefix: str, moment: datetime) -> dict[str, Any]:
    """``<prefix>time``, ``_date``, ``_date_compact``, ``_local_time``, ``_tz_offset``,
    ``_unixtime`` of ``moment`` (already in the workflow's timezone)."""
    return {
        f"{prefix}time": session_text(moment),
        f"{prefix}date": moment.strftime("%Y-%m-%d"),
        f"{prefix}date_compact": moment.strftime("%Y%m%d"),
        f"{prefix}local_time": moment.strftime("%Y-%m-%d %H:%M:%S"),
        f"{prefix}tz_offset": moment.strftime("%z"),
        f"{prefix}unixtime": int(moment.timestamp()),
    }


def empty_time_variables(prefix: str, zone: ZoneInfo) -> dict[str, Any]:
    """digdag's ``setEmptyTimeParameters``: empty strings, the zone's offset at the epoch."""
    values: dict[str, Any] = {f"{prefix}{s}": "" for s in TIME_SUFFIXES}
    values[f"{prefix}tz_offset"] = datetime(1970, 1, 1, tzinfo=UTC).astimezone(zone).strftime("%z")
    return values


@dataclass(frozen=True)
class RunScope:
    """What a task's run variables are made of, known at load."""

    timezone: str
    schedule: WorkflowSchedule | None
    task_name: str
    """digdag's form: ``+workflow+group+task``."""

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def variables(
        self,
        session: datetime,
        *,
        last_executed: datetime | None = None,
        session_uuid: str = "",
        session_id: int = 0,
        attempt_id: int = 0,
        retry_attempt_name: str | None = None,
    ) -> dict[str, Any]:
        """Every built-in of one run, as digdag's ``RuntimeParams`` builds them."""
        session = session.astimezone(self.zone)
        values: dict[str, Any] = {
            "timezone": self.timezone,
            "session_uuid": session_uuid,
            "session_id": session_id,
            **time_variables("session_", session),
            "attempt_id": attempt_id,
            "retry_attempt_name": retry_attempt_name,
            "task_name": self.task_name,
        }
        if self.schedule is not None:
            values.update(time_variables("last_session_", self.schedule.last_session(session)))
            values.update(time_variables("next_session_", self.schedule.next_session(session)))
        if last_executed is not None and self.schedule is not None:
            values.update(
                time_variables("last_executed_session_", last_executed.astimezone(self.zone))
            )
        else:
            values.update(empty_time_variables("last_executed_session_", self.zone))
        return values

    def sample(self) -> dict[str, Any]:
        """Run variables of a plausible run (the schedule's next session, else now)."""
        now = datetime.now(UTC)
        session = self.schedule.first_session(now) if self.schedule else now
        return self.variables(session, session_uuid=str(uuid.uuid4()), session_id=1, attempt_id=1)


def check(text: str, static: Mapping[str, Any], scope: RunScope) -> tuple[Template, bool, str]:
    """Parse and try ``text``: (template, whether it waits for the run, sample rendering).

    Raises :class:`ExpressionError` naming the expression: a syntax error, an unknown name,
    a run variable digdag would not define for this workflow, an unsupported call.
    """
    template = parse_template(text)
    names = template.names()
    for name in sorted(names):
        if name in UNDEFINED_HERE:
            raise ExpressionError(f"${{...{name}...}}: {UNDEFINED_HERE[name]}")
        if name.startswith(SCHEDULE_ONLY) and scope.schedule is None and name not in static:
            raise ExpressionError(
                f"{name} is only defined for a workflow with a schedule: (digdag computes it "
                "from the schedule); add schedule: or use moment(session_time).add(...)"
            )
    run = scope.sample()
    sample = {**resolve_exports(static, run, scope.zone), **run}
    later = RUN_NAMES | dependent_exports(static)
    for script in template.scripts:
        for name in sorted(script.names() - set(sample) - GLOBALS):
            known = sorted(set(sample) | set(_flat(static)))
            where = "" if script.source.strip() == name else f" in ${{{script.source}}}"
            raise ExpressionError(
                f"unresolved variable ${{{name}}}{where}{closest(name, known)}; define it under _export"
            )
    rendered = template.render(sample, scope.zone)
    after_step = any("last_results" in script.source for script in template.scripts)
    return template, bool(names & later) or after_step, rendered


def _templated(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if "${" in value else []
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _templated(v)]
    if isinstance(value, list):
        return [t for v in value for t in _templated(v)]
    return []


def dependent_exports(static: Mapping[str, Any]) -> set[str]:
    """``_export`` names whose value reads the run (``yesterday: ${moment(session_time)...}``),
    directly or through another such name."""
    found: set[str] = set()
    while True:
        more = set()
        for name, value in static.items():
            if name in found:
                continue
            for text in _templated(value):
                try:
                    names = parse_template(text).names()
                except ExpressionError:
                    continue
                if names & (RUN_NAMES | found) or "last_results" in text:
                    more.add(name)
        if not more:
            return found
        found |= more


def resolve_exports(
    static: Mapping[str, Any], run: Mapping[str, Any], zone: ZoneInfo, depth: int = 3
) -> dict[str, Any]:
    """``_export`` values with their own ``${...}`` filled (digdag evaluates ``_export`` too);
    a value that cannot be filled stays as written (its use then names the problem)."""
    resolved = dict(static)
    for _ in range(depth):
        scope = {**resolved, **run}
        changed = False

        def fill(value: Any, scope: dict[str, Any] = scope) -> Any:
            nonlocal changed
            if isinstance(value, str) and "${" in value:
                try:
                    out = parse_template(value).render(scope, zone)
                except ExpressionError:
                    return value
                changed = changed or out != value
                return out
            if isinstance(value, Mapping) and not getattr(value, "opaque", False):
                return {k: fill(v, scope) for k, v in value.items()}
            if isinstance(value, list):
                return [fill(v, scope) for v in value]
            return value

        resolved = {k: fill(v) for k, v in resolved.items()}
        if not changed:
            break
    return resolved


def _flat(variables: Mapping[str, Any], prefix: str = "") -> list[str]:
    names: list[str] = []
    for key, value in variables.items():
        names.append(f"{prefix}{key}")
        if isinstance(value, Mapping):
            names.extend(_flat(value, f"{prefix}{key}."))
    return names


def expand(
    text: str,
    static: Mapping[str, Any],
    scope: RunScope,
    *,
    file: Path,
    task: str | None,
    setting: str,
    line: int | None,
    defer: bool,
) -> str:
    """``text`` filled now, or kept as written when it reads the run and ``defer`` allows it;
    every problem as a :class:`WorkflowError` (file:line, task, setting, expression)."""
    try:
        template, deferred, rendered = check(text, static, scope)
    except ExpressionError as exc:
        message = str(exc)
        spots = (text.find("${" + m.group(1)) for m in re.finditer(r"\$\{(.*?)\}", message))
        at = next((a for a in spots if a >= 0), -1)
        if "\n" in text.strip() and at >= 0:  # a query file: say which of its lines
            message += f" (line {text.count(chr(10), 0, at) + 1} of {setting.removeprefix('td> ')})"
        raise WorkflowError(file, message, task=task, setting=setting, line=line) from None
    if not deferred:
        return rendered
    if not defer:
        raise WorkflowError(
            file,
            f"{text!r} depends on the run (session time, ids, moment) but {setting} must be "
            "known when the workflow loads",
            task=task,
            setting=setting,
            line=line,
        )
    # Static parts filled now (the UI shows them), run parts kept for the run.
    run = scope.sample()
    return template.partial(
        {**resolve_exports(static, run, scope.zone), **run},
        scope.zone,
        set(RUN_NAMES | dependent_exports(static)),
    )


def render_for_run(
    text: str, static: Mapping[str, Any], run: Mapping[str, Any], zone: ZoneInfo
) -> str:
    """Fill a value kept for run time with the run's variables (built-ins win, as in digdag);
    ``td.last_results`` is the row the run's latest store_last_results step kept."""
    builtins = {k: v for k, v in run.items() if k != LAST_RESULTS_KEY}
    merged = {**resolve_exports(static, builtins, zone), **builtins}
    td = static.get("td")
    if isinstance(td, Mapping) and "last_results" in td:
        merged["td"] = {**td, "last_results": run.get(LAST_RESULTS_KEY) or {}}
    return parse_template(text).render(merged, zone)


def run_variables(context: Any, scope: RunScope) -> dict[str, Any]:
    """The built-ins of a Dagster run: its session time (tick), the schedule's previous
    session, the run ids (Dagster's run id as ``session_uuid``; run storage numbers as
    ``session_id``/``attempt_id``; a re-execution shares its root run's session)."""
    from line_exports.session import LAST_EXECUTED_TAG, session_time

    run = context.run
    root = run.root_run_id or run.run_id

    def number(run_id: str) -> int:
        record = context.instance.get_run_record_by_id(run_id)
        return int(record.storage_id) if record is not None else 0

    from line_exports.workflows.operators import last_results

    last = run.tags.get(LAST_EXECUTED_TAG)
    values = scope.variables(
        session_time(context, scope.timezone),
        last_executed=datetime.fromisoformat(last) if last else None,
        session_uuid=root,
        session_id=number(root),
        attempt_id=number(run.run_id),
        retry_attempt_name=run.run_id if run.root_run_id else None,
    )
    values[LAST_RESULTS_KEY] = last_results(context)
    return values
