"""Where things are: the embedded defaults' files, and Python files loaded by path.

Everything local lives under one data folder (git-ignored) so a clone stays clean:
``$LINE_EXPORTS_HOME`` if set, else ``./data`` relative to the working directory.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType


def data_dir() -> Path:
    """The folder for the embedded DuckDB file, spools, ledgers and rejects (created ``0700``)."""
    from line_exports.private_files import private_dir

    # It holds personal data (ledger, spools, rejects, DuckDB): owner-only, 0700.
    return private_dir(Path(os.environ.get("LINE_EXPORTS_HOME", "data")).resolve())


def default_duckdb_path() -> Path:
    """The embedded DuckDB database that holds the sample tables and landed webhook events."""
    return data_dir() / "line_exports.duckdb"


def load_module(path: Path, name: str, *, reuse: bool = True) -> ModuleType:
    """The Python file at ``path`` as module ``name`` (a definitions file is not in a package).

    With ``reuse`` a module already loaded under ``name`` in this process is returned as is.
    """
    if reuse and name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load Python code from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
