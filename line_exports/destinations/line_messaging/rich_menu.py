"""Rich menu target: link each row's user to a rich menu (by ID or alias), or unlink it.

Columns (``messaging-api.yml``): ``id``, the user ID (``U`` and 32 hex digits); ``rich_menu``, a
rich menu ID (``richmenu-`` and 32 hex digits) or a rich menu alias ID (``^[a-z0-9_-]{1,32}$``,
``CreateRichMenuAliasRequest``); an empty ``rich_menu`` unlinks the user's menu. Aliases are
resolved with ``GET /v2/bot/richmenu/alias/list`` and IDs checked against ``GET
/v2/bot/richmenu/list`` before anything is sent: a row naming an unknown alias or menu is
rejected (rules ``rich_menu_alias``, ``rich_menu``); a user repeated is a ``duplicate`` (the
first row wins).

Users go in requests of at most 500 (``RichMenuBulkLinkRequest.userIds`` ``maxItems: 500``) to
``POST /v2/bot/richmenu/bulk/link`` (one menu per request) and ``/bulk/unlink``, answered
``202``: LINE applies them asynchronously. The spec's progress endpoint,
``GET /v2/bot/richmenu/progress/batch``, reports only the batch-control API
(``POST /v2/bot/richmenu/batch``, menu-to-menu replacement), not bulk link, so completion is
checked by reading back one user of each request (``GET /v2/bot/user/{userId}/richmenu``) until
it shows the menu (metadata ``rich_menu_requests_verified``). Linking a user to the menu it has
changes nothing, so a retried request is harmless; the ledger records each accepted request and a
re-run skips it. With ``sync_mode: diff`` only users whose ``rich_menu`` changed are sent.
"""

from __future__ import annotations

import time
from typing import Any

import dagster as dg
import duckdb

from line_exports.destination import (
    DeliveryFailed,
    DeliveryReport,
    ExportRun,
    ValidRows,
    content_key,
)
from line_exports.destinations.line_messaging.client import LineMessagingClient, line_error
from line_exports.destinations.line_messaging.settings import (
    USER_ID_MESSAGE,
    USER_ID_PATTERN,
    LineMessagingSettings,
    recipient_column,
)
from line_exports.http import ApiError, poll
from line_exports.rules import ROW_NUMBER, Column, reject

RICH_MENU_ID_PATTERN = r"richmenu-[0-9a-f]{32}"
ALIAS_PATTERN = r"[a-z0-9_-]{1,32}"
BULK_MAX_USERS = 500
VERIFY_TIMEOUT_SECONDS = 600
RICH_MENU_COLUMNS = (
    recipient_column(USER_ID_PATTERN, USER_ID_MESSAGE),
    Column(
        "rich_menu",
        pattern=f"{RICH_MENU_ID_PATTERN}|{ALIAS_PATTERN}",
        pattern_message="is not a rich menu ID (richmenu- and 32 hex digits) or a rich menu "
        "alias ID (1-32 of a-z, 0-9, _ and -)",
        aliases=("rich_menu_id", "rich_menu_alias", "richmenu", "rich_menu_alias_id"),
    ),
)


def _rich_menus(client: LineMessagingClient) -> tuple[set[str], dict[str, str]]:
    """(existing rich menu IDs, alias -> rich menu ID)."""
    menus = client.http.request("GET", "/v2/bot/richmenu/list", endpoint="richmenu_list").json()
    aliases = client.http.request("GET", "/v2/bot/richmenu/alias/list", endpoint="richmenu").json()
    return (
        {str(m["richMenuId"]) for m in menus.get("richmenus", [])},
        {str(a["richMenuAliasId"]): str(a["richMenuId"]) for a in aliases.get("aliases", [])},
    )


def deliver_rich_menu(
    client: LineMessagingClient,
    settings: LineMessagingSettings,
    rows: ValidRows,
    run: ExportRun,
) -> DeliveryReport:
    report = DeliveryReport()
    if rows.count == 0:
        return report
    menus, aliases = _rich_menus(client)
    with duckdb.connect() as con:
        table = con.execute(
            f"SELECT \"{ROW_NUMBER}\", id, nullif(rich_menu, '') FROM read_parquet(?) "
            f'ORDER BY "{ROW_NUMBER}"',
            [str(rows.path)],
        ).fetchall()
    first: dict[str, int] = {}
    duplicates: list[int] = []
    unknown_alias: dict[str, list[int]] = {}
    unknown_menu: dict[str, list[int]] = {}
    groups: dict[str, list[tuple[int, str]]] = {}  # menu ID ("" = unlink) -> (row, user)
    for number, user, menu in table:
        if user in first:
            duplicates.append(int(number))
            continue
        first[user] = int(number)
        target = ""
        if menu is not None:
            if menu.startswith("richmenu-") and len(menu) == 41:
                target = menu
                if menu not in menus:
                    unknown_menu.setdefault(menu, []).append(int(number))
                    continue
            elif menu in aliases:
                target = aliases[menu]
            else:
                unknown_alias.setdefault(menu, []).append(int(number))
                continue
        groups.setdefault(target, []).append((int(number), user))
    if duplicates:
        report.rejected.append(
            reject(duplicates, "id", "duplicate", "id repeats an earlier row's user (first wins)")
        )
    for alias, numbers in unknown_alias.items():
        report.rejected.append(
            reject(numbers, "rich_menu", "rich_menu_alias", f"no rich menu alias {alias!r}")
        )
    for menu, numbers in unknown_menu.items():
        report.rejected.append(
            reject(numbers, "rich_menu", "rich_menu", f"rich menu {menu} does not exist")
        )
    sent = send_groups(client, groups, report, run)
    verified = verify(client, sent, run)
    report.metadata.update(
        {
            "rich_menu_users_by_menu": {k or "(unlink)": len(v) for k, v in groups.items()},
            "rich_menu_aliases_resolved": len({m for m in aliases if m in {r[2] for r in table}}),
            "rich_menu_link_requests": sum(1 for menu, *_ in sent if menu),
            "rich_menu_unlink_requests": sum(1 for menu, *_ in sent if not menu),
            "rich_menu_requests_verified": verified,
            "rich_menu_progress": "bulk link/unlink have no progress endpoint "
            "(progress/batch covers only POST /v2/bot/richmenu/batch): one user of each request "
            "is read back until LINE applied it",
        }
    )
    if report.refused and report.accepted_rows == 0:
        raise DeliveryFailed("LINE refused every rich menu request", report)
    return report


def send_groups(
    client: LineMessagingClient,
    groups: dict[str, list[tuple[int, str]]],
    report: DeliveryReport,
    run: ExportRun,
) -> list[tuple[str, str, bool]]:
    """Bulk link/unlink requests of at most 500 users; (menu, a user, resumed) per request."""
    sent: list[tuple[str, str, bool]] = []
    for menu in sorted(groups):
        members = groups[menu]
        for start in range(0, len(members), BULK_MAX_USERS):
            chunk = members[start : start + BULK_MAX_USERS]
            users = [u for _, u in chunk]
            numbers = [n for n, _ in chunk]
            key = content_key("rich_menu", menu or "unlink", users)
            if run.ledger.done(key) is not None and run.ledger.done(key).get("state") == "accepted":
                report.resumed_rows += len(chunk)
                report.accepted_rows += len(chunk)
                report.sent_rows += len(chunk)
                sent.append((menu, users[0], True))
                continue
            body: dict[str, Any] = {"userIds": users}
            if menu:
                body["richMenuId"] = menu
            try:
                client.http.request(
                    "POST",
                    f"/v2/bot/richmenu/bulk/{'link' if menu else 'unlink'}",
                    endpoint="richmenu",
                    ok_status=(202,),
                    json=body,
                )
            except ApiError as exc:
                if exc.status != 400:
                    raise
                message, details = line_error(exc)
                report.sent_rows += len(chunk)
                report.refused.append(
                    reject(
                        numbers,
                        "rich_menu" if menu else "id",
                        "line_rich_menu_refused",
                        f"LINE refused: {message} {'; '.join(details)}".strip(),
                    )
                )
                continue
            run.ledger.record(key, {"state": "accepted", "at": time.time()})
            report.sent_rows += len(chunk)
            report.accepted_rows += len(chunk)
            sent.append((menu, users[0], False))
            run.progress(report.sent_rows)
    return sent


def verify(client: LineMessagingClient, sent: list[tuple[str, str, bool]], run: ExportRun) -> int:
    """Read back one user of each request until LINE shows the request applied."""

    def current(user: str) -> str:
        try:
            body = client.http.request("GET", f"/v2/bot/user/{user}/richmenu", endpoint="richmenu")
        except ApiError as exc:
            if exc.status == 404:  # no menu linked
                return ""
            raise
        return str(body.json().get("richMenuId", ""))

    for menu, user, _ in sent:
        try:
            poll(
                lambda menu=menu, user=user: True if current(user) == menu else None,
                what=f"LINE rich menu of {user}",
                timeout=VERIFY_TIMEOUT_SECONDS,
                max_pause=client.poll_seconds,
            )
        except ApiError as exc:
            raise dg.Failure(
                description=f"{exc}: LINE accepted the bulk request (202) but has not applied it",
                allow_retries=True,
            ) from None
    run.log.info(f"rich menus: {len(sent)} requests applied (one user of each read back)")
    return len(sent)
