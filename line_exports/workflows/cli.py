"""``line-exports validate | plan | run WORKFLOW``: workflows from the command line.

``validate`` loads every workflow and connection and lists each problem with file and line;
``plan`` runs the queries and the validation and shows what each task would send (it sends
nothing); ``run`` runs one workflow now, outside the daemon, against the real API or the
sandbox. Each prints progress on long work and ends with a summary table.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from zoneinfo import ZoneInfo

if TYPE_CHECKING:  # the parser and `table` load no pandas; the commands that read rows do
    import pandas as pd

WORKFLOWS_ENV = "LINE_EXPORTS_WORKFLOWS"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table (numbers right-aligned, with thousands separators)."""
    cells = [
        [f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v) for v in row]
        for row in rows
    ]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    numeric = [
        all(isinstance(row[i], int) and not isinstance(row[i], bool) for row in rows) and rows
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if numeric[i] else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _say(out: TextIO, message: str) -> None:
    print(message, file=out, flush=True)


def _folder(ns: argparse.Namespace) -> Any:
    """Load quietly: the commands print each error themselves."""
    from line_exports.workflows.loader import load_folder

    logger = logging.getLogger("line_exports.workflows")
    was, logger.disabled = logger.disabled, True
    try:
        return load_folder(ns.workflows, ns.connections)
    finally:
        logger.disabled = was


def _session(ns: argparse.Namespace, tz: str) -> datetime:
    if getattr(ns, "session_time", None):
        moment = datetime.fromisoformat(ns.session_time)
        return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(tz))
    return datetime.now(timezone.utc).astimezone(ZoneInfo(tz)).replace(microsecond=0)


def _next_run(workflow: Any) -> str:
    if workflow.schedule is None:
        return "-"
    for run_at, session in workflow.schedule.ticks(datetime.now(timezone.utc), 1):
        return f"{run_at:%Y-%m-%d %H:%M %Z} (session {session:%Y-%m-%d %H:%M})"
    return "-"


def _query_errors(folder: Any) -> list[tuple[Any, str]]:
    """(workflow, message) for each task whose query the source cannot plan (``EXPLAIN``):
    syntax errors, unknown tables and columns, permissions, before any run."""
    from line_exports.session import render_session_variables, session_variables
    from line_exports.sql_errors import error_line, explain, locate

    source = folder.source(resolved=True)
    found = []
    for workflow in folder.workflows:
        moment = _session(argparse.Namespace(), workflow.timezone)
        for task in workflow.tasks:
            try:
                sql = render_session_variables(task.sql, session_variables(moment))
            except ValueError as exc:
                message = str(exc)
            else:
                # ${...} still in the query is filled only at run time (a previous task's
                # output, digdag's store): that query cannot be planned before the run.
                message = None if "${" in sql else explain(source, sql)
            if message:
                line = error_line(message)
                query = task.query_file.name if task.query_file else "query"
                at = f" line {line}" if line else ""
                text = task.query_file.read_text(encoding="utf-8") if task.query_file else task.sql
                spot = None if line else locate(message, [text])
                at = f" line {spot[0]}, column {spot[1]}" if spot else at
                found.append(
                    (
                        workflow,
                        f"{workflow.file}:{task.line}, task +{task.name}: {query}{at}: {message}",
                    )
                )
    return found


def validate(ns: argparse.Namespace, out: TextIO | None = None) -> int:
    """Load everything and plan every query on the source; print each problem, then one row
    per workflow."""
    out = out or sys.stdout  # at call time: a caller may have replaced sys.stdout
    if getattr(ns, "folder", None):
        ns.workflows = ns.folder
    folder = _folder(ns)
    for error in folder.errors:
        _say(out, f"error: {error}")
    query_errors = _query_errors(folder)
    for _, message in query_errors:
        _say(out, f"error: {message}")
    bad_queries = {id(w) for w, _ in query_errors}
    attributed = [e for errors in folder.broken.values() for e in errors]
    broken = sorted(
        {f.name for f in folder.broken}
        | {Path(e.file).name for e in folder.errors if e not in attributed}
    )
    rows = [
        [
            w.file.name,
            "query error" if id(w) in bad_queries else "ok",
            len(w.tasks) + len(w.steps) + len(w.controls),
            w.schedule.form if w.schedule else "-",
            w.timezone,
            _next_run(w),
        ]
        for w in folder.workflows
    ]
    rows += [[name, "error", 0, "-", "-", "-"] for name in broken]
    _say(out, "")
    _say(out, table(["workflow", "status", "tasks", "schedule", "timezone", "next run"], rows))
    for workflow in folder.workflows:
        if workflow.steps or workflow.controls or len(workflow.tasks) > 1:
            _say_tree(out, workflow)
    _say(
        out,
        f"\n{len(folder.workflows)} workflow(s) loaded, "
        f"{len(folder.errors) + len(query_errors)} error(s), "
        f"{len(folder.connections.connections)} connection(s) in {folder.connections.file}",
    )
    return 1 if folder.errors or query_errors else 0


def _say_tree(out: TextIO, workflow: Any) -> None:
    """The workflow's tasks in digdag's order, control operators expanded where their value
    is known at load."""
    _say(out, f"\n{workflow.file.name}: tasks in order")
    tree = workflow.tree()
    width = max(len(name) for name, _ in tree) if tree else 0
    for name, what in tree:
        _say(out, f"  {name.ljust(width)}  {what}")


def _counted(
    chunks: Iterator[pd.DataFrame], label: str, out: TextIO, every: float = 2.0
) -> Iterator[pd.DataFrame]:
    read = 0
    last = time.monotonic()
    for chunk in chunks:
        read += len(chunk)
        if time.monotonic() - last >= every:
            last = time.monotonic()
            _say(out, f"  {label}: read {read:,} rows ...")
        yield chunk


def _say_translation(out: TextIO, label: str, translation: Any) -> None:
    """The SQL a task runs, when it differs from the query as written."""
    if translation is None:
        _say(out, f"  {label}: SQL runs as written (translate_sql: false)")
    elif translation.changed:
        _say(out, f"  {label}: SQL translated from {translation.read} to {translation.write}:")
        _say(out, "      " + translation.sql.replace("\n", "\n      "))


def _guards(label: str, dest: Any, settings: Any, summary: Any) -> tuple[list[str], str]:
    """(warnings, 'would fail: ...' or ''): unknown columns and an empty result, as a run
    would treat them (see :mod:`line_exports.export_guards`)."""
    from line_exports import export_guards

    warnings: list[str] = []
    note = ""
    found = export_guards.unknown_columns(summary.ignored_columns, dest.ruleset(settings))
    warnings += [str(u) for u in found]
    if found and settings.unknown_columns == "fail":
        note = "would fail: unknown columns and unknown_columns is fail"
    if summary.valid_rows == 0:
        replaces = dest.replaces_target(settings)
        action = export_guards.empty_result_action(settings.empty_result, replaces)
        message = export_guards.empty_result_message(label, action, replaces, summary.rows_read)
        if action == "fail":
            note = note or f"would fail: {message}"
        else:
            warnings.append(f"would skip: {message}")
    return warnings, note


def _mapped(out: TextIO, label: str, chunks: Any, settings: Any, moment: datetime, tz: str) -> Any:
    """The rows as the output mapping sends them (shown), or as they are without one."""
    from line_exports import output_mapping

    mapping = output_mapping.parse_output_mapping(settings.output_mapping)
    if mapping is None:
        return chunks
    context = output_mapping.resolve_context(mapping, moment.astimezone(ZoneInfo(tz)))
    strings = output_mapping.built_strings(mapping, context)
    _say(out, f"  {label}: output mapping:")
    for line in mapping.describe():
        _say(out, f"    {line}")
    for key, value in strings.items():
        _say(out, f"    {key} = {value!r}")
    return output_mapping.mapped_chunks(chunks, mapping, strings)


def plan(ns: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run each task's query and validation; show what would be sent; send nothing."""
    out = out or sys.stdout  # at call time: a caller may have replaced sys.stdout
    from line_exports.column_names import checked_chunks
    from line_exports.export import validate_export
    from line_exports.session import render_session_variables, session_variables

    folder = _folder(ns)
    for error in folder.errors:
        _say(out, f"error: {error}")
    try:
        chosen = [folder.get(n) for n in ns.workflow] if ns.workflow else folder.workflows
    except KeyError as exc:  # a named workflow that did not load: its errors are printed above
        _say(out, f"error: {exc.args[0]}")
        return 2
    testing = None
    if getattr(ns, "test_send", None) is not None:
        from line_exports import test_sends as test_send

        try:
            testing = _test_send_options(ns, chosen)
        except test_send.TestSendError as exc:
            _say(out, f"error: {exc}")
            return 2
    source = folder.source(resolved=True)
    rows: list[list[Any]] = []
    failed = bool(folder.errors and not ns.workflow)
    sent = {"messages": 0, "written": []}
    removing = False
    for workflow in chosen:
        moment = _session(ns, workflow.timezone)
        _say(out, f"{workflow.file.name}: session time {moment.isoformat()}")
        if workflow.steps or workflow.controls:
            _say_tree(out, workflow)
            _say(out, "  (plan runs the exports' queries only; the other tasks run in a run)")
        for task in workflow.tasks:
            label = f"{workflow.name}/{task.name}"
            dest = task.destination
            _say_translation(out, label, task.translation)
            sql, values = task.for_session(moment)
            settings = dest.settings_class(**values)
            workdir = Path(tempfile.mkdtemp(prefix="line-exports-plan-"))
            try:
                started = time.monotonic()
                variables = session_variables(moment.astimezone(ZoneInfo(workflow.timezone)))
                sql = render_session_variables(sql, variables)
                chunks = _counted(
                    checked_chunks(
                        source.read_chunks(sql, scheduled_time=int(variables["session_unixtime"])),
                        "the query",
                    ),
                    label,
                    out,
                )
                chunks = _mapped(out, label, chunks, settings, moment, workflow.timezone)
                summary, valid = validate_export(
                    chunks,
                    dest.export_ruleset(settings),
                    settings.model_dump(),
                    workdir,
                )
                policy, skips = dest.invalid_policy(settings)
                note = ""
                sendable = summary.valid_rows
                # Duplicates are sent once, not invalid: they never stop a run on their own.
                if summary.rejected_rows - summary.duplicate_rows and not skips:
                    note, sendable = (
                        f"would fail: {summary.rejected_rows - summary.duplicate_rows:,} invalid "
                        f"rows and {policy} is false",
                        0,
                    )
                else:
                    try:
                        dest.check_total(settings, summary.valid_rows)
                    except ValueError as exc:
                        note, sendable = f"would fail: {exc}", 0
                warnings, guard_note = _guards(label, dest, settings, summary)
                note = note or guard_note
                synced = None
                if testing is None and not note and sendable and settings.sync_mode != "append":
                    from line_exports import sync

                    # What a run would send in this mode (adds, updates, retries), read from
                    # the ledger; the quota below is read for those rows, not the whole result.
                    synced = sync.preview(
                        dest, task.resource, settings, "/".join(task.key.path), valid, workdir
                    )
                    sendable = synced.rows.count
                    removing = removing or settings.sync_mode == "mirror"
                empty_mirror = (
                    testing is None
                    and not note
                    and settings.sync_mode == "mirror"
                    and summary.valid_rows == 0
                )
                if empty_mirror:  # as a run says it (export._nothing_to_send's checks)
                    from line_exports import sync

                    warnings.append(
                        f"check {sync.SYNC_CHECK} would fail: {sync.EMPTY_RESULT_REASON}"
                    )
                    removing = True
                capacity: list[str] = []
                if testing is not None:
                    pass  # the test send reads the quota for its own messages
                elif not note and sendable:
                    # What the API can take (e.g. LINE's monthly quota), read without sending.
                    capacity, cap_note, cap = dest.plan_capacity(
                        task.resource, settings, synced.rows if synced else valid
                    )
                    note = cap_note
                    sendable = sendable if cap is None else min(sendable, cap)
                target = dest.target_label(settings)
                _say(
                    out,
                    f"  {label}: read {summary.rows_read:,}, valid {summary.valid_rows:,}, rejected {summary.rejected_rows:,} "
                    f"-> {target} via {task.connection} ({time.monotonic() - started:.1f}s)",
                )
                if summary.by_rule:
                    _say(
                        out,
                        "    rejects by rule: "
                        + ", ".join(f"{k}={v:,}" for k, v in sorted(summary.by_rule.items())),
                    )
                for warning in warnings:
                    _say(out, f"    warning: {warning}")
                for line in synced.lines if synced else []:
                    _say(out, f"    {line}")
                for line in capacity:
                    _say(out, f"    {line}")
                if note:
                    _say(out, f"    {note}")
                    failed = True
                if testing is not None:
                    failed = (
                        _test_send(out, task, settings, summary, valid, workdir, testing, sent)
                        or failed
                    )
                if sendable and ns.preview and testing is None:
                    first = next(valid.batches(ns.preview), None)
                    if first is not None:
                        shown = first.drop(
                            columns=[c for c in first.columns if c.startswith("_")], errors="ignore"
                        )
                        _say(out, f"    valid rows (first {len(shown)} of {summary.valid_rows:,}):")
                        _say(
                            out,
                            "      "
                            + shown.to_string(index=False, max_colwidth=40).replace(
                                "\n", "\n      "
                            ),
                        )
                rows.append(
                    [
                        label,
                        dest.type_name,
                        target,
                        summary.rows_read,
                        summary.valid_rows,
                        summary.rejected_rows,
                        sendable,
                        synced.removals
                        if synced and settings.sync_mode == "mirror"
                        else (0 if empty_mirror else "-"),
                    ]
                )
            except Exception as exc:  # noqa: BLE001 - one task's failure is reported, the others go on
                _say(out, f"  {label}: error: {exc}")
                rows.append([label, dest.type_name, "-", 0, 0, 0, 0, "-"])
                failed = True
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
    _say(out, "")
    headers = ["task", "destination", "target", "rows read", "valid", "rejected", "would send"]
    if removing:  # a mirror task: its removals, apart from what it would send
        headers.append("would remove")
    else:
        rows = [row[:-1] for row in rows]
    _say(out, table(headers, rows))
    if testing is None:
        _say(out, "\nplan only: nothing was sent")
    else:
        done = []
        if testing.testers:
            done.append(f"{sent['messages']:,} messages to {len(testing.testers)} tester(s)")
        if sent["written"]:
            done.append("wrote " + ", ".join(repr(n) for n in sent["written"]))
        _say(
            out,
            f"\ntest send: {'; '.join(done) or 'nothing sent'}; nothing was sent to the rows' "
            "recipients, nothing recorded as a delivery",
        )
    return 1 if failed else 0


def _test_send_options(ns: argparse.Namespace, workflows: list[Any]) -> Any:
    """The checked ``--test-send``/``--to``/``--seed``; refuses, before any query runs, a
    missing ``--to`` when a task sends messages, and a plan none of whose tasks can be
    test-sent."""
    from line_exports import test_sends as test_send

    testing = test_send.options(ns.test_send, ns.to, ns.seed)
    modes = []
    for workflow in workflows:
        for task in workflow.tasks:
            try:
                settings = task.destination.settings_class(**task.settings)
                modes.append(test_send.mode_of(task.destination, settings))
            except test_send.TestSendError:
                continue
            except ValueError:  # settings filled at run time: decided per task below
                modes.append("")
    if not modes:
        raise test_send.TestSendError(
            "no task here can be test-sent; "
            + "; ".join(f"{w.name}/{t.name}: {_refusal(t)}" for w in workflows for t in w.tasks)
        )
    if not testing.testers and any(m in test_send.MESSAGE_MODES for m in modes):
        raise test_send.TestSendError(
            "--to is required: the LINE user IDs of the testers who get the messages "
            "(--to Uxxxxxxxx...,Uyyyyyyyy...)"
        )
    return testing


def _refusal(task: Any) -> str:
    from line_exports import test_sends as test_send

    try:
        test_send.mode_of(task.destination, task.destination.settings_class(**task.settings))
    except (test_send.TestSendError, ValueError) as exc:
        return str(exc)
    return "ok"


def _test_send(
    out: TextIO,
    task: Any,
    settings: Any,
    summary: Any,
    valid: Any,
    workdir: Path,
    testing: Any,
    sent: dict[str, Any],
) -> bool:
    """One task's test send (:mod:`line_exports.test_sends`); True when it failed."""
    from line_exports import test_sends as test_send

    export = "/".join(task.key.path)
    try:
        test_send.mode_of(task.destination, settings)
        found = test_send.sample(
            summary.rows_read, valid, summary.rejects_path, testing.count, testing.seed
        )
        outcome = test_send.run_task(
            export, task.destination, task.resource, settings, found, testing, workdir
        )
    except test_send.TestSendError as exc:
        _say(out, f"    test send refused: {exc}")
        return True
    for line in outcome.lines:
        _say(out, line)
    sent["messages"] += outcome.messages
    sent["written"] += outcome.written
    return outcome.failed


def _instance() -> Any:
    import dagster as dg

    return (
        dg.DagsterInstance.get()
        if os.environ.get("DAGSTER_HOME")
        else dg.DagsterInstance.ephemeral()
    )


def run(ns: argparse.Namespace, out: TextIO | None = None, instance: Any = None) -> int:
    """Run one workflow now (in process), its tasks in order; summary of each task."""
    out = out or sys.stdout  # at call time: a caller may have replaced sys.stdout
    import dagster as dg

    from line_exports.session import SESSION_TIME_TAG

    folder = _folder(ns)
    try:
        workflow = folder.get(ns.workflow)
    except KeyError as exc:
        for error in folder.errors:
            _say(out, f"error: {error}")
        _say(out, f"error: {exc.args[0]}")
        return 2
    from line_exports import run_summary
    from line_exports.cli import COUNT_COLUMNS

    defs = folder.definitions()
    job = run_summary.quiet_job(defs.resolve_job_def(workflow.job_name))
    tags = (
        {SESSION_TIME_TAG: _session(ns, workflow.timezone).isoformat()} if ns.session_time else {}
    )
    # exports, steps and control tasks (expanded where known at load), as digdag runs them
    names = [item.name for item in workflow.order] or [t.name for t in workflow.tasks]
    _say(
        out,
        f"running {workflow.file.name}: {len(names)} task(s) in order: {', '.join(names)}",
    )
    from dagster._utils.interrupts import capture_interrupts

    # Dagster holds a signal outside a step's checkpoints only inside its run iterator; after a
    # user's stop, a second Ctrl-C or SIGTERM while Dagster ends the run, or while the table
    # prints, was a KeyboardInterrupt that killed the command before it said the counts. Held
    # here as Dagster's own docs advise (``ExecuteRunWithPlanIterable``): a step still sees it.
    with capture_interrupts():
        started = time.monotonic()
        instance = instance or _instance()
        result = job.execute_in_process(
            instance=instance,
            tags=tags,
            raise_on_error=False,
            run_config=run_summary.log_config(ns.log_level),
        )
        found = run_summary.outcomes(result, instance)
        failures = {
            e.step_key: e.step_failure_data.error.message.strip()
            if e.step_failure_data.error
            else "failed"
            for e in result.all_events
            if e.event_type == dg.DagsterEventType.STEP_FAILURE
        }
        rows = []
        for task in workflow.tasks:
            outcome = found.get(task.key.to_user_string())
            step = "__".join(task.key.path)
            status = run_summary.task_status(outcome, failures.get(step))  # its own step's
            meta = outcome.metadata if outcome is not None else {}
            rows.append(
                [
                    task.name,
                    status,
                    *(int(meta.get(k, 0) or 0) for _, k in COUNT_COLUMNS),
                ]
            )
        for step, message in failures.items():
            text = run_summary.failure_text(message) if message else "failed"
            _say(out, f"error in {step}: {text}")
        _say(out, "")
        _say(
            out,
            table(["task", "status", *(header for header, _ in COUNT_COLUMNS)], rows),
        )
        checks_failed = run_summary.report(found, out)
        _say(
            out,
            f"\nrun {result.run_id} {'succeeded' if result.success else 'failed'} in {time.monotonic() - started:.1f}s",
        )
        if not result.success:
            return 1
        if checks_failed and ns.strict:
            _say(out, "--strict: a check failed, exit code 1")
            return 1
        return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``validate``, ``plan`` and ``run`` to a parent CLI (each sets ``func(ns) -> int``)."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--workflows",
            default=os.environ.get(WORKFLOWS_ENV, "workflows"),
            help=f"folder of .dig files (default ${WORKFLOWS_ENV} or ./workflows)",
        )
        p.add_argument(
            "--connections", help="connections.yaml (default: the one in the workflow folder)"
        )

    p = subparsers.add_parser(
        "validate",
        help="load every workflow and connection and plan each query; report errors with file and line",
    )
    common(p)
    p.add_argument(
        "folder", nargs="?", help="folder of .dig files (the same as --workflows FOLDER)"
    )
    p.set_defaults(func=validate)

    p = subparsers.add_parser(
        "plan", help="run the queries and validation; show what would be sent (sends nothing)"
    )
    common(p)
    p.add_argument("workflow", nargs="*", help="workflow names (default: all)")
    p.add_argument(
        "--session-time", help="ISO time the queries see as ${session_time} (default: now)"
    )
    p.add_argument("--preview", type=int, default=3, help="valid rows to show per task (0: none)")
    p.add_argument(
        "--test-send",
        type=int,
        metavar="N",
        help="send what N sampled real rows would get to the --to testers instead (LINE "
        "messages), or write a <name>__test audience/segment of them (LINE audience, MAAC, "
        "LinkedIn); never recorded as a delivery",
    )
    p.add_argument("--to", metavar="ID[,ID...]", help="--test-send: testers' LINE user IDs")
    p.add_argument("--seed", type=int, help="--test-send: the sample's random seed (printed)")
    p.set_defaults(func=plan)

    p = subparsers.add_parser("run", help="run one workflow now, outside the daemon")
    common(p)
    p.add_argument("workflow", help="workflow name (file name without .dig)")
    p.add_argument(
        "--session-time", help="ISO time the queries see as ${session_time} (default: now)"
    )
    p.add_argument(
        "--log-level", default="INFO", help="Dagster log level for progress lines (default INFO)"
    )
    p.add_argument(
        "--strict", action="store_true", help="exit 1 when a check fails (e.g. reject_rate)"
    )
    p.set_defaults(func=run)
