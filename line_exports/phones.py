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
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc

from line_exports.arrow_text import bools, value_offsets
from line_exports.digit_automaton import Check, compile_checks

try:  # Python's own regex parser, to read where a national-prefix pattern can start
    from re import _parser as _PARSER  # type: ignore[attr-defined]
except ImportError:  # Python 3.10
    import sre_parse as _PARSER  # type: ignore[no-redef]

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


def _fits(desc: Desc, length: int) -> bool:
    """Whether a number of ``length`` digits has one of ``desc``'s possible lengths (none: any)."""
    return not desc[1] or length in desc[1]


def _either(patterns: list[str]) -> str:
    return "|".join(f"(?:{pattern})" for pattern in patterns)


def _all_of(cells: pa.Array, checks: tuple[Check, ...], head: str) -> np.ndarray:
    """Cells that are ``head`` (a regex) and then a full match of each wanted pattern and of no unwanted
    one. Each check reads only the cells the checks before it kept."""
    kept = np.arange(len(cells))
    for pattern, wanted in checks:
        hit = bools(pc.match_substring_regex(cells, f"^{head}(?:{pattern})$"))
        passed = hit if wanted else ~hit
        if not passed.all():
            kept = kept[passed]
            if not len(kept):
                break
            cells = cells.filter(pa.array(passed))
    return kept


def _digits(text: pa.Array, head: str, lengths: np.ndarray | None) -> np.ndarray:
    """Digits after the head of each cell (``lengths`` when the caller knows them)."""
    if lengths is not None:
        return lengths
    size = pc.fill_null(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)
    return size - len(head)


_ASCII_DIGITS = b"0123456789"


def _digit_matrix(cells: pa.Array, head: str, length: int) -> np.ndarray | None:
    """The ASCII codes of the digits after ``head`` of every cell, a (cells, length) view of
    the cells' bytes; None unless every cell is exactly ``head`` and ``length`` ASCII digits."""
    width = len(head) + length
    offsets = value_offsets(cells)
    if cells.null_count or not len(cells) or (np.diff(offsets) != width).any():
        return None
    data = np.frombuffer(cells.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    rows = data.reshape(len(cells), width)
    written = head.encode()
    if any((rows[:, i] != byte).any() for i, byte in enumerate(written)):
        return None
    others = bytes(byte for byte in written if byte not in _ASCII_DIGITS)
    if data.tobytes().translate(None, _ASCII_DIGITS) != others * len(cells):
        return None  # a byte that is not an ASCII digit after the head
    return rows[:, len(head) :]


def _passing(cells: pa.Array, checks: tuple[Check, ...], head: str, length: int) -> np.ndarray:
    """Mask of the cells, ``head`` and a national number of ``length`` digits, that pass
    ``checks``: by one automaton over the digits (:mod:`line_exports.digit_automaton`) where
    it takes the patterns, else by RE2, pattern by pattern."""
    automaton = compile_checks(checks, length)
    digits = _digit_matrix(cells, head, length) if automaton is not None else None
    if automaton is not None and digits is not None:
        return automaton.run(digits, ord("0"))
    found = np.zeros(len(cells), dtype=bool)
    found[_all_of(cells, checks, re.escape(head))] = True
    return found


def _by_length(
    text: pa.Array,
    lengths: np.ndarray,
    checks_for: Callable[[int], tuple[Check, ...] | None],
    head: str,
) -> np.ndarray:
    """Cells that pass the checks of their national number's length."""
    found = np.zeros(len(text), dtype=bool)
    if not len(text):
        return found
    present = np.flatnonzero(np.bincount(np.maximum(lengths + 1, 0))) - 1
    for length in present.tolist():
        checks = checks_for(length) if length >= 0 else None
        if checks is None:
            continue
        if len(present) == 1:
            found |= _passing(text, checks, head, length)
        else:
            rows = np.flatnonzero(lengths == length)
            found[rows[_passing(text.take(rows), checks, head, length)]] = True
    return found


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

    def valid(
        self,
        text: pa.Array,
        mobile: bool = False,
        head: str = "",
        lengths: np.ndarray | None = None,
    ) -> np.ndarray:
        """Cells of ``text`` that libphonenumber finds valid numbers (and, with ``mobile``, of a
        mobile type). A cell is ``head`` (``+81``, ``0``; none by default) and then
        the national number, of ``lengths`` digits (counted when not given). The cells of one
        length meet one pattern of every type that has that length (a valid number matches
        the general pattern and one of them), not one pattern per type."""
        lengths = _digits(text, head, lengths)
        return _by_length(text, lengths, lambda length: _checks(self, length, mobile), head)


@functools.lru_cache(maxsize=4096)
def _checks(route: _NationalRoute, length: int, mobile: bool) -> tuple[Check, ...] | None:
    """What libphonenumber's ``_number_type_helper`` asks of a national number of ``length``
    digits for the number to be valid (a mobile, with ``mobile``), as patterns to match or not
    match, the most telling first; None when no number of that length is."""
    if not _fits(route.general, length):
        return None
    types = dict(route.types)
    if not mobile:
        any_type = [desc[0] for desc in types.values() if _fits(desc, length)]
        return ((_either(any_type), True), (route.general[0], True)) if any_type else None
    kind = types.get("fixed_line" if route.same_mobile_and_fixed_line else "mobile")
    if kind is None or not _fits(kind, length):
        return None
    earlier = [
        types[name][0]
        for name in _BEFORE_FIXED_AND_MOBILE
        if name in types and _fits(types[name], length)
    ]
    checks: list[Check] = [(kind[0], True)]
    if earlier:
        checks.append((_either(earlier), False))
    return (*checks, (route.general[0], True))


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
    rows = np.flatnonzero(candidates)
    offsets = value_offsets(text)
    try:  # the candidates alone, "0" then the national number
        kept = route.valid(text.take(rows), mobile, "0", offsets[rows + 1] - offsets[rows] - 1)
    except pa.ArrowInvalid:  # a pattern beyond RE2: the parser reads them
        return None
    if not kept.any():
        return None
    good = np.zeros(len(text), dtype=bool)
    good[rows[kept]] = True
    rest = pc.utf8_slice_codeunits(text, 1)
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

    def mobiles(
        self,
        text: pa.Array,
        mobile: bool = True,
        head: str = "",
        lengths: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(mobiles, or with ``mobile=False`` valid numbers of any type; cells this route
        decides) of ``text``: ``head`` (``+1``) and then a national number that
        does not start with 0, of ``lengths`` digits (counted when not given)."""
        lengths = _digits(text, head, lengths)
        size = len(text)
        decided = np.ones(size, dtype=bool)
        if self.undecided is not None:
            stripped = pc.match_substring_regex(text, f"^{re.escape(head)}(?:{self.undecided})")
            decided = ~bools(stripped)
        found = np.zeros(size, dtype=bool)
        open_ = np.flatnonzero(decided)
        for leading, route in self.regions:
            if not len(open_):
                break
            cells = text if len(open_) == size else text.take(open_)
            if len(self.regions) == 1:
                mine = np.ones(len(open_), dtype=bool)
                valid = route.valid(cells, mobile, head, lengths[open_])
            elif leading is not None:
                mine = bools(pc.match_substring_regex(cells, f"^{re.escape(head)}(?:{leading})"))
                valid = route.valid(cells, mobile, head, lengths[open_])
            else:  # the region whose patterns give the number a type, the one that types it
                mine = route.valid(cells, False, head, lengths[open_])
                valid = route.valid(cells, True, head, lengths[open_]) if mobile else mine
            found[open_[mine & valid]] = True
            open_ = open_[~mine]
        return found, decided


def _first(items: list) -> tuple[set[int] | None, bool]:
    """(code points a match of a parsed regex can start with, None when any; whether it can
    match the empty string), from Python's own parse of it."""
    chars: set[int] = set()
    for op, av in items:
        part: set[int] | None
        if op is _PARSER.LITERAL:
            part, empty = {av}, False
        elif op is _PARSER.IN:
            part, empty = set(), False
            for kind, value in av:
                if kind is _PARSER.LITERAL:
                    part.add(value)
                elif kind is _PARSER.RANGE:
                    part.update(range(value[0], value[1] + 1))
                else:  # a negated set, a category
                    return None, True
        elif op is _PARSER.BRANCH:
            firsts = [_first(branch) for branch in av[1]]
            if any(f is None for f, _ in firsts):
                return None, True
            part = set().union(*(f for f, _ in firsts if f is not None))
            empty = any(e for _, e in firsts)
        elif op is _PARSER.SUBPATTERN:
            part, empty = _first(av[-1])
        elif op in (_PARSER.MAX_REPEAT, _PARSER.MIN_REPEAT):
            part, empty = _first(av[2])
            empty = empty or av[0] == 0
        elif op is _PARSER.AT:  # an anchor reads no character
            part, empty = set(), True
        else:
            return None, True
        if part is None:
            return None, True
        chars |= part
        if not empty:
            return chars, False
    return chars, True


def _starts_with_zero(pattern: str) -> bool:
    """Whether every match of ``pattern`` starts with a 0, so that it never matches at the start
    of a national number that starts with 1-9."""
    chars, empty = _first(list(_PARSER.parse(pattern)))
    return chars is not None and not empty and chars <= {ord("0")}


@functools.lru_cache(maxsize=512)
def _country_route(code: int) -> _CountryRoute | None:
    """The calling code's route, or None where a pattern is beyond the vectorized engine."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ())
    main = phonenumbers.PhoneMetadata.metadata_for_region(regions[0]) if regions else None
    if main is None:
        return None
    found = []
    patterns = []
    for region in regions:
        route = _type_route(region)
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if route is None or metadata is None:
            return None
        found.append((metadata.leading_digits, route))
        patterns += [route.general[0], *(desc[0] for _, desc in route.types)]
        patterns += [metadata.leading_digits] if metadata.leading_digits else []
    parsing = _plain(main.national_prefix_for_parsing) if main.national_prefix_for_parsing else None
    undecided = None if parsing is None or _starts_with_zero(parsing) else parsing
    try:  # RE2 (Arrow) must compile every pattern; else the parser reads this code
        for pattern in [*patterns, *([undecided] if undecided else [])]:
            pc.match_substring_regex(pa.array(["1"]), f"^(?:{pattern})$")
    except pa.ArrowInvalid:
        return None
    return _CountryRoute(undecided, tuple(found))


@functools.lru_cache(maxsize=1)
def _code_table() -> tuple[np.ndarray, np.ndarray]:
    """(calling code, its number of digits) by the first three digits after ``+``, for the
    geographic calling codes libphonenumber knows (0 where none). Calling codes are prefix-free,
    so three digits name at most one."""
    codes = {
        c
        for c, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items()
        if c != 0 and "001" not in regions
    }
    code, size = np.zeros(1000, dtype=np.int64), np.zeros(1000, dtype=np.int64)
    for first in range(100, 1000):
        owners = [(int(str(first)[:n]), n) for n in (1, 2, 3) if int(str(first)[:n]) in codes]
        if len(owners) > 1:
            raise AssertionError(f"calling codes are not prefix-free: {owners}")
        if owners:
            code[first], size[first] = owners[0]
    return code, size


def _calling_codes_of(text: pa.Array, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(calling code, digits after it) of the E.164-shaped cells ``where`` (``+`` and at least
    seven ASCII digits), read from their bytes; code 0 when no geographic calling code starts
    the number or a 0 follows it (a trunk prefix: the parser's work)."""
    offsets = value_offsets(text)
    data = np.frombuffer(text.buffers()[2], dtype=np.uint8)
    start = offsets[where]
    first = data.take(start + 1, mode="clip").astype(np.int64) * 100
    first += data.take(start + 2, mode="clip").astype(np.int64) * 10
    first += data.take(start + 3, mode="clip")
    table, sizes = _code_table()
    first -= ord("0") * 111
    code, size = table.take(first, mode="clip"), sizes.take(first, mode="clip")
    code[data.take(start + 1 + size, mode="clip") == ord("0")] = 0
    return code, offsets[where + 1] - start - 1 - size


def _e164_canonical(text: pa.Array, e164: np.ndarray, mobile: bool) -> np.ndarray:
    """E.164-shaped cells that are libphonenumber's own E.164 of a valid number (a mobile, with
    ``mobile``), found without the parser, for every calling code: ``+<cc>`` and a national
    number not starting with 0 that :class:`_CountryRoute` decides and finds valid. Everything
    else (``+886 0912 345 678``'s trunk 0, a national prefix the code's region strips, a number
    libphonenumber does not find valid) is left to the parser, which rewrites or refuses it.
    The calling code is read from each cell's first bytes; the digits after it, in place, run
    through one automaton per code and length (:func:`_passing`)."""
    found = np.zeros(len(text), dtype=bool)
    if not e164.any():
        return found
    where = np.flatnonzero(e164)
    codes, lengths = _calling_codes_of(text, where)
    for code in np.flatnonzero(np.bincount(codes)).tolist():
        route = _country_route(code) if code else None
        if route is None:
            continue
        mine = codes == code
        rows = where if mine.all() else where[mine]
        cells = text if len(rows) == len(text) else text.take(rows)
        try:
            good, _ = route.mobiles(cells, mobile, f"+{code}", lengths[mine])
        except pa.ArrowInvalid:  # a pattern beyond RE2: the parser reads these
            continue
        found[rows[good]] = True
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
