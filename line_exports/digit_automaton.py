"""Regular expressions over ASCII digit strings of one length, run as numpy table lookups.

libphonenumber's number patterns are plain regular expressions over digits: literals, classes,
groups, alternation and counted repeats. For numbers of one known length, several of them are
compiled here together into one layered automaton (one transition table per digit position)
whose last states say whether a number fully matches every wanted pattern and no unwanted one.
``n`` numbers of ``L`` digits then cost ``L`` numpy ``take`` calls, instead of one RE2 call per
number and pattern. A pattern with anything else (anchors, look-arounds, back-references,
character categories other than ``\\d``), or an automaton past :data:`MAX_STATES` states in one
layer, is refused (:func:`compile_checks` returns None) and the caller uses RE2.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np

try:  # Python's own regex parser: patterns are taken apart exactly as ``re`` reads them
    from re import _parser as _PARSER  # type: ignore[attr-defined]
except ImportError:  # Python 3.10
    import sre_parse as _PARSER  # type: ignore[no-redef]

MAX_STATES = 20_000  # states in one layer before the automaton is refused
_DIGITS = frozenset(range(10))
Check = tuple[str, bool]  # (pattern, whether a match must match it (True) or must not)


class _Unsupported(Exception):
    pass


class _Nfa:
    """A Thompson automaton over the digits 0-9 (a move reads one digit; eps reads none)."""

    def __init__(self, pattern: str) -> None:
        self.moves: list[list[tuple[frozenset[int], int]]] = []
        self.eps: list[list[int]] = []
        self.start = self._state()
        self.accept = self._build(list(_PARSER.parse(pattern)), self.start)
        self._closures: dict[int, frozenset[int]] = {}
        self._steps: dict[tuple[frozenset[int], int], frozenset[int]] = {}

    def _state(self) -> int:
        self.moves.append([])
        self.eps.append([])
        return len(self.moves) - 1

    def _move(self, start: int, digits: frozenset[int]) -> int:
        end = self._state()
        self.moves[start].append((digits, end))
        return end

    def _join(self, ends: list[int]) -> int:
        end = self._state()
        for state in ends:
            self.eps[state].append(end)
        return end

    @staticmethod
    def _digit(code: int) -> frozenset[int]:
        return frozenset({code - 48}) if 48 <= code <= 57 else frozenset()

    def _set(self, items: list) -> frozenset[int]:
        digits: set[int] = set()
        negate = False
        for op, av in items:
            if op is _PARSER.LITERAL:
                digits |= self._digit(av)
            elif op is _PARSER.RANGE:
                digits |= {c - 48 for c in range(max(av[0], 48), min(av[1], 57) + 1)}
            elif op is _PARSER.NEGATE:
                negate = True
            elif op is _PARSER.CATEGORY and av is _PARSER.CATEGORY_DIGIT:
                digits |= _DIGITS
            else:
                raise _Unsupported(op)
        return _DIGITS - digits if negate else frozenset(digits)

    def _build(self, items: list, state: int) -> int:
        """Append ``items`` (a parsed sequence) from ``state``; the state after them."""
        for op, av in items:
            if op is _PARSER.LITERAL:
                state = self._move(state, self._digit(av))
            elif op is _PARSER.NOT_LITERAL:
                state = self._move(state, _DIGITS - self._digit(av))
            elif op is _PARSER.ANY:
                state = self._move(state, _DIGITS)
            elif op is _PARSER.IN:
                state = self._move(state, self._set(av))
            elif op is _PARSER.BRANCH:
                ends = []
                for branch in av[1]:
                    begin = self._state()
                    self.eps[state].append(begin)
                    ends.append(self._build(branch, begin))
                state = self._join(ends)
            elif op is _PARSER.SUBPATTERN:
                state = self._build(av[-1], state)
            elif op in (_PARSER.MAX_REPEAT, _PARSER.MIN_REPEAT):
                low, high, body = av
                for _ in range(low):
                    state = self._build(body, state)
                if high == _PARSER.MAXREPEAT:
                    loop = self._state()
                    self.eps[state].append(loop)
                    self.eps[self._build(body, loop)].append(loop)
                    state = loop
                else:
                    ends = [state]
                    for _ in range(high - low):
                        state = self._build(body, state)
                        ends.append(state)
                    state = self._join(ends)
            else:  # anchors, look-arounds, back-references, ...
                raise _Unsupported(op)
        return state

    def closure(self, state: int) -> frozenset[int]:
        found = self._closures.get(state)
        if found is None:
            seen, todo = {state}, [state]
            while todo:
                for nxt in self.eps[todo.pop()]:
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
            found = self._closures[state] = frozenset(seen)
        return found

    def step(self, states: frozenset[int], digit: int) -> frozenset[int]:
        reached: set[int] = set()
        for state in states:
            for digits, nxt in self.moves[state]:
                if digit in digits:
                    reached |= self.closure(nxt)
        return frozenset(reached)


class _Subsets:
    """The subsets of one :class:`_Nfa`'s states that digits lead to from its start, numbered
    as they are found (0: the empty set, from which nothing matches), with their moves:
    ``after(i)[digit]`` is the subset after ``digit`` from subset ``i``. Subset construction
    done once per subset, not once per state of every layer."""

    def __init__(self, nfa: _Nfa) -> None:
        self.nfa = nfa
        self.sets: list[frozenset[int]] = []
        self.ids: dict[frozenset[int], int] = {}
        self.accepts: list[bool] = []
        self.moves: list[list[int] | None] = []
        self.number(frozenset())
        self.start = self.number(nfa.closure(nfa.start))

    def number(self, states: frozenset[int]) -> int:
        found = self.ids.get(states)
        if found is None:
            found = self.ids[states] = len(self.sets)
            self.sets.append(states)
            self.accepts.append(self.nfa.accept in states)
            self.moves.append(None)
        return found

    def after(self, subset: int) -> list[int]:
        found = self.moves[subset]
        if found is None:
            states = self.sets[subset]
            found = self.moves[subset] = [
                self.number(self.nfa.step(states, digit)) for digit in range(10)
            ]
        return found


@dataclass(frozen=True)
class Layered:
    """An automaton over numbers of ``len(tables)`` digits: ``tables[i][state * 10 + digit]``
    is the state after digit ``i``; ``final[state]`` says whether the number passes."""

    tables: tuple[np.ndarray, ...]
    final: np.ndarray

    def run(self, digits: np.ndarray, zero: int = 0) -> np.ndarray:
        """Mask of the numbers that pass; ``digits``: (n, length) integers, ``zero`` for the
        digit 0 (``ord("0")`` for ASCII bytes), ``zero + 9`` at most."""
        state = np.zeros(len(digits), dtype=np.int64)
        for position, table in enumerate(self.tables):
            state *= 10
            state += digits[:, position]
            if zero:
                state -= zero
            state = table.take(state)
        return self.final.take(state)


@functools.lru_cache(maxsize=1024)
def _subsets_of(pattern: str) -> _Subsets:
    """One pattern's subsets, shared by every automaton (any length) built with it; raises
    :class:`_Unsupported` (or RecursionError) for a pattern beyond this module."""
    return _Subsets(_Nfa(pattern))


_BUILDING = threading.Lock()  # a _Subsets grows as automata are built: one build at a time


@functools.lru_cache(maxsize=4096)
def compile_checks(checks: tuple[Check, ...], length: int) -> Layered | None:
    """The automaton of numbers of ``length`` digits that fully match each wanted pattern and
    no unwanted one, or None when a pattern or the automaton's size is beyond this module.

    A state of layer ``i`` is one subset (:class:`_Subsets`) per pattern, reached by the first
    ``i`` digits; a layer's states are numbered in the order they are first reached (state by
    state, digit 0 to 9). A state from which some wanted pattern can no longer match is the
    one dead state (every subset empty)."""
    with _BUILDING:
        try:
            subsets = [_subsets_of(pattern) for pattern, _ in checks]
        except (_Unsupported, RecursionError):
            return None
        wanted = [want for _, want in checks]
        if len(subsets) == 1:
            return _one_pattern(subsets[0], wanted[0], length)
        return _patterns(subsets, wanted, length)


def _one_pattern(subsets: _Subsets, wanted: bool, length: int) -> Layered | None:
    """:func:`compile_checks` of one pattern: a layer's state is one subset (the empty one
    is already the dead state)."""
    layer = [subsets.start]
    tables = []
    for _ in range(length):
        index: dict[int, int] = {}
        table = [index.setdefault(nxt, len(index)) for i in layer for nxt in subsets.after(i)]
        if len(index) > MAX_STATES:
            return None
        tables.append(np.array(table, dtype=np.int64))
        layer = list(index)
    final = np.array(subsets.accepts, dtype=bool)[np.array(layer, dtype=np.int64)] == wanted
    return Layered(tuple(tables), final)


def _patterns(subsets: list[_Subsets], wanted: list[bool], length: int) -> Layered | None:
    """:func:`compile_checks` of several patterns: a layer's state is a tuple of subsets."""
    must = [k for k, want in enumerate(wanted) if want]
    dead = (0,) * len(subsets)

    def settle(states: tuple[int, ...]) -> tuple[int, ...]:
        return states if all(states[k] for k in must) else dead

    layer = [settle(tuple(s.start for s in subsets))]
    tables = []
    for _ in range(length):
        index: dict[tuple[int, ...], int] = {}
        table = [
            index.setdefault(settle(nxt), len(index))
            for states in layer
            for nxt in zip(*(s.after(i) for s, i in zip(subsets, states, strict=True)), strict=True)
        ]
        if len(index) > MAX_STATES:
            return None
        tables.append(np.array(table, dtype=np.int64))
        layer = list(index)
    final = np.array(
        [
            all(s.accepts[i] == want for s, i, want in zip(subsets, states, wanted, strict=True))
            for states in layer
        ],
        dtype=bool,
    )
    return Layered(tuple(tables), final)
