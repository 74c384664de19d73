"""The ledger: entries survive a new process's view, and concurrent writers are group-committed."""

from __future__ import annotations

import threading
from pathlib import Path

from line_exports.ledger import Ledger


def test_concurrent_records_are_all_committed_and_scoped(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    scope = ledger.scope("export", "tick=1")

    def write(worker: int) -> None:
        for i in range(100):
            scope.record(f"{worker}-{i}", {"worker": worker, "i": i})

    threads = [threading.Thread(target=write, args=(w,)) for w in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ledger.close()

    reopened = Ledger(tmp_path / "ledger.sqlite")
    assert reopened.scope("export", "tick=1").count() == 2000
    assert reopened.scope("export", "tick=1").done("13-99") == {"worker": 13, "i": 99}
    assert reopened.scope("export", "tick=2").done("13-99") is None
    assert reopened.scope("other", "tick=1").count() == 0
