"""Text checks over Arrow UTF-8 arrays, without a Python object per cell.

Normalizers use the kernels pandas' Arrow strings use (trim, lower, upper). A pattern is
matched, fastest first, as a set of words, as a run of ASCII character classes over the raw
bytes (``bytes.translate``, no regex engine), as a prefix, by RE2 where RE2 means what Python's
``re`` means, or else by ``re``: every route gives exactly ``re.fullmatch``'s answer
(``line_exports_tests/test_rules_vectorized.py`` checks each against it).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_PHONE_SEPARATORS = re.compile(r"[\s\-().]")
# The same set for ASCII text: Python's \s there is \t\n\v\f\r, \x1c-\x1f and space.
_PHONE_SEPARATOR_BYTES = bytes([*range(0x09, 0x0E), *range(0x1C, 0x21), *b"-()."])
_PHONE_SEPARATORS_RE2 = r"[\t-\r\x1c-\x20\-().]"
# ``(?!word$)rest``: refuse one word, e.g. the dedup key "undefined" (RE2 has no lookahead).
_REFUSED_WORD = re.compile(r"\(\?!([A-Za-z0-9_]+)\$\)([^|]*)", re.DOTALL)
_WORDS = re.compile(r"[A-Za-z0-9_-]*(?:\|[A-Za-z0-9_-]*)*")
_REPEAT = re.compile(r"\{[0-9]+(?:,[0-9]*)?\}")
_UNBOUNDED = np.iinfo(np.int64).max
try:  # Python's own regex parser: patterns are taken apart exactly as ``re`` reads them
    from re import _parser as _PARSER  # type: ignore[attr-defined]
except ImportError:  # Python 3.10
    import sre_parse as _PARSER  # type: ignore[no-redef]


def _never_trimmed() -> bytes:
    """Bytes that utf8_trim_whitespace never removes from either end of a value.

    Arrow itself is asked, for each ASCII character; bytes >= 0x80 (part of a multi-byte
    character, maybe Unicode whitespace) are left out, so they always lead to a real trim.
    """
    ascii_chars = pa.array([chr(c) for c in range(128)])
    trimmed = pc.equal(pc.utf8_trim_whitespace(ascii_chars), "").to_numpy(zero_copy_only=False)
    return bytes(np.flatnonzero(~trimmed).tolist())


_NEVER_TRIMMED = _never_trimmed()


def bools(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow result as a numpy mask (null counts as False)."""
    if values.null_count:
        values = pc.fill_null(values, False)
    return values.to_numpy(zero_copy_only=False)


def value_offsets(text: pa.Array) -> np.ndarray:
    """Where each value of a string array starts and ends in its data buffer (no copy)."""
    if len(text) == 0:
        return np.zeros(1, dtype=np.int64)
    width = 8 if pa.types.is_large_string(text.type) else 4
    offsets = np.frombuffer(
        text.buffers()[1], dtype=f"<i{width}", count=len(text) + 1, offset=text.offset * width
    )
    return offsets.astype(np.int64, copy=False)


def _data(text: pa.Array) -> np.ndarray:
    """A string array's whole data buffer as bytes (no copy)."""
    buffer = text.buffers()[2] if len(text) else None
    return np.frombuffer(buffer, dtype=np.uint8) if buffer is not None else np.zeros(0, np.uint8)


def _layout(text: pa.Array) -> tuple[np.ndarray, bytes]:
    """Offsets (from 0) and a copy of the bytes of a string array's values, to work on at once.

    The bytes may include some under null slots (Arrow does not forbid it); every user below
    only takes a shortcut when the bytes allow it, so such bytes can only cost time.
    """
    offsets = value_offsets(text)
    start, end = int(offsets[0]), int(offsets[-1])
    return offsets - start, _data(text)[start:end].tobytes()


def _is_ascii(text: pa.Array) -> bool:
    return _layout(text)[1].isascii()


def _trim(text: pa.Array) -> pa.Array:
    """pandas' str.strip (Arrow's utf8_trim_whitespace), skipped when no value can change.

    Only the first and last byte of each value are looked at. For an empty value these are
    its neighbours' bytes: at worst a trim that changes nothing.
    """
    offsets, data = value_offsets(text), _data(text)
    if not len(data):
        return text
    for edge in (offsets[:-1], offsets[1:] - 1):
        if data.take(edge, mode="clip").tobytes().translate(None, _NEVER_TRIMMED):
            return pc.utf8_trim_whitespace(text)
    return text


def _remove_phone_separators(text: pa.Array, ascii_only: bool) -> pa.Array:
    """pandas' str.replace(r"[\\s\\-().]", "", regex=True), which runs Python's re.sub."""
    if ascii_only:
        data = _layout(text)[1]
        if len(data.translate(None, _PHONE_SEPARATOR_BYTES)) == len(data):
            return text  # no separator anywhere
        return pc.replace_substring_regex(text, _PHONE_SEPARATORS_RE2, "")
    sub = _PHONE_SEPARATORS.sub
    return pa.array([None if v is None else sub("", v) for v in text.to_pylist()], type=text.type)


def re2_compatible(pattern: str) -> bool:
    """Whether RE2 matches ``pattern`` exactly as Python's ``re`` does, on any text.

    Conservative: plain literals, classes, groups ``(?:``, alternation and counted repeats only.
    Escapes must be of punctuation (``\\d``, ``\\s``, ``\\w``, ``\\b`` differ: Unicode in ``re``);
    no anchors (``$`` also matches before a final newline in ``re``), lookarounds, inline flags,
    nested ``[`` (POSIX classes in RE2) or a ``]`` opening a class.
    """
    in_class = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1 : i + 2]
            if not nxt or not nxt.isascii() or nxt.isalnum():
                return False
            i += 2
            continue
        if in_class:
            if c == "[":
                return False
            in_class = c != "]"
        elif c == "[":
            in_class = True
            i += 2 if pattern[i + 1 : i + 2] == "^" else 1
            if pattern[i : i + 1] == "]":
                return False
            continue
        else:
            flags_or_lookaround = pattern.startswith("(?", i) and not pattern.startswith("(?:", i)
            odd_brace = c == "{" and not _REPEAT.match(pattern, i)
            if c in "^$" or flags_or_lookaround or odd_brace:
                return False
        i += 1
    return not in_class


@dataclass(frozen=True)
class _Shape:
    """A pattern that is a run of ASCII character classes: fixed counts, the last maybe a range.

    E.g. ``U[0-9a-f]{32}``, a UUID, ``\\+[1-9][0-9]{6,14}``, ``[0-9a-zA-Z\\-_]{1,256}``. Every
    byte is translated to its class's symbol; a value matches when its symbols are ``head``
    followed by ``tail`` symbols, and its size is in range. Classes are ASCII, so a value with
    any other byte fails, and a matching value's bytes are its characters.
    """

    table: bytes  # byte -> class symbol (0: in no class)
    head: bytes  # symbols of the fixed part
    tail: int  # symbol of the repeated last class, 0 if none
    min_size: int
    max_size: int
    narrower: tuple[tuple[int, bytes], ...] = ()  # (head position, byte -> in its class)

    def __call__(self, text: pa.Array) -> np.ndarray:
        offsets, data = _layout(text)
        sizes = np.diff(offsets)
        ok = (sizes >= self.min_size) & (sizes <= self.max_size)
        if text.null_count:
            ok &= text.is_valid().to_numpy(zero_copy_only=False)
        expected = self._expected(offsets, sizes, ok, len(data))
        symbols = data.translate(self.table)
        if symbols != expected:
            ok[_value_of(offsets, _differences(symbols, expected))] = False
        if self.narrower:
            rows = np.flatnonzero(ok)
            starts = offsets[:-1][rows]
            got = np.frombuffer(data, dtype=np.uint8)
            for position, members in self.narrower:
                inside = np.frombuffer(members, dtype=np.uint8)[got[starts + position]]
                ok[rows[inside == 0]] = False
        return ok

    def _expected(self, offsets: np.ndarray, sizes: np.ndarray, ok: np.ndarray, size: int) -> bytes:
        """The symbols every value of the right size must have, laid out like the values."""
        width = len(self.head)
        if not width:
            return bytes([self.tail]) * size
        if not self.tail:
            odd = np.flatnonzero((sizes != width) & (sizes != 0))
            if len(odd) * 256 <= size:  # a Python step per odd value vs ~1.4 ns per byte
                # Fixed width: runs of values of that width (or empty) are the head repeated;
                # the few other values get a symbol no byte has.
                parts = []
                done = 0
                for value in odd.tolist():
                    start, end = int(offsets[value]), int(offsets[value + 1])
                    parts += [self.head * ((start - done) // width), _NO_SYMBOL * (end - start)]
                    done = end
                parts.append(self.head * ((size - done) // width))
                return b"".join(parts)
        wanted = np.full(size, self.tail or _NO_SYMBOL[0], dtype=np.uint8)
        starts = offsets[:-1][ok]  # values long enough: their heads never overlap
        at = (starts[:, None] + np.arange(width)).ravel()
        wanted[at] = np.tile(np.frombuffer(self.head, dtype=np.uint8), len(starts))
        return wanted.tobytes()


_NO_SYMBOL = b"\xff"  # symbols are 1..254


def _differences(got: bytes, wanted: bytes) -> np.ndarray:
    """Positions where two equally long byte strings differ (compared 8 bytes at a time)."""
    pad = b"\0" * (-len(got) % 8)
    words = np.flatnonzero(
        np.frombuffer(got + pad, dtype=np.uint64) != np.frombuffer(wanted + pad, dtype=np.uint64)
    )
    at = (words[:, None] * 8 + np.arange(8)).ravel()
    at = at[at < len(got)]
    got_bytes = np.frombuffer(got, dtype=np.uint8)
    return at[got_bytes[at] != np.frombuffer(wanted, dtype=np.uint8)[at]]


def _value_of(offsets: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The value each byte position belongs to (empty values own no bytes)."""
    return np.searchsorted(offsets, positions, side="right") - 1


def _parse(pattern: str) -> list[tuple[Any, Any]] | None:
    """The pattern's top-level items as Python's own ``re`` parser reads them."""
    try:
        tokens = list(_PARSER.parse(pattern))
    except re.error:
        return None
    return tokens


def _shape(tokens: list[tuple[Any, Any]]) -> _Shape | None:
    """The parsed pattern as a :class:`_Shape`, or None if it is not one."""
    atoms: list[tuple[frozenset[int], int, int]] = []  # (class, min count, max count)
    for op, arg in tokens:
        low, high, item = 1, 1, (op, arg)
        if op is _PARSER.MAX_REPEAT:
            low, high, sub = arg
            if len(sub) != 1:
                return None
            item = list(sub)[0]
            high = _UNBOUNDED if high == _PARSER.MAXREPEAT else high
        chars = _class_chars(item)
        if chars is None:
            return None
        atoms.append((chars, low, high))
    if not atoms or any(low != high for _, low, high in atoms[:-1]):
        return None
    # Overlapping classes (e.g. [1-9] and [0-9]) share the symbol of their union; a narrower
    # class in the fixed part is checked again at its positions.
    unions: list[frozenset[int]] = []
    for chars, _, _ in atoms:
        touching = [u for u in unions if u & chars]
        unions = [u for u in unions if not u & chars] + [chars.union(*touching)]
    if len(unions) > 254:
        return None
    symbol = {u: i + 1 for i, u in enumerate(unions)}
    union_of = {chars: next(u for u in unions if chars <= u) for chars, _, _ in atoms}
    table = bytearray(256)
    for u, i in symbol.items():
        for c in u:
            table[c] = i
    last_chars, last_low, last_high = atoms[-1]
    variable = last_low != last_high
    if variable and union_of[last_chars] != last_chars:
        return None
    head = b""
    narrower: list[tuple[int, bytes]] = []
    for chars, count, _ in atoms[:-1] if variable else atoms:
        if union_of[chars] != chars:
            members = bytes(c in chars for c in range(256))
            narrower += [(len(head) + k, members) for k in range(count)]
        head += bytes([symbol[union_of[chars]]]) * count
    if not variable:
        return _Shape(bytes(table), head, 0, len(head), len(head), tuple(narrower))
    high = _UNBOUNDED if last_high == _UNBOUNDED else len(head) + last_high
    tail = symbol[last_chars]
    return _Shape(bytes(table), head, tail, len(head) + last_low, high, tuple(narrower))


@dataclass(frozen=True)
class _PrefixThenAnything:
    """``https?://.+``: literal prefixes (optional characters spelled out), then ``.*``/``.+``.

    Matched by ``starts_with`` per prefix, a size check and one search for a newline (the only
    character ``.`` refuses).
    """

    prefixes: tuple[str, ...]
    min_rest: int  # 0 or 1 characters after the prefix (so the same number of bytes)

    def __call__(self, text: pa.Array) -> np.ndarray:
        offsets = value_offsets(text)
        sizes = np.diff(offsets)
        ok = np.zeros(len(text), dtype=bool)
        for prefix in self.prefixes:
            long_enough = sizes >= len(prefix.encode()) + self.min_rest
            ok |= bools(pc.starts_with(text, prefix)) & long_enough
        data = _data(text)[offsets[0] : offsets[-1]]
        if b"\n" in data.tobytes():  # one scan of the whole buffer beats a search per value
            newlines = np.flatnonzero(data == ord("\n"))
            ok[_value_of(offsets - offsets[0], newlines)] = False
        return ok


def _prefix_then_anything(tokens: list[tuple[Any, Any]]) -> _PrefixThenAnything | None:
    """The parsed pattern as a :class:`_PrefixThenAnything`, or None if it is not one."""
    if not tokens:
        return None
    op, arg = tokens[-1]
    if op is not _PARSER.MAX_REPEAT or arg[0] > 1 or arg[1] != _PARSER.MAXREPEAT:
        return None
    if list(arg[2]) != [(_PARSER.ANY, None)]:
        return None
    prefixes = [""]
    for op, arg in tokens[:-1]:
        if op is _PARSER.LITERAL:
            prefixes = [p + chr(arg) for p in prefixes]
        elif (
            op is _PARSER.MAX_REPEAT
            and arg[:2] == (0, 1)
            and len(arg[2]) == 1
            and list(arg[2])[0][0] is _PARSER.LITERAL
            and len(prefixes) < 8
        ):
            optional = chr(list(arg[2])[0][1])
            prefixes = prefixes + [p + optional for p in prefixes]
        else:
            return None
    if any("\n" in prefix for prefix in prefixes):
        return None  # the newline check below would refuse the prefix itself
    return _PrefixThenAnything(tuple(prefixes), tokens[-1][1][0])


def _class_chars(item: tuple[Any, Any]) -> frozenset[int] | None:
    """The ASCII characters one parsed item matches (a literal or a [...] class), or None."""
    op, arg = item
    if op is _PARSER.LITERAL:
        chars = {arg}
    elif op is _PARSER.IN:
        chars = set()
        for sub_op, sub_arg in arg:
            if sub_op is _PARSER.LITERAL:
                chars.add(sub_arg)
            elif sub_op is _PARSER.RANGE:
                chars.update(range(sub_arg[0], sub_arg[1] + 1))
            else:
                return None  # negation, \d, \w, ...
    else:
        return None
    return frozenset(chars) if max(chars) < 128 else None


@dataclass(frozen=True)
class _Matcher:
    """How one full-match pattern runs (see the section's comment); ``refused``: words to fail."""

    words: tuple[str, ...] | None = None
    shape: _Shape | _PrefixThenAnything | None = None
    re2: str | None = None
    python: re.Pattern[str] | None = None
    refused: tuple[str, ...] = ()

    def __call__(self, text: pa.Array) -> np.ndarray:
        if self.words is not None:
            return bools(pc.is_in(text, value_set=pa.array(self.words, text.type)))
        if self.shape is not None:
            ok = self.shape(text)
        elif self.re2 is not None:
            ok = _once_per_value(
                text, lambda values: bools(pc.match_substring_regex(values, self.re2))
            )
        else:
            assert self.python is not None
            fullmatch = self.python.fullmatch
            return np.fromiter(
                (v is not None and fullmatch(v) is not None for v in text.to_pylist()),
                dtype=bool,
                count=len(text),
            )
        if self.refused:
            ok &= ~bools(pc.is_in(text, value_set=pa.array(self.refused, text.type)))
        return ok


REPEAT_SAMPLE = 1024  # values looked at to decide whether matching distinct values pays


def _once_per_value(text: pa.Array, match: Callable[[pa.Array], np.ndarray]) -> np.ndarray:
    """``match(text)``, running ``match`` once per distinct value when the first values show
    repeats (an IP address, a page's URL: events repeat them). RE2 costs ~60 ns a value
    through Arrow; encoding a column of repeats costs ~10."""
    if len(text) >= 4 * REPEAT_SAMPLE:
        sample = text.slice(0, REPEAT_SAMPLE)
        if pc.count_distinct(sample).as_py() < REPEAT_SAMPLE // 2:
            encoded = pc.dictionary_encode(text)
            indices = pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False)
            if not len(encoded.dictionary):  # every value is null
                return np.zeros(len(text), dtype=bool)
            ok = match(encoded.dictionary)[indices]
            if text.null_count:
                ok &= text.is_valid().to_numpy(zero_copy_only=False)
            return ok
    return match(text)


@functools.lru_cache(maxsize=256)
def compile_matcher(pattern: str) -> _Matcher:
    if _WORDS.fullmatch(pattern):  # "JP|US|...": plain words, so a set of them
        return _Matcher(words=tuple(pattern.split("|")))
    body, refused = pattern, ()
    lookahead = _REFUSED_WORD.fullmatch(pattern)
    if lookahead is not None:
        # re: (?!w$) at the start fails on exactly "w" and "w\n" ($ also matches before a final
        # newline); the rest has no "|", so the lookahead guards the whole pattern.
        word = lookahead.group(1)
        body, refused = lookahead.group(2), (word, word + "\n")
    tokens = _parse(body) if re2_compatible(body) else None
    shape = (_shape(tokens) or _prefix_then_anything(tokens)) if tokens is not None else None
    if shape is not None:
        return _Matcher(shape=shape, refused=refused)
    if re2_compatible(body):
        anchored = f"^(?:{body})$"
        try:
            pc.match_substring_regex(pa.array([""]), anchored)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        else:
            return _Matcher(re2=anchored, refused=refused)
    return _Matcher(python=re.compile(pattern))


def normalize(text: pa.Array, steps: Iterable[str]) -> pa.Array:
    """Normalizers as Arrow kernels; ASCII-only columns take the (exactly equal) ASCII ones."""
    ascii_only: bool | None = None
    for step in steps:
        if step == "trim":
            text = _trim(text)
            continue
        if step == "undefined_as_missing":  # the literal "undefined": LINE reads it as not sent
            text = pc.if_else(pc.equal(text, "undefined"), pa.scalar(None, text.type), text)
            continue
        if step == "ascii_lowercase":  # A-Z only: a Kelvin sign is not made a "k" (emails)
            text = pc.ascii_lower(text)
            continue
        if step not in ("lowercase", "uppercase", "phone"):
            raise ValueError(f"unknown normalizer {step!r}")
        if ascii_only is None:
            ascii_only = _is_ascii(text)  # stays true: these steps keep ASCII text ASCII
        if step == "lowercase":
            text = pc.ascii_lower(text) if ascii_only else pc.utf8_lower(text)
        elif step == "uppercase":
            text = pc.ascii_upper(text) if ascii_only else pc.utf8_upper(text)
        else:
            text = _remove_phone_separators(text, ascii_only)
    return text
