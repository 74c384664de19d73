"""PostgreSQL TIME and TIMETZ reach the API as PostgreSQL writes them, ``24:00:00`` included
(VERIFY-13e F10): it is a valid ``time`` ("Date/Time Types",
https://www.postgresql.org/docs/current/datatype-datetime.html: "24:00:00" is the end of the
day), which ``datetime.time`` cannot hold, so psycopg's "can't parse time" failed the whole run
and was blamed on the query. A real PostgreSQL (conftest's ``postgres_url``), a real export run to the sandbox over HTTP.
"""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from line_exports import LineConversionResource, SqlSource, build_export
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_conversion import events_of

NOW = int(time.time()) - 60

# row: (PostgreSQL TIME, TIMETZ) -> the title and referrer CAPI receives (PostgreSQL's own
# text; offsets as +hh:mm, as DuckDB's TIMETZ)
TIMES = {
    1: ("'24:00:00'", "'24:00:00+09'", "24:00:00", "24:00:00+09:00"),
    2: ("null", "null", None, None),
    3: ("'12:34:56.5'", "'12:34:56.123456-05:30'", "12:34:56.5", "12:34:56.123456-05:30"),
    4: ("'00:00:00'", "'23:59:59.999999+14'", "00:00:00", "23:59:59.999999+14:00"),
}


def test_postgres_time_24_00_is_sent_as_postgresql_writes_it(
    postgres_url: str,
    sandbox_server: SandboxServer,
    tmp_path: Path,
) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        rows = ", ".join(f"({n}, {t}::time, {tz}::timetz)" for n, (t, tz, *_) in TIMES.items())
        conn.exec_driver_sql(f"create table typed as select * from (values {rows}) v(n, t, tz)")
    engine.dispose()
    asset = build_export(
        "pg_times",
        destination="line_conversion",
        query=f"""select 'k' || n as deduplication_key, 'conversion' as event_type,
                  'web' as source_type, {NOW} as event_timestamp, 'x' || n as external_id,
                  t as title, tz as referrer from typed order by n""",
        settings={"initial_retry_wait": 1, "max_retry": 1},
        retry_policy=None,
    )
    result = dg.materialize(
        [asset],
        resources={
            "sql_source": SqlSource(url=postgres_url, chunk_size=4),
            "line_conversion": LineConversionResource(
                line_tag_id="pgtimes", base_url=sandbox_server.url
            ),
        },
        raise_on_error=False,
    )
    assert result.success, [str(e.event_specific_data) for e in result.all_events if e.is_failure]
    events = events_of(sandbox_server.sandbox, "pgtimes")
    web = {int(k[1:]): e.get("web", {}) for k, e in events.items()}
    got = {n: (w.get("title"), w.get("referrer")) for n, w in web.items()}
    assert got == {n: (t, tz) for n, (_, _, t, tz) in TIMES.items()}
    meta = result.asset_materializations_for_node("pg_times")[0].metadata
    assert meta["rows_accepted"].value == len(TIMES) and meta["rows_rejected"].value == 0
