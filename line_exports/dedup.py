"""Keys sent once per export: duplicates found over the whole spool, after normalization.

Validation normalizes each chunk (phones to E.164, emails lowercased, hashes computed), so two
spellings of one key are equal by the time the valid rows are spooled. DuckDB then finds the
rows whose :class:`~line_exports.rules.Unique` columns repeat an earlier row, over the whole
spool (any number of chunks, memory bounded by DuckDB), and the spool is rewritten without them
one row group at a time. Each dropped row is a ``duplicate`` reject naming the row it repeats.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from line_exports.destination import ValidRows
from line_exports.identities import register_name_key
from line_exports.private_files import private_file
from line_exports.rules import REJECT_COLUMNS, ROW_NUMBER, RuleSet, empty_rejects, shown_value

DUPLICATE_RULE = "duplicate"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


DEDUP_MEMORY_LIMIT = "128MB"
"""DuckDB's memory for finding repeated keys; past it, DuckDB spills to the run's folder.

A window over the whole spool held every key in memory (10M LINE IDs: 1.3 GB peak RSS); a
grouping under this limit spills instead (10M IDs: under 300 MB, as fast)."""


def duplicate_rows(
    path: Path,
    columns: Sequence[str],
    without: Sequence[str] = (),
    skip: np.ndarray | None = None,
    match: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(row numbers, first row each repeats, values per column) of the repeated rows, in order.

    ``skip``: row numbers already dropped (by an earlier rule): neither a duplicate nor the
    first of one, so a row is only ever said to repeat a row that is sent. ``match``: the
    columns compared as names (:attr:`~line_exports.rules.Unique.match`); the values returned
    are the ones compared (a name as :func:`~line_exports.identities.name_keys` keys it, the
    README's "the key as normalized", VERIFY-13p P4).

    Two steps, each bounded by :data:`DEDUP_MEMORY_LIMIT`: the keys that occur more than once
    with their first row (a grouping, spilled to disk when large), then the spool's rows of
    those keys (a join against that small table). NULLs match each other, as in a grouping.
    """

    def key(c: str) -> str:
        return f"name_key(t.{_quote(c)})" if c in match else f"t.{_quote(c)}"

    keys = ", ".join(f"{key(c)} as k{i}" for i, c in enumerate(columns))
    groups = ", ".join(f"k{i}" for i in range(len(columns)))
    row = _quote(ROW_NUMBER)
    same = " and ".join(f"{key(c)} is not distinct from d.k{i}" for i, c in enumerate(columns))
    any_present = " or ".join(f"t.{_quote(c)} is not null" for c in columns)
    only = "".join(f" and t.{_quote(c)} is null" for c in without)
    if skip is not None and len(skip):
        only += f" and t.{row} not in (select n from skipped)"
    spill = path.with_name(path.stem + ".dedup.tmp")
    config = {
        "memory_limit": DEDUP_MEMORY_LIMIT,
        "temp_directory": str(spill),
        "preserve_insertion_order": False,
    }
    try:
        with closing(duckdb.connect(config=config)) as con:
            if skip is not None and len(skip):
                con.register("skipped", pa.table({"n": pa.array(skip, pa.int64())}))
            if match:
                register_name_key(con)
            con.execute(
                f"create temp table d as select {keys}, min({row}) as _first "
                f"from read_parquet(?) t where true{only} group by {groups} having count(*) > 1",
                [str(path)],
            )
            table = con.sql(
                f"select t.{row}, d._first, "
                + ", ".join(key(c) for c in columns)
                + f" from read_parquet(?) t join d on {same}"
                f" where t.{row} <> d._first and ({any_present}){only} order by t.{row}",
                params=[str(path)],
            ).to_arrow_table()
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    numbers = table.column(0).to_numpy()
    firsts = table.column(1).to_numpy()
    values = [table.column(i + 2).to_numpy(zero_copy_only=False) for i in range(len(columns))]
    return numbers, firsts, values


SENT_EARLIER_RULE = "sent_with_earlier_row"
"""The note of a row sent without a value an earlier row sent (:attr:`Unique.per_value`)."""


@dataclass
class Deduplicated:
    """The spooled rows sent once per key, the rows dropped (``duplicate`` rejects), and the
    cells emptied in rows still sent (notes, same columns as rejects, rule
    :data:`SENT_EARLIER_RULE`; those rows are not rejected)."""

    rows: ValidRows
    rejects: pd.DataFrame
    notes: pd.DataFrame


def drop_duplicates(
    rows: ValidRows, ruleset: RuleSet, settings: Mapping[str, object]
) -> tuple[ValidRows, pd.DataFrame]:
    """The spooled rows without the ones repeating an earlier row's key, and their rejects
    (:func:`deduplicate` without its notes)."""
    done = deduplicate(rows, ruleset, settings)
    return done.rows, done.rejects


def deduplicate(rows: ValidRows, ruleset: RuleSet, settings: Mapping[str, object]) -> Deduplicated:
    """The spooled rows without the ones repeating an earlier row's key, and their rejects;
    a :attr:`Unique.per_value` rule empties a repeated value in a row that has another one
    to send instead (a note naming the row that sent it)."""
    rules = [r for r in ruleset.unique if r.applies(settings)]
    if not rules or not rows.count:
        return Deduplicated(rows, empty_rejects(), empty_rejects())
    present = set(pq.read_schema(rows.path).names)
    sensitive = {c.name for c in ruleset.columns if c.sensitive}
    parts: list[pd.DataFrame] = []
    notes: list[pd.DataFrame] = []
    blanks: dict[str, np.ndarray] = {}
    dropped_so_far = np.array([], dtype="int64")
    for rule in rules:
        columns = [c for c in rule.columns if c in present]
        if not columns:
            continue
        without = [c for c in rule.only_without if c in present]
        if rule.per_value:
            drop, blank, rejected, noted = _repeated_values(
                rows.path, columns, without, dropped_so_far, sensitive, rule.name
            )
            dropped_so_far = np.union1d(dropped_so_far, drop)
            for column, numbers in blank.items():
                blanks[column] = np.union1d(blanks.get(column, np.array([], "int64")), numbers)
            parts.append(rejected)
            notes.append(noted)
            continue
        matched = [c for c in rule.match if c in columns]
        numbers, firsts, values = duplicate_rows(
            rows.path, columns, without, dropped_so_far, matched
        )
        if not len(numbers):
            continue
        dropped_so_far = np.union1d(dropped_so_far, numbers.astype("int64"))
        shown = [
            "; ".join(
                _shown(v, c in sensitive)
                for c, v in zip(columns, cells, strict=True)
                if not _missing(v)
            )
            for cells in zip(*values, strict=True)
        ]
        label = "+".join(columns)
        parts.append(
            pd.DataFrame(
                {
                    ROW_NUMBER: numbers.astype("int64"),
                    "column": label,
                    "rule": rule.name,
                    "message": [
                        f"{label} repeats row {int(f)} (the same after normalization); sent once"
                        for f in firsts
                    ],
                    "value": shown,
                }
            )
        )
    parts = [p for p in parts if len(p)]
    rejects = pd.concat(parts, ignore_index=True)[REJECT_COLUMNS] if parts else empty_rejects()
    notes = [n for n in notes if len(n)]
    noted = pd.concat(notes, ignore_index=True)[REJECT_COLUMNS] if notes else empty_rejects()
    if not len(rejects) and not blanks:
        return Deduplicated(rows, rejects, noted)
    # A row may repeat under several rules: one reject per rule, dropped once.
    dropped = np.unique(rejects[ROW_NUMBER].to_numpy()) if len(rejects) else np.array([], "int64")
    return Deduplicated(_rewrite_without(rows, dropped, blanks), rejects, noted)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _shown(value: object, sensitive: bool) -> str:
    return shown_value(str(value), sensitive)  # masked, or cut saying so


def _repeated_values(
    path: Path,
    columns: Sequence[str],
    without: Sequence[str],
    skip: np.ndarray,
    sensitive: set[str],
    rule: str,
) -> tuple[np.ndarray, dict[str, np.ndarray], pd.DataFrame, pd.DataFrame]:
    """:attr:`Unique.per_value`: (rows dropped, rows to empty per column, their ``duplicate``
    rejects, notes of the emptied cells). Each column on its own: a value is sent by the
    first row carrying it (rows in ``skip`` aside); a later row carrying it is sent without
    it if another of ``columns`` of it is new, else dropped."""
    repeats: dict[str, dict[int, tuple[int, object]]] = {}
    for column in columns:
        numbers, firsts, values = duplicate_rows(path, [column], without, skip)
        repeats[column] = {
            int(n): (int(f), v) for n, f, v in zip(numbers, firsts, values[0], strict=True)
        }
    candidates = sorted({n for found in repeats.values() for n in found})
    if not candidates:
        return np.array([], "int64"), {}, empty_rejects(), empty_rejects()
    carried = _carried(path, columns, candidates)
    drop: list[int] = []
    blank: dict[str, list[int]] = {}
    rejected: list[dict[str, object]] = []
    noted: list[dict[str, object]] = []
    for n in candidates:
        has = carried[n]
        repeated = [c for c in columns if n in repeats[c]]
        new = [c for c in has if c not in repeated]
        for column in repeated:
            first, value = repeats[column][n]
            record = {
                ROW_NUMBER: n,
                "column": column,
                "value": _shown(value, column in sensitive),
            }
            said = f"{column} repeats row {first} (the same after normalization); sent once, with row {first}"
            if new:
                record["rule"] = SENT_EARLIER_RULE
                record["message"] = (
                    f"{said}; this row was sent without it, with its {', '.join(new)}"
                )
                noted.append(record)
                blank.setdefault(column, []).append(n)
            else:
                others = ", ".join(c for c in has if c != column)
                record["rule"] = rule
                record["message"] = said + (
                    f"; the row's other values ({others}) repeat earlier rows too: nothing new, not sent"
                    if others
                    else ""
                )
                rejected.append(record)
        if not new:
            drop.append(n)
    return (
        np.array(drop, dtype="int64"),
        {c: np.array(v, dtype="int64") for c, v in blank.items()},
        pd.DataFrame(rejected, columns=REJECT_COLUMNS) if rejected else empty_rejects(),
        pd.DataFrame(noted, columns=REJECT_COLUMNS) if noted else empty_rejects(),
    )


def _carried(path: Path, columns: Sequence[str], numbers: list[int]) -> dict[int, list[str]]:
    """Row number -> which of ``columns`` hold a value, for these rows of the spool."""
    row = _quote(ROW_NUMBER)
    tests = ", ".join(f"{_quote(c)} is not null" for c in columns)
    with closing(duckdb.connect(config={"memory_limit": DEDUP_MEMORY_LIMIT})) as con:
        con.register("wanted", pa.table({"n": pa.array(numbers, pa.int64())}))
        found = con.sql(
            f"select {row}, {tests} from read_parquet(?) where {row} in (select n from wanted)",
            params=[str(path)],
        ).fetchall()
    return {int(r[0]): [c for c, has in zip(columns, r[1:], strict=True) if has] for r in found}


def _rewrite_without(
    rows: ValidRows, dropped: np.ndarray, blanks: Mapping[str, np.ndarray] | None = None
) -> ValidRows:
    """The spool rewritten without ``dropped`` rows, and with the cells of ``blanks``
    (column -> row numbers) emptied, one row group at a time (schema kept)."""
    source = pq.ParquetFile(rows.path, pre_buffer=False)
    target = rows.path.with_name(rows.path.stem + ".unique.parquet")
    drop = pa.array(dropped, type=pa.int64())
    kept = 0
    private_file(target)  # valid rows are personal data: 0600, like the spool it replaces
    with pq.ParquetWriter(target, source.schema_arrow) as writer:
        for group in range(source.num_row_groups):
            table = source.read_row_group(group, use_threads=False)
            keep = pc.invert(pc.is_in(table.column(ROW_NUMBER), value_set=drop))
            table = table.filter(keep)
            for column, numbers in (blanks or {}).items():
                index = table.schema.get_field_index(column)
                empty = pc.is_in(table.column(ROW_NUMBER), value_set=pa.array(numbers, pa.int64()))
                cells = table.column(index)
                nothing = pa.nulls(len(table), type=cells.type)
                table = table.set_column(index, column, pc.if_else(empty, nothing, cells))
            if table.num_rows:
                writer.write_table(table)
                kept += table.num_rows
    target.replace(rows.path)
    return ValidRows(rows.path, kept)
