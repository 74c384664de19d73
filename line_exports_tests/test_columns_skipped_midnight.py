"""A naive TIMESTAMP at 00:00:00 is its date even where the zone's DST skips midnight
(VERIFY-13n N7).

README (MAAC): "``birthday`` (ISO date; a timestamp at local midnight is its date)". On a day
whose local midnight DST skips (Asia/Taipei 1975-04-01, Asia/Tokyo 1949-04-03, Africa/Cairo
2024-04-26, America/Havana 2024-03-10, America/Santiago 2024-09-08) a naive midnight was moved
forward to 01:00 as an instant, then judged "not an ISO date"; where the gap is a whole day
(Pacific/Apia skipped 2011-12-30) the midnight was moved to the next midnight and sent as
**2011-12-31**, a wrong birthday. The wall clock the warehouse holds reads midnight: its date
is sent, whatever the zone's DST (a date needs no instant). Another time of that day is still
an ``iso_date`` reject. Real Dagster runs over HTTP to the MAAC sandbox: DuckDB TIMESTAMP
(seconds, microseconds, nanoseconds), upstream ``datetime64`` and Python ``datetime`` objects.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pytest

from line_exports import MaacResource, SqlSource, build_export
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.maac import store_of
from line_exports_tests.test_outcomes import COUNTER, adds_up, outcome_metadata

SKIPPED = {  # a day whose local midnight the zone's DST (or a day's jump) skips
    "Asia/Taipei": "1975-04-01",
    "Asia/Tokyo": "1949-04-03",
    "Africa/Cairo": "2024-04-26",
    "America/Havana": "2024-03-10",
    "America/Santiago": "2024-09-08",
    "Pacific/Apia": "2011-12-30",
}
UIDS = [f"U{n:032x}" for n in range(0xD0, 0xD4)]
SETTINGS = {"data_object": "members", "import_key": "line_uid", "tags": "t"}


def _next_day(day: str) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()


def _birthdays(server: SandboxServer) -> dict[str, Any]:
    members = store_of(server.sandbox).members.values()
    return {m["line_uid"]: m.get("birthday") for m in members}


def _duckdb_run(server: SandboxServer, tmp_path: Path, zone: str, kind: str) -> dict[str, Any]:
    day = SKIPPED[zone]
    path = tmp_path / "b.duckdb"
    rows = [f"{day} 00:00:00", f"{_next_day(day)} 00:00:00", f"{day} 12:00:00", None]
    with duckdb.connect(str(path)) as con:
        con.execute(f"CREATE TABLE m (line_uid VARCHAR, birthday {kind})")
        con.executemany("INSERT INTO m VALUES (?, ?)", list(zip(UIDS, rows, strict=True)))
    export = build_export(
        f"skipped_{next(COUNTER)}",
        destination="maac",
        query="SELECT * FROM m",
        timezone=zone,
        settings=SETTINGS,
        retry_policy=None,
    )
    result = dg.materialize(
        [export],
        resources={
            "sql_source": SqlSource(url=f"duckdb:///{path}"),
            "maac": MaacResource(base_url=server.url, poll_seconds=0.05),
        },
        raise_on_error=False,
    )
    return outcome_metadata(result)


def _check(server: SandboxServer, zone: str, meta: dict[str, Any]) -> None:
    """The skipped midnight and the next one sent as their dates, noon rejected, NULL none."""
    day = SKIPPED[zone]
    assert adds_up(meta) and meta["rows_accepted"] == 3 and meta["rows_rejected"] == 1, meta
    assert meta["rejects_by_rule"] == {"birthday: iso_date": 1}, meta
    birthdays = _birthdays(server)
    assert birthdays[UIDS[0]] == day and birthdays[UIDS[1]] == _next_day(day), birthdays
    assert birthdays[UIDS[3]] is None and UIDS[2] not in birthdays, birthdays


@pytest.mark.parametrize("zone", sorted(SKIPPED))
def test_a_skipped_midnight_timestamp_is_its_date(
    sandbox_server: SandboxServer, tmp_path: Path, zone: str
) -> None:
    _check(sandbox_server, zone, _duckdb_run(sandbox_server, tmp_path, zone, "TIMESTAMP"))


@pytest.mark.parametrize("kind", ["TIMESTAMP_S", "TIMESTAMP_NS"])
def test_a_skipped_midnight_is_its_date_at_every_unit(
    sandbox_server: SandboxServer, tmp_path: Path, kind: str
) -> None:
    meta = _duckdb_run(sandbox_server, tmp_path, "Asia/Taipei", kind)
    _check(sandbox_server, "Asia/Taipei", meta)


@pytest.mark.parametrize("objects", [False, True], ids=["datetime64", "python"])
@pytest.mark.parametrize("zone", ["Asia/Taipei", "Pacific/Apia"])
def test_an_upstream_skipped_midnight_is_its_date(
    sandbox_server: SandboxServer, zone: str, objects: bool
) -> None:
    day = dt.datetime.fromisoformat(SKIPPED[zone])
    held = [day, day + dt.timedelta(days=1), day + dt.timedelta(hours=12), None]
    birthday = (
        pd.Series(held, dtype=object)
        if objects
        else pd.Series(pd.to_datetime(held), dtype="M8[us]")
    )
    name = f"skipped_up_{next(COUNTER)}"

    @dg.asset(name=name)
    def upstream() -> pd.DataFrame:
        return pd.DataFrame({"line_uid": UIDS, "birthday": birthday})

    export = build_export(
        f"skipped_{next(COUNTER)}",
        destination="maac",
        upstream=name,
        timezone=zone,
        settings=SETTINGS,
        retry_policy=None,
    )
    result = dg.materialize(
        [upstream, export],
        resources={"maac": MaacResource(base_url=sandbox_server.url, poll_seconds=0.05)},
        raise_on_error=False,
    )
    mats = result.asset_materializations_for_node(export.key.path[-1])
    _check(sandbox_server, zone, {k: getattr(v, "value", v) for k, v in mats[0].metadata.items()})
