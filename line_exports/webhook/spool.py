"""The durable spool between LINE and the warehouse: a SQLite file in WAL mode by default.

The receiver answers 200 only after a request's raw body is committed here with
``synchronous=FULL`` (the WAL is fsync'd on every commit), so a crash right after the answer
loses nothing. Commits are grouped: one writer thread drains every request waiting at that
moment into one transaction, so one fsync acknowledges many requests. The warehouse is never
touched while answering LINE; landing reads the spool later, behind a per-source cursor.

Receivers on several machines share a spool in PostgreSQL instead (``spool_pg``): the spool is
then named by a SQLAlchemy URL (``postgresql+psycopg://...``) wherever a spool file is accepted.
``open_writer`` / ``open_reader`` pick the backend from the location.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from line_exports import paths, private_files
from line_exports.webhook.relay_log import RelayLog
from line_exports.webhook.relay_log import ddl as relay_ddl

SPOOL_ENV = "LINE_EXPORTS_WEBHOOK_SPOOL"
SPOOL_URL_ENV = "LINE_EXPORTS_WEBHOOK_SPOOL_URL"
Position = tuple[int, int]
"""Where a cursor stands in a source's requests: (transaction id, row id), compared as a pair.
SQLite assigns row ids under its single write lock, so its transaction id is always 0; see
``spool_pg`` for why PostgreSQL needs the first member."""

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    source_id TEXT NOT NULL,
    received_at REAL NOT NULL,
    signature_ok INTEGER NOT NULL,
    parse_error TEXT,
    event_count INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_by_source ON requests (source_id, id);
CREATE TABLE IF NOT EXISTS rejects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    count INTEGER NOT NULL,
    last_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rejects_by_source ON rejects (source_id, id);
CREATE TABLE IF NOT EXISTS cursors (
    source_id TEXT PRIMARY KEY,
    request_done INTEGER NOT NULL DEFAULT 0,
    reject_done INTEGER NOT NULL DEFAULT 0,
    updated_at REAL
);
"""

_MAX_GROUP = 1000


def default_spool_path() -> Path:
    """``<data dir>/webhook/spool.sqlite3``: next to the warehouse, outside the repo."""
    return private_files.private_dir(paths.data_dir() / "webhook") / "spool.sqlite3"


def is_url(location: str | Path) -> bool:
    """True for a SQLAlchemy URL (``postgresql+psycopg://...``), False for a file path."""
    return isinstance(location, str) and "://" in location


def resolve_spool(location: str | Path | None = None) -> str | Path:
    """The spool to use: ``location``, else ``$LINE_EXPORTS_WEBHOOK_SPOOL_URL`` (a SQLAlchemy
    URL), else ``$LINE_EXPORTS_WEBHOOK_SPOOL`` (a file), else ``default_spool_path()``.

    ``sqlite:///path`` is the same as the path. Raises ``ValueError`` for a database the spool
    does not run on (SQLite file and PostgreSQL are supported).
    """
    chosen: str | Path = (
        location
        or os.environ.get(SPOOL_URL_ENV)
        or os.environ.get(SPOOL_ENV)
        or default_spool_path()
    )
    if not is_url(chosen):
        return Path(chosen)
    text = str(chosen)
    if text.startswith("sqlite:///"):
        return Path(text[len("sqlite:///") :])
    if text.split("://", 1)[0].split("+", 1)[0] in ("postgresql", "postgres"):
        return text
    raise ValueError(
        f"webhook spool: {text.split('://', 1)[0]}:// is not supported; use a SQLite file or "
        "postgresql+psycopg://user@host/db"
    )


def describe(location: str | Path) -> str:
    """The spool location for logs: a URL without its password."""
    if not is_url(location):
        return str(location)
    import sqlalchemy as sa

    return sa.engine.make_url(str(location)).render_as_string(hide_password=True)


def connect(path: str | Path) -> sqlite3.Connection:
    """Open the spool with the settings durability depends on (WAL + fsync per commit).

    Raw bodies are personal data: the file (and the ``-wal``/``-shm`` files SQLite makes with
    the same mode) is ``0600`` in a ``0700`` folder, whatever the umask.
    """
    private_files.private_file(path)
    private_files.restrict(path, "-wal", "-shm")
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.executescript(SCHEMA)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
    if "signature" not in columns:  # spools made before the relay kept LINE's header
        with contextlib.suppress(sqlite3.OperationalError):  # another process just added it
            conn.execute("ALTER TABLE requests ADD COLUMN signature TEXT")
    for statement in relay_ddl(
        blob="BLOB", serial="INTEGER PRIMARY KEY AUTOINCREMENT", real="REAL"
    ):
        conn.execute(statement)
    return conn


@dataclass(frozen=True)
class SpooledRequest:
    """One received request as kept: the body exactly as LINE sent it."""

    id: int
    request_id: str
    source_id: str
    received_at: float
    signature_ok: bool
    parse_error: str | None
    event_count: int
    body: bytes
    txid: int = 0
    signature: str | None = None  # x-line-signature as received (None in older spools)

    @property
    def position(self) -> Position:
        return (self.txid, self.id)


class GroupCommitWriter:
    """Group-committing writer used by one receiver process (subclasses: SQLite, PostgreSQL).

    ``append`` returns only once the row is committed and fsync'd. Bad-signature counts are
    aggregated in memory and flushed with the next commit (at most ~1s later): they are
    statistics, and writing one row per forged request would let anyone fill the disk.
    A failed commit answers its requests 5xx and the next batch reconnects.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[object] = queue.Queue()
        self._rejects: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = object()
        self.listeners: list[threading.Event] = []  # set after each commit (wake the relay)

    def _connect(self) -> Any:
        raise NotImplementedError

    def _commit(self, conn: Any, rows: list[tuple[object, ...]], rejects: list[Any]) -> None:
        """Write both lists in one transaction, durably; raise on any failure."""
        raise NotImplementedError

    def _close(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()

    def start(self) -> None:
        """Connect now so a bad location fails at startup, not on the first event."""
        conn = self._connect()
        self._thread = threading.Thread(
            target=self._run, args=(conn,), name="line-oa-spool", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Flush what is queued and close."""
        if self._thread is not None:
            self._queue.put(self._stop)
            self._thread.join(timeout=30)
            self._thread = None

    async def append(
        self,
        *,
        request_id: str,
        source_id: str,
        received_at: float,
        parse_error: str | None,
        event_count: int,
        body: bytes,
        signature: str | None = None,
    ) -> None:
        """Queue a verified request and wait until it is durably on disk."""
        if self._thread is None:
            raise RuntimeError("spool writer is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        row = (request_id, source_id, received_at, 1, parse_error, event_count, body, signature)
        self._queue.put((row, loop, future))
        await future

    def count_reject(self, source_id: str, reason: str) -> None:
        """Remember a rejected request (no body kept) for the landing metadata."""
        with self._lock:
            key = (source_id, reason)
            self._rejects[key] = self._rejects.get(key, 0) + 1

    def _take_rejects(self) -> list[tuple[str, str, int, float]]:
        with self._lock:
            taken, self._rejects = self._rejects, {}
        now = time.time()
        return [(s, r, n, now) for (s, r), n in taken.items()]

    def _run(self, conn: Any) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=1.0)
            except queue.Empty:
                first = None
            batch: list[tuple[tuple[object, ...], asyncio.AbstractEventLoop, asyncio.Future[None]]]
            batch = []
            item = first
            while item is not None:
                if item is self._stop:
                    stopping = True
                else:
                    batch.append(item)  # type: ignore[arg-type]
                if len(batch) >= _MAX_GROUP:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            rejects = self._take_rejects()
            if not batch and not rejects:
                continue
            error: BaseException | None = None
            try:
                if conn is None:
                    conn = self._connect()
                self._commit(conn, [row for row, _, _ in batch], rejects)
                if batch:
                    for listener in self.listeners:
                        listener.set()
            except BaseException as exc:  # disk full, I/O error, lost server: answer 5xx
                error = exc
                log.error("spool commit failed: %s", exc)
                if conn is not None:
                    self._close(conn)
                conn = None
            for _, loop, future in batch:
                with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                    loop.call_soon_threadsafe(_settle, future, error)
        if conn is not None:
            self._close(conn)


class SpoolWriter(GroupCommitWriter):
    """The SQLite spool's writer: one file, WAL, an fsync per group commit."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.location = describe(self.path)

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path)

    def _commit(
        self, conn: sqlite3.Connection, rows: list[tuple[object, ...]], rejects: list[Any]
    ) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO requests (request_id, source_id, received_at, signature_ok,"
                " parse_error, event_count, body, signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.executemany(
                "INSERT INTO rejects (source_id, reason, count, last_at) VALUES (?, ?, ?, ?)",
                rejects,
            )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(RuntimeError(f"spool commit failed: {error}"))


class Claim(Protocol):
    """A held claim (one worker at a time per purpose and source)."""

    def check(self) -> None:
        """Raise ``ClaimLost`` if the claim is no longer held (checked before a commit)."""


class ClaimLost(RuntimeError):
    """The claim ended while its work was still under way; the work is not committed."""


class _FileClaim:
    def check(self) -> None:  # an flock lives as long as the process holding it
        return None


class SpoolReader(RelayLog):
    """The SQLite spool's landing side: reads new requests and moves the per-source cursor."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.location = describe(self.path)
        self._conn = connect(self.path)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SpoolReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def claim(self, purpose: str, source_id: str, wait: bool = True) -> Iterator[Claim | None]:
        """Hold ``purpose`` (``land``, ``relay-...``) for ``source_id``, waiting for a holder
        (``wait=False``: yield None at once if another worker holds it).

        One machine shares a SQLite spool, so an ``flock`` next to it serialises the schedule,
        a manual run and every receiver worker; the kernel drops it when its process dies.
        """
        lock_path = self.path.parent / f"{purpose}-{source_id}.lock"
        with open(lock_path, "a+", opener=private_files.private_opener) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield None
                return
            try:
                yield _FileClaim()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _execute(self, statements: Any) -> list[Any]:
        rows: list[Any] = []
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                rows = self._conn.execute(sql, params).fetchall()
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return rows

    def cursor(self, source_id: str) -> tuple[Position, Position]:
        """(last landed request, last counted reject) positions."""
        row = self._conn.execute(
            "SELECT request_done, reject_done FROM cursors WHERE source_id = ?", (source_id,)
        ).fetchone()
        return ((0, int(row[0])), (0, int(row[1]))) if row else ((0, 0), (0, 0))

    def pending(
        self, source_id: str, after: Position, limit: int, since: float | None = None
    ) -> list[SpooledRequest]:
        """Requests committed after ``after`` (and received at or after ``since``), oldest
        first.

        Row ids are assigned inside SQLite's single write lock, so a row committed later
        never gets a smaller id than one already read: the cursor cannot skip a request.
        """
        rows = self._conn.execute(
            "SELECT id, request_id, source_id, received_at, signature_ok, parse_error,"
            " event_count, body, signature FROM requests WHERE source_id = ? AND id > ?"
            " AND received_at >= ? ORDER BY id LIMIT ?",
            (source_id, after[1], since if since is not None else -1.0, limit),
        ).fetchall()
        return [
            SpooledRequest(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], bytes(r[7]), 0, r[8])
            for r in rows
        ]

    def pending_count(self, source_id: str, after: Position | None = None) -> tuple[int, int]:
        """(number of requests after ``after``, default the landing cursor; highest request
        row id) for sensors and the relay's backlog."""
        (_, done), _ = self.cursor(source_id) if after is None else (after, after)
        row = self._conn.execute(
            "SELECT COUNT(*), COALESCE(MAX(id), 0) FROM requests WHERE source_id = ? AND id > ?",
            (source_id, done),
        ).fetchone()
        return int(row[0]), int(row[1])

    def rejects_since(self, source_id: str, after: Position) -> tuple[dict[str, int], Position]:
        """Rejected-request counts by reason since ``after`` and the new reject cursor."""
        rows = self._conn.execute(
            "SELECT id, reason, count FROM rejects WHERE source_id = ? AND id > ? ORDER BY id",
            (source_id, after[1]),
        ).fetchall()
        counts: dict[str, int] = {}
        last = after[1]
        for rid, reason, count in rows:
            counts[reason] = counts.get(reason, 0) + int(count)
            last = max(last, int(rid))
        return counts, (0, last)

    def advance(self, source_id: str, request_done: Position, reject_done: Position) -> None:
        """Record what has landed; only called after the warehouse commit succeeded."""
        self._conn.execute(
            "INSERT INTO cursors (source_id, request_done, reject_done, updated_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT(source_id) DO UPDATE SET"
            " request_done = MAX(request_done, excluded.request_done),"
            " reject_done = MAX(reject_done, excluded.reject_done),"
            " updated_at = excluded.updated_at",
            (source_id, request_done[1], reject_done[1], time.time()),
        )

    def prune(
        self, source_id: str, older_than_seconds: float, relayed: Position | None = None
    ) -> int:
        """Drop landed requests older than the retention; unlanded ones are never dropped, nor
        (with ``relayed``, the oldest relay cursor) ones not yet forwarded."""
        (_, done), (_, reject_done) = self.cursor(source_id)
        if relayed is not None:
            done = min(done, relayed[1])
        cutoff = time.time() - older_than_seconds
        cur = self._conn.execute(
            "DELETE FROM requests WHERE source_id = ? AND id <= ? AND received_at < ?",
            (source_id, done, cutoff),
        )
        self._conn.execute(
            "DELETE FROM rejects WHERE source_id = ? AND id <= ? AND last_at < ?",
            (source_id, reject_done, cutoff),
        )
        return cur.rowcount or 0

    def iter_all(self, source_id: str) -> Iterator[SpooledRequest]:
        """Every kept request for a source (for audits and the load test)."""
        after: Position = (0, 0)
        while True:
            chunk = self.pending(source_id, after, 5000)
            if not chunk:
                return
            yield from chunk
            after = chunk[-1].position


def open_writer(location: str | Path | None = None) -> GroupCommitWriter:
    """The receiver's writer for ``location`` (see ``resolve_spool``)."""
    chosen = resolve_spool(location)
    if isinstance(chosen, Path):
        return SpoolWriter(chosen)
    from line_exports.webhook.spool_pg import PgSpoolWriter

    return PgSpoolWriter(chosen)


def open_reader(location: str | Path | None = None) -> Any:
    """The landing/relay side for ``location``: ``SpoolReader`` or ``PgSpoolReader`` (same
    methods); use it as a context manager."""
    chosen = resolve_spool(location)
    if isinstance(chosen, Path):
        return SpoolReader(chosen)
    from line_exports.webhook.spool_pg import PgSpoolReader

    return PgSpoolReader(chosen)
