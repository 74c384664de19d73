"""A float's text: one value, one text, whatever the other values of its column or chunk.

* A warehouse's DOUBLE (DuckDB, PostgreSQL ``double precision``, any engine's Arrow float64,
  read as pandas' ``Float64``, :func:`line_exports.values.arrow_to_pandas`) is written as DuckDB
  writes it (``x::VARCHAR``), which is Python's ``repr``: the shortest text that reads back as
  the same double, ``2.0``, ``-0.0``, ``0.1``, ``1e+16``, ``1e-05``
  (``line_exports_tests/test_texts_floats.py`` checks DuckDB's own text).
* A FLOAT/REAL (``Float32``; PostgreSQL ``real`` too, :mod:`line_exports.dbapi_values`) by the
  same rule at single precision, as DuckDB writes it: ``0.1`` (not 0.10000000149011612),
  ``1000000000000000.0``, ``0.0001``.
* An upstream DataFrame's plain ``float64`` column is what pandas makes of an integer column
  with a missing value, so a whole number that fits in int64 is written as that integer
  (``1.0`` is ``1``, ``1e16`` is ``10000000000000000``), any other value as above. Decided
  per value: a column of whole numbers no longer prints differently when one row holds a
  fraction (a row's text changed between chunks and ``sync_mode: diff`` runs).

NaN and NULL are missing values (left to the caller); ±Infinity is ``inf``/``-inf``, which the
rules refuse as a ``type`` reject before any is sent.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

INT64_LIMIT = 2**63


def shortest(value: float, single: bool = False) -> str:
    """``value``'s shortest round-trip text, DuckDB's and Python's ``repr`` form; ``single``:
    at single precision (the shortest digits that read back as the same float32)."""
    if single:
        value = float(str(np.float32(value)))  # those digits, written by repr's rules below
    return repr(float(value))


def float_text(series: pd.Series) -> pd.Series:
    """A float column as nullable strings, each value by the rules of the module docstring."""
    single = series.dtype in (np.float32, pd.Float32Dtype())
    upstream = not isinstance(series.dtype, pd.api.extensions.ExtensionDtype)
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    if single:
        text = series.map(lambda v: shortest(v, True), na_action="ignore").astype("string")
    else:  # pandas writes a float64 as repr does
        text = pd.Series(values, index=series.index).astype("string")
    if upstream:
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(values) & (np.abs(values) < INT64_LIMIT)
            whole &= values == np.floor(np.where(whole, values, 0))
        if whole.any():
            text[whole] = pd.Series(values[whole]).astype("int64").astype(str).to_numpy()
    return text


def python_float_text(value: float | np.floating) -> str:
    """A Python ``float`` (or numpy float, e.g. a PostgreSQL ``real``) cell of an object column
    (an upstream frame's, or a driver's in a column of mixed kinds) as a plain ``float64``
    column's value is written."""
    number = float(value)
    if math.isfinite(number) and number.is_integer() and abs(number) < INT64_LIMIT:
        return str(int(number))
    return shortest(number, isinstance(value, np.float32))
