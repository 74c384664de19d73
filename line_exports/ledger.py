"""What each export run already delivered, so a re-run resumes instead of sending twice.

Entries are keyed by (export, scope, key): the scope is the run's identity (its scheduled time,
partition, or the root run it re-executes) and the key is derived from the data sent (a batch's
content hash, a recipient), never random, so the same work always has the same key.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from line_exports import paths


class Ledger:
    """A small SQLite file (WAL, one row per accepted request) shared by every export."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.data_dir() / "ledger.sqlite"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=normal")
        self._db.execute(
            "create table if not exists ledger (export text, scope text, key text, result text,"
            " recorded_at real, primary key (export, scope, key))"
        )

    def scope(self, export: str, scope: str) -> LedgerScope:
        return LedgerScope(self, export, scope)

    def close(self) -> None:
        self._db.close()

    def _get_many(self, export: str, scope: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            for start in range(0, len(keys), 500):  # SQLite binds at most 999 parameters
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"select key, result from ledger where export=? and scope=? and key in ({marks})",
                    (export, scope, *chunk),
                ).fetchall()
                found.update((key, json.loads(result)) for key, result in rows)
        return found

    def _put_many(self, export: str, scope: str, entries: list[tuple[str, dict[str, Any]]]) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("begin")
            try:
                self._db.executemany(
                    "insert or replace into ledger values (?, ?, ?, ?, ?)",
                    [(export, scope, key, json.dumps(r, default=str), now) for key, r in entries],
                )
            except BaseException:
                self._db.execute("rollback")
                raise
            self._db.execute("commit")

    def _count(self, export: str, scope: str) -> int:
        with self._lock:
            return int(
                self._db.execute(
                    "select count(*) from ledger where export=? and scope=?", (export, scope)
                ).fetchone()[0]
            )


class LedgerScope:
    """The ledger entries of one export run scope."""

    def __init__(self, ledger: Ledger, export: str, scope: str) -> None:
        self.ledger = ledger
        self.export = export
        self.scope = scope

    def done(self, key: str) -> dict[str, Any] | None:
        """The recorded result of ``key`` if it was already delivered in this scope."""
        return self.done_many([key]).get(key)

    def record(self, key: str, result: dict[str, Any]) -> None:
        self.record_many([(key, result)])

    def done_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Recorded results of those ``keys`` that have one (one query per 500 keys)."""
        return self.ledger._get_many(self.export, self.scope, keys)

    def record_many(self, entries: list[tuple[str, dict[str, Any]]]) -> None:
        """Record many results in one transaction."""
        if entries:
            self.ledger._put_many(self.export, self.scope, entries)

    def count(self) -> int:
        return self.ledger._count(self.export, self.scope)


class GroupRecorder:
    """Records results in groups of ``every`` (one transaction each) instead of one commit per
    request: at 2,000 pushes a second a commit per push costs more client CPU than the push.

    Whatever is buffered when a process dies is lost from the ledger only: those requests were
    recorded as pending before they were sent, so a re-run re-sends them with the same retry
    key and the API answers that it already has them.
    """

    def __init__(self, scope: LedgerScope, every: int = 256) -> None:
        self.scope = scope
        self.every = every
        self._buffer: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def record(self, key: str, result: dict[str, Any]) -> None:
        with self._lock:
            self._buffer.append((key, result))
            if len(self._buffer) < self.every:
                return
            entries, self._buffer = self._buffer, []
        self.scope.record_many(entries)

    def flush(self) -> None:
        with self._lock:
            entries, self._buffer = self._buffer, []
        self.scope.record_many(entries)
