"""Peak memory of one MAAC members export of N rows (DuckDB -> sandbox), in this process.

    python bench/maac_memory.py --rows 100000 --sandbox-url http://127.0.0.1:8787

Prints rows, seconds, import requests and the process's peak RSS. The sandbox should run in
another process (``line-exports sandbox --rate-scale 100``) so its own memory is not counted.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import duckdb

from line_exports import MaacResource, SqlSource, build_export, sample_data


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    scale = 1024 if sys.platform == "darwin" else 1
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / scale


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--sandbox-url", required=True)
    parser.add_argument("--chunk-size", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "members.duckdb"
        frame = sample_data.members(args.rows)
        frame["line_uid"] = sample_data.line_uids(args.rows, seed=11)
        with duckdb.connect(str(db)) as con:
            con.execute("create table members as select * from frame")
        del frame
        asset = build_export(
            "maac_members_bench",
            destination="maac",
            query="select * from members",
            settings={"data_object": "members", "import_key": "line_uid", "tags": "bench"},
        )
        before = peak_rss_mb()
        started = time.monotonic()
        result = dg.materialize(
            [asset],
            resources={
                "sql_source": SqlSource(url=f"duckdb:///{db}", chunk_size=args.chunk_size),
                "maac": MaacResource(base_url=args.sandbox_url, poll_seconds=0.05),
            },
        )
        seconds = time.monotonic() - started
        (mat,) = result.asset_materializations_for_node("maac_members_bench")
        meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}",
                "rows": args.rows,
                "rows_valid": meta["rows_valid"],
                "rows_accepted": meta["rows_accepted"],
                "import_requests": meta["import_tasks"],
                "seconds": round(seconds, 2),
                "peak_rss_mb_before_export": round(before, 1),
                "peak_rss_mb": round(peak_rss_mb(), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
