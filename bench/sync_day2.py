"""Day 2 of a daily export in ``sync_mode`` append, diff and mirror: requests and wall time.

A LinkedIn contacts export (emails SHA-256 hashed, a title per member) of N members runs on
day 1, then on day 2 with 1% churn: 1% of the members changed their title, 1% left and 1% new
members joined. Each mode runs both days on a fresh data folder (ledger) and a fresh sandbox
segment; the sandbox is its own process with LinkedIn's real limits (600 requests a minute per
member) and the client paces under them. Printed per mode: day 2's wall time, HTTP requests,
elements sent, and the segment's size afterwards (the oracle: append and diff keep the
departed members, mirror removes them).

    .venv/bin/python bench/sync_day2.py --members 1000000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SandboxProcess, print_header  # noqa: E402


def query(members: int, day: int) -> str:
    """Day 1: members 0..N-1; day 2: 1% changed title, 1% gone, 1% new (N..N+1%)."""
    if day == 1:
        return (
            "select 'user' || range || '@example.com' as email, 'Engineer' as title "
            f"from range({members})"
        )
    return (
        "select 'user' || range || '@example.com' as email, "
        f"case when range < {members} and range % 100 = 1 then 'Lead' else 'Engineer' end "
        f"as title from range({members + members // 100}) "
        f"where range >= {members} or range % 100 <> 2"
    )


def run(url: str, members: int, mode: str, day: int) -> dict[str, Any]:
    import dagster as dg

    from line_exports import LinkedInResource, SqlSource, build_export
    from line_exports.sandbox.linkedin import (
        SANDBOX_CLIENT_ID,
        SANDBOX_CLIENT_SECRET,
        SANDBOX_REFRESH_TOKEN,
    )

    asset = build_export(
        "contacts",
        destination="linkedin",
        query=query(members, day),
        settings={
            "ad_account_id": "512345678",
            "segment_name": f"bench {mode}",
            "sync_mode": mode,
            "batch_size": 5000,
        },
        retry_policy=None,
    )
    resource = LinkedInResource(
        client_id=SANDBOX_CLIENT_ID,
        client_secret=SANDBOX_CLIENT_SECRET,
        refresh_token=SANDBOX_REFRESH_TOKEN,
        api_url=url,
        new_segment_wait=0,
    )
    started = time.monotonic()
    result = dg.materialize(
        [asset], resources={"linkedin": resource, "sql_source": SqlSource(chunk_size=200_000)}
    )
    seconds = time.monotonic() - started
    [event] = result.asset_materializations_for_node("contacts")
    meta = {k: v.value for k, v in event.metadata.items()}
    return {"seconds": seconds, **meta}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--modes", default="append,diff,mirror")
    args = parser.parse_args()
    print_header("sync_day2: day 2 of a daily LinkedIn export with 1% churn")
    print(
        f"members: {args.members:,}; day 2: {args.members // 100:,} changed, "
        f"{args.members // 100:,} gone, {args.members // 100:,} new"
    )
    rows = []
    with SandboxProcess(rate_scale=1.0) as sandbox:
        for mode in args.modes.split(","):
            with tempfile.TemporaryDirectory(prefix="sync-bench-") as home:
                os.environ["LINE_EXPORTS_HOME"] = home
                day1 = run(sandbox.url, args.members, mode, 1)
                before = sandbox.state()["linkedin"]
                day2 = run(sandbox.url, args.members, mode, 2)
                after = sandbox.state()["linkedin"]
                size = next(
                    v for k, v in after["segments"].items() if k.startswith(f"bench {mode}")
                )
                rows.append(
                    (
                        mode,
                        day1["seconds"],
                        day2["seconds"],
                        day2["requests"],
                        after["elements_received"] - before["elements_received"],
                        day2.get("members_removed", 0),
                        size,
                    )
                )
                print(
                    f"{mode}: day 1 {day1['seconds']:.1f}s ({day1['requests']} requests); "
                    f"day 2 {day2['seconds']:.1f}s, {day2['requests']} requests, "
                    f"rows sent {day2['rows_sent']:,}",
                    flush=True,
                )
    print()
    print(
        "| mode | day 1 s | day 2 s | day 2 requests | day 2 elements sent | removed | segment after |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode, s1, s2, requests, elements, removed, size in rows:
        print(
            f"| {mode} | {s1:.1f} | {s2:.1f} | {requests:,} | {elements:,} | {removed:,} | {size:,} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
