"""The sync store: what each export holds at its destination, next to the ledger.

``sync_members`` has one row per member key of an export (:func:`store_name`): the hash of the
fields last sent for it, its status and its key columns as JSON (what a removal needs):

* ``pending``: planned by a run and not (yet) known accepted: recorded before the run sends,
  so a run that stops, or a process killed mid-way, leaves its rows ``pending`` and the next
  run sends them again (``rows_retried``); also a row refused for a transient reason;
* ``accepted``: the API accepted it with this hash;
* ``refused``: the API refused it for a permanent reason (e.g. an unknown user, a malformed
  value); it is not sent again while its hash stays the same. The API's answer is kept in
  ``sync_refusals`` so a later run reports it with the reason.
* ``unknown``: an earlier run sent it and its answer was lost, and the API can no longer be
  asked safely (LINE forgets a retry key 24 hours after the first request): held, neither sent
  again nor counted accepted, until the user decides (``line-exports held``, :func:`release`).
  The reason is kept in ``sync_refusals``.

``sync_requests`` keeps the exact requests (retry key, body, recipients, ledger scope, time) a
run of a destination that cannot resend safely (LINE push and multicast) was about to send,
until that run commits: a later run of another scope settles them under their own retry keys
first (:mod:`line_exports.sync_settle`).

Writes go in transactions of :data:`WRITE_CHUNK` rows: the run's claim heartbeat (another
connection) needs the write lock meanwhile, and one 1M-row transaction held it too long.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from line_exports.ledger import (
    SYNC_EXPORTS,
    SYNC_MEMBERS,
    SYNC_REFUSALS,
    SYNC_REQUESTS,
    SYNC_SECRET,
    SYNC_TAGGED,
    SYNC_TAGGED_TASKS,
    Ledger,
)

WRITE_CHUNK = 50_000
KEY_RANGES = [(f"{i:x}", f"{i + 1:x}" if i < 15 else "g") for i in range(16)]
"""Member keys are md5 hex digests: 16 ranges by first digit split a whole-store update into
transactions of about 1/16 of the members each (62,500 of 1M)."""


def store_name(export: str, scope: str, target: str = "") -> str:
    """The sync store of an export run: one per export and target (``SyncSpec.target``: the
    segment, audience or tags the rows land in; a new target starts from nothing, so its first
    run sends every row and removals only reach the target that holds the members), one per
    partition of a partitioned export (each partition holds its own members), whatever the
    tick."""
    partition = next((p for p in scope.split(";") if p.startswith("partition=")), "")
    name = f"{export}#{partition}" if partition else export
    return f"{name}@{target}" if target else name


def account_fingerprint(ledger: Ledger, secret: str) -> str:
    """A keyed fingerprint of a credential (HMAC-SHA256, 16 hex digits) that tells accounts
    apart in a sync store's name when the API gives no identity of its own (MAAC): never the
    secret itself, and not testable against guesses without the key, which is 32 random bytes
    kept in the ledger (``sync_secret``, made on first use), so every process sharing the
    ledger names an account the same way."""
    insert = (
        ledger.insert(SYNC_SECRET)
        .values(name="account_fingerprint", value=secrets.token_hex(32))
        .on_conflict_do_nothing(index_elements=[SYNC_SECRET.c.name])
    )
    with ledger._lock, ledger.engine.begin() as con:
        con.execute(insert)
        key = con.execute(
            sa.select(SYNC_SECRET.c.value).where(SYNC_SECRET.c.name == "account_fingerprint")
        ).scalar_one()
    return hmac.new(bytes.fromhex(key), secret.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class SentRequest:
    """A request a run recorded before sending it (``sync_requests``)."""

    key: str
    scope: str
    kind: str
    body: str
    recipients: list[str]
    at: float


class SyncStore:
    """The ``sync_members`` (and ``sync_refusals``) of one export, in the ledger's database."""

    def __init__(self, ledger: Ledger, export: str) -> None:
        self.ledger = ledger
        self.export = export

    def last_mode(self) -> str | None:
        with self.ledger.engine.connect() as con:
            return con.execute(
                sa.select(SYNC_EXPORTS.c.mode).where(SYNC_EXPORTS.c.export == self.export)
            ).scalar_one_or_none()

    def adopt(
        self, legacy: str, rekey: Callable[[list[str]], list[tuple[str, str] | None]] | None
    ) -> int:
        """Take over the store ``legacy`` (an earlier version's name for the same export and
        target) when this store has never committed a run and ``legacy`` has: its members,
        refusals, recorded requests and MAAC tag records move here, each member rekeyed by
        ``rekey`` (ident JSON -> (key, ident), or None: forgotten, never removed). Returns the
        members adopted. Written in order (members, refusals, the rest, the run record, then
        the legacy rows deleted), so a process killed mid-way adopts again, the same rows."""
        if legacy == self.export or self.last_mode() is not None:
            return 0
        old = SyncStore(self.ledger, legacy)
        if old.last_mode() is None:
            return 0
        names = tuple(c.name for c in SYNC_MEMBERS.columns if c.name != "export")
        with self.ledger._lock, self.ledger.engine.connect() as con:
            members = con.execute(
                sa.select(*(SYNC_MEMBERS.c[n] for n in names)).where(
                    SYNC_MEMBERS.c.export == legacy
                )
            ).all()
            exports = con.execute(
                sa.select(SYNC_EXPORTS).where(SYNC_EXPORTS.c.export == legacy)
            ).one()
        rows = [dict(zip(names, row, strict=True)) for row in members]
        mapping: dict[str, str | None] = {r["key"]: r["key"] for r in rows}
        if rekey is not None:
            for row, found in zip(rows, rekey([r["ident"] for r in rows]), strict=True):
                mapping[row["key"]] = found[0] if found else None
                if found:
                    row["key"], row["ident"] = found
                else:
                    row["key"] = None
        kept = [r for r in rows if r["key"] is not None]
        self._upsert(SYNC_MEMBERS, [(self.export, *(r[n] for n in names)) for r in kept])
        refusals = old._select(
            SYNC_REFUSALS,
            ("key", "rule", "column", "message", "recorded_at"),
            list(mapping),
        )
        self._upsert(
            SYNC_REFUSALS,
            [(self.export, mapping[r[0]], *r[1:]) for r in refusals if mapping[r[0]]],
        )
        with self.ledger._lock, self.ledger.engine.begin() as con:
            for table in (SYNC_REQUESTS, SYNC_TAGGED, SYNC_TAGGED_TASKS):
                con.execute(
                    sa.update(table).where(table.c.export == legacy).values(export=self.export)
                )
            con.execute(
                self.ledger.insert(SYNC_EXPORTS)
                .values(
                    export=self.export,
                    mode=exports.mode,
                    runs=exports.runs,
                    recorded_at=exports.recorded_at,
                )
                .on_conflict_do_nothing(index_elements=[SYNC_EXPORTS.c.export])
            )
            for table in (SYNC_MEMBERS, SYNC_REFUSALS, SYNC_EXPORTS):
                con.execute(sa.delete(table).where(table.c.export == legacy))
        return len(kept)

    def load(self) -> pa.Table:
        """(key, hash, status) of every member recorded for this export."""
        query = "select key, hash, status from sync_members where export = ?"
        with self.ledger._lock:
            if self.ledger._sqlite is not None:
                rows = self.ledger._sqlite.execute(query, (self.export,)).fetchall()
            else:
                with self.ledger.engine.connect() as con:
                    rows = con.execute(
                        sa.select(
                            SYNC_MEMBERS.c.key,
                            SYNC_MEMBERS.c.hash,
                            SYNC_MEMBERS.c.status,
                        ).where(SYNC_MEMBERS.c.export == self.export)
                    ).all()
        columns = list(zip(*rows, strict=True)) if rows else [[], [], []]
        return pa.table(
            {
                name: pa.array(list(values), pa.string())
                for name, values in zip(("key", "hash", "status"), columns, strict=True)
            }
        )

    def idents(self, keys: list[str]) -> list[str]:
        """The key columns (JSON) recorded for ``keys``, in their order."""
        found = dict(self._select(SYNC_MEMBERS, ("key", "ident"), keys))
        return [found[key] for key in keys]

    def refusals(self, keys: list[str]) -> dict[str, tuple[str, str, str]]:
        """key -> (rule, column, message) of the API's refusal recorded for ``keys``."""
        rows = self._select(SYNC_REFUSALS, ("key", "rule", "column", "message"), keys)
        return {key: (rule, column, message) for key, rule, column, message in rows}

    def put(self, table: pa.Table, status: str, stamp: float | None = None) -> float:
        """Upsert (key, hash, ident) rows with ``status``; returns their ``recorded_at``
        (``stamp``, or now): :meth:`settle` finds a run's pending rows by it."""
        stamp = time.time() if stamp is None else stamp
        if table.num_rows:
            n = table.num_rows
            rows = list(
                zip(
                    [self.export] * n,
                    table.column("key").to_pylist(),
                    table.column("hash").to_pylist(),
                    [status] * n,
                    table.column("ident").to_pylist(),
                    [stamp] * n,
                    strict=True,
                )
            )
            self._upsert(SYNC_MEMBERS, rows)
        return stamp

    def put_refusals(self, keys: list[str], reasons: list[tuple[str, str, str]]) -> None:
        """Record the API's (rule, column, message) for refused ``keys``."""
        now = time.time()
        rows = [(self.export, k, *r, now) for k, r in zip(keys, reasons, strict=True)]
        self._upsert(SYNC_REFUSALS, rows)

    def settle(self, stamp: float) -> None:
        """The rows a run recorded ``pending`` at ``stamp`` (and did not record otherwise
        since) become ``accepted``: one UPDATE per key range, not one statement per row."""
        table = SYNC_MEMBERS
        for low, high in KEY_RANGES:
            if self.ledger._sqlite is not None:
                with self.ledger._lock:
                    self.ledger._sqlite.execute(
                        "update sync_members set status = 'accepted' where export = ? "
                        "and key >= ? and key < ? and status = 'pending' and recorded_at = ?",
                        (self.export, low, high, stamp),
                    )
                continue
            statement = (
                sa.update(table)
                .where(
                    table.c.export == self.export,
                    table.c.key >= low,
                    table.c.key < high,
                    table.c.status == "pending",
                    table.c.recorded_at == stamp,
                )
                .values(status="accepted")
            )
            with self.ledger._lock, self.ledger.engine.begin() as con:
                con.execute(statement)

    def set_status(self, keys: list[str], status: str) -> None:
        """Set the status of ``keys`` (their hash and key columns stay)."""
        table = SYNC_MEMBERS
        statement = (
            sa.update(table)
            .where(table.c.export == sa.bindparam("e"), table.c.key == sa.bindparam("k"))
            .values(status=sa.bindparam("s"))
        )
        if self.ledger._sqlite is not None:
            self._sqlite_many(
                "update sync_members set status = ? where export = ? and key = ?",
                [(status, self.export, key) for key in keys],
            )
            return
        self._engine_many(statement, [{"e": self.export, "k": k, "s": status} for k in keys])

    def keys_by_recipient(self, status: str = "pending") -> dict[str, str]:
        """{recipient ``id``: member key} of the members with ``status`` (LINE push and
        multicast are keyed by ``id``)."""
        with self.ledger._lock, self.ledger.engine.connect() as con:
            rows = con.execute(
                sa.select(SYNC_MEMBERS.c.key, SYNC_MEMBERS.c.ident).where(
                    SYNC_MEMBERS.c.export == self.export, SYNC_MEMBERS.c.status == status
                )
            ).all()
        return {str(json.loads(ident).get("id")): key for key, ident in rows}

    def put_requests(self, scope: str, entries: list[tuple[str, str, str, list[str]]]) -> None:
        """Record (retry key, kind, body, recipients) of requests about to be sent in
        ``scope``, in one transaction per :data:`WRITE_CHUNK`. A request sent again (a resumed
        run) keeps its first time: LINE's 24 hours count from the first request."""
        now = time.time()
        rows = [
            (self.export, key, scope, kind, body, json.dumps(recipients), now)
            for key, kind, body, recipients in entries
        ]
        if rows:
            self._upsert(SYNC_REQUESTS, rows, keep=True)

    def earlier_requests(self, scope: str | None = None) -> list[SentRequest]:
        """The requests recorded by runs that did not commit: every one, or those of scopes
        other than ``scope``."""
        table = SYNC_REQUESTS
        where = [table.c.export == self.export]
        if scope is not None:
            where.append(table.c.scope != scope)
        with self.ledger._lock, self.ledger.engine.connect() as con:
            rows = con.execute(
                sa.select(
                    table.c.key,
                    table.c.scope,
                    table.c.kind,
                    table.c.body,
                    table.c.recipients,
                    table.c.recorded_at,
                )
                .where(*where)
                .order_by(table.c.recorded_at)
            ).all()
        return [
            SentRequest(key, scope, kind, body, json.loads(recipients), at)
            for key, scope, kind, body, recipients, at in rows
        ]

    def drop_requests(self, scope: str | None = None, keys: list[str] | None = None) -> None:
        """Forget the recorded requests of a run that committed (``scope``), or ``keys``."""
        if keys is not None:
            self._delete(SYNC_REQUESTS, keys)
        if scope is not None:
            with self.ledger._lock, self.ledger.engine.begin() as con:
                con.execute(
                    sa.delete(SYNC_REQUESTS).where(
                        SYNC_REQUESTS.c.export == self.export, SYNC_REQUESTS.c.scope == scope
                    )
                )

    def delete(self, keys: list[str]) -> None:
        """Forget ``keys`` (members removed, or departed before a baseline)."""
        for table in (SYNC_MEMBERS, SYNC_REFUSALS):
            self._delete(table, keys)

    def finish(self, mode: str) -> None:
        """Record that a run in ``mode`` committed (the next mirror run is no baseline)."""
        insert = self.ledger.insert(SYNC_EXPORTS).values(
            export=self.export, mode=mode, runs=1, recorded_at=time.time()
        )
        upsert = insert.on_conflict_do_update(
            index_elements=[SYNC_EXPORTS.c.export],
            set_={
                "mode": mode,
                "runs": SYNC_EXPORTS.c.runs + 1,
                "recorded_at": insert.excluded.recorded_at,
            },
        )
        with self.ledger._lock, self.ledger.engine.begin() as con:
            con.execute(upsert)

    def put_absent(self, table: sa.Table, rows: list[tuple[Any, ...]]) -> None:
        """Insert ``rows`` (every column after ``export``, in order) whose primary key is not
        recorded yet: the first record wins (e.g. the task that first sent a MAAC tag)."""
        rows = [(self.export, *row) for row in rows]
        if self.ledger._sqlite is not None:
            marks = ", ".join("?" * len(table.columns))
            self._sqlite_many(f"insert or ignore into {table.name} values ({marks})", rows)
            return
        names = [c.name for c in table.columns]
        statement = self.ledger.insert(table).on_conflict_do_nothing(
            index_elements=[c.name for c in table.primary_key.columns]
        )
        self._engine_many(statement, [dict(zip(names, r, strict=True)) for r in rows])

    def select(self, table: sa.Table, names: tuple[str, ...], keys: list[str]) -> list[Any]:
        """Rows of ``table`` (columns ``names``) for ``keys`` of this export."""
        return self._select(table, names, keys)

    def all(self, table: sa.Table, names: tuple[str, ...]) -> list[Any]:
        """Every row of ``table`` (columns ``names``) of this export."""
        with self.ledger._lock, self.ledger.engine.connect() as con:
            return list(
                con.execute(
                    sa.select(*(table.c[n] for n in names)).where(table.c.export == self.export)
                ).all()
            )

    def forget(self, table: sa.Table, keys: list[str]) -> None:
        """Delete every row of ``table`` for ``keys`` of this export."""
        self._delete(table, keys)

    def _select(self, table: sa.Table, names: tuple[str, ...], keys: list[str]) -> list[Any]:
        """Rows of ``table`` (columns ``names``) for ``keys`` of this export, 500 keys a query
        (SQLite binds at most 999 parameters)."""
        found: list[Any] = []
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            with self.ledger._lock:
                if self.ledger._sqlite is not None:
                    marks = ",".join("?" * len(chunk))
                    columns = ", ".join(f'"{n}"' for n in names)
                    found += self.ledger._sqlite.execute(
                        f"select {columns} from {table.name} where export = ? and key in ({marks})",
                        (self.export, *chunk),
                    ).fetchall()
                else:
                    with self.ledger.engine.connect() as con:
                        found += con.execute(
                            sa.select(*(table.c[n] for n in names)).where(
                                table.c.export == self.export, table.c.key.in_(chunk)
                            )
                        ).all()
        return found

    def _upsert(self, table: sa.Table, rows: list[tuple[Any, ...]], keep: bool = False) -> None:
        """Insert or replace ``rows`` (every column, in order), WRITE_CHUNK a transaction;
        ``keep``: a row already there stays as it is."""
        if self.ledger._sqlite is not None:
            marks = ", ".join("?" * len(table.columns))
            verb = "insert or ignore" if keep else "insert or replace"
            self._sqlite_many(f"{verb} into {table.name} values ({marks})", rows)
            return
        insert = self.ledger.insert(table)
        names = [c.name for c in table.columns]
        keys = [c.name for c in table.primary_key.columns]
        statement = (
            insert.on_conflict_do_nothing(index_elements=keys)
            if keep
            else insert.on_conflict_do_update(
                index_elements=keys,
                set_={n: insert.excluded[n] for n in names if n not in keys},
            )
        )
        self._engine_many(statement, [dict(zip(names, r, strict=True)) for r in rows])

    def _delete(self, table: sa.Table, keys: list[str]) -> None:
        if self.ledger._sqlite is not None:
            self._sqlite_many(
                f"delete from {table.name} where export = ? and key = ?",
                [(self.export, key) for key in keys],
            )
            return
        statement = sa.delete(table).where(
            table.c.export == sa.bindparam("e"), table.c.key == sa.bindparam("k")
        )
        self._engine_many(statement, [{"e": self.export, "k": k} for k in keys])

    def _sqlite_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        con = self.ledger._sqlite
        assert con is not None
        for start in range(0, len(rows), WRITE_CHUNK):
            with self.ledger._lock:
                con.execute("begin")
                try:
                    con.executemany(sql, rows[start : start + WRITE_CHUNK])
                except BaseException:
                    con.execute("rollback")
                    raise
                con.execute("commit")

    def _engine_many(self, statement: Any, params: list[dict[str, Any]]) -> None:
        for start in range(0, len(params), WRITE_CHUNK):
            with self.ledger._lock, self.ledger.engine.begin() as con:
                con.execute(statement, params[start : start + WRITE_CHUNK])
