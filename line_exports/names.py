"""The closest known name, for "did you mean ...?" in every message about a misspelled name."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a known name is close enough, else an empty string."""
    found = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {found[0]!r}?)" if found else ""
