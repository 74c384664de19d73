"""Files holding personal data are owner-only (0600, in 0700 folders) whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from line_exports import MaacResource, SqlSource, build_export, paths
from line_exports.ledger import Ledger
from line_exports.private_files import private_dir, private_file, private_opener
from line_exports.sandbox import SandboxServer


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The common default umask 022 (group and others may read what is created)."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _loose(home: Path) -> list[str]:
    """Everything under ``home`` (and itself) that group or others may read, write or enter."""
    found = []
    for path in [home, *home.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            found.append(f"{path.relative_to(home.parent)} {oct(mode)}")
    return found


def test_an_export_leaves_only_owner_only_files(
    sandbox_server: SandboxServer, line_exports_home: Path, open_umask: None
) -> None:
    """The sample DuckDB file, the ledger (and its WAL), the run folder and the rejects CSV of a
    real export run: nothing under the data folder is readable by anyone but its owner."""
    asset = build_export(
        "maac_members",
        destination="maac",
        query="select * from line_members",
        settings={"data_object": "members", "import_key": "line_uid", "tags": "private"},
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(),
            "maac": MaacResource(base_url=sandbox_server.url, poll_seconds=0.05),
        },
        raise_on_error=False,
    )
    assert result.success
    (event,) = result.asset_materializations_for_node("maac_members")
    rejects = Path(str(event.metadata["rejects_file"].value))
    assert rejects.exists() and rejects.is_relative_to(line_exports_home)
    assert (line_exports_home / "ledger.sqlite").exists()
    assert paths.default_duckdb_path().exists()
    assert _loose(line_exports_home) == []


def test_helpers_create_private_and_tighten_existing(tmp_path: Path, open_umask: None) -> None:
    folder = private_dir(tmp_path / "a" / "b" / "c")
    for level in (tmp_path / "a", tmp_path / "a" / "b", folder):
        assert stat.S_IMODE(level.stat().st_mode) == 0o700
    old = tmp_path / "old.sqlite"
    old.write_text("")
    os.chmod(old, 0o644)
    private_file(old)  # a file from before: tightened
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    with open(folder / "rows.csv", "a", opener=private_opener) as out:
        out.write("line_uid\n")
    assert stat.S_IMODE((folder / "rows.csv").stat().st_mode) == 0o600
    ledger = Ledger(tmp_path / "x" / "ledger.sqlite")
    ledger.scope("e", "s").record("k", {"v": 1})
    assert _loose(tmp_path / "x") == []
    ledger.close()
