"""digdag operators around the exports: ``td>`` as a SQL step, ``echo>`` and ``fail>`` here;
``td_ddl>`` (:mod:`.ddl`), ``wait>`` (:mod:`.wait`) and ``mail>`` (:mod:`.mail`) registered in
:data:`EXTRA`; ``_error:`` tasks run by :mod:`.on_error`.

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

from line_exports.workflows import ddl, mail, wait
from line_exports.workflows.errors import WorkflowError
from line_exports.workflows.opspec import OperatorSpec
from line_exports.workflows.retry import for_dagster
from line_exports.workflows.variables import RunScope, render_for_run, run_variables

EXTRA: dict[str, OperatorSpec] = {spec.name: spec for spec in (ddl.SPEC, wait.SPEC, mail.SPEC)}
"""Operators with their own module: name -> how to parse and run them."""
SUPPORTED = ("td>", "echo>", "fail>", *EXTRA)


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
    "_error",
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
    """Is this task a SQL step or another operator (``echo>``, ``fail>``, :data:`EXTRA`)
    rather than an export?"""
    if any(k in body for k in ("echo>", "fail>", *EXTRA)):
        return True
    has_query = "td>" in body or "query" in body
    return has_query and not any(k in body for k in EXPORT_KEYS)


@dataclass
class Step:
    """One non-export task."""

    kind: str
    """``sql``, ``echo``, ``fail``, or an :data:`EXTRA` operator's kind (``td_ddl``...)."""
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
    params: dict[str, Any] = field(default_factory=dict)
    """An :data:`EXTRA` operator's parsed options."""

    def fill(self, context: Any, text: str, extra: Mapping[str, Any] | None = None) -> str:
        """``text`` with the run's variables (``extra``: e.g. ``error`` in an _error task)."""
        if "${" not in text:
            return text
        static = {**self.variables, **extra} if extra else self.variables
        return render_for_run(text, static, run_variables(context, self.scope), self.scope.zone)


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
    kinds = [k for k in SUPPORTED if k in body]
    if "query" in body and "td>" not in kinds:
        kinds.insert(0, "td>")
    if len(kinds) != 1:
        parser.errors.append(
            WorkflowError(
                file, f"a task runs one operator; found {', '.join(kinds)}", task=label, line=line
            )
        )
        return None
    spec = EXTRA.get(kinds[0])
    allowed = (
        STEP_KEYS
        if kinds[0] == "td>"
        else (kinds[0], *(spec.keys if spec else ()), "_export", "_retry", "_error")
    )
    for key in body:
        if key not in allowed:
            refused = spec.refused.get(str(key)) if spec else None
            hint = (
                f"{key} is not supported by {kinds[0]} here: {refused}"
                if refused
                else f"the {key} operator is not supported here (supported: {supported()})"
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
    kind = spec.kind if spec else {"td>": "sql", "echo>": "echo", "fail>": "fail"}[kinds[0]]
    key = dg.AssetKey([parser.name, *(_identifier(p) for p in path)])
    tables: dict[str, str | None] = {"create_table": None, "insert_into": None}
    params: dict[str, Any] = {}
    text = ""
    try:
        if spec is not None:
            params = spec.parse(parser, body, label, variables, scope)
        elif kind == "sql":
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
        params=params,
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
    if is_embedded(source):
        return _run_duckdb(source, sql, step, table, scheduled_time)
    return _run_sqlalchemy(source, sql, step, table)


def _first_row(frame: Any) -> dict[str, Any]:
    if frame.empty:
        return {}
    return json.loads(frame.head(1).to_json(orient="records", date_format="iso"))[0]


def embedded_connection(source: Any, scheduled_time: int) -> Any:
    """A DuckDB connection to the source's embedded file under the folder's SQL guard, with TD's
    functions (``TD_SCHEDULED_TIME`` = ``scheduled_time``)."""
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
    except Exception:
        con.close()
        raise
    return con


def is_embedded(source: Any) -> bool:
    """Does the source run SQL in the embedded DuckDB file (else a SQLAlchemy warehouse)?"""
    return not source.url or source.url.startswith("duckdb:///")


def _insert_duckdb(con: Any, table: str, sql: str) -> None:
    """TD's insert_into: append by column name, adding the query's columns the table lacks
    (a TD table's schema grows with what is written, e.g. one td_ddl> created)."""
    have = {
        r[0].lower()
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
            [table.split(".")[-1]],
        ).fetchall()
    }
    for name, kind, *_ in con.execute(f"DESCRIBE {sql}").fetchall():
        if name.lower() not in have:
            con.execute(f'ALTER TABLE {_quote(table)} ADD COLUMN "{name}" {kind}')
    con.execute(f"INSERT INTO {_quote(table)} BY NAME {sql}")


def _run_duckdb(
    source: Any, sql: str, step: Step, table: str | None, scheduled_time: int
) -> dict[str, Any]:
    con = embedded_connection(source, scheduled_time)
    try:
        meta: dict[str, Any] = {}
        if step.create_table and table:
            con.execute(f"CREATE OR REPLACE TABLE {_quote(table)} AS {sql}")
        elif step.insert_into and table:
            exists = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                [table.split(".")[-1]],
            ).fetchone()
            if exists and exists[0]:
                _insert_duckdb(con, table, sql)
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


def execute_step(
    step: Step, context: Any, source: Any, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Run one step (``context``: a Dagster context, or what :mod:`.on_error` gives: ``run``,
    ``instance``, ``log``); returns its metadata. ``extra``: variables beside the run's."""
    fill: Callable[[str], str] = lambda text: step.fill(context, text, extra)  # noqa: E731
    spec = EXTRA.get(f"{step.kind}>")
    if spec is not None:
        return spec.run(step, context, fill, source)
    text = fill(step.text)
    if step.kind == "echo":
        context.log.info(text)
        return {"message": text}
    if step.kind == "fail":
        raise dg.Failure(
            description=f"{step.scope.task_name}: fail>: {text}",
            metadata={ERROR_MESSAGE: text},
            allow_retries=False,
        )
    from line_exports.session import session_time

    table_template = step.create_table or step.insert_into
    table = fill(table_template) if table_template else None
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


ERROR_MESSAGE = "line_exports/error_message"
"""Failure metadata: the message digdag gives ``${error.message}`` (fail>'s own text)."""


def run_step(step: Step, context: Any, source_key: str) -> dict[str, Any]:
    """Run one step in ``context``'s run (its own asset, or a control task running it at run
    time); returns its materialization metadata. ``fail>`` and SQL errors raise
    :class:`dagster.Failure` naming the task."""
    spec = EXTRA.get(f"{step.kind}>")
    needs_source = step.kind == "sql" or bool(spec and spec.needs_source)
    source = getattr(context.resources, source_key) if needs_source else None
    return execute_step(step, context, source)


def build_step(
    step: Step, workflow_name: str, source_key: str, description: str
) -> dg.AssetsDefinition:
    """The asset of one step, in digdag's order via ``deps``."""
    spec = EXTRA.get(f"{step.kind}>")
    needs_source = step.kind == "sql" or bool(spec and spec.needs_source)

    def compute(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata=run_step(step, context, source_key))

    compute.__name__ = "_".join(step.key.path)
    compute.__annotations__.update(context=dg.AssetExecutionContext, return_=None)
    compute.__annotations__.pop("return_")
    compute.__annotations__["return"] = dg.MaterializeResult
    kinds = (
        set(spec.kinds)
        if spec
        else {"sql": {"duckdb"}, "echo": {"python"}, "fail": {"python"}}[step.kind]
    )
    return dg.asset(
        key=step.key,
        deps=step.deps or None,
        required_resource_keys={source_key} if needs_source else set(),
        group_name=workflow_name,
        description=description,
        retry_policy=for_dagster(step.retry),
        kinds=kinds,
        tags={"line_exports/workflow": workflow_name},
    )(compute)


def run_last_results(context: dg.AssetExecutionContext) -> Callable[[], dict[str, Any] | None]:
    return lambda: last_results(context)
