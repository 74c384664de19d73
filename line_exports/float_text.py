"""A float's text: one value, one text, whatever the other values of its column or chunk.

* A warehouse's DOUBLE (DuckDB, PostgreSQL ``double precision``, any engine's Arrow float64,
  read as pandas' ``Float64``, :func:`line_exports.values.arrow_to_pandas`) is written as DuckDB
  writes it (``x::VARCHAR``), which is Python's ``repr``: the shortest text that reads back as
  the same double, ``2.0``, ``-0.0``, ``0.1``, ``1e+16``, ``1e-05``
  (``line_exports_tests/test_texts_floats.py`` checks DuckDB's own text).
* A FLOAT/REAL (a float32 in any holder: ``Float32``, numpy ``float32``,
  ``pd.ArrowDtype(pa.float32())``, an ``np.float32`` cell; PostgreSQL ``real`` too,
  :mod:`line_exports.dbapi_values`) by the same rule at single precision, as DuckDB writes a
  FLOAT: ``0.1`` (not 0.10000000149011612), ``1000000000000000.0`` (not 999999986991104),
  ``-0.0``, ``0.0001``; a half-precision float (numpy ``float16``, Arrow ``halffloat``) at its
  own precision (``np.float16(0.1)`` is ``0.1``).
* A Python ``float`` (or ``np.float64``) cell of an object column is a double: its repr, as
  above (``1.0``, ``-0.0``).
* An upstream DataFrame's plain numpy ``float64`` column is what pandas makes of an integer
  column (int64 or uint64) with a missing value, so a whole number such a column can hold,
  -2**63 to 2**64 - 1, is written as that integer (``1.0`` is ``1``, ``1e16`` is
  ``10000000000000000``, ``2.0**63`` is ``9223372036854775808``, ``-2.0**63`` is
  ``-9223372036854775808``), any other value as above, as DuckDB writes the double (``-0.0``
  stays ``-0.0``: no integer is negative zero; ``2.0**64`` is ``1.8446744073709552e+19``, ``1e20``
  ``1e+20``: no integer column holds them). The only rule that looks at the holder, and
  only at this one; decided per value: a column of whole numbers no longer prints differently
  when one row holds a fraction (a row's text changed between chunks and ``sync_mode: diff``).

NaN and NULL are missing values (left to the caller); ±Infinity is ``inf``/``-inf``, which the
rules refuse as a ``type`` reject before any is sent.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

INT64_MIN, UINT64_END = -(2.0**63), 2.0**64  # pandas' integer columns: [INT64_MIN, UINT64_END)


def shortest(value: float, bits: int = 64) -> str:
    """``value``'s shortest round-trip text, DuckDB's and Python's ``repr`` form, at ``bits``
    precision (32: the shortest digits that read back as the same float32, as DuckDB writes a
    FLOAT; 16: a half-precision float's)."""
    if bits == 32:
        value = float(str(np.float32(value)))  # those digits, written by repr's rules below
    elif bits == 16:
        value = float(str(np.float16(value)))
    return repr(float(value))


_BITS = {np.dtype("float32"): 32, pd.Float32Dtype(): 32, np.dtype("float16"): 16}


def float_bits(dtype: object) -> int:
    """The precision (16, 32 or 64 bits) of a float column's ``dtype``, ``pd.ArrowDtype``'s too."""
    if isinstance(dtype, pd.ArrowDtype):
        dtype = dtype.numpy_dtype
    return _BITS.get(dtype, 64)  # type: ignore[call-overload]


def float_text(series: pd.Series) -> pd.Series:
    """A float column as nullable strings, each value by the rules of the module docstring."""
    bits = float_bits(series.dtype)
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    if bits < 64:
        text = series.map(lambda v: shortest(v, bits), na_action="ignore").astype("string")
    else:  # pandas writes a float64 as repr does
        text = pd.Series(values, index=series.index).astype("string")
    if series.dtype == np.float64:  # pandas' integer column with a missing value
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(values) & (values >= INT64_MIN) & (values < UINT64_END)
            whole &= values == np.floor(np.where(whole, values, 0))
            whole &= ~((values == 0) & np.signbit(values))  # -0.0 is no integer
        if whole.any():
            signed = whole & (values < -INT64_MIN)  # int64's; above it uint64's
            text[signed] = values[signed].astype("int64").astype(str)
            text[whole & ~signed] = values[whole & ~signed].astype("uint64").astype(str)
    return text


def python_float_text(value: float | np.floating) -> str:
    """One float cell of an object column (an upstream frame's, or a driver's in a column of
    mixed kinds, a PostgreSQL ``real``'s ``np.float32``) as its value is written at its own
    precision: a Python ``float`` or ``np.float64`` is a double (``1.0``, ``-0.0``; the integer
    rule is a ``float64`` column's only), an ``np.float32`` a FLOAT, an ``np.float16`` a half."""
    bits = float_bits(np.dtype(type(value))) if isinstance(value, np.floating) else 64
    return shortest(float(value), bits)
