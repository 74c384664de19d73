"""Repeated sync keys in ``sync_mode`` diff / mirror: what finding them over the whole result costs.

N rows in chunks (an export's default 50,000), 1% of them (``--repeats``) repeating an earlier row's key with
other fields (a LinkedIn contact with another title; a push recipient with another coupon), are
validated and spooled once; then the export-wide rules run over the whole spool
(``line_exports.dedup.drop_duplicates``, DuckDB, any number of chunks) with the rules a
``diff`` run had before (``Destination.ruleset``: LinkedIn users unique only as identical
elements, push none) and now (``Destination.export_ruleset``: the sync key unique). Printed per
destination: seconds of validation and of each dedup, the repeats found, and rows/s.

    .venv/bin/python bench/sync_dedup.py --rows 1000000
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_header  # noqa: E402

CHUNK = 50_000


def frames(kind: str, rows: int, percent: int) -> Iterator[object]:
    """The result in chunks: the last ``percent`` % of the rows repeat the first ones' keys."""
    import duckdb

    first = rows - rows * percent // 100
    if kind == "linkedin":
        sql = (
            f"select 'user' || (case when range < {first} then range else range - {first} end) "
            "|| '@example.com' as email, "
            f"case when range < {first} then 'Engineer' else 'Lead' end as title "
            f"from range({rows})"
        )
    else:
        sql = (
            "select 'U' || lpad(printf('%x', case when range < "
            f"{first} then range else range - {first} end), 32, '0') as id, "
            f"case when range < {first} then 'A' else 'B' end || range as code from range({rows})"
        )
    with duckdb.connect() as con:
        reader = con.sql(sql).to_arrow_reader(CHUNK)
        for batch in reader:
            yield batch.to_pandas()


def destination(kind: str) -> tuple[object, object]:
    from line_exports.destinations import get_destination

    if kind == "linkedin":
        dest = get_destination("linkedin")
        return dest, dest.settings_class(ad_account_id="1", segment_name="s", sync_mode="diff")
    dest = get_destination("line_messaging")
    return dest, dest.settings_class(
        target="push_message",
        template_message='{"type": "text", "text": "coupon {{code}}"}',
        sync_mode="diff",
    )


def main() -> int:
    from dataclasses import replace

    from line_exports.dedup import drop_duplicates
    from line_exports.destination import ValidRows
    from line_exports.export import validate_export

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=1, help="percent of rows repeating a key")
    args = parser.parse_args()
    print_header("sync_dedup: repeated sync keys found over the whole result")
    print(
        f"rows: {args.rows:,} ({args.repeats}% repeat a key); "
        f"load average before: {os.getloadavg()[0]:.1f}"
    )
    for kind in ("linkedin", "push"):
        dest, settings = destination(kind)
        values = settings.model_dump()
        with tempfile.TemporaryDirectory(prefix="sync-dedup-") as work:
            started = time.monotonic()
            bare = replace(dest.ruleset(settings), unique=())
            summary, spool = validate_export(
                frames(kind, args.rows, args.repeats), bare, values, Path(work)
            )
            validation = time.monotonic() - started
            print(
                f"{kind}: validation of {summary.rows_read:,} rows in {validation:.1f} s "
                f"({summary.rows_read / validation:,.0f} rows/s), {spool.count:,} valid"
            )
            for label, rules in (
                ("before (ruleset)", dest.ruleset(settings)),
                ("after (export_ruleset)", dest.export_ruleset(settings)),
            ):
                copy = Path(work) / f"copy-{label.split()[0]}.parquet"
                shutil.copy(spool.path, copy)
                started = time.monotonic()
                kept, rejects = drop_duplicates(ValidRows(copy, spool.count), rules, values)
                seconds = time.monotonic() - started
                columns = [r.columns for r in rules.unique if r.applies(values)] or "none"
                print(
                    f"  dedup {label}: {seconds:.2f} s, {len(rejects):,} repeats, "
                    f"{kept.count:,} kept; rules {columns}"
                )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
