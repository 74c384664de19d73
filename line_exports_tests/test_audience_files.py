"""Reading the spool back and LINE audience upload files: flat memory, same rows, same bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from line_exports import SqlSource, build_export
from line_exports.destination import ValidRows
from line_exports.destinations import line_messaging
from line_exports.destinations.line_messaging import LineMessagingResource, id_files
from line_exports.export import Spool
from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.line_messaging import store_of

BY_FILE = "/v2/bot/audienceGroup/upload/byFile"


def user(n: int) -> str:
    return "U" + f"{n:032x}"


def spool(tmp_path: Path, rows: int, chunk: int) -> ValidRows:
    """A spool as an export writes it: one row group per validated chunk."""
    writer = Spool(tmp_path / "valid.parquet")
    for start in range(0, rows, chunk):
        numbers = range(start + 1, min(start + chunk, rows) + 1)
        writer.write(pd.DataFrame({"_row_number": list(numbers), "id": [user(n) for n in numbers]}))
    return writer.close()


@pytest.mark.parametrize("size", [1, 7, 700, 1000, 2500, 10_000])
def test_batches_hold_exactly_size_rows_in_order(tmp_path: Path, size: int) -> None:
    rows = spool(tmp_path, 2345, chunk=700)
    batches = list(rows.batches(size, columns=["_row_number", "id"]))
    assert [len(b) for b in batches[:-1]] == [size] * (len(batches) - 1)
    assert 0 < len(batches[-1]) <= size
    whole = pd.concat(batches)
    assert whole["_row_number"].tolist() == list(range(1, 2346))
    assert whole["id"].tolist() == [user(n) for n in range(1, 2346)]
    assert all(list(b.index) == list(range(len(b))) for b in batches)


def test_empty_spool_has_no_batches(tmp_path: Path) -> None:
    assert list(ValidRows(tmp_path / "missing.parquet", 0).batches(10)) == []


def test_id_files_split_the_ids_one_per_line(tmp_path: Path) -> None:
    rows = spool(tmp_path, 2345, chunk=700)
    files = []
    for part in id_files(rows, 1000, tmp_path):
        data = part.path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == part.digest
        assert data.count(b"\n") == part.count
        files.append(data)
        part.path.unlink()  # as the export does, before the next file is written
    assert [f.count(b"\n") for f in files] == [1000, 1000, 345]
    assert b"".join(files) == "".join(user(n) + "\n" for n in range(1, 2346)).encode()


def test_audience_files_are_streamed_retried_and_removed(
    sandbox_server: SandboxServer, line_exports_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(line_messaging.audience, "AUDIENCE_FILE_MAX_IDS", 5_000)
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path=BY_FILE, method="PUT", status=500, times=1))
    query = "SELECT 'U' || lpad(printf('%x', range), 32, '0') AS id FROM range(12000)"
    asset = build_export(
        "big_audience",
        destination="line_messaging",
        query=query,
        retry_policy=None,
        settings={"target": "audience", "audience_name": "files", "initial_retry_wait": 1},
    )
    resource = LineMessagingResource(base_url=sandbox_server.url, poll_seconds=0.1)
    result = dg.materialize(
        [asset], resources={"sql_source": SqlSource(), "line_messaging": resource}
    )
    meta = {
        k: getattr(v, "value", v)
        for k, v in result.asset_materializations_for_node("big_audience")[0].metadata.items()
    }
    assert (
        meta["upload_requests"] == 3 and meta["retries"] == 1 and meta["audience_count"] == 12_000
    )
    # The retried add re-sent its whole file from disk.
    assert sandbox.count("POST", BY_FILE) == 1 and sandbox.count("PUT", BY_FILE) == 3
    assert store_of(sandbox).audiences[meta["audience_id"]].ids == {user(n) for n in range(12_000)}
    assert not list((line_exports_home / "runs").rglob("audience-*.txt"))
