"""``line-exports plan --test-send N --to ID,...``: the real query, validation and template code,
delivered over HTTP to the test's sandbox, to testers only (LINE messages) or to a ``__test``
audience / segment (LINE audience, MAAC, LinkedIn); never recorded as a delivery.

In-process CLI calls (``line_exports.cli.main``), and one real subprocess (multicast)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from line_exports.cli import main
from line_exports.ledger import SYNC_MEMBERS, Ledger
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.core import Fault
from line_exports.sandbox.line_messaging import store_of as line_store
from line_exports.sandbox.linkedin import store_of as linkedin_store
from line_exports.sandbox.maac import store_of as maac_store
from line_exports_tests.cli_helpers import line_exports, workflow_folder

TESTERS = ("U" + "a" * 32, "U" + "b" * 32)


def uid(n: int) -> str:
    return "U" + format(n, "x").rjust(32, "0")


# 6 rows: row 4 has no name (its {{name}} placeholder is required: rejected, with the reason)
PUSH_QUERY = (
    "SELECT 'U' || lpad(printf('%x', range + 1), 32, '0') AS id, "
    "CASE WHEN range = 3 THEN NULL ELSE 'name' || (range + 1) END AS name "
    "FROM range(6) ORDER BY range\n"
)


def dig(connection: str, query: str, **settings: str) -> str:
    extra = "".join(f"    {k}: {v}\n" for k, v in settings.items())
    return (
        "timezone: UTC\n\n+send:\n"
        f"  td>: queries/{query}\n  result_connection: {connection}\n  result_settings:\n" + extra
    )


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def sampled(out: str, task: str | None = None) -> list[int]:
    text = out.split(task, 1)[1] if task else out
    found = re.search(r"test send: rows ([\d, ]+) sampled", text)
    assert found, out
    return [int(n) for n in found.group(1).split(", ")]


@pytest.fixture
def server(sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> SandboxServer:
    monkeypatch.setenv("LINE_EXPORTS_SANDBOX_URL", sandbox_server.url)
    return sandbox_server


def test_push_test_send_reaches_only_testers_then_the_real_run_sends_every_row(
    server: SandboxServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = line_store(server.sandbox)
    folder = workflow_folder(
        tmp_path,
        {
            "push": dig(
                "line_messaging_sample",
                "push.sql",
                target="push_message",
                template_message="""'{"type": "text", "text": "Hi {{name}} ({{id}})"}'""",
                sync_mode="diff",
                custom_aggregation_units="spring",
                initial_retry_wait="1",
            )
        },
        {"push.sql": PUSH_QUERY},
    )
    base = ["plan", "--workflows", str(folder), "--test-send", "6", "--to", ",".join(TESTERS)]
    # The monthly quota first: 5 valid rows x 2 testers = 10 messages, 4 remain -> refused.
    requests.put(
        f"{server.url}/_sandbox/line_messaging/quota", json={"limit": 10, "used": 6}, timeout=5
    ).raise_for_status()
    code, out = cli(capsys, *base)
    assert code == 1 and "test send refused: LINE test send needs 10 messages but only 4" in out, (
        out
    )
    assert store.pushes == 0

    requests.put(
        f"{server.url}/_sandbox/line_messaging/quota", json={"limit": 1000, "used": 0}, timeout=5
    ).raise_for_status()
    code, out = cli(capsys, *base)
    assert code == 0, out
    assert sampled(out) == [1, 2, 3, 4, 5, 6]
    assert "rejected row 4: name: " in out  # the sampled invalid row, with its reason
    for tester in TESTERS:
        assert f"to {tester}:" in out
        # the exact message row 2's recipient would get, its real {{id}} included
        assert f'row 2 (recipient {uid(2)}): text "Hi name2 ({uid(2)})" -> accepted' in out, out
        got = [m[0]["text"] for m in store.received(tester)]
        assert got == [f"Hi name{n} ({uid(n)})" for n in (1, 2, 3, 5, 6)]
    assert all(not store.received(uid(n)) for n in range(1, 7))  # real recipients: nothing
    assert "test send: 10 messages to 2 tester(s)" in out and store.quota_used == 10

    # Another invocation sends again (its own ledger scope), each push once: two pushes whose
    # answers are lost after LINE acted are retried with their retry key (409, not twice).
    lost = server.sandbox.add_fault(Fault("/v2/bot/message/push", lose_answer=True, times=2))
    assert cli(capsys, *base)[0] == 0
    assert lost.hits == 2
    assert len(store.received(TESTERS[0])) == 10 and store.pushes == 20

    # Never recorded as a delivery: the sync store is empty, so the real run sends every row.
    ledger = Ledger()
    with ledger.engine.connect() as con:
        assert con.execute(sa.select(sa.func.count()).select_from(SYNC_MEMBERS)).scalar() == 0
    ledger.close()
    code, out = cli(capsys, "run", "push", "--workflows", str(folder))
    assert code == 0, out
    assert re.search(r"send\s+ok\s+6\s+5\s+1\s+5\s+0\s+0\s+0\s+5", out), out  # read..accepted
    assert [len(store.received(uid(n))) for n in range(1, 7)] == [1, 1, 1, 0, 1, 1]
    assert len(store.received(TESTERS[0])) == 10

    # A tester LINE refuses (not a friend of the account): each of its lines says LINE's answer.
    store.unknown_users.add(TESTERS[1])
    code, out = cli(capsys, *base)
    assert code == 1, out
    assert f'row 2 (recipient {uid(2)}): text "Hi name2 ({uid(2)})" -> accepted' in out, out
    refused = out.split(f"to {TESTERS[1]}:", 1)[1]
    assert refused.count("-> refused by LINE: Failed to send messages") == 5, out


def test_bad_test_send_arguments_are_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = workflow_folder(
        tmp_path,
        {
            "push": dig(
                "line_messaging_sample",
                "push.sql",
                target="push_message",
                template_message="""'{"type": "text", "text": "Hi {{name}}"}'""",
            ),
            "capi": dig("line_conversion_sample", "push.sql", ignore_invalid_records="true"),
            "menu": dig("line_messaging_sample", "push.sql", target="rich_menu"),
        },
        {"push.sql": PUSH_QUERY},
    )
    base = ["plan", "--workflows", str(folder)]
    cases = {
        ("push", "--test-send", "3"): "--to is required: the LINE user IDs of the testers",
        ("push", "--test-send", "3", "--to", "Ubad"): "--to 'Ubad' is not a LINE user ID",
        ("push", "--test-send", "3", "--to", "U" + "A" * 32): "is not a LINE user ID",
        ("push", "--test-send", "0", "--to", TESTERS[0]): "--test-send takes 1 to 20 rows (got 0)",
        ("push", "--test-send", "21", "--to", TESTERS[0]): "takes 1 to 20 rows (got 21)",
        ("capi", "--test-send", "2"): "LINE Conversion API events cannot be test-sent: LINE's",
        ("menu", "--test-send", "2"): "a rich_menu export cannot be test-sent",
    }
    for args, message in cases.items():
        code, out = cli(capsys, *base, *args)
        assert code == 2 and message in out, (args, out)


def test_member_exports_write_a_test_segment_of_exactly_the_sample(
    server: SandboxServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = workflow_folder(
        tmp_path,
        {
            # the TD CLI form (``result:`` JSON) as well as result_connection
            "seg": "timezone: UTC\n\n+send:\n  td>: queries/uids.sql\n  result: '"
            + json.dumps({"type": "maac", "data_object": "segments", "segment_name": "weekly"})
            + "'\n",
            "members": dig(
                "your_connection_name",
                "uids.sql",
                data_object="members",
                import_key="line_uid",
                tags="vip",
            ),
            "aud": dig("line_messaging_sample", "ids.sql", target="audience", audience_name="fans"),
            "li": dig(
                "linkedin_sample",
                "contacts.sql",
                ad_account_id="512345678",
                audience_type="users",
                segment_name="buyers",
            ),
        },
        {
            "uids.sql": "SELECT 'U' || lpad(printf('%x', range + 1), 32, '0') AS line_uid "
            "FROM range(8) ORDER BY range\n",
            "ids.sql": "SELECT 'U' || lpad(printf('%x', range + 1), 32, '0') AS id "
            "FROM range(8) ORDER BY range\n",
            "contacts.sql": "SELECT 'c' || (range + 1) || '@example.com' AS email "
            "FROM range(8) ORDER BY range\n",
        },
    )
    maac, linkedin, line = (
        maac_store(server.sandbox),
        linkedin_store(server.sandbox),
        line_store(server.sandbox),
    )
    for seed in ("1", "2"):
        code, out = cli(
            capsys, "plan", "--workflows", str(folder), "--test-send", "3", "--seed", seed
        )
        assert code == 0, out
        seg = {uid(n) for n in sampled(out, "seg/send")}
        [segment] = [s for s in maac.segments.values() if s.name == "weekly__test"]
        assert set(segment.uids) == seg
        [members] = [s for s in maac.segments.values() if s.name == "members.send__test"]
        assert set(members.uids) == {uid(n) for n in sampled(out, "members/send")}
        [li] = [s for s in linkedin.segments.values() if s.name == "buyers__test"]
        assert len(li.members) == 3 and all(
            any(
                f"c{n}@example.com" in str(m) or _sha(f"c{n}@example.com") in str(m)
                for m in li.members
            )
            for n in sampled(out, "li/send")
        ), (li.members, out)
        audiences = [a for a in line.audiences.values() if a.description == "fans__test"]
        assert len(audiences) == 1, "the previous test audience is deleted"
        audiences[0].settle(1e12)
        assert audiences[0].ids == {uid(n) for n in sampled(out, "aud/send")}
    # nothing reached the real targets, and no member was imported
    assert not [s for s in maac.segments.values() if s.name == "weekly"]
    assert not [s for s in linkedin.segments.values() if s.name == "buyers"]
    assert not [a for a in line.audiences.values() if a.description == "fans"]
    assert not maac.members


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def test_multicast_and_broadcast_test_send_from_the_real_cli(
    server: SandboxServer, tmp_path: Path
) -> None:
    """A multicast goes once to the testers (its message is every row's); a broadcast's rows,
    each its own message, are pushed to each tester (a broadcast reaches every friend)."""
    store = line_store(server.sandbox)
    folder = workflow_folder(
        tmp_path,
        {
            "mc": dig(
                "line_messaging_sample",
                "ids.sql",
                target="multicast_message",
                template_message_multicast="""'{"type": "text", "text": "Sale today"}'""",
            ),
            "bc": dig(
                "line_messaging_sample",
                "news.sql",
                target="broadcast",
                template_message="""'{"type": "text", "text": "News: {{title}}"}'""",
            ),
        },
        {
            "ids.sql": "SELECT 'U' || lpad(printf('%x', range + 1), 32, '0') AS id FROM range(6)\n",
            "news.sql": "SELECT 'item ' || range AS title FROM range(2)\n",
        },
    )
    ran = line_exports(
        "plan", "--workflows", str(folder), "--test-send", "2", "--to", ",".join(TESTERS)
    )
    assert ran.code == 0, ran.text
    assert '(one multicast, the same message for every row): text "Sale today" -> accepted' in (
        ran.out
    )
    assert 'row 2: text "News: item 1" -> accepted' in ran.out
    assert store.multicasts == 1 and store.pushes == 4
    assert server.sandbox.count("POST", "/v2/bot/message/broadcast") == 0
    for tester in TESTERS:
        got = sorted(m[0]["text"] for m in store.received(tester))
        assert got == ["News: item 0", "News: item 1", "Sale today"]
    assert all(not store.received(uid(n)) for n in range(1, 7))
    assert "test send: 6 messages to 2 tester(s)" in ran.out
