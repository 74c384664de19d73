"""A float's text is one text per value, whatever its chunk holds (VERIFY-13j J10).

A DuckDB DOUBLE 2.0 was sent as ``2`` when every value of its chunk was whole, ``-0.0`` as
``0`` and 1e16 as ``10000000000000000``, and as ``2.0``/``-0.0``/``1e+16`` next to a 2.5: the
same row's text changed with ``chunk_size`` and from run to run, so ``sync_mode: diff`` saw a
change where there was none (or none where there was one). Now a warehouse's DOUBLE is written
as the warehouse writes it (DuckDB's ``x::VARCHAR``, Python's repr: the shortest round trip),
a FLOAT/REAL at single precision by the same rule, and an upstream frame's plain ``float64``
(pandas' integer column with a missing value) decides per value (README "Values travel").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import sqlalchemy as sa

from line_exports import SqlSource
from line_exports.values import to_text
from line_exports_tests.test_values import capi_path, line_push_path

# Rows in this order: the whole numbers share a chunk of 2 with nothing else but each other.
DOUBLES = ["2.5", "2.0", "3.0", "'-0.0'", "1e16", "1e15", "0.1", "1e20", "1e-5", "0.0001", "100.0"]
FLOATS = ["0.1", "2.0", "1e15", "0.0001", "16777217", "3.4e38", "1e-5", "123456.7"]


def _duckdb_texts(tmp: Path, values: list[str], kind: str) -> tuple[Path, list[str]]:
    """A DuckDB file whose table ``t`` holds ``values`` as ``kind`` (column ``v``, row ``n``),
    and DuckDB's own text of each (``v::VARCHAR``)."""
    path = tmp / f"f{time.monotonic_ns()}.duckdb"
    rows = ", ".join(f"({n}, ({v})::{kind})" for n, v in enumerate(values))
    with duckdb.connect(str(path)) as con:
        con.execute(f"create table t as select * from (values {rows}) v(n, v)")
        texts = [t for (t,) in con.execute("select v::VARCHAR from t order by n").fetchall()]
    return path, texts


def _chunks(url: str, size: int) -> Iterator[pd.DataFrame]:
    return SqlSource(url=url).read_chunks("select * from t order by n", size)


@pytest.mark.parametrize("kind", ["DOUBLE", "FLOAT"])
def test_a_duckdb_float_is_sent_as_duckdb_writes_it_in_any_chunk(tmp_path: Path, kind: str) -> None:
    path, texts = _duckdb_texts(tmp_path, DOUBLES if kind == "DOUBLE" else FLOATS, kind)
    url = f"duckdb:///{path}"
    for size in (1, 2, 3, 100):
        assert capi_path(_chunks(url, size), "UTC") == texts, size
    assert line_push_path(_chunks(url, 2), "UTC") == texts
    if kind == "DOUBLE":  # the verifier's values, as DuckDB prints them
        assert texts[1:5] == ["2.0", "3.0", "-0.0", "1e+16"]
    else:
        assert texts[:4] == ["0.1", "2.0", "1000000000000000.0", "0.0001"]


def test_postgres_double_and_real_are_one_text_per_value_as_duckdb_writes_them(
    postgres_url: str, tmp_path: Path
) -> None:
    """PostgreSQL ``double precision`` and ``real`` (psycopg gives Python floats) in chunks of
    1, 2 and 100: the text DuckDB writes for the same DOUBLE/FLOAT, never a chunk's choice."""
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        for name, kind, values in (("d", "double precision", DOUBLES), ("r", "real", FLOATS)):
            rows = ", ".join(f"({n}, ({v})::{kind})" for n, v in enumerate(values))
            conn.exec_driver_sql(f"create table {name} as select * from (values {rows}) v(n, v)")
    engine.dispose()
    for name, kind, values in (("d", "DOUBLE", DOUBLES), ("r", "FLOAT", FLOATS)):
        _, texts = _duckdb_texts(tmp_path, values, kind)
        for size in (1, 2, 100):
            chunks = SqlSource(url=postgres_url).read_chunks(
                f"select * from {name} order by n", size
            )
            assert capi_path(chunks, "UTC") == texts, (name, size)


def test_an_upstream_float64_column_writes_each_value_the_same_next_to_any_other() -> None:
    """pandas makes an integer column with a missing value float64: a whole number is its
    integer, a fraction its repr, per value (it was per column: 2.0 was "2" or "2.0"); -0.0 is
    no integer's. A Python float of an object column is a double, written as one (VERIFY-13l
    L4: it took the float64 column's integer rule)."""
    alone = to_text(pd.Series([2.0, None, -0.0, 1e16]))
    with_fraction = to_text(pd.Series([2.0, 2.5, -0.0, 1e16, 1e20, 0.1]))
    assert alone.tolist() == ["2", pd.NA, "-0.0", "10000000000000000"]
    assert with_fraction.tolist() == ["2", "2.5", "-0.0", "10000000000000000", "1e+20", "0.1"]
    objects = to_text(pd.Series([2.0, "x", 2.5, 1e20, -0.0], dtype=object))
    assert objects.tolist() == ["2.0", "x", "2.5", "1e+20", "-0.0"]
