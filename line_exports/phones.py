"""Phone numbers to E.164 with Google's libphonenumber (the ``phonenumbers`` package).

A column's values that are already libphonenumber's E.164 of a valid number (``+``, calling
code, national number without its trunk ``0``, after separators are removed) pass a vectorized
check and never reach the parser; E.164-shaped values that are not (``+886 0912 345 678``, read
as ``+886912345678``) are parsed like the others; the others are parsed once per
distinct value with the export's ``default_region`` (ISO 3166 alpha-2: ``JP`` reads
``090-1234-5678`` as +819012345678, ``TW`` reads ``0912-345-678`` as +886912345678, ``TH``
reads ``081-234-5678`` as +66812345678) and kept only when libphonenumber says the number is
valid for that region. A number with an extension (``+886-912-345-671 ext. 2``) is refused:
E.164 has no place for one, and neither MAAC's ``mobile`` ("E.164", maac-openapi) nor CAPI's
``phone`` ("the raw phone number with country code", TD's LINE Conversion reference) takes one.
Where the field is a mobile number (MAAC's ``mobile``, "聯絡人手機號碼"), libphonenumber's number
type must be ``MOBILE`` or ``FIXED_LINE_OR_MOBILE`` (regions whose mobiles and landlines share
a pattern), in any spelling: a TW landline ``(02) 2345-6789`` is refused. The sandboxes use
:func:`to_e164` for the same reading.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc

from line_exports.arrow_text import bools

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


INVALID = "phone"
EXTENSION = "phone_extension"
NOT_MOBILE = "mobile_number"
"""Why a value is refused (the rule names of the rejects): not a valid number, a valid number
with an extension, a valid number that is not a mobile where a mobile is wanted."""
MOBILE_TYPES = frozenset(
    {phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}
)


@functools.lru_cache(maxsize=65_536)
def read_number(value: str, region: str | None, mobile: bool = False) -> tuple[str | None, str]:
    """(``value`` in E.164, "") when libphonenumber reads it as a valid number without an
    extension (and a mobile one, with ``mobile``), else (None, why: :data:`INVALID`,
    :data:`EXTENSION` or :data:`NOT_MOBILE`).

    ``region`` reads numbers written without ``+`` and country code; without one only
    international numbers parse.
    """
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None, INVALID
    if not phonenumbers.is_valid_number(number):
        return None, INVALID
    if number.extension:
        return None, EXTENSION
    if mobile and phonenumbers.number_type(number) not in MOBILE_TYPES:
        return None, NOT_MOBILE
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), ""


def to_e164(value: str, region: str | None, mobile: bool = False) -> str | None:
    """``value`` as E.164 when :func:`read_number` accepts it, else None."""
    return read_number(value, region, mobile)[0]


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


# Number types libphonenumber tests before fixed-line and mobile (``_number_type_helper``).
_BEFORE_FIXED_AND_MOBILE = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)

Desc = tuple[str, tuple[int, ...]]  # (national number pattern, possible lengths)


@dataclass(frozen=True)
class _NationalRoute:
    """How libphonenumber reads a region's ``0`` + national number, as whole-column checks.

    For a value of ASCII digits that starts with the national prefix ``0`` and a non-zero
    digit, and does not start with the region's international (IDD) prefix, libphonenumber
    strips exactly that ``0`` (every other alternative of the region's prefix-for-parsing needs
    ``00``), and the number is valid when the rest matches the region's general pattern and one
    of its number types, each with its possible lengths. Such values become ``+<cc><rest>``
    without the parser; anything else (and any value this route does not find valid) meets
    the parser. A mobile is what ``number_type`` calls ``MOBILE`` or ``FIXED_LINE_OR_MOBILE``:
    no earlier type (toll-free, VoIP, ...) matches, and the mobile pattern does (the fixed-line
    one where the region says both are the same). ``test_phones.py`` checks the route against
    the parser value by value.
    """

    country_code: int
    idd: str | None
    general: Desc
    types: tuple[tuple[str, Desc], ...]  # (type name, desc), libphonenumber's order
    same_mobile_and_fixed_line: bool

    @staticmethod
    def _matching(national: pa.Array, lengths: np.ndarray, desc: Desc) -> np.ndarray:
        pattern, possible = desc
        ok = pc.match_substring_regex(national, f"^(?:{pattern})$")
        mask = ok.to_numpy(zero_copy_only=False).astype(bool)
        return mask & np.isin(lengths, possible) if possible else mask

    def valid(self, national: pa.Array, mobile: bool = False) -> np.ndarray:
        """Numbers libphonenumber finds valid (and, with ``mobile``, of a mobile type)."""
        lengths = pc.utf8_length(national).to_numpy(zero_copy_only=False)
        general = self._matching(national, lengths, self.general)
        matches = {name: self._matching(national, lengths, d) for name, d in self.types}
        if not mobile:
            return general & np.logical_or.reduce(list(matches.values()), initial=False)
        earlier = np.zeros(len(national), dtype=bool)
        for name in _BEFORE_FIXED_AND_MOBILE:
            earlier |= matches.get(name, False)
        mobile_kind = "fixed_line" if self.same_mobile_and_fixed_line else "mobile"
        return general & ~earlier & matches.get(mobile_kind, np.zeros(len(national), dtype=bool))


def _plain(pattern: str) -> str:
    return pattern.replace("\\d", "[0-9]")  # ASCII digits only reach the vectorized routes


@functools.lru_cache(maxsize=512)
def _type_route(region: str) -> _NationalRoute | None:
    """The region's number-type patterns as a route (no national-prefix reading), or None."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None:
        return None
    general = metadata.general_desc
    if general is None or not general.national_number_pattern:
        return None
    types = tuple(
        (name, (_plain(desc.national_number_pattern), tuple(desc.possible_length or ())))
        for name, desc in ((name, getattr(metadata, name)) for name in _TYPES)
        if desc is not None and desc.national_number_pattern
    )
    return _NationalRoute(
        country_code=metadata.country_code,
        idd=_plain(metadata.international_prefix) if metadata.international_prefix else None,
        general=(_plain(general.national_number_pattern), tuple(general.possible_length or ())),
        types=types,
        same_mobile_and_fixed_line=bool(metadata.same_mobile_and_fixed_line_pattern),
    )


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
    return _type_route(region)


def _by_route(
    text: pa.Array, region: str | None, todo: np.ndarray, mobile: bool
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
    good = candidates & route.valid(rest, mobile)
    if not good.any():
        return None
    prefix = pa.scalar(f"+{route.country_code}", text.type)
    e164 = pc.binary_join_element_wise(prefix, rest, pa.scalar("", text.type))
    return pc.if_else(pa.array(good), e164, text), good


@dataclass(frozen=True)
class _CountryRoute:
    """How libphonenumber reads ``+<cc><national number>`` of one calling code, as column checks.

    ``parse`` reads the digits after the code with the code's main region, and strips a
    national prefix where that region's ``national_prefix_for_parsing`` matches their start:
    such cells are left to the parser (:attr:`undecided`). Otherwise the national number stays
    as written, and the region is the code's only one, or the first of its regions
    (libphonenumber's order) whose ``leading_digits`` match the number's start, or, for a
    region without them, whose patterns give the number a type (``region_code_for_number``).
    The number is then typed with that region's patterns (:class:`_NationalRoute`).
    """

    undecided: str | None  # regex of national numbers the parser must read
    regions: tuple[tuple[str | None, _NationalRoute], ...]  # (leading digits, route), in order

    def mobiles(self, national: pa.Array, mobile: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(mobiles, or with ``mobile=False`` valid numbers of any type; cells this route
        decides) of ``national`` (digits after the code)."""
        size = len(national)
        decided = np.ones(size, dtype=bool)
        if self.undecided is not None:
            stripped = pc.match_substring_regex(national, f"^(?:{self.undecided})")
            decided = ~bools(stripped)
        if len(self.regions) == 1:
            return decided & self.regions[0][1].valid(national, mobile=mobile), decided
        found = np.zeros(size, dtype=bool)
        open_ = decided.copy()
        for leading, route in self.regions:
            if not open_.any():
                break
            if leading is not None:
                mine = open_ & bools(pc.match_substring_regex(national, f"^(?:{leading})"))
            else:
                mine = open_ & route.valid(national)
            found |= mine & route.valid(national, mobile=mobile)
            open_ &= ~mine
        return found, decided


@functools.lru_cache(maxsize=512)
def _country_route(code: int) -> _CountryRoute | None:
    """The calling code's route, or None where a pattern is beyond the vectorized engine."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ())
    main = phonenumbers.PhoneMetadata.metadata_for_region(regions[0]) if regions else None
    if main is None:
        return None
    found = []
    for region in regions:
        route = _type_route(region)
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if route is None or metadata is None:
            return None
        found.append((metadata.leading_digits, route))
    parsing = main.national_prefix_for_parsing or None
    country = _CountryRoute(_plain(parsing) if parsing else None, tuple(found))
    try:  # RE2 (Arrow) must compile every pattern; else the parser reads this code
        country.mobiles(pa.array(["1"]))
    except pa.ArrowInvalid:
        return None
    return country


@functools.lru_cache(maxsize=1)
def _calling_codes() -> str:
    """Regex alternatives of the geographic calling codes libphonenumber knows (prefix-free)."""
    return "|".join(
        str(c)
        for c in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
        if c != 0 and "001" not in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[c]
    )


def _e164_canonical(text: pa.Array, e164: np.ndarray, mobile: bool) -> np.ndarray:
    """E.164-shaped cells that are libphonenumber's own E.164 of a valid number (a mobile, with
    ``mobile``), found without the parser, for every calling code: ``+<cc>`` and a national
    number not starting with 0 that :class:`_CountryRoute` decides and finds valid. Everything
    else (``+886 0912 345 678``'s trunk 0, a national prefix the code's region strips, a number
    libphonenumber does not find valid) is left to the parser, which rewrites or refuses it."""
    found = np.zeros(len(text), dtype=bool)
    if not e164.any():
        return found
    where = np.flatnonzero(e164)
    cells = text.take(pa.array(where))
    parts = pc.extract_regex(cells, f"^\\+(?P<cc>{_calling_codes()})(?P<nsn>[1-9][0-9]*)$")
    codes = pc.struct_field(parts, "cc")
    national = pc.struct_field(parts, "nsn")
    code_values = codes.to_numpy(zero_copy_only=False)
    for code in pc.unique(codes).drop_null().to_pylist():
        route = _country_route(int(code))
        if route is None:
            continue
        mine = np.flatnonzero(code_values == code)
        good, _ = route.mobiles(national.take(pa.array(mine)), mobile)
        found[where[mine[good]]] = True
    return found


def e164_column(
    text: pa.Array, region: str | None, parse: np.ndarray, already: np.ndarray, mobile: bool = False
) -> tuple[pa.Array, np.ndarray, dict[str, np.ndarray]]:
    """``text`` with the ``parse`` cells replaced by their E.164 form; mask of the cells now E.164;
    masks of refused cells by why (:data:`EXTENSION`, :data:`NOT_MOBILE`; any other refused
    cell is :data:`INVALID`).

    ``already`` marks cells of E.164 shape (checked by the caller, vectorized): they are kept
    as written when they are libphonenumber's E.164 of a valid number (a mobile, with
    ``mobile``) of their calling code's region (vectorized, :class:`_CountryRoute`), else read
    by the parser (``+8860912345678`` becomes ``+886912345678``); local numbers of the region's plain form take a
    vectorized route (:class:`_NationalRoute`); only the distinct values left meet the parser,
    once each.
    """
    refused: dict[str, np.ndarray] = {}
    ok = _e164_canonical(text, already, mobile)
    todo = parse & ~ok
    if not todo.any():
        return text, ok, refused
    routed = _by_route(text, region, todo, mobile)
    if routed is not None:
        text, good = routed
        ok |= good
        todo &= ~good
        if not todo.any():
            return text, ok, refused
    distinct = pc.unique(text.filter(pa.array(todo))).drop_null()
    readings = [read_number(v, region, mobile) for v in distinct.to_pylist()]
    mapped = pa.array([e164 for e164, _ in readings], type=text.type)
    where = pc.index_in(text, value_set=distinct)
    converted = mapped.take(where)
    good = todo & converted.is_valid().to_numpy(zero_copy_only=False)
    ok |= good
    for why in (EXTENSION, NOT_MOBILE):
        if any(reason == why for _, reason in readings):
            flagged = pa.array([reason == why for _, reason in readings]).take(where)
            refused[why] = todo & bools(flagged)
    return pc.if_else(pa.array(good), converted, text), ok, refused
