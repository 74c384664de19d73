"""Every holder of a value an upstream frame can hand over is sent as its dense twin is, or is a
``type`` reject with a true reason; never a crashed run nor Python's text (VERIFY-13r):

* R3: a sparse column whose fill value is ``pd.NA`` (``SparseArray`` of a nullable ``Int64``,
  ``Float64``, ``boolean`` or ``string`` column) failed the run with ``TypeError`` (pandas'
  ``to_dense`` cannot write ``pd.NA`` into floats), and a sparse ``boolean`` was sent as
  Python's ``True``. A sparse column is now read as its dense column: ``Sparse[float64, <NA>]``
  (what pandas makes of every nullable integer column and of ``Float64``) as a numpy
  ``float64`` column, whose whole numbers are integers (README "Values travel").
* R4: Python objects no warehouse holds as a field's type were sent as Python's text: a
  ``range`` (``range(0, 3)``; a LIST now), a complex number (``(1+2j)``), a pandas ``Interval``
  (``(0, 1]``, a range value as PostgreSQL's is; ``pd.cut`` sent a missing one as
  ``(-9223372036854775808, -9223372036854775808]``), a ``Period`` of a month (``2026-01``): each
  is a ``type`` reject naming what it is, shown as Python prints it; a day's ``Period`` is the
  date it names.
* R5: a plain numpy ``float64`` column (pandas' integer column with a missing value) wrote a
  whole number as its integer only within +-2**63: ``-2.0**63`` (int64's minimum) and the
  uint64 values pandas also makes float64 (``2.0**63``) were ``9.223372036854776e+18``. Now
  -2**63..2**64-1 are integers, as the integer column held them; beyond, the text is DuckDB's
  own for the double (``select x::DOUBLE::VARCHAR``), as every other float holder's is.

One Dagster run per destination sends every holder's upstream asset to the sandbox over HTTP;
the texts expected are what the dense twin is sent as (checked through ``rules.validate``).
"""

from __future__ import annotations

import csv
from fractions import Fraction
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from line_exports import build_export
from line_exports.sandbox import Sandbox
from line_exports_tests.test_texts_float_holders import _duckdb_text
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

Reject = tuple[str, str, str]  # ("reject", words its reason holds, the value shown)
LIST, COMPLEX, RANGE, PERIOD, FRACTION = (
    "is a LIST, STRUCT, MAP or UNION",
    "is a complex number, which no warehouse type holds",
    "is a range, multirange or composite (row) value",
    "is a pandas Period longer or shorter than a day",
    "is a fraction (a Python Fraction such as 1/3)",
)


def _objects(*values: Any) -> pd.Series:
    return pd.Series([None, *values, "x"], dtype=object)


INTEGERS = [2.0**63, 2.0**64 - 2048, -(2.0**63), 2.0**63 - 1024]  # an integer column's
BEYOND = [2.0**64, 1e20, -(2.0**63) - 2048, 1.7976931348623157e308]  # no integer column's
DUCKDB_BEYOND = _duckdb_text(BEYOND, "DOUBLE")


def _sparse(values: list[Any], dtype: str | None = None) -> pd.Series:
    return pd.Series(pd.arrays.SparseArray(pd.array(values, dtype=dtype)))


# name: (the upstream column, its dense twin or None, what each row is sent as / its reject)
HOLDERS: dict[str, tuple[pd.Series, pd.Series | None, list[str | None | Reject]]] = {
    "sparse_Int64": (
        _sparse([None, 1, -7, 2**53], "Int64"),
        pd.Series([None, 1, -7, 2**53], dtype="Int64"),
        [None, "1", "-7", "9007199254740992"],
    ),
    "sparse_Int8": (
        _sparse([None, -128, 127], "Int8"),
        pd.Series([None, -128, 127], dtype="Int8"),
        [None, "-128", "127"],
    ),
    "sparse_Float64": (
        _sparse([None, 1.5, 0.1, -0.0], "Float64"),
        pd.Series([None, 1.5, 0.1, -0.0], dtype="Float64"),
        [None, "1.5", "0.1", "-0.0"],
    ),
    # pandas holds it as float64, as it holds a nullable integer: a whole number is an integer
    "sparse_Float64_whole": (
        _sparse([None, 2.0], "Float64"),
        pd.Series([np.nan, 2.0]),
        [None, "2"],
    ),
    "sparse_UInt64": (
        _sparse([None, 2**63, 1], "UInt64"),
        pd.Series([None, 2**63, 1], dtype="UInt64"),
        [None, "9223372036854775808", "1"],
    ),
    "uint64_with_missing": (
        pd.Series(np.array([2**63, 2**64 - 2048], dtype=np.uint64)).reindex([0, 1, 2]),
        pd.Series([2**63, 2**64 - 2048, None], dtype="UInt64"),
        ["9223372036854775808", "18446744073709549568", None],
    ),
    "numpy_float64_ends": (
        pd.Series([np.nan, *INTEGERS, *BEYOND]),
        None,
        [
            None,
            "9223372036854775808",
            "18446744073709549568",
            "-9223372036854775808",
            "9223372036854774784",
            *DUCKDB_BEYOND,
        ],
    ),
    "Float64_ends": (
        pd.Series([None, *INTEGERS, *BEYOND], dtype="Float64"),
        None,
        [None, *_duckdb_text(INTEGERS, "DOUBLE"), *DUCKDB_BEYOND],
    ),
    "sparse_Float32": (
        _sparse([None, 0.1, 1e15], "Float32"),
        pd.Series([None, 0.1, 1e15], dtype="Float32"),
        [None, "0.1", "1000000000000000.0"],
    ),
    "sparse_boolean": (
        _sparse([None, True, False], "boolean"),
        pd.Series([None, True, False], dtype="boolean"),
        [None, "true", "false"],
    ),
    "sparse_string": (
        _sparse([None, " a\u3000", "b"], "string"),
        pd.Series([None, " a\u3000", "b"], dtype="string"),
        [None, " a\u3000", "b"],
    ),
    "sparse_arrow_string": (
        _sparse([None, " x "], "string[pyarrow]"),
        pd.Series([None, " x "], dtype="string[pyarrow]"),
        [None, " x "],
    ),
    "sparse_int64_NA": (
        pd.Series(pd.arrays.SparseArray([1, 2], fill_value=pd.NA)),
        pd.Series([1, 2], dtype="Int64"),
        ["1", "2"],
    ),
    "sparse_float64_nan": (
        pd.Series(pd.arrays.SparseArray([np.nan, 1.5, 2.0])),
        pd.Series([np.nan, 1.5, 2.0]),
        [None, "1.5", "2"],
    ),
    "object_range": (_objects(range(3)), None, [None, ("reject", LIST, "range(0, 3)"), "x"]),
    "object_complex": (
        _objects(1 + 2j, np.complex64(1j)),
        None,
        [None, ("reject", COMPLEX, "(1+2j)"), ("reject", COMPLEX, "1j"), "x"],
    ),
    "complex128": (pd.Series([1 + 2j, np.nan]), None, [("reject", COMPLEX, "(1+2j)"), None]),
    # no warehouse type holds 1/3 exactly; a whole one is its integer (VERIFY-13s S7)
    "object_fraction": (
        _objects(Fraction(1, 3), Fraction(4, 2)),
        None,
        [None, ("reject", FRACTION, "1/3"), "2", "x"],
    ),
    # categories Arrow cannot hold: the object path, not a crashed run (VERIFY-13s S6)
    "complex_categories": (
        pd.Series(pd.Categorical([None, 1 + 2j, np.complex64(3j)])),
        None,
        [None, ("reject", COMPLEX, "(1+2j)"), ("reject", COMPLEX, "3j")],
    ),
    "object_interval": (
        _objects(pd.Interval(0, 1)),
        None,
        [None, ("reject", RANGE, "(0, 1]"), "x"],
    ),
    "interval_column": (
        pd.Series(pd.arrays.IntervalArray.from_tuples([(0.5, 1.0), None])),
        None,
        [("reject", RANGE, "(0.5, 1.0]"), None],
    ),
    "cut_categories": (
        pd.cut(pd.Series([1, 5, None]), [0, 2, 10]),
        None,
        [("reject", RANGE, "(0, 2]"), ("reject", RANGE, "(2, 10]"), None],
    ),
    "object_period": (
        _objects(pd.Period("2026-01", freq="M"), pd.Period("2026-01-15", freq="D")),
        None,
        [None, ("reject", PERIOD, "2026-01"), "2026-01-15", "x"],
    ),
    "period_month": (
        pd.Series(pd.array([pd.Period("2026-01", freq="M"), None], dtype="period[M]")),
        None,
        [("reject", PERIOD, "2026-01"), None],
    ),
    "period_hour_categories": (
        pd.Series(pd.period_range("2026-01-15 10:00", periods=2, freq="h")).astype("category"),
        None,
        [("reject", PERIOD, "2026-01-15 10:00"), ("reject", PERIOD, "2026-01-15 11:00")],
    ),
    "period_day": (
        pd.Series(pd.array([pd.Period("2026-01-15", freq="D"), None], dtype="period[D]")),
        None,
        ["2026-01-15", None],
    ),
}


def _dense_texts(destination: str, twin: pd.Series) -> list[str | None]:
    """The dense twin through the destination's own row path (``rules.validate``)."""
    path = "line_messaging_push" if destination == "line_messaging" else destination
    frame = pd.DataFrame({"n": range(len(twin)), "v": twin})
    return ROW_PATHS[path](iter([frame]), "UTC")


@pytest.mark.parametrize("name", [n for n, (_, twin, _) in HOLDERS.items() if twin is not None])
def test_the_expected_texts_are_the_dense_twins(name: str) -> None:
    _, twin, texts = HOLDERS[name]
    assert twin is not None
    assert _dense_texts("line_conversion", twin) == texts


@pytest.mark.parametrize("destination", ["line_conversion", "maac"])
def test_every_holder_is_sent_as_its_dense_twin_or_rejected_over_http(destination: str) -> None:
    """One Dagster run of every holder's upstream asset and its export, to the sandbox over
    HTTP: counts, what the sandbox received per row, and the rejects file."""
    _, settings, _ = DESTINATIONS[destination]
    server = RecordingServer(Sandbox(rate_scale=100, job_seconds=0.05))
    with server:
        assets: list[dg.AssetsDefinition] = []
        resources = {}
        cases = {}
        for case, (name, (column, _, expected)) in enumerate(HOLDERS.items(), start=1):
            key = f"{name}_{destination}"
            assets.append(_upstream(key, _frame(destination, case, column)))
            ((_, resource),) = _resources(destination, server, case).items()
            resources[f"r_{key}"] = resource
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
            cases[case] = (key, expected)
        result = dg.materialize(assets, resources=resources, raise_on_error=False)
        failed = [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        assert result.success, failed
        for case, (key, expected) in cases.items():
            meta = {
                k: v.value
                for k, v in result.asset_materializations_for_node(f"e_{key}")[0].metadata.items()
            }
            refused = [row for row, want in enumerate(expected) if isinstance(want, tuple)]
            assert meta["rows_read"] == len(expected), key
            assert meta["rows_rejected"] == len(refused), (key, meta)
            assert meta["rows_accepted"] == len(expected) - len(refused), (key, meta)
            rejects: dict[int, dict[str, str]] = {}
            if refused:
                with open(meta["rejects_file"], newline="", encoding="utf-8") as f:
                    rejects = {int(r["_row_number"]) - 1: r for r in csv.DictReader(f)}
            got = _received(server, destination, case, len(expected))
            for row, want in enumerate(expected):
                if isinstance(want, tuple):
                    assert row not in got, (key, row, got.get(row))
                    reject = rejects[row]
                    assert reject["rule"] == "type" and want[1] in reject["message"], reject
                    assert reject["value"] == want[2], reject
                elif want is None:
                    assert got.get(row) is None, (key, row, got.get(row))
                else:
                    assert got.get(row) == _expected_text(destination, want), (key, row)
