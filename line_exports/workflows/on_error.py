"""digdag's ``_error:``: tasks that run when a task, a group or the workflow fails.

Source: digdag-docs ``workflow_definition.rst`` ("Error handling"), ``concepts.md`` and
``WorkflowExecutor.collectErrorParams`` (digdag 0.10). When a task fails (after its
``_retry``), the ``_error:`` of that task runs, then that of each group around it, out to the
workflow's top level, each once per run; their tasks see ``${error.message}`` and
``${error.stacktrace}`` (what digdag's ``TaskExecutionException`` gives: for ``fail>``, its
message; else ``message (kind)``). The run still fails afterwards, as digdag's attempt does.

An ``_error:`` holds operator tasks (``echo>``, ``mail>``, ``td>`` SQL steps, ``td_ddl>``,
``wait>``, ``fail>``), one or a group of ``+tasks`` run in order; they are not assets of
their own: a Dagster failure hook on the workflow's job runs them inside the failed run, and
their log lines and failures are in that run's log. A task failing inside ``_error`` is
logged and the next one still runs.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import dagster as dg

from line_exports.workflows.errors import WorkflowError


class ErrorParams(dict):
    """``error`` at load (for checking ``${error.message}``): filled when the task fails."""

    opaque = True

    def __init__(self) -> None:
        super().__init__({"message": "", "stacktrace": ""})


@dataclass
class Handler:
    """The ``_error:`` of one task or group: its steps, and the assets it watches."""

    label: str
    """``+group.task``, or the workflow file for the top level."""
    depth: int
    """0 for the workflow's top level; inner handlers run first."""
    steps: list[Any]
    watched: set[dg.AssetKey] = field(default_factory=set)


def parse_handler(
    parser: Any, block: Any, path: list[str], label: str | None, variables: Mapping[str, Any]
) -> Handler | None:
    """The ``_error:`` block of a task/group (``path``) as steps, or None with errors added."""
    from line_exports.workflows.digfile import LineDict
    from line_exports.workflows.operators import is_step, parse_step

    where = label or str(parser.file.name)
    line = None
    if not isinstance(block, LineDict):
        parser.errors.append(
            WorkflowError(
                parser.file,
                "_error: must be a task (mail>: ..., echo>: ...) or +tasks",
                task=label,
                setting="_error",
            )
        )
        return None
    scope = {**variables, "error": ErrorParams()}
    own, parser.steps = parser.steps, []
    count = len(parser.errors)
    try:
        children = [(k, v) for k, v in block.items() if str(k).startswith("+")]
        if not children:
            children = [("+_error", block)]
        for key, body in children:
            name = str(key)[1:]
            task_label = f"{label or ''}^error{'' if name == '_error' else '+' + name}"
            if not isinstance(body, LineDict) or not is_step(body):
                parser.errors.append(
                    WorkflowError(
                        parser.file,
                        "an _error: task runs an operator (echo>, mail>, td> without a "
                        "destination, td_ddl>, wait>, fail>); exports and groups are not "
                        "supported inside _error",
                        task=task_label,
                        setting="_error",
                        line=block.line_of(key) if name != "_error" else line,
                    )
                )
                continue
            step = parse_step(
                parser,
                body,
                [*path, "error", name],
                task_label,
                block.line_of(key),
                dict(scope),
                [],
                None,
            )
            if step is not None:  # digdag's name: +wf+group^error(+task)
                step.scope = replace(
                    step.scope,
                    task_name="+".join(["", parser.file.stem, *path])
                    + task_label.rpartition("^")[1]
                    + task_label.rpartition("^")[2],
                )
        steps = parser.steps
    finally:
        parser.steps = own
    if len(parser.errors) != count:
        return None
    return Handler(where, len(path), steps)


def error_params(exc: BaseException | None) -> dict[str, str]:
    """digdag's ``error``: ``message`` and ``stacktrace`` of the failure."""
    from line_exports.workflows.operators import ERROR_MESSAGE

    if exc is None:
        return {"message": "", "stacktrace": ""}
    if isinstance(exc, dg.Failure):
        given = exc.metadata.get(ERROR_MESSAGE)
        message = str(given.value) if given is not None else str(exc.description or exc)
    else:
        message = f"{exc} ({type(exc).__name__})"
    frames = traceback.extract_tb(exc.__traceback__)
    stack = ", ".join(f"{f.name}({f.filename}:{f.lineno})" for f in frames)
    return {"message": message, "stacktrace": stack}


_RAN: set[tuple[str, int]] = set()
_RAN_LOCK = threading.Lock()


def build_hook(
    workflow_name: str, handlers: list[Handler], source_key: str
) -> dg.HookDefinition | None:
    """The job's failure hook: the failed asset's handlers, innermost first, once per run."""
    if not handlers:
        return None

    @dg.failure_hook(name=f"{workflow_name}_on_error", required_resource_keys={source_key})
    def on_error(context: dg.HookContext) -> None:
        from line_exports.workflows.operators import execute_step

        failed = context.op.name
        chosen = sorted(
            (
                (i, h)
                for i, h in enumerate(handlers)
                if any(k.to_python_identifier() == failed for k in h.watched)
            ),
            key=lambda pair: -pair[1].depth,
        )
        run = context.instance.get_run_by_id(context.run_id)
        view = SimpleNamespace(run=run, instance=context.instance, log=context.log)
        extra = {"error": error_params(context.op_exception)}
        source = getattr(context.resources, source_key)
        for index, handler in chosen:
            with _RAN_LOCK:
                if (context.run_id, index) in _RAN:
                    continue
                _RAN.add((context.run_id, index))
            context.log.info(f"{handler.label}: _error: {extra['error']['message']}")
            for step in handler.steps:
                try:
                    execute_step(step, view, source, extra)
                except Exception as exc:  # noqa: BLE001 - logged; the next _error task runs
                    context.log.error(f"{step.scope.task_name}: {error_params(exc)['message']}")

    return on_error
