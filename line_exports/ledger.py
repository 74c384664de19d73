"""What each export run already delivered, so a re-run resumes instead of sending twice.

Entries are keyed by (export, scope, key): the scope is the run's identity (its scheduled time,
partition, or the root run it re-executes) and the key is derived from the data sent (a batch's
content hash, a recipient), never random, so the same work always has the same key.

Before its first request a run claims its scope (:mod:`line_exports.claims`), so two runs of
the same export and tick never send together. The ledger is the embedded SQLite file
``<data dir>/ledger.sqlite`` by default, or any database SQLAlchemy reaches (PostgreSQL for
runs on several machines): ``LINE_EXPORTS_LEDGER_URL`` or ``Ledger(url=...)``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from line_exports import paths, private_files

if TYPE_CHECKING:
    from line_exports.claims import Claim, ClaimOwner

LEDGER_URL_ENV = "LINE_EXPORTS_LEDGER_URL"
CLAIM_TIMEOUT_ENV = "LINE_EXPORTS_CLAIM_TIMEOUT"
DEFAULT_CLAIM_TIMEOUT = 120.0
"""Seconds without a heartbeat after which a claim is stale and another run may take it over."""

_METADATA = sa.MetaData()
ENTRIES = sa.Table(
    "ledger",
    _METADATA,
    sa.Column("export", sa.Text, primary_key=True),
    sa.Column("scope", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("result", sa.Text),
    sa.Column("recorded_at", sa.Float),
)
_ENTRY_COLUMNS = ("export", "scope", "key", "result", "recorded_at")
CLAIMS = sa.Table(
    "ledger_claims",
    _METADATA,
    sa.Column("export", sa.Text, primary_key=True),
    sa.Column("scope", sa.Text, primary_key=True),
    sa.Column("claim_id", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("process", sa.Text),  # boot, pid namespace, pid, start time: see claims.py
    sa.Column("claimed_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
)

# Sync modes (line_exports/sync.py): what each export holds at its destination, across runs.
SYNC_MEMBERS = sa.Table(
    "sync_members",
    _METADATA,
    sa.Column("export", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),  # derived from the member's key columns
    sa.Column("hash", sa.Text, nullable=False),  # of the fields last sent for it
    sa.Column("status", sa.Text, nullable=False),  # accepted | pending | refused (see sync.py)
    sa.Column("ident", sa.Text, nullable=False),  # JSON of the key columns (for a removal)
    sa.Column("recorded_at", sa.Float, nullable=False),
)
SYNC_REFUSALS = sa.Table(
    "sync_refusals",
    _METADATA,
    sa.Column("export", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),  # a sync_members key with status refused
    sa.Column("rule", sa.Text, nullable=False),  # the destination's refusal rule
    sa.Column("column", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False),  # the API's answer
    sa.Column("recorded_at", sa.Float, nullable=False),
)
SYNC_REQUESTS = sa.Table(
    "sync_requests",
    _METADATA,
    sa.Column("export", sa.Text, primary_key=True),  # the sync store's name
    sa.Column("key", sa.Text, primary_key=True),  # the request's retry key (X-Line-Retry-Key)
    sa.Column("scope", sa.Text, nullable=False),  # the ledger scope of the run that sent it
    sa.Column("kind", sa.Text, nullable=False),  # push | multicast
    sa.Column("body", sa.Text, nullable=False),  # the exact request body
    sa.Column("recipients", sa.Text, nullable=False),  # JSON list of its recipient IDs
    sa.Column("recorded_at", sa.Float, nullable=False),  # when it was about to be sent
)
SYNC_EXPORTS = sa.Table(
    "sync_exports",
    _METADATA,
    sa.Column("export", sa.Text, primary_key=True),
    sa.Column("mode", sa.Text, nullable=False),  # the mode of the last committed run
    sa.Column("runs", sa.Integer, nullable=False),
    sa.Column("recorded_at", sa.Float, nullable=False),
)
# The key of the sync stores' account fingerprints (sync_store.account_fingerprint): one random
# HMAC key per ledger, so every process sharing the ledger names an account the same way.
SYNC_SECRET = sa.Table(
    "sync_secret",
    _METADATA,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
# MAAC diff / mirror (destinations/maac_tags.py): which import task of an export first sent a
# tag for a member, and when MAAC started each such task; mirror untags a departed member only
# where MAAC's tagged_at shows that task attached the tag (not one the member carried before).
SYNC_TAGGED = sa.Table(
    "sync_tagged",
    _METADATA,
    sa.Column("export", sa.Text, primary_key=True),  # the export (and partition)
    sa.Column("key", sa.Text, primary_key=True),  # the member's LINE UID
    sa.Column("tag", sa.Text, primary_key=True),
    sa.Column("task", sa.Text, nullable=False),  # the MAAC import task that first sent it
    sa.Column("recorded_at", sa.Float, nullable=False),
)
SYNC_TAGGED_TASKS = sa.Table(
    "sync_tagged_tasks",
    _METADATA,
    sa.Column("export", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),  # the import task id
    sa.Column("started", sa.Text, nullable=False),  # its result's start_time (MAAC's clock)
    sa.Column("recorded_at", sa.Float, nullable=False),
)


def claim_timeout_from_env() -> float:
    """``LINE_EXPORTS_CLAIM_TIMEOUT`` (seconds), else :data:`DEFAULT_CLAIM_TIMEOUT`."""
    raw = os.environ.get(CLAIM_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_CLAIM_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{CLAIM_TIMEOUT_ENV} must be a number of seconds (got {raw!r})") from None
    if value <= 0:
        raise ValueError(f"{CLAIM_TIMEOUT_ENV} must be above 0 seconds (got {raw!r})")
    return value


class Ledger:
    """Accepted requests, one row each, and the claims of running scopes.

    ``path`` is an SQLite file (default ``<data dir>/ledger.sqlite``, created ``0600``); ``url``
    (default ``$LINE_EXPORTS_LEDGER_URL``) is any SQLAlchemy URL instead, e.g.
    ``postgresql+psycopg://user:pass@host/db`` shared by every machine that runs exports.
    ``claim_timeout`` (default ``$LINE_EXPORTS_CLAIM_TIMEOUT`` or 120 s) is how long a claim
    lives without a heartbeat before another run may take it over.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        url: str | None = None,
        claim_timeout: float | None = None,
    ) -> None:
        url = url or (None if path is not None else os.environ.get(LEDGER_URL_ENV) or None)
        if url is None:
            self.path: Path | None = path or paths.data_dir() / "ledger.sqlite"
            private_files.private_file(self.path)
            url = f"sqlite:///{self.path}"
        else:
            self.path = None
        self.url = sa.engine.make_url(url)
        if self.url.drivername == "postgresql":
            self.url = self.url.set(drivername="postgresql+psycopg")  # the driver we ship
        if self.path is None and self.url.get_backend_name() == "sqlite" and self.url.database:
            private_files.private_file(self.url.database)
        self.claim_timeout = (
            claim_timeout if claim_timeout is not None else claim_timeout_from_env()
        )
        self._lock = threading.Lock()
        self._claims: list[Claim] = []
        if self.url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(
                f"{LEDGER_URL_ENV}: the ledger runs on SQLite or PostgreSQL, not "
                f"{self.url.get_backend_name()} ({self.describe()})"
            )
        self.engine = _engine(self.url)
        self.dialect = self.engine.dialect.name
        _create_tables(self.engine)
        # Built once: building a statement costs more than running it on SQLite.
        upsert = self.insert(ENTRIES)
        self._upsert = upsert.on_conflict_do_update(
            index_elements=[ENTRIES.c.export, ENTRIES.c.scope, ENTRIES.c.key],
            set_={"result": upsert.excluded.result, "recorded_at": upsert.excluded.recorded_at},
        )
        self._select = sa.select(ENTRIES.c.key, ENTRIES.c.result).where(
            ENTRIES.c.export == sa.bindparam("export"),
            ENTRIES.c.scope == sa.bindparam("scope"),
            ENTRIES.c.key.in_(sa.bindparam("keys", expanding=True)),
        )
        self._count_query = sa.select(sa.func.count()).where(
            ENTRIES.c.export == sa.bindparam("export"), ENTRIES.c.scope == sa.bindparam("scope")
        )
        # SQLite: one connection held for the ledger's life, plain SQL (as cheap as a push needs:
        # a LINE push does a lookup and a pending record, 2,000 pushes a second).
        self._sqlite: sqlite3.Connection | None = None
        if self.dialect == "sqlite":
            self._sqlite = sqlite3.connect(
                self.url.database or ":memory:",
                check_same_thread=False,
                isolation_level=None,
                timeout=30,
            )
            self._sqlite.execute("pragma journal_mode=wal")
            self._sqlite.execute("pragma synchronous=normal")

    def describe(self) -> str:
        """Where the ledger is, without a password (for logs and messages)."""
        return self.url.render_as_string(hide_password=True)

    def scope(self, export: str, scope: str) -> LedgerScope:
        return LedgerScope(self, export, scope)

    def close(self) -> None:
        """Release every claim taken through this ledger, then close its connections."""
        for claim in list(self._claims):
            claim.release()
        if self._sqlite is not None:
            self._sqlite.close()
        self.engine.dispose()

    def now(self) -> sa.ColumnElement[float]:
        """The database's clock in epoch seconds: one clock for every machine's claims."""
        if self.dialect == "postgresql":
            return sa.cast(sa.literal_column("extract(epoch from clock_timestamp())"), sa.Float)
        return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Float)

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that can say ON CONFLICT (SQLite and PostgreSQL share the syntax)."""
        return (postgresql if self.dialect == "postgresql" else sqlite).insert(table)

    def _get_many(self, export: str, scope: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            for start in range(0, len(keys), 500):  # SQLite binds at most 999 parameters
                chunk = keys[start : start + 500]
                if self._sqlite is not None:
                    marks = ",".join("?" * len(chunk))
                    rows = self._sqlite.execute(
                        "select key, result from ledger where export=? and scope=?"
                        f" and key in ({marks})",
                        (export, scope, *chunk),
                    ).fetchall()
                else:
                    with self.engine.connect() as con:
                        params = {"export": export, "scope": scope, "keys": chunk}
                        rows = con.execute(self._select, params).all()
                found.update((key, json.loads(result)) for key, result in rows)
        return found

    def _put_many(self, export: str, scope: str, entries: list[tuple[str, dict[str, Any]]]) -> None:
        now = time.time()
        rows = [
            (export, scope, key, json.dumps(result, default=str), now) for key, result in entries
        ]
        with self._lock:
            if self._sqlite is None:
                with self.engine.begin() as con:
                    con.execute(
                        self._upsert, [dict(zip(_ENTRY_COLUMNS, r, strict=True)) for r in rows]
                    )
                return
            self._sqlite.execute("begin")
            try:
                self._sqlite.executemany(
                    "insert or replace into ledger values (?, ?, ?, ?, ?)", rows
                )
            except BaseException:
                self._sqlite.execute("rollback")
                raise
            self._sqlite.execute("commit")

    def _count(self, export: str, scope: str) -> int:
        with self._lock, self.engine.connect() as con:
            return int(
                con.execute(self._count_query, {"export": export, "scope": scope}).scalar_one()
            )


def _engine(url: sa.engine.URL) -> sa.Engine:
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, pool_pre_ping=False
        )

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("pragma journal_mode=wal")
            cursor.execute("pragma synchronous=normal")
            cursor.execute("pragma busy_timeout=30000")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=8)


def _create_tables(engine: sa.Engine) -> None:
    """Create the tables if missing; several processes may race to do it (one wins)."""
    for attempt in range(3):
        try:
            _METADATA.create_all(engine, checkfirst=True)
            return
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.OperationalError):
            if attempt == 2:
                raise
            time.sleep(0.2)


class LedgerScope:
    """The ledger entries of one export run scope.

    Once :meth:`claim` is called, every read and write checks that this run still holds the
    scope and raises :class:`~line_exports.claims.ClaimLost` otherwise (another run took it
    over after this one missed its heartbeats): the run stops instead of sending twice.
    """

    def __init__(self, ledger: Ledger, export: str, scope: str) -> None:
        self.ledger = ledger
        self.export = export
        self.scope = scope
        self.claimed: Claim | None = None

    def claim(self, owner: ClaimOwner, log: Any = None) -> LedgerScope:
        """Claim this scope for ``owner`` (see :func:`line_exports.claims.claim`); returns self.

        Raises :class:`~line_exports.claims.ScopeClaimed` naming the holder if another live run
        holds it. The claim is released by :meth:`release` or when the ledger closes.
        """
        from line_exports.claims import claim

        self.claimed = claim(self, owner, log=log)
        self.ledger._claims.append(self.claimed)
        return self

    def release(self) -> None:
        if self.claimed is not None:
            self.claimed.release()

    def done(self, key: str) -> dict[str, Any] | None:
        """The recorded result of ``key`` if it was already delivered in this scope."""
        return self.done_many([key]).get(key)

    def record(self, key: str, result: dict[str, Any]) -> None:
        self.record_many([(key, result)])

    def done_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Recorded results of those ``keys`` that have one (one query per 500 keys)."""
        if self.claimed is not None:
            self.claimed.check()
        return self.ledger._get_many(self.export, self.scope, keys)

    def record_many(self, entries: list[tuple[str, dict[str, Any]]]) -> None:
        """Record many results in one transaction (what was sent is recorded even if the claim
        was lost meanwhile; then :class:`~line_exports.claims.ClaimLost` stops the run)."""
        if entries:
            self.ledger._put_many(self.export, self.scope, entries)
        if self.claimed is not None:
            self.claimed.check()

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
