"""Sync keys of names a destination matches as names (LinkedIn), and stores written before.

A LinkedIn company's name, and the names of a user with no ID, are matched by LinkedIn as names
(:data:`~line_exports.identities.NAME_MATCH`: trimmed, lower-cased): ``Acme`` one run and
``ACME`` the next are one member. So where such a column is part of a member's key
(:attr:`~line_exports.sync.SyncSpec.matched_names`), the sync key and the hash of its sent
fields take it as :func:`~line_exports.identities.name_keys` keys it: a re-spelt name is
neither a new member nor a change, nothing is sent, and the store keeps the first spelling
(the ident a REMOVE is built from). Such a hash is written ``n:`` + md5 (:data:`NAMES_HASH`).

A store written before (every hash without the prefix, names keyed as held) is converted when
the export's next run opens it (:func:`migrate`), once: each member is rekeyed from its recorded
key columns, and its hash recomputed where it covered exactly those columns (a company, a user
with no ID) or prefixed where it also covered fields the store does not keep (a user with IDs,
whose names are sent fields, not key: hashed as held, so the same md5). So an upgrade sends
nothing again and removes nothing.
"""

from __future__ import annotations

import json
from contextlib import closing
from typing import TYPE_CHECKING

import duckdb
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from line_exports.identities import register_name_key
from line_exports.ledger import SYNC_MEMBERS

if TYPE_CHECKING:
    from line_exports.sync import SyncSpec
    from line_exports.sync_store import SyncStore

NAMES_HASH = "n:"
"""The prefix of a hash computed with names compared as names (see the module)."""


def register(con: duckdb.DuckDBPyConnection) -> None:
    """``name_key(varchar)`` on ``con``: :func:`~line_exports.identities.register_name_key`,
    the duplicate check's one definition (a blank name's key is NULL)."""
    register_name_key(con)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def json_sql(columns: list[str], matched: tuple[str, ...] | list[str] = ()) -> str:
    """A DuckDB expression: the JSON text of these columns, sorted by name (a query that
    reorders its columns keeps its keys and hashes), ``matched`` ones as names are compared
    (``name_key``, :func:`register`)."""
    if not columns:
        return "'{}'"
    parts = ", ".join(
        f"{_quote(c)} := name_key({_quote(c)}::varchar)"
        if c in matched
        else f"{_quote(c)} := {_quote(c)}"
        for c in sorted(columns)
    )
    return f"to_json(struct_pack({parts}))::varchar"


def hash_sql(spec: SyncSpec, names: list[str]) -> str:
    """A DuckDB expression: the hash of a row's sent fields (``names``). With
    :attr:`~line_exports.sync.SyncSpec.matched_names`, a matched column that keys the row (a
    key column, or a fallback column of a row with no key value) is compared as a name, and
    the hash is :data:`NAMES_HASH` + md5; any other column as held."""
    if not spec.matched_names:
        return f"md5({json_sql(names)})"
    keys = [c for c in spec.key_columns if c in names]
    in_key = [c for c in spec.matched_names if c in keys]
    by_fallback = [
        c for c in spec.matched_names if c in spec.fallback_key and c in names and c not in keys
    ]
    value = f"md5({json_sql(names, in_key)})"
    if by_fallback:
        named = f"md5({json_sql(names, in_key + by_fallback)})"
        if keys:
            missing = " and ".join(f"{_quote(c)} is null" for c in keys)
            value = f"case when {missing} then {named} else {value} end"
        else:
            value = named
    return f"'{NAMES_HASH}' || {value}"


def _old_form(store: SyncStore) -> list[tuple[str, str, str, str, float]]:
    """(key, hash, status, ident, recorded_at) of the members whose hash lacks the prefix."""
    table = SYNC_MEMBERS
    query = sa.select(
        table.c.key, table.c.hash, table.c.status, table.c.ident, table.c.recorded_at
    ).where(table.c.export == store.export, sa.not_(table.c.hash.startswith(NAMES_HASH)))
    with store.ledger._lock, store.ledger.engine.connect() as con:
        return [tuple(row) for row in con.execute(query).all()]  # type: ignore[misc]


def migrate(store: SyncStore, spec: SyncSpec) -> int:
    """Convert the members a version that keyed names as held recorded (see the module), in
    place; returns how many. Nothing to do (one query) once converted, or without
    :attr:`~line_exports.sync.SyncSpec.matched_names`."""
    from line_exports.sync import _key_sql

    if not spec.matched_names:
        return 0
    rows = _old_form(store)
    if not rows:
        return 0
    groups: dict[tuple[str, ...], list[int]] = {}
    parsed = [json.loads(row[3]) for row in rows]
    for i, values in enumerate(parsed):
        groups.setdefault(tuple(sorted(values)), []).append(i)
    new: list[tuple[str, str] | None] = [None] * len(rows)
    with closing(duckdb.connect()) as con:
        register(con)
        for columns, members in groups.items():
            if not columns:  # no key value (an old merge, forgotten by the next plan)
                for i in members:
                    new[i] = (rows[i][0], NAMES_HASH + rows[i][1])
                continue
            frame = pd.DataFrame(
                {c: pd.Series([parsed[i].get(c) for i in members], dtype="object") for c in columns}
            )
            names = list(columns)
            key, _, _ = _key_sql(spec, names)
            con.register("old", frame)
            found = con.sql(
                f"select {key}, md5({json_sql(names)}), {hash_sql(spec, names)} from old"
            ).fetchall()
            con.unregister("old")
            for i, (k, as_held, named) in zip(members, found, strict=True):
                # the old hash covered exactly these columns: recomputed; else (a user with
                # IDs and other sent fields, which were hashed as held) the same md5, prefixed
                old_hash = rows[i][1]
                new[i] = (k, named if old_hash == as_held else NAMES_HASH + old_hash)
    old_keys = [row[0] for row in rows]
    refusals = store.refusals(old_keys)
    by_status: dict[tuple[str, float], list[tuple[str, str, str]]] = {}
    for row, (key, digest) in zip(rows, new, strict=True):  # type: ignore[misc]
        by_status.setdefault((row[2], row[4]), []).append((key, digest, row[3]))
    for (status, stamp), members in by_status.items():
        keys, hashes, idents = zip(*members, strict=True)
        table = pa.table({"key": list(keys), "hash": list(hashes), "ident": list(idents)})
        store.put(table, status, stamp)
    moved = {row[0]: key for row, (key, _) in zip(rows, new, strict=True)}  # type: ignore[misc]
    store.put_refusals([moved[k] for k in refusals], [refusals[k] for k in refusals])
    kept = {key for key, _ in new}  # type: ignore[misc]
    store.delete([k for k in old_keys if k not in kept])
    return len(rows)
