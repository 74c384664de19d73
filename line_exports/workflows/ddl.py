"""digdag's ``td_ddl>``: create, empty, drop and rename tables, on the folder's SQL source.

Source: digdag-docs ``operators/td_ddl.md``; the order is ``TdDdlOperatorFactory``'s (digdag
0.10): ``drop_databases``, ``create_databases``, ``empty_databases``, then ``drop_tables``,
``create_tables``, ``empty_tables``, ``rename_tables``.

* ``create_tables: [t, ...]``: create each table if it does not exist;
* ``empty_tables: [t, ...]``: create each table, dropping it first if it exists;
* ``drop_tables: [t, ...]``: drop each table if it exists;
* ``rename_tables: [{from: a, to: b}, ...]``: rename ``a`` to ``b``, replacing ``b`` if it
  exists.

A TD table has no columns until rows are written (TD keeps only ``time``), so a created or
emptied table here is ``(time BIGINT)``, and a later ``td>`` with ``insert_into:`` adds the
query's columns as TD does. On the embedded engine the statements run in the DuckDB file; on a
warehouse in it (SQLAlchemy, one transaction). Names take ``${...}`` (filled per run) and are
``table`` or ``schema.table``. ``database:`` names TD's database: the source's own database
is used here, as for ``td>``. The database operations and TD's API options are refused: the
deployment owns the databases and the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from line_exports.workflows.errors import WorkflowError
from line_exports.workflows.opspec import OperatorSpec

TABLE_LISTS = ("drop_tables", "create_tables", "empty_tables")
REFUSED = {
    **{
        name: "a TD database is the source's own database here; the deployment creates and "
        "drops it, not a workflow"
        for name in ("create_databases", "empty_databases", "drop_databases")
    },
    "endpoint": "TD's API endpoint: td_ddl> runs on the folder's SQL source here",
    "use_ssl": "TD's API option: td_ddl> runs on the folder's SQL source here",
}


def _parse(parser: Any, body: Any, label: str, variables: Any, scope: Any) -> dict[str, Any]:
    from line_exports.workflows.operators import _table

    def names(option: str) -> list[str]:
        value = body.get(option)
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise WorkflowError(
                parser.file,
                f"{option} must be a list of table names",
                task=label,
                setting=option,
                line=body.line_of(option),
            )
        return [_name(parser, body, option, v, label, variables, scope, _table) for v in value]

    params: dict[str, Any] = {option: names(option) for option in TABLE_LISTS}
    renames = body.get("rename_tables") or []
    if not isinstance(renames, list) or not all(
        isinstance(r, Mapping) and set(r) == {"from", "to"} for r in renames
    ):
        raise WorkflowError(
            parser.file,
            "rename_tables must be a list of {from: old_name, to: new_name}",
            task=label,
            setting="rename_tables",
            line=body.line_of("rename_tables"),
        )
    params["rename_tables"] = [
        {
            end: _name(parser, body, "rename_tables", str(r[end]), label, variables, scope, _table)
            for end in ("from", "to")
        }
        for r in renames
    ]
    if not any(params.values()):
        raise WorkflowError(
            parser.file,
            "td_ddl> needs create_tables, empty_tables, drop_tables or rename_tables",
            task=label,
            setting="td_ddl>",
            line=body.line_of("td_ddl>"),
        )
    return params


class _One(dict):
    """One value of a list option, seen as its own option (for :func:`operators._table`)."""

    def __init__(self, option: str, value: str, line: int | None) -> None:
        super().__init__({option: value})
        self.line = line

    def line_of(self, key: Any) -> int | None:
        return self.line


def _name(
    parser: Any,
    body: Any,
    option: str,
    value: str,
    label: str,
    variables: Any,
    scope: Any,
    table: Any,
) -> str:
    return table(parser, _One(option, value, body.line_of(option)), option, label, variables, scope)


def statements(params: Mapping[str, Any], quote: Any, fill: Any) -> list[tuple[str, str]]:
    """``(what, SQL)`` pairs in digdag's order, names filled for the run."""
    out: list[tuple[str, str]] = []
    for name in params["drop_tables"]:
        out.append((f"drop {fill(name)}", f"DROP TABLE IF EXISTS {quote(fill(name))}"))
    for name in params["create_tables"]:
        out.append(
            (
                f"create {fill(name)}",
                f"CREATE TABLE IF NOT EXISTS {quote(fill(name))} (time BIGINT)",
            )
        )
    for name in params["empty_tables"]:
        table = quote(fill(name))
        out.append((f"empty {fill(name)}", f"DROP TABLE IF EXISTS {table}"))
        out.append((f"empty {fill(name)}", f"CREATE TABLE {table} (time BIGINT)"))
    for pair in params["rename_tables"]:
        old, new = fill(pair["from"]), fill(pair["to"])
        out.append((f"rename {old} to {new}", f"DROP TABLE IF EXISTS {quote(new)}"))
        # ALTER TABLE ... RENAME TO takes a bare name (the table stays in its schema)
        out.append(
            (
                f"rename {old} to {new}",
                f"ALTER TABLE {quote(old)} RENAME TO {quote(new.split('.')[-1])}",
            )
        )
    return out


def _run(step: Any, context: Any, fill: Any, source: Any) -> dict[str, Any]:
    import dagster as dg

    from line_exports.session import session_time
    from line_exports.workflows.operators import _quote, embedded_connection, is_embedded

    plan = statements(step.params, _quote, fill)
    done: list[str] = []
    try:
        if is_embedded(source):
            moment = session_time(context, step.scope.timezone)
            con = embedded_connection(source, int(moment.timestamp()))
            try:
                con.execute("BEGIN")
                for what, sql in plan:
                    con.execute(sql)
                    done.append(what)
                con.execute("COMMIT")
            finally:
                con.close()
        else:
            import sqlalchemy as sa

            engine = sa.create_engine(source.url)
            try:
                with engine.begin() as conn:
                    for what, sql in plan:
                        conn.execute(sa.text(sql))
                        done.append(what)
            finally:
                engine.dispose()
    except Exception as exc:  # noqa: BLE001 - the database's own message, named
        failed = plan[len(done)][0] if len(done) < len(plan) else "commit"
        raise dg.Failure(
            description=f"{step.scope.task_name}: td_ddl>: {failed}: {type(exc).__name__}: {exc}",
            allow_retries=False,
        ) from None
    steps = list(dict.fromkeys(done))
    context.log.info(f"{step.scope.task_name}: td_ddl>: {', '.join(steps)}")
    return {"operations": steps}


SPEC = OperatorSpec(
    name="td_ddl>",
    kind="td_ddl",
    keys=(*TABLE_LISTS, "rename_tables", "database"),
    parse=_parse,
    run=_run,
    kinds=frozenset({"duckdb"}),
    needs_source=True,
    refused=REFUSED,
    what="td_ddl>",
)
