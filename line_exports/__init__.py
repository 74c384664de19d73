"""line_exports: Treasure Data's LINE-family result exports as Dagster assets, jobs and schedules."""

from line_exports.destination import (
    DeliveryReport,
    Destination,
    ExportRun,
    ExportSettings,
    ValidRows,
)
from line_exports.destinations import destinations, get_destination
from line_exports.destinations.maac import MaacResource, MaacSettings
from line_exports.export import build_export, build_export_job
from line_exports.rules import AnyOf, Column, RuleSet, validate
from line_exports.sources import SqlSource

__all__ = [
    "AnyOf",
    "Column",
    "DeliveryReport",
    "Destination",
    "ExportRun",
    "ExportSettings",
    "MaacResource",
    "MaacSettings",
    "RuleSet",
    "SqlSource",
    "ValidRows",
    "build_export",
    "build_export_job",
    "destinations",
    "get_destination",
    "validate",
]
