"""Where the embedded defaults keep their files.

Everything local lives under one data folder (git-ignored) so a clone stays clean:
``$LINE_EXPORTS_HOME`` if set, else ``./data`` relative to the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """The folder for the embedded DuckDB file, spools, ledgers and rejects (created on use)."""
    path = Path(os.environ.get("LINE_EXPORTS_HOME", "data")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_duckdb_path() -> Path:
    """The embedded DuckDB database that holds the sample tables and landed webhook events."""
    return data_dir() / "line_exports.duckdb"
