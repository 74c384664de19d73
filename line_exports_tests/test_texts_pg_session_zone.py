"""A PostgreSQL TIMESTAMPTZ near 0001-01-01 / 9999-12-31 is judged in the export's zone, never
in the database's session ``TimeZone`` (VERIFY-13j J6).

psycopg builds each TIMESTAMPTZ in the session's zone (a server or database default the export
does not set). ``9999-12-31 20:00+00`` is year 10000 in Asia/Tokyo and ``0001-01-01 00:00+00``
year 1 BC in America/New_York, so with such a ``TimeZone`` they were ``type`` rejects although
the export's zone (UTC) writes them in years 9999 and 1; with ``TimeZone`` UTC they were sent.
Now the same rows give the same texts and rejects whatever the session's zone. A real
PostgreSQL server (``postgres_url``), read through ``SqlSource``.
"""

from __future__ import annotations

import time

import pandas as pd
import pytest
import sqlalchemy as sa

from line_exports import SqlSource
from line_exports.destinations import get_destination
from line_exports.rules import ROW_NUMBER, validate

VALUES = [
    "'9999-12-31 20:00:00+00'",
    "'0001-01-01 00:00:00+00'",
    "'9999-12-31 23:59:59.999999+00'",
    "'0001-01-01 00:00:00+14'",  # 0000-12-31 10:00 UTC: BC in any zone
    "'2026-06-01 10:00:00.123456+05:45'",
    "null",
]
SESSION_ZONES = ["UTC", "Asia/Tokyo", "America/New_York", "Pacific/Kiritimati", "Etc/GMT+12"]
EXPECTED = {  # export zone: (texts by row, rejected rows with the year named)
    "UTC": (
        {
            1: "9999-12-31T20:00:00+00:00",
            2: "0001-01-01T00:00:00+00:00",
            3: "9999-12-31T23:59:59.999999+00:00",
            5: "2026-06-01T04:15:00.123456+00:00",
        },
        {4: "year 1 BC"},
    ),
    "America/Los_Angeles": (
        {
            1: "9999-12-31T12:00:00-08:00",
            2: "0001-01-01T00:00:00+00:00",  # LMT (-07:52:58) has seconds: written in UTC
            3: "9999-12-31T15:59:59.999999-08:00",
            5: "2026-05-31T21:15:00.123456-07:00",
        },
        {4: "year 1 BC"},
    ),
    "Asia/Tokyo": (
        {2: "0001-01-01T00:00:00+00:00", 5: "2026-06-01T13:15:00.123456+09:00"},
        {1: "year 10000", 3: "year 10000", 4: "year 1 BC"},
    ),
}


def _outcome(url: str, table: str, zone: str) -> tuple[dict[int, str], dict[int, str]]:
    """(title by row, the year each ``type`` reject names by row) of ``table``'s ``v`` as a
    CAPI event's ``title``, exported in ``zone``."""
    dest = get_destination("line_conversion")
    config = dest.settings_class()
    texts: dict[int, str] = {}
    rejects: dict[int, str] = {}
    offset = 0
    for chunk in SqlSource(url=url).read_chunks(f"select * from {table} order by n", 2):
        frame = chunk.rename(columns={"v": "title"}).assign(
            deduplication_key=[f"k{n}" for n in chunk["n"]],
            event_type="conversion",
            source_type="web",
            event_timestamp=int(time.time()),
            external_id="x",
        )
        checked = validate(frame, dest.ruleset(config), config.model_dump(), offset, zone)
        offset += len(frame)
        for row, title in zip(checked.valid[ROW_NUMBER], checked.valid["title"], strict=True):
            if not pd.isna(title):
                texts[int(row)] = str(title)
        for _, reject in checked.rejects.iterrows():
            assert reject["rule"] == "type", reject.to_dict()
            year = str(reject["message"]).split(" in year ", 1)[1].split(":")[0]
            rejects[int(reject[ROW_NUMBER])] = "year " + year
    return texts, rejects


@pytest.mark.parametrize("session_zone", SESSION_ZONES)
def test_a_timestamptz_at_the_calendar_ends_is_judged_in_the_export_zone_not_the_session_zone(
    postgres_url: str, session_zone: str
) -> None:
    table = f"t{time.monotonic_ns()}"
    rows = ", ".join(f"({n}, {v}::timestamptz)" for n, v in enumerate(VALUES, start=1))
    engine = sa.create_engine(postgres_url)
    database = engine.url.database
    with engine.begin() as conn:
        conn.exec_driver_sql(f"create table {table} as select * from (values {rows}) v(n, v)")
        conn.exec_driver_sql(f"alter database \"{database}\" set timezone to '{session_zone}'")
    engine.dispose()
    check = sa.create_engine(postgres_url)
    with check.connect() as conn:  # a new session: the database's TimeZone is in force
        assert conn.exec_driver_sql("show timezone").scalar() == session_zone
    check.dispose()
    for zone, expected in EXPECTED.items():
        assert _outcome(postgres_url, table, zone) == expected, (session_zone, zone)
