"""Phone numbers to E.164 with Google's libphonenumber (the ``phonenumbers`` package).

A column's values that are already E.164 (``+`` and 7-15 digits, after separators are removed)
pass through a vectorized check and never reach the parser; the others are parsed once per
distinct value with the export's ``default_region`` (ISO 3166 alpha-2: ``JP`` reads
``090-1234-5678`` as +819012345678, ``TW`` reads ``0912-345-678`` as +886912345678, ``TH``
reads ``081-234-5678`` as +66812345678) and kept only when libphonenumber says the number is
valid for that region. The sandboxes use :func:`to_e164` for the same reading.
"""

from __future__ import annotations

import functools

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc

REGION_SETTING = "default_region"
SUPPORTED_REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)


def check_region(value: str | None) -> str | None:
    """A ``default_region`` setting, upper-cased; a ValueError names the setting when unknown."""
    if value is None or not str(value).strip():
        return None
    region = str(value).strip().upper()
    if region not in SUPPORTED_REGIONS:
        raise ValueError(
            f"default_region must be an ISO 3166 alpha-2 region libphonenumber knows (JP, TW, TH, ...), "
            f"got {value!r}"
        )
    return region


@functools.lru_cache(maxsize=65_536)
def to_e164(value: str, region: str | None) -> str | None:
    """``value`` as E.164 when libphonenumber reads it as a valid number, else None.

    ``region`` reads numbers written without ``+`` and country code; without one only
    international numbers parse.
    """
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def e164_column(
    text: pa.Array, region: str | None, parse: np.ndarray, already: np.ndarray
) -> tuple[pa.Array, np.ndarray]:
    """``text`` with the ``parse`` cells replaced by their E.164 form; mask of the cells now E.164.

    ``already`` marks cells that are E.164 as they are (checked by the caller, vectorized);
    only the distinct values among ``parse & ~already`` meet the parser, once each.
    """
    todo = parse & ~already
    ok = already.copy()
    if not todo.any():
        return text, ok
    distinct = pc.unique(text.filter(pa.array(todo))).drop_null()
    mapped = pa.array([to_e164(v, region) for v in distinct.to_pylist()], type=text.type)
    where = pc.index_in(text, value_set=distinct)
    converted = mapped.take(where)
    good = todo & converted.is_valid().to_numpy(zero_copy_only=False)
    ok |= good
    return pc.if_else(pa.array(good), converted, text), ok
