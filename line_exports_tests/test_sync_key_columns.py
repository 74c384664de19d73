"""Every column subset a destination accepts keys each row apart, stably (issue 18, M1).

LinkedIn accepts a users query with any of ``email`` / ``google_aid`` / ``apple_idfa``, or with
``first_name`` + ``last_name`` alone (matched by name, company, title and country), and a
companies query with any of its three columns. For each such subset: day 1 (mirror baseline),
day 2 with one row changed and one gone, day 3 unchanged. Day 2 must send only the changed row
and REMOVE only who left: a changed sent field is an ADD (an update) of the same member; a
change of what identifies the member (a name-only user's matching info, a company's name or
domain) is another member, so its old version is removed too (unless it still shares a name
or a domain with a current row: forgotten, never REMOVEd, kept_alike). The sandbox is the oracle: after
day 2 the segment holds exactly what an ``append`` of day 2's rows builds in a fresh segment.
Real exports (DuckDB -> Dagster -> HTTP to the sandbox), one ledger across a test's runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pytest

from line_exports.destinations import linkedin
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.linkedin import store_of
from line_exports.sync import SyncSpec
from line_exports_tests.test_linkedin import failure_text
from line_exports_tests.test_sync import linkedin_run, meta_of

ROWS = 10
CHANGED, GONE = 1, 2
"""Day 2: row 1 has a changed column, row 2 left the result."""

VALUES = {
    "email": "'user' || range || '@example.com'",
    "google_aid": "lpad(printf('%x', range), 8, '0') || '-0000-4000-8000-000000000000'",
    "apple_idfa": "lpad(printf('%X', range), 8, '0') || '-0000-4000-8000-00000000000A'",
    "first_name": "'First' || range",
    "last_name": "'Lee'",
    "company": "'Acme'",
    "title": "'Engineer'",
    "country": "'US'",
    "company_name": "'Company ' || range",
    "company_website_domain": "'site' || range || '.example.com'",
    "company_email_domain": "'mail' || range || '.example.com'",
}
CHANGED_TO = {
    "first_name": "'Firstly'",
    "last_name": "'Lea'",
    "title": "'Lead'",
    "country": "'JP'",
    "company_name": "'Company renamed'",
    "company_website_domain": "'renamed.example.com'",
}


@dataclass(frozen=True)
class Subset:
    """A query's columns, the one changed on day 2 and whether that is an update of the same
    member (a sent field) or another member (part of what identifies it)."""

    audience: str
    columns: tuple[str, ...]
    changed: str
    same_member: bool
    null_email_on_even: bool = False
    kept_alike: bool = False
    """The old version still shares a name or a domain with the changed row (a company), or its
    first and last name (a name-only user): LinkedIn may take them for one member, so it is
    forgotten, not removed (README, LinkedIn section)."""

    @property
    def id(self) -> str:
        return (
            f"{self.audience}:"
            + "+".join(self.columns)
            + ("/half-no-email" * self.null_email_on_even)
        )


SUBSETS = [
    # No ID column at all: LinkedIn matches these users by name (the M1 regression).
    Subset("users", ("first_name", "last_name"), "last_name", same_member=False),
    Subset(
        "users",
        ("first_name", "last_name", "company", "title", "country"),
        "title",
        same_member=False,
        kept_alike=True,  # the same first and last name: maybe the same user (VERIFY-13r R2)
    ),
    Subset("users", ("email", "title"), "title", same_member=True),
    Subset("users", ("google_aid", "country"), "country", same_member=True),
    Subset("users", ("apple_idfa", "first_name", "last_name"), "first_name", same_member=True),
    Subset(
        "users",
        (
            "email",
            "google_aid",
            "apple_idfa",
            "first_name",
            "last_name",
            "company",
            "title",
            "country",
        ),
        "title",
        same_member=True,
    ),
    # Half the rows without an email: those are keyed by name (row 2, the one that leaves).
    Subset(
        "users",
        ("email", "first_name", "last_name"),
        "first_name",
        same_member=True,
        null_email_on_even=True,
    ),
    Subset("companies", ("company_name",), "company_name", same_member=False),
    Subset("companies", ("company_website_domain",), "company_website_domain", same_member=False),
    Subset(
        "companies",
        ("company_name", "company_website_domain", "company_email_domain"),
        "company_website_domain",
        same_member=False,
        kept_alike=True,
    ),
]


def query(subset: Subset, day: int) -> str:
    """The subset's ``ROWS`` rows; on day 2 row ``CHANGED`` changed and row ``GONE`` gone."""
    parts = []
    for column in subset.columns:
        value = VALUES[column]
        if day > 1 and column == subset.changed:
            value = f"case when range = {CHANGED} then {CHANGED_TO[column]} else {value} end"
        if column == "email" and subset.null_email_on_even:
            value = f"case when range % 2 = 0 then null else {value} end"
        parts.append(f"{value} as {column}")
    where = f"where range <> {GONE}" if day > 1 else ""
    return f"select {', '.join(parts)} from range({ROWS}) {where}"


def members(server: SandboxServer, name: str) -> set[tuple[Any, ...]]:
    [segment] = [s for s in store_of(server.sandbox).segments.values() if s.name == name]
    return set(segment.members)


def elements(server: SandboxServer) -> int:
    return store_of(server.sandbox).elements_received


def run(server: SandboxServer, subset: Subset, day: int, mode: str = "mirror", **settings: Any):  # type: ignore[no-untyped-def]
    result = linkedin_run(
        server, query(subset, day), mode, audience_type=subset.audience, **settings
    )
    assert result.success, failure_text(result)
    return result


@pytest.mark.parametrize("subset", SUBSETS, ids=lambda s: s.id)
def test_day2_sends_only_the_changed_row_and_removes_who_left(
    sandbox_server: SandboxServer, subset: Subset
) -> None:
    day1 = meta_of(run(sandbox_server, subset, 1), "li_sync")
    assert (day1["rows_added"], day1["rows_accepted"], day1["sync_baseline"]) == (ROWS, ROWS, True)
    held = members(sandbox_server, "sync seg")
    assert len(held) == ROWS  # every row is its own member at LinkedIn too

    before = elements(sandbox_server)
    day2 = meta_of(run(sandbox_server, subset, 2), "li_sync")
    # who left, and the old version of a new member unless it is named alike (kept_alike)
    removed = 1 if subset.same_member or subset.kept_alike else 2
    assert (day2["rows_added"], day2["rows_updated"], day2["rows_unchanged"]) == (
        0 if subset.same_member else 1,
        1 if subset.same_member else 0,
        ROWS - 2,
    )
    assert (day2["rows_sent"], day2["members_removed"], day2["sync_members_before"]) == (
        1,
        removed,
        ROWS,
    )
    assert elements(sandbox_server) - before == 1 + removed  # one ADD, the REMOVEs
    run(sandbox_server, subset, 2, "append", segment_name="oracle")
    kept = members(sandbox_server, "sync seg") - members(sandbox_server, "oracle")
    assert len(kept) == subset.kept_alike  # the old version named alike stays, nothing else
    assert members(sandbox_server, "oracle") <= members(sandbox_server, "sync seg")
    assert len(members(sandbox_server, "sync seg")) == ROWS - 1 + subset.kept_alike

    before = elements(sandbox_server)
    day3 = meta_of(run(sandbox_server, subset, 2), "li_sync")
    assert (day3["rows_sent"], day3["rows_unchanged"], day3["members_removed"]) == (
        0,
        ROWS - 1,
        0,
    )
    assert elements(sandbox_server) == before


def test_a_row_with_no_key_is_rejected_not_merged(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key definition that cannot key a row (here LinkedIn's users key without its name
    fallback, given a names-only query) rejects the row, naming why, instead of giving every
    such row one shared key: nothing is sent or recorded for them, and the counts add up."""
    current = linkedin.LinkedInDestination.sync_spec

    def ids_only(self: linkedin.LinkedInDestination, settings: Any) -> SyncSpec | None:
        spec = current(self, settings)
        assert spec is not None
        return SyncSpec(spec.key_columns, modes=spec.modes, target=spec.target)

    monkeypatch.setattr(linkedin.LinkedInDestination, "sync_spec", ids_only)
    names_only = SUBSETS[0]
    result = run(sandbox_server, names_only, 1, "diff")
    meta = meta_of(result, "li_sync")
    assert (meta["rows_read"], meta["rows_rejected"], meta["rows_sent"]) == (ROWS, ROWS, 0)
    assert meta["rejects_by_rule"] == {"email+google_aid+apple_idfa: sync_key": ROWS}
    assert meta["rows_accepted"] == meta["rows_unsent"] == 0
    again = meta_of(run(sandbox_server, names_only, 1, "diff"), "li_sync")
    assert (again["rows_rejected"], again["rows_sent"], again["sync_members_before"]) == (
        ROWS,
        0,
        0,
    )


def test_a_member_recorded_without_a_key_is_forgotten_not_removed(
    sandbox_server: SandboxServer,
) -> None:
    """A store written while names-only rows all got the key of no value (the M1 regression:
    one member, ident ``{}``) heals: that member is dropped from the store when the run
    commits, never sent as a REMOVE of nothing, and not counted as a member."""
    import sqlalchemy as sa

    from line_exports.ledger import Ledger
    from line_exports.sync_store import SyncStore

    names_only = SUBSETS[0]
    run(sandbox_server, names_only, 1)
    ledger = Ledger()
    try:
        with ledger.engine.connect() as con:
            [name] = con.execute(sa.text("select distinct export from sync_members")).scalars()
        store = SyncStore(ledger, name)
        merged = hashlib.md5(b"{}").hexdigest()  # md5('' || '{}'): the shared key
        store.put(pa.table({"key": [merged], "hash": ["h"], "ident": ["{}"]}), "accepted")
    finally:
        ledger.close()
    before = elements(sandbox_server)
    day2 = meta_of(run(sandbox_server, names_only, 1), "li_sync")
    assert (day2["sync_members_before"], day2["members_removed"], day2["rows_sent"]) == (
        ROWS,
        0,
        0,
    )
    assert day2.get("members_not_removed", 0) == 0 and elements(sandbox_server) == before
    ledger = Ledger()
    try:
        assert merged not in SyncStore(ledger, name).load().column("key").to_pylist()
    finally:
        ledger.close()


def test_a_query_that_drops_its_id_column_still_removes_who_it_sent_by_id(
    sandbox_server: SandboxServer,
) -> None:
    """Day 1 sends users by email (and name); day 2's query has no email column, so its rows are
    other members (keyed by name). Mirror (ratio allowing) removes day 1's members with the
    email they were recorded with, not an element of nothing LinkedIn would refuse: the segment
    ends with exactly day 2's members."""
    by_email = Subset("users", ("email", "first_name", "last_name"), "title", same_member=True)
    names = Subset("users", ("first_name", "last_name"), "title", same_member=False)
    run(sandbox_server, by_email, 1)
    day2 = meta_of(run(sandbox_server, names, 1, max_remove_ratio=1.0), "li_sync")
    assert (day2["rows_added"], day2["members_removed"]) == (ROWS, ROWS)
    assert day2.get("members_not_removed", 0) == 0
    run(sandbox_server, names, 1, "append", segment_name="oracle")
    assert members(sandbox_server, "sync seg") == members(sandbox_server, "oracle")
