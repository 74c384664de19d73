"""digdag-style ``.dig`` workflows (``td>`` + ``result_settings``) as Dagster jobs and schedules."""

from line_exports.workflows.component import WorkflowsComponent
from line_exports.workflows.connections import load_connections, parse_td_result
from line_exports.workflows.errors import WorkflowError, WorkflowErrors
from line_exports.workflows.loader import Workflow, WorkflowFolder, load_folder, load_workflows
from line_exports.workflows.schedules import WorkflowSchedule, parse_cron, parse_schedule

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
