"""LinkedIn users: one userId (email, GOOGLE_AID, APPLE_IDFA) is sent once per request and
export, whatever else its rows carry; a later row repeating it is a ``duplicate`` naming the
row that was sent (issue 13: "keys deduplicated after normalization, reported as duplicates,
never sent twice in one request"; VERIFY-13e F11). Real HTTP to the sandbox, append and diff."""

from __future__ import annotations

import csv
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from line_exports import LinkedInResource, SqlSource, build_export
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.linkedin import store_of

GAID = "cdda802e-fb9c-47ad-9794-0794d394c912"
ROWS = [  # (row, email, google_aid, first_name, last_name)
    (1, "ann@example.com", None, "Ann", "Lee"),
    (2, "ANN@example.com", None, "Anne", "Lee"),  # same email, other name
    (3, "ann@example.com", GAID, None, None),  # same email, with a GAID: sent with the GAID
    (4, None, GAID.upper(), None, None),  # the GAID row 3 sent
    (5, None, f" {GAID} ", None, None),  # the GAID row 3 sent
]


@pytest.mark.parametrize("mode", ["append", "diff"])
def test_one_user_id_is_sent_once_and_later_rows_name_the_first(
    sandbox_server: SandboxServer, tmp_path: Path, mode: str
) -> None:
    db = tmp_path / "u.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table t (i int, email text, google_aid text, fn text, ln text)")
        con.executemany("insert into t values (?, ?, ?, ?, ?)", ROWS)
    asset = build_export(
        f"li_ids_{mode}",
        destination="linkedin",
        query="select email, google_aid, fn as first_name, ln as last_name from t order by i",
        settings={
            "ad_account_id": "512345678",
            "segment_name": f"ids_{mode}",
            "sync_mode": mode,
            "ignore_invalid_records": True,
            "initial_retry_wait": 1,
        },
        retry_policy=None,
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{db}"),
            "linkedin": LinkedInResource(api_url=sandbox_server.url, new_segment_wait=0),
        },
        raise_on_error=False,
    )
    assert result.success
    (event,) = result.get_asset_materialization_events()
    meta = {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
    assert (meta["rows_read"], meta["rows_rejected"], meta["rows_accepted"]) == (5, 3, 2)
    with open(meta["rejects_file"], newline="", encoding="utf-8") as f:
        rejects = {int(r["_row_number"]): r["message"] for r in csv.DictReader(f)}
    assert sorted(rejects) == [2, 4, 5], rejects
    assert "repeats row 1" in rejects[2] and "repeats row 3" in rejects[4], rejects
    assert "repeats row 4" in rejects[5], rejects
    # LinkedIn received two elements: row 1's email and row 3's GAID, each once.
    assert store_of(sandbox_server.sandbox).elements_received == 2
