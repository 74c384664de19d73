"""PostgreSQL ranges, multiranges, composites and arrays of the database's own types are ``type``
rejects, shown as PostgreSQL prints them, as built-in arrays already were (NOTE-values "Left").

psycopg knows only the built-in types: an enum's or a domain's array (``{sad,ok}``), a
composite (``(1,"x y")``) and a user-defined range (``[1.5,2.5)``) arrived as text and were sent
as if they were text; a built-in range (``int4range``, ``tstzrange``) or multirange arrived as a
psycopg ``Range`` and was sent as its Python text. A real PostgreSQL server, a real export over
HTTP to the CAPI sandbox; each expected value is PostgreSQL's own ``v::text``.
"""

from __future__ import annotations

import sqlalchemy as sa

from line_exports.sandbox import SandboxServer
from line_exports_tests.test_texts_rejects_times import _warehouse_rejects

COMPOUND, NESTED = "is a range, multirange or composite", "is a LIST, STRUCT, MAP or UNION"
VALUES = {  # expression: the reason's words
    "array['sad', 'ok']::mood[]": NESTED,
    "array[1, 2]::posint[]": NESTED,
    "row(1, 'x y')::pair": COMPOUND,
    "array[row(1, 'a')::pair]": NESTED,
    "'[1.5,2.5)'::floatrange": COMPOUND,
    "int4range(1, 5)": COMPOUND,
    "'{[1,3),[5,7)}'::int4multirange": COMPOUND,
    "tstzrange('2026-01-01', '2026-02-01')": COMPOUND,
}


def test_postgres_ranges_composites_and_user_type_arrays_are_type_rejects(
    sandbox_server: SandboxServer, postgres_url: str
) -> None:
    engine = sa.create_engine(postgres_url)
    printed = {}
    with engine.begin() as conn:
        conn.exec_driver_sql("create type mood as enum ('sad', 'ok')")
        conn.exec_driver_sql("create domain posint as integer check (value > 0)")
        conn.exec_driver_sql("create type pair as (a int, b text)")
        conn.exec_driver_sql("create type floatrange as range (subtype = float8)")
        for i, expr in enumerate(VALUES):
            conn.exec_driver_sql(
                f"create table c{i} as select * from (values (0, {expr}), (1, null),"
                " (2, null)) v(n, v)"
            )
            printed[i] = conn.exec_driver_sql(f"select v::text from c{i} where n = 0").scalar()
    engine.dispose()
    for i, words in enumerate(VALUES.values()):
        rejects, sent = _warehouse_rejects(sandbox_server, postgres_url, f"c{i}", f"pc{i}", "UTC")
        assert list(rejects) == [1] and rejects[1]["rule"] == "type", (i, rejects)
        assert words in rejects[1]["message"] and rejects[1]["value"] == printed[i], rejects[1]
        assert sent == ["k1", "k2"], i
