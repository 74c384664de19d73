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
from dataclasses import dataclass

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


_TYPES = (
    "fixed_line",
    "mobile",
    "toll_free",
    "premium_rate",
    "shared_cost",
    "personal_number",
    "voip",
    "pager",
    "uan",
    "voicemail",
)


def _alternatives(pattern: str) -> list[str]:
    """The top-level ``|`` alternatives of a regular expression."""
    parts, depth, start, escaped = [], 0, 0, False
    for i, char in enumerate(pattern):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
    parts.append(pattern[start:])
    return parts


@dataclass(frozen=True)
class _NationalRoute:
    """How libphonenumber reads a region's ``0`` + national number, as whole-column checks.

    For a value of ASCII digits that starts with the national prefix ``0`` and a non-zero
    digit, and does not start with the region's international (IDD) prefix, libphonenumber
    strips exactly that ``0`` (every other alternative of the region's prefix-for-parsing needs
    ``00``), and the number is valid when the rest matches the region's general pattern and one
    of its number types, each with its possible lengths. Such values become ``+<cc><rest>``
    without the parser; anything else (and any value this route does not find valid) meets
    the parser. ``test_phones.py`` checks the route against the parser value by value.
    """

    country_code: int
    idd: str | None
    general: tuple[str, tuple[int, ...]]
    types: tuple[tuple[str, tuple[int, ...]], ...]

    def valid(self, national: pa.Array) -> np.ndarray:
        lengths = pc.utf8_length(national).to_numpy(zero_copy_only=False)

        def matching(pattern: str, possible: tuple[int, ...]) -> np.ndarray:
            ok = pc.match_substring_regex(national, f"^(?:{pattern})$")
            mask = ok.to_numpy(zero_copy_only=False).astype(bool)
            return mask & np.isin(lengths, possible) if possible else mask

        valid = matching(*self.general)
        typed = np.zeros(len(national), dtype=bool)
        for pattern, possible in self.types:
            typed |= matching(pattern, possible)
        return valid & typed


@functools.lru_cache(maxsize=256)
def _national_route(region: str | None) -> _NationalRoute | None:
    """The region's vectorized route, or None where libphonenumber's reading is not that simple."""
    if region is None:
        return None
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None or metadata.national_prefix != "0":
        return None
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(metadata.country_code, ())
    if tuple(regions) != (region,):
        return None  # a shared country code: the region comes from the number itself
    parsing = metadata.national_prefix_for_parsing or "0"
    *others, last = _alternatives(parsing)
    if last != "0" or not all(alt.lstrip("(?:").startswith("00") for alt in others):
        return None
    general = metadata.general_desc
    if general is None or not general.national_number_pattern:
        return None

    def plain(pattern: str) -> str:
        return pattern.replace("\\d", "[0-9]")  # ASCII digits only reach this route

    types = tuple(
        (plain(desc.national_number_pattern), tuple(desc.possible_length or ()))
        for desc in (getattr(metadata, name) for name in _TYPES)
        if desc is not None and desc.national_number_pattern
    )
    return _NationalRoute(
        country_code=metadata.country_code,
        idd=plain(metadata.international_prefix) if metadata.international_prefix else None,
        general=(plain(general.national_number_pattern), tuple(general.possible_length or ())),
        types=types,
    )


def _by_route(
    text: pa.Array, region: str | None, todo: np.ndarray
) -> tuple[pa.Array, np.ndarray] | None:
    """(text with the route's valid numbers in E.164, mask of them), or None without a route."""
    route = _national_route(region)
    if route is None:
        return None
    national = pc.match_substring_regex(text, "^0[1-9][0-9]*$").to_numpy(zero_copy_only=False)
    candidates = todo & national.astype(bool)
    if route.idd is not None and candidates.any():
        dialled = pc.match_substring_regex(text, f"^(?:{route.idd})")
        candidates &= ~dialled.to_numpy(zero_copy_only=False).astype(bool)
    if not candidates.any():
        return None
    rest = pc.utf8_slice_codeunits(text, 1)
    good = candidates & route.valid(rest)
    if not good.any():
        return None
    prefix = pa.scalar(f"+{route.country_code}", text.type)
    e164 = pc.binary_join_element_wise(prefix, rest, pa.scalar("", text.type))
    return pc.if_else(pa.array(good), e164, text), good


def e164_column(
    text: pa.Array, region: str | None, parse: np.ndarray, already: np.ndarray
) -> tuple[pa.Array, np.ndarray]:
    """``text`` with the ``parse`` cells replaced by their E.164 form; mask of the cells now E.164.

    ``already`` marks cells that are E.164 as they are (checked by the caller, vectorized);
    local numbers of the region's plain form take a vectorized route (:class:`_NationalRoute`);
    only the distinct values left meet the parser, once each.
    """
    todo = parse & ~already
    ok = already.copy()
    if not todo.any():
        return text, ok
    routed = _by_route(text, region, todo)
    if routed is not None:
        text, good = routed
        ok |= good
        todo &= ~good
        if not todo.any():
            return text, ok
    distinct = pc.unique(text.filter(pa.array(todo))).drop_null()
    mapped = pa.array([to_e164(v, region) for v in distinct.to_pylist()], type=text.type)
    where = pc.index_in(text, value_set=distinct)
    converted = mapped.take(where)
    good = todo & converted.is_valid().to_numpy(zero_copy_only=False)
    ok |= good
    return pc.if_else(pa.array(good), converted, text), ok
