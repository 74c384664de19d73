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
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from line_exports.destination import ValidRows
from line_exports.private_files import private_file
from line_exports.rules import REJECT_COLUMNS, ROW_NUMBER, RuleSet, empty_rejects, mask_value

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
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(row numbers, first row each repeats, values per column) of the repeated rows, in order.

    ``skip``: row numbers already dropped (by an earlier rule): neither a duplicate nor the
    first of one, so a row is only ever said to repeat a row that is sent.

    Two steps, each bounded by :data:`DEDUP_MEMORY_LIMIT`: the keys that occur more than once
    with their first row (a grouping, spilled to disk when large), then the spool's rows of
    those keys (a join against that small table). NULLs match each other, as in a grouping.
    """
    keys = ", ".join(_quote(c) for c in columns)
    row = _quote(ROW_NUMBER)
    same = " and ".join(f"t.{_quote(c)} is not distinct from d.{_quote(c)}" for c in columns)
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
            con.execute(
                f"create temp table d as select {keys}, min({row}) as _first "
                f"from read_parquet(?) t where true{only} group by {keys} having count(*) > 1",
                [str(path)],
            )
            table = con.sql(
                f"select t.{row}, d._first, "
                + ", ".join(f"t.{_quote(c)}" for c in columns)
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


def drop_duplicates(
    rows: ValidRows, ruleset: RuleSet, settings: Mapping[str, object]
) -> tuple[ValidRows, pd.DataFrame]:
    """The spooled rows without the ones repeating an earlier row's key, and their rejects."""
    rules = [r for r in ruleset.unique if r.applies(settings)]
    if not rules or not rows.count:
        return rows, empty_rejects()
    present = set(pq.read_schema(rows.path).names)
    sensitive = {c.name for c in ruleset.columns if c.sensitive}
    parts: list[pd.DataFrame] = []
    dropped_so_far = np.array([], dtype="int64")
    for rule in rules:
        columns = [c for c in rule.columns if c in present]
        if not columns:
            continue
        without = [c for c in rule.only_without if c in present]
        numbers, firsts, values = duplicate_rows(rows.path, columns, without, dropped_so_far)
        if not len(numbers):
            continue
        dropped_so_far = np.union1d(dropped_so_far, numbers.astype("int64"))
        shown = [
            "; ".join(
                mask_value(str(v)) if c in sensitive else str(v)[:200]
                for c, v in zip(columns, cells, strict=True)
                if v is not None and not (isinstance(v, float) and np.isnan(v))
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
    if not parts:
        return rows, empty_rejects()
    rejects = pd.concat(parts, ignore_index=True)
    # A row may repeat under several rules: one reject per rule, dropped once.
    dropped = np.unique(rejects[ROW_NUMBER].to_numpy())
    return _rewrite_without(rows, dropped), rejects[REJECT_COLUMNS]


def _rewrite_without(rows: ValidRows, dropped: np.ndarray) -> ValidRows:
    """The spool rewritten without ``dropped`` rows, one row group at a time (schema kept)."""
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
            if table.num_rows:
                writer.write_table(table)
                kept += table.num_rows
    target.replace(rows.path)
    return ValidRows(rows.path, kept)
