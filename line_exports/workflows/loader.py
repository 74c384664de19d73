"""``.dig`` workflows -> Dagster definitions: one job per workflow, one asset per task.

Tasks run in order as digdag runs them (each asset depends on the previous one, unless a group
says ``_parallel: true``); the asset key is ``[workflow, task]``; each workflow's schedule keeps
its timezone and a sensor pauses it after repeated failures. A broken workflow is reported
(file, line, task, setting) and left out; the others still load.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import ValidationError

from line_exports.destination import Destination
from line_exports.export import build_export
from line_exports.export_guards import setting_name_problem
from line_exports.results_back import ResultsBackSettings
from line_exports.sources import SqlSource
from line_exports.sql.dialect import Translation
from line_exports.sql.workflow import OPTIONS as SQL_OPTIONS
from line_exports.sql.workflow import translate_task
from line_exports.values import check_timezone
from line_exports.workflows import control as control_ops
from line_exports.workflows import results_back as back
from line_exports.workflows.broken import broken_definitions
from line_exports.workflows.connections import (
    CONNECTIONS_FILE,
    Connection,
    ConnectionsFile,
    known_type,
    load_connections,
    parse_td_result,
    resource_fields,
    resource_settings,
    secret_checker,
    secret_fields,
)
from line_exports.workflows.digfile import (
    LineDict,
    SecretRef,
    interpolate,
    load_yaml,
    merge_exports,
)
from line_exports.workflows.errors import TaskPlace, WorkflowError, WorkflowErrors, closest
from line_exports.workflows.on_error import Handler, build_hook, parse_handler
from line_exports.workflows.operators import (
    TD_QUERY_OPTIONS,
    Step,
    build_step,
    is_step,
    not_supported,
    parse_step,
    supported,
    with_last_results,
)
from line_exports.workflows.retry import retry_policy
from line_exports.workflows.schedules import (
    WORKFLOW_TAG,
    ScheduleError,
    WorkflowSchedule,
    build_pause_sensor,
    build_schedule,
    parse_schedule,
)
from line_exports.workflows.trust import TrustPolicy, inside, looks_like_sql_file
from line_exports.workflows.variables import RunScope, render_for_run, run_variables

log = logging.getLogger("line_exports.workflows")

SOURCE_KEY = "sql_source"
TOP_LEVEL = ("timezone", "schedule", "_export", "_retry", "_parallel", "_error", "_check", "sla")
TASK_KEYS = (
    "td>",
    "query",
    "database",
    "result_connection",
    "result_settings",
    "result",
    *TD_QUERY_OPTIONS,
    "_export",
    "_retry",
    "_error",
    "_check",
)


def identifier(text: str) -> str:
    """A Dagster-safe name: letters, digits and ``_``."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", text).strip("_") or "workflow"
    return f"w_{name}" if name[0].isdigit() else name


@dataclass
class Task:
    """One ``+task`` with ``td>``: its query, destination, settings and resource."""

    name: str
    key: dg.AssetKey
    line: int | None
    sql: str
    query_file: Path | None
    database: str | None
    destination: Destination
    settings: dict[str, Any]
    resource_key: str
    resource: dg.ConfigurableResource
    connection: str
    deps: list[dg.AssetKey] = field(default_factory=list)
    retry: dg.RetryPolicy | None = None
    translation: Translation | None = None
    """The query as written and as translated for the source (None: translate_sql false)."""
    variables: dict[str, Any] = field(default_factory=dict)
    """The task's ``_export`` scope: what its run-time ``${...}`` see besides the built-ins."""
    scope: RunScope | None = None
    """Timezone, schedule and task name: what its run variables are made of."""
    file: Path | None = None
    """The ``.dig`` file it is written in (a call>ed file's, for its tasks)."""
    results_back: ResultsBackSettings | None = None
    """Its results back (:mod:`.results_back`; None: ``results_back: false``)."""

    def for_session(self, session: Any) -> tuple[str, dict[str, Any]]:
        """The query and settings as a run of ``session`` (a datetime) fills them."""
        if self.scope is None or not self.templated:
            return self.sql, dict(self.settings)
        run = self.scope.variables(session)
        fill = lambda t: render_for_run(t, self.variables, run, self.scope.zone) if "${" in t else t  # noqa: E731
        return fill(self.sql), {k: _deep_text(v, fill) for k, v in self.settings.items()}

    @property
    def templated(self) -> bool:
        """Does its query or a setting wait for the run's variables?"""
        return "${" in self.sql or any(
            isinstance(v, str) and "${" in v for v in self.settings.values()
        )


@dataclass
class Workflow:
    """A loaded ``.dig`` file."""

    name: str
    file: Path
    timezone: str
    schedule: WorkflowSchedule | None
    tasks: list[Task]
    steps: list[Step] = field(default_factory=list)
    """Tasks that are not exports: SQL steps, echo>, fail> (:mod:`.operators`)."""
    controls: list[control_ops.Control] = field(default_factory=list)
    """Control tasks whose value reads the run (:mod:`.control`): expanded when they run."""
    handlers: list[Handler] = field(default_factory=list)
    """``_error:`` blocks and the assets each watches (:mod:`.on_error`)."""
    order: list[Any] = field(default_factory=list)
    """Its tasks, steps and controls in digdag's order, control operators expanded."""

    def tree(self) -> list[tuple[str, str]]:
        """(digdag task name, what it runs) of each task in order: the expanded task tree."""
        rows = []
        for item in self.order:
            if isinstance(item, Task):
                query = item.query_file.name if item.query_file else "query"
                target = item.destination.target_label(
                    item.destination.settings_class(**item.settings)
                )
                rows.append(
                    (item.scope.task_name if item.scope else item.name, f"td> {query} -> {target}")
                )
            elif isinstance(item, Step):
                what = {"sql": "td> (SQL step)", "echo": "echo>", "fail": "fail>"}.get(
                    item.kind, f"{item.kind}>"
                )
                rows.append((item.scope.task_name, what))
            else:
                rows.append((item.scope.task_name, item.describe()))
        return rows

    @property
    def job_name(self) -> str:
        return self.name

    @property
    def schedule_name(self) -> str:
        return f"{self.name}_schedule"


def _settings_errors(
    exc: ValidationError,
    dest: Destination,
    given: Mapping[str, Any],
    file: Path,
    task: str,
    lines: Mapping[str, int | None],
    line: int | None,
) -> list[WorkflowError]:
    """pydantic's errors as workflow errors: the setting, its line, and the allowed range."""
    errors = []
    fields = dest.settings_class.model_fields
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else None
        message = str(err["msg"]).removeprefix("Value error, ")
        if name is None:  # a rule across settings: name the one the message speaks of first
            spots = [
                (m.start(), f)
                for f in fields
                for m in [re.search(rf"\b{re.escape(f)}\b", message)]
                if m
            ]
            name = min(spots)[1] if spots else None
        elif name not in given:
            message = f"missing required setting {name}" + (
                "" if err["type"] == "missing" else f" ({message})"
            )
        elif name not in message:
            message = f"{err.get('input')!r}: {message}"
        setting = f"result_settings.{name}" if name else "result_settings"
        errors.append(
            WorkflowError(
                file, message, task=task, setting=setting, line=lines.get(name or "") or line
            )
        )
    return errors


class _Parser:
    """Reads one ``.dig`` file into a :class:`Workflow`, collecting every error it finds."""

    def __init__(
        self,
        file: Path,
        connections: ConnectionsFile,
        root: Path | None = None,
        policy: TrustPolicy | None = None,
    ) -> None:
        self.file = file
        self.connections = connections
        self.root = root or file.parent
        self.policy = policy or TrustPolicy()
        self.errors: list[WorkflowError] = []
        self.name = identifier(file.stem)
        self.timezone = "UTC"
        self.schedule: WorkflowSchedule | None = None
        self.steps: list[Step] = []
        self.last_results = False
        self.scope: RunScope | None = None
        self.tasks: list[Task] = []
        self.handlers: list[Handler] = []
        self.resources: dict[str, Any] = {}
        self.controls: list[control_ops.Control] = []
        self.order: list[Any] = []
        """Exports, steps and run-time controls in digdag's order (what a run-time control
        runs; what validate and plan list)."""
        self.top_file = file
        self.stem = file.stem
        """The workflow's name in ``task_name`` (a call>ed file's tasks keep the caller's)."""
        self.calling: list[control_ops.CallFrame] = []
        """The ``call>`` tasks being expanded, outermost first."""

    def state(self) -> dict[str, Any]:
        """What a parser of the same workflow needs at run time (:func:`.control.run_control`)."""
        return {
            "file": self.file,
            "connections": self.connections,
            "root": self.root,
            "policy": self.policy,
            "timezone": self.timezone,
            "schedule": self.schedule,
            "name": self.name,
            "stem": self.stem,
            "top_file": self.top_file,
            "calling": list(self.calling),
            "last_results": self.last_results,
        }

    @classmethod
    def restore(cls, state: Mapping[str, Any]) -> _Parser:
        parser = cls(state["file"], state["connections"], state["root"], state["policy"])
        for key in ("timezone", "schedule", "name", "stem", "top_file", "last_results"):
            setattr(parser, key, state[key])
        parser.calling = list(state["calling"])
        return parser

    def spawn(self) -> _Parser:
        """A parser of the same workflow with no tasks yet (to check subtasks alone)."""
        return _Parser.restore(self.state())

    def taken(self, key: dg.AssetKey) -> bool:
        return any(t.key == key for t in [*self.tasks, *self.steps, *self.controls])

    def parse(self) -> Workflow | None:
        try:
            data = load_yaml(self.file, self.root)
        except WorkflowError as exc:
            self.errors.append(exc)
            return None
        if not isinstance(data, LineDict):
            self.errors.append(
                WorkflowError(self.file, "a workflow must be a YAML mapping of options and +tasks")
            )
            return None
        for key in data:
            if not str(key).startswith("+") and key not in TOP_LEVEL:
                self.errors.append(
                    WorkflowError(
                        self.file,
                        f"unknown top-level option {key!r}{closest(str(key), TOP_LEVEL)}",
                        setting=str(key),
                        line=data.line_of(key),
                    )
                )
        self.errors.extend(not_supported(data, self.file, None))
        tz = str(data.get("timezone") or "UTC")
        try:
            self.timezone = check_timezone(tz)
        except ValueError as exc:
            self.errors.append(
                WorkflowError(
                    self.file,
                    str(exc),
                    setting="timezone",
                    line=data.line_of("timezone"),
                )
            )
        schedule = None
        # TD: schedule "" is "a job that has no scheduled run time"
        if data.get("schedule") not in (None, ""):
            try:
                schedule = parse_schedule(data["schedule"], self.timezone)
            except ScheduleError as exc:
                self.errors.append(
                    WorkflowError(
                        self.file, str(exc), setting="schedule", line=data.line_of("schedule")
                    )
                )
        try:
            variables = merge_exports(
                {"timezone": self.timezone},
                data.get("_export"),
                self.file,
                None,
                data.line_of("_export"),
            )
            retry = retry_policy(data.get("_retry"), self.file, None, data.line_of("_retry"))
        except WorkflowError as exc:
            self.errors.append(exc)
            return None
        self.schedule = schedule
        self._group(data, [], variables, [], retry)
        if "_error" in data:
            self._on_error(data, [], None, variables, (0, 0, 0))
        if not self.tasks and not self.steps and not self.errors:
            self.errors.append(WorkflowError(self.file, "no +task with td> found"))
        if self.errors:
            return None
        return Workflow(
            self.name,
            self.file,
            self.timezone,
            schedule,
            self.tasks,
            self.steps,
            self.controls,
            self.handlers,
            self.order,
        )

    def _on_error(
        self,
        body: LineDict,
        path: list[str],
        label: str | None,
        variables: dict[str, Any],
        since: tuple[int, int, int],
    ) -> None:
        """The ``_error:`` of ``body``, watching the tasks and steps made since ``since``."""
        handler = parse_handler(self, body["_error"], path, label, variables)
        if handler is not None:
            made = [
                *self.tasks[since[0] :],
                *self.steps[since[1] :],
                *self.controls[since[2] :],
            ]
            handler.watched = {t.key for t in made}
            self.handlers.append(handler)

    def _group(
        self,
        group: LineDict,
        path: list[str],
        variables: dict[str, Any],
        deps: list[dg.AssetKey],
        retry: dg.RetryPolicy | None,
    ) -> list[dg.AssetKey]:
        """Tasks of a group in order; returns the keys the next sibling waits for."""
        label = "+" + ".".join(path) if path else None
        try:
            parallel = control_ops.parallel_control(group.get("_parallel"))
        except control_ops.ControlError as exc:
            self.errors.append(
                WorkflowError(
                    self.file,
                    str(exc),
                    task=label,
                    setting="_parallel",
                    line=group.line_of("_parallel"),
                )
            )
            parallel = (False, 0)
        last = list(deps)
        ends: list[dg.AssetKey] = []
        chunks: list[list[dg.AssetKey]] = []
        index = 0
        for key, body in group.items():
            if not str(key).startswith("+"):
                continue
            name = str(key)[1:]
            label = "+" + ".".join([*path, name])
            line = group.line_of(key)
            if not isinstance(body, LineDict):
                self.errors.append(
                    WorkflowError(
                        self.file,
                        "a task must be a mapping (td>: query.sql, result_connection: ...)",
                        task=label,
                        line=line,
                    )
                )
                continue
            try:
                scope = merge_exports(
                    variables, body.get("_export"), self.file, label, body.line_of("_export")
                )
                task_retry = (
                    retry_policy(body.get("_retry"), self.file, label, body.line_of("_retry"))
                    or retry
                )
            except WorkflowError as exc:
                self.errors.append(exc)
                continue
            wait = (
                control_ops.parallel_waits(parallel, index, deps, chunks) if parallel[0] else last
            )
            refused = not_supported(body, self.file, label)
            if refused:
                self.errors.extend(refused)
                continue
            made = (len(self.tasks), len(self.steps), len(self.controls))
            at = TaskPlace(self.file, line, label, (*path, name))
            produced = self._node(body, at, scope, wait, task_retry)
            if "_error" in body:
                self._on_error(body, [*path, name], label, scope, made)
            if parallel[0]:
                ends.extend(produced)
                if parallel[1]:
                    if index % parallel[1] == 0:
                        chunks.append([])
                    chunks[-1].extend(produced or wait)
                index += 1
            elif produced:
                last = produced
        return ends if parallel[0] else last

    def _node(
        self,
        body: LineDict,
        at: TaskPlace,
        scope: dict[str, Any],
        wait: list[dg.AssetKey],
        retry: dg.RetryPolicy | None,
    ) -> list[dg.AssetKey]:
        """One task (a group, a control operator, a step or an export) placed after ``wait``;
        returns the keys the next task waits for."""
        if self.last_results:
            scope = with_last_results(scope)
        if control_ops.is_control(body):
            return control_ops.expand(self, body, at, scope, wait, retry)
        if any(str(k).startswith("+") for k in body):
            return self._group(body, list(at.path), scope, wait, retry)
        if is_step(body):
            step = parse_step(self, body, list(at.path), at.task, at.line, scope, wait, retry)
            if step is not None:
                self.order.append(step)
            self.last_results = self.last_results or bool(step and step.store_last_results)
            return [step.key] if step else []
        task = self._task(body, at, scope, wait, retry)
        if task is not None:
            self.order.append(task)
        return [task.key] if task else []

    def _task(
        self,
        body: LineDict,
        at: TaskPlace,
        variables: dict[str, Any],
        deps: list[dg.AssetKey],
        retry: dg.RetryPolicy | None,
    ) -> Task | None:
        path, label, line = list(at.path), at.task, at.line
        count = len(self.errors)
        for key in body:
            if key not in TASK_KEYS:
                operator = str(key).endswith(">")
                hint = (
                    f"the {key} operator is not supported (supported: {supported()})"
                    if operator
                    else f"unknown task option{closest(str(key), TASK_KEYS)}"
                )
                self.errors.append(
                    WorkflowError(
                        self.file,
                        f"{key!r}: {hint}",
                        task=label,
                        setting=str(key),
                        line=body.line_of(key),
                    )
                )
        if "td>" not in body and "query" not in body:
            if len(self.errors) == count:
                self.errors.append(
                    WorkflowError(self.file, "no td> query in this task", task=label, line=line)
                )
            return None

        block = body.get("result_settings")
        self.scope = RunScope(self.timezone, self.schedule, "+" + "+".join([self.stem, *path]))

        def text(setting: str, value: Any, **kw: Any) -> Any:
            if not isinstance(value, str):
                return value
            top, _, inner = setting.partition(".")
            line = (
                block.line_of(inner) if inner and isinstance(block, LineDict) else body.line_of(top)
            )
            return interpolate(
                value,
                variables,
                file=self.file,
                task=label,
                setting=setting,
                line=line,
                scope=self.scope,
                **kw,
            )

        try:
            database = text("database", body.get("database")) or _dotted(variables, "td.database")
            if database is not None:
                variables = merge_exports(
                    variables, {"td": {"database": database}}, self.file, label, line
                )
            sql, query_file = self._query(body, label, variables)
            translation = translate_task(
                sql,
                options=_sql_options(body, variables),
                source_url=self.connections.source.get("url"),
                file=self.file,
                task=label,
                query_file=query_file,
                line=body.line_of("td>") or body.line_of("query"),
            )
            sql = translation.sql if translation is not None else sql
            dest, raw, connection = self._destination(body, label, text)
            results_back, raw = back.take_settings(
                raw, text, self.file, label, lambda name: _setting_line(body, name)
            )
            settings, overrides, lines = self._split(dest, raw, body, label, text)
        except WorkflowError as exc:
            self.errors.append(exc)
            return None
        if len(self.errors) != count:
            return None
        try:
            dest.settings_class(**_sample(settings, variables, self.scope))
        except ValidationError as exc:
            self.errors.extend(
                _settings_errors(
                    exc, dest, settings, self.file, label, lines, body.line_of("result_settings")
                )
            )
            return None
        try:
            dest.settings_class(**settings)
        except ValidationError as exc:
            name = str(exc.errors()[0]["loc"][0]) if exc.errors()[0]["loc"] else "result_settings"
            self.errors.append(
                WorkflowError(
                    self.file,
                    f"{settings.get(name)!r} is filled per run, but this setting's rule checks "
                    "it when the workflow loads; give a value without run variables",
                    task=label,
                    setting=f"result_settings.{name}",
                    line=lines.get(name) or line,
                )
            )
            return None
        resource_key = identifier(connection.name)
        if overrides:
            resource_key = identifier(f"{connection.name}__{self.name}__{'_'.join(path)}")
        if resource_key == SOURCE_KEY:
            self.errors.append(
                WorkflowError(
                    self.file,
                    f"connection name {connection.name!r} is reserved",
                    task=label,
                    setting="result_connection",
                    line=line,
                )
            )
            return None
        try:
            resource = connection.resource(overrides, file=self.file, task=label, lines=lines)
        except WorkflowError as exc:
            self.errors.append(exc)
            return None
        except ValidationError as exc:
            err = exc.errors()[0]
            setting = ".".join(str(p) for p in err["loc"])
            self.errors.append(
                WorkflowError(
                    self.file,
                    str(err["msg"]),
                    task=label,
                    setting=f"result_settings.{setting}",
                    line=lines.get(setting, line),
                )
            )
            return None
        key = dg.AssetKey([self.name, *(identifier(p) for p in path)])
        return self._add(
            Task(
                name=".".join(path),
                key=key,
                line=line,
                sql=sql,
                query_file=query_file,
                database=database,
                destination=dest,
                settings=settings,
                resource_key=resource_key,
                resource=resource,
                connection=connection.name,
                deps=list(deps),
                retry=retry,
                translation=translation,
                variables=dict(variables),
                scope=self.scope,
                file=self.file,
                results_back=results_back,
            ),
            label,
        )

    def _add(self, task: Task, label: str) -> Task | None:
        if self.taken(task.key):
            self.errors.append(
                WorkflowError(
                    self.file,
                    f"two tasks map to the asset {task.key.to_user_string()}; rename one",
                    task=label,
                    line=task.line,
                )
            )
            return None
        self.tasks.append(task)
        return task

    def _query(
        self, body: LineDict, label: str, variables: dict[str, Any]
    ) -> tuple[str, Path | None]:
        if body.get("td>"):
            target = interpolate(
                str(body["td>"]),
                variables,
                file=self.file,
                task=label,
                setting="td>",
                line=body.line_of("td>"),
            )
            path = inside(
                self.root,
                target,
                base=self.file.parent,
                file=self.file,
                what="query file",
                task=label,
                setting="td>",
                line=body.line_of("td>"),
                exists=True,
            )
            raw, setting = path.read_text(encoding="utf-8"), f"td> {target}"
        elif body.get("query"):
            # digdag's query: is SQL text, never a file name (that is what td>: is for).
            raw, path, setting = str(body["query"]), None, "query"
            if looks_like_sql_file(raw):
                raise WorkflowError(
                    self.file,
                    f"query: holds SQL text, and {raw.strip()!r} looks like a file name; "
                    f"write td>: {raw.strip()} for a query file in the workflow folder",
                    task=label,
                    setting="query",
                    line=body.line_of("query"),
                )
        else:
            raise WorkflowError(
                self.file,
                "td> needs a query file (td>: queries/x.sql) or query:",
                task=label,
                setting="td>",
                line=body.line_of("td>"),
            )
        sql = interpolate(
            raw,
            variables,
            file=self.file,
            task=label,
            setting=setting,
            line=body.line_of("td>"),
            timezone=self.timezone,
            scope=self.scope,
        )
        if not sql.strip():
            raise WorkflowError(
                self.file,
                "the query is empty",
                task=label,
                setting=setting,
                line=body.line_of("td>"),
            )
        return sql, path

    def _destination(
        self, body: LineDict, label: str, text: Any
    ) -> tuple[Destination, dict[str, Any], Connection]:
        """The destination, the raw settings (result_settings or TD CLI JSON) and the connection."""
        raw: dict[str, Any] = {}
        lines = body
        if body.get("result") is not None:
            try:
                raw = parse_td_result(
                    str(body["result"])
                    if not isinstance(body["result"], Mapping)
                    else _json(body["result"]),
                    self.file.parent,
                    self.root,
                )
            except ValueError as exc:
                raise WorkflowError(
                    self.file, str(exc), task=label, setting="result", line=body.line_of("result")
                ) from None
        settings = body.get("result_settings")
        if settings is not None and not isinstance(settings, Mapping):
            raise WorkflowError(
                self.file,
                "result_settings must be a mapping of settings",
                task=label,
                setting="result_settings",
                line=lines.line_of("result_settings"),
            )
        raw.update(settings or {})
        name = body.get("result_connection")
        if name is not None:
            name = text("result_connection", str(name))
            found = self.connections.connections.get(name)
            if found is None:
                known = sorted(self.connections.connections)
                where = self.connections.file or (self.file.parent / CONNECTIONS_FILE)
                broken = any(e.task == f"connection {name}" for e in self.connections.errors)
                reason = (
                    "is declared but broken (see its error)"
                    if broken
                    else f"is not declared in {where}{closest(name, known)}"
                )
                raise WorkflowError(
                    self.file,
                    f"connection {name!r} {reason}",
                    task=label,
                    setting="result_connection",
                    line=body.line_of("result_connection"),
                )
            if "type" in raw and raw["type"] != found.destination.type_name:
                raise WorkflowError(
                    self.file,
                    f"type {raw['type']!r} does not match connection {name!r} of type {found.destination.type_name!r}",
                    task=label,
                    setting="type",
                    line=body.line_of("result"),
                )
            return found.destination, raw, found
        if "type" not in raw:
            raise WorkflowError(
                self.file,
                "no destination: give result_connection (a connection in connections.yaml), or result_settings/result with type",
                task=label,
                setting="result_connection",
                line=body.line_of("result_settings") or body.line_of("td>"),
            )
        type_line = (
            settings.line_of("type")
            if isinstance(settings, LineDict) and "type" in settings
            else body.line_of("result")
        )
        dest = known_type(raw["type"], self.file, label, "type", type_line)
        return (
            dest,
            raw,
            Connection(f"{self.name}_{dest.type_name}", dest, {}, self.file, self.policy),
        )

    def _split(
        self, dest: Destination, raw: Mapping[str, Any], body: LineDict, label: str, text: Any
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, int | None]]:
        """result_settings -> (run config settings, resource credentials, lines): credentials
        never become run config."""
        settings_fields = dest.settings_class.model_fields
        res_fields = resource_fields(dest)
        secrets = secret_fields(dest)
        to_resource = resource_settings(dest)
        settings: dict[str, Any] = {}
        overrides: dict[str, Any] = {}
        block = body.get("result_settings")
        lines = {
            str(k): (block.line_of(k) if isinstance(block, LineDict) else body.line_of("result"))
            for k in raw
        }
        for key, value in raw.items():
            key = str(key)
            setting = f"result_settings.{key}"
            if key == "type" or value is None:
                continue
            if key in to_resource:
                check = secret_checker(
                    self.policy, dest.type_name, self.file, label, setting, lines.get(key)
                )
                value = (
                    text(setting, value, allow_secret=True, check_secret=check)
                    if isinstance(value, str)
                    else value
                )
                if key in secrets and isinstance(value, str) and not isinstance(value, SecretRef):
                    log.warning(
                        "%s %s: %s is written in the file; prefer ${secret:name} or the connection",
                        self.file,
                        label,
                        key,
                    )
                overrides[key] = value
            elif key in settings_fields:
                settings[key] = _deep_text(value, lambda v, s=setting: text(s, v, defer=True))
            else:
                known = sorted(set(settings_fields) | res_fields)
                raise WorkflowError(
                    self.file,
                    setting_name_problem(key, dest.type_name, known),
                    task=label,
                    setting=setting,
                    line=lines.get(key),
                )
        return settings, overrides, lines


def _setting_line(body: LineDict, name: str) -> int | None:
    block = body.get("result_settings")
    if isinstance(block, LineDict) and name in block:
        return block.line_of(name)
    return body.line_of("result_settings") or body.line_of("result")


def _sql_options(body: LineDict, variables: Mapping[str, Any]) -> dict[str, Any]:
    """The task's ``engine`` / ``translate_sql`` (else ``_export``ed) and their lines."""
    options: dict[str, Any] = {}
    for name in SQL_OPTIONS:
        value = body.get(name) if name in body else _dotted(variables, name)
        if value is not None:
            options[name] = value
            options[f"{name}_line"] = body.line_of(name)
    return options


def _sample(settings: dict[str, Any], variables: Mapping[str, Any], scope: Any) -> dict[str, Any]:
    """Settings as a sample run would fill them (to check their rules at load)."""
    if scope is None:
        return settings
    run = scope.sample()
    return {
        k: _deep_text(
            v, lambda t: render_for_run(t, variables, run, scope.zone) if "${" in t else t
        )
        for k, v in settings.items()
    }


def _renderer(task: Task) -> Any:
    """``render(context, text)`` for :func:`build_export`: the task's scope plus the run's
    built-ins (computed once per run)."""
    scope = task.scope
    assert scope is not None
    cache: dict[str, dict[str, Any]] = {}

    def render(context: dg.AssetExecutionContext, text: str) -> str:
        run = cache.get(context.run.run_id)
        if run is None:
            run = cache[context.run.run_id] = run_variables(context, scope)
        return render_for_run(text, task.variables, run, scope.zone)

    return render


def _dotted(variables: Mapping[str, Any], name: str) -> Any:
    from line_exports.workflows.digfile import lookup

    found, value = lookup(variables, name)
    return value if found and not isinstance(value, Mapping) else None


def _deep_text(value: Any, fill: Any) -> Any:
    if isinstance(value, str):
        return fill(value)
    if isinstance(value, list):
        return [_deep_text(v, fill) for v in value]
    if isinstance(value, Mapping):
        return {k: _deep_text(v, fill) for k, v in value.items()}
    return value


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


@dataclass
class WorkflowFolder:
    """Every workflow of a folder, its connections, and the problems found."""

    path: Path
    workflows: list[Workflow]
    errors: list[WorkflowError]
    connections: ConnectionsFile
    policy: TrustPolicy = field(default_factory=TrustPolicy)
    broken: dict[Path, list[WorkflowError]] = field(default_factory=dict)
    """Each ``.dig`` file that did not load, with its errors (which may name a query file)."""

    def get(self, name: str) -> Workflow:
        for workflow in self.workflows:
            if name in (workflow.name, workflow.file.stem, workflow.file.name):
                return workflow
        raise KeyError(
            f"no loaded workflow {name!r}; loaded: {', '.join(w.name for w in self.workflows) or 'none'}"
        )

    def source(self, *, resolved: bool = False) -> SqlSource:
        """The query source; its SQL runs under the deployment's ``external_access``.

        A ``url_env`` URL stays a ``dg.EnvVar`` (Dagster resolves it when a run initializes the
        resource, and never shows its value); ``resolved=True`` resolves it now, for the CLI's
        own use outside a run (``plan``, ``validate``'s query check): else the variable's name,
        not its value, would be taken for the URL."""
        source = SqlSource(**self.connections.source, external_access=self.policy.external_access)
        return source.process_config_and_initialize() if resolved else source

    def definitions(self, *, clock: Callable[[], float] = time.time) -> dg.Definitions:
        """Every workflow's assets, job, schedule and sensors, and its exports' results back
        (:mod:`.results_back`; ``clock``: their "now" in epoch seconds)."""
        assets: list[Any] = []
        jobs, schedules, sensors, checks = [], [], [], []
        resources: dict[str, Any] = {SOURCE_KEY: self.source()}
        for workflow in self.workflows:
            built = build_workflow(workflow, clock)
            assets.extend(built.assets)
            jobs.append(built.job)
            if built.schedule is not None:
                schedules.append(built.schedule)
            if built.sensor is not None:
                sensors.append(built.sensor)
            for extra in built.results_back:
                checks.extend(extra.asset_checks or [])
                jobs.extend(extra.jobs or [])
                sensors.extend(extra.sensors or [])
            resources.update({t.resource_key: t.resource for t in workflow.tasks})
            for control in workflow.controls:
                resources.update(control.resources)
        # A broken .dig stays visible where it would be (a job and an asset carrying its errors).
        broken_assets, broken_jobs = broken_definitions(
            self.broken, {w.name for w in self.workflows}, identifier
        )
        assets.extend(broken_assets)
        jobs.extend(broken_jobs)
        metadata: dict[str, Any] = {
            "workflow_folder": str(self.path),
            "workflows_loaded": len(self.workflows),
        }
        if self.errors:
            metadata["workflow_errors"] = dg.MetadataValue.md(
                "\n".join(f"- {e}" for e in self.errors)
            )
        return dg.Definitions(
            assets=assets,
            asset_checks=checks,
            jobs=jobs,
            schedules=schedules,
            sensors=sensors,
            resources=resources,
            metadata=metadata,
        )


@dataclass
class BuiltWorkflow:
    assets: list[dg.AssetsDefinition]
    job: Any
    schedule: dg.ScheduleDefinition | None
    sensor: dg.SensorDefinition | None
    results_back: list[dg.Definitions] = field(default_factory=list)
    """Per export task with results back: its checks, daily job and sensor."""


def export_asset(task: Task, workflow_name: str, file: Path, timezone: str) -> dg.AssetsDefinition:
    """The export asset of one ``td>`` task with a destination."""
    file = task.file or file
    return build_export(
        task.key.path[-1],
        destination=task.destination,
        settings=task.settings,
        query=task.sql,
        resource_key=task.resource_key,
        source_key=SOURCE_KEY,
        key_prefix=task.key.path[:-1],
        group_name=workflow_name,
        description=f"{file.name} +{task.name}: td> {task.query_file.name if task.query_file else 'query'} -> {task.destination.target_label(task.destination.settings_class(**task.settings))} via {task.connection}",
        timezone=timezone,
        deps=task.deps or None,
        tags={"line_exports/workflow": workflow_name},
        query_file=task.query_file,
        origin=f"{file}:{task.line}, task +{task.name}"
        + (f", query {task.query_file}" if task.query_file else ""),
        **({"retry_policy": task.retry} if task.retry else {}),
        **({"render": _renderer(task)} if task.templated and task.scope else {}),
    )


def build_workflow(workflow: Workflow, clock: Callable[[], float] = time.time) -> BuiltWorkflow:
    """One asset per task (in order via deps), one job, its schedule and pause sensor, and
    each export's results back (:mod:`.results_back`)."""
    assets = []
    extras = []
    for task in workflow.tasks:
        asset = export_asset(task, workflow.name, workflow.file, workflow.timezone)
        assets.append(asset)
        if task.results_back is not None:
            extras.append(back.for_export(asset, task.results_back, task.resource_key, clock))
    for step in workflow.steps:
        what = {"sql": "td> (SQL step)", "echo": "echo>", "fail": "fail>"}.get(
            step.kind, f"{step.kind}>"
        )
        assets.append(
            build_step(
                step, workflow.name, SOURCE_KEY, f"{workflow.file.name} +{step.name}: {what}"
            )
        )
    for control in workflow.controls:
        assets.append(
            control_ops.build_control(
                control,
                workflow.name,
                SOURCE_KEY,
                f"{workflow.file.name} +{control.name}: {control.op} (expanded when it runs)",
            )
        )
    keys = (
        [t.key for t in workflow.tasks]
        + [s.key for s in workflow.steps]
        + [c.key for c in workflow.controls]
    )
    hook = build_hook(workflow.name, workflow.handlers, SOURCE_KEY)
    job = dg.define_asset_job(
        workflow.job_name,
        selection=dg.AssetSelection.assets(*keys),
        description=f"{workflow.file.name}: {len(keys)} task(s) in order, timezone {workflow.timezone}",
        tags={WORKFLOW_TAG: workflow.name},
        executor_def=dg.in_process_executor,
        hooks={hook} if hook else None,
    )
    schedule = sensor = None
    if workflow.schedule is not None:
        s = workflow.schedule
        description = (
            f"{s.form} ({s.timezone})"
            + (f", runs {s.delay_seconds}s after each tick" if s.delay_seconds else "")
            + "; ${session_time} is the tick"
        )
        if s.pause_after_failures:
            description += f"; paused after {s.pause_after_failures} consecutive failures"
        schedule = build_schedule(workflow.name, job, s, description)
        if s.pause_after_failures:
            sensor = build_pause_sensor(workflow.name, job, schedule.name, s.pause_after_failures)
    return BuiltWorkflow(assets, job, schedule, sensor, extras)


def _name_clash(
    workflow: Workflow, built: BuiltWorkflow, names: dict[str, str]
) -> WorkflowError | None:
    """The error when a job, sensor, schedule or check of ``workflow`` has the name of one
    already loaded (Dagster refuses the whole location for a duplicate); else record its names."""
    own: list[tuple[str, Task | None]] = [(built.job.name, None)]
    own += [(d.name, None) for d in (built.schedule, built.sensor) if d is not None]
    # build_workflow's assets start with one per export task, in order
    tasks_of = [*workflow.tasks, *[None] * (len(built.assets) - len(workflow.tasks))]
    own += [(a.node_def.name, t) for a, t in zip(built.assets, tasks_of, strict=True)]
    tasks = [t for t in workflow.tasks if t.results_back is not None]
    for task, extra in zip(tasks, built.results_back, strict=True):
        own += [(j.name, task) for j in extra.jobs or []]
        own += [(s.name, task) for s in extra.sensors or []]
        own += [(c.node_def.name, task) for c in extra.asset_checks or []]
    for name, task in own:
        if name in names:
            return WorkflowError(
                workflow.file,
                f"the definition name {name!r} is already used by {names[name]} (Dagster "
                "refuses duplicate names): rename the workflow or the task",
                task=task.name if task else None,
                line=task.line if task else None,
            )
    for name, task in own:
        line = f":{task.line}" if task and task.line else ""
        names[name] = f"{workflow.file.name}{line}" + (f" task +{task.name}" if task else "")
    return None


def load_folder(
    path: str | Path,
    connections: str | Path | None = None,
    *,
    policy: TrustPolicy | None = None,
) -> WorkflowFolder:
    """Parse every ``*.dig`` in ``path`` (not sub-folders: those hold includes and queries).

    ``policy`` is what the deployment lets the folder reach (default: the grants of this
    process's environment, :meth:`TrustPolicy.from_environment`; files stay inside ``path``;
    environment variables, hosts and the SQL engine's external access: see
    :mod:`line_exports.workflows.trust`). A ``connections`` file given by the deployment may
    include files next to it; one inside the folder stays inside the folder.
    """
    policy = policy or TrustPolicy.from_environment()
    folder = Path(path).resolve()
    if connections:
        conn_file = Path(connections).resolve()  # the deployment's file: its own folder is root
        conns = load_connections(conn_file, policy, conn_file.parent)
    else:
        conn_file = folder / CONNECTIONS_FILE
        conns = load_connections(conn_file, policy, folder)
    errors = list(conns.errors)
    workflows: list[Workflow] = []
    if not folder.is_dir():
        errors.append(WorkflowError(folder, "workflow folder not found"))
        return WorkflowFolder(folder, workflows, errors, conns, policy)
    seen: dict[str, Path] = {}
    names: dict[str, str] = {}  # Dagster definition name -> where it comes from (file:line)
    starts: list[tuple[Path, int]] = []
    for file in sorted(folder.glob("*.dig")):
        starts.append((file, len(errors)))
        parser = _Parser(file, conns, folder, policy)
        workflow = parser.parse()
        errors.extend(parser.errors)
        if workflow is None:
            continue
        if workflow.name in seen:
            errors.append(
                WorkflowError(
                    file,
                    f"workflow name {workflow.name!r} is already used by {seen[workflow.name].name}",
                )
            )
            continue
        try:
            built = build_workflow(workflow)  # surface definition errors here, per workflow
        except Exception as exc:  # any build failure is this workflow's alone
            errors.append(WorkflowError(file, f"cannot build definitions: {exc}"))
            continue
        clash = _name_clash(workflow, built, names)
        if clash is not None:
            errors.append(clash)
            continue
        seen[workflow.name] = file
        workflows.append(workflow)
        for control in workflow.controls:
            back.note_skipped(control)
    for error in errors:
        log.error("%s", error)
    loaded = {w.file for w in workflows}
    ends = [start for _, start in starts[1:]] + ([len(errors)] if starts else [])
    broken = {
        file: errors[start:end]
        for (file, start), end in zip(starts, ends, strict=True)
        if file not in loaded
    }
    return WorkflowFolder(folder, workflows, errors, conns, policy, broken)


def load_workflows(
    path: str | Path,
    *,
    connections: str | Path | None = None,
    strict: bool = False,
    allowed_env: Sequence[str] = (),
    allowed_hosts: Sequence[str] = (),
    external_access: bool = False,
) -> dg.Definitions:
    """Dagster definitions for a folder of ``.dig`` workflows and its ``connections.yaml``.

    Broken workflows are logged and listed in the definitions' metadata while the others load;
    ``strict=True`` raises :class:`WorkflowErrors` instead. The folder is another team's code:
    ``allowed_env`` (``fnmatch`` patterns of environment variables, beyond each destination's
    own ``<TYPE>_*``), ``allowed_hosts`` (beyond the official hosts and loopback) and
    ``external_access`` (DuckDB file/network access for its SQL) are the deployment's grants,
    added to those of ``LINE_EXPORTS_ALLOWED_ENV``/``_HOSTS``/``_EXTERNAL_ACCESS``.
    """
    policy = TrustPolicy.from_environment().widened(allowed_env, allowed_hosts, external_access)
    folder = load_folder(path, connections, policy=policy)
    if strict and folder.errors:
        raise WorkflowErrors(folder.errors)
    return folder.definitions()
