"""One value, one text, whatever holds it (VERIFY-13l L4).

An upstream frame's float text depended on its dtype: the float32 value 1e15 (exactly
999999986991104) was ``999999986991104`` in a numpy ``float32`` column but
``1000000000000000.0`` in a ``Float32`` or ``pd.ArrowDtype(float32)`` one, ``-0.0`` was ``0``;
Python floats of an object column took the integer rule of a ``float64`` column (``1.0`` ->
``1``), an ``np.float16(0.1)`` was its exact binary value and an ``np.bool_`` Python's ``True``.
Now a float32 is written as DuckDB writes a FLOAT, a double as DuckDB writes a DOUBLE, a half
at its own precision, a bool as DuckDB's BOOLEAN, in every holder; only a plain numpy
``float64`` column (pandas' integer column with a missing value) writes a whole number as its
integer (README "Values travel"). A SQLite column mixing INTEGER and REAL sends each value as
SQLite prints it (the INTEGER 1 was ``1.0``). Expected texts come from DuckDB and SQLite.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from line_exports import SqlSource, build_export
from line_exports.sandbox import Sandbox
from line_exports_tests.test_upstream_exact import (
    DESTINATIONS,
    FAST,
    RecordingServer,
    _expected_text,
    _frame,
    _received,
    _resources,
    _upstream,
)
from line_exports_tests.test_values import ROW_PATHS

SINGLES = [1e15, -0.0, 0.1, 16777217.0, 3.4028235e38, 1e-45, 2.0, 0.3]
DOUBLES = [1.0, -0.0, 2.0, 1e16, 0.1, 5e-324, 2.0**53 + 2, 1e22]


def _duckdb_text(values: list[float], kind: str) -> list[str]:
    """DuckDB's own text of each value held as ``kind`` (FLOAT, DOUBLE, BOOLEAN)."""
    with duckdb.connect() as con:
        rows = con.execute(
            f"select cast(cast(v as {kind}) as varchar) from unnest(?) with ordinality t(v, n) "
            "order by n",
            [values],
        ).fetchall()
    return [text for (text,) in rows]


def _holders() -> dict[str, tuple[pd.Series, list[str]]]:
    """name: (an upstream column holding the values, the text each must be sent as)."""
    single, double = _duckdb_text(SINGLES, "FLOAT"), _duckdb_text(DOUBLES, "DOUBLE")
    assert single[:2] == ["1000000000000000.0", "-0.0"] and double[:2] == ["1.0", "-0.0"]
    objects = [None, *DOUBLES]
    return {
        "numpy_float32": (pd.Series([np.nan, *SINGLES], dtype="float32"), single),
        "Float32": (pd.Series([pd.NA, *SINGLES], dtype="Float32"), single),
        "arrow_float32": (pd.Series([None, *SINGLES], dtype=pd.ArrowDtype(pa.float32())), single),
        "object_np_float32": (pd.Series([None, *map(np.float32, SINGLES)], dtype=object), single),
        "Float64": (pd.Series([pd.NA, *DOUBLES], dtype="Float64"), double),
        "arrow_float64": (pd.Series([None, *DOUBLES], dtype=pd.ArrowDtype(pa.float64())), double),
        "object_float": (pd.Series(objects, dtype=object), double),
        "object_np_float64": (pd.Series([None, *map(np.float64, DOUBLES)], dtype=object), double),
        "half": (pd.Series([None, np.float16(0.1), np.float16(2.0)], dtype=object), ["0.1", "2.0"]),
        "numpy_float16": (pd.Series([np.nan, 0.1, 2.0], dtype="float16"), ["0.1", "2.0"]),
        "object_bools": (
            pd.Series([None, True, False, np.bool_(True), np.bool_(False)], dtype=object),
            _duckdb_text([True, False, True, False], "BOOLEAN"),
        ),
        # The one documented holder rule: pandas' integer column with a missing value.
        "numpy_float64": (
            pd.Series([np.nan, 1.0, -0.0, 2.0**53, 0.5]),
            ["1", "-0.0", "9007199254740992", "0.5"],
        ),
        # A wrapper is its values' dense holder (VERIFY-13p P7: Sparse[float32] was a double).
        "sparse_float32": (pd.Series(pd.arrays.SparseArray(np.array([np.nan, *SINGLES], "float32"))), single),
        "sparse_float16": (pd.Series(pd.arrays.SparseArray(np.array([np.nan, 0.1, 2.0], "float16"))), ["0.1", "2.0"]),
        "sparse_float64": (
            pd.Series(pd.arrays.SparseArray([np.nan, 1.0, -0.0, 2.0**53, 0.5])),  # numpy_float64's
            ["1", "-0.0", "9007199254740992", "0.5"],
        ),
        "sparse_int64_nan": (  # no float detour: a missing fill is a missing value
            pd.Series(pd.arrays.SparseArray.from_indices(np.array([2**53 + 1, -1, 0]), np.array([1, 2, 3]), 4, fill_value=np.nan)),
            ["9007199254740993", "-1", "0"],
        ),
        "sparse_uint64": (
            pd.Series(pd.arrays.SparseArray.from_indices(np.array([2**64 - 1, 7], "uint64"), np.array([1, 2]), 3, fill_value=np.nan)),
            ["18446744073709551615", "7"],
        ),
        "sparse_bool": (
            pd.Series(pd.arrays.SparseArray([None, True, False], dtype=pd.SparseDtype(bool, np.nan))),
            _duckdb_text([True, False], "BOOLEAN"),
        ),
        "run_end_float32": (
            pd.Series(pd.arrays.ArrowExtensionArray(pc.run_end_encode(pa.array([None, *SINGLES], pa.float32())))),
            single,
        ),
    }  # fmt: skip


HOLDERS = _holders()


def _chunks(column: pd.Series, size: int) -> Iterator[pd.DataFrame]:
    frame = pd.DataFrame({"n": range(len(column)), "v": column.reset_index(drop=True)})
    for start in range(0, len(frame), size):
        yield frame.iloc[start : start + size]


@pytest.mark.parametrize("path", list(ROW_PATHS))
@pytest.mark.parametrize("holder", list(HOLDERS))
def test_each_value_is_one_text_in_every_holder_and_row_path(holder: str, path: str) -> None:
    column, texts = HOLDERS[holder]
    column = column.iloc[1:]  # without its missing value (a push's placeholder needs one)
    for size in (1, 3, 100):
        assert ROW_PATHS[path](_chunks(column, size), "UTC") == texts, size


def test_every_holder_is_sent_as_duckdb_writes_the_value_over_http() -> None:
    """One Dagster run of every holder's upstream asset and its CAPI / push export, to the
    sandbox over HTTP: what it received per row."""
    server = RecordingServer(Sandbox(rate_scale=100, job_seconds=0.05))
    with server:
        for destination in ("line_conversion", "line_messaging"):
            _, settings, _ = DESTINATIONS[destination]
            assets: list[dg.AssetsDefinition] = []
            resources = {}
            cases = {}
            for case, (name, (column, texts)) in enumerate(HOLDERS.items(), start=1):
                key = f"{name}_{destination}"
                assets.append(_upstream(key, _frame(destination, case, column)))
                ((_, resource),) = _resources(destination, server, case).items()
                resources[f"r_{key}"] = resource  # CAPI: a LINE tag per case
                assets.append(
                    build_export(
                        f"e_{key}",
                        destination=destination,
                        upstream=f"up_{key}",
                        settings={**FAST, **settings},
                        retry_policy=None,
                        resource_key=f"r_{key}",
                    )
                )
                cases[case] = (name, texts)
            result = dg.materialize(assets, resources=resources, raise_on_error=False)
            assert result.success, destination
            for case, (name, texts) in cases.items():
                got = _received(server, destination, case, len(texts) + 1)
                want = {i + 1: _expected_text(destination, t) for i, t in enumerate(texts)}
                if destination == "line_conversion":
                    assert got == {0: None, **want}, name
                else:  # a push of an empty value: the placeholder is filled with nothing
                    assert {k: v for k, v in got.items() if k} == want, name


def test_a_sqlite_column_of_integer_and_real_values_is_sent_as_sqlite_prints_them(
    tmp_path: Path,
) -> None:
    """SQLite keeps each value's own type in a column: the INTEGER 1 next to the REAL 2.5 was
    sent as ``1.0`` (Arrow made the column double); now each as ``CAST(v AS TEXT)`` prints it."""
    path = tmp_path / "mixed.sqlite"
    values = [1, 2.5, 2.0, -7, 9007199254740993, 0.1, 100.0]  # (-0.0 SQLite prints 0.0)
    with sqlite3.connect(path) as con:
        con.execute("create table t (n integer, v)")
        con.executemany("insert into t values (?, ?)", list(enumerate(values)))
        printed = [t for (t,) in con.execute("select cast(v as text) from t order by n")]
    con.close()
    assert printed[:3] == ["1", "2.5", "2.0"]
    for path_name, row_path in ROW_PATHS.items():
        for size in (1, 3, 100):
            source = SqlSource(url=f"sqlite:///{path}")
            chunks = source.read_chunks("select * from t order by n", size)
            assert row_path(chunks, "UTC") == printed, (path_name, size)
