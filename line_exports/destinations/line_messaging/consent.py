"""Consent and suppression: users a LINE export must not reach, rejected before sending.

LINE answers ``200`` to a push or multicast for a user who blocked the account and drops the
message silently (Messaging API reference, "Send push message"), so only we can report it.
Three rules, checked on the valid rows of every audience, push and multicast export, in this
order, each a reject with its rule:

| rule | when | source |
|---|---|---|
| ``consent`` | the query has a ``consent`` column and the row's value is not ``true`` (false or empty) | the query |
| ``opt_out`` | the query has an ``opt_out`` column and the row's value is ``true`` | the query |
| ``suppressed`` | ``id`` is in the suppression table (``skip_suppressed``, default true) | the webhook import's events |

The suppression table (``line_suppression``: ``user_id``, ``unfollowed_at`` in ms,
``events_table``) is rebuilt by :func:`refresh_suppression` from the ``follow`` / ``unfollow``
events the webhook import landed: a user whose latest such event is ``unfollow`` is suppressed,
a later ``follow`` lifts it. It lives where the events land (``LINE_EXPORTS_SUPPRESSION_URL``,
default the embedded DuckDB file); with no table yet, nobody is suppressed and the metadata says
so. Narrowcast and broadcast reach users through LINE's own audiences and friend list, which
LINE already keeps without users who blocked the account; the ``audience`` export screens the
IDs it uploads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from line_exports.destination import ValidRows
from line_exports.rules import ROW_NUMBER, Column, reject

SUPPRESSION_TABLE = "line_suppression"
SUPPRESSION_URL_ENV = "LINE_EXPORTS_SUPPRESSION_URL"
CONSENT_COLUMNS = (
    Column("consent", kind="boolean", normalize=("trim",), aliases=("has_consent",)),
    Column("opt_out", kind="boolean", normalize=("trim",), aliases=("opted_out",)),
)


def suppression_url() -> str:
    """Where the suppression table lives: ``$LINE_EXPORTS_SUPPRESSION_URL`` or the embedded
    DuckDB file the webhook import lands into by default."""
    from line_exports.webhook.landing import default_target_url

    return os.environ.get(SUPPRESSION_URL_ENV) or default_target_url()


def refresh_suppression(events_tables: Sequence[str], url: str | None = None) -> dict[str, int]:
    """Rebuild ``line_suppression`` from the ``follow``/``unfollow`` events of the webhook
    import's events tables at ``url``; the latest event of each user decides. Returns counts."""
    engine = sa.create_engine(url or suppression_url())
    latest: dict[str, tuple[int, str, str]] = {}
    counts = {"follow_events": 0, "unfollow_events": 0}
    try:
        with engine.begin() as conn:
            inspector = sa.inspect(conn)
            for table in events_tables:
                # ``database.table`` when the source names a database (its schema).
                schema, _, name = table.rpartition(".")
                # DuckDB names schemas ``catalog.schema``; SQLite raises on an unknown one.
                schemas = {s.rpartition(".")[2] for s in inspector.get_schema_names()}
                if schema and schema not in schemas:
                    continue  # nothing landed into that database yet
                if name not in inspector.get_table_names(schema=schema or None):
                    continue
                quoted = f'"{schema}"."{name}"' if schema else f'"{name}"'
                rows = conn.execute(
                    sa.text(
                        f"SELECT event_type, event_source, event_timestamp FROM {quoted} "
                        "WHERE event_type IN ('follow', 'unfollow')"
                    )
                )
                for kind, source, stamp in rows:
                    counts[f"{kind}_events"] += 1
                    try:
                        user = (json.loads(source) or {}).get("userId")
                    except (TypeError, ValueError):
                        continue
                    if not isinstance(user, str) or stamp is None:
                        continue
                    if user not in latest or int(stamp) >= latest[user][0]:
                        latest[user] = (int(stamp), kind, table)
            suppressed = [
                {"user_id": user, "unfollowed_at": stamp, "events_table": table}
                for user, (stamp, kind, table) in sorted(latest.items())
                if kind == "unfollow"
            ]
            target = sa.Table(
                SUPPRESSION_TABLE,
                sa.MetaData(),
                sa.Column("user_id", sa.Text),
                sa.Column("unfollowed_at", sa.BigInteger),
                sa.Column("events_table", sa.Text),
            )
            target.create(conn, checkfirst=True)
            conn.execute(target.delete())
            if suppressed:
                conn.execute(target.insert(), suppressed)
    finally:
        engine.dispose()
    return {**counts, "suppressed_users": len(suppressed)}


def load_suppressed(url: str | None = None) -> list[str] | None:
    """The suppressed user IDs; None when the table does not exist (nothing landed yet)."""
    engine = sa.create_engine(url or suppression_url())
    try:
        with engine.connect() as conn:
            if SUPPRESSION_TABLE not in sa.inspect(conn).get_table_names():
                return None
            return [r[0] for r in conn.execute(sa.text(f"SELECT user_id FROM {SUPPRESSION_TABLE}"))]
    finally:
        engine.dispose()


def screen(
    rows: ValidRows, skip_suppressed: bool, url: str | None = None
) -> tuple[ValidRows, list[pd.DataFrame], dict[str, Any]]:
    """Valid rows minus those the consent, opt-out and suppression rules reject: (rows to
    send, reject tables, metadata). Runs over the whole spool in DuckDB, not row by row."""
    metadata: dict[str, Any] = {}
    if rows.count == 0:
        return rows, [], metadata
    names = set(pq.read_schema(rows.path).names)
    suppressed: list[str] | None = None
    if skip_suppressed:
        try:
            suppressed = load_suppressed(url)
            status: str | int = (
                "no suppression table yet" if suppressed is None else len(suppressed)
            )
        except (sa.exc.SQLAlchemyError, duckdb.Error) as exc:
            if url or os.environ.get(SUPPRESSION_URL_ENV):
                raise  # a configured list that cannot be read fails the run
            # The default embedded file may be held by another process: say so, do not fail.
            status = f"unreadable ({type(exc).__name__}); nobody was screened"
        metadata["suppression_list_users"] = status
    rules: list[tuple[str, str, str, str]] = []  # (rule, column, SQL condition, message)
    if "consent" in names:
        rules.append(
            (
                "consent",
                "consent",
                "lower(coalesce(CAST(consent AS VARCHAR), '')) <> 'true'",
                "consent is not true: the user has not agreed to receive messages",
            )
        )
    if "opt_out" in names:
        rules.append(
            (
                "opt_out",
                "opt_out",
                "lower(coalesce(CAST(opt_out AS VARCHAR), '')) = 'true'",
                "opt_out is true: the user asked not to receive messages",
            )
        )
    with duckdb.connect() as con:
        if suppressed:
            con.register("suppressed", pa.table({"user_id": pa.array(suppressed, pa.string())}))
            rules.append(
                (
                    "suppressed",
                    "id",
                    "id IN (SELECT user_id FROM suppressed)",
                    "suppressed: the user unfollowed (blocked) the account, per the webhook "
                    "import's events; LINE would answer 200 and drop the message",
                )
            )
        if not rules:
            return rows, [], metadata
        spool = str(rows.path)
        rejected: list[pd.DataFrame] = []
        taken = "FALSE"
        for rule, column, condition, message in rules:
            numbers = [
                int(r[0])
                for r in con.execute(
                    f'SELECT "{ROW_NUMBER}" FROM read_parquet(?) WHERE ({condition}) '
                    f"AND NOT ({taken}) ORDER BY 1",
                    [spool],
                ).fetchall()
            ]
            taken = f"({taken}) OR ({condition})"
            metadata[f"rows_{rule}"] = len(numbers)
            if numbers:
                rejected.append(reject(numbers, column, rule, message))
        if not rejected:
            return rows, [], metadata
        kept = Path(rows.path).with_name("valid.screened.parquet")
        con.execute(
            f'COPY (SELECT * FROM read_parquet(?) WHERE NOT ({taken}) ORDER BY "{ROW_NUMBER}") '
            f"TO '{kept}' (FORMAT PARQUET)",
            [spool],
        )
        count = con.execute("SELECT count(*) FROM read_parquet(?)", [str(kept)]).fetchone()
    return ValidRows(kept, int(count[0]) if count else 0), rejected, metadata


def build_suppression_asset(
    sources: Sequence[Any], target_url: str | None = None, key: str = SUPPRESSION_TABLE
) -> dg.AssetsDefinition:
    """A Dagster asset that rebuilds the suppression table after the webhook import's events
    assets (``[source, "line_oa_events"]``) of ``sources`` (:class:`~line_exports.webhook.
    config.WebhookSource`) land; its metadata gives the counts."""
    tables = [source.qualified(source.events_table) for source in sources]

    @dg.asset(
        name=key,
        deps=[dg.AssetKey([source.name, "line_oa_events"]) for source in sources],
        description="LINE users to suppress (latest follow/unfollow event is unfollow), read by "
        "every LINE audience, push and multicast export",
        kinds={"line"},
    )
    def suppression() -> dg.MaterializeResult:
        counts = refresh_suppression(tables, target_url)
        return dg.MaterializeResult(metadata={**counts, "events_tables": ", ".join(tables)})

    return suppression
