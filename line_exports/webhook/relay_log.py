"""The relay's state in the spool: a cursor per (source, target) and the dead-letter table.

Shared by both spool backends (the SQL is the same in SQLite and PostgreSQL; only the table
types differ, see ``ddl``). A cursor is a spool ``Position``: every request at or before it was
forwarded to that target or dead-lettered. ``attempts``/``next_at``/``last_error`` describe the
request after it (the head of the line) so a restarted relay keeps its backoff and its count.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # spool imports this module
    from line_exports.webhook.spool import Position, SpooledRequest


def ddl(*, blob: str, serial: str, real: str) -> list[str]:
    """CREATE statements for a backend (``blob``/``serial``/``real``: its type names)."""
    return [
        f"""CREATE TABLE IF NOT EXISTS relay_cursors (
            source_id TEXT NOT NULL,
            target TEXT NOT NULL,
            txid BIGINT NOT NULL DEFAULT 0,
            done BIGINT NOT NULL DEFAULT 0,
            forwarded BIGINT NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at {real} NOT NULL DEFAULT 0,
            last_error TEXT,
            updated_at {real},
            PRIMARY KEY (source_id, target))""",
        f"""CREATE TABLE IF NOT EXISTS relay_dead_letters (
            id {serial},
            source_id TEXT NOT NULL,
            target TEXT NOT NULL,
            request_id TEXT NOT NULL,
            received_at {real} NOT NULL,
            attempts INTEGER NOT NULL,
            status INTEGER,
            reason TEXT NOT NULL,
            dead_at {real} NOT NULL,
            signature TEXT,
            body {blob} NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS relay_dead_letters_by_target"
        " ON relay_dead_letters (source_id, target, id)",
        # One row per dead letter resent (webhook.resend): 'sending' is written before the POST,
        # 'sent' after a 2xx; a row left 'sending' by a crash is in doubt, never resent silently.
        f"""CREATE TABLE IF NOT EXISTS relay_resends (
            dead_letter_id BIGINT PRIMARY KEY,
            state TEXT NOT NULL,
            token TEXT NOT NULL,
            started_at {real} NOT NULL,
            sent_at {real},
            status INTEGER)""",
    ]


@dataclass(frozen=True)
class RelayState:
    """Where one target stands: forwarded through ``position``; the next request's retries."""

    position: Position
    forwarded: int
    attempts: int
    next_at: float
    last_error: str | None


@dataclass(frozen=True)
class DeadLetter:
    """A request given up on for one target, with why (``status`` None: no HTTP answer)."""

    id: int
    source_id: str
    target: str
    request_id: str
    received_at: float
    attempts: int
    status: int | None
    reason: str
    dead_at: float
    signature: str | None
    body: bytes
    resend: str | None = None
    """``sent`` once resent and accepted (2xx), ``sending`` if a resend's outcome is unknown
    (it crashed after the POST began), None if never resent."""
    resent_at: float | None = None


_UPSERT = (
    "INSERT INTO relay_cursors (source_id, target, updated_at) VALUES (:s, :t, :now)"
    " ON CONFLICT (source_id, target) DO NOTHING"
)


class RelayLog:
    """Mixin for a spool reader: ``_execute`` runs (sql, params) statements in one transaction
    and returns the rows of the last one."""

    def _execute(self, statements: Iterable[tuple[str, dict[str, Any]]]) -> list[Any]:
        raise NotImplementedError

    def relay_state(self, source_id: str, target: str) -> RelayState:
        rows = self._execute(
            [
                (
                    "SELECT txid, done, forwarded, attempts, next_at, last_error FROM"
                    " relay_cursors WHERE source_id = :s AND target = :t",
                    {"s": source_id, "t": target},
                )
            ]
        )
        if not rows:
            return RelayState((0, 0), 0, 0, 0.0, None)
        r = rows[0]
        return RelayState((int(r[0]), int(r[1])), int(r[2]), int(r[3]), float(r[4]), r[5])

    def relay_forwarded(self, source_id: str, target: str, request: SpooledRequest) -> None:
        """``request`` reached ``target``: the cursor moves past it, retries reset."""
        now = time.time()
        params = {"s": source_id, "t": target, "x": request.txid, "i": request.id, "now": now}
        self._execute(
            [
                (_UPSERT, params),
                (
                    "UPDATE relay_cursors SET txid = :x, done = :i, forwarded = forwarded + 1,"
                    " attempts = 0, next_at = 0, last_error = NULL, updated_at = :now"
                    " WHERE source_id = :s AND target = :t",
                    params,
                ),
            ]
        )

    def relay_retry_later(
        self, source_id: str, target: str, attempts: int, next_at: float, error: str
    ) -> None:
        """The head request failed ``attempts`` times; try again at ``next_at``."""
        params = {
            "s": source_id,
            "t": target,
            "a": attempts,
            "n": next_at,
            "e": error[:1000],
            "now": time.time(),
        }
        self._execute(
            [
                (_UPSERT, params),
                (
                    "UPDATE relay_cursors SET attempts = :a, next_at = :n, last_error = :e,"
                    " updated_at = :now WHERE source_id = :s AND target = :t",
                    params,
                ),
            ]
        )

    def relay_dead_letter(
        self,
        source_id: str,
        target: str,
        request: SpooledRequest,
        attempts: int,
        status: int | None,
        reason: str,
    ) -> None:
        """Give up on ``request`` for ``target``: kept (body and signature) in the dead-letter
        table, and the cursor moves past it, in one transaction."""
        now = time.time()
        params = {
            "s": source_id,
            "t": target,
            "x": request.txid,
            "i": request.id,
            "now": now,
            "r": request.request_id,
            "rat": request.received_at,
            "a": attempts,
            "st": status,
            "why": reason[:1000],
            "sig": request.signature,
            "b": request.body,
        }
        self._execute(
            [
                (
                    "INSERT INTO relay_dead_letters (source_id, target, request_id, received_at,"
                    " attempts, status, reason, dead_at, signature, body) VALUES (:s, :t, :r,"
                    " :rat, :a, :st, :why, :now, :sig, :b)",
                    params,
                ),
                (_UPSERT, params),
                (
                    "UPDATE relay_cursors SET txid = :x, done = :i, attempts = 0, next_at = 0,"
                    " last_error = :why, updated_at = :now WHERE source_id = :s AND target = :t",
                    params,
                ),
            ]
        )

    def dead_letters(self, source_id: str, target: str | None = None) -> list[DeadLetter]:
        """Dead letters of a source (of one target), oldest first."""
        sql = (
            "SELECT d.id, d.source_id, d.target, d.request_id, d.received_at, d.attempts,"
            " d.status, d.reason, d.dead_at, d.signature, d.body, r.state, r.sent_at"
            " FROM relay_dead_letters d LEFT JOIN relay_resends r ON r.dead_letter_id = d.id"
            " WHERE d.source_id = :s"
        )
        params: dict[str, Any] = {"s": source_id}
        if target is not None:
            sql += " AND d.target = :t"
            params["t"] = target
        rows = self._execute([(sql + " ORDER BY d.id", params)])
        return [
            DeadLetter(
                int(r[0]),
                r[1],
                r[2],
                r[3],
                float(r[4]),
                int(r[5]),
                None if r[6] is None else int(r[6]),
                r[7],
                float(r[8]),
                r[9],
                bytes(r[10]),
                r[11],
                None if r[12] is None else float(r[12]),
            )  # fmt: skip
            for r in rows
        ]

    def resend_begin(self, dead_letter_id: int, token: str) -> bool:
        """Record that dead letter ``dead_letter_id`` is being resent (before the POST); False
        if it already was (sent, or in doubt)."""
        params = {"i": dead_letter_id, "k": token, "now": time.time()}
        rows = self._execute(
            [
                (
                    "INSERT INTO relay_resends (dead_letter_id, state, token, started_at)"
                    " VALUES (:i, 'sending', :k, :now) ON CONFLICT (dead_letter_id) DO NOTHING",
                    params,
                ),
                ("SELECT token FROM relay_resends WHERE dead_letter_id = :i", params),
            ]
        )
        return bool(rows) and rows[0][0] == token

    def resend_sent(self, dead_letter_id: int, status: int | None) -> None:
        """The resend was accepted (2xx): recorded, never resent again."""
        params = {"i": dead_letter_id, "st": status, "now": time.time()}
        self._execute(
            [
                (
                    "UPDATE relay_resends SET state = 'sent', sent_at = :now, status = :st"
                    " WHERE dead_letter_id = :i",
                    params,
                )
            ]
        )

    def resend_cancel(self, dead_letter_id: int) -> None:
        """The resend was not accepted (or an in-doubt one is to be tried again): the dead
        letter may be resent later."""
        self._execute(
            [
                (
                    "DELETE FROM relay_resends WHERE dead_letter_id = :i AND state = 'sending'",
                    {"i": dead_letter_id},
                )
            ]
        )

    def relay_floor(self, source_id: str, targets: Iterable[str]) -> Position:
        """The oldest cursor among ``targets`` (requests after it must be kept)."""
        floor: Position | None = None
        for target in targets:
            position = self.relay_state(source_id, target).position
            floor = position if floor is None else min(floor, position)
        return floor if floor is not None else (0, 0)
