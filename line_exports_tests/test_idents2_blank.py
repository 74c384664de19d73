"""The blank check (a name of only white space names no one) is one set of values however it
is computed: :func:`line_exports.identities.blank` trims as the duplicate check does and looks for
an empty value (fast: LinkedIn companies' rule set spent a quarter of its time in a Unicode
regex), which must agree with :data:`~line_exports.identities.BLANK_PATTERN` and with Python's
``str.strip`` on every code point, alone, repeated and around text."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from line_exports.identities import BLANK_PATTERN, blank, is_blank

CHARS = [chr(i) for i in range(0x110000) if not 0xD800 <= i < 0xE000]


def test_blank_is_the_pattern_and_pythons_strip_on_every_code_point() -> None:
    values = [*CHARS, *(c * 3 for c in CHARS), *(f"{c}a{c}" for c in CHARS[:0x3100]), "", None]
    array = pa.array(values, pa.string())
    found = blank(array)
    by_pattern = pc.match_substring_regex(array, BLANK_PATTERN).fill_null(True)
    assert np.array_equal(found, by_pattern.to_numpy(zero_copy_only=False))
    by_python = np.array([v is None or not v.strip() for v in values])
    assert np.array_equal(found, by_python)
    assert is_blank("\u3000\x0b\x85") and not is_blank(" a ") and is_blank(None)


def test_blank_of_sliced_and_large_text() -> None:
    array = pa.array(["x", "  ", "Acme", "\t", None, " b"], pa.string()).slice(1)
    assert blank(array).tolist() == [True, False, True, True, False]
    large = pa.array(["  ", "a"], pa.large_string())
    assert blank(large).tolist() == [True, False]
