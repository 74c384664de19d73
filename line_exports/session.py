"""A run's session: the time it stands for and the identity a re-run shares with it.

Like digdag's ``session_time`` (and TD's ``TD_SCHEDULED_TIME()``), a scheduled run stands for
its tick, not for when it happened to start; a manual run stands for its start. Re-executions of
a run share its root run id, so they resume the same ledger scope instead of sending again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import dagster as dg

SCHEDULED_TIME_TAG = "dagster/scheduled_execution_time"
SESSION_TIME_TAG = "line_exports/session_time"
"""Set by schedules that run after their tick (TD's "delay execution"): the tick itself."""
LAST_EXECUTED_TAG = "line_exports/last_executed_session_time"
"""Set by a schedule: the session its previous run stood for (digdag's last_executed_session_time)."""
SESSION_VARIABLE_NAMES = (
    "session_time",
    "session_date",
    "session_date_compact",
    "session_local_time",
    "session_tz_offset",
    "session_unixtime",
)
SESSION_VARIABLE = re.compile(r"\$\{(session_[a-z_]+|partition_key)\}")


def session_time(context: dg.AssetExecutionContext, tz: str = "UTC") -> datetime:
    """The run's tick (a delayed schedule's, else Dagster's), else its creation time, in ``tz``."""
    tags = context.run.tags
    stamp = tags.get(SESSION_TIME_TAG) or tags.get(SCHEDULED_TIME_TAG)
    if stamp:
        moment = datetime.fromisoformat(stamp)
    else:
        record = context.instance.get_run_record_by_id(context.run.run_id)
        moment = record.create_timestamp if record else datetime.now(timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(ZoneInfo(tz))


def session_variables(moment: datetime) -> dict[str, str]:
    """digdag's session variables for ``moment`` (its own timezone)."""
    offset = moment.strftime("%z")
    return {
        "session_time": moment.isoformat(timespec="seconds"),
        "session_date": moment.strftime("%Y-%m-%d"),
        "session_date_compact": moment.strftime("%Y%m%d"),
        "session_local_time": moment.strftime("%Y-%m-%d %H:%M:%S"),
        "session_tz_offset": offset,
        "session_unixtime": str(int(moment.timestamp())),
    }


def render_session_variables(sql: str, variables: Mapping[str, str]) -> str:
    """Fill ``${session_*}`` (and ``${partition_key}`` in a partitioned export) in a query;
    any other ``${...}`` was resolved at load time."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            if name == "partition_key":
                raise ValueError(
                    "${partition_key} is only filled in a partitioned export (partitions_def=)"
                )
            raise ValueError(f"unknown session variable ${{{name}}} in query")
        return variables[name]

    return SESSION_VARIABLE.sub(fill, sql)


def run_scope(context: dg.AssetExecutionContext) -> str:
    """The ledger scope of this run: its tick, partition, or the run it re-executes."""
    parts = []
    if context.has_partition_key:
        parts.append(f"partition={context.partition_key}")
    stamp = context.run.tags.get(SESSION_TIME_TAG) or context.run.tags.get(SCHEDULED_TIME_TAG)
    if stamp:
        parts.append(f"tick={stamp}")
    else:
        parts.append(f"run={context.run.root_run_id or context.run.run_id}")
    return ";".join(parts)
