"""The sync store's writes alone: what ``sync_mode`` diff / mirror add to a day-1 run.

On a fresh SQLite ledger, N member keys are recorded ``pending`` (as a run does before it
sends), settled to ``accepted`` (as it does after), written once more as one upsert (the
earlier design's single write, for comparison) and loaded back (as the next run's plan does).
Then, as a LINE push run in diff also does (``sync_settle``), one request per key recorded
before sending, 2,000 a batch (retry key, exact body, recipient), and dropped when the run
commits. Printed: seconds per step and the machine's load average.

    .venv/bin/python bench/sync_store.py --members 1000000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_header  # noqa: E402


def main() -> int:
    import pyarrow as pa

    from line_exports.ledger import Ledger
    from line_exports.sync_store import SyncStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    args = parser.parse_args()
    print_header("sync_store: the sync store's writes for a day-1 run")
    keys = [hashlib.md5(str(i).encode()).hexdigest() for i in range(args.members)]
    idents = [json.dumps({"email": f"user{i}@example.com"}) for i in range(args.members)]
    table = pa.table({"key": keys, "hash": keys, "ident": idents})
    print(f"members: {args.members:,}; load average before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="sync-store-") as home:
        ledger = Ledger(Path(home) / "ledger.sqlite")
        store = SyncStore(ledger, "bench")
        steps = []
        started = time.monotonic()
        stamp = store.put(table, "pending")
        steps.append(("put pending (before sending)", time.monotonic() - started))
        started = time.monotonic()
        store.settle(stamp)
        steps.append(("settle to accepted (after)", time.monotonic() - started))
        started = time.monotonic()
        store.put(table, "accepted")
        steps.append(("one upsert (the earlier single write)", time.monotonic() - started))
        started = time.monotonic()
        store.load()
        steps.append(("load (next run's plan)", time.monotonic() - started))
        requests = [
            (
                key,
                "push",
                json.dumps({"to": f"U{key}", "messages": [{"type": "text", "text": f"C{i}"}]}),
                [f"U{key}"],
            )
            for i, key in enumerate(keys)
        ]
        started = time.monotonic()
        for start in range(0, len(requests), 2_000):  # push's batch (PUSH_BATCH_ROWS)
            store.put_requests("tick=bench", requests[start : start + 2_000])
        steps.append(("push requests recorded (diff, before sending)", time.monotonic() - started))
        started = time.monotonic()
        store.drop_requests(scope="tick=bench")
        steps.append(("push requests dropped (the run commits)", time.monotonic() - started))
        ledger.close()
    for name, seconds in steps:
        print(f"{name}: {seconds:.1f} s")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
