"""Landing spooled requests into the raw and events tables of any SQLAlchemy database.

Runs outside the receiver (from Dagster), so only this code ever holds the warehouse's write
lock. One run: read requests after the source's cursor, write both tables in one transaction,
then move the cursor. A crash between commit and cursor move re-lands the same batch, which
the ``record_uuid`` / ``request_id`` checks turn into a no-op, so landing is idempotent.

A request that cannot land (see ``quarantine``) goes to the source's rejects table in that same
transaction, and the cursor moves past it: one poison body never blocks the ones after it.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from line_exports import paths
from line_exports.webhook.config import SourceConfigError, WebhookSource
from line_exports.webhook.events import (
    EVENT_COLUMNS,
    RAW_COLUMNS,
    Batch,
    Quarantined,
    RequestRows,
    build_batch,
)
from line_exports.webhook.quarantine import REJECT_COLUMNS, find_refused, reject_rows
from line_exports.webhook.spool import Claim, ClaimLost, SpooledRequest, open_reader

_TYPES: dict[str, Any] = {"text": sa.Text, "bigint": sa.BigInteger, "boolean": sa.Boolean}
_CHUNK = 500


def default_target_url() -> str:
    """The embedded DuckDB file of the project."""
    return f"duckdb:///{paths.default_duckdb_path()}"


def table_for(
    name: str, columns: list[tuple[str, str]], metadata: sa.MetaData, schema: str | None = None
) -> sa.Table:
    """SQLAlchemy table with the reference's columns; types portable to DuckDB/SQLite/Postgres.

    ``schema`` is the source's ``database`` (None: the target's default schema)."""
    return sa.Table(name, metadata, *[sa.Column(c, _TYPES[t]()) for c, t in columns], schema=schema)


def _create(conn: sa.Connection, source: WebhookSource, metadata: sa.MetaData) -> None:
    """The source's database (schema) if it names one, then its tables, if missing."""
    if source.database:
        conn.execute(sa.schema.CreateSchema(source.database, if_not_exists=True))
    metadata.create_all(conn, checkfirst=True)


@dataclass
class LandingResult:
    """Figures for one landing run, reported as Dagster metadata."""

    source: str
    mode: str
    requests_read: int = 0
    raw_rows_landed: int = 0
    events_landed: int = 0
    events_by_type: dict[str, int] = field(default_factory=dict)
    duplicates_dropped: int = 0
    parse_errors: int = 0
    bad_signatures: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    lag_seconds_p50: float | None = None
    lag_seconds_p99: float | None = None
    lag_seconds_max: float | None = None
    raw_table: str = ""
    events_table: str = ""
    rejects_table: str = ""
    requests_quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    values_landed_as_null: int = 0
    null_values_by_column: dict[str, int] = field(default_factory=dict)
    replaced: bool = False
    spool_cursor: int = 0
    relay: dict[str, dict[str, Any]] = field(default_factory=dict)


def relay_status(reader: Any, source: WebhookSource) -> dict[str, dict[str, Any]]:
    """Per ``relay_to`` target: requests forwarded, still to forward, dead letters not resent
    (and resent, :mod:`.resend`) and the head's retry state (shown in the landing run's
    metadata in Dagster)."""
    status: dict[str, dict[str, Any]] = {}
    for target in source.relay_to:
        state = reader.relay_state(source.source_id, target)
        letters = reader.dead_letters(source.source_id, target)
        resent = sum(1 for d in letters if d.resend == "sent")
        status[target] = {
            "forwarded": state.forwarded,
            "backlog": reader.pending_count(source.source_id, state.position)[0],
            "dead_letters": len(letters) - resent,
            "dead_letters_resent": resent,
            "attempts_on_head": state.attempts,
            "last_error": state.last_error,
        }
    return status


def _existing(conn: sa.Connection, table: sa.Table, column: str, keys: list[str]) -> set[str]:
    found: set[str] = set()
    col = table.c[column]
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        found.update(r[0] for r in conn.execute(sa.select(col).where(col.in_(chunk))))
    return found


def _insert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    if conn.dialect.name == "duckdb":
        # Row-by-row executemany is slow in DuckDB; a registered DataFrame is one vector insert
        # in the same transaction.
        import pandas as pd

        duck = conn.connection.driver_connection
        frame = pd.DataFrame(rows, columns=[c.name for c in table.columns])
        view = f"_line_oa_batch_{table.name}"
        duck.register(view, frame)
        target = f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'
        try:
            cols = ", ".join(f'"{c.name}"' for c in table.columns)
            duck.execute(f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {view}")
        except Exception:
            # The transaction is aborted now; keep the database's own reason, not the
            # "transaction is aborted" the clean-up would raise.
            with contextlib.suppress(Exception):
                duck.unregister(view)
            raise
        duck.unregister(view)
        return
    for start in range(0, len(rows), _CHUNK):
        conn.execute(table.insert(), rows[start : start + _CHUNK])


def _lag(rows: list[dict[str, Any]], now: float) -> tuple[float | None, float | None, float | None]:
    lags = sorted(now - r["event_timestamp"] / 1000.0 for r in rows if r["event_timestamp"])
    if not lags:
        return None, None, None
    p99 = lags[min(len(lags) - 1, int(round(0.99 * (len(lags) - 1))))]
    return round(statistics.median(lags), 3), round(p99, 3), round(lags[-1], 3)


@dataclass
class _Tables:
    metadata: sa.MetaData
    raw: sa.Table
    events: sa.Table
    rejects: sa.Table


def _tables(source: WebhookSource) -> _Tables:
    metadata = sa.MetaData()
    schema = source.database or None
    return _Tables(
        metadata,
        table_for(source.raw_table, RAW_COLUMNS, metadata, schema),
        table_for(source.events_table, EVENT_COLUMNS, metadata, schema),
        table_for(source.rejects_table, REJECT_COLUMNS, metadata, schema),
    )


@dataclass
class _Written:
    raw_rows: int
    event_rows: list[dict[str, Any]]
    duplicates: int
    replaced: bool


def _write(
    conn: sa.Connection,
    source: WebhookSource,
    tables: _Tables,
    batch: Batch,
    quarantined: list[Quarantined],
    any_new: bool,
    claim: Claim,
) -> _Written:
    """Everything one run lands, inside the caller's transaction."""
    _create(conn, source, tables.metadata)
    raw_rows, event_rows = batch.raw_rows, batch.event_rows
    duplicates = batch.duplicates_in_batch
    replaced = False
    if source.mode == "append":
        seen = _existing(conn, tables.events, "record_uuid", [r["record_uuid"] for r in event_rows])
        duplicates += len(seen)
        event_rows = [r for r in event_rows if r["record_uuid"] not in seen]
        seen_raw = _existing(conn, tables.raw, "request_id", [r["request_id"] for r in raw_rows])
        raw_rows = [r for r in raw_rows if r["request_id"] not in seen_raw]
    elif source.mode == "replace" or any_new:
        conn.execute(tables.events.delete())
        conn.execute(tables.raw.delete())
        replaced = True
    _insert(conn, tables.raw, raw_rows)
    _insert(conn, tables.events, event_rows)
    rejects = reject_rows(quarantined, source.timezone)
    kept = _existing(conn, tables.rejects, "request_id", [r["request_id"] for r in rejects])
    _insert(conn, tables.rejects, [r for r in rejects if r["request_id"] not in kept])
    claim.check()  # another worker may hold the source now: commit nothing it may also write
    return _Written(len(raw_rows), event_rows, duplicates, replaced)


def _trial(source: WebhookSource, tables: _Tables) -> Any:
    def trial(conn: sa.Connection, groups: list[RequestRows]) -> None:
        _create(conn, source, tables.metadata)
        _insert(conn, tables.raw, [g.raw for g in groups])
        _insert(conn, tables.events, [e for g in groups for e in g.events])

    return trial


def _probe(source: WebhookSource, tables: _Tables) -> Any:
    """A plain synthetic request: if the database refuses even this, no row is to blame."""
    body = b'{"destination":"Uprobe","events":[{"type":"probe","timestamp":0}]}'
    plain = SpooledRequest(0, "probe", source.source_id, 0.0, True, None, 1, body)
    groups = build_batch([plain], timezone_name=source.timezone).requests

    def probe(conn: sa.Connection) -> None:
        _trial(source, tables)(conn, groups)

    return probe


def land_source(
    source: WebhookSource,
    *,
    spool_path: str | Path | None = None,
    target_url: str | None = None,
    max_requests: int = 200_000,
    retention_days: float = 7.0,
) -> LandingResult:
    """Land everything spooled for ``source`` since its cursor, according to its mode.

    ``append`` adds new rows, skipping events (by ``record_uuid``) and requests (by
    ``request_id``) already in the tables; ``replace`` makes the tables hold exactly this
    run's new data (emptied if there is none); ``replace_on_new_data`` does the same only when
    there is new data. Requests that cannot land go to ``source.rejects_table`` with their
    reason; values a column cannot hold land as NULL (both counted in the result).

    ``spool_path`` is the spool file or its SQLAlchemy URL (PostgreSQL; see ``spool``). One
    landing per source runs at a time on every machine sharing the spool (a claim); a second
    one waits, then lands only what is left.
    """
    url = target_url or default_target_url()
    result = LandingResult(
        source=source.name,
        mode=source.mode,
        raw_table=source.qualified(source.raw_table),
        events_table=source.qualified(source.events_table),
        rejects_table=source.qualified(source.rejects_table),
    )
    with open_reader(spool_path) as reader, reader.claim("land", source.source_id) as claim:
        done, reject_done = reader.cursor(source.source_id)
        requests = reader.pending(source.source_id, done, max_requests)
        rejects, new_reject_done = reader.rejects_since(source.source_id, reject_done)

        def batch_of(items: list[SpooledRequest]) -> Batch:
            return build_batch(
                items, timezone_name=source.timezone, partition_column=source.partition_column
            )

        batch = batch_of(requests)
        quarantined = list(batch.quarantined)
        tables = _tables(source)
        engine = sa.create_engine(url)
        if source.database and engine.dialect.name == "sqlite":
            engine.dispose()
            raise SourceConfigError(
                f"source {source.name}: database {source.database!r} is a schema, and a SQLite "
                "target has none; leave database: empty or land in DuckDB or PostgreSQL"
            )
        try:
            try:
                with engine.begin() as conn:
                    written = _write(
                        conn, source, tables, batch, quarantined, bool(requests), claim
                    )
            except ClaimLost:
                raise
            except Exception:
                refused = find_refused(
                    engine, batch.requests, _trial(source, tables), _probe(source, tables)
                )
                if not refused:
                    raise
                refused_ids = {q.request.id for q in refused}
                quarantined = sorted(quarantined + refused, key=lambda q: q.request.position)
                batch = batch_of([r for r in requests if r.id not in refused_ids])
                with engine.begin() as conn:
                    written = _write(
                        conn, source, tables, batch, quarantined, bool(requests), claim
                    )
        finally:
            engine.dispose()

        last = requests[-1].position if requests else done
        reader.advance(source.source_id, last, new_reject_done)
        if retention_days is not None:  # never a request a relay target still waits for
            relayed = reader.relay_floor(source.source_id, source.relay_to)
            reader.prune(
                source.source_id, retention_days * 86400.0, relayed if source.relay_to else None
            )
        result.relay = relay_status(reader, source)

    event_rows = written.event_rows
    result.requests_read = len(requests)
    result.parse_errors = batch.parse_errors
    result.rejects_by_reason = rejects
    result.bad_signatures = sum(n for reason, n in rejects.items() if reason.endswith("signature"))
    result.requests_quarantined = len(quarantined)
    result.quarantine_reasons = dict(
        sorted(Counter(f"{q.stage}: {q.reason}" for q in quarantined).items())
    )
    result.values_landed_as_null = batch.values_nulled
    result.null_values_by_column = dict(sorted(batch.nulled_by_column.items()))
    result.replaced = written.replaced
    result.spool_cursor = last[1]
    result.raw_rows_landed = written.raw_rows
    result.events_landed = len(event_rows)
    result.duplicates_dropped = written.duplicates
    result.events_by_type = dict(
        sorted(Counter(r["event_type"] or "(none)" for r in event_rows).items())
    )
    result.lag_seconds_p50, result.lag_seconds_p99, result.lag_seconds_max = _lag(
        event_rows, time.time()
    )
    return result
