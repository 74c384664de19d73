"""digdag-style ``.dig`` workflows (``td>`` + ``result_settings``) as Dagster jobs and schedules.

Public names are imported on first use (PEP 562), so a light submodule (``workflows.trust``,
read by the webhook receiver) does not load Dagster with the package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "Workflow": "line_exports.workflows.loader",
    "WorkflowError": "line_exports.workflows.errors",
    "WorkflowErrors": "line_exports.workflows.errors",
    "WorkflowFolder": "line_exports.workflows.loader",
    "WorkflowSchedule": "line_exports.workflows.schedules",
    "WorkflowsComponent": "line_exports.workflows.component",
    "load_connections": "line_exports.workflows.connections",
    "load_folder": "line_exports.workflows.loader",
    "load_workflows": "line_exports.workflows.loader",
    "parse_cron": "line_exports.workflows.schedules",
    "parse_schedule": "line_exports.workflows.schedules",
    "parse_td_result": "line_exports.workflows.connections",
}

__all__ = [
    "Workflow",
    "WorkflowError",
    "WorkflowErrors",
    "WorkflowFolder",
    "WorkflowSchedule",
    "WorkflowsComponent",
    "load_connections",
    "load_folder",
    "load_workflows",
    "parse_cron",
    "parse_schedule",
    "parse_td_result",
]

if TYPE_CHECKING:
    from line_exports.workflows.component import WorkflowsComponent
    from line_exports.workflows.connections import load_connections, parse_td_result
    from line_exports.workflows.errors import WorkflowError, WorkflowErrors
    from line_exports.workflows.loader import (
        Workflow,
        WorkflowFolder,
        load_folder,
        load_workflows,
    )
    from line_exports.workflows.schedules import WorkflowSchedule, parse_cron, parse_schedule


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use (then cached in this module)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'line_exports.workflows' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
