"""line_exports: Treasure Data's LINE-family result exports as Dagster assets, jobs and schedules.

The public names below are imported on first use (PEP 562 ``__getattr__``), so importing a
light part of the package (the webhook receiver, the sandbox) does not load Dagster, pandas,
DuckDB and the destinations (about 375 MiB and seconds per process). ``from line_exports
import X`` works as before for every name in ``__all__``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "AnyOf": "line_exports.rules",
    "Column": "line_exports.rules",
    "DeliveryReport": "line_exports.destination",
    "Destination": "line_exports.destination",
    "ExportRun": "line_exports.destination",
    "ExportSettings": "line_exports.destination",
    "LineConversionResource": "line_exports.destinations.line_conversion",
    "LineConversionSettings": "line_exports.destinations.line_conversion",
    "LineMessagingResource": "line_exports.destinations.line_messaging",
    "LineMessagingSettings": "line_exports.destinations.line_messaging",
    "LinkedInResource": "line_exports.destinations.linkedin",
    "LinkedInSettings": "line_exports.destinations.linkedin",
    "MaacResource": "line_exports.destinations.maac",
    "MaacSettings": "line_exports.destinations.maac",
    "RuleSet": "line_exports.rules",
    "SqlSource": "line_exports.sources",
    "ValidRows": "line_exports.destination",
    "build_export": "line_exports.export",
    "build_export_job": "line_exports.export",
    "get_destination": "line_exports.destinations",
    "load_workflows": "line_exports.workflows",
    "validate": "line_exports.rules",
}

__all__ = [
    "AnyOf",
    "Column",
    "DeliveryReport",
    "Destination",
    "ExportRun",
    "ExportSettings",
    "LineConversionResource",
    "LineConversionSettings",
    "LineMessagingResource",
    "LineMessagingSettings",
    "LinkedInResource",
    "LinkedInSettings",
    "MaacResource",
    "MaacSettings",
    "RuleSet",
    "SqlSource",
    "ValidRows",
    "build_export",
    "build_export_job",
    "get_destination",
    "load_workflows",
    "validate",
]

if TYPE_CHECKING:  # what type checkers and IDEs see: the eager imports
    from line_exports.destination import (
        DeliveryReport,
        Destination,
        ExportRun,
        ExportSettings,
        ValidRows,
    )
    from line_exports.destinations import get_destination
    from line_exports.destinations.line_conversion import (
        LineConversionResource,
        LineConversionSettings,
    )
    from line_exports.destinations.line_messaging import (
        LineMessagingResource,
        LineMessagingSettings,
    )
    from line_exports.destinations.linkedin import LinkedInResource, LinkedInSettings
    from line_exports.destinations.maac import MaacResource, MaacSettings
    from line_exports.export import build_export, build_export_job
    from line_exports.rules import AnyOf, Column, RuleSet, validate
    from line_exports.sources import SqlSource
    from line_exports.workflows import load_workflows


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use (then cached in this module)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'line_exports' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
