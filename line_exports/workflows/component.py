"""The workflow folder as a Dagster component, so a ``defs.yaml`` is all a project needs::

type: line_exports.workflows.WorkflowsComponent
attributes:
  path: .            # the folder with the .dig files, relative to defs.yaml
"""

from __future__ import annotations

import dagster as dg

from line_exports.workflows.loader import load_workflows


class WorkflowsComponent(dg.Component, dg.Resolvable, dg.Model):
    """Every ``.dig`` workflow of a folder as jobs, assets and schedules."""

    path: str = "."
    """Folder of ``.dig`` files, relative to the ``defs.yaml``."""
    connections: str | None = None
    """``connections.yaml`` to use (default: the one in the folder)."""
    strict: bool = False
    """Fail the code location on any broken workflow instead of loading the others."""

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        folder = (context.path / self.path).resolve()
        connections = (context.path / self.connections).resolve() if self.connections else None
        return load_workflows(folder, connections=connections, strict=self.strict)
