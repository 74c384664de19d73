"""``line-exports plan`` shows LINE's monthly quota against the messages a run needs: the real
CLI in a subprocess, the test's sandbox over HTTP with a low quota."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import requests

from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.line_messaging import store_of
from line_exports_tests.cli_helpers import line_exports, workflow_folder

RECIPIENTS = (
    "SELECT user_id AS id, display_name AS name FROM line_recipients WHERE user_id <> 'Uzzzz'"
)


def line_dig(target: str, query: str, **settings: str) -> str:
    extra = "".join(f"    {k}: {v}\n" for k, v in settings.items())
    return (
        "timezone: UTC\n\n"
        "+send:\n"
        f"  td>: queries/{query}\n"
        "  result_connection: line_messaging_sample\n"
        "  result_settings:\n"
        f"    target: {target}\n" + extra
    )


TEMPLATE = """'{"type": "text", "text": "Hi {{name}}"}'"""


@pytest.fixture
def sandbox_env(sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> SandboxServer:
    monkeypatch.setenv("LINE_EXPORTS_SANDBOX_URL", sandbox_server.url)
    return sandbox_server


def test_plan_shows_messages_needed_against_the_quota_and_the_run_agrees(
    tmp_path: Path, sandbox_env: SandboxServer
) -> None:
    store = store_of(sandbox_env.sandbox)
    requests.put(
        f"{sandbox_env.url}/_sandbox/line_messaging/quota",
        json={"limit": 10, "used": 7},
        timeout=5,
    ).raise_for_status()
    folder = workflow_folder(
        tmp_path,
        {
            "push_fail": line_dig("push_message", "five.sql", template_message=TEMPLATE),
            "push_up_to": line_dig(
                "push_message",
                "five.sql",
                template_message=TEMPLATE,
                over_quota="send_up_to_quota",
            ),
            "multicast_fits": line_dig(
                "multicast_message",
                "three_twice.sql",
                template_message_multicast="""'{"type": "text", "text": "Sale"}'""",
            ),
        },
        {
            "five.sql": RECIPIENTS + " ORDER BY user_id LIMIT 5\n",
            # 6 rows, 3 distinct recipients: LINE counts 3 messages.
            "three_twice.sql": (
                f"SELECT id FROM ({RECIPIENTS} ORDER BY user_id LIMIT 3) AS a\n"
                f"UNION ALL SELECT id FROM ({RECIPIENTS} ORDER BY user_id LIMIT 3) AS b\n"
            ),
        },
    )
    plan = line_exports("plan", "--workflows", str(folder), "--preview", "0")
    assert plan.code == 1, plan.text  # push_fail would fail
    out = plan.out
    assert (
        "push_fail/send: read 5" in out
        and "LINE push: 5 messages needed; monthly quota 3 of 10 remain (7 used)" in out
    ), out
    assert (
        "would fail: LINE push needs 5 messages but only 3 of this month's 10 remain (used 7); "
        "nothing would be sent (over_quota is fail)"
    ) in out
    assert (
        "would send only up to the quota: 3 of 5 messages; 2 rows would be rejected "
        "(over_quota is send_up_to_quota)"
    ) in out
    assert "LINE multicast: 3 messages needed; monthly quota 3 of 10 remain (7 used)" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if "/send " in line}
    assert rows["push_fail/send"][-1] == "0"  # would send
    assert rows["push_up_to/send"][-1] == "3"
    assert rows["multicast_fits/send"][-1] == "3"
    # plan sent nothing and used none of the quota; it read both quota endpoints per task.
    assert store.pushes == 0 and store.multicasts == 0 and store.quota_used == 7
    assert sandbox_env.sandbox.count("GET", "/v2/bot/message/quota/consumption") == 3

    ran = line_exports("run", "push_up_to", "--workflows", str(folder))
    assert ran.code == 0, ran.text
    assert store.pushes == 3 and store.quota_used == 10  # as the plan said


def test_plan_reads_a_sqlite_source_named_by_url_env(
    tmp_path: Path, sandbox_env: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``source: url_env: WAREHOUSE_URL``: the CLI resolves the variable (it took its name,
    ``WAREHOUSE_URL``, for the URL: "Could not parse SQLAlchemy URL")."""
    database = tmp_path / "warehouse.db"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE users (id TEXT, name TEXT)")
        db.executemany(
            "INSERT INTO users VALUES (?, ?)", [(f"U{n:032x}", f"n{n}") for n in range(3)]
        )
    monkeypatch.setenv("WAREHOUSE_URL", f"sqlite:///{database}")
    folder = workflow_folder(
        tmp_path,
        {"sq": line_dig("push_message", "users.sql", template_message=TEMPLATE)},
        {"users.sql": "SELECT id, name FROM users\n"},
    )
    connections = folder / "connections.yaml"
    connections.write_text(
        "source:\n  url_env: WAREHOUSE_URL\n\n" + connections.read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    plan = line_exports("plan", "--workflows", str(folder), "--preview", "0")
    assert plan.code == 0, plan.text
    assert "sq/send: read 3, valid 3, rejected 0" in plan.out, plan.out
    assert "LINE push: 3 messages needed" in plan.out


def test_plan_reports_a_quota_answer_of_another_shape(
    tmp_path: Path, sandbox_env: SandboxServer
) -> None:
    """200 ``{"message": "[1,2]"}`` from both quota endpoints: a clear error (was ``'totalUsage'``)."""
    sandbox_env.sandbox.add_fault(
        Fault(path="/v2/bot/message/quota", status=200, times=-1, body="[1,2]")
    )
    folder = workflow_folder(
        tmp_path,
        {"odd": line_dig("push_message", "two.sql", template_message=TEMPLATE)},
        {"two.sql": RECIPIENTS + " ORDER BY user_id LIMIT 2\n"},
    )
    plan = line_exports("plan", "--workflows", str(folder), "--preview", "0")
    assert plan.code == 1, plan.text
    assert (
        "odd/send: error: LINE's quota answer is not what the spec says: "
        "GET /v2/bot/message/quota should hold"
    ) in plan.out, plan.out
    assert sandbox_env.sandbox.count("GET", "/v2/bot/message/quota") == 1


def test_plan_of_a_push_diff_counts_only_what_the_run_would_send(
    tmp_path: Path, sandbox_env: SandboxServer
) -> None:
    """``sync_mode: diff``, 12 of 30 pushes accepted (the quota allowed 12): plan's quota line
    and ``would send`` count the 18 to retry, as the run then does (they said 30)."""
    store = store_of(sandbox_env.sandbox)
    quota = f"{sandbox_env.url}/_sandbox/line_messaging/quota"
    requests.put(quota, json={"limit": 12, "used": 0}, timeout=5).raise_for_status()
    folder = workflow_folder(
        tmp_path,
        {
            "coupon": line_dig(
                "push_message",
                "thirty.sql",
                template_message=TEMPLATE,
                sync_mode="diff",
                over_quota="send_up_to_quota",
            )
        },
        {
            "thirty.sql": "SELECT 'U' || lpad(printf('%x', range + 1), 32, '0') AS id, "
            "'n' || range AS name FROM range(30)\n"
        },
    )
    first = line_exports("run", "coupon", "--workflows", str(folder))
    assert first.code == 0, first.text
    assert store.pushes == 12
    requests.put(quota, json={"limit": 1000, "used": 0}, timeout=5).raise_for_status()
    plan = line_exports("plan", "--workflows", str(folder), "--preview", "0")
    assert plan.code == 0, plan.text
    assert "sync diff: 0 to add, 0 to update, 18 to retry, 12 unchanged" in plan.out
    assert "LINE push: 18 messages needed; monthly quota 1,000 of 1,000 remain" in plan.out
    [row] = [line.split() for line in plan.out.splitlines() if line.startswith("coupon/send ")]
    assert row[-4:] == ["30", "30", "0", "18"], plan.out  # read, valid, rejected, would send
    ran = line_exports("run", "coupon", "--workflows", str(folder))
    assert ran.code == 0, ran.text
    assert store.pushes == 30  # the 18 the plan said
