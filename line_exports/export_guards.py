"""The first-hour mistakes an export catches and names: a misspelled setting, a query path
that depends on the working directory, a column the destination does not know, an empty result.

Each is a small function :mod:`line_exports.export` (and ``line-exports plan``) calls; the
messages read like the ``.dig`` loader's (``unknown setting 'x' for maac (did you mean 'y'?)``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from line_exports.names import closest
from line_exports.rules import RuleSet

UNKNOWN_COLUMNS = ("warn", "fail")
EMPTY_RESULT = ("skip", "fail")


TD_ONLY_SETTINGS = {
    "td_api_key": "it is Treasure Data's API key, which TD's connector uses to reach TD; there "
    "is no Treasure Data account here (the query runs on this deployment's source), so it is "
    "not used. The {type} credentials ({fields}) belong to the result_connection in "
    "connections.yaml, read from the environment (<field>_env or ${{secret:name}})",
}
"""Settings of TD's result exports that exist only for TD itself, refused with the reason
(the OA import's own are in :data:`line_exports.webhook.config.REFUSED_KEYS`)."""


def setting_name_problem(name: str, type_name: str, known: Iterable[str]) -> str:
    """Why ``name`` is not a setting of ``type_name``: TD's reason for a TD-only setting, else
    unknown (with the closest known name)."""
    if name in TD_ONLY_SETTINGS:
        from line_exports.destinations import get_destination

        fields = ", ".join(get_destination(type_name).auth_fields)
        return f"{name!r} is not a {type_name} setting here: " + TD_ONLY_SETTINGS[name].format(
            type=type_name, fields=fields
        )
    return f"unknown setting {name!r} for {type_name}{closest(name, sorted(known))}"


def check_setting_names(
    export: str, type_name: str, settings: Mapping[str, Any], known: Iterable[str]
) -> None:
    """Raise ``ValueError`` naming every setting that is not one of ``known`` (closest name too;
    a TD-only setting with TD's reason, :data:`TD_ONLY_SETTINGS`).

    Checked before the settings model runs, so ``import_kye`` says it is unknown instead of
    ``import_key is required``.
    """
    names = sorted(known)
    unknown = [name for name in settings if name not in names]
    if unknown:
        raise ValueError(
            f"export {export!r}: "
            + "; ".join(setting_name_problem(n, type_name, names) for n in unknown)
        )


def declared_at(skip_modules: tuple[str, ...] = ("line_exports.",)) -> tuple[Path, int] | None:
    """The file and line of the first caller outside this package (where ``build_export`` was
    written), or None when called from the package itself (the workflow loader)."""
    # A plain walk of the frames: ``inspect.stack()`` would also read each frame's source lines
    # and look up its module among all of sys.modules (~20 ms a frame in a deep call stack).
    frame = sys._getframe(2)  # the caller of this function's caller (build_export)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith(skip_modules) or module == "line_exports":
            frame = frame.f_back
            continue
        filename = frame.f_code.co_filename
        if filename.startswith("<"):
            return None
        return Path(filename).resolve(), frame.f_lineno
    return None


def resolve_query_path(query: str | Path, declared: tuple[Path, int] | None) -> str | Path:
    """A relative ``.sql`` path is relative to the file that declares the export (as
    ``dagster.file_relative_path`` would make it), whatever the working directory."""
    is_path = isinstance(query, Path) or (
        query.strip().endswith(".sql") and "\n" not in query.strip()
    )
    if not is_path or declared is None:
        return query
    path = Path(query)
    if path.is_absolute():
        return path
    return (declared[0].parent / path).resolve()


def column_names(ruleset: RuleSet) -> list[str]:
    """Every column the destination reads (names and accepted aliases, pass-through columns)."""
    names: list[str] = []
    for column in ruleset.columns:
        names += [column.name, *column.aliases]
    return names + list(ruleset.keep)


@dataclass(frozen=True)
class UnknownColumn:
    name: str
    hint: str

    def __str__(self) -> str:
        return f"unknown column {self.name!r} is not sent{self.hint}"


def unknown_columns(ignored: Iterable[str], ruleset: RuleSet) -> list[UnknownColumn]:
    """The query's columns the destination ignores, each with the closest known column."""
    known = column_names(ruleset)
    return [UnknownColumn(name, closest(name, known)) for name in ignored]


def unknown_columns_message(export: str, found: list[UnknownColumn], type_name: str) -> str:
    return (
        f"{export}: {'; '.join(str(u) for u in found)} (known to {type_name}: see its column table)"
    )


def empty_result_action(setting: str | None, replaces: bool) -> str:
    """``skip`` or ``fail`` for an export with no valid rows to send.

    Nothing to send to an additive destination (members, audiences, messages, events) is
    skipped with a warning; an export that replaces what the target holds (MAAC
    ``update_segment``) would replace it with nothing, so it fails unless ``empty_result: skip``
    says to leave the target as it is.
    """
    if setting in EMPTY_RESULT:
        return setting
    return "fail" if replaces else "skip"


def empty_result_message(export: str, action: str, replaces: bool, rows_read: int) -> str:
    why = (
        "the query returned no rows"
        if rows_read == 0
        else f"all {rows_read:,} rows read were rejected"
    )
    if action == "fail":
        what = (
            "this export replaces the target's contents, and replacing them with nothing is "
            "refused (set empty_result: skip to leave the target as it is)"
            if replaces
            else "empty_result is fail"
        )
        return f"{export}: nothing to send: {why}; {what}"
    return f"{export}: nothing to send: {why}; skipped (nothing was sent)"
