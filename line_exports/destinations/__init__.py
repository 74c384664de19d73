"""Every destination, one module each; a module joins by defining ``DESTINATION``."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from line_exports.destination import Destination


@cache
def destinations() -> dict[str, Destination]:
    """Destination type name (as in ``result_connection`` / ``--result`` JSON) -> destination."""
    found: dict[str, Destination] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        destination = getattr(module, "DESTINATION", None)
        if isinstance(destination, Destination):
            found[destination.type_name] = destination
    return found


def get_destination(type_name: str) -> Destination:
    """The destination for a type name, or an error listing the known ones."""
    known = destinations()
    if type_name not in known:
        raise ValueError(
            f"unknown destination type {type_name!r}; known: {', '.join(sorted(known))}"
        )
    return known[type_name]
