"""digdag operators around the exports: ``td>`` as a SQL step, ``echo>`` and ``fail>``.

* ``td>: q.sql`` (or ``query:``) with no ``result_connection``/``result_settings``/``result``
  is a SQL step, as TD runs it (docs.treasuredata.com, "td> operator"): ``create_table: t``
  replaces table ``t`` with the query's rows, ``insert_into: t`` appends them (creating ``t``
  when missing), ``store_last_results: true`` keeps the first row as ``${td.last_results.COL}``
  for the tasks after it, else the statement just runs. On the embedded engine it runs in the
  DuckDB file (TD's functions available), on a warehouse in it (SQLAlchemy, one transaction).
* ``echo>: message`` writes the message to the run's log.
* ``fail>: message`` fails the run with the message (digdag's ``fail>``).

Their ``${...}`` are filled per run like the exports' (:mod:`.variables`). Any other operator
is refused at load, naming it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from line_exports.workflows.errors import WorkflowError
from line_exports.workflows.variables import RunScope, render_for_run, run_variables

SUPPORTED = ("td>", "echo>", "fail>")


def supported() -> str:
    """Every operator a task may run, for error messages (these and :mod:`.control`'s)."""
    from line_exports.workflows.control import OPERATORS

    return ", ".join((*SUPPORTED, *OPERATORS))


# td>'s engine options, shared by SQL steps and export tasks (the loader's TASK_KEYS).
TD_QUERY_OPTIONS = (
    "engine",
    "priority",
    "job_retry",
    "engine_version",
    "presto_pool_name",
    "hive_pool_name",
    "translate_sql",
)
STEP_KEYS = (
    "td>",
    "query",
    "database",
    "create_table",
    "insert_into",
    "store_last_results",
    *TD_QUERY_OPTIONS,
    "echo>",
    "fail>",
    "_export",
    "_retry",
)
EXPORT_KEYS = ("result_connection", "result_settings", "result")
LAST_RESULTS = "line_exports/last_results"
"""Metadata key of a store_last_results step's first row (JSON)."""
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?")


class AnyRow(dict):
    """``td.last_results`` at load: the columns are not known until the step runs."""

    opaque = True

    def get(self, key: Any, default: Any = None) -> Any:
        return "0"

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: Any) -> Any:
        return "0"


NOT_YET = {
    "_error": "_error: (tasks to run when the workflow fails) is not supported yet; "
    "a failed run is in Dagster's run list, and a run-failure sensor can notify",
    "_check": "_check: (tasks to run after a task succeeds) is not supported yet; "
    "add them as the next tasks",
    "sla": "sla: is not supported yet; Dagster's run monitoring or a freshness check can "
    "alert on late runs",
}
"""Options the loader would otherwise ignore: refused, naming them."""


def not_supported(body: Mapping[str, Any], file: Path, task: str | None) -> list[WorkflowError]:
    """Errors for each option of ``body`` that is not supported yet (:data:`NOT_YET`)."""
    return [
        WorkflowError(file, NOT_YET[key], task=task, setting=key, line=body.line_of(key))
        for key in body
        if key in NOT_YET
    ]


def is_step(body: Mapping[str, Any]) -> bool:
    """Is this task a SQL step, ``echo>`` or ``fail>`` rather than an export?"""
    if "echo>" in body or "fail>" in body:
        return True
    has_query = "td>" in body or "query" in body
    return has_query and not any(k in body for k in EXPORT_KEYS)


@dataclass
class Step:
    """One non-export task."""

    kind: str
    """``sql``, ``echo`` or ``fail``."""
    name: str
    key: dg.AssetKey
    line: int | None
    text: str
    """The SQL, or the message."""
    scope: RunScope
    variables: dict[str, Any]
    create_table: str | None = None
    insert_into: str | None = None
    store_last_results: bool = False
    deps: list[dg.AssetKey] = field(default_factory=list)
    retry: dg.RetryPolicy | None = None

    def fill(self, context: dg.AssetExecutionContext, text: str) -> str:
        if "${" not in text:
            return text
        return render_for_run(
            text, self.variables, run_variables(context, self.scope), self.scope.zone
        )


def parse_step(
    parser: Any,
    body: Mapping[str, Any],
    path: list[str],
    label: str,
    line: int | None,
    variables: dict[str, Any],
    deps: list[dg.AssetKey],
    retry: dg.RetryPolicy | None,
) -> Step | None:
    """A :class:`Step` from a task body, or None with the errors added to ``parser.errors``."""
    file: Path = parser.file
    count = len(parser.errors)
    kinds = [k for k in ("td>", "echo>", "fail>") if k in body]
    if "query" in body and "td>" not in kinds:
        kinds.insert(0, "td>")
    if len(kinds) != 1:
        parser.errors.append(
            WorkflowError(
                file, f"a task runs one operator; found {', '.join(kinds)}", task=label, line=line
            )
        )
        return None
    allowed = STEP_KEYS if kinds[0] == "td>" else (kinds[0], "_export", "_retry")
    for key in body:
        if key not in allowed:
            hint = (
                f"the {key} operator is not supported here (supported: {supported()})"
                if str(key).endswith(">")
                else f"{key!r} is not an option of {kinds[0]} here"
            )
            parser.errors.append(
                WorkflowError(file, hint, task=label, setting=str(key), line=body.line_of(key))
            )
    if len(parser.errors) != count:
        return None
    stem = getattr(parser, "stem", file.stem)  # a call>ed file's tasks carry the caller's name
    scope = RunScope(parser.timezone, parser.schedule, "+" + "+".join([stem, *path]))
    parser.scope = scope
    kind = {"td>": "sql", "echo>": "echo", "fail>": "fail"}[kinds[0]]
    key = dg.AssetKey([parser.name, *(_identifier(p) for p in path)])
    tables: dict[str, str | None] = {"create_table": None, "insert_into": None}
    try:
        if kind == "sql":
            text, _query_file = parser._query(body, label, variables)
            for option in tables:
                if body.get(option) is not None:
                    tables[option] = _table(parser, body, option, label, variables, scope)
            if tables["create_table"] and tables["insert_into"]:
                raise WorkflowError(
                    file,
                    "give create_table or insert_into, not both",
                    task=label,
                    setting="insert_into",
                    line=body.line_of("insert_into"),
                )
        else:
            from line_exports.workflows.digfile import interpolate

            raw = body.get(kinds[0])
            text = interpolate(
                "" if raw is None else str(raw),
                variables,
                file=file,
                task=label,
                setting=kinds[0],
                line=body.line_of(kinds[0]),
                scope=scope,
                defer=True,
            )
    except WorkflowError as exc:
        parser.errors.append(exc)
        return None
    store = body.get("store_last_results", False)
    if store not in (True, False, "true", "false", "first"):
        parser.errors.append(
            WorkflowError(
                file,
                f"store_last_results {store!r} must be true or false",
                task=label,
                setting="store_last_results",
                line=body.line_of("store_last_results"),
            )
        )
        return None
    step = Step(
        kind=kind,
        name=".".join(path),
        key=key,
        line=line,
        text=text,
        scope=scope,
        variables=dict(variables),
        create_table=tables["create_table"],
        insert_into=tables["insert_into"],
        store_last_results=store in (True, "true", "first"),
        deps=list(deps),
        retry=retry,
    )
    taken = {t.key for t in parser.tasks} | {s.key for s in parser.steps}
    if step.key in taken:
        parser.errors.append(
            WorkflowError(
                file,
                f"two tasks map to the asset {key.to_user_string()}; rename one",
                task=label,
                line=line,
            )
        )
        return None
    parser.steps.append(step)
    return step


def _table(parser: Any, body: Any, option: str, label: str, variables: Any, scope: RunScope) -> str:
    from line_exports.workflows.digfile import interpolate

    name = interpolate(
        str(body[option]),
        variables,
        file=parser.file,
        task=label,
        setting=option,
        line=body.line_of(option),
        scope=scope,
        defer=True,
    )
    sample = render_for_run(name, variables, scope.sample(), scope.zone) if "${" in name else name
    if not TABLE_NAME.fullmatch(sample):
        raise WorkflowError(
            parser.file,
            f"{option} {name!r} is not a table name (letters, digits, _; optionally schema.table)",
            task=label,
            setting=option,
            line=body.line_of(option),
        )
    return name


def _identifier(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", text).strip("_") or "task"
    return f"w_{name}" if name[0].isdigit() else name


def with_last_results(variables: Mapping[str, Any]) -> dict[str, Any]:
    """Variables after a store_last_results step: ``td.last_results`` is known at run time."""
    td = variables.get("td")
    td = dict(td) if isinstance(td, Mapping) else {}
    td["last_results"] = AnyRow()
    return {**variables, "td": td}


def last_results(context: dg.AssetExecutionContext) -> dict[str, Any] | None:
    """The first row the latest store_last_results step of this run (or the run it
    re-executes) kept, as digdag's ``td.last_results``."""
    instance = context.instance
    run_id: str | None = context.run.run_id
    while run_id:
        records = instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
        for record in reversed(records):
            materialization = record.event_log_entry.asset_materialization
            if materialization is not None and LAST_RESULTS in materialization.metadata:
                return dict(materialization.metadata[LAST_RESULTS].value)  # type: ignore[arg-type]
        run = instance.get_run_by_id(run_id)
        run_id = run.parent_run_id if run is not None else None
    return None


def _quote(name: str) -> str:
    return ".".join(f'"{part}"' for part in name.split("."))


def run_sql(
    source: Any, sql: str, step: Step, table: str | None, scheduled_time: int
) -> dict[str, Any]:
    """Run a SQL step on the source; returns metadata (rows, table, first row)."""
    embedded = not source.url or source.url.startswith("duckdb:///")
    if embedded:
        return _run_duckdb(source, sql, step, table, scheduled_time)
    return _run_sqlalchemy(source, sql, step, table)


def _first_row(frame: Any) -> dict[str, Any]:
    if frame.empty:
        return {}
    return json.loads(frame.head(1).to_json(orient="records", date_format="iso"))[0]


def _run_duckdb(
    source: Any, sql: str, step: Step, table: str | None, scheduled_time: int
) -> dict[str, Any]:
    import duckdb

    from line_exports.sources import ensure_sample_tables, sandboxed_config
    from line_exports.sql.td_functions import register_td_functions

    path = Path(source.url.removeprefix("duckdb:///")) if source.url else source.embedded_path()
    if not source.url and source.sample_tables:
        ensure_sample_tables(path)
    # The folder's SQL runs under the same guard as its export queries: no files, network,
    # extensions or settings unless the deployment allowed external access.
    guard = sandboxed_config(bool(getattr(source, "external_access", False)))
    con = duckdb.connect(str(path), config=guard)
    try:
        register_td_functions(con, scheduled_time)
        meta: dict[str, Any] = {}
        if step.create_table and table:
            con.execute(f"CREATE OR REPLACE TABLE {_quote(table)} AS {sql}")
        elif step.insert_into and table:
            exists = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                [table.split(".")[-1]],
            ).fetchone()
            if exists and exists[0]:
                con.execute(f"INSERT INTO {_quote(table)} {sql}")
            else:
                con.execute(f"CREATE TABLE {_quote(table)} AS {sql}")
        elif step.store_last_results:
            meta["last_results"] = _first_row(con.execute(sql).fetch_df())
        else:
            con.execute(sql)
        if table:
            meta["table"] = table
            count = con.execute(f"SELECT count(*) FROM {_quote(table)}").fetchone()
            meta["table_rows"] = int(count[0]) if count else 0
        return meta
    finally:
        con.close()


def _run_sqlalchemy(source: Any, sql: str, step: Step, table: str | None) -> dict[str, Any]:
    import pandas as pd
    import sqlalchemy as sa

    engine = sa.create_engine(source.url)
    try:
        with engine.begin() as conn:
            meta: dict[str, Any] = {}
            if step.create_table and table:
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {_quote(table)}"))
                conn.execute(sa.text(f"CREATE TABLE {_quote(table)} AS {sql}"))
            elif step.insert_into and table:
                if sa.inspect(conn).has_table(table.split(".")[-1]):
                    conn.execute(sa.text(f"INSERT INTO {_quote(table)} {sql}"))
                else:
                    conn.execute(sa.text(f"CREATE TABLE {_quote(table)} AS {sql}"))
            elif step.store_last_results:
                meta["last_results"] = _first_row(pd.read_sql_query(sa.text(sql), conn))
            else:
                conn.execute(sa.text(sql))
            if table:
                meta["table"] = table
                meta["table_rows"] = int(
                    conn.execute(sa.text(f"SELECT count(*) FROM {_quote(table)}")).scalar() or 0
                )
            return meta
    finally:
        engine.dispose()


def run_step(step: Step, context: Any, source_key: str) -> dict[str, Any]:
    """Run one step in ``context``'s run (its own asset, or a control task running it at run
    time); returns its materialization metadata. ``fail>`` and SQL errors raise
    :class:`dagster.Failure` naming the task."""
    text = step.fill(context, step.text)
    if step.kind == "echo":
        context.log.info(text)
        return {"message": text}
    if step.kind == "fail":
        raise dg.Failure(description=f"{step.scope.task_name}: fail>: {text}", allow_retries=False)
    from line_exports.session import session_time

    table_template = step.create_table or step.insert_into
    table = step.fill(context, table_template) if table_template else None
    source = getattr(context.resources, source_key)
    moment = session_time(context, step.scope.timezone)
    try:
        meta = run_sql(source, text, step, table, int(moment.timestamp()))
    except Exception as exc:  # noqa: BLE001 - the database's own message, named
        raise dg.Failure(
            description=f"{step.scope.task_name}: td>: {type(exc).__name__}: {exc}",
            allow_retries=False,
        ) from None
    metadata: dict[str, Any] = {"query": dg.MetadataValue.md(f"```sql\n{text}\n```")}
    if "last_results" in meta:
        metadata[LAST_RESULTS] = dg.MetadataValue.json(meta["last_results"])
        context.log.info(f"td.last_results = {json.dumps(meta['last_results'])}")
    if table:
        metadata["table"] = table
        metadata["table_rows"] = meta["table_rows"]
    return metadata


def build_step(
    step: Step, workflow_name: str, source_key: str, description: str
) -> dg.AssetsDefinition:
    """The asset of one step, in digdag's order via ``deps``."""

    def compute(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata=run_step(step, context, source_key))

    compute.__name__ = "_".join(step.key.path)
    compute.__annotations__.update(context=dg.AssetExecutionContext, return_=None)
    compute.__annotations__.pop("return_")
    compute.__annotations__["return"] = dg.MaterializeResult
    kinds = {"sql": {"duckdb"}, "echo": {"python"}, "fail": {"python"}}[step.kind]
    return dg.asset(
        key=step.key,
        deps=step.deps or None,
        required_resource_keys={source_key} if step.kind == "sql" else set(),
        group_name=workflow_name,
        description=description,
        retry_policy=step.retry,
        kinds=kinds,
        tags={"line_exports/workflow": workflow_name},
    )(compute)


def run_last_results(context: dg.AssetExecutionContext) -> Callable[[], dict[str, Any] | None]:
    return lambda: last_results(context)
