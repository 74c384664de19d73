"""The example workflow folder as a Dagster code location (the Python form of defs.yaml)."""

from pathlib import Path

from line_exports import load_workflows

defs = load_workflows(Path(__file__).parent)
