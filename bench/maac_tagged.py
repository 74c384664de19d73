"""What MAAC diff / mirror's tag record costs: the ledger writes of a day-1 run, and the reads.

Each import task records, per member and tag, the task that first sent it
(``destinations/maac_tags.Tagged``): N members in tasks of 10,000 (MAAC's import maximum) are
recorded as a day-1 run records them, then recorded again (a re-run: every pair already there,
ignored), then one task in 20 members' start times are looked up as a day-2 removal does.
Printed: seconds per step, the requests a day-2 removal makes per departed member, and the load.
MAAC imports at most 15 tasks a minute, so a 1,000,000-member day 1 takes at least 400 s of
import pacing; the record's seconds compare with that.

    .venv/bin/python bench/maac_tagged.py --members 1000000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_header  # noqa: E402

TASK_MEMBERS = 10_000


def main() -> int:
    from line_exports.destinations.maac_tags import Tagged
    from line_exports.ledger import Ledger
    from line_exports.sync_store import SyncStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--tags", type=int, default=1, help="tags per member (the setting's)")
    args = parser.parse_args()
    print_header("maac_tagged: MAAC mirror's per-member tag record")
    tags = [f"tag{i}" for i in range(args.tags)]
    result = {"success": True, "start_time": "2026-12-01T09:00:00.000000+08:00"}

    def tasks() -> list[list[dict[str, str]]]:
        return [
            [
                {"line_uid": f"U{n:032x}"}
                for n in range(start, min(start + TASK_MEMBERS, args.members))
            ]
            for start in range(0, args.members, TASK_MEMBERS)
        ]

    batches = tasks()
    with tempfile.TemporaryDirectory(prefix="maac-tagged-") as home:
        ledger = Ledger(Path(home) / "ledger.sqlite")
        tagged = Tagged(SyncStore(ledger, "bench"))
        steps = []
        started = time.monotonic()
        for task, members in enumerate(batches):
            tagged.sent(task, members, tags)
            tagged.done(task, result, members)
        steps.append(("day 1: record every member and tag", time.monotonic() - started))
        started = time.monotonic()
        for task, members in enumerate(batches):
            tagged.sent(len(batches) + task, members, tags)
        steps.append(("re-run: every pair already recorded", time.monotonic() - started))
        departed = [f"U{n:032x}" for n in range(0, args.members, 100)]  # 1% churn
        started = time.monotonic()
        found = tagged.since(None, departed)  # type: ignore[arg-type]  # every task is known
        steps.append((f"day 2: look up {len(departed):,} departed", time.monotonic() - started))
        assert len(found) == len(departed) * len(tags)
        ledger.close()
    print(f"members: {args.members:,}, tags each: {args.tags}, import tasks: {len(batches)}")
    for name, seconds in steps:
        print(f"{name}: {seconds:.1f} s")
    print(
        "day 2 requests per departed member: 1 member read (GET /openapi/v1/member/) "
        f"+ at most {args.tags} tag removals; day 1 (baseline): 0 reads"
    )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
