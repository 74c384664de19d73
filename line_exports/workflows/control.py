"""digdag's control operators: ``call>``, ``if>``, ``for_each>``, ``for_range>``, ``loop>``, and
``_parallel``.

Each operator works as digdag's does (``digdag-docs/src/operators/*.md`` and the Java of
``IfOperatorFactory``, ``ForEachOperatorFactory``, ``ForRangeOperatorFactory``,
``LoopOperatorFactory``, ``CallOperatorFactory``, ``ParallelControl``, ``WorkflowCompiler``): it
turns its ``_do`` (or the called file) into *generated subtasks*, which then run in digdag's
order:

==============  =====================================================================
``call>: f``    the tasks of ``f`` (``.dig`` added when missing; relative to the calling
                file; inside the workflow folder) with its ``_export``/``_parallel``/
                ``_retry``; its ``timezone`` and ``schedule`` are not used (the caller's
                session runs it); its query files are relative to its own folder
``if>: c``      ``_do`` when ``c`` is true, else ``_else_do`` (either may be missing, not
                both); ``c`` is ``true``/``false`` (a boolean or its text)
``for_each>``   one subtask per combination of ``{key: [values]}`` (cartesian product, first
                key outermost; a list may be a JSON string), each exporting its values;
                named ``+for-0=key=0=value&1=...`` (names and values cut to 8 characters,
                URL-encoded)
``for_range>``  ``{from, to, step | slices}``: slices ``[from, to)`` of width ``step`` (or
                ``ceil((to - from) / slices)``), each exporting ``range.from``, ``range.to``,
                ``range.index``; named ``+range-from=F&to=T``
``loop>: n``    (or ``count: n``) ``n`` subtasks ``+loop-I`` exporting ``i`` from 0
``_parallel``   ``true``: the children do not wait for each other; ``{limit: N}``: children
                in chunks of N, each chunk after the whole previous one (WorkflowCompiler)
==============  =====================================================================

When the operator's value is known at load (literals, ``_export``, expressions over them), the
generated subtasks are expanded then: each is its own asset, and ``validate``/``plan`` show
the expanded tree. When it reads the run (``${td.last_results.n > 0}``, ``${session_date}``),
the control task is one asset that evaluates the value when it runs and then runs the
generated subtasks inside itself, in digdag's order, each logged and recorded as a
materialization of its own asset key ``[workflow, task, subtask...]`` (Dagster's assets are
fixed when the code loads, so a fan-out counted at run time cannot be assets of its own).
An export inside it runs its own asset's code (rules, batching, ledger) and is recorded the
same way, its checks' outcomes in the ``checks`` metadata entry (a check result needs an asset
declared at load). Its ``_do`` is checked at load with a sample value (both branches of
``if>``), which also finds the destination resources its exports need.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from line_exports.workflows.digfile import LineDict, interpolate, load_yaml, merge_exports
from line_exports.workflows.errors import TaskPlace, WorkflowError
from line_exports.workflows.retry import for_dagster
from line_exports.workflows.trust import inside
from line_exports.workflows.variables import RunScope, render_for_run, run_variables

OPERATORS = ("call>", "if>", "for_each>", "for_range>", "loop>")
COMMON = ("_export", "_retry")
OPTIONS: dict[str, tuple[str, ...]] = {
    "call>": COMMON,
    "if>": ("_do", "_else_do", *COMMON),
    "for_each>": ("_do", "_parallel", *COMMON),
    "for_range>": ("_do", "_parallel", *COMMON),
    "loop>": ("count", "_do", "_parallel", *COMMON),
}
MAX_TASKS = 1000
"""digdag's default ``max_workflow_tasks`` (a generated fan-out above it is refused)."""
CALLED_TOP_LEVEL = ("timezone", "schedule", "sla", "_error", "_check", "_retry", "_parallel")
"""WorkflowFile's top-level keys besides ``_export`` and ``+tasks``."""


class ControlError(ValueError):
    """A control operator's value digdag would refuse (ConfigException); the message says why."""


def is_control(body: Mapping[str, Any]) -> bool:
    """Does this task run one of :data:`OPERATORS`?"""
    return any(op in body for op in OPERATORS)


def parallel_control(value: Any) -> tuple[bool, int]:
    """``_parallel`` as ParallelControl reads it: (parallel, limit; 0 = no limit)."""
    if value is None:
        return False, 0
    if isinstance(value, bool):
        return value, 0
    if isinstance(value, str):
        return to_boolean(value, "_parallel"), 0
    if isinstance(value, Mapping):
        limit = value.get("limit")
        if isinstance(limit, str) and limit.strip().lstrip("-").isdigit():
            limit = int(limit)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ControlError(f"_parallel: {{limit: N}} needs N >= 1, got {limit!r}")
        return True, limit
    raise ControlError(f"Invalid _parallel format: {json.dumps(value, default=str)}")


def to_boolean(value: Any, what: str = "if>") -> bool:
    """A boolean as digdag's Config reads one (Jackson): true/false, their text, a number."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.strip() in ("true", "True", "TRUE"):
        return True
    if isinstance(value, str) and value.strip() in ("false", "False", "FALSE"):
        return False
    raise ControlError(f"{what} needs true or false, got {value!r}")


def to_integer(value: Any, what: str) -> int:
    """An integer as digdag's Config reads one (a number, or its text)."""
    if isinstance(value, bool):
        raise ControlError(f"{what} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ControlError(f"{what} must be an integer, got {value!r}")


def _parse_nested(value: Any, what: str) -> Mapping[str, Any]:
    """Config.parseNested: a mapping, or a JSON object in a string."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ControlError(
                f"{what} must be a mapping (or a JSON object), got {value!r}"
            ) from None
    if not isinstance(value, Mapping):
        raise ControlError(f"{what} must be a mapping (or a JSON object), got {value!r}")
    return value


def _parse_list(value: Any, what: str) -> list[Any]:
    """Config.parseList: a list, or a JSON array in a string."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ControlError(f"{what} must be a list (or a JSON array), got {value!r}") from None
    if not isinstance(value, list):
        raise ControlError(f"{what} must be a list (or a JSON array), got {value!r}")
    return value


def _name_tag(value: Any) -> str:
    """ForEachOperatorFactory.nameTag: 8 characters, URL-encoded, space as %20."""
    raw = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    # java.net.URLEncoder: letters, digits and ".-*_" kept, the rest %XX of UTF-8
    return "".join(
        chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in ".-*_") else f"%{b:02X}"
        for b in raw[:8].encode("utf-8")
    )


def for_each(command: Any) -> list[tuple[str, dict[str, Any]]]:
    """(task name, exported values) of each combination, in digdag's order."""
    entries = _parse_nested(command, "for_each>")
    lists = {str(k): _parse_list(v, f"for_each> {k}") for k, v in entries.items()}
    count = 1
    for values in lists.values():
        count *= len(values)
        if count > MAX_TASKS:
            raise ControlError(f"Too many for_each subtasks. Limit: {MAX_TASKS}")
    combos: list[list[tuple[int, str, int, Any]]] = [[]]
    for i, (key, values) in enumerate(lists.items()):
        combos = [[*c, (i, key, j, v)] for c in combos for j, v in enumerate(values)]
    if not lists:
        combos = []
    out = []
    for combo in combos:
        name = "+for-" + "&".join(
            f"{i}={_name_tag(key)}={j}={_name_tag(value)}" for i, key, j, value in combo
        )
        out.append((name, {key: value for _, key, _, value in combo}))
    return out


def for_range(command: Any) -> list[tuple[str, dict[str, Any]]]:
    """(task name, ``{range: {from, to, index}}``) of each slice, as ForRangeOperatorFactory."""
    spec = _parse_nested(command, "for_range>")
    if "from" not in spec or "to" not in spec:
        raise ControlError("for_range> needs from and to")
    start = to_integer(spec["from"], "for_range> from")
    end = to_integer(spec["to"], "for_range> to")
    step = spec.get("step")
    slices = spec.get("slices")
    if step is not None and slices is not None:
        raise ControlError("Setting both step and slices options to for_range is invalid")
    if step is None and slices is None:
        raise ControlError("step or slices option is required for for_range")
    if step is not None:
        step = to_integer(step, "for_range> step")
        if step <= 0:
            raise ControlError(f"step option must be same or greater than 1 but got {step}")
    else:
        slices = to_integer(slices, "for_range> slices")
        if slices <= 0:
            raise ControlError(f"slices option must be same or greater than 1 but got {slices}")
        # Java's long division truncates toward zero
        step = math.trunc((end - start + (slices - 1)) / slices)
        if step <= 0:
            return []
    out = []
    pos = start
    while pos < end:
        upper = min(pos + step, end)
        out.append(
            (
                f"+range-from={pos}&to={upper}",
                {"range": {"from": pos, "to": upper, "index": len(out)}},
            )
        )
        if len(out) > MAX_TASKS:
            raise ControlError(f"Too many for_range subtasks ({len(out)}). Limit: {MAX_TASKS}")
        pos += step
    return out


def loop(count: Any) -> list[tuple[str, dict[str, Any]]]:
    """(``+loop-I``, ``{i: I}``) for I in 0..count-1, as LoopOperatorFactory."""
    n = to_integer(count, "loop> count")
    if n > MAX_TASKS:
        raise ControlError(f"Too many loop subtasks. Limit: {MAX_TASKS}")
    return [(f"+loop-{i}", {"i": i}) for i in range(max(n, 0))]


def _copy(body: Any) -> Any:
    if isinstance(body, LineDict):
        out = LineDict()
        out.line = body.line
        for key, value in body.items():
            out[key] = _copy(value)
        out.lines = dict(body.lines)
        return out
    if isinstance(body, list):
        return [_copy(v) for v in body]
    return body


def generate(op: str, command: Any, body: LineDict) -> LineDict:
    """digdag's generated subtask config of ``if>``/``for_each>``/``for_range>``/``loop>``
    for an evaluated ``command`` (for ``loop>``: its ``count`` option when given, else the
    operator's value)."""
    if op == "if>":
        do, else_do = body.get("_do"), body.get("_else_do")
        if not do and not else_do:
            raise ControlError("Both _do and _else_do are not specified.")
        chosen = do if to_boolean(command) else else_do
        if chosen is None:
            empty = LineDict()
            empty.line = body.line
            return empty
        if not isinstance(chosen, LineDict):
            raise ControlError("_do and _else_do must be tasks (a mapping)")
        return _copy(chosen)
    do = body.get("_do")
    if not isinstance(do, LineDict):
        raise ControlError(f"{op} needs _do: the tasks to repeat")
    if op == "for_each>":
        items = for_each(command)
    elif op == "for_range>":
        items = for_range(command)
    else:
        items = loop(command)  # the caller passes count: when given, as LoopOperatorFactory
    generated = LineDict()
    generated.line = body.line
    where = body.line_of("_do")
    for name, exports in items:
        subtask = _copy(do)
        own = subtask.get("_export")
        merged = LineDict({**(own if isinstance(own, Mapping) else {}), **exports})
        merged.line = where
        subtask["_export"] = merged
        subtask.lines.setdefault("_export", where or 0)
        generated[name] = subtask
        generated.lines[name] = where or 0
    parallel, _ = parallel_control(body.get("_parallel"))
    if parallel:
        generated["_parallel"] = body["_parallel"]
        generated.lines["_parallel"] = body.line_of("_parallel") or 0
    return generated


def parallel_waits(
    parallel: tuple[bool, int], index: int, deps: list[Any], chunks: list[list[Any]]
) -> list[Any]:
    """What the ``index``-th child of a group waits for: ``deps`` (parallel), or the whole
    previous chunk of ``limit`` children (``{limit: N}``, WorkflowCompiler)."""
    on, limit = parallel
    if not on or not limit or index < limit:
        return list(deps)
    return list(chunks[index // limit - 1])


@dataclass
class Control:
    """A control task whose value reads the run: one asset that expands and runs it then."""

    op: str
    name: str
    key: dg.AssetKey
    line: int | None
    file: Path
    body: LineDict
    command: Any
    """The operator's value, ``${...}`` that read the run kept for run time."""
    scope: RunScope
    variables: dict[str, Any]
    path: list[str]
    parser: dict[str, Any]
    """What a run-time parser needs (connections, folder, policy, timezone, schedule, names)."""
    deps: list[dg.AssetKey] = field(default_factory=list)
    retry: dg.RetryPolicy | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    """The destination resources of the exports it may run (found at load)."""
    workflow_file: Path | None = None

    def describe(self) -> str:
        """``if> ${td.last_results.n > 0} (expands when the run gets there)``."""
        value = self.command if isinstance(self.command, str) else json.dumps(self.command)
        return f"{self.op} {value} (expands when the run gets there)"

    def evaluate(self, context: Any) -> Any:
        run = run_variables(context, self.scope)

        def fill(value: Any) -> Any:
            if isinstance(value, str) and "${" in value:
                return render_for_run(value, self.variables, run, self.scope.zone)
            if isinstance(value, Mapping):
                return {k: fill(v) for k, v in value.items()}
            if isinstance(value, list):
                return [fill(v) for v in value]
            return value

        return fill(self.command)


def _evaluate(
    parser: Any,
    value: Any,
    variables: dict[str, Any],
    label: str,
    line: int | None,
    setting: str,
    scope: RunScope,
) -> tuple[Any, bool]:
    """The operator's value with ``${...}`` filled at load; (value, reads the run)."""
    deferred = False

    def fill(item: Any) -> Any:
        nonlocal deferred
        if isinstance(item, str) and "${" in item:
            out = interpolate(
                item,
                variables,
                file=parser.file,
                task=label,
                setting=setting,
                line=line,
                scope=scope,
                defer=True,
            )
            deferred = deferred or "${" in str(out)
            return out
        if isinstance(item, Mapping):
            return {k: fill(v) for k, v in item.items()}
        if isinstance(item, list):
            return [fill(v) for v in item]
        return item

    return fill(value), deferred


def _sample_command(op: str, command: Any) -> list[Any]:
    """Values to check a run-time control's subtasks with at load."""
    if op == "if>":
        return [True, False]
    if op == "loop>":
        return [1]
    if op == "for_range>":
        return [{"from": 0, "to": 1, "step": 1}]
    if isinstance(command, Mapping):
        return [{k: (v if isinstance(v, list) and v else ["0"]) for k, v in command.items()}]
    return []


def expand(
    parser: Any,
    body: LineDict,
    at: TaskPlace,
    variables: dict[str, Any],
    deps: list[dg.AssetKey],
    retry: dg.RetryPolicy | None,
) -> list[dg.AssetKey]:
    """Place a control task: its generated subtasks now (value known at load), or one
    :class:`Control` asset (value read at run time). Returns the keys the next task waits for;
    errors go to ``parser.errors``."""
    path, label = list(at.path), at.task
    ops = [op for op in OPERATORS if op in body]
    others = [k for k in body if str(k).endswith(">") and k not in ops]
    if len(ops) + len(others) != 1:
        parser.errors.append(
            at.error(f"a task runs one operator; found {', '.join(map(str, [*ops, *others]))}")
        )
        return []
    op = ops[0]
    count = len(parser.errors)
    for key in body:
        if key != op and key not in OPTIONS[op]:
            reason = (
                f"{op} takes its tasks under _do, not as +tasks"
                if str(key).startswith("+") and op != "call>"
                else f"{key!r} is not an option of {op} (options: {', '.join(OPTIONS[op])})"
            )
            parser.errors.append(at.error(reason, setting=str(key), line=body.line_of(key)))
    if len(parser.errors) != count:
        return []
    stem = getattr(parser, "stem", at.file.stem)
    scope = RunScope(parser.timezone, parser.schedule, "+" + "+".join([stem, *path]))
    where = body.line_of(op)
    if op == "call>":
        return _call(parser, body, at, variables, deps, retry, scope)
    raw = body["count"] if op == "loop>" and "count" in body else body[op]
    try:
        command, deferred = _evaluate(parser, raw, variables, label, where, op, scope)
    except WorkflowError as exc:
        parser.errors.append(exc)
        return []
    if not deferred:
        try:
            generated = generate(op, command, body)
        except ControlError as exc:
            parser.errors.append(at.error(str(exc), setting=op, line=where))
            return []
        return place(parser, generated, at, variables, deps, retry)
    return _runtime(parser, op, command, body, at, variables, deps, retry, scope)


def place(
    parser: Any,
    generated: LineDict,
    at: TaskPlace,
    variables: dict[str, Any],
    deps: list[dg.AssetKey],
    retry: dg.RetryPolicy | None,
) -> list[dg.AssetKey]:
    """Generated subtasks as a group (``+`` children) or, for ``if>``'s ``_do`` holding one
    operator, as the task itself; nothing (``if>`` false without ``_else_do``) passes on
    ``deps``."""
    if not any(str(k).startswith("+") or str(k).endswith(">") for k in generated):
        return list(deps)
    try:
        scope = merge_exports(
            variables, generated.get("_export"), parser.file, at.task, generated.line_of("_export")
        )
    except WorkflowError as exc:
        parser.errors.append(exc)
        return []
    if any(str(k).startswith("+") for k in generated):
        return parser._group(generated, list(at.path), scope, deps, retry)
    produced = parser._node(generated, at, scope, deps, retry)
    return produced or list(deps)


@dataclass(frozen=True)
class CallFrame:
    """One ``call>`` being expanded: which file it calls, from where, as which digdag task."""

    called: Path
    file: Path
    """The calling file."""
    line: int | None
    task: str
    """digdag's full name of the ``call>`` task (``+main+c``, ``+main+c^sub+d`` inside a
    called file: digdag names an operator's generated subtasks ``^sub``, WorkflowExecutor)."""
    depth: int
    """How many path parts the ``call>`` task has (its called tasks add theirs after)."""

    def describe(self, root: Path) -> str:
        where = f"{_relative(self.file, root)}:{self.line}" if self.line else str(self.file)
        return f"{self.task} ({where}) calls {_relative(self.called, root)}"


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def digdag_task_name(parser: Any, path: list[str]) -> str:
    """digdag's full name of the task at ``path``: ``+workflow+group+task``, and inside a
    ``call>``ed file the ``call>`` task's name, ``^sub``, then the path within the file."""
    stack: list[CallFrame] = getattr(parser, "calling", [])
    if not stack:
        return "+" + "+".join([parser.stem, *path])
    return stack[-1].task + "^sub+" + "+".join(path[stack[-1].depth :])


def _call(
    parser: Any,
    body: LineDict,
    at: TaskPlace,
    variables: dict[str, Any],
    deps: list[dg.AssetKey],
    retry: dg.RetryPolicy | None,
    scope: RunScope,
) -> list[dg.AssetKey]:
    file, path, label, line = at.file, list(at.path), at.task, body.line_of("call>")
    try:
        target = interpolate(
            str(body["call>"]),
            variables,
            file=file,
            task=label,
            setting="call>",
            line=line,
            scope=scope,
        )
        if not target.endswith(".dig"):
            target += ".dig"
        called = inside(
            parser.root,
            target,
            base=file.parent,
            file=file,
            what="call>",
            task=label,
            setting="call>",
            line=line,
        )
        stack: list[CallFrame] = getattr(parser, "calling", [])
        frame = CallFrame(called, file, line, digdag_task_name(parser, path), len(path))
        if called == parser.top_file.resolve() or any(f.called == called for f in stack):
            raise WorkflowError(
                file,
                "call> cycle: " + "; ".join(f.describe(parser.root) for f in [*stack, frame]),
                task=frame.task,
                setting="call>",
                line=line,
            )
        if not called.is_file():
            raise WorkflowError(
                file,
                f"call> {target}: no such workflow file ({called})",
                task=label,
                setting="call>",
                line=line,
            )
        config = load_yaml(called, parser.root)
    except WorkflowError as exc:
        parser.errors.append(exc)
        return []
    if not isinstance(config, LineDict):
        parser.errors.append(
            WorkflowError(called, "a workflow must be a YAML mapping of options and +tasks")
        )
        return []
    unknown = [
        k for k in config if not str(k).startswith("+") and k not in (*CALLED_TOP_LEVEL, "_export")
    ]
    if unknown:
        parser.errors.append(
            WorkflowError(
                called,
                f"Workflow includes unknown keys: {unknown} (called by {file.name}:{line}, task {label})",
                setting=str(unknown[0]),
                line=config.line_of(unknown[0]),
            )
        )
        return []
    # WorkflowFile.toWorkflowDefinition: the called file's _export and _parallel/_retry/... with
    # its tasks; its timezone is dropped (the caller's session runs it), schedule is unused.
    group = LineDict()
    group.line = config.line
    for key, value in config.items():
        if key in ("timezone", "schedule"):
            continue
        group[key] = value
        group.lines[key] = config.line_of(key) or 0
    saved = parser.file
    parser.file = called
    parser.calling = [*stack, frame]
    try:
        from line_exports.workflows.retry import retry_policy as _retry_policy

        try:
            inner = merge_exports(
                variables, group.get("_export"), called, label, group.line_of("_export")
            )
            inner_retry = (
                _retry_policy(group.get("_retry"), called, label, group.line_of("_retry")) or retry
            )
        except WorkflowError as exc:
            parser.errors.append(exc)
            return []
        from line_exports.workflows.operators import not_supported

        refused = not_supported(group, called, label)
        if refused:
            parser.errors.extend(refused)
            return []
        made = (len(parser.tasks), len(parser.steps), len(parser.controls))
        keys = parser._group(group, path, inner, deps, inner_retry)
        if "_error" in group:  # the called file's _error: watches its tasks (on_error.py)
            parser._on_error(group, path, label, inner, made)
        return keys
    finally:
        parser.file = saved
        parser.calling = stack


def _runtime(
    parser: Any,
    op: str,
    command: Any,
    body: LineDict,
    at: TaskPlace,
    variables: dict[str, Any],
    deps: list[dg.AssetKey],
    retry: dg.RetryPolicy | None,
    scope: RunScope,
) -> list[dg.AssetKey]:
    """A control whose value reads the run: check its subtasks with sample values, then one
    asset."""
    path, label, line = list(at.path), at.task, at.line
    from line_exports.workflows.loader import identifier

    resources: dict[str, Any] = {}
    for sample in _sample_command(op, command):
        probe = parser.spawn()
        try:
            generated = generate(op, sample, body)
        except ControlError as exc:
            parser.errors.append(
                WorkflowError(parser.file, str(exc), task=label, setting=op, line=body.line_of(op))
            )
            return []
        place(probe, generated, at, variables, [], retry)
        parser.errors.extend(probe.errors)
        for task in probe.tasks:
            if task.resource_key != identifier(task.connection):
                parser.errors.append(
                    WorkflowError(
                        task.file or probe.file,
                        f"an export inside {op} whose value is known only when the run starts "
                        f"({label}) takes its credentials from its connection; move the "
                        "credentials in result_settings to connections.yaml",
                        task="+" + task.name,
                        line=task.line,
                    )
                )
            resources[task.resource_key] = task.resource
    key = dg.AssetKey([parser.name, *(identifier(p) for p in path)])
    if parser.taken(key):
        parser.errors.append(
            WorkflowError(
                parser.file,
                f"two tasks map to the asset {key.to_user_string()}; rename one",
                task=label,
                line=line,
            )
        )
        return []
    control = Control(
        op=op,
        name=".".join(path),
        key=key,
        line=line,
        file=parser.file,
        body=body,
        command=command,
        scope=scope,
        variables=dict(variables),
        path=list(path),
        parser=parser.state(),
        deps=list(deps),
        retry=retry,
        resources=resources,
        workflow_file=parser.top_file,
    )
    parser.controls.append(control)
    parser.order.append(control)
    return [key]


def run_control(
    control: Control, context: Any, source_key: str
) -> Iterator[dg.AssetMaterialization]:
    """Evaluate a run-time control task and run its generated subtasks in digdag's order,
    yielding a materialization of each one's key as it finishes (so a later failure keeps
    them); returns (as the generator's value) the control's metadata."""
    from line_exports.workflows.loader import _Parser

    label = "+" + control.name
    command = control.evaluate(context)
    try:
        generated = generate(control.op, command, control.body)
    except ControlError as exc:
        raise dg.Failure(
            description=f"{control.file}:{control.line}, task {label}: {control.op} "
            f"{json.dumps(command, default=str)}: {exc}",
            allow_retries=False,
        ) from None
    parser = _Parser.restore(control.parser)
    at = TaskPlace(control.file, control.line, label, tuple(control.path))
    place(parser, generated, at, control.variables, [], control.retry)
    missing = [t for t in parser.tasks if t.resource_key not in control.resources]
    if parser.errors or missing:
        problems = [str(e) for e in parser.errors] + [
            f"+{t.name}: resource {t.resource_key} was not found when the workflow loaded"
            for t in missing
        ]
        raise dg.Failure(description="; ".join(problems), allow_retries=False)
    context.log.info(
        f"{control.scope.task_name}: {control.op} {json.dumps(command, default=str)} -> "
        f"{len(parser.order)} task(s)"
    )
    ran: list[str] = []
    own: dict[str, Any] = {}
    failures: list[str] = []
    parallel, limit = _parallel_of(generated)
    children = _children(generated)
    depth = len(control.key.path)
    failed: set[str] = set()
    for item in parser.order:
        child = item.key.path[depth] if len(item.key.path) > depth else ""
        chunk = children.index(child) // limit if limit and child in children else 0
        stopped = child in failed or (
            limit and any(children.index(f) // limit < chunk for f in failed)
        )
        if stopped:
            context.log.info(f"{_name(item)}: not run (an earlier task of {label} failed)")
            continue
        try:
            for event in _run_item(item, control, context, source_key, label):
                if event.asset_key == control.key:
                    # if>'s _do holding one operator is the control task itself: one
                    # materialization of its key, with the task's metadata
                    own.update(event.metadata)
                else:
                    yield event
        except dg.Failure as exc:
            if not parallel:
                raise
            # _parallel: the other children go on; the group fails when they are done
            context.log.error(f"{_name(item)}: {exc.description}")
            failures.append(str(exc.description))
            failed.add(child)
            continue
        ran.append(item.key.to_user_string())
    if failures:
        raise dg.Failure(
            description=f"{label}: {len(failures)} task(s) failed: " + "; ".join(failures),
            allow_retries=False,
        )
    return {
        **own,
        "operator": control.op,
        "value": dg.MetadataValue.json(command)
        if isinstance(command, (dict, list))
        else str(command),
        "tasks_run": dg.MetadataValue.json(ran),
    }


def _name(item: Any) -> str:
    scope = getattr(item, "scope", None)
    return scope.task_name if scope is not None else "+" + item.name


def _parallel_of(generated: LineDict) -> tuple[bool, int]:
    try:
        return parallel_control(generated.get("_parallel"))
    except ControlError:
        return False, 0


def _children(generated: LineDict) -> list[str]:
    """The asset-key names of a generated group's children, in order."""
    from line_exports.workflows.loader import identifier

    return [identifier(str(k)[1:]) for k in generated if str(k).startswith("+")]


def _run_item(
    item: Any, control: Control, context: Any, source_key: str, label: str
) -> Iterator[dg.AssetMaterialization]:
    """Run one task of a run-time control; yields its materialization under its own key."""
    from line_exports.workflows.loader import Task
    from line_exports.workflows.operators import Step, run_step

    if isinstance(item, Task):
        yield _run_export(item, control, context)
        return
    if isinstance(item, Step):
        context.log.info(f"{item.scope.task_name}: {item.kind} starts")
        metadata = run_step(item, context, source_key)
    else:
        metadata = yield from run_control(item, context, source_key)
    yield dg.AssetMaterialization(
        asset_key=item.key,
        description=f"{item.scope.task_name} (run by {label})",
        metadata=metadata,
    )


def _run_export(task: Any, control: Control, context: Any) -> dg.AssetMaterialization:
    """Run one export inside a run-time control: the export's own code (the asset it would
    be), recorded as a materialization of its key with its checks' outcomes."""
    from line_exports.workflows.loader import export_asset

    label = task.scope.task_name if task.scope else "+" + task.name
    context.log.info(f"{label}: export starts")
    asset = export_asset(
        task, control.key.path[0], control.workflow_file or control.file, control.scope.timezone
    )
    fn = asset.op.compute_fn.decorated_fn  # type: ignore[union-attr]
    settings = fn.__annotations__["config"]()
    result = fn(context, settings)
    checks = {
        c.check_name: {"passed": c.passed, **{k: str(v.value) for k, v in c.metadata.items()}}
        for c in result.check_results or []
    }
    failed = [name for name, c in checks.items() if not c["passed"]]
    for name in failed:
        context.log.warning(f"{label}: check {name} failed: {checks[name]}")
    return dg.AssetMaterialization(
        asset_key=task.key,
        description=f"{label} (run by +{control.name})",
        metadata={**(result.metadata or {}), "checks": dg.MetadataValue.json(checks)},
    )


def build_control(
    control: Control, workflow_name: str, source_key: str, description: str
) -> dg.AssetsDefinition:
    """The asset of a run-time control task, in digdag's order via ``deps``."""

    def compute(context):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202 - Dagster reads it
        metadata = yield from run_control(control, context, source_key)
        yield dg.MaterializeResult(metadata=metadata)

    compute.__name__ = "_".join(control.key.path)
    return dg.asset(
        key=control.key,
        deps=control.deps or None,
        required_resource_keys={source_key, *control.resources},
        group_name=workflow_name,
        description=description,
        retry_policy=for_dagster(control.retry),
        kinds={"python"},
        tags={"line_exports/workflow": workflow_name},
    )(compute)
