"""The workflow folder as a Dagster component, so a ``defs.yaml`` is all a project needs::

type: line_exports.workflows.WorkflowsComponent
attributes:
  path: .            # the folder with the .dig files, relative to defs.yaml
  allowed_env: [SHOP_A_*]             # optional: more variables the folder may read
  allowed_hosts: [proxy.corp.example] # optional: more hosts its destinations may reach
  external_access: false              # optional: DuckDB file/network access for its SQL

The grants are the deployment's: a ``defs.yaml`` kept outside the team's folder (or reviewed
like deployment code) is where they belong; nothing inside the folder can widen them.
"""

from __future__ import annotations

import dagster as dg

from line_exports.workflows.loader import load_workflows
from line_exports.workflows.trust import TrustPolicy


class WorkflowsComponent(dg.Component, dg.Resolvable, dg.Model):
    """Every ``.dig`` workflow of a folder as jobs, assets and schedules."""

    path: str = "."
    """Folder of ``.dig`` files, relative to the ``defs.yaml``."""
    connections: str | None = None
    """``connections.yaml`` to use (default: the one in the folder)."""
    strict: bool = False
    """Fail the code location on any broken workflow instead of loading the others."""
    allowed_env: list[str] = []
    """``fnmatch`` patterns of environment variables the folder may read, beyond each
    destination's own ``<TYPE>_*`` (and ``WAREHOUSE_URL`` for the source)."""
    allowed_hosts: list[str] = []
    """Hosts (``host`` or ``host:port``) destinations may reach beyond their official hosts
    and loopback; HTTPS unless loopback."""
    external_access: bool = False
    """Let the folder's SQL read/write files, ATTACH and load extensions in the embedded
    DuckDB (only for a folder as trusted as the deployment)."""

    def policy(self) -> TrustPolicy:
        return TrustPolicy.of(self.allowed_env, self.allowed_hosts, self.external_access)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        folder = (context.path / self.path).resolve()
        connections = (context.path / self.connections).resolve() if self.connections else None
        policy = self.policy()
        return load_workflows(
            folder,
            connections=connections,
            strict=self.strict,
            allowed_env=policy.allowed_env,
            allowed_hosts=policy.allowed_hosts,
            external_access=policy.external_access,
        )
