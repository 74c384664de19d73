"""sync_mode diff / mirror: day 1 baseline, day 2 sends only the churn and removes who left.

Real exports (DuckDB -> Dagster -> HTTP to the sandbox), one ledger file across runs, and the
sandbox as the oracle of what each destination holds.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from line_exports import LineConversionResource, LineMessagingResource, SqlSource, build_export
from line_exports.sandbox import Sandbox, SandboxServer
from line_exports.sandbox import line_conversion as capi_box
from line_exports.sandbox import line_messaging as line_box
from line_exports.sandbox.linkedin import store_of as linkedin_store
from line_exports.sync import SYNC_CHECK
from line_exports_tests.cli_helpers import line_exports, workflow_folder
from line_exports_tests.run_instance import run_instance
from line_exports_tests.test_linkedin import ACCOUNT, FAST, failure_text, resource

MEMBERS = 1_000  # 1% = 10 rows changed and 10 gone on day 2


def contacts(day: int, gone_every: int = 100, members: int = MEMBERS) -> str:
    """Day 1: every member; day 2: ``range % 100 == 1`` changed title, ``== 2`` gone."""
    title = "case when range % 100 = 1 then 'Lead' else 'Engineer' end" if day > 1 else "'Engineer'"
    where = f"where range % {gone_every} <> 2" if day > 1 else ""
    return (
        f"select 'user' || range || '@example.com' as email, {title} as title "
        f"from range({members}) {where}"
    )


def email_key(n: int) -> tuple[str, tuple[str, str]]:
    """A member as the sandbox holds it."""
    return ("ids", ("SHA256_EMAIL", hashlib.sha256(f"user{n}@example.com".encode()).hexdigest()))


def linkedin_run(
    server: SandboxServer, query: str, mode: str, **settings: Any
) -> dg.ExecuteInProcessResult:
    values = {
        "ad_account_id": ACCOUNT,
        "segment_name": "sync seg",
        "sync_mode": mode,
        **FAST,
        **settings,
    }
    asset = build_export(
        "li_sync", destination="linkedin", query=query, settings=values, retry_policy=None
    )
    return dg.materialize(
        [asset],
        resources={"linkedin": resource(server), "sql_source": SqlSource()},
        raise_on_error=False,
        instance=run_instance(),
    )


def meta_of(result: dg.ExecuteInProcessResult, node: str) -> dict[str, Any]:
    [event] = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in event.metadata.items()}


def sync_check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    [evaluation] = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and e.asset_check_evaluation_data.check_name == SYNC_CHECK
    ]
    return evaluation


def segment_members(sandbox: Sandbox) -> set[tuple[Any, ...]]:
    [segment] = [s for s in linkedin_store(sandbox).segments.values() if s.name == "sync seg"]
    return segment.members


def elements(sandbox: Sandbox) -> int:
    return linkedin_store(sandbox).elements_received


# -- LinkedIn ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["diff", "mirror"])
def test_linkedin_day2_sends_only_the_churn(sandbox_server: SandboxServer, mode: str) -> None:
    sandbox = sandbox_server.sandbox
    day1 = linkedin_run(sandbox_server, contacts(1), mode)
    assert day1.success, failure_text(day1)
    meta = meta_of(day1, "li_sync")
    assert (meta["rows_added"], meta["rows_unchanged"], meta["rows_accepted"]) == (
        MEMBERS,
        0,
        MEMBERS,
    )
    assert len(segment_members(sandbox)) == MEMBERS
    if mode == "mirror":
        assert meta["sync_baseline"] is True and meta["members_removed"] == 0

    before = elements(sandbox)
    day2 = linkedin_run(sandbox_server, contacts(2), mode)
    assert day2.success, failure_text(day2)
    meta = meta_of(day2, "li_sync")
    assert meta["rows_read"] == MEMBERS - 10
    assert (meta["rows_added"], meta["rows_updated"], meta["rows_unchanged"]) == (
        0,
        10,
        MEMBERS - 20,
    )
    assert meta["rows_sent"] == 10
    # Four counts still add up: unchanged rows are accepted (by an earlier run), not unsent.
    assert meta["rows_accepted"] == MEMBERS - 10 and meta["rows_unsent"] == 0
    held = segment_members(sandbox)
    gone = {email_key(n) for n in range(MEMBERS) if n % 100 == 2}
    if mode == "diff":
        assert elements(sandbox) - before == 10  # the 10 changed members only
        assert gone <= held
    else:
        assert elements(sandbox) - before == 20  # 10 changed + 10 REMOVE elements
        assert meta["members_removed"] == 10 and meta["sync_baseline"] is False
        assert not gone & held and len(held) == MEMBERS - 10
        assert sync_check(day2).passed

    # Nothing changed since: a third run sends nothing at all.
    before, requests = elements(sandbox), len(sandbox.requests)
    day3 = linkedin_run(sandbox_server, contacts(2), mode)
    assert day3.success, failure_text(day3)
    assert elements(sandbox) == before and len(sandbox.requests) == requests  # no request at all
    assert meta_of(day3, "li_sync")["rows_sent"] == 0


def test_a_new_target_is_a_new_baseline_and_removals_reach_the_old_one_only(
    sandbox_server: SandboxServer,
) -> None:
    def sizes() -> dict[str, int]:
        return {
            s.name: len(s.members) for s in linkedin_store(sandbox_server.sandbox).segments.values()
        }

    query = contacts(1, members=20)
    assert linkedin_run(sandbox_server, query, "diff", segment_name="seg A").success
    renamed = linkedin_run(sandbox_server, query, "diff", segment_name="seg B")
    assert meta_of(renamed, "li_sync")["rows_sent"] == 20  # a new segment gets every row
    assert sizes() == {"seg A": 20, "seg B": 20}
    fewer = "select * from (" + query + ") where email <> 'user3@example.com'"
    assert linkedin_run(sandbox_server, query, "mirror", segment_name="seg A").success
    removed = linkedin_run(sandbox_server, fewer, "mirror", segment_name="seg A")
    assert meta_of(removed, "li_sync")["members_removed"] == 1
    assert sizes() == {"seg A": 19, "seg B": 20}  # the member left seg A, where it was


def test_linkedin_mirror_refuses_to_remove_everyone(sandbox_server: SandboxServer) -> None:
    """An empty result, or over max_remove_ratio, removes nothing and fails sync_removals."""
    sandbox = sandbox_server.sandbox
    for _ in range(2):  # a baseline, then a first run that could remove
        assert linkedin_run(sandbox_server, contacts(1, members=200), "mirror").success
    before = elements(sandbox)

    empty = linkedin_run(sandbox_server, contacts(1, members=0), "mirror")
    assert empty.success, failure_text(empty)
    check = sync_check(empty)
    assert not check.passed and "empty" in str(check.metadata["reason"].value)

    over = linkedin_run(sandbox_server, contacts(2, gone_every=4, members=200), "mirror")
    assert over.success, failure_text(over)
    check = sync_check(over)
    assert not check.passed
    assert "50 of 200 members would be removed" in str(check.metadata["reason"].value)
    assert meta_of(over, "li_sync")["members_removed"] == 0
    assert elements(sandbox) == before + 2  # the 2 changed titles (range % 100 == 1), no removal
    assert len(segment_members(sandbox)) == 200

    # A higher max_remove_ratio lets the same run through.
    allowed = linkedin_run(
        sandbox_server, contacts(2, gone_every=4, members=200), "mirror", max_remove_ratio=0.5
    )
    assert allowed.success and sync_check(allowed).passed
    assert len(segment_members(sandbox)) == 150


def test_sync_mode_a_destination_cannot_do_fails_when_defined() -> None:
    with pytest.raises(ValueError, match="sync_mode 'mirror' is not supported by LINE Conversion"):
        build_export(
            "capi",
            destination="line_conversion",
            query="select 1 as x",
            settings={"sync_mode": "mirror"},
        )


# -- CAPI: events already accepted are skipped ------------------------------------------------
TAG = "sync-tag"


def capi_query(count: int) -> str:
    return (
        "select 'dedup-' || range as deduplication_key, 'conversion' as event_type, "
        "'web' as source_type, cast(epoch(current_date) as bigint) - range as event_timestamp, "
        "'ext-' || range as external_id "
        f"from range({count})"
    )


def capi_run(server: SandboxServer, query: str) -> dg.ExecuteInProcessResult:
    asset = build_export(
        "capi_sync",
        destination="line_conversion",
        query=query,
        settings={"sync_mode": "diff", **FAST},
    )
    res = LineConversionResource(line_tag_id=TAG, base_url=server.url)
    return dg.materialize(
        [asset],
        resources={"line_conversion": res, "sql_source": SqlSource()},
        raise_on_error=False,
        instance=run_instance(),
    )


def test_capi_diff_skips_events_already_accepted(sandbox_server: SandboxServer) -> None:
    sandbox = sandbox_server.sandbox
    first = capi_run(sandbox_server, capi_query(300))
    assert first.success, failure_text(first)
    assert len(capi_box.events_of(sandbox, TAG)) == 300
    posts = sandbox.count("POST", "/v1/")
    second = capi_run(sandbox_server, capi_query(303))  # 3 new events
    assert second.success, failure_text(second)
    meta = meta_of(second, "capi_sync")
    assert (meta["rows_sent"], meta["rows_unchanged"], meta["rows_accepted"]) == (3, 300, 303)
    assert sandbox.count("POST", "/v1/") - posts == 1
    assert len(capi_box.events_of(sandbox, TAG)) == 303


# -- push: a (campaign, recipient) pair is sent once across runs ------------------------------
def push_run(server: SandboxServer, query: str, campaign: str = "") -> dg.ExecuteInProcessResult:
    template = '{"type": "text", "text": "coupon {{code}}"}'
    asset = build_export(
        "push_sync",
        destination="line_messaging",
        query=query,
        settings={
            "target": "push_message",
            "template_message": template,
            "sync_mode": "diff",
            "campaign_key": campaign,
            **FAST,
        },
    )
    res = LineMessagingResource(base_url=server.url, poll_seconds=0.05)
    return dg.materialize(
        [asset],
        resources={"line_messaging": res, "sql_source": SqlSource()},
        raise_on_error=False,
        instance=run_instance(),
    )


def push_query(count: int, code: str) -> str:
    return (
        f"select 'U' || lpad(printf('%x', range), 32, '0') as id, '{code}' || range as code "
        f"from range({count})"
    )


def test_push_diff_sends_a_campaign_once_per_recipient(sandbox_server: SandboxServer) -> None:
    """A (campaign, recipient) pair is sent once; a push LINE refused with a 400 (a user not in
    the channel: permanent) is not sent again until the row changes."""
    sandbox = sandbox_server.sandbox
    inbox = line_box.store_of(sandbox).inbox
    unknown = {f"U{n:032x}" for n in (3, 4)}
    with sandbox.lock:
        line_box.store_of(sandbox).unknown_users.update(unknown)
    day1 = push_run(sandbox_server, push_query(20, "A"))
    meta = meta_of(day1, "push_sync")
    assert (meta["rows_refused_permanent"], meta["rows_refused_transient"]) == (2, 0)
    assert sum(len(v) for v in inbox.values()) == 18
    with sandbox.lock:
        line_box.store_of(sandbox).unknown_users.clear()
    same = push_run(sandbox_server, push_query(20, "A"))  # nothing new, nothing changed
    meta = meta_of(same, "push_sync")
    assert (meta["rows_sent"], meta["rows_refused_earlier"], meta["rows_accepted"]) == (0, 2, 18)
    assert "Failed to send messages" in next(iter(meta["refusals_by_answer"]))
    # Day 2: 2 new recipients; yesterday's 18 do not get the coupon again, even with new codes;
    # the 2 refused rows changed (their code): sent again.
    again = push_run(sandbox_server, push_query(22, "B"))
    assert again.success, failure_text(again)
    meta = meta_of(again, "push_sync")
    assert (meta["rows_sent"], meta["rows_added"], meta["rows_retried"]) == (4, 2, 2)
    assert sum(len(v) for v in inbox.values()) == 22
    # A new campaign key reaches everyone again.
    assert push_run(sandbox_server, push_query(22, "C"), campaign="winter").success
    assert sum(len(v) for v in inbox.values()) == 44


# -- plan: adds, updates and removes before anything is sent ----------------------------------
def test_plan_lists_adds_updates_and_removes(sandbox_server: SandboxServer, tmp_path: Path) -> None:
    """Two runs of the workflow's task (a baseline, then mirror), then ``line-exports plan``
    on day 2's query: counts and a sample of each, and nothing sent."""
    sandbox = sandbox_server.sandbox
    values = {"ad_account_id": ACCOUNT, "segment_name": "sync seg", "sync_mode": "mirror"}
    for _ in range(2):
        asset = build_export(
            "audience",
            destination="linkedin",
            query=contacts(1, members=200),
            settings={**values, **FAST},
            key_prefix="weekly",
        )
        done = dg.materialize(
            [asset],
            resources={"linkedin": resource(sandbox_server), "sql_source": SqlSource()},
            instance=run_instance(),
        )
        assert done.success
    dig = (
        "timezone: UTC\n\n+audience:\n  td>: queries/day2.sql\n"
        "  result_connection: linkedin_sample\n  result_settings:\n"
        + "".join(f"    {k}: {v}\n" for k, v in values.items())
    )
    folder = workflow_folder(
        tmp_path, {"weekly": dig}, {"day2.sql": contacts(2, members=200) + "\n"}
    )
    requests = len(sandbox.requests)
    plan = line_exports("plan", "--workflows", str(folder))
    assert plan.code == 0, plan.text
    assert "sync mirror: 0 to add, 2 to update, 0 to retry, 196 unchanged, 2 to remove" in plan.out
    assert "update (first 2):" in plan.out and "Lead" in plan.out
    assert "remove (first 2):" in plan.out
    assert "valid rows (first 3 of 198):" in plan.out  # the generic preview, labelled
    # The table's totals are the sync plan's: 2 updates sent, 2 removals apart (not 198 rows).
    [row] = [line.split() for line in plan.out.splitlines() if line.startswith("weekly/audience ")]
    assert row[-5:] == ["198", "198", "0", "2", "2"], plan.out
    assert "would send  would remove" in plan.out
    assert len(sandbox.requests) == requests


# -- a mirror run killed mid-way, re-run for the same tick: exactly once ----------------------
TICK = {"dagster/scheduled_execution_time": "2026-06-02T09:00:00+00:00"}
KILL_MEMBERS = 200  # day 2: 2 changed (2 ADD requests), 2 gone (2 REMOVE requests)


def mirror_day2(url: str, tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
    """Day 2 of a mirror export, one element a request (also run in a child process)."""
    from line_exports import LinkedInResource
    from line_exports.sandbox.linkedin import (
        SANDBOX_CLIENT_ID,
        SANDBOX_CLIENT_SECRET,
        SANDBOX_REFRESH_TOKEN,
    )

    values = {"ad_account_id": ACCOUNT, "segment_name": "sync seg", "sync_mode": "mirror"}
    asset = build_export(
        "li_sync",
        destination="linkedin",
        query=contacts(2, members=KILL_MEMBERS),
        settings={**values, **FAST, "batch_size": 1},
        retry_policy=None,
    )
    res = LinkedInResource(
        client_id=SANDBOX_CLIENT_ID,
        client_secret=SANDBOX_CLIENT_SECRET,
        refresh_token=SANDBOX_REFRESH_TOKEN,
        api_url=url,
        new_segment_wait=0,
    )
    return dg.materialize(
        [asset],
        resources={"linkedin": res, "sql_source": SqlSource()},
        tags=tags or TICK,
        raise_on_error=False,
        instance=run_instance(),
    )


CHILD = """
import importlib, sys
module = importlib.import_module("line_exports_tests." + sys.argv[3])
getattr(module, sys.argv[1])(sys.argv[2])
"""


class Acted:
    """A :func:`kill_when` trigger: what the sandbox has acted on (not merely received), so
    the kill cannot race the sandbox's handling of the request whose answer is held back."""

    def __init__(self, count: Callable[[], int]) -> None:
        self.count = count

    @property
    def hits(self) -> int:
        return self.count()


def kill_when(
    rule: Any, hits: int, function: str, url: str, home: Path, module: str = "test_sync"
) -> None:
    """Run ``<module>.<function>(url)`` in a child process; SIGKILL it (its whole process
    group) once ``rule`` (a LateAnswers rule, or :class:`Acted`) has seen ``hits`` requests."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "LINE_EXPORTS_HOME": str(home), "PYTHONPATH": str(root)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, function, url, module],
        env=env,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    try:
        while rule.hits < hits:
            assert child.poll() is None, child.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, f"the child never made {hits} requests"
            time.sleep(0.005)
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)


def store_statuses(export: str) -> dict[str, int]:
    """Members per status in the sync stores of ``export`` (the test's own ledger: SQLite
    file or ``LINE_EXPORTS_LEDGER_URL``)."""
    import sqlalchemy as sa

    from line_exports.ledger import Ledger

    ledger = Ledger()
    try:
        with ledger.engine.connect() as con:
            rows = con.execute(
                sa.text(
                    "select status, count(*) from sync_members where export = :e "
                    "or export like :t group by status"
                ),
                {"e": export, "t": f"{export}@%"},  # the store of each target: export@target
            ).all()
    finally:
        ledger.close()
    return dict(rows)


def test_mirror_killed_mid_removal_then_rerun_is_exactly_once(line_exports_home: Path) -> None:
    """SIGKILL the day-2 run after LinkedIn acted on its first REMOVE (answer held back), then
    re-run the same tick: the ledger resumes the 2 ADD requests, the REMOVE whose answer was
    lost is sent again (LinkedIn answers 201 for an already removed member), each departed
    member is gone and nothing else changed; a later run sends nothing."""
    from line_exports_tests.resilience_helpers import LateAnswerServer, settle

    with LateAnswerServer(Sandbox(rate_scale=100, job_seconds=0.05)) as server:
        sandbox = server.sandbox
        day1 = linkedin_run(server, contacts(1, members=KILL_MEMBERS), "mirror")
        assert day1.success, failure_text(day1)
        server.late.add("/rest/dmpSegments/", "POST", 0.25, times=-1)
        before = elements(sandbox)
        # 2 ADDs answered, the first REMOVE acted on, its answer held back: SIGKILL.
        acted = Acted(lambda: elements(sandbox) - before)
        kill_when(acted, 3, "mirror_day2", server.url, line_exports_home)
        settle(sandbox, quiet=0.45)
        server.late.rules.clear()
        assert elements(sandbox) - before == 3
        # The killed process had recorded its 2 planned rows pending before it sent them.
        assert store_statuses("li_sync") == {"accepted": KILL_MEMBERS - 2, "pending": 2}

        rerun = mirror_day2(server.url)
        assert rerun.success, failure_text(rerun)
        meta = meta_of(rerun, "li_sync")
        assert (meta["rows_retried"], meta["rows_updated"], meta["rows_resumed"]) == (2, 0, 2)
        assert meta["members_removed"] == 2
        assert elements(sandbox) - before == 5  # the lost REMOVE again, and the second one
        expected = {email_key(n) for n in range(KILL_MEMBERS) if n % 100 != 2}
        assert segment_members(sandbox) == expected

        later = mirror_day2(
            server.url, tags={"dagster/scheduled_execution_time": "2026-06-03T09:00:00+00:00"}
        )
        assert later.success and meta_of(later, "li_sync")["rows_sent"] == 0
        assert elements(sandbox) - before == 5


# -- MAAC: tags this export attached are removed from departed members ------------------------
def maac_query(day: int, members: int = 500) -> str:
    name = (
        "case when range % 100 = 1 then 'renamed ' else 'member ' end" if day > 1 else "'member '"
    )
    where = "where range % 100 <> 2" if day > 1 else ""
    return (
        "select 'U' || lpad(printf('%x', range), 32, '0') as line_uid, "
        f"{name} || range as display_name, "
        "case when range % 2 = 0 then 'even' end as tags "
        f"from range({members}) {where}"
    )


def maac_run(url: str, query: str, tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
    from line_exports import MaacResource

    asset = build_export(
        "maac_sync",
        destination="maac",
        query=query,
        settings={
            "data_object": "members",
            "import_key": "line_uid",
            "tags": "sync",
            "sync_mode": "mirror",
            **FAST,
        },
    )
    return dg.materialize(
        [asset],
        resources={
            "maac": MaacResource(base_url=url, poll_seconds=0.05),
            "sql_source": SqlSource(),
        },
        tags=tags,
        raise_on_error=False,
        instance=run_instance(),
    )


def maac_day2(url: str) -> dg.ExecuteInProcessResult:
    """Day 2 of the MAAC mirror export of 200 members for the tick TICK (also in a child)."""
    return maac_run(url, maac_query(2, members=200), TICK)


def test_maac_mirror_untags_departed_members(sandbox_server: SandboxServer) -> None:
    from line_exports.sandbox.maac import store_of

    sandbox = sandbox_server.sandbox
    store = store_of(sandbox)
    assert maac_run(sandbox_server.url, maac_query(1)).success
    imports = sandbox.count("POST", "/openapi/v1/member/import/")
    day2 = maac_run(sandbox_server.url, maac_query(2))
    assert day2.success, failure_text(day2)
    meta = meta_of(day2, "maac_sync")
    assert (meta["rows_sent"], meta["rows_updated"], meta["members_removed"]) == (5, 5, 5)
    # 5 departed (2, 102, ... 402): each had "sync" (the setting) and "even" (its own tags).
    gone = {f"U{n:032x}" for n in range(500) if n % 100 == 2}
    assert meta["tags_removed"] == 10
    assert sandbox.count("DELETE", "/openapi/v1/taglinemember/") == 10
    assert sandbox.count("POST", "/openapi/v1/member/import/") - imports == 1
    with sandbox.lock:
        tags = {m["line_uid"]: set(m["tags"]) for m in store.members.values()}
    assert all(tags[uid] == set() for uid in gone)
    assert tags[f"U{4:032x}"] == {"sync", "even"} and tags[f"U{1:032x}"] == {"sync"}


def test_maac_untag_killed_then_rerun_is_exactly_once(line_exports_home: Path) -> None:
    """SIGKILL the day-2 run after MAAC acted on its second untag call (its answer held back;
    the first was answered and recorded). The re-run of the same tick resumes the import and
    the first untag, reads the members (the lost one's tag is gone: not called again) and makes
    the two calls left; the departed members hold none of the export's tags, the others keep
    theirs."""
    from line_exports.sandbox.maac import store_of
    from line_exports_tests.resilience_helpers import LateAnswerServer, settle

    with LateAnswerServer(Sandbox(rate_scale=100, job_seconds=0.05)) as server:
        sandbox = server.sandbox
        store = store_of(sandbox)
        assert maac_run(server.url, maac_query(1, members=200)).success
        imports = sandbox.count("POST", "/openapi/v1/member/import/")
        server.late.add("/openapi/v1/taglinemember/", "DELETE", 0.25, times=-1)
        kill_when(Acted(lambda: store.tag_removals), 2, "maac_day2", server.url, line_exports_home)
        settle(sandbox, quiet=0.45)
        server.late.rules.clear()
        assert store.tag_removals == 2
        assert sandbox.count("POST", "/openapi/v1/member/import/") - imports == 1

        rerun = maac_day2(server.url)
        assert rerun.success, failure_text(rerun)
        meta = meta_of(rerun, "maac_sync")
        assert (meta["rows_retried"], meta["rows_resumed"], meta["members_removed"]) == (2, 2, 2)
        assert meta["tags_removed"] == 2  # the 2 never made (the lost one took effect)
        assert store.tag_removals == 4
        reads = sandbox.count("GET", "/openapi/v1/member/") - sandbox.count(
            "GET", "/openapi/v1/member/import/"
        )
        assert reads == 1 + 2  # the member list: the killed run, then once per member left
        assert sandbox.count("POST", "/openapi/v1/member/import/") - imports == 1
        with sandbox.lock:
            tags = {m["line_uid"]: set(m["tags"]) for m in store.members.values()}
        # 2 and 102 left (even: "sync" and "even"); the rest keep exactly what was sent.
        expected = {
            f"U{n:032x}": set() if n % 100 == 2 else {"sync", "even"} if n % 2 == 0 else {"sync"}
            for n in range(200)
        }
        assert tags == expected

        later = maac_run(
            server.url,
            maac_query(2, members=200),
            {"dagster/scheduled_execution_time": "2026-06-03T09:00:00+00:00"},
        )
        assert later.success and meta_of(later, "maac_sync")["rows_sent"] == 0
        assert store.tag_removals == 4
        assert sandbox.count("POST", "/openapi/v1/member/import/") - imports == 1


# -- LINE audience: mirror rebuilds under the same name ---------------------------------------
AUDIENCE_NAME = "sync audience"


def audience_query(first: int, last: int, gone: bool = False) -> str:
    where = "where range % 100 <> 2" if gone else ""
    return (
        f"select 'U' || lpad(printf('%x', range), 32, '0') as id "
        f"from range({first}, {last}) {where}"
    )


def audience_run(server: SandboxServer, query: str) -> dg.ExecuteInProcessResult:
    asset = build_export(
        "aud_sync",
        destination="line_messaging",
        query=query,
        settings={
            "target": "audience",
            "audience_name": AUDIENCE_NAME,
            "sync_mode": "mirror",
            **FAST,
        },
    )
    res = LineMessagingResource(base_url=server.url, poll_seconds=0.05)
    return dg.materialize(
        [asset],
        resources={"line_messaging": res, "sql_source": SqlSource()},
        raise_on_error=False,
        instance=run_instance(),
    )


def audiences_named(sandbox: Sandbox) -> int:
    """How many audiences of the export's name LINE holds (settling none of them)."""
    store = line_box.store_of(sandbox)
    with sandbox.lock:
        return sum(a.description == AUDIENCE_NAME for a in store.audiences.values())


def named_audiences(sandbox: Sandbox) -> dict[int, set[str]]:
    store = line_box.store_of(sandbox)
    with sandbox.lock:
        found = {}
        for audience in store.audiences.values():
            if audience.description == AUDIENCE_NAME:
                audience.settle(float("inf"))
                found[audience.id] = set(audience.ids)
        return found


def test_audience_mirror_rebuilds_when_members_leave_and_before_expiry(
    sandbox_server: SandboxServer,
) -> None:
    sandbox = sandbox_server.sandbox
    assert audience_run(sandbox_server, audience_query(0, 200)).success
    [first] = named_audiences(sandbox)

    # Day 2: 2 left, 2 joined. LINE cannot remove IDs: a new audience of the same name holds
    # the 200 current IDs, and the old one is deleted once the new one is READY.
    day2 = audience_run(sandbox_server, audience_query(0, 202, gone=True))
    assert day2.success, failure_text(day2)
    meta = meta_of(day2, "aud_sync")
    assert meta["audience_action"] == "rebuilt" and meta["audiences_deleted"] == [first]
    assert meta["members_removed"] == 2 and meta["rows_sent"] == 200
    expected = {f"U{n:032x}" for n in range(202) if n % 100 != 2}
    [(second, ids)] = named_audiences(sandbox).items()
    assert second != first and ids == expected
    assert sandbox.count("DELETE", f"/v2/bot/audienceGroup/{first}") == 1

    # Day 3, nobody left: nothing to send, no rebuild ...
    day3 = audience_run(sandbox_server, audience_query(0, 202, gone=True))
    assert day3.success and meta_of(day3, "aud_sync")["rows_sent"] == 0
    assert list(named_audiences(sandbox)) == [second]
    # ... until the audience is 5 days from its 180-day expiry: rebuilt before it expires.
    with sandbox.lock:
        line_box.store_of(sandbox).audiences[second].created -= 175 * 24 * 3600
    day4 = audience_run(sandbox_server, audience_query(0, 202, gone=True))
    assert day4.success, failure_text(day4)
    meta = meta_of(day4, "aud_sync")
    assert "expires at" in meta["rebuild_reason"] and meta["audiences_deleted"] == [second]
    [(third, ids)] = named_audiences(sandbox).items()
    assert third not in (first, second) and ids == expected


# -- failed rows come back ---------------------------------------------------------------------
def test_transient_refusals_come_back_permanent_ones_wait_for_a_change(
    sandbox_server: SandboxServer,
) -> None:
    """LinkedIn answers 400 (an invalid ID: permanent) for members 3-5 and 500 for 6-7 (of
    unknown delivery: it may have acted, ``outcomes.fate_of``; kept pending, as an ADD again is
    harmless). Next run only 6-7 are sent again (``rows_retried``); 3-5 are reported refused again
    with LinkedIn's answer, unsent, until their title changes. A run stopped by an API that
    keeps failing: its rows come back next run, counted as retried."""
    from line_exports.sandbox.core import Fault

    sandbox = sandbox_server.sandbox
    store = linkedin_store(sandbox)
    refused = {email_key(n)[1][1] for n in (3, 4, 5)}
    unavailable = {email_key(n)[1][1] for n in (6, 7)}
    with sandbox.lock:
        store.refused_values.update(refused)
        store.unavailable_values.update(unavailable)
    query = contacts(1, members=100)
    day1 = linkedin_run(sandbox_server, query, "diff", ignore_invalid_records=True)
    assert day1.success, failure_text(day1)
    meta = meta_of(day1, "li_sync")
    assert (
        meta["rows_refused_by_api"],
        meta["rows_refused_permanent"],
        meta["rows_refused_transient"],
        meta["rows_delivery_unknown"],
    ) == (3, 3, 0, 2)
    with sandbox.lock:  # LinkedIn would take them all now
        store.refused_values.difference_update(refused)
        store.unavailable_values.difference_update(unavailable)
    day2 = linkedin_run(sandbox_server, query, "diff", ignore_invalid_records=True)
    assert day2.success, failure_text(day2)
    meta = meta_of(day2, "li_sync")
    assert (meta["rows_retried"], meta["rows_sent"], meta["rows_accepted"]) == (2, 2, 97)
    assert (meta["rows_refused_by_api"], meta["rows_refused_earlier"]) == (3, 3)
    assert meta["rows_read"] == 97 + 3 and meta["rows_unsent"] == 0
    [(answer, count)] = meta["refusals_by_answer"].items()
    assert count == 3 and answer.startswith("LinkedIn answered 400: Invalid idValue")
    assert not refused & {key[1][1] for key in segment_members(sandbox)}

    # Their sent fields change: they are sent again, and accepted.
    changed = query.replace(
        "'Engineer' as title",
        "case when range in (3, 4, 5) then 'Lead' else 'Engineer' end as title",
    )
    day3 = linkedin_run(sandbox_server, changed, "diff")
    assert day3.success, failure_text(day3)
    meta = meta_of(day3, "li_sync")
    assert (meta["rows_retried"], meta["rows_sent"], meta["rows_accepted"]) == (3, 3, 100)
    assert meta["rows_refused_by_api"] == 0 and len(segment_members(sandbox)) == 100

    # A run stopped by an API that keeps failing: its 20 new rows come back next run.
    sandbox.add_fault(Fault("/rest/dmpSegments/", method="POST", status=503, times=-1))
    more = changed.replace("range(100)", "range(120)")
    stopped = linkedin_run(sandbox_server, more, "diff")
    assert not stopped.success
    sandbox.clear_faults()
    after = linkedin_run(sandbox_server, more, "diff")
    assert after.success, failure_text(after)
    meta = meta_of(after, "li_sync")
    assert (meta["rows_retried"], meta["rows_added"], meta["rows_sent"]) == (20, 0, 20)
    assert len(segment_members(sandbox)) == 120


# -- the sync store on a shared PostgreSQL ledger ---------------------------------------------
def test_mirror_on_a_postgresql_ledger(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch, postgres_url: str
) -> None:
    url = postgres_url  # a new database of its own on the shared server (conftest)
    monkeypatch.setenv("LINE_EXPORTS_LEDGER_URL", url)
    sandbox = sandbox_server.sandbox
    with sandbox.lock:  # member 5: an invalid ID for LinkedIn (permanent)
        linkedin_store(sandbox).refused_values.add(email_key(5)[1][1])
    lenient = {"ignore_invalid_records": True}
    assert linkedin_run(sandbox_server, contacts(1, members=200), "mirror", **lenient).success
    day2 = linkedin_run(sandbox_server, contacts(2, members=200), "mirror", **lenient)
    assert day2.success, failure_text(day2)
    meta = meta_of(day2, "li_sync")
    assert (meta["rows_updated"], meta["members_removed"]) == (2, 2)
    assert (meta["rows_refused_earlier"], meta["rows_sent"]) == (1, 2)
    assert len(segment_members(sandbox)) == 197
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as con:
        statuses = dict(
            con.execute(sa.text("select status, count(*) from sync_members group by status")).all()
        )
        reason = con.execute(sa.text("select message from sync_refusals")).scalar_one()
    engine.dispose()
    assert statuses == {"accepted": 197, "refused": 1}
    assert reason.startswith("LinkedIn answered 400")


def audience_day2(url: str) -> dg.ExecuteInProcessResult:
    """Day 2 of the audience mirror export for the tick TICK (also run in a child process)."""
    asset = build_export(
        "aud_sync",
        destination="line_messaging",
        query=audience_query(0, 202, gone=True),
        settings={
            "target": "audience",
            "audience_name": AUDIENCE_NAME,
            "sync_mode": "mirror",
            **FAST,
        },
        retry_policy=None,
    )
    res = LineMessagingResource(base_url=url, poll_seconds=0.05)
    return dg.materialize(
        [asset],
        resources={"line_messaging": res, "sql_source": SqlSource()},
        tags=TICK,
        raise_on_error=False,
        instance=run_instance(),
    )


def test_audience_rebuild_killed_after_create_then_rerun(line_exports_home: Path) -> None:
    """SIGKILL the rebuild after LINE created the new audience (its answer held back): the
    re-run of the same tick finds that audience (not the one it replaces), adds the same IDs
    to it, deletes the old one, and leaves exactly one audience of the name holding the IDs."""
    from line_exports_tests.resilience_helpers import LateAnswerServer, settle

    with LateAnswerServer(Sandbox(rate_scale=100, job_seconds=0.05)) as server:
        sandbox = server.sandbox
        assert audience_run(server, audience_query(0, 200)).success
        [first] = named_audiences(sandbox)
        server.late.add("/v2/bot/audienceGroup/upload", "POST", 0.25, times=-1)
        # On the new audience LINE made (not the upload received: killed before its body was
        # read, LINE would never make it, the race that left one audience here).
        made = Acted(lambda: audiences_named(sandbox) - 1)
        kill_when(made, 1, "audience_day2", server.url, line_exports_home)
        settle(sandbox, quiet=0.45)
        server.late.rules.clear()
        assert len(named_audiences(sandbox)) == 2  # the old one and the new one, unfinished

        rerun = audience_day2(server.url)
        assert rerun.success, failure_text(rerun)
        meta = meta_of(rerun, "aud_sync")
        assert meta["audiences_deleted"] == [first] and meta["members_removed"] == 2
        expected = {f"U{n:032x}" for n in range(202) if n % 100 != 2}
        [(second, ids)] = named_audiences(sandbox).items()
        assert second != first and ids == expected
        assert sandbox.count("POST", "/v2/bot/audienceGroup/upload") == 2  # day 1 + the killed
