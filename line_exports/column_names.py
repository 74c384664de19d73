"""The source's column names, checked before any row is: each a text, none twice.

A query's result or an upstream asset's frame may name two columns alike (``SELECT *, email
AS email``, ``a.*, b.*``, ``pd.concat(..., axis=1)``) or name one with a number (an upstream
column ``5``). Which of two ``title`` values would be sent is a guess, so the run fails before
sending, naming the columns and where they came from (:class:`~line_exports.rules.SchemaError`,
the export's setting errors' kind); a name that is not a text is taken as its text (``5`` is
``'5'``) unless another column already has that text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

import pandas as pd

from line_exports.rules import SchemaError


def text_names(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """``frame`` with every column name a ``str`` (the same frame when they all are).

    ``origin``: where the rows come from, for the message (``the query``, ``upstream asset
    'orders'``). Raises :class:`~line_exports.rules.SchemaError` naming every name two or more
    columns have (as text: ``5`` and ``'5'`` are one name), and how many.
    """
    names = list(frame.columns)
    texts = [name if type(name) is str else str(name) for name in names]
    counts = Counter(texts)
    twice = [name for name, count in counts.items() if count > 1]
    if twice:
        raise SchemaError(_message(origin, names, texts, twice, counts))
    if all(type(name) is str for name in names):
        return frame
    frame = frame.copy(deep=False)
    frame.columns = pd.Index(texts, dtype=object)
    return frame


def checked_chunks(chunks: Iterable[pd.DataFrame], origin: str) -> Iterator[pd.DataFrame]:
    """Each chunk through :func:`text_names` (the first refused fails the run before any row
    of it is checked or sent). A chunk of no row (a source's result of none, or an upstream
    frame of none: their columns) is checked and not passed on: two columns of one name fail
    the run whether or not rows came (a query's names do not change with its rows)."""
    for chunk in chunks:
        checked = text_names(chunk, origin)
        if len(checked):
            yield checked


def _message(
    origin: str, names: list[object], texts: list[str], twice: list[str], counts: Counter[str]
) -> str:
    parts = []
    for text in twice:
        spelt = [name for name, t in zip(names, texts, strict=True) if t == text]
        others = [repr(n) for n in spelt if type(n) is not str]
        how = f" (named {', '.join(others)}, not a text)" if others else ""
        parts.append(f"{counts[text]} columns named {text!r}{how}")
    return (
        f"{origin} returns {' and '.join(parts)}: which one to send would be a guess, so "
        "nothing was sent; give each column its own name (rename one, or leave it out)"
    )
