"""A MAAC ``birthday`` at local midnight is its date whatever its neighbours (VERIFY-13j J9).

README (MAAC): "``birthday`` (ISO date; a timestamp at local midnight is its date)". A column
of only datetimes kept that rule, but an upstream object column that also held a ``date``, a
string, or naive and aware datetimes together wrote each datetime as a full timestamp, an
``iso_date`` reject. A real Dagster run of an upstream asset over HTTP to the MAAC sandbox.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import pytest

from line_exports import MaacResource, build_export
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.maac import store_of
from line_exports_tests.test_outcomes import COUNTER, adds_up

TOKYO = ZoneInfo("Asia/Tokyo")
CASES: dict[str, list[Any]] = {
    "date and datetime": [dt.date(2000, 1, 1), dt.datetime(2000, 1, 2)],
    "string and datetime": ["2000-01-01", dt.datetime(2000, 1, 2)],
    "naive and aware": [dt.datetime(2000, 1, 1), dt.datetime(2000, 1, 2, tzinfo=TOKYO)],
    "number and pd.Timestamp": [pd.Timestamp("2000-01-01", tz=TOKYO), pd.Timestamp("2000-01-02")],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_midnight_birthday_is_its_date_next_to_other_kinds_of_values(
    sandbox_server: SandboxServer, tmp_path: Path, case: str
) -> None:
    uids = [f"U{n:032x}" for n in range(0xB0, 0xB4)]
    # Two midnights in Asia/Tokyo, then a 10:00 (not a date: rejected) and a missing value.
    values = [*CASES[case], dt.datetime(2000, 1, 3, 10, 0), None]
    if case.startswith("number"):
        values[3] = 5  # a number next to them, not a birthday: rejected too
    name = f"birthday_up_{next(COUNTER)}"

    @dg.asset(name=name)
    def upstream() -> pd.DataFrame:
        return pd.DataFrame({"line_uid": uids, "birthday": pd.Series(values, dtype=object)})

    export = build_export(
        f"birthday_mixed_{next(COUNTER)}",
        destination="maac",
        upstream=name,
        timezone="Asia/Tokyo",
        settings={"data_object": "members", "import_key": "line_uid", "tags": "t"},
        retry_policy=None,
    )
    result = dg.materialize(
        [upstream, export],
        resources={"maac": MaacResource(base_url=sandbox_server.url, poll_seconds=0.05)},
        raise_on_error=False,
    )
    mats = result.asset_materializations_for_node(export.key.path[-1])
    meta = {k: getattr(v, "value", v) for k, v in mats[0].metadata.items()}
    rejected = 2 if case.startswith("number") else 1
    assert adds_up(meta) and meta["rows_rejected"] == rejected, meta
    assert meta["rejects_by_rule"].get("birthday: iso_date") == rejected, meta
    birthdays = {
        m["line_uid"]: m.get("birthday") for m in store_of(sandbox_server.sandbox).members.values()
    }
    assert birthdays[uids[0]] == "2000-01-01" and birthdays[uids[1]] == "2000-01-02", birthdays
    assert uids[2] not in birthdays
