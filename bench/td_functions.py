"""TD's functions on the embedded engine: rows a second over a table of N events.

Each query runs once on a DuckDB table of ``--rows`` events (one every 7 s), after the TD
functions are registered, as a migrated ``td>`` query would (translated to DuckDB first, like
the workflow loader does, and as written with ``translate_sql: false``). Prints figures only.

    python bench/td_functions.py --rows 5000000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_header  # noqa: E402

from line_exports.sql import register_td_functions  # noqa: E402
from line_exports.sql.dialect import translate  # noqa: E402

QUERIES = {
    "plain filter (time >= a AND time < b)": (
        "SELECT count(*) FROM ev WHERE time >= 1704034800 AND time < 1706713200"
    ),
    "TD_TIME_RANGE(time, '2024-01-01', '2024-02-01', 'JST')": (
        "SELECT count(*) FROM ev WHERE TD_TIME_RANGE(time, '2024-01-01', '2024-02-01', 'JST')"
    ),
    "TD_INTERVAL(time, '-1M/2024-02-01', 'JST')": (
        "SELECT count(*) FROM ev WHERE TD_INTERVAL(time, '-1M/2024-02-01', 'JST')"
    ),
    "TD_TIME_FORMAT(time, 'yyyy-MM-dd', 'JST')": (
        "SELECT count(DISTINCT TD_TIME_FORMAT(time, 'yyyy-MM-dd', 'JST')) FROM ev"
    ),
    "TD_TIME_STRING(time, 'd!', 'JST')": (
        "SELECT count(DISTINCT TD_TIME_STRING(time, 'd!', 'JST')) FROM ev"
    ),
    "TD_DATE_TRUNC('day', time, 'JST')": (
        "SELECT count(DISTINCT TD_DATE_TRUNC('day', time, 'JST')) FROM ev"
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    print_header(f"TD functions on DuckDB, {args.rows:,} rows")
    con = register_td_functions(duckdb.connect(), 1706713200)
    con.execute("SET enable_progress_bar = false")
    con.execute(
        f"CREATE TABLE ev AS SELECT (1700000000 + i * 7)::BIGINT AS time FROM range({args.rows}) t(i)"
    )
    print(f"{'query':<58} {'form':<11} {'seconds':>8} {'rows/s':>14}")
    for label, sql in QUERIES.items():
        forms = {"translated": translate(sql, write="duckdb").sql, "as written": sql}
        for form, text in forms.items():
            if form == "as written" and text == forms["translated"]:
                continue
            started = time.perf_counter()
            con.sql(text).fetchall()
            seconds = time.perf_counter() - started
            print(f"{label:<58} {form:<11} {seconds:>8.2f} {args.rows / seconds:>14,.0f}")


if __name__ == "__main__":
    main()
