"""MAAC mirror removes from departed members only the tags this export attached (issue 18, B5).

A tag another export (or anyone) attached before this export first sent it stays; MAAC's
member list tells which by each tag's ``tagged_at`` against the ``start_time`` of the import
task that first sent it (recorded right after MAAC answers the task id). Real exports over HTTP
to the sandbox, one ledger file per test, the sandbox as the oracle.
"""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest
import requests

from line_exports import MaacResource, SqlSource, build_export
from line_exports.destinations.maac import MaacDestination
from line_exports.maac_spec import parse_time
from line_exports.sandbox import Fault, Sandbox, SandboxServer
from line_exports.sandbox.maac import store_of
from line_exports_tests.resilience_helpers import LateAnswerServer
from line_exports_tests.run_instance import run_instance
from line_exports_tests.test_linkedin import FAST, failure_text
from line_exports_tests.test_sync import Acted, kill_when, meta_of

DAY1 = {"dagster/scheduled_execution_time": "2026-06-01T09:00:00+00:00"}
DAY2 = {"dagster/scheduled_execution_time": "2026-06-02T09:00:00+00:00"}
KILL_MEMBERS = 20
MODULE = "test_sync_maac_tags"


def uid(n: int) -> str:
    return f"U{n:032x}"


def query(numbers: list[int], own_tags: dict[int, str] | None = None) -> str:
    """Members ``numbers`` by LINE UID, with a row's own ``tags`` where ``own_tags`` says."""
    cases = " ".join(f"when range = {n} then '{t}'" for n, t in (own_tags or {}).items())
    tags = f"case {cases} end" if cases else "cast(null as varchar)"
    listed = ", ".join(map(str, numbers))
    return (
        "select 'U' || lpad(printf('%x', range), 32, '0') as line_uid, "
        f"{tags} as tags from range({max(numbers) + 1}) where range in ({listed})"
    )


def run(
    url: str,
    name: str,
    sql: str,
    mode: str,
    tick: dict[str, str] | None = None,
    ok: bool = True,
    **settings: str,
) -> dg.ExecuteInProcessResult:
    asset = build_export(
        name,
        destination="maac",
        query=sql,
        settings={
            "data_object": "members",
            "import_key": "line_uid",
            "tags": "vip",
            "sync_mode": mode,
            **FAST,
            **settings,
        },
    )
    result = dg.materialize(
        [asset],
        resources={
            "maac": MaacResource(base_url=url, poll_seconds=0.05),
            "sql_source": SqlSource(),
        },
        tags=tick,
        raise_on_error=False,
        instance=run_instance(),
    )
    assert result.success == ok, failure_text(result)
    return result


def tags_of(sandbox: Sandbox) -> dict[str, set[str]]:
    store = store_of(sandbox)
    with sandbox.lock:
        return {m["line_uid"]: set(m["tags"]) for m in store.members.values()}


def member_reads(sandbox: Sandbox) -> int:
    """Requests to the member list (``/openapi/v1/member/``, not its ``import/`` paths)."""
    return sandbox.count("GET", "/openapi/v1/member/") - sandbox.count(
        "GET", "/openapi/v1/member/import/"
    )


def test_mirror_keeps_a_tag_the_member_carried_before(sandbox_server: SandboxServer) -> None:
    """The verifier's repro: ``other`` (append) tags members 0-9 ``vip``; ``mine`` (mirror, also
    ``vip``) sends 0-11, 9 with its own tag ``gold``. Day 2, 9 and 11 left: 11 loses the
    ``vip`` mine attached, 9 loses ``gold`` (mine's) but keeps ``vip`` (other's, first)."""
    url, sandbox = sandbox_server.url, sandbox_server.sandbox
    run(url, "other", query(list(range(10))), "append")
    run(url, "mine", query(list(range(12)), {9: "gold"}), "mirror", DAY1)
    assert member_reads(sandbox) == 0  # a baseline reads nobody's tags
    deletes = sandbox.count("DELETE", "/openapi/v1/taglinemember/")

    day2 = run(url, "mine", query([*range(9), 10]), "mirror", DAY2)
    meta = meta_of(day2, "mine")
    assert (meta["members_removed"], meta["tags_removed"]) == (2, 2)
    assert meta["tags_kept_carried_before"] == 1 and meta["tags_kept_unrecorded"] == 0
    assert list(meta["tags_kept"]) == [f"{uid(9)} vip"]
    assert sandbox.count("DELETE", "/openapi/v1/taglinemember/") - deletes == 2
    assert member_reads(sandbox) == 2  # one per departed member
    tags = tags_of(sandbox)
    assert tags[uid(9)] == {"vip"} and tags[uid(11)] == set()
    assert all(tags[uid(n)] == {"vip"} for n in [*range(9), 10])


def mirror_day1(url: str) -> None:
    """Day 1 of the mirror export ``killed`` (also in a child process)."""
    run(url, "killed", query(list(range(KILL_MEMBERS))), "mirror", DAY1)


def test_killed_while_its_import_runs_then_rerun_still_owns_its_tags(
    line_exports_home: Path,
) -> None:
    """SIGKILL day 1 once its import task was answered and is being polled (MAAC applies it
    anyway). The re-run imports again (MAAC keeps each tag's first time); day 2 still knows the
    killed run's task first sent the tags, so the 2 departed members lose ``vip`` exactly once
    and the others keep it."""
    with SandboxServer(Sandbox(rate_scale=100, job_seconds=1.0)) as server:
        sandbox = server.sandbox
        polled = Acted(lambda: sandbox.count("GET", "/openapi/v1/member/import/"))
        kill_when(polled, 1, "mirror_day1", server.url, line_exports_home, "test_sync_maac_tags")
        assert sandbox.count("POST", "/openapi/v1/member/import/") == 1
        store = store_of(sandbox)
        while True:  # MAAC runs one import at a time: the killed run's task ends first
            with sandbox.lock:
                running = any(t.finish_at > time.monotonic() for t in store.tasks.values())
            if not running:
                break
            time.sleep(0.05)

        mirror_day1(server.url)
        assert sandbox.count("POST", "/openapi/v1/member/import/") == 2
        day2 = run(server.url, "killed", query(list(range(KILL_MEMBERS - 2))), "mirror", DAY2)
        meta = meta_of(day2, "killed")
        assert (meta["members_removed"], meta["tags_removed"]) == (2, 2)
        assert meta["tags_kept_carried_before"] == 0 and meta["tags_kept_unrecorded"] == 0
        assert sandbox.count("DELETE", "/openapi/v1/taglinemember/") == 2
        tags = tags_of(sandbox)
        assert {n for n in range(KILL_MEMBERS) if tags[uid(n)] == {"vip"}} == set(
            range(KILL_MEMBERS - 2)
        )
        assert tags[uid(KILL_MEMBERS - 2)] == tags[uid(KILL_MEMBERS - 1)] == set()


def test_sandbox_member_list_as_the_spec_says(sandbox_server: SandboxServer) -> None:
    """``GET /openapi/v1/member/``: 300 a page with a ``next`` token, one member by LINE UID
    with ``tags_detail`` whose ``tagged_at`` is at or after the import's ``start_time``; a bad
    filter value is a 400 naming it; no token is a 401."""
    url = sandbox_server.url
    auth = {"Authorization": "Bearer sandbox-maac-token"}
    data = [{"line_uid": uid(n)} for n in range(301)]
    task = requests.post(
        f"{url}/openapi/v1/member/import/",
        json={"import_key": "line_uid", "data": data, "tags": ["t1"]},
        headers=auth,
        timeout=10,
    ).json()["id"]
    while (
        body := requests.get(f"{url}/openapi/v1/member/import/{task}/", headers=auth, timeout=10)
    ).json()["status"] != "done":
        time.sleep(0.05)
    started = parse_time(body.json()["result"]["start_time"])

    members = f"{url}/openapi/v1/member/"
    first = requests.get(members, headers=auth, timeout=10).json()
    assert len(first["results"]) == 300 and first["next"]
    second = requests.get(members, params={"start": first["next"]}, headers=auth, timeout=10)
    assert len(second.json()["results"]) == 1 and second.json()["next"] is None

    one = requests.get(members, params={"line_uid": uid(7), "all_tag": 1}, headers=auth, timeout=10)
    (member,) = one.json()["results"]
    assert member["tags"] == ["t1"] and member["tags_detail"][0]["name"] == "t1"
    assert parse_time(member["tags_detail"][0]["tagged_at"]) >= started

    for name, value in (("all_tag", "2"), ("updated_at_min", "2026-13-01"), ("member_id", "x")):
        bad = requests.get(members, params={name: value}, headers=auth, timeout=10)
        assert bad.status_code == 400 and name in bad.json()
    assert requests.get(members, timeout=10).status_code == 401


COUNTS = ("rows_sent", "rows_retried", "rows_unchanged", "rows_refused_by_api", "rows_accepted")


def counts(result: dg.ExecuteInProcessResult, name: str) -> tuple[int, ...]:
    """The run's ``COUNTS``, after checking read = rejected + refused + unsent + unknown +
    accepted."""
    meta = meta_of(result, name)
    parts = ("rows_rejected", "rows_refused_by_api", "rows_unsent", "rows_delivery_unknown")
    assert meta["rows_read"] == sum(meta[p] for p in parts) + meta["rows_accepted"]
    return tuple(meta[c] for c in COUNTS)


def test_mismatched_members_are_refused_and_sent_again_until_matched(
    sandbox_server: SandboxServer,
) -> None:
    """N5: members 8 and 9 blocked the account, so MAAC mismatches them (``mismatch_num``,
    named in the mismatch file of an import by line_uid). diff counts them refused every run
    and sends them again (never "unchanged"), until they unblock and are accepted. By mobile
    (no mismatch file) MAAC's count cannot be matched to rows: the task's rows are all sent
    again, counted as MAAC said."""
    url, sandbox = sandbox_server.url, sandbox_server.sandbox
    store = store_of(sandbox)
    with sandbox.lock:
        store.blocked_uids.update({uid(8), uid(9)})
    members = query(list(range(10)))
    assert counts(run(url, "mm", members, "diff"), "mm") == (10, 0, 0, 2, 8)
    day2 = run(url, "mm", members, "diff")
    assert counts(day2, "mm") == (2, 2, 8, 2, 8)  # was (0, 0, 10, 0, 10): refused -> accepted
    with sandbox.lock:
        store.blocked_uids.clear()
    assert counts(run(url, "mm", members, "diff"), "mm") == (2, 2, 8, 0, 10)
    assert all("vip" in tags_of(sandbox)[uid(n)] for n in range(10))
    assert counts(run(url, "mm", members, "diff"), "mm") == (0, 0, 10, 0, 10)

    phones = (
        "select '+8869123456' || lpad(range::varchar, 2, '0') as mobile, case when range < 2 "
        "then 'U' || lpad(printf('%x', range + 100), 32, '0') end as line_uid from range(3)"
    )
    by_mobile = {"import_key": "mobile", "tags": "m"}
    assert counts(run(url, "mob", phones, "diff", **by_mobile), "mob") == (3, 0, 0, 1, 2)
    # which of the 3 MAAC refused is unknown: all 3 are sent again, none counted unchanged
    assert counts(run(url, "mob", phones, "diff", **by_mobile), "mob") == (3, 3, 0, 1, 2)
    only = "select '+886912345699' as mobile"  # of no MAAC member: every run fails
    run(url, "mob1", only, "mirror", ok=False, **by_mobile)
    again = run(url, "mob1", only, "mirror", ok=False, **by_mobile)
    assert "accepted none of 1 valid rows; 1 refused by the API" in failure_text(again)


def test_mirror_removes_every_tag_it_recorded_for_a_departed_member(
    sandbox_server: SandboxServer,
) -> None:
    """N2: member 9's row tag goes ``gold`` -> ``silver`` (it stays: both stay on it), then it
    leaves: mirror removes ``gold`` too, since this export recorded attaching it. Likewise a
    tag of an earlier ``tags`` setting (``spring`` -> ``summer``, a new baseline)."""
    url, sandbox = sandbox_server.url, sandbox_server.sandbox
    run(url, "rt", query(list(range(10)), {9: "gold"}), "mirror", DAY1)
    run(url, "rt", query(list(range(10)), {9: "silver"}), "mirror", DAY2)
    assert tags_of(sandbox)[uid(9)] == {"vip", "gold", "silver"}
    day3 = run(url, "rt", query(list(range(9))), "mirror", DAY2)
    meta = meta_of(day3, "rt")
    assert (meta["members_removed"], meta["tags_removed"]) == (1, 3)
    assert meta["tags_kept_carried_before"] == meta["tags_kept_unrecorded"] == 0
    assert tags_of(sandbox)[uid(9)] == set()

    numbers = [n + 20 for n in range(10)]
    run(url, "season", query(numbers), "mirror", DAY1, tags="spring")
    run(url, "season", query(numbers), "mirror", DAY1, tags="summer")  # a new baseline
    run(url, "season", query(numbers), "mirror", DAY2, tags="summer")
    left = run(url, "season", query(numbers[:-1]), "mirror", DAY2, tags="summer")
    assert meta_of(left, "season")["tags_removed"] == 2
    assert tags_of(sandbox)[uid(29)] == set() and tags_of(sandbox)[uid(28)] == {"spring", "summer"}


def test_import_answer_lost_then_retried_still_owns_its_tags(
    sandbox_server: SandboxServer,
) -> None:
    """N3: the import request's answer is lost (MAAC started that task), the client sends it
    again. The tags count as this export's from the first request's send time, so day 2 removes
    ``vip`` from the departed member (was: kept as "carried before" for good)."""
    url, sandbox = sandbox_server.url, sandbox_server.sandbox
    path = "/openapi/v1/member/import/"
    sandbox.add_fault(Fault(path=path, method="POST", lose_answer=True, times=1))
    run(url, "lost", query(list(range(10))), "mirror", DAY1)
    assert sandbox.count("POST", path) == 2  # both applied by MAAC
    day2 = run(url, "lost", query(list(range(9))), "mirror", DAY2)
    meta = meta_of(day2, "lost")
    assert (meta["members_removed"], meta["tags_removed"]) == (1, 1)
    assert meta["tags_kept_carried_before"] == 0
    assert tags_of(sandbox)[uid(9)] == set()


def mirror_day1_inflight(url: str) -> None:
    """Day 1 of the mirror export ``inflight`` (in a child process)."""
    run(url, "inflight", query(list(range(10))), "mirror", DAY1)


def test_killed_while_its_import_request_is_in_flight_still_owns_its_tags(
    line_exports_home: Path,
) -> None:
    """N3: SIGKILL once MAAC has acted on day 1's import request and before its answer (the
    task id) arrives. The re-run imports again; day 2 removes ``vip`` from the departed member
    (the killed request's send time bounds the tags), and the others keep it."""
    with LateAnswerServer(Sandbox(rate_scale=100, job_seconds=0.05)) as server:
        sandbox = server.sandbox
        rule = server.late.add("/openapi/v1/member/import/", "POST", 2.0, times=1)
        kill_when(rule, 1, "mirror_day1_inflight", server.url, line_exports_home, MODULE)
        assert all(tags_of(sandbox)[uid(n)] == {"vip"} for n in range(10))  # MAAC applied it
        store = store_of(sandbox)
        while True:  # MAAC runs one import at a time: the killed run's task ends first
            with sandbox.lock:
                running = any(t.finish_at > time.monotonic() for t in store.tasks.values())
            if not running:
                break
            time.sleep(0.05)

        mirror_day1_inflight(server.url)
        assert sandbox.count("POST", "/openapi/v1/member/import/") == 2
        day2 = run(server.url, "inflight", query(list(range(9))), "mirror", DAY2)
        meta = meta_of(day2, "inflight")
        assert (meta["members_removed"], meta["tags_removed"]) == (1, 1)
        assert meta["tags_kept_carried_before"] == meta["tags_kept_unrecorded"] == 0
        tags = tags_of(sandbox)
        assert tags[uid(9)] == set() and all(tags[uid(n)] == {"vip"} for n in range(9))


def test_two_mirrors_sharing_a_tag_the_other_sends_it_again(sandbox_server: SandboxServer) -> None:
    """N7: ``a`` and ``b`` (both mirror, ``vip``) send members 0-9; ``a`` attached first. Member
    9 leaves ``a``: ``a`` removes ``vip`` (its own), and ``b``, whose result still holds 9,
    sends it again on its next run (was: unchanged for good, 9 without ``vip``)."""
    url, sandbox = sandbox_server.url, sandbox_server.sandbox
    members = query(list(range(10)))
    run(url, "a", members, "mirror", DAY1)
    run(url, "b", members, "mirror", DAY1)
    day2 = run(url, "a", query(list(range(9))), "mirror", DAY2)
    assert meta_of(day2, "a")["tags_removed"] == 1
    assert meta_of(day2, "a")["members_resent_by_other_exports"] == 1
    assert tags_of(sandbox)[uid(9)] == set()
    again = run(url, "b", members, "mirror", DAY2)
    assert counts(again, "b")[:3] == (1, 1, 9)  # sent, retried, unchanged
    assert tags_of(sandbox)[uid(9)] == {"vip"}
    assert counts(run(url, "b", members, "mirror", DAY2), "b")[:3] == (0, 0, 10)


# -- Tag records are per MAAC account (issue 18, M2) --------------------------------------------
def test_two_mirrors_on_two_accounts_each_remove_their_own_tag(
    sandbox_server: SandboxServer,
) -> None:
    """``a`` on one MAAC account and ``b`` on another (two sandboxes: two tokens, two
    organizations) both tag members 0-9 ``vip`` in mirror. Member 9 leaves ``a``: ``a``'s
    account loses the tag, ``b``'s keeps it and ``b`` is not told to send it again (its record
    is its own); member 9 then leaves ``b``: ``b``'s account loses the tag too (was: ``a``'s
    removal dropped ``b``'s record, so ``b`` kept the tag for good as "carried before")."""
    first = sandbox_server
    with SandboxServer(Sandbox(rate_scale=100, job_seconds=0.05)) as second:
        members = query(list(range(10)))
        run(first.url, "a", members, "mirror", DAY1)
        run(second.url, "b", members, "mirror", DAY1)
        day2 = run(first.url, "a", query(list(range(9))), "mirror", DAY2)
        meta = meta_of(day2, "a")
        assert (meta["tags_removed"], meta["members_resent_by_other_exports"]) == (1, 0)
        assert tags_of(first.sandbox)[uid(9)] == set()
        assert tags_of(second.sandbox)[uid(9)] == {"vip"}
        assert counts(run(second.url, "b", members, "mirror", DAY2), "b")[:3] == (0, 0, 10)
        left = run(second.url, "b", query(list(range(9))), "mirror", DAY2)
        meta = meta_of(left, "b")
        assert (meta["members_removed"], meta["tags_removed"]) == (1, 1)
        assert meta["tags_kept_carried_before"] == meta["tags_kept_unrecorded"] == 0
        assert tags_of(second.sandbox)[uid(9)] == set()
        assert all(tags_of(s.sandbox)[uid(n)] == {"vip"} for s in (first, second) for n in range(9))


def test_tag_records_without_an_account_are_kept_and_adopted(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records written before they named the account (an earlier version: here the account
    is hidden from day 1) stay usable. ``b``'s such record, on another account, survives
    ``a``'s removal of the same UID and tag (``b``'s member is only sent again: harmless, MAAC
    keeps the tag's first time); ``b``'s next run takes its records over, and when member 9
    leaves ``b``, ``b``'s account loses the tag. ``a``'s own old records are adopted the same
    way: its removal of ``vip`` from member 9 needs them."""
    first = sandbox_server
    with SandboxServer(Sandbox(rate_scale=100, job_seconds=0.05)) as second:
        members = query(list(range(10)))
        with monkeypatch.context() as patch:
            patch.setattr(MaacDestination, "sync_account", lambda *_: "")
            run(first.url, "a", members, "mirror", DAY1)
            run(second.url, "b", members, "mirror", DAY1)
        day2 = run(first.url, "a", query(list(range(9))), "mirror", DAY2)
        meta = meta_of(day2, "a")
        assert (meta["tags_removed"], meta["tags_kept_unrecorded"]) == (1, 0)
        assert meta["members_resent_by_other_exports"] == 1  # b's: its account is unknown
        assert tags_of(first.sandbox)[uid(9)] == set()
        assert counts(run(second.url, "b", members, "mirror", DAY2), "b")[:3] == (1, 1, 9)
        assert tags_of(second.sandbox)[uid(9)] == {"vip"}
        left = meta_of(run(second.url, "b", query(list(range(9))), "mirror", DAY2), "b")
        assert (left["members_removed"], left["tags_removed"]) == (1, 1)
        assert left["tags_kept_carried_before"] == left["tags_kept_unrecorded"] == 0
        assert tags_of(second.sandbox)[uid(9)] == set()
