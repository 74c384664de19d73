"""line_exports: Treasure Data's LINE-family result exports as Dagster assets, jobs and schedules."""

from line_exports.destination import (
    DeliveryReport,
    Destination,
    ExportRun,
    ExportSettings,
    ValidRows,
)
from line_exports.destinations import get_destination
from line_exports.destinations.line_conversion import LineConversionResource, LineConversionSettings
from line_exports.destinations.line_messaging import LineMessagingResource, LineMessagingSettings
from line_exports.destinations.linkedin import LinkedInResource, LinkedInSettings
from line_exports.destinations.maac import MaacResource, MaacSettings
from line_exports.export import build_export, build_export_job
from line_exports.rules import AnyOf, Column, RuleSet, validate
from line_exports.sources import SqlSource
from line_exports.workflows import load_workflows

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
