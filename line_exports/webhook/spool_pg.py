"""The spool in PostgreSQL: receivers on several machines behind one load balancer share it.

Same contract as the SQLite spool (``spool``): a request is answered 200 only after its body is
committed (``synchronous_commit = on``, set on every connection, so the commit waits for the
WAL flush), and commits are grouped per receiver process. The tables live in their own schema,
``line_oa_spool``, in the database the SQLAlchemy URL names (``postgresql+psycopg://...``);
the password may come from ``PGPASSWORD``/``.pgpass`` instead of the URL.

Ordering without a global write lock: concurrent receivers take row ids from a sequence, so a
transaction holding id 7 may commit after one holding id 8 was already read; an id cursor would
then skip 7 for ever. Each row therefore records the id of the transaction that wrote it
(``pg_current_xact_id()``, PostgreSQL 13+), and readers take only rows whose transaction is
older than the oldest one still running (``pg_snapshot_xmin`` of a REPEATABLE READ snapshot):
every such transaction has finished, so nothing can later appear behind the cursor. The cursor
is the pair (transaction id, row id). A transaction left open for long anywhere on the server
delays landing (it never loses a row).

Claims: landing and relay of a source are each held by one worker at a time with a session
advisory lock (``pg_advisory_lock``) on a connection of its own; PostgreSQL releases it when that
connection or its process dies, so a SIGKILLed worker's claim passes to the next one.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from line_exports.webhook.relay_log import RelayLog
from line_exports.webhook.relay_log import ddl as relay_ddl
from line_exports.webhook.spool import (
    ClaimLost,
    GroupCommitWriter,
    Position,
    SpooledRequest,
    describe,
)

SCHEMA_NAME = "line_oa_spool"
_LOCK_NAMESPACE = 0x4C4F4157  # "LOAW": the first key of every advisory lock taken here

_DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA_NAME}",
    """CREATE TABLE IF NOT EXISTS requests (
        id BIGSERIAL PRIMARY KEY,
        txid BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
        request_id TEXT NOT NULL UNIQUE,
        source_id TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        signature_ok BOOLEAN NOT NULL,
        parse_error TEXT,
        event_count INTEGER NOT NULL,
        body BYTEA NOT NULL,
        signature TEXT)""",
    "ALTER TABLE requests ADD COLUMN IF NOT EXISTS signature TEXT",
    "CREATE INDEX IF NOT EXISTS requests_by_source ON requests (source_id, txid, id)",
    "CREATE INDEX IF NOT EXISTS requests_by_time ON requests (source_id, received_at)",
    """CREATE TABLE IF NOT EXISTS rejects (
        id BIGSERIAL PRIMARY KEY,
        txid BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
        source_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        count INTEGER NOT NULL,
        last_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS rejects_by_source ON rejects (source_id, txid, id)",
    """CREATE TABLE IF NOT EXISTS cursors (
        source_id TEXT PRIMARY KEY,
        request_txid BIGINT NOT NULL DEFAULT 0,
        request_done BIGINT NOT NULL DEFAULT 0,
        reject_txid BIGINT NOT NULL DEFAULT 0,
        reject_done BIGINT NOT NULL DEFAULT 0,
        updated_at DOUBLE PRECISION)""",
    *relay_ddl(blob="BYTEA", serial="BIGSERIAL PRIMARY KEY", real="DOUBLE PRECISION"),
]

_COLUMNS = (
    "id, request_id, source_id, received_at, signature_ok, parse_error, event_count, body, txid,"
    " signature"
)


def make_engine(url: str) -> sa.Engine:
    """An engine whose connections use the spool's schema and durable commits."""
    engine = sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)

    @sa.event.listens_for(engine, "connect")
    def _settings(dbapi_conn: Any, _record: Any) -> None:
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET search_path TO {SCHEMA_NAME}")
            cur.execute("SET synchronous_commit TO on")  # 200 only after the WAL flush
        dbapi_conn.autocommit = autocommit

    return engine


def ensure_schema(engine: sa.Engine) -> None:
    """Create the schema and tables once; receivers starting together wait for each other."""
    with engine.begin() as conn:
        version = int(conn.execute(sa.text("SHOW server_version_num")).scalar_one())
        if version < 130000:
            raise RuntimeError(
                "webhook spool: PostgreSQL 13 or newer is needed (pg_current_xact_id)"
            )
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k, 0)"), {"k": _LOCK_NAMESPACE})
        for statement in _DDL:
            conn.execute(sa.text(statement))


def _lock_key(purpose: str, source_id: str) -> int:
    """A stable int4 per (purpose, source); a collision only serialises two claims."""
    return zlib.crc32(f"{purpose}:{source_id}".encode()) - 2**31


class PgSpoolWriter(GroupCommitWriter):
    """The receiver's writer on PostgreSQL: one connection, one transaction per group."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.location = describe(url)
        self._engine = make_engine(url)
        ensure_schema(self._engine)

    def _connect(self) -> sa.Connection:
        return self._engine.connect()

    def _commit(
        self, conn: sa.Connection, rows: list[tuple[object, ...]], rejects: list[Any]
    ) -> None:
        with conn.begin():
            if rows:
                conn.execute(
                    sa.text(
                        "INSERT INTO requests (request_id, source_id, received_at, signature_ok,"
                        " parse_error, event_count, body, signature) VALUES (:request_id,"
                        " :source_id, :received_at, :signature_ok, :parse_error, :event_count,"
                        " :body, :signature)"
                    ),
                    [
                        {
                            "request_id": r[0],
                            "source_id": r[1],
                            "received_at": r[2],
                            "signature_ok": bool(r[3]),
                            "parse_error": r[4],
                            "event_count": r[5],
                            "body": r[6],
                            "signature": r[7],
                        }
                        for r in rows
                    ],
                )
            if rejects:
                conn.execute(
                    sa.text(
                        "INSERT INTO rejects (source_id, reason, count, last_at)"
                        " VALUES (:s, :r, :n, :t)"
                    ),
                    [{"s": s, "r": r, "n": n, "t": t} for s, r, n, t in rejects],
                )

    def stop(self) -> None:
        super().stop()
        self._engine.dispose()


class _AdvisoryClaim:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def check(self) -> None:
        try:
            self._conn.execute(sa.text("SELECT 1"))
        except sa.exc.DBAPIError as exc:
            raise ClaimLost(f"the spool connection holding the claim was lost: {exc}") from exc


class PgSpoolReader(RelayLog):
    """The landing/relay side on PostgreSQL; the same methods as ``spool.SpoolReader``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.location = describe(url)
        self._engine = make_engine(url)
        ensure_schema(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> PgSpoolReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def claim(
        self, purpose: str, source_id: str, wait: bool = True
    ) -> Iterator[_AdvisoryClaim | None]:
        """Hold ``purpose`` for ``source_id`` on any machine, waiting for the holder
        (``wait=False``: yield None at once if another worker holds it)."""
        key = _lock_key(purpose, source_id)
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            params = {"a": _LOCK_NAMESPACE, "b": key}
            if wait:
                conn.execute(sa.text("SELECT pg_advisory_lock(:a, :b)"), params)
            elif not conn.execute(sa.text("SELECT pg_try_advisory_lock(:a, :b)"), params).scalar():
                yield None
                return
            try:
                yield _AdvisoryClaim(conn)
            finally:
                with contextlib.suppress(sa.exc.DBAPIError):
                    conn.execute(
                        sa.text("SELECT pg_advisory_unlock(:a, :b)"),
                        {"a": _LOCK_NAMESPACE, "b": key},
                    )
        finally:
            conn.close()

    def _run(self, sql: str, **params: Any) -> list[Any]:
        with self._engine.begin() as conn:
            return list(conn.execute(sa.text(sql), params))

    def _execute(self, statements: Any) -> list[Any]:
        rows: list[Any] = []
        with self._engine.begin() as conn:
            for sql, params in statements:
                result = conn.execute(sa.text(sql), params)
                rows = list(result) if result.returns_rows else []
        return rows

    def cursor(self, source_id: str) -> tuple[Position, Position]:
        rows = self._run(
            "SELECT request_txid, request_done, reject_txid, reject_done FROM cursors"
            " WHERE source_id = :s",
            s=source_id,
        )
        if not rows:
            return (0, 0), (0, 0)
        r = rows[0]
        return (int(r[0]), int(r[1])), (int(r[2]), int(r[3]))

    def _settled_rows(self, sql: str, params: dict[str, Any]) -> list[Any]:
        """The rows of ``sql`` in one REPEATABLE READ snapshot, its ``:settled`` bound to the
        snapshot's oldest transaction still running: below it, every transaction has finished
        (see module doc)."""
        with (
            self._engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn,
            conn.begin(),
        ):
            settled = int(
                conn.execute(
                    sa.text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                ).scalar_one()
            )
            return conn.execute(sa.text(sql), {**params, "settled": settled}).all()

    def pending(
        self, source_id: str, after: Position, limit: int, since: float | None = None
    ) -> list[SpooledRequest]:
        """Committed requests after ``after`` (received at or after ``since``) in
        (transaction, row) order, oldest first; none whose transaction might still be
        followed by an earlier one (see module doc)."""
        rows = self._settled_rows(
            f"SELECT {_COLUMNS} FROM requests WHERE source_id = :s"
            " AND (txid, id) > (:t, :i) AND txid < :settled AND received_at >= :since"
            " ORDER BY txid, id LIMIT :n",
            {
                "s": source_id,
                "t": after[0],
                "i": after[1],
                "n": limit,
                "since": since if since is not None else -1.0,
            },
        )
        return [
            SpooledRequest(
                int(r[0]),
                r[1],
                r[2],
                float(r[3]),
                bool(r[4]),
                r[5],
                int(r[6]),
                bytes(r[7]),
                int(r[8]),
                r[9],
            )  # fmt: skip
            for r in rows
        ]

    def pending_count(self, source_id: str, after: Position | None = None) -> tuple[int, int]:
        """(number of requests after ``after``, default the landing cursor; highest request
        row id) for sensors and the relay's backlog."""
        done = self.cursor(source_id)[0] if after is None else after
        ((count, newest),) = self._run(
            "SELECT COUNT(*), COALESCE(MAX(id), 0) FROM requests WHERE source_id = :s"
            " AND (txid, id) > (:t, :i)",
            s=source_id,
            t=done[0],
            i=done[1],
        )
        return int(count), int(newest)

    def rejects_since(self, source_id: str, after: Position) -> tuple[dict[str, int], Position]:
        rows = self._settled_rows(
            "SELECT txid, id, reason, count FROM rejects WHERE source_id = :s"
            " AND (txid, id) > (:t, :i) AND txid < :settled ORDER BY txid, id",
            {"s": source_id, "t": after[0], "i": after[1]},
        )
        counts: dict[str, int] = {}
        last = after
        for txid, rid, reason, count in rows:
            counts[reason] = counts.get(reason, 0) + int(count)
            last = (int(txid), int(rid))
        return counts, last

    def advance(self, source_id: str, request_done: Position, reject_done: Position) -> None:
        """Record what has landed; only called after the warehouse commit succeeded."""
        with self._engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO cursors (source_id, updated_at) VALUES (:s, :now)"
                    " ON CONFLICT (source_id) DO NOTHING"
                ),
                {"s": source_id, "now": time.time()},
            )
            conn.execute(
                sa.text(
                    "UPDATE cursors SET request_txid = :t, request_done = :i, updated_at = :now"
                    " WHERE source_id = :s AND (request_txid, request_done) < (:t, :i)"
                ),
                {"s": source_id, "t": request_done[0], "i": request_done[1], "now": time.time()},
            )
            conn.execute(
                sa.text(
                    "UPDATE cursors SET reject_txid = :t, reject_done = :i"
                    " WHERE source_id = :s AND (reject_txid, reject_done) < (:t, :i)"
                ),
                {"s": source_id, "t": reject_done[0], "i": reject_done[1]},
            )

    def prune(
        self, source_id: str, older_than_seconds: float, relayed: Position | None = None
    ) -> int:
        """Drop requests older than the retention that are landed (and, with ``relayed``, at
        or before that position: the oldest relay cursor)."""
        done, reject_done = self.cursor(source_id)
        if relayed is not None:
            done = min(done, relayed)
        cutoff = time.time() - older_than_seconds
        with self._engine.begin() as conn:
            deleted = conn.execute(
                sa.text(
                    "DELETE FROM requests WHERE source_id = :s AND (txid, id) <= (:t, :i)"
                    " AND received_at < :cutoff"
                ),
                {"s": source_id, "t": done[0], "i": done[1], "cutoff": cutoff},
            ).rowcount
            conn.execute(
                sa.text(
                    "DELETE FROM rejects WHERE source_id = :s AND (txid, id) <= (:t, :i)"
                    " AND last_at < :cutoff"
                ),
                {"s": source_id, "t": reject_done[0], "i": reject_done[1], "cutoff": cutoff},
            )
        return int(deleted or 0)

    def iter_all(self, source_id: str) -> Iterator[SpooledRequest]:
        """Every kept, settled request for a source (for audits and the load test)."""
        after: Position = (0, 0)
        while True:
            chunk = self.pending(source_id, after, 5000)
            if not chunk:
                return
            yield from chunk
            after = chunk[-1].position
