"""Sync modes: send only what changed since the last run, and remove members who left.

Every export has the setting ``sync_mode``:

* ``append`` (default, TD's behaviour): every run sends its whole result, refused rows too;
* ``diff``: a run sends only the rows whose key is new, whose sent fields changed since the
  last run that delivered them, or that an earlier run did not get accepted (refused for a
  transient reason, or never sent because the run stopped or its process was killed): those
  come back and are counted in ``rows_retried``;
* ``mirror``: ``diff``, plus the members this export delivered earlier and that left the result
  are removed from the destination (what "remove" means is the destination's
  :meth:`~line_exports.destination.Destination.remove`).

What each export holds at its destination is kept next to the ledger
(:mod:`~line_exports.sync_store`). A row the API refused for a permanent reason (the
destination says which: :meth:`~line_exports.destination.Destination.refusal_is_transient`,
e.g. an unknown user or a malformed value, against a rate limit or a server error) is not sent
again while its sent fields stay the same: each run reports it refused, with the API's answer
(rejects file, ``rows_refused_earlier``); it is sent again once they change. Only keys this
export delivered are ever removed.

Safety (as reverse-ETL tools do it): the first run in ``mirror`` is a baseline and removes
nothing; an empty result, or one that would remove more than ``max_remove_ratio`` of the members
(default 0.2), removes nothing and fails the ``sync_removals`` check saying why.

A run's plan is fixed, and its rows recorded ``pending``, before it sends; a finished delivery
then settles them (``accepted``; ``pending`` again when refused for a transient reason or
rejected; ``refused`` for a permanent refusal). A run that stops, or is killed, leaves them
``pending``: the next run sends them again, counted in ``rows_retried``, and a re-execution of
the same scope plans the very same rows and removals, so the ledger resumes them exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from line_exports import sync_names
from line_exports.http import RETRYABLE_STATUS
from line_exports.ledger import Ledger
from line_exports.rules import ROW_NUMBER, reject
from line_exports.sync_settle import (
    UNKNOWN_RULE,
    Settled,
    SettleStopped,
    export_of,
    held_hint,
    outlook,
    refuse_if_running,
    settle_earlier,
)
from line_exports.sync_store import SyncStore, account_fingerprint, store_name

if TYPE_CHECKING:
    from line_exports.destination import (
        DeliveryFailed,
        DeliveryReport,
        Destination,
        ExportRun,
        ValidRows,
    )

SyncMode = Literal["append", "diff", "mirror"]
SYNC_MODES: tuple[str, ...] = ("append", "diff", "mirror")
SYNC_CHECK = "sync_removals"
DEFAULT_MAX_REMOVE_RATIO = 0.2
SAMPLE_ROWS = 5
NO_KEY_RULE = "sync_key"
"""The rule of a row ``diff`` / ``mirror`` cannot key (no value in any key column): rejected,
since it would share one key with every such row (merged, never removed)."""


@dataclass(frozen=True)
class SyncSpec:
    """How a destination's members are told apart, and which modes it supports.

    ``key_columns`` identify a member (e.g. MAAC's import key, LinkedIn's user IDs); the hash
    of every other sent column tells an update. ``resend_changed`` False means a key is sent
    once, whatever its fields become (a push campaign, a CAPI event). A row whose
    ``required_key`` column is empty has no stable key: it is always sent. ``namespace`` is
    part of every key (a push campaign key: a new campaign reaches everyone again).
    """

    key_columns: tuple[str, ...]
    modes: tuple[str, ...] = ("append", "diff")
    resend_changed: bool = True
    required_key: str | None = None
    namespace: str = ""
    carry: tuple[str, ...] = ()
    """Columns kept with the key (not part of it) because a removal needs them (e.g. the
    LINE UID and tags of a MAAC member keyed by email)."""
    rebuild: bool = False
    """mirror rebuilds the target with every current row instead of removing members
    (:meth:`~line_exports.destination.Destination.rebuild`: LINE's add-only audiences)."""
    removal: str = ""
    """What mirror removes, in the destination's words (for messages and docs)."""
    settle_window: float = 0.0
    """Seconds an earlier run's request can be sent again safely under its idempotency key
    (LINE push and multicast: ``X-Line-Retry-Key``, 24 hours, guarded at 23): a run of another
    scope settles such requests before it plans (:mod:`~line_exports.sync_settle`). 0: the
    destination records no requests (a resend is harmless or impossible)."""
    target: str = ""
    """Where the rows land (a LinkedIn segment, a MAAC tag set, a LINE audience): part of the
    sync store's name (:func:`~line_exports.sync_store.store_name`), so a changed target is a
    new baseline that gets every row. Empty: the export's one target (push/multicast, CAPI)."""
    fallback_key: tuple[str, ...] = ()
    """Columns that identify a row whose ``key_columns`` are all empty (LinkedIn: a user with
    no userId is matched by name, company, title and country alone); never part of the key of
    a row that has one (there they are sent fields: a change is an update)."""
    legacy_target: str | None = None
    """The target of stores an earlier version wrote for these settings (its key columns in
    :attr:`legacy_key`): the first run of :attr:`target` adopts such a store
    (:meth:`~line_exports.sync_store.SyncStore.adopt`) instead of starting a new baseline."""
    legacy_key: tuple[str, ...] = ()
    """The key columns of the :attr:`legacy_target` store when they differ (rekeyed on
    adoption); empty: the same as :attr:`key_columns`."""
    matched_names: tuple[str, ...] = ()
    """Key or fallback columns the destination matches as names, not byte for byte
    (LinkedIn's company and user names): compared as :func:`~line_exports.identities.name_keys`
    compares them (:data:`~line_exports.identities.NAME_MATCH`) in :attr:`alike`, and in the
    sync key and hash of a row they key (:mod:`~line_exports.sync_names`: a re-spelt name is
    the same member, unchanged; the store keeps the first spelling)."""
    alike: tuple[tuple[str, ...], ...] = ()
    """Groups of key or fallback columns each of which identifies a member at the destination
    (LinkedIn: a company by its name and domains; a user with no ID by its names). mirror never
    removes a departed member that a current row matches on one such group (its values present,
    :attr:`matched_names` compared as names, the others exactly): that REMOVE could take the
    current row's member out (``Acme`` re-spelt ``ACME ``, a name-only user who gained an
    email; VERIFY-13p P5). A group of :attr:`fallback_key` columns applies only to members
    recorded without a key value. Such a member is forgotten, not removed
    (``members_still_current``)."""
    still_named: Callable[[pd.DataFrame, Path], list[str]] | None = None
    """The destination's own test of which departed members a current row still names, given
    them (``key`` and their recorded key columns) and the spool of current rows: their keys
    (LinkedIn companies: one sharing its name or any domain with a current row,
    :func:`~line_exports.destinations.linkedin.companies_still_named`). mirror never removes
    them (that REMOVE could take the current row's company out, VERIFY-13p P5); they are
    forgotten (``members_still_current``)."""
    each_key_identifies: bool = False
    """Each key column identifies a member on its own (LinkedIn's userIds: an email, a
    GOOGLE_AID). mirror then removes a departed member by the key values no current row
    carries: a value a current row carries is never removed (it would take that row's member
    out, VERIFY-13g N8), and a departed member whose every value a current row carries is
    not removed at all, only forgotten (``members_still_current``)."""


def check_mode(dest: Destination, settings: Any) -> None:
    """Raise ValueError when ``settings.sync_mode`` is not one ``dest`` supports here."""
    mode = settings.sync_mode
    if mode == "append":
        return
    spec = dest.sync_spec(settings)
    modes = spec.modes if spec is not None else ("append",)
    if mode not in modes:
        raise ValueError(
            f"sync_mode {mode!r} is not supported by {dest.target_label(settings)} "
            f"(supported: {', '.join(modes)})"
        )


@dataclass
class RemovalReport:
    """What :meth:`Destination.remove` did: keys removed, keys it could not remove."""

    removed_keys: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # key -> the API's answer
    requests: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)


def transient_status(status: int) -> bool:
    """An HTTP status that says "try again later" (the client's own retry set, any 5xx), or 0
    for an element the API gave no answer for: a refusal with it is retried next run."""
    return status == 0 or status in RETRYABLE_STATUS or status >= 500


@dataclass
class SyncPlan:
    """What a run in ``diff`` / ``mirror`` will send and remove, before it sends anything."""

    mode: str
    rows: ValidRows
    """The rows to send (new, changed, retried), spooled like the valid rows."""
    changed: pa.Table
    """Per row to send: row number, key, hash, ident (JSON of the key columns), kind (add,
    update, retry)."""
    held: pa.Table = field(default_factory=lambda: pa.table({"rn": [], "key": []}))
    """Rows not sent because the API refused them for a permanent reason and they have not
    changed since (row number, key): reported refused again, with the recorded answer."""
    unknown: pa.Table = field(default_factory=lambda: pa.table({"rn": [], "key": []}))
    """Rows held because an earlier run sent them and whether they were delivered cannot be
    known (:mod:`~line_exports.sync_settle`): not sent, reported as delivery unknown until the
    user releases them (``line-exports held``)."""
    unknown_rejects: pd.DataFrame | None = None
    """``unknown`` as reject rows (rule ``delivery_unknown``, the recorded reason)."""
    unkeyed: pd.DataFrame | None = None
    """Rows with no value in any key column, as reject rows (:data:`NO_KEY_RULE`): neither
    sent nor recorded, since they cannot be told apart."""
    dropped: list[str] = field(default_factory=list)
    """Recorded members with no key value (written by a version that merged unkeyed rows into
    one key): forgotten when this run commits, never removed (a REMOVE of nothing)."""
    settled: Settled | None = None
    """What settling an earlier run's requests did before this plan (push / multicast)."""
    adds: int = 0
    updates: int = 0
    retried: int = 0
    unchanged: int = 0
    members: int = 0
    """Keys this export holds at the destination (accepted or pending) before this run."""
    departed: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Members that left the result: ``key`` and the key columns (mirror only)."""
    baseline: bool = False
    blocked: str = ""
    forgotten: int = 0
    """Members that left before a mirror baseline: no longer tracked, never removed."""
    still_current: int = 0
    """Departed keys whose every value a current row carries
    (:attr:`SyncSpec.each_key_identifies`): forgotten, not removed."""
    stamp: float | None = None
    """When this run recorded its rows ``pending`` (see :meth:`SyncStore.settle`)."""

    @property
    def removals(self) -> pd.DataFrame:
        """The departed members this run removes (none when blocked or a baseline)."""
        if self.mode != "mirror" or self.baseline or self.blocked:
            return self.departed.iloc[0:0]
        return self.departed

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "sync_mode": self.mode,
            "rows_added": self.adds,
            "rows_updated": self.updates,
            "rows_retried": self.retried,
            "rows_unchanged": self.unchanged,
            "rows_refused_earlier": self.held.num_rows,
            "rows_held_unknown": self.unknown.num_rows,
            "sync_members_before": self.members,
        }
        if self.settled is not None:
            meta.update(self.settled.metadata())
        if self.mode == "mirror":
            meta["members_departed"] = len(self.departed)
            if self.still_current:
                meta["members_still_current"] = self.still_current
            meta["sync_baseline"] = self.baseline
            if self.blocked:
                meta["removals_blocked"] = self.blocked
        return meta

    def summary(self) -> str:
        text = (
            f"sync {self.mode}: {self.adds:,} to add, {self.updates:,} to update, "
            f"{self.retried:,} to retry, {self.unchanged:,} unchanged"
        )
        if self.held.num_rows:
            text += f", {self.held.num_rows:,} refused earlier (not sent until they change)"
        if self.unknown.num_rows:
            text += (
                f", {self.unknown.num_rows:,} held: delivery unknown "
                "(not sent until released: line-exports held)"
            )
        if self.unkeyed is not None:
            text += f", {len(self.unkeyed):,} rejected: no sync key ({NO_KEY_RULE})"
        if self.mode == "mirror":
            text += f", {len(self.removals):,} to remove"
            if self.still_current:
                text += (
                    f", {self.still_current:,} left whose every key value a current row "
                    "carries (forgotten, not removed)"
                )
            if self.baseline:
                text += " (first run in mirror: a baseline, nothing removed)"
            if self.blocked:
                text += f" ({self.blocked})"
        return text


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _json_of(columns: list[str]) -> str:
    """A DuckDB expression: the JSON text of these columns (sorted by name, so a query that
    reorders its columns keeps its keys and hashes)."""
    if not columns:
        return "'{}'"
    parts = ", ".join(f"{_quote(c)} := {_quote(c)}" for c in sorted(columns))
    return f"to_json(struct_pack({parts}))::varchar"


def plan(
    store: SyncStore,
    spec: SyncSpec,
    mode: str,
    max_remove_ratio: float,
    rows: ValidRows,
    workdir: Path,
) -> SyncPlan:
    """Compare the valid rows with what the export holds; spool the rows to send.

    Keys and hashes are computed over the whole spool by DuckDB (md5 of the JSON of the key
    columns, and of every sent column); only the rows to send are written to
    ``workdir/sync.parquet``. Nothing is written to the store. A key refused for good and
    unchanged is held back; one that left the result is not a member (never removed).
    """
    from line_exports.destination import ValidRows

    names = [n for n in pq.read_schema(rows.path).names if n != ROW_NUMBER]
    key, ident, kept = _key_sql(spec, names)
    state = store.load()
    with closing(duckdb.connect()) as con:
        sync_names.register(con)
        con.register("state", state)
        con.execute(
            f"""create table cur as select {_quote(ROW_NUMBER)} as rn, {key} as key,
                {sync_names.hash_sql(spec, names)} as hash, {ident} as ident,
                coalesce({_keyed_sql(spec, names)}, false) as keyed from read_parquet(?)""",
            [str(rows.path)],
        )
        resend = "true" if spec.resend_changed else "false"
        kinds = con.sql(
            f"""select c.rn, c.key, c.hash, c.ident,
                   case when not c.keyed then 'nokey'
                        when s.key is null then 'add'
                        when s.status = 'refused' and s.hash = c.hash then 'held'
                        when s.status = 'unknown' then 'unknown'
                        when s.status <> 'accepted' then 'retry'
                        when s.hash = c.hash or not {resend} then 'same'
                        else 'update' end as kind
                from cur c left join state s using (key) order by c.rn"""
        ).to_arrow_table()
        departed = con.sql(
            """select s.key from state s where s.status <> 'refused'
               and not exists (select 1 from cur c where c.keyed and c.key = s.key)
               order by s.key"""
        ).to_arrow_table()
    kind = kinds.column("kind")
    counts = {k: int(pc.sum(pc.equal(kind, k)).as_py() or 0) for k in ("add", "update", "retry")}
    send = pc.invert(pc.is_in(kind, value_set=pa.array(["same", "held", "unknown", "nokey"])))
    changed = kinds.filter(send).select(["rn", "key", "hash", "ident", "kind"])
    held = kinds.filter(pc.equal(kind, "held")).select(["rn", "key"])
    unknown = kinds.filter(pc.equal(kind, "unknown")).select(["rn", "key"])
    nokey = kinds.filter(pc.equal(kind, "nokey")).column("rn").to_pylist()
    members = state.num_rows - int(pc.sum(pc.equal(state.column("status"), "refused")).as_py() or 0)
    spooled = _spool_subset(rows, changed.column("rn").to_numpy(), workdir / "sync.parquet")
    result = SyncPlan(
        mode=mode,
        rows=ValidRows(spooled, changed.num_rows),
        changed=changed,
        held=held,
        unknown=unknown,
        adds=counts["add"],
        updates=counts["update"],
        retried=counts["retry"],
        unchanged=kinds.num_rows - changed.num_rows - held.num_rows - unknown.num_rows - len(nokey),
        members=members,
    )
    if nokey:
        result.unkeyed = reject(
            nokey,
            "+".join(spec.key_columns),
            NO_KEY_RULE,
            f"no sync key: {key_columns_text(spec)} all empty or missing, so sync_mode "
            f"{mode} cannot tell this row from the others like it; not sent",
        )
    if mode == "mirror":
        keys = departed.column("key").to_pylist()
        frame, result.dropped = _departed_frame(keys, store.idents(keys), kept, spec)
        result.members -= len(result.dropped)
        # departed members a current row still names: forgotten, never removed
        for spare, applies in (
            (_without_current_values, spec.each_key_identifies),
            (_without_respelt, bool(spec.alike)),
            (_without_still_named, spec.still_named is not None),
        ):
            if applies and len(frame):
                frame, current = spare(frame, rows, spec)
                result.dropped += current
                result.still_current += len(current)
        result.departed = frame
        if store.last_mode() != "mirror":
            result.baseline = True
            result.forgotten = len(result.departed)
        elif len(result.departed) > max_remove_ratio * members:
            result.blocked = (
                f"{len(result.departed):,} of {members:,} members would be removed "
                f"({len(result.departed) / max(members, 1):.1%}), more than "
                f"max_remove_ratio {max_remove_ratio:.0%}: nothing was removed"
            )
    return result


def _key_sql(spec: SyncSpec, names: list[str]) -> tuple[str, str, list[str]]:
    """DuckDB expressions (key, ident) of a row with these columns, and the columns an ident
    may hold. The key is the md5 of the namespace and the JSON of the key columns present
    (:attr:`SyncSpec.matched_names` as names are compared, :func:`.sync_names.json_sql`); a
    row whose key columns are all empty, or absent from the query, is keyed by
    :attr:`SyncSpec.fallback_key` instead (the same key either way; its ident then holds those
    columns too), one without :attr:`SyncSpec.required_key` by every column. A row none of
    these identify (:func:`_keyed_sql` false) shares its key with every such row: it is
    rejected (:data:`NO_KEY_RULE`), never planned."""
    key_columns = [c for c in spec.key_columns if c in names]
    kept = key_columns + [c for c in spec.carry if c in names and c not in key_columns]
    namespace = spec.namespace.replace(chr(39), chr(39) * 2)
    key = f"md5('{namespace}' || {sync_names.json_sql(key_columns, spec.matched_names)})"
    ident = _json_of(kept)
    fallback = [c for c in spec.fallback_key if c in names and c not in kept]
    by_name = sync_names.json_sql(fallback, spec.matched_names)
    by_fallback = f"md5('{namespace}' || 'fallback' || {by_name})"
    if fallback and key_columns:
        missing = " and ".join(f"{_quote(c)} is null" for c in key_columns)
        key = f"case when {missing} then {by_fallback} else {key} end"
        ident = f"case when {missing} then {_json_of(kept + fallback)} else {ident} end"
        kept = kept + fallback
    elif fallback:  # no key column in the query: every row is keyed by its fallback columns
        key, ident, kept = by_fallback, _json_of(kept + fallback), kept + fallback
    if spec.required_key and spec.required_key in names:
        key = (
            f"case when {_quote(spec.required_key)} is null then md5('row' || "
            f"{_json_of(names)}) else {key} end"
        )
    return key, ident, kept


def _keyed_sql(spec: SyncSpec, names: list[str]) -> str:
    """A DuckDB expression: true for a row :func:`_key_sql` tells apart from every other, i.e.
    one with a value in a key column, or else in a :attr:`SyncSpec.fallback_key` column, or
    keyed by every column (no :attr:`SyncSpec.required_key` value)."""
    present = [c for c in (*spec.key_columns, *spec.fallback_key) if c in names]
    tests = [f"{_quote(c)} is not null" for c in present]
    if spec.required_key and spec.required_key in names:
        tests.append(f"{_quote(spec.required_key)} is null")
    return " or ".join(tests) if tests else "false"


def key_columns_text(spec: SyncSpec) -> str:
    """The columns that key a member, in words (for a ``sync_key`` reject's message)."""
    text = ", ".join(spec.key_columns)
    if spec.fallback_key:
        text += " (or, with none of them, " + ", ".join(spec.fallback_key) + ")"
    return text


def rekey(spec: SyncSpec, idents: list[str]) -> list[tuple[str, str] | None]:
    """The (key, ident) :func:`plan` gives today for each ident JSON of a store written with
    :attr:`SyncSpec.legacy_key`, or None for a row it cannot key the same way (no key
    column: e.g. a LinkedIn user recorded by name only, whose old ident lacks company, title
    and country): such a member is forgotten, never removed, and the next run sends it again
    (an ADD of a member already there is harmless). Computed by the same DuckDB expressions."""
    out: list[tuple[str, str] | None] = [None] * len(idents)
    groups: dict[tuple[str, ...], list[int]] = {}
    parsed = [json.loads(text) for text in idents]
    for i, values in enumerate(parsed):
        if any(values.get(c) is not None for c in spec.key_columns):
            groups.setdefault(tuple(sorted(values)), []).append(i)
    with closing(duckdb.connect()) as con:
        sync_names.register(con)
        for columns, members in groups.items():
            frame = pd.DataFrame(
                {c: pd.Series([parsed[i].get(c) for i in members], dtype="object") for c in columns}
            )
            names = [c for c in columns if c in spec.key_columns or c in spec.carry]
            key, ident, _ = _key_sql(spec, names)
            con.register("legacy", frame)
            found = con.sql(f"select {key}, {ident} from legacy").fetchall()
            con.unregister("legacy")
            for i, (k, text) in zip(members, found, strict=True):
                out[i] = (k, text)
    return out


def full_target(spec: SyncSpec, account: str) -> str:
    """The target part of a sync store's name: the destination account
    (:meth:`~line_exports.destination.Destination.sync_account`) and :attr:`SyncSpec.target`."""
    return f"{account}|{spec.target}" if account else spec.target


def open_store(ledger: Ledger, export: str, scope: str, spec: SyncSpec, account: str) -> SyncStore:
    """The sync store of ``export`` for this account and target; a store an earlier version
    wrote for the same settings (:attr:`SyncSpec.legacy_target`, or the target without the
    account) is adopted on first use (renamed, and rekeyed when :attr:`SyncSpec.legacy_key`
    differs), so an upgrade keeps each export's state: the first account an export runs
    against after the upgrade takes it over; another account then starts empty."""
    store = SyncStore(ledger, store_name(export, scope, full_target(spec, account)))
    legacy_target = spec.legacy_target
    if legacy_target is None and account:
        legacy_target = spec.target
    if legacy_target is not None:
        legacy = store_name(export, scope, legacy_target)
        convert = (lambda idents: rekey(spec, idents)) if spec.legacy_key else None
        store.adopt(legacy, convert)
    sync_names.migrate(store, spec)  # a store keyed names as held: rekeyed once
    return store


def _departed_frame(
    keys: list[str], texts: list[str], kept: list[str], spec: SyncSpec
) -> tuple[pd.DataFrame, list[str]]:
    """(departed members: ``key`` and their recorded key columns, keys to forget). The columns
    are ``kept`` (today's query's) and any other key, fallback or carried column a member was
    recorded with (a query that no longer has it can still remove who was sent by it). A member
    recorded with no value in a key or fallback column (an earlier version merged such rows into
    one key) cannot be removed: it is forgotten."""
    identity = (*spec.key_columns, *spec.fallback_key)
    idents = [json.loads(text) for text in texts]
    unkeyed = [not any(i.get(c) is not None for c in identity) for i in idents]
    idents = [i for i, drop in zip(idents, unkeyed, strict=True) if not drop]
    recorded = [c for c in (*identity, *spec.carry) if any(i.get(c) is not None for i in idents)]
    columns = kept + [c for c in dict.fromkeys(recorded) if c not in kept]
    frame = pd.DataFrame(
        {c: pd.Series([i.get(c) for i in idents], dtype="object") for c in columns}
    )
    kept_keys = [k for k, drop in zip(keys, unkeyed, strict=True) if not drop]
    frame.insert(0, "key", pd.Series(kept_keys, dtype="object"))
    return frame, [k for k, drop in zip(keys, unkeyed, strict=True) if drop]


def _without_current_values(
    departed: pd.DataFrame, rows: ValidRows, spec: SyncSpec
) -> tuple[pd.DataFrame, list[str]]:
    """(departed members with every key value a current row carries emptied, keys of those
    left with none: their values all belong to current rows, so they are not removed).
    :attr:`SyncSpec.each_key_identifies`; a semi-join per key column in DuckDB, so the current
    rows are never held in Python."""
    names = set(pq.read_schema(rows.path).names) if rows.count else set()
    columns = [c for c in spec.key_columns if c in departed.columns]
    searched = [c for c in columns if c in names and departed[c].notna().any()]
    if not columns:
        return departed, []
    had = departed[columns].notna().any(axis=1).to_numpy()
    frame = departed.copy()
    with closing(duckdb.connect()) as con:
        con.register("departed", frame[["key", *searched]].astype("object"))
        for column in searched:
            quoted = _quote(column)
            held = con.execute(
                f"select key from departed where {quoted} in "
                f"(select {quoted} from read_parquet(?) where {quoted} is not null)",
                [str(rows.path)],
            ).fetchall()
            taken = frame["key"].isin({k for (k,) in held}).to_numpy()
            frame[column] = frame[column].where(~taken, None)
    left = frame[columns].notna().any(axis=1).to_numpy()
    gone = had & ~left
    return frame[~gone].reset_index(drop=True), frame.loc[gone, "key"].tolist()


def _without_respelt(
    departed: pd.DataFrame, rows: ValidRows, spec: SyncSpec
) -> tuple[pd.DataFrame, list[str]]:
    """(departed members no current row matches on a :attr:`SyncSpec.alike` group, keys of
    those one does). Names compared by :func:`~line_exports.identities.name_keys` (one
    definition with the duplicate check); a semi-join in DuckDB over the spool, so the
    current rows are never held in Python."""
    names = set(pq.read_schema(rows.path).names) if rows.count else set()
    columns = [c for group in spec.alike for c in group if c in departed.columns]
    if not names or not columns:
        return departed, []

    def value(alias: str, column: str) -> str:
        text = f"{alias}.{_quote(column)}::varchar"
        return f"name_key({text})" if column in spec.matched_names else text

    unkeyed = " and ".join(
        f"d.{_quote(c)} is null" for c in spec.key_columns if c in departed.columns
    )
    tests = []
    for group in spec.alike:
        present = [c for c in group if c in departed.columns and c in names]
        if not present:
            continue
        # a column the query lacks matches only a member recorded without it
        same = [f"{value('d', c)} is not distinct from {value('c', c)}" for c in present]
        same += [
            f"d.{_quote(c)} is null" for c in group if c in departed.columns and c not in names
        ]
        test = f"(({' or '.join(f'd.{_quote(c)} is not null' for c in present)}) and "
        test += " and ".join(same) + ")"
        if set(group) <= set(spec.fallback_key) and unkeyed:
            test = f"({unkeyed} and {test})"
        tests.append(test)
    if not tests:
        return departed, []
    with closing(duckdb.connect()) as con:
        sync_names.register(con)
        held = [c for c in dict.fromkeys([*columns, *spec.key_columns]) if c in departed.columns]
        con.register("departed", departed[["key", *held]].astype("object"))
        found = con.execute(
            f"select d.key from departed d where exists "
            f"(select 1 from read_parquet(?) c where {' or '.join(tests)})",
            [str(rows.path)],
        ).fetchall()
    alike = departed["key"].isin({k for (k,) in found}).to_numpy()
    return departed[~alike].reset_index(drop=True), departed.loc[alike, "key"].tolist()


def _without_still_named(
    departed: pd.DataFrame, rows: ValidRows, spec: SyncSpec
) -> tuple[pd.DataFrame, list[str]]:
    """(departed members :attr:`SyncSpec.still_named` does not name, keys of those it does)."""
    if spec.still_named is None or not rows.count:
        return departed, []
    named = departed["key"].isin(set(spec.still_named(departed, rows.path))).to_numpy()
    return departed[~named].reset_index(drop=True), departed.loc[named, "key"].tolist()


def _spool_subset(rows: ValidRows, numbers: np.ndarray, path: Path) -> Path:
    """The spooled rows whose row numbers are in ``numbers``, same schema, same order."""
    wanted = pa.array(numbers, pa.int64())
    spool = pq.ParquetFile(rows.path, pre_buffer=False)
    with pq.ParquetWriter(path, spool.schema_arrow) as writer:
        for group in range(spool.num_row_groups):
            table = spool.read_row_group(group, use_threads=False)
            keep = pc.is_in(table.column(ROW_NUMBER).cast(pa.int64()), value_set=wanted)
            writer.write_table(table.filter(keep))
    return path


def deliver(
    dest: Destination,
    resource: Any,
    settings: Any,
    rows: ValidRows,
    run: ExportRun,
    workdir: Path,
) -> tuple[DeliveryReport, SyncPlan | None]:
    """Deliver ``rows`` in the export's ``sync_mode``; the report counts unchanged rows as
    accepted (an earlier run delivered them) and its metadata holds the plan's counts."""
    from line_exports.destination import DeliveryFailed, DeliveryReport

    mode = settings.sync_mode
    if mode == "append":
        return dest.deliver(resource, settings, rows, run), None
    check_mode(dest, settings)
    spec = dest.sync_spec(settings)
    assert spec is not None
    ledger = run.ledger.ledger
    account = dest.sync_account(resource, settings, lambda s: account_fingerprint(ledger, s))
    run.sync_account = account
    store = open_store(ledger, run.ledger.export, run.ledger.scope, spec, account)
    settled = None
    if spec.settle_window:
        scope = run.ledger.scope
        run.keep_requests = lambda entries: store.put_requests(scope, entries)
        refuse_if_running(store, run, full_target(spec, account))
        try:
            settled = settle_earlier(dest, resource, settings, store, run, spec.settle_window)
        except SettleStopped as stop:
            raise _settle_stopped(stop, store, spec, settings, rows, workdir) from stop.error
    fixed = plan(store, spec, mode, settings.max_remove_ratio, rows, workdir)
    fixed.settled = settled
    if fixed.unknown.num_rows:
        fixed.unknown_rejects = _held_unknown(store, fixed)
    run.log.info(f"{run.name}: {fixed.summary()}")
    reason = ""
    if spec.rebuild and mode == "mirror" and not fixed.baseline and not fixed.blocked:
        reason = (
            f"{len(fixed.departed):,} members left"
            if len(fixed.departed)
            else dest.rebuild_reason(resource, settings, run)
        )
    if reason:
        fixed.held = fixed.held.slice(0, 0)  # a rebuild sends every current row
    # Recorded before anything is sent: a run that stops or is killed leaves them pending.
    fixed.stamp = store.put(fixed.changed, "pending")
    removal = None
    try:
        if reason:
            report, removal = dest.rebuild(resource, settings, rows, fixed.removals, run, reason)
            fixed.unchanged = 0  # every current row was sent to the new target
        elif fixed.rows.count:
            report = dest.deliver(resource, settings, fixed.rows, run)
        else:
            report = DeliveryReport()
        if len(fixed.removals) and not reason:
            removal = dest.remove(resource, settings, fixed.removals, run)
    except DeliveryFailed as exc:
        _commit_answered(store, fixed, exc.report, run)
        _annotate(exc.report, fixed, None, _held_refusals(store, fixed))
        raise  # its other rows stay pending: they come back next run, counted as retried
    except BaseException:  # the export counts what the destination's report holds so far
        # (an interrupt too: :mod:`line_exports.interrupts`)
        if run.report is not None:
            _commit_answered(store, fixed, run.report, run)
        _annotate(run.report or run.new_report(), fixed, None, _held_refusals(store, fixed))
        raise
    transient = _commit(store, fixed, report, removal, dest)
    if transient is not None and spec.settle_window:
        store.drop_requests(scope=run.ledger.scope)  # committed: its requests are settled
    _annotate(report, fixed, removal, _held_refusals(store, fixed), transient)
    return report, fixed


def _settle_stopped(
    stop: SettleStopped,
    store: SyncStore,
    spec: SyncSpec,
    settings: Any,
    rows: ValidRows,
    workdir: Path,
) -> DeliveryFailed:
    """The failure of a run whose settle step stopped before it planned: counted by the plan it
    would have carried out (nothing is written to the store: its rows stay pending, settled next
    run): unchanged rows accepted, held rows as held, the rows of requests not settled where
    :meth:`SettleStopped.report` puts them, the other rows to send unsent."""
    from line_exports.destination import DeliveryFailed

    fixed = plan(store, spec, settings.sync_mode, settings.max_remove_ratio, rows, workdir)
    fixed.settled = stop.settled
    if fixed.unknown.num_rows:
        fixed.unknown_rejects = _held_unknown(store, fixed)
    report = stop.report(fixed.changed)
    _annotate(report, fixed, None, _held_refusals(store, fixed))
    return DeliveryFailed(str(stop), report, retryable=stop.error.retryable)


def _commit(
    store: SyncStore,
    fixed: SyncPlan,
    report: DeliveryReport,
    removal: RemovalReport | None,
    dest: Destination,
) -> int | None:
    """Settle this run's pending rows: accepted ones become ``accepted``; rows refused for a
    transient reason, rejected before sending, or whose fate the API did not tell per row
    (``report.unsettled``) stay ``pending`` (sent again next run); rows
    refused for good become ``refused`` with the API's answer; rows of unknown delivery are
    held ``unknown`` (:mod:`.sync_settle`); removed keys are forgotten. Returns the rows refused
    for a transient reason (None when the delivery did not finish)."""
    unsent = fixed.rows.count - report.rejected_rows - report.sent_rows
    if unsent > 0:
        return None  # which rows went out is unknown: all stay pending and come back
    refused = pd.concat([f for f in report.refused if len(f)] or [_NO_ROWS], ignore_index=True)
    refused = refused.drop_duplicates(ROW_NUMBER)
    reasons = refused[["rule", "message"]].drop_duplicates()
    transient = {
        (rule, message): dest.refusal_is_transient(rule, message)
        for rule, message in zip(reasons["rule"], reasons["message"], strict=True)
    }
    is_transient = np.array(
        [transient[p] for p in zip(refused["rule"], refused["message"], strict=True)], dtype=bool
    )
    numbers = fixed.changed.column("rn").cast(pa.int64())
    rejected = [f[ROW_NUMBER].to_numpy() for f in report.rejected if len(f)]
    unsettled = [np.asarray(s, dtype="int64") for s in report.unsettled if len(s)]
    retry = np.concatenate([refused[ROW_NUMBER].to_numpy()[is_transient], *rejected, *unsettled])
    # Moved off this run's stamp first, so settle() leaves them as they are.
    store.put(fixed.changed.filter(pc.is_in(numbers, pa.array(retry, pa.int64()))), "pending")
    _hold_unknown(store, fixed, report)
    permanent = refused[~is_transient].set_index(ROW_NUMBER)
    chosen = fixed.changed.filter(
        pc.is_in(numbers, pa.array(permanent.index.to_numpy(), pa.int64()))
    )
    store.put(chosen, "refused")
    by_row = permanent.loc[chosen.column("rn").to_numpy()]
    store.put_refusals(
        chosen.column("key").to_pylist(),
        list(zip(by_row["rule"], by_row["column"], by_row["message"], strict=True)),
    )
    assert fixed.stamp is not None
    store.settle(fixed.stamp)
    if removal is not None:
        store.delete(removal.removed_keys)
    if fixed.dropped:
        store.delete(fixed.dropped)
    if fixed.baseline and fixed.forgotten:
        store.delete(fixed.departed["key"].tolist())
    store.finish(fixed.mode)
    return int(is_transient.sum())


def _commit_answered(
    store: SyncStore, fixed: SyncPlan, report: DeliveryReport, run: ExportRun
) -> None:
    """A run that fails or stops mid-delivery records ``accepted`` the rows the API accepted
    before it did (:attr:`DeliveryReport.answered`, less the rows named refused, of unknown
    delivery, rejected or unsettled), so the next run does not send them again; every other
    row it planned stays ``pending`` (sent again next run, counted in ``rows_retried``: of
    unknown delivery too, where the destination resends harmlessly). Destinations that name
    no answered rows (LINE push and multicast settle from their recorded requests instead)
    leave every row pending, as before. A failure to write is logged, never raised over the
    run's own failure."""
    answered = [np.asarray(s, dtype="int64") for s in report.answered if len(s)]
    if not answered or fixed.stamp is None:
        return
    other = [f[ROW_NUMBER].to_numpy() for f in (*report.refused, *report.unknown) if len(f)]
    other += [f[ROW_NUMBER].to_numpy() for f in report.rejected if len(f)]
    other += [np.asarray(s, dtype="int64") for s in report.unsettled if len(s)]
    accepted = np.setdiff1d(
        np.concatenate(answered),
        np.concatenate(other).astype("int64") if other else np.array([], dtype="int64"),
    )
    numbers = fixed.changed.column("rn").cast(pa.int64())
    chosen = fixed.changed.filter(pc.is_in(numbers, pa.array(accepted, pa.int64())))
    if chosen.num_rows > report.accepted_rows:  # the report disagrees with itself: keep pending
        run.log.warning(
            f"{run.name}: {chosen.num_rows:,} rows named accepted but {report.accepted_rows:,} "
            "counted: none recorded accepted (they are sent again next run)"
        )
        return
    try:
        store.put(chosen, "accepted")
    except Exception as error:  # the run's own failure is what the user must see
        run.log.error(f"{run.name}: accepted rows not recorded in the sync store: {error!r}")


def _hold_unknown(store: SyncStore, fixed: SyncPlan, report: DeliveryReport) -> None:
    """Rows the destination reported of unknown delivery (a resumed LINE push whose answer was
    lost longer ago than the resend window) are held ``unknown`` with its reason, not settled
    accepted; unless it also left them unsettled (``report.unsettled``: a resend is harmless,
    e.g. a LinkedIn element answered 5xx): those stay pending, sent again next run."""
    unknown = pd.concat([f for f in report.unknown if len(f)] or [_NO_ROWS], ignore_index=True)
    unsettled = [np.asarray(s, dtype="int64") for s in report.unsettled if len(s)]
    if unsettled:
        unknown = unknown[~unknown[ROW_NUMBER].isin(np.concatenate(unsettled))]
    if not len(unknown):
        return
    reason = unknown.drop_duplicates(ROW_NUMBER).set_index(ROW_NUMBER)["message"]
    numbers = fixed.changed.column("rn").cast(pa.int64())
    held = fixed.changed.filter(pc.is_in(numbers, pa.array(reason.index.to_numpy(), pa.int64())))
    store.put(held, "unknown")
    hint = held_hint(export_of(store.export))
    store.put_refusals(
        held.column("key").to_pylist(),
        [(UNKNOWN_RULE, "id", f"{reason[n]}. {hint}") for n in held.column("rn").to_pylist()],
    )


_NO_ROWS = pd.DataFrame(
    {ROW_NUMBER: pd.Series(dtype="int64"), "column": [], "rule": [], "message": [], "value": []}
)


def _held_refusals(store: SyncStore, fixed: SyncPlan) -> pd.DataFrame:
    """The rows held back (refused for good by an earlier run, unchanged since) as refusals,
    with the API's recorded answer."""
    if not fixed.held.num_rows:
        return _NO_ROWS
    keys = fixed.held.column("key").to_pylist()
    found = store.refusals(keys)
    unknown = ("sync_refused", "", "refused by the API (its answer was not recorded)")
    rule, column, message = zip(*(found.get(k, unknown) for k in keys), strict=True)
    here = fixed.settled.refused_here if fixed.settled is not None else set()
    return pd.DataFrame(
        {
            ROW_NUMBER: fixed.held.column("rn").to_numpy().astype("int64"),
            "column": column,
            "rule": rule,
            "message": [
                f"{m} [{EARLIER_ATTEMPT if k in here else EARLIER_RUN}; not sent again until "
                "the row changes]"
                for k, m in zip(keys, message, strict=True)
            ],
            "value": "",
        }
    )


EARLIER_RUN = "an earlier run"
EARLIER_ATTEMPT = "an earlier step attempt of this run"
"""Who got a held row's refusal, in its reason: an earlier run, or (settled by a step retry,
:attr:`~line_exports.sync_settle.Settled.refused_here`) an earlier attempt of this run."""


def _held_unknown(store: SyncStore, fixed: SyncPlan) -> pd.DataFrame:
    """The rows held ``unknown`` as reject rows, with the reason recorded when settled."""
    keys = fixed.unknown.column("key").to_pylist()
    found = store.refusals(keys)
    fallback = "delivery unknown: an earlier run's request (see line-exports held)"
    return pd.DataFrame(
        {
            ROW_NUMBER: fixed.unknown.column("rn").to_numpy().astype("int64"),
            "column": "id",
            "rule": UNKNOWN_RULE,
            "message": [found.get(k, ("", "", fallback))[2] for k in keys],
            "value": "",
        }
    )


def _annotate(
    report: DeliveryReport,
    fixed: SyncPlan,
    removal: RemovalReport | None,
    held: pd.DataFrame,
    transient: int | None = None,
) -> None:
    """The plan's counts in the report: unchanged rows are accepted (an earlier run delivered
    them); held rows are refused again with the recorded answer; neither was sent."""
    report.unchanged_rows = fixed.unchanged + len(held) + fixed.unknown.num_rows
    report.accepted_rows += fixed.unchanged
    if len(held):
        report.refused.append(held)
    if fixed.unknown_rejects is not None:
        report.unknown.append(fixed.unknown_rejects)
    if fixed.unkeyed is not None:
        report.rejected.append(fixed.unkeyed)
    if fixed.settled is not None:
        report.requests += fixed.settled.resent
    report.metadata.update(fixed.metadata())
    if transient is not None:
        report.metadata["rows_refused_transient"] = transient
        report.metadata["rows_refused_permanent"] = (
            report.refused_rows - report.refused_unnamed - transient
        )
    if removal is not None:
        report.requests += removal.requests
        report.metadata["members_removed"] = len(removal.removed_keys)
        report.metadata["members_not_removed"] = len(removal.failed)
        report.metadata.update(removal.metadata)
        if removal.failed:
            report.metadata["removal_failures"] = dg.MetadataValue.json(
                dict(list(removal.failed.items())[:SAMPLE_ROWS])
            )
    elif fixed.mode == "mirror":
        report.metadata["members_removed"] = 0


HELD_PREFIX = "delivery unknown: "
"""How a held row's recorded reason begins (:func:`~line_exports.sync_settle.unknown_reason`,
a LINE push resumed past its retry key's window)."""


def held_text(rows: int, reason: str) -> str:
    """``N rows held, delivery unknown: <reason>``, saying "delivery unknown" once whether or
    not the recorded ``reason`` begins with it."""
    return f"{rows:,} rows held, {HELD_PREFIX}{reason.removeprefix(HELD_PREFIX)}"


def check_result(
    asset_key: dg.AssetKey, mode: str, fixed: SyncPlan | None, reason: str = ""
) -> dg.AssetCheckResult:
    """``sync_removals``: fails when mirror removed nothing for safety (empty result, too many
    removals), or when rows are held because an earlier run's delivery of them cannot be known
    (``rows_held_unknown``), saying why and what to do; passes otherwise."""
    reason = reason or (fixed.blocked if fixed is not None else "")
    if fixed is not None and fixed.unknown.num_rows and fixed.unknown_rejects is not None:
        held = held_text(fixed.unknown.num_rows, str(fixed.unknown_rejects["message"].iloc[0]))
        reason = f"{reason}; {held}" if reason else held
    meta: dict[str, Any] = {"sync_mode": mode}
    if fixed is not None and fixed.unknown.num_rows:
        meta["rows_held_unknown"] = fixed.unknown.num_rows
    if fixed is not None and mode == "mirror":
        meta.update(
            {
                "members_before": fixed.members,
                "members_departed": len(fixed.departed),
                "baseline": fixed.baseline,
            }
        )
    if reason:
        meta["reason"] = reason
    return dg.AssetCheckResult(
        check_name=SYNC_CHECK,
        asset_key=asset_key,
        passed=not reason,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=meta,
    )


def check_spec(asset_key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        SYNC_CHECK,
        asset=asset_key,
        description=(
            "sync_mode mirror: fails when departed members were not removed for safety "
            "(an empty result, or more than max_remove_ratio of the members), saying why; "
            "diff / mirror: fails when rows are held because an earlier run's delivery of "
            "them cannot be known (push, multicast), saying how to release them."
        ),
    )


@dataclass
class Preview:
    """What ``line-exports plan`` shows of a ``diff`` / ``mirror`` task: the lines (counts and
    a sample of each kind), the rows a run would send (adds, updates and retries; every current
    row when mirror rebuilds a LINE audience) and the members it would remove."""

    lines: list[str]
    rows: ValidRows
    removals: int


def preview(
    dest: Destination, resource: Any, settings: Any, export: str, rows: ValidRows, workdir: Path
) -> Preview:
    """What a run in ``diff`` / ``mirror`` would add, update, retry and remove, with counts and
    a sample of each, read from the ledger (``line-exports plan``); nothing is written."""
    check_mode(dest, settings)
    spec = dest.sync_spec(settings)
    assert spec is not None
    if isinstance(resource, dg.ConfigurableResource):  # the CLI's, not yet resolved
        resource = resource.process_config_and_initialize()
    ledger = Ledger()
    try:
        account = dest.sync_account(resource, settings, lambda s: account_fingerprint(ledger, s))
        store = open_store(ledger, export, "", spec, account)
        fixed = plan(store, spec, settings.sync_mode, settings.max_remove_ratio, rows, workdir)
        settling = outlook(store, spec.settle_window) if spec.settle_window else []
    finally:
        ledger.close()
    lines = [fixed.summary(), *settling]
    sending = fixed.rows
    if spec.rebuild and len(fixed.removals):
        sending = rows  # deliver() rebuilds: a new audience gets every current row
        lines.append(
            f"{len(fixed.removals):,} members left: {spec.removal}; every one of the "
            f"{rows.count:,} current rows would be sent"
        )
    frame = next(fixed.rows.batches(max(fixed.rows.count, 1)), None)
    if frame is not None and len(frame):
        kinds = dict(
            zip(
                fixed.changed.column("rn").to_pylist(),
                fixed.changed.column("kind").to_pylist(),
                strict=True,
            )
        )
        frame = frame.assign(_kind=frame[ROW_NUMBER].map(kinds))
        for kind in ("add", "update", "retry"):
            chosen = frame[frame["_kind"] == kind]
            if len(chosen):
                lines.append(f"{kind} (first {min(len(chosen), SAMPLE_ROWS)}):")
                lines += ["  " + line for line in sample(chosen).splitlines()]
    removals = fixed.removals
    if len(removals):
        lines.append(f"remove (first {min(len(removals), SAMPLE_ROWS)}):")
        lines += ["  " + line for line in sample(removals.drop(columns="key")).splitlines()]
    return Preview(lines, sending, len(removals))


EMPTY_RESULT_REASON = (
    "the result is empty: in mirror this would remove every member, so nothing was removed"
)


def sample(frame: pd.DataFrame, rows: int = SAMPLE_ROWS) -> str:
    """A few rows of a frame as text (for ``plan``)."""
    shown = frame.drop(columns=[c for c in frame.columns if c.startswith("_")], errors="ignore")
    return shown.head(rows).to_string(index=False, max_colwidth=40)
