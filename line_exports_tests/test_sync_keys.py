"""What a sync key is: the member's identity only, every other field a sent field.

LinkedIn's DMP Segment Users API identifies a user by its ``userIds`` (hashed email, Google ad
ID, Apple IDFA); first and last name, title, company and country are matching info. So in
``diff`` / ``mirror`` a renamed member is an update (never a removal), and one email under two
name spellings is one key (a ``duplicate``). Real exports (DuckDB -> Dagster -> HTTP to the
sandbox), one ledger across the runs of a test (VERIFY-18a N1). Also ``plan`` of a mirror task
whose result is empty (N6), and the account behind the connection as part of the target (N4).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from line_exports.destinations import linkedin
from line_exports.destinations.maac import MaacDestination
from line_exports.sandbox import Sandbox, SandboxServer
from line_exports.sandbox import line_messaging as line_box
from line_exports.sandbox import maac as maac_box
from line_exports.sync import EMPTY_RESULT_REASON, SyncSpec
from line_exports_tests.cli_helpers import line_exports, workflow_folder
from line_exports_tests.test_linkedin import failure_text
from line_exports_tests.test_sync import (
    linkedin_run,
    maac_run,
    meta_of,
    push_query,
    push_run,
    segment_members,
)

CONTACTS = 10


def contacts(first: str = "Ann", extra: str = "") -> str:
    """CONTACTS users by email; user0's first name is ``first``; ``extra``: SQL rows appended."""
    query = (
        "select 'user' || range || '@example.com' as email, "
        f"case when range = 0 then '{first}' else 'Bob' end as first_name, "
        "'Lee' as last_name from range(10)"
    )
    return f"{query} {extra}"


def holds_user0(members: set[tuple[Any, ...]]) -> bool:
    digest = hashlib.sha256(b"user0@example.com").hexdigest()
    return any(digest in str(member) for member in members)


def test_linkedin_mirror_renamed_member_is_an_update(sandbox_server: SandboxServer) -> None:
    day1 = linkedin_run(sandbox_server, contacts("Ann"), "mirror")
    assert day1.success, failure_text(day1)
    day2 = linkedin_run(sandbox_server, contacts("Anna"), "mirror")
    assert day2.success, failure_text(day2)
    meta = meta_of(day2, "li_sync")
    assert (meta["rows_added"], meta["rows_updated"], meta["rows_unchanged"]) == (0, 1, 9)
    assert (meta["rows_sent"], meta["members_removed"]) == (1, 0)
    members = segment_members(sandbox_server.sandbox)
    assert len(members) == CONTACTS and holds_user0(members)


def test_linkedin_one_email_under_two_spellings_is_one_key(
    sandbox_server: SandboxServer,
) -> None:
    """user0 again as 'ANN' is a duplicate of its first row; dropping that row removes no one.
    Users with no ID are keyed by their matching info: the same name twice is a duplicate,
    another name another member."""
    names_only = (
        "union all select null, 'ANN', 'Lee' union all select null, 'Cy', 'Doe' "
        "union all select null, 'Cy', 'Doe' union all select null, 'Di', 'Doe'"
    )
    day1 = linkedin_run(sandbox_server, contacts("Ann", names_only), "mirror")
    assert day1.success, failure_text(day1)
    meta = meta_of(day1, "li_sync")
    assert (meta["rows_read"], meta["rows_duplicate"], meta["rows_sent"]) == (14, 1, 13)
    day1b = linkedin_run(
        sandbox_server,
        contacts("Ann", "union all select 'user0@example.com', 'ANN', 'Lee' " + names_only),
        "mirror",
    )
    meta = meta_of(day1b, "li_sync")
    assert (meta["rows_duplicate"], meta["rows_sent"], meta["rows_unchanged"]) == (2, 0, 13)
    day2 = linkedin_run(sandbox_server, contacts("Ann", names_only), "mirror")
    meta = meta_of(day2, "li_sync")
    assert (meta["rows_sent"], meta["members_removed"]) == (0, 0)
    assert holds_user0(segment_members(sandbox_server.sandbox))


def test_linkedin_store_of_an_earlier_version_is_adopted(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store written under the earlier key (IDs and names) and name is rekeyed on the first
    run: not a new baseline, the renamed member an update, nobody removed."""
    current = linkedin.LinkedInDestination.sync_spec

    def earlier(self: linkedin.LinkedInDestination, settings: Any) -> SyncSpec | None:
        spec = current(self, settings)
        assert spec is not None and spec.legacy_target is not None
        return SyncSpec(
            linkedin.USER_KEY_V1, modes=spec.modes, removal=spec.removal, target=spec.legacy_target
        )

    with monkeypatch.context() as patch:
        patch.setattr(linkedin.LinkedInDestination, "sync_spec", earlier)
        day1 = linkedin_run(sandbox_server, contacts("Ann"), "mirror")
    assert day1.success, failure_text(day1)
    day2 = linkedin_run(sandbox_server, contacts("Anna"), "mirror")
    assert day2.success, failure_text(day2)
    meta = meta_of(day2, "li_sync")
    assert meta["sync_baseline"] is False and meta["sync_members_before"] == CONTACTS
    assert (meta["rows_updated"], meta["rows_unchanged"], meta["members_removed"]) == (1, 9, 0)
    assert len(segment_members(sandbox_server.sandbox)) == CONTACTS


def test_plan_of_a_mirror_task_with_an_empty_result(
    sandbox_server: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``line-exports plan`` says what the run's check says: nothing removed, check failed
    (VERIFY-18a N6), with the ``would remove`` column."""
    monkeypatch.setenv("LINE_EXPORTS_SANDBOX_URL", sandbox_server.url)
    settings = {"ad_account_id": "512345678", "segment_name": "empty", "sync_mode": "mirror"}
    dig = (
        "timezone: UTC\n\n+send:\n  td>: queries/none.sql\n"
        "  result_connection: linkedin_sample\n  result_settings:\n"
        + "".join(f"    {k}: {v}\n" for k, v in settings.items())
    )
    query = "select 'a@example.com' as email from range(0)\n"
    folder = workflow_folder(tmp_path, {"none": dig}, {"none.sql": query})
    plan = line_exports("plan", "--workflows", str(folder), "--preview", "0")
    assert "none/send: read 0, valid 0, rejected 0" in plan.out, plan.out
    assert f"warning: check sync_removals would fail: {EMPTY_RESULT_REASON}" in plan.out
    assert "would remove" in plan.out


# -- The account behind the connection is part of the target (VERIFY-18a N4) -------------------
def tagged(server: SandboxServer) -> int:
    """MAAC members carrying the export's tag ``sync`` in this sandbox (one MAAC account)."""
    store = maac_box.store_of(server.sandbox)
    with server.sandbox.lock:
        return sum("sync" in m["tags"] for m in store.members.values())


def uids(count: int) -> str:
    return f"select 'U' || lpad(printf('%x', range), 32, '0') as line_uid from range({count})"


def test_maac_another_account_gets_every_row_and_switching_back_keeps_state(
    sandbox_server: SandboxServer,
) -> None:
    """Two sandboxes are two MAAC accounts (another connection): the second starts empty and
    gets all 10 members; back on the first, its state is used (1 departed, untagged there)."""
    first = sandbox_server
    with SandboxServer(Sandbox(rate_scale=100, job_seconds=0.05)) as second:
        assert maac_run(first.url, uids(10)).success
        switched = maac_run(second.url, uids(10))
        meta = meta_of(switched, "maac_sync")
        assert (meta["rows_sent"], meta["sync_baseline"], tagged(second)) == (10, True, 10)
        back = maac_run(first.url, uids(9))
        meta = meta_of(back, "maac_sync")
        assert (meta["rows_sent"], meta["rows_unchanged"], meta["members_removed"]) == (0, 9, 1)
        assert (tagged(first), tagged(second)) == (9, 10)


def test_maac_store_without_the_account_is_adopted(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store named without the account (an earlier version) is taken over by the first run:
    no new baseline, nothing sent again."""
    with monkeypatch.context() as patch:
        patch.setattr(MaacDestination, "sync_account", lambda *_: "")
        assert maac_run(sandbox_server.url, uids(10)).success
    meta = meta_of(maac_run(sandbox_server.url, uids(10)), "maac_sync")
    assert (meta["rows_sent"], meta["rows_unchanged"], meta["sync_baseline"]) == (0, 10, False)


def test_push_diff_on_another_channel_sends_every_coupon(sandbox_server: SandboxServer) -> None:
    """Another LINE channel (its bot's userId from GET /v2/bot/info) is another target: its
    recipients get the coupons; back on the first channel nothing is sent again."""
    with SandboxServer(Sandbox(rate_scale=100, job_seconds=0.05)) as second:
        query = push_query(5, "C")
        assert push_run(sandbox_server, query).success
        meta = meta_of(push_run(second, query), "push_sync")
        assert (meta["rows_sent"], meta["rows_added"]) == (5, 5)
        assert len(line_box.store_of(second.sandbox).inbox) == 5
        meta = meta_of(push_run(sandbox_server, query), "push_sync")
        assert (meta["rows_sent"], meta["rows_unchanged"]) == (0, 5)
