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


ANONYMOUS = [  # records written in the query (type record): no table can hold one
    "row(1, 'x y')",
    "row(1, '2026-06-01'::date, array[1])",
    "(select row(g, 'a,b') from generate_series(1, 1) g)",
]


def test_postgres_anonymous_records_are_shown_as_postgres_prints_them(
    sandbox_server: SandboxServer, postgres_url: str
) -> None:
    """VERIFY-13p P3: ``row(1, 'x y')`` in the query was a reject called "a LIST, STRUCT, MAP or
    UNION" and shown as Python's list ``['1', 'x y']``; it is a composite (row) value, shown
    ``(1,"x y")`` as PostgreSQL prints it (and an array of them is an array's reject)."""
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        printed = [conn.exec_driver_sql(f"select ({expr})::text").scalar() for expr in ANONYMOUS]
        array = conn.exec_driver_sql("select array[row(1, 'x y')]::text").scalar()
    engine.dispose()
    assert printed[0] == '(1,"x y")' and array == '{"(1,\\"x y\\")"}', (printed, array)
    cases = [(expr, COMPOUND, text) for expr, text in zip(ANONYMOUS, printed, strict=True)]
    cases.append(("array[row(1, 'x y')]", NESTED, array))
    for i, (expr, words, text) in enumerate(cases):
        table = f"(select n, case when n = 0 then {expr} end as v from generate_series(0, 2) n) s"
        rejects, sent = _warehouse_rejects(sandbox_server, postgres_url, table, f"pr{i}", "UTC")
        assert list(rejects) == [1] and rejects[1]["rule"] == "type", (expr, rejects)
        assert words in rejects[1]["message"] and rejects[1]["value"] == text, rejects[1]
        assert sent == ["k1", "k2"], expr
