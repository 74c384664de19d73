"""What an operator module gives :mod:`.operators`: its options, how it parses and runs.

An operator lives in its own module (:mod:`.ddl`, :mod:`.wait`, :mod:`.mail`) and exports one
:class:`OperatorSpec`; :data:`line_exports.workflows.operators.EXTRA` registers it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Parse = Callable[[Any, Any, str, dict[str, Any], Any], dict[str, Any]]
"""``parse(parser, body, label, variables, scope) -> params``; raises ``WorkflowError``."""
Run = Callable[[Any, Any, Callable[[str], str], Any], dict[str, Any]]
"""``run(step, context, fill, source) -> metadata``; ``fill`` renders a run-time ``${...}``."""


@dataclass(frozen=True)
class OperatorSpec:
    name: str
    """The operator as written: ``td_ddl>``."""
    kind: str
    """The step kind: ``td_ddl``."""
    keys: tuple[str, ...]
    """Its options (besides the operator, ``_export``, ``_retry``, ``_error``)."""
    parse: Parse
    run: Run
    kinds: frozenset[str] = frozenset({"python"})
    """Dagster asset kinds shown in the UI."""
    needs_source: bool = False
    """Does it run SQL on the workflow folder's source?"""
    refused: Mapping[str, str] = field(default_factory=dict)
    """digdag options refused here, with the reason."""
    what: str = ""
    """A short description for the asset."""
