"""sync_mode diff / mirror with a key twice in the result: the first row is kept, the others are
``duplicate`` rejects naming it, and the export converges (a later run sends nothing).

Real exports (DuckDB -> Dagster -> HTTP to the sandbox), one ledger across the runs of a test.
The sync store holds one hash per key, so without the rule a second row of a key differs from
it on every run and is sent again, forever (VERIFY-18 B6).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from line_exports import LineMessagingResource, SqlSource, build_export
from line_exports.sandbox import SandboxServer
from line_exports.sandbox import line_messaging as line_box
from line_exports_tests.cli_helpers import line_exports, workflow_folder
from line_exports_tests.run_instance import run_instance
from line_exports_tests.test_linkedin import FAST, failure_text
from line_exports_tests.test_sync import elements, linkedin_run, maac_run, meta_of

KEYS = 10


def duplicates_named(result: dg.ExecuteInProcessResult, node: str) -> dict[int, int]:
    """Row -> the first row it repeats, from the run's rejects file (``duplicate`` rejects)."""
    path = Path(str(meta_of(result, node)["rejects_file"]))
    with path.open(encoding="utf-8") as rows:
        found = {}
        for row in csv.DictReader(rows):
            assert row["rule"] == "duplicate", row
            found[int(row["_row_number"])] = int(row["message"].split("repeats row ")[1].split()[0])
    return found


def check_duplicates(result: dg.ExecuteInProcessResult, node: str, sent: int) -> dict[str, Any]:
    """Run 2 or 3: ``sent`` rows sent, the ``KEYS`` repeats rejected, each naming its first row."""
    assert result.success, failure_text(result)
    meta = meta_of(result, node)
    assert (meta["rows_read"], meta["rows_rejected"], meta["rows_duplicate"]) == (
        2 * KEYS,
        KEYS,
        KEYS,
    )
    assert meta["rows_sent"] == sent
    # Rows are numbered from 1: row KEYS + n repeats row n's key.
    assert duplicates_named(result, node) == {KEYS + n: n for n in range(1, KEYS + 1)}
    return meta


def contacts() -> str:
    """Each of KEYS emails twice: title Eng (first), then Lead."""
    return (
        "select 'dup' || (range % 10) || '@example.com' as email, "
        "case when range < 10 then 'Eng' else 'Lead' end as title from range(20)"
    )


def test_linkedin_mirror_sends_a_repeated_key_once_and_converges(
    sandbox_server: SandboxServer,
) -> None:
    day1 = linkedin_run(sandbox_server, contacts() + " where range < 10", "mirror")
    assert day1.success, failure_text(day1)
    before = elements(sandbox_server.sandbox)
    for _ in range(2):  # days 2 and 3: the same 20 rows, 10 keys
        meta = check_duplicates(linkedin_run(sandbox_server, contacts(), "mirror"), "li_sync", 0)
        assert (meta["rows_unchanged"], meta["rows_updated"], meta["members_removed"]) == (10, 0, 0)
    assert elements(sandbox_server.sandbox) == before  # no element sent for the repeats


def coupons() -> str:
    """Each of KEYS recipients twice: code A (first), then B."""
    return (
        "select 'U' || lpad(printf('%x', 57344 + n % 10), 32, '0') as id, "
        "case when n < 10 then 'A' else 'B' end || n as code "
        "from (select range as n from range(20)) as t"
    )


def push_run(server: SandboxServer) -> dg.ExecuteInProcessResult:
    """The push diff export of test_sync, reading the result 7 rows a chunk: each repeat is in
    another chunk than its first row (the rule spans the whole result)."""
    asset = build_export(
        "push_sync",
        destination="line_messaging",
        query=coupons(),
        settings={
            "target": "push_message",
            "template_message": '{"type": "text", "text": "coupon {{code}}"}',
            "sync_mode": "diff",
            **FAST,
        },
        chunk_size=7,
    )
    res = LineMessagingResource(base_url=server.url, poll_seconds=0.05)
    return dg.materialize(
        [asset],
        resources={"line_messaging": res, "sql_source": SqlSource()},
        raise_on_error=False,
        instance=run_instance(),
    )


def test_push_diff_sends_a_repeated_recipient_once(sandbox_server: SandboxServer) -> None:
    """A (campaign, recipient) pair is sent once, within a run as across runs."""
    inbox = line_box.store_of(sandbox_server.sandbox).inbox
    for day, sent in ((1, KEYS), (2, 0), (3, 0)):
        meta = check_duplicates(push_run(sandbox_server), "push_sync", sent)
        assert meta["rows_added"] == (KEYS if day == 1 else 0)
        received = [m for uid in list(inbox) for m in inbox[uid]]
        assert len(received) == KEYS, day  # one coupon per recipient
        assert all(str(m).count("coupon A") == 1 for m in received)  # the first row's


def test_plan_of_a_diff_task_with_repeated_keys(
    sandbox_server: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``line-exports plan`` applies the run's rules: the repeats are ``duplicate`` rejects, and
    with ``skip_invalid_message: false`` they do not make it say "would fail" (a run goes on)."""
    monkeypatch.setenv("LINE_EXPORTS_SANDBOX_URL", sandbox_server.url)
    settings = {
        "target": "push_message",
        "template_message": """'{"type": "text", "text": "coupon {{code}}"}'""",
        "sync_mode": "diff",
        "skip_invalid_message": "false",
    }
    dig = (
        "timezone: UTC\n\n+send:\n  td>: queries/coupons.sql\n"
        "  result_connection: line_messaging_sample\n  result_settings:\n"
        + "".join(f"    {k}: {v}\n" for k, v in settings.items())
    )
    folder = workflow_folder(tmp_path, {"coupons": dig}, {"coupons.sql": coupons() + "\n"})
    plan = line_exports("plan", "--workflows", str(folder), "--preview", "0")
    assert plan.code == 0, plan.text
    assert "coupons/send: read 20, valid 10, rejected 10" in plan.out, plan.out
    assert "rejects by rule: id: duplicate=10" in plan.out
    assert "sync diff: 10 to add, 0 to update, 0 to retry, 0 unchanged" in plan.out
    assert "LINE push: 10 messages needed" in plan.out and "would fail" not in plan.out


def members() -> str:
    """Each of KEYS LINE UIDs twice: display name A (first), then B."""
    return (
        "select 'U' || lpad(printf('%x', 61440 + range % 10), 32, '0') as line_uid, "
        "case when range < 10 then 'A ' else 'B ' end || range as display_name from range(20)"
    )


def test_maac_mirror_sends_a_repeated_import_key_once(sandbox_server: SandboxServer) -> None:
    """MAAC fails an import holding a key twice: its import-key rule rejected repeats in every
    mode already; the sync key is the same rule (one, not two rejects a row)."""
    url = sandbox_server.url
    for day, sent in ((1, KEYS), (2, 0), (3, 0)):
        meta = check_duplicates(maac_run(url, members()), "maac_sync", sent)
        assert meta["rows_unchanged"] == (0 if day == 1 else KEYS)
