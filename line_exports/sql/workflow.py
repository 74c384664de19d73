"""A workflow task's query translated for its source, with errors located in the workflow.

Task options (or ``_export``ed, as digdag passes operator parameters down):

- ``engine: presto | trino | hive`` (TD's): the dialect the query is written in (presto);
- ``translate_sql: false``: the query is already in the source's own dialect; run it as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from line_exports.sql.dialect import (
    Translation,
    TranslationError,
    check_as_written,
    dialect_of_url,
    read_dialect,
    translate,
)
from line_exports.workflows.errors import WorkflowError

OPTIONS = ("engine", "translate_sql")


def _flag(value: Any, file: Path, task: str, line: int | None) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise WorkflowError(
        file, f"{value!r} is not true or false", task=task, setting="translate_sql", line=line
    )


def translate_task(
    sql: str,
    *,
    options: dict[str, Any],
    source_url: Any,
    file: Path,
    task: str,
    query_file: Path | None,
    line: int | None,
) -> Translation | None:
    """``sql`` in the source's dialect, or None when ``translate_sql`` is false (its TD calls
    are still checked: :func:`.dialect.check_as_written`).

    ``options`` holds the task's ``engine`` / ``translate_sql`` (with their lines under
    ``<name>_line``). Raises :class:`WorkflowError` naming the query file and line and the
    construct that has no equivalent.
    """
    as_written = not _flag(
        options.get("translate_sql", True), file, task, options.get("translate_sql_line")
    )
    try:
        read = read_dialect(None if as_written else options.get("engine"))
    except ValueError as exc:
        raise WorkflowError(
            file, str(exc), task=task, setting="engine", line=options.get("engine_line")
        ) from None
    try:
        write = dialect_of_url(source_url)
    except ValueError as exc:
        raise WorkflowError(file, str(exc), task=task, setting="source.url", line=line) from None
    try:
        if as_written:
            check_as_written(sql, write)
            return None
        return translate(sql, read=read, write=write)
    except TranslationError as exc:
        hint = (
            f" (from {read} to {write}; translate_sql: false runs the query as written)"
            if exc.dialect
            else ""
        )
        if query_file is not None:
            task_at = f"{file}:{line}" if line else str(file)
            raise WorkflowError(
                query_file,
                f"{exc.message}{hint}; the task's td> is at {task_at}",
                task=task,
                setting="td>",
                line=exc.line,
            ) from None
        where = f" (query line {exc.line})" if exc.line else ""
        raise WorkflowError(
            file, f"{exc.message}{where}{hint}", task=task, setting="query", line=line
        ) from None
