"""Audience Studio's Output Mapping: which columns an activation sends, under which names, and
strings built for it (TD's "Activate a Segment in Audience Studio", Output Mapping panel).

The reference's two parts, as ``output_mapping`` in an export's settings (``result_settings``
in a ``.dig`` file):

- **Attribute Columns**: ``export_all_columns`` ("export all columns without making any
  changes"; the default when no column is listed) or ``columns``, each a source column and
  its Output Column Name (``{source: uid, output: line_user_id}``; a bare name keeps it).
- **String Builder**: ``strings``, each an output column whose value is its ``parts`` joined:
  ``{string: text}`` (a constant), ``timestamp`` ("the date and time of the export": the run's
  session time in the export's timezone, ISO 8601 with its offset, or ``{timestamp: pattern}``
  with a Java ``SimpleDateFormat`` pattern as in ``TD_TIME_FORMAT``), ``segment_id``,
  ``segment_name`` and ``audience_id`` (the parent segment's id).

The segment's values come from ``segment: {id, name, audience_id}``; an export of an upstream
asset (the segment) has that asset's name as ``segment_name`` unless ``segment.name`` says
otherwise. The mapping is applied to every chunk before validation, so the destination's rules
check the columns as they will be sent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from line_exports.rules import SchemaError
from line_exports.sql import td_time

SEGMENT_PARTS = ("segment_id", "segment_name", "audience_id")
PART_KINDS = ("string", "timestamp", *SEGMENT_PARTS)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OutputColumn(_Strict):
    """``+ Add Columns``: a source column and its Output Column Name (default: the same)."""

    source: str
    output: str = ""

    @model_validator(mode="after")
    def _same_name_by_default(self) -> OutputColumn:
        if not self.output:
            object.__setattr__(self, "output", self.source)
        return self


class StringPart(_Strict):
    """One piece of a built string: exactly one of the reference's five values."""

    kind: str
    value: str = ""
    """The text of ``string``; the pattern of ``timestamp`` (empty: ISO 8601)."""

    @field_validator("kind")
    @classmethod
    def _known(cls, kind: str) -> str:
        if kind not in PART_KINDS:
            raise ValueError(f"unknown part {kind!r}; one of {', '.join(PART_KINDS)}")
        return kind


class OutputString(_Strict):
    """``+ Add string``: an output column holding ``parts`` joined."""

    output: str
    parts: tuple[StringPart, ...]


class Segment(_Strict):
    id: str = ""
    name: str = ""
    audience_id: str = ""


class OutputMapping(_Strict):
    """The parsed ``output_mapping`` setting (see the module docstring for its YAML form)."""

    export_all_columns: bool | None = None
    columns: tuple[OutputColumn, ...] = ()
    strings: tuple[OutputString, ...] = ()
    segment: Segment = Segment()

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        """``columns: [uid]`` and ``parts: [timestamp, {string: x}]`` as YAML writes them."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        if isinstance(data.get("columns"), list):
            data["columns"] = [{"source": c} if isinstance(c, str) else c for c in data["columns"]]
        if isinstance(data.get("strings"), list):
            data["strings"] = [_string_shorthand(s) for s in data["strings"]]
        if data.get("segment") is None:
            data.pop("segment", None)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> OutputMapping:
        if self.export_all_columns and self.columns:
            raise ValueError(
                "export_all_columns sends every column unchanged; list columns only without it"
            )
        if self.export_all_columns is None:
            object.__setattr__(self, "export_all_columns", not self.columns)
        outputs = [c.output for c in self.columns] + [s.output for s in self.strings]
        repeated = sorted({o for o in outputs if outputs.count(o) > 1})
        if repeated:
            raise ValueError(f"output column {repeated[0]!r} is given more than once")
        for index, built in enumerate(self.strings):
            if not built.parts:
                raise ValueError(f"strings[{index}] ({built.output}) has no parts")
        return self

    def needs(self) -> set[str]:
        """The segment values (``segment_id`` ...) the strings use."""
        return {p.kind for s in self.strings for p in s.parts if p.kind in SEGMENT_PARTS}

    def describe(self) -> list[str]:
        """One line per output column, for ``plan`` and the asset's metadata."""
        lines = ["all columns unchanged"] if self.export_all_columns else []
        lines += [
            f"{c.output} <- {c.source}" if c.output != c.source else c.output for c in self.columns
        ]
        for built in self.strings:
            shown = " + ".join(
                repr(p.value)
                if p.kind == "string"
                else (p.kind + (f"({p.value})" if p.value else ""))
                for p in built.parts
            )
            lines.append(f"{built.output} <- {shown}")
        return lines


def _string_shorthand(item: Any) -> Any:
    if not isinstance(item, Mapping) or not isinstance(item.get("parts"), list):
        return item
    parts = []
    for part in item["parts"]:
        if isinstance(part, str):
            parts.append({"kind": part})
        elif isinstance(part, Mapping) and len(part) == 1 and "kind" not in part:
            ((kind, value),) = part.items()
            parts.append({"kind": kind, "value": "" if value is None else str(value)})
        else:
            parts.append(part)
    return {**item, "parts": parts}


def parse_output_mapping(value: Any) -> OutputMapping | None:
    """The setting's value as an :class:`OutputMapping` (None: no mapping); ``ValueError``
    names the part of the setting that is wrong."""
    if value is None or value == {}:
        return None
    if isinstance(value, OutputMapping):
        return value
    try:
        mapping = OutputMapping.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"output_mapping{'.' + where if where else ''}: {first['msg']}") from None
    for index, built in enumerate(mapping.strings):
        for part in built.parts:
            if part.kind == "timestamp" and part.value:
                try:
                    td_time.compile_pattern(part.value)
                except td_time.TdTimeError as exc:
                    raise ValueError(f"output_mapping.strings[{index}]: {exc}") from None
    return mapping


@dataclass(frozen=True)
class MappingContext:
    """What the built strings read: the export's time and its segment."""

    moment: datetime
    segment_id: str = ""
    segment_name: str = ""
    audience_id: str = ""


def resolve_context(
    mapping: OutputMapping, moment: datetime, upstream_name: str | None = None
) -> MappingContext:
    """The values for this export; ``ValueError`` when a string needs one nobody gave."""
    values = {
        "segment_id": mapping.segment.id,
        "segment_name": mapping.segment.name or (upstream_name or ""),
        "audience_id": mapping.segment.audience_id,
    }
    missing = sorted(k for k in mapping.needs() if not values[k])
    if missing:
        key = {"segment_id": "id", "segment_name": "name", "audience_id": "audience_id"}
        raise ValueError(
            f"output_mapping: strings use {missing[0]}, but output_mapping.segment."
            f"{key[missing[0]]} is not set"
            + ("" if missing[0] != "segment_name" else " and the export has no upstream segment")
        )
    return MappingContext(moment, **values)


def built_strings(mapping: OutputMapping, context: MappingContext) -> dict[str, str]:
    """Each String Builder column's value for this export (one value per run)."""
    out: dict[str, str] = {}
    for built in mapping.strings:
        pieces = []
        for part in built.parts:
            if part.kind == "string":
                pieces.append(part.value)
            elif part.kind == "timestamp":
                moment = context.moment
                pieces.append(
                    td_time.format_time(int(moment.timestamp()), part.value, moment.tzinfo)
                    if part.value
                    else moment.isoformat(timespec="seconds")
                )
            else:
                pieces.append(getattr(context, part.kind))
        out[built.output] = "".join(pieces)
    return out


def apply(frame: pd.DataFrame, mapping: OutputMapping, strings: Mapping[str, str]) -> pd.DataFrame:
    """One chunk as the activation sends it: the chosen columns renamed, then the strings."""
    if mapping.export_all_columns:
        result = frame.copy()
    else:
        missing = [c.source for c in mapping.columns if c.source not in frame.columns]
        if missing:
            raise SchemaError(
                f"output_mapping.columns: source column {missing[0]!r} is not in the rows "
                f"(columns: {', '.join(map(str, frame.columns))})"
            )
        result = pd.DataFrame(
            {c.output: frame[c.source] for c in mapping.columns}, index=frame.index
        )
    for name, value in strings.items():
        result[name] = pd.Series(value, index=frame.index, dtype="string")
    return result


def mapped_chunks(
    chunks: Iterator[pd.DataFrame], mapping: OutputMapping, strings: Mapping[str, str]
) -> Iterator[pd.DataFrame]:
    for chunk in chunks:
        yield apply(chunk, mapping, strings)
