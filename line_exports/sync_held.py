"""The rows a ``sync_mode`` diff push / multicast export holds ``unknown`` (an earlier run sent
them, whether LINE delivered them cannot be known: :mod:`.sync_settle`), for
``line-exports held EXPORT [--resend | --delivered]``.

An export's sync stores are named ``EXPORT``, ``EXPORT#partition=...`` and ``EXPORT@target``
(:func:`~line_exports.sync_store.store_name`); ``EXPORT`` is matched exactly (case and SQL
wildcards included), the same on SQLite and PostgreSQL. A release for resend is remembered
(:data:`RELEASED_RULE`) until the row is sent, so a later ``--delivered`` can say so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

from line_exports.ledger import SYNC_EXPORTS, SYNC_MEMBERS, SYNC_REFUSALS, Ledger
from line_exports.sync_settle import export_of

RELEASED_RULE = "released_for_resend"
"""``sync_refusals`` rule of a row released by ``--resend`` (status ``pending`` until sent)."""


def _stores(column: sa.ColumnElement[str], export: str) -> sa.ColumnElement[bool]:
    """The sync stores of ``export``: itself, its partitions (``#``) and targets (``@``),
    matched exactly and the same on SQLite and PostgreSQL: ``=`` on the name and on its first
    ``len(export) + 1`` characters. (SQL ``LIKE`` is case-insensitive in SQLite and not in
    PostgreSQL: ``daily/coupon`` took ``daily/Coupon#p1``'s rows on one and not the other.)"""
    head = sa.func.substr(column, 1, len(export) + 1)
    return sa.or_(column == export, head == f"{export}#", head == f"{export}@")


_REFUSAL_OF_MEMBER = sa.and_(
    SYNC_REFUSALS.c.export == SYNC_MEMBERS.c.export, SYNC_REFUSALS.c.key == SYNC_MEMBERS.c.key
)
"""Join condition: a member's row in ``sync_refusals`` (its held reason or release note)."""


def held(ledger: Ledger, export: str) -> list[tuple[str, str, str]]:
    """(store, recipient key columns as JSON, reason) of the rows held ``unknown``."""
    query = (
        sa.select(SYNC_MEMBERS.c.export, SYNC_MEMBERS.c.ident, SYNC_REFUSALS.c.message)
        .select_from(
            SYNC_MEMBERS.outerjoin(
                SYNC_REFUSALS,
                _REFUSAL_OF_MEMBER,
            )
        )
        .where(_stores(SYNC_MEMBERS.c.export, export), SYNC_MEMBERS.c.status == "unknown")
        .order_by(SYNC_MEMBERS.c.export, SYNC_MEMBERS.c.ident)
    )
    with ledger.engine.connect() as con:
        return [(s, i, m or "") for s, i, m in con.execute(query).all()]


def release(ledger: Ledger, export: str, delivered: bool) -> int:
    """Release the rows held ``unknown`` of ``export``: ``pending`` (sent again by its next
    run, once; remembered as released) or, ``delivered``, ``accepted`` (never sent again).
    Returns the rows released."""
    status = "accepted" if delivered else "pending"
    stores = _stores(SYNC_MEMBERS.c.export, export)
    stamp = time.time()
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
    note = f"released for resend at {when} (line-exports held {export} --resend)"
    with ledger.engine.begin() as con:
        keys = sa.select(SYNC_MEMBERS.c.export, SYNC_MEMBERS.c.key).where(
            stores, SYNC_MEMBERS.c.status == "unknown"
        )
        chosen = con.execute(keys).all()
        for store, key in chosen:
            con.execute(
                sa.delete(SYNC_REFUSALS).where(
                    SYNC_REFUSALS.c.export == store, SYNC_REFUSALS.c.key == key
                )
            )
        if chosen and not delivered:
            con.execute(
                sa.insert(SYNC_REFUSALS),
                [
                    {
                        "export": store,
                        "key": key,
                        "rule": RELEASED_RULE,
                        "column": "id",
                        "message": note,
                        "recorded_at": stamp,
                    }
                    for store, key in chosen
                ],
            )
        con.execute(
            sa.update(SYNC_MEMBERS)
            .where(stores, SYNC_MEMBERS.c.status == "unknown")
            .values(status=status, recorded_at=stamp)
        )
    return len(chosen)


@dataclass(frozen=True)
class Released:
    """Rows of an export released for resend that no run has sent yet."""

    rows: int
    note: str
    """The latest release's note (when, by which command)."""


def released(ledger: Ledger, export: str) -> Released | None:
    """The rows of ``export`` released by ``--resend`` and still ``pending`` (None: none)."""
    query = (
        sa.select(sa.func.count(), sa.func.max(SYNC_REFUSALS.c.message))
        .select_from(
            SYNC_MEMBERS.join(
                SYNC_REFUSALS,
                _REFUSAL_OF_MEMBER,
            )
        )
        .where(
            _stores(SYNC_MEMBERS.c.export, export),
            SYNC_MEMBERS.c.status == "pending",
            SYNC_REFUSALS.c.rule == RELEASED_RULE,
        )
    )
    with ledger.engine.connect() as con:
        count, note = con.execute(query).one()
    return Released(int(count), str(note)) if count else None


def exists(ledger: Ledger, export: str) -> bool:
    """Whether the ledger holds a sync store of ``export`` (members, or a committed run)."""
    with ledger.engine.connect() as con:
        for table in (SYNC_EXPORTS, SYNC_MEMBERS):
            found = con.execute(
                sa.select(table.c.export).where(_stores(table.c.export, export)).limit(1)
            ).first()
            if found is not None:
                return True
    return False


def held_exports(ledger: Ledger) -> list[str]:
    """The exports that hold rows ``unknown``, sorted."""
    query = sa.select(SYNC_MEMBERS.c.export).where(SYNC_MEMBERS.c.status == "unknown").distinct()
    with ledger.engine.connect() as con:
        return sorted({export_of(s) for (s,) in con.execute(query).all()})


def known_exports(ledger: Ledger) -> list[str]:
    """The exports with a committed sync run or held rows, sorted (to suggest a name)."""
    with ledger.engine.connect() as con:
        names = {export_of(s) for (s,) in con.execute(sa.select(SYNC_EXPORTS.c.export)).all()}
    return sorted(names | set(held_exports(ledger)))
