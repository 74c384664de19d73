"""LinkedIn names in the sync state are keyed as LinkedIn matches them (NOTE-idents "Left"):
``Acme`` one run and ``ACME `` the next is one member, unchanged, not sent again (it was
re-ADDed in diff, a false change); the store keeps the first spelling, which a later REMOVE
sends. A store written by the version that keyed names as held is converted by the next run:
nothing is sent again, nothing removed. Real runs, loopback HTTP to the sandbox."""

from __future__ import annotations

import json
from contextlib import closing

import duckdb
import pyarrow as pa
import sqlalchemy as sa

from line_exports.ledger import Ledger
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.linkedin import store_of
from line_exports.sync_store import SyncStore
from line_exports_tests.test_linkedin import metadata, resource, run_export

COMPANIES = "select * from (values {}) t(company_name, company_website_domain)"
USERS = "select * from (values {}) t(email, first_name, last_name)"
FIRST_COMPANIES = COMPANIES.format("('Acme', null::varchar), ('Beta', 'beta.com'), ('Gone', null)")
NEXT_COMPANIES = COMPANIES.format("('ACME ', null::varchar), ('beta', 'beta.com'), ('New', null)")
FIRST_USERS = USERS.format(
    "('ann@example.com', 'Ann', 'Lee'), (null::varchar, 'Dan', 'Ng'), (null, 'Eve', 'Lo'), "
    "(null, 'Gone', 'Away')"
)
NEXT_USERS = USERS.format(
    "('ann@example.com', 'Ann', 'Lee'), (null::varchar, 'dan ', 'NG'), (null, 'Eve', 'Lo'), "
    "(null, 'New', 'One')"
)
CASES = {
    "companies": (FIRST_COMPANIES, NEXT_COMPANIES, "companyName"),
    "users": (FIRST_USERS, NEXT_USERS, "firstName"),
}


def _two_runs(server: SandboxServer, kind: str, name: str, between=None) -> tuple[dict, list]:
    first, second, field = CASES[kind]
    res = resource(server)
    settings = {"audience_type": kind, "segment_name": name, "sync_mode": "mirror"}
    assert run_export(res, first, name=name, **settings).success
    if between is not None:
        between(name)
    store = store_of(server.sandbox)
    before = len(store.batches)
    result = run_export(res, second, name=name, max_remove_ratio=1.0, **settings)
    assert result.success
    sent = [(e["action"], e.get(field)) for b in store.batches[before:] for e in b]
    return metadata(result, name), sent


def _check(kind: str, meta: dict, sent: list) -> None:
    assert sent == [("ADD", "New"), ("REMOVE", "Gone")], (kind, sent)
    assert (meta["rows_added"], meta["rows_updated"], meta["rows_unchanged"]) == (
        1,
        0,
        2 if kind == "companies" else 3,
    ), meta
    assert meta["members_removed"] == 1, meta


def test_a_re_spelt_name_is_the_same_member_unchanged(sandbox_server: SandboxServer) -> None:
    for kind in CASES:
        meta, sent = _two_runs(sandbox_server, kind, f"respelt_{kind}")
        _check(kind, meta, sent)


def _old_form(export_name: str) -> int:
    """Rewrite the export's store as the version before wrote it: names keyed as held (the
    key md5 of the key columns' JSON, or of 'fallback' and the names' JSON for a user with no
    ID) and the hash an md5 of the sent fields as held, without a prefix."""
    ledger = Ledger()
    try:
        with ledger.engine.connect() as con:
            [export] = con.execute(
                sa.text("select distinct export from sync_members where export like :e"),
                {"e": f"{export_name}@%"},
            ).scalars()
        store = SyncStore(ledger, export)
        with ledger.engine.connect() as con:
            rows = con.execute(
                sa.text("select key, hash, ident, status from sync_members where export = :e"),
                {"e": export},
            ).all()
        keys, hashes, idents = [], [], []
        with closing(duckdb.connect()) as db:
            for key, digest, ident, status in rows:
                values = json.loads(ident)
                assert status == "accepted" and digest.startswith("n:"), (status, digest)
                as_held = db.execute("select md5(?)", [ident]).fetchone()[0]
                if "company_name" in values:  # every sent field is a key column
                    keys.append(as_held)
                    hashes.append(as_held)
                elif values.get("email") is not None:  # keyed by its ID; names hashed as held
                    keys.append(key)
                    hashes.append(digest[2:])
                else:
                    names = {k: values[k] for k in sorted(values) if k != "email"}
                    packed = ", ".join(f'"{k}" := ?' for k in names)
                    old_key = db.execute(
                        f"select md5('' || 'fallback' || to_json(struct_pack({packed}))::varchar)",
                        list(names.values()),
                    ).fetchone()[0]
                    keys.append(old_key)
                    hashes.append(as_held)
                idents.append(ident)
        store.delete([r[0] for r in rows])
        store.put(pa.table({"key": keys, "hash": hashes, "ident": idents}), "accepted")
        return len(rows)
    finally:
        ledger.close()


def _hashes(export_name: str) -> list[str]:
    ledger = Ledger()
    try:
        with ledger.engine.connect() as con:
            return list(
                con.execute(
                    sa.text("select hash from sync_members where export like :e"),
                    {"e": f"{export_name}@%"},
                ).scalars()
            )
    finally:
        ledger.close()


def test_a_store_keyed_by_names_as_held_is_converted(sandbox_server: SandboxServer) -> None:
    """The run after an upgrade sends only what changed (``New``) and removes only who left
    (``Gone``): the members recorded under their names as held are found again, rekeyed."""
    for kind in CASES:
        name = f"old_{kind}"
        meta, sent = _two_runs(sandbox_server, kind, name, between=_old_form)
        _check(kind, meta, sent)
        assert meta["sync_members_before"] == (3 if kind == "companies" else 4), meta
        hashes = _hashes(name)
        assert hashes and all(h.startswith("n:") for h in hashes), hashes
