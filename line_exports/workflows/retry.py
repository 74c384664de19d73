"""digdag's ``_retry`` as a Dagster :class:`dagster.RetryPolicy`.

Source: digdag-docs ``workflow_definition.rst`` ("Retrying failed tasks automatically") and
``RetryControl`` (digdag 0.10). digdag takes ``_retry: N`` (a number, or text holding one) or
``_retry: {limit: N, interval: S, interval_type: constant|exponential, max_interval: S}``;
retry ``k`` (0-based) waits ``S`` (constant) or ``S * 2**k`` capped at ``max_interval``
(exponential).

What maps:

* ``N`` / ``limit`` -> ``max_retries`` (exact);
* ``interval`` with ``constant`` (the default) -> ``delay`` (exact);
* ``exponential`` -> ``Backoff.EXPONENTIAL``: Dagster waits ``S * (2**n - 1)`` for retry
  ``n`` (1-based): S, 3S, 7S where digdag waits S, 2S, 4S (never shorter than digdag's);
* ``max_interval``: no Dagster equivalent: refused;
* on a group, digdag retries the whole group from its first task; here each task of the group
  retries by itself with the group's policy (a task's own ``_retry`` wins).

A task failed by a rule no retry can fix (``fail>``, a SQL error) fails at once, as before.

``_retry: 0`` (or ``limit: 0``) is :data:`NO_RETRY`: no step retry, also for a ``td>`` export,
which without ``_retry`` keeps :data:`line_exports.export.DEFAULT_RETRY_POLICY` (2 retries);
it also overrides a group's ``_retry``. :func:`for_dagster` gives Dagster None for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from line_exports.workflows.errors import WorkflowError

KEYS = ("limit", "interval", "interval_type", "max_interval")
NO_RETRY = dg.RetryPolicy(max_retries=0)
"""``_retry: 0``: said, so it wins over a group's policy and an export's default."""


def for_dagster(policy: dg.RetryPolicy | None) -> dg.RetryPolicy | None:
    """``policy`` as an asset's ``retry_policy``: None for :data:`NO_RETRY` (Dagster would
    turn a retryable error into "Exceeded max_retries of 0")."""
    return policy if policy is not None and policy.max_retries > 0 else None


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())  # digdag: Config.get(int) takes text ("${...}" results)
    return None


def retry_policy(
    value: Any, file: Path, task: str | None, line: int | None
) -> dg.RetryPolicy | None:
    """digdag's ``_retry`` (see module doc) -> a RetryPolicy, or a WorkflowError naming it."""

    def error(message: str, setting: str = "_retry") -> WorkflowError:
        return WorkflowError(file, message, task=task, setting=setting, line=line)

    if value is None:
        return None
    limit = _count(value)
    if limit is not None:
        return dg.RetryPolicy(max_retries=limit) if limit > 0 else NO_RETRY
    if not isinstance(value, Mapping):
        raise error("_retry must be a number or {limit: N, interval: seconds}")
    for key in value:
        if key not in KEYS:
            raise error(f"unknown _retry option {key!r} (digdag's: {', '.join(KEYS)})")
    limit = _count(value.get("limit"))
    if limit is None:
        raise error("_retry needs limit: N (a number of retries)", "_retry.limit")
    interval = _count(value.get("interval", 0))
    if interval is None:
        raise error("_retry interval must be a number of seconds", "_retry.interval")
    kind = str(value.get("interval_type", "constant")).lower()
    if kind not in ("constant", "exponential"):
        raise error(
            f"_retry interval_type {value.get('interval_type')!r} must be constant or exponential",
            "_retry.interval_type",
        )
    if "max_interval" in value:
        raise error(
            "_retry max_interval has no Dagster equivalent (its exponential backoff has no cap)",
            "_retry.max_interval",
        )
    if limit == 0:
        return NO_RETRY
    backoff = dg.Backoff.EXPONENTIAL if kind == "exponential" and interval else None
    return dg.RetryPolicy(max_retries=limit, delay=interval or None, backoff=backoff)
