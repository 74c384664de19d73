"""A run owns its ledger scope before it sends: one exclusive claim per (export, scope).

Two processes running the same export for the same tick (two instances, a manual re-run while
the schedule runs) would otherwise both send: two audiences of one name, two MAAC imports,
every Conversion API event twice. So before its first request a run claims its scope: one row
in ``ledger_claims`` with its owner (run id, host, pid) and a heartbeat the claim renews every
quarter of the timeout. A second run finds the row and fails at once, naming the holder. A
claim whose heartbeat is older than the timeout (its process was killed, its machine lost) is
stale: the next run takes it over and resumes from the ledger; a holder that ran on this very
machine and whose process is gone (same boot, same PID namespace, no such PID with that start
time) is taken over at once, without waiting for the timeout. Every step is one atomic
statement (INSERT ... ON CONFLICT DO NOTHING, a conditional UPDATE), timed by the database's
own clock, so it holds on SQLite and on a PostgreSQL shared by several machines alike.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from line_exports.ledger import CLAIMS

if TYPE_CHECKING:
    from line_exports.ledger import LedgerScope

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClaimOwner:
    """Who holds a claim: the Dagster run, the machine and the process."""

    run_id: str
    host: str
    pid: int

    @classmethod
    def current(cls, run_id: str) -> ClaimOwner:
        """This process, working for run ``run_id``."""
        return cls(run_id, socket.gethostname(), os.getpid())

    def __str__(self) -> str:
        return f"run {self.run_id} on {self.host} (pid {self.pid})"


def _process_identity(pid: int) -> str | None:
    """``boot_id/pid-namespace/pid/start-time`` of a Linux process, None elsewhere or if gone.

    The start time (clock ticks since boot, /proc/PID/stat field 22) tells a reused PID apart;
    the boot id and PID namespace tell whether the PID can be looked up from here at all.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    start = stat.rsplit(")", 1)[1].split()[19]  # fields after the command name start at 3
    return f"{boot}/{namespace}/{pid}/{start}"


def holder_is_gone(process: str | None) -> bool:
    """True only when ``process`` ran on this machine (same boot and PID namespace) and no
    longer exists; False when it lives or cannot be checked from here (another machine)."""
    if not process:
        return False
    boot, namespace, pid, _ = (process.split("/", 3) + ["", "", "", ""])[:4]
    mine = _process_identity(os.getpid())
    if mine is None or not pid.isdigit():
        return False
    my_boot, my_namespace, _, _ = mine.split("/", 3)
    if (boot, namespace) != (my_boot, my_namespace):
        return False
    return _process_identity(int(pid)) != process


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")


class ScopeClaimed(Exception):
    """Another live run holds the scope: this run must not send (and retrying will not help
    until that run ends or its claim goes stale)."""

    def __init__(
        self,
        export: str,
        scope: str,
        holder: ClaimOwner,
        claimed_at: float,
        heartbeat_age: float,
        timeout: float,
    ) -> None:
        self.export = export
        self.scope = scope
        self.holder = holder
        self.claimed_at = claimed_at
        self.heartbeat_age = heartbeat_age
        self.timeout = timeout
        super().__init__(
            f"export {export} [{scope}] is already running: held by {holder} since "
            f"{_iso(claimed_at)}, last heartbeat {heartbeat_age:.0f}s ago. Nothing was sent. "
            f"It is taken over only after {timeout:.0f}s without a heartbeat "
            f"(LINE_EXPORTS_CLAIM_TIMEOUT)."
        )


class ClaimLost(Exception):
    """This run's claim was taken over (its heartbeats stopped for longer than the timeout):
    it stops before sending more, the new holder resumes from the ledger."""


class Claim:
    """A held claim: renews its heartbeat in a background thread until :meth:`release`."""

    def __init__(self, scope: LedgerScope, owner: ClaimOwner, claim_id: str) -> None:
        self.scope = scope
        self.owner = owner
        self.claim_id = claim_id
        self.timeout = scope.ledger.claim_timeout
        self.interval = max(0.05, self.timeout / 4)
        self.lost_reason: str | None = None
        self._last_beat = time.monotonic()
        self._released = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"claim-heartbeat {scope.export}", daemon=True
        )
        self._thread.start()

    @property
    def lost(self) -> bool:
        if self.lost_reason is None and time.monotonic() - self._last_beat > self.timeout:
            self.lost_reason = (
                f"no heartbeat reached the ledger for {time.monotonic() - self._last_beat:.0f}s "
                f"(timeout {self.timeout:.0f}s): another run may have taken the scope over"
            )
        return self.lost_reason is not None

    def check(self) -> None:
        """Raise :class:`ClaimLost` if this run no longer holds its scope."""
        if self.lost:
            raise ClaimLost(
                f"export {self.scope.export} [{self.scope.scope}]: this run lost its claim "
                f"({self.lost_reason}); it stops here, the holder resumes from the ledger"
            )

    def _where(self) -> Any:
        return sa.and_(
            CLAIMS.c.export == self.scope.export,
            CLAIMS.c.scope == self.scope.scope,
            CLAIMS.c.claim_id == self.claim_id,
        )

    def _beat(self) -> None:
        ledger = self.scope.ledger
        while not self._released.wait(self.interval):
            try:
                with ledger.engine.begin() as con:
                    renewed = con.execute(
                        CLAIMS.update().where(self._where()).values(heartbeat_at=ledger.now())
                    ).rowcount
            except sa.exc.SQLAlchemyError as exc:  # the ledger is unreachable for now
                logger.warning("claim heartbeat failed: %s", type(exc).__name__)
                continue
            if renewed != 1:
                self.lost_reason = "another run took the scope over"
                return
            self._last_beat = time.monotonic()

    def release(self) -> None:
        """Stop the heartbeat and delete the claim row (if it is still this run's)."""
        if self._released.is_set():
            return
        self._released.set()
        self._thread.join(timeout=10)
        try:
            with self.scope.ledger.engine.begin() as con:
                con.execute(CLAIMS.delete().where(self._where()))
        except sa.exc.SQLAlchemyError as exc:
            # It goes stale and is taken over after the timeout.
            logger.warning("could not release the claim: %s", type(exc).__name__)


def claim(scope: LedgerScope, owner: ClaimOwner, log: Any = None) -> Claim:
    """Claim ``scope`` for ``owner`` or raise :class:`ScopeClaimed` naming who holds it.

    Taken: no row (inserted), or a row whose heartbeat is older than the ledger's
    ``claim_timeout`` (stale: its holder died), or a row of the same run (a retried step
    of one run never runs twice at once). Each is one atomic statement, so of two runs
    racing exactly one wins.
    """
    ledger = scope.ledger
    claim_id = uuid.uuid4().hex
    now = ledger.now()
    row = {
        "export": scope.export,
        "scope": scope.scope,
        "claim_id": claim_id,
        "run_id": owner.run_id,
        "host": owner.host,
        "pid": owner.pid,
        "process": _process_identity(owner.pid) if owner.pid == os.getpid() else None,
    }
    key = sa.and_(CLAIMS.c.export == scope.export, CLAIMS.c.scope == scope.scope)
    for _ in range(5):
        with ledger.engine.begin() as con:
            inserted = con.execute(
                ledger.insert(CLAIMS)
                .values(**row, claimed_at=now, heartbeat_at=now)
                .on_conflict_do_nothing(index_elements=[CLAIMS.c.export, CLAIMS.c.scope])
            ).rowcount
        if inserted == 1:
            return Claim(scope, owner, claim_id)
        with ledger.engine.begin() as con:
            previous = con.execute(
                sa.select(
                    CLAIMS.c.run_id,
                    CLAIMS.c.host,
                    CLAIMS.c.pid,
                    CLAIMS.c.claimed_at,
                    CLAIMS.c.claim_id,
                    CLAIMS.c.process,
                    (now - CLAIMS.c.heartbeat_at).label("age"),
                ).where(key)
            ).first()
            if previous is None:
                continue  # released meanwhile: insert again
            taken = con.execute(
                CLAIMS.update()
                .where(
                    key,
                    sa.or_(
                        CLAIMS.c.heartbeat_at < now - ledger.claim_timeout,
                        CLAIMS.c.run_id == owner.run_id,
                        # Its process is gone from this machine: compare-and-swap that claim.
                        CLAIMS.c.claim_id == previous.claim_id
                        if holder_is_gone(previous.process)
                        else sa.false(),
                    ),
                )
                .values(**row, claimed_at=now, heartbeat_at=now)
            ).rowcount
        holder = ClaimOwner(previous.run_id, previous.host, int(previous.pid))
        if taken == 1:
            message = (
                f"export {scope.export} [{scope.scope}]: took over the claim of {holder} "
                f"(claimed {_iso(previous.claimed_at)}, last heartbeat {previous.age:.0f}s ago); "
                "resuming from the ledger"
            )
            (log or logger).warning(message)
            return Claim(scope, owner, claim_id)
        raise ScopeClaimed(
            scope.export,
            scope.scope,
            holder,
            float(previous.claimed_at),
            float(previous.age),
            ledger.claim_timeout,
        )
    raise RuntimeError(
        f"export {scope.export} [{scope.scope}]: the claim changed hands five times while this "
        "run tried to take it; try again"
    )
