"""Results back for workflows: each ``td>`` export task gets what :mod:`line_exports.results_back`
gives an export declared in Python, on by default, with no change to the ``.dig`` file.

Settings, in the task's ``result_settings`` next to the destination's own (values known at load:
no run variables):

======================  ======================================================  =========
setting                 meaning (``build_results_back``'s keyword)              default
======================  ======================================================  =========
``results_back``        ``false``: no results back for this task                ``true``
``results_back_days``   daily pulls after each send, 0..30 (``days``)           14
``line_statistics``     LINE: per-unit statistics of ``custom_aggregation_units``  ``false``
``min_match_rate``      ``match_rate`` fails below this share, 0..1             0.3
``min_volume_ratio``    ``volume`` fails below this share of the last send      0.5
``segment_ready_hours`` ``segment_ready`` fails when a LinkedIn segment is not   48
                        READY this long after creation
======================  ======================================================  =========

Export tasks inside a control whose value reads the run (``for_each>``/``if>``/... expanded
when it runs, :mod:`.control`) run inside one asset: they get no results back (there is no
export asset of their own to observe); the loader logs that once per such control.
Workflows are never partitioned, so the builder's refusal of partitioned exports never applies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import dagster as dg

from line_exports.results_back import ResultsBackSettings, build_results_back
from line_exports.workflows.errors import WorkflowError

log = logging.getLogger("line_exports.workflows")

SWITCH = "results_back"
SETTINGS: dict[str, str] = {
    "results_back_days": "days",
    "line_statistics": "line_statistics",
    "min_match_rate": "min_match_rate",
    "min_volume_ratio": "min_volume_ratio",
    "segment_ready_hours": "segment_ready_hours",
}
"""``result_settings`` name -> :class:`ResultsBackSettings` field."""
NAMES = (SWITCH, *SETTINGS)


def take_settings(
    raw: Mapping[str, Any],
    text: Callable[[str, Any], Any],
    file: Path,
    task: str,
    lines: Callable[[str], int | None],
) -> tuple[ResultsBackSettings | None, dict[str, Any]]:
    """Split the task's raw settings into its results-back settings (None: turned off) and the
    destination's own. ``text(setting, value)`` fills ``${...}`` known at load.

    Raises :class:`WorkflowError` naming the setting and its line for a bad value."""
    rest = {k: v for k, v in raw.items() if str(k) not in NAMES}
    given: dict[str, Any] = {}
    for name in NAMES:
        if name not in raw or raw[name] is None:
            continue
        setting = f"result_settings.{name}"
        value = text(setting, raw[name])
        try:
            given[name] = _typed(name, value)
        except ValueError as exc:
            raise WorkflowError(
                file, str(exc), task=task, setting=setting, line=lines(name)
            ) from None
    if given.pop(SWITCH, True) is False:
        return None, rest
    try:
        settings = ResultsBackSettings(**{SETTINGS[k]: v for k, v in given.items()})
    except ValueError as exc:
        field = str(exc).split(" ", 1)[0]
        name = next((k for k, f in SETTINGS.items() if f == field), "results_back_days")
        message = str(exc).replace(field, name, 1)
        raise WorkflowError(
            file, message, task=task, setting=f"result_settings.{name}", line=lines(name)
        ) from None
    return settings, rest


def _typed(name: str, value: Any) -> Any:
    if name in (SWITCH, "line_statistics"):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(f"{value!r} is not true or false")
    if name == "results_back_days":
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"{value!r} is not a whole number of days")
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a whole number of days") from None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number") from None


def for_export(
    export: dg.AssetsDefinition,
    settings: ResultsBackSettings,
    resource_key: str,
    clock: Callable[[], float] = time.time,
) -> dg.Definitions:
    """The builder's checks, job and sensor for one workflow export asset."""
    return build_results_back(export, **asdict(settings), resource_key=resource_key, clock=clock)


def note_skipped(control: Any) -> None:
    """Log why the exports of a run-time control get no results back (once per control)."""
    if control.resources:
        log.info(
            "%s +%s (%s): its export tasks run inside one asset, expanded when it runs; "
            "they get no results back (give the value at load to make each its own asset)",
            control.file,
            control.name,
            control.op,
        )
