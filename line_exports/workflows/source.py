"""The query source of workflow tasks: :class:`SqlSource` plus run-time session variables.

A workflow's query keeps ``${session_time}`` and friends as ``${session_time@<timezone>}``
until its run starts; then they are filled from the run's session time: the tick a schedule
tagged it with (which, with a delay, is earlier than the run), else Dagster's scheduled time,
else the time the run was created (a manual run).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
from pydantic import PrivateAttr

from line_exports.session import SCHEDULED_TIME_TAG, session_variables
from line_exports.sources import SqlSource, read_sql_text
from line_exports.workflows.schedules import SESSION_TIME_TAG

RUNTIME_VARIABLE = re.compile(r"\$\{(session_[a-z_]+)@([^}]+)\}")


def run_session_time(tags: dict[str, str], created: datetime | None) -> datetime:
    """The session time of a run from its tags (UTC-aware)."""
    stamp = tags.get(SESSION_TIME_TAG) or tags.get(SCHEDULED_TIME_TAG)
    moment = datetime.fromisoformat(stamp) if stamp else (created or datetime.now(timezone.utc))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def render_runtime_variables(sql: str, moment: datetime) -> str:
    """Fill ``${session_*@tz}`` with the session time seen in that timezone."""

    def fill(match: re.Match[str]) -> str:
        name, tz = match.group(1), match.group(2)
        values = session_variables(moment.astimezone(ZoneInfo(tz)))
        if name not in values:
            raise ValueError(f"unknown session variable ${{{name}}}; known: {', '.join(sorted(values))}")
        return values[name]

    return RUNTIME_VARIABLE.sub(fill, sql)


class WorkflowSqlSource(SqlSource):
    """:class:`SqlSource` that fills workflow session variables from the run it serves."""

    _tags: dict[str, str] = PrivateAttr(default_factory=dict)
    _created: datetime | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run = context.dagster_run
        if run is None:
            return
        self._tags = dict(run.tags)
        instance = context.instance
        record = instance.get_run_record_by_id(run.run_id) if instance is not None else None
        self._created = record.create_timestamp if record else None

    def session_time(self) -> datetime:
        return run_session_time(self._tags, self._created)

    def read_chunks(self, query: str | Path, chunk_size: int | None = None) -> Iterator[pd.DataFrame]:
        sql = render_runtime_variables(read_sql_text(query), self.session_time())
        yield from super().read_chunks(sql, chunk_size)
