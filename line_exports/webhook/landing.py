"""Landing spooled requests into the raw and events tables of any SQLAlchemy database.

Runs outside the receiver (from Dagster), so only this code ever holds the warehouse's write
lock. One run: read requests after the source's cursor, write both tables in one transaction,
then move the cursor. A crash between commit and cursor move re-lands the same batch, which
the ``record_uuid`` / ``request_id`` checks turn into a no-op, so landing is idempotent.
"""

from __future__ import annotations

import contextlib
import fcntl
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from line_exports import paths
from line_exports.webhook.config import WebhookSource
from line_exports.webhook.events import EVENT_COLUMNS, RAW_COLUMNS, build_batch
from line_exports.webhook.spool import SpoolReader, default_spool_path

_TYPES: dict[str, Any] = {"text": sa.Text, "bigint": sa.BigInteger, "boolean": sa.Boolean}
_CHUNK = 500


def default_target_url() -> str:
    """The embedded DuckDB file of the project."""
    return f"duckdb:///{paths.default_duckdb_path()}"


def table_for(name: str, columns: list[tuple[str, str]], metadata: sa.MetaData) -> sa.Table:
    """SQLAlchemy table with the reference's columns; types portable to DuckDB/SQLite/Postgres."""
    return sa.Table(name, metadata, *[sa.Column(c, _TYPES[t]()) for c, t in columns])


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
    replaced: bool = False
    spool_cursor: int = 0


@contextlib.contextmanager
def _source_lock(spool_path: Path, source: WebhookSource) -> Iterator[None]:
    """Serialise landing runs of one source (schedule and manual run may overlap)."""
    lock_path = spool_path.parent / f"land-{source.source_id}.lock"
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
        try:
            cols = ", ".join(f'"{c.name}"' for c in table.columns)
            duck.execute(f'INSERT INTO "{table.name}" ({cols}) SELECT {cols} FROM {view}')
        finally:
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
    there is new data.
    """
    spool = Path(spool_path) if spool_path else default_spool_path()
    url = target_url or default_target_url()
    result = LandingResult(
        source=source.name,
        mode=source.mode,
        raw_table=source.raw_table,
        events_table=source.events_table,
    )
    with _source_lock(spool, source), SpoolReader(spool) as reader:
        done, reject_done = reader.cursor(source.source_id)
        requests = reader.pending(source.source_id, done, max_requests)
        rejects, new_reject_done = reader.rejects_since(source.source_id, reject_done)
        batch = build_batch(
            requests, timezone_name=source.timezone, partition_column=source.partition_column
        )
        result.requests_read = len(requests)
        result.parse_errors = batch.parse_errors
        result.rejects_by_reason = rejects
        result.bad_signatures = sum(
            n for reason, n in rejects.items() if reason.endswith("signature")
        )
        raw_rows, event_rows = batch.raw_rows, batch.event_rows
        duplicates = batch.duplicates_in_batch

        engine = sa.create_engine(url)
        try:
            metadata = sa.MetaData()
            raw_t = table_for(source.raw_table, RAW_COLUMNS, metadata)
            events_t = table_for(source.events_table, EVENT_COLUMNS, metadata)
            with engine.begin() as conn:
                metadata.create_all(conn, checkfirst=True)
                if source.mode == "append":
                    seen = _existing(
                        conn, events_t, "record_uuid", [r["record_uuid"] for r in event_rows]
                    )
                    duplicates += len(seen)
                    event_rows = [r for r in event_rows if r["record_uuid"] not in seen]
                    seen_raw = _existing(
                        conn, raw_t, "request_id", [r["request_id"] for r in raw_rows]
                    )
                    raw_rows = [r for r in raw_rows if r["request_id"] not in seen_raw]
                elif source.mode == "replace" or requests:
                    conn.execute(events_t.delete())
                    conn.execute(raw_t.delete())
                    result.replaced = True
                _insert(conn, raw_t, raw_rows)
                _insert(conn, events_t, event_rows)
        finally:
            engine.dispose()

        last = requests[-1].id if requests else done
        reader.advance(source.source_id, last, new_reject_done)
        if retention_days is not None:
            reader.prune(source.source_id, retention_days * 86400.0)

    result.spool_cursor = last
    result.raw_rows_landed = len(raw_rows)
    result.events_landed = len(event_rows)
    result.duplicates_dropped = duplicates
    result.events_by_type = dict(
        sorted(Counter(r["event_type"] or "(none)" for r in event_rows).items())
    )
    result.lag_seconds_p50, result.lag_seconds_p99, result.lag_seconds_max = _lag(
        event_rows, time.time()
    )
    return result
