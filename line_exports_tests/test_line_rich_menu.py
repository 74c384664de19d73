"""Rich menus per user against the sandbox over loopback: IDs and aliases, bulk link / unlink of
at most 500 users, rows LINE would refuse rejected first, a 500 retried, a re-run resumed, and
sync_mode diff sending only users whose menu changed."""

from __future__ import annotations

import requests

from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.line_messaging.rich_menu import store_of
from line_exports_tests.test_line_messaging import TICK, TOKEN, export, resource, run, user

MENU_A = "richmenu-" + "a" * 32
MENU_B = "richmenu-" + "b" * 32
MISSING = "richmenu-" + "f" * 32


def setup_menus(server: SandboxServer) -> None:
    requests.put(
        f"{server.url}/_sandbox/line_messaging/richmenus",
        json={"richmenus": [MENU_A, MENU_B]},
        timeout=5,
    ).raise_for_status()
    answer = requests.post(
        f"{server.url}/v2/bot/richmenu/alias",
        json={"richMenuAliasId": "vip", "richMenuId": MENU_B},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert answer.status_code == 200, answer.text


def rows(changed: int = 0) -> str:
    """Users 0-699 on menu A, 700-1049 on alias vip, 1050-1099 unlinked, then bad rows."""
    return f"""
    SELECT 'U' || lpad(printf('%x', range), 32, '0') AS id,
           CASE WHEN range < {changed} THEN 'vip'
                WHEN range < 700 THEN '{MENU_A}' WHEN range < 1050 THEN 'vip' ELSE NULL END
             AS rich_menu
    FROM range(0, 1100)
    UNION ALL SELECT '{user(5000)}', 'nope'
    UNION ALL SELECT '{user(5001)}', '{MISSING}'
    UNION ALL SELECT '{user(1)}', '{MENU_B}'
    UNION ALL SELECT '{user(5002)}', 'Bad Alias!'
    UNION ALL SELECT 'not-a-user', 'vip'
    """


def test_rich_menus_linked_in_bulk_by_id_and_alias_with_rejects_retry_and_resume(
    sandbox_server: SandboxServer,
) -> None:
    setup_menus(sandbox_server)
    menus = store_of(sandbox_server.sandbox)
    for n in range(1050, 1100):
        menus.links[user(n)] = MENU_A  # linked before: these rows unlink them
    sandbox_server.sandbox.add_fault(
        Fault(path="/v2/bot/richmenu/bulk/link", method="POST", status=500)
    )
    asset = export("rich_menus", rows(), target="rich_menu", initial_retry_wait=1)
    meta = run(asset, resource(sandbox_server), tags=TICK)
    assert meta["retries"] == 1
    assert meta["rich_menu_link_requests"] == 3  # 700 users on A: 500 + 200; 350 on B
    assert meta["rich_menu_unlink_requests"] == 1
    assert meta["rich_menu_requests_verified"] == 4
    assert menus.bulk_requests == 4 and menus.users_in_requests == 1100
    assert (meta["rows_read"], meta["rows_accepted"], meta["rows_rejected"]) == (1105, 1100, 5)
    links = dict(menus.links)
    assert all(links[user(n)] == MENU_A for n in range(700))
    assert all(links[user(n)] == MENU_B for n in range(700, 1050))
    assert not any(user(n) in links for n in range(1050, 1100))
    assert user(5000) not in links and user(5001) not in links
    # The same tick again: every request resumes from the ledger, none is sent.
    again = run(asset, resource(sandbox_server), tags=TICK)
    assert again["rows_resumed"] == 1100 and menus.bulk_requests == 4


def test_sync_mode_diff_sends_only_users_whose_menu_changed(sandbox_server: SandboxServer) -> None:
    setup_menus(sandbox_server)
    menus = store_of(sandbox_server.sandbox)
    first = run(
        export("rich_menus_diff", rows(), target="rich_menu", sync_mode="diff"),
        resource(sandbox_server),
    )
    assert first["rows_accepted"] == 1100 and menus.users_in_requests == 1100
    second = run(
        export("rich_menus_diff", rows(changed=10), target="rich_menu", sync_mode="diff"),
        resource(sandbox_server),
    )
    assert menus.users_in_requests == 1110 and second["rich_menu_link_requests"] == 1
    assert all(menus.links[user(n)] == MENU_B for n in range(10))
    assert menus.links[user(10)] == MENU_A


def test_sandbox_refuses_what_line_refuses(sandbox_server: SandboxServer) -> None:
    setup_menus(sandbox_server)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{sandbox_server.url}/v2/bot/richmenu"
    cases = [
        ("bulk/link", {"richMenuId": MENU_A, "userIds": [user(n) for n in range(501)]}),
        ("bulk/link", {"richMenuId": MENU_A, "userIds": []}),
        ("bulk/link", {"richMenuId": MISSING, "userIds": [user(1)]}),
        ("bulk/link", {"richMenuId": MENU_A, "userIds": ["Uxyz"]}),
        ("bulk/unlink", {"richMenuId": MENU_A, "userIds": [user(1)]}),
        ("alias", {"richMenuAliasId": "Has Caps", "richMenuId": MENU_A}),
        ("alias", {"richMenuAliasId": "vip", "richMenuId": MENU_A}),  # exists already
        ("alias", {"richMenuAliasId": "x" * 33, "richMenuId": MENU_A}),
    ]
    for path, body in cases:
        answer = requests.post(f"{url}/{path}", json=body, headers=auth, timeout=5)
        assert answer.status_code == 400, (path, body, answer.text)
    ok = requests.post(
        f"{url}/bulk/link",
        json={"richMenuId": MENU_A, "userIds": [user(1)]},
        headers=auth,
        timeout=5,
    )
    assert ok.status_code == 202
