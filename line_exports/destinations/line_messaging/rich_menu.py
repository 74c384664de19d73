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
from line_exports.destinations.line_messaging.client import LineMessagingClient, refusal
from line_exports.destinations.line_messaging.settings import (
    USER_ID_MESSAGE,
    USER_ID_PATTERN,
    LineMessagingSettings,
    recipient_column,
)
from line_exports.http import ApiError, poll
from line_exports.outcomes import count_failed_request, first_answers
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
    """Plan in DuckDB over the spool (first row per user, distinct menu values resolved once),
    then stream each menu's users in requests of 500: memory holds one request, not the table."""
    report = run.new_report()
    if rows.count == 0:
        return report
    menus, aliases = _rich_menus(client)
    with duckdb.connect() as con:
        con.execute(
            "CREATE TEMP TABLE plan AS SELECT n, id, menu, k FROM ("
            f"SELECT \"{ROW_NUMBER}\" AS n, id, coalesce(nullif(rich_menu, ''), '') AS menu, "
            f'row_number() OVER (PARTITION BY id ORDER BY "{ROW_NUMBER}") AS k '
            "FROM read_parquet(?))",
            [str(rows.path)],
        )
        numbers = [
            r[0] for r in con.execute("SELECT n FROM plan WHERE k > 1 ORDER BY n").fetchall()
        ]
        if numbers:
            report.rejected.append(
                reject(numbers, "id", "duplicate", "id repeats an earlier row's user (first wins)")
            )
        targets: dict[str, str] = {}  # value in the rows -> rich menu ID ("" unlinks)
        for (value,) in con.execute("SELECT DISTINCT menu FROM plan WHERE k = 1").fetchall():
            if not value or (value.startswith("richmenu-") and value in menus):
                targets[value] = value
            elif value in aliases:
                targets[value] = aliases[value]
            else:
                rule, why = (
                    ("rich_menu", f"rich menu {value} does not exist")
                    if value.startswith("richmenu-") and len(value) == 41
                    else ("rich_menu_alias", f"no rich menu alias {value!r}")
                )
                bad = con.execute(
                    "SELECT n FROM plan WHERE k = 1 AND menu = ? ORDER BY n", [value]
                ).fetchall()
                report.rejected.append(reject([r[0] for r in bad], "rich_menu", rule, why))
        by_menu: dict[str, list[str]] = {}
        for value, menu in targets.items():
            by_menu.setdefault(menu, []).append(value)
        counts: dict[str, int] = {}
        sent: list[tuple[str, str, bool]] = []
        for menu in sorted(by_menu):
            result = con.execute(
                "SELECT n, id FROM plan WHERE k = 1 AND list_contains(?, menu) ORDER BY n",
                [by_menu[menu]],
            )
            while chunk := result.fetchmany(BULK_MAX_USERS):
                counts[menu] = counts.get(menu, 0) + len(chunk)
                if (request := send_chunk(client, menu, chunk, report, run)) is not None:
                    sent.append(request)
    verified = verify(client, sent, run)
    report.metadata.update(
        {
            "rich_menu_users_by_menu": {k or "(unlink)": v for k, v in counts.items()},
            "rich_menu_aliases_resolved": sum(1 for v in targets if v in aliases),
            "rich_menu_link_requests": sum(1 for menu, *_ in sent if menu),
            "rich_menu_unlink_requests": sum(1 for menu, *_ in sent if not menu),
            "rich_menu_requests_verified": verified,
            "rich_menu_progress": "bulk link/unlink have no progress endpoint "
            "(progress/batch covers only POST /v2/bot/richmenu/batch): one user of each request "
            "is read back until LINE applied it",
        }
    )
    if report.refused and report.accepted_rows == 0:
        # LINE's answer in the headline, as every destination's all-refused failure quotes it
        raise DeliveryFailed(
            f"LINE refused every rich menu request ({report.refused_rows:,} users; first "
            f"answers: {first_answers(report.refused)})",
            report,
        )
    return report


def send_chunk(
    client: LineMessagingClient,
    menu: str,
    chunk: list[tuple[int, str]],
    report: DeliveryReport,
    run: ExportRun,
) -> tuple[str, str, bool] | None:
    """One bulk link (``menu``) or unlink (``""``) request of at most 500 users under the
    ledger; (menu, a user, resumed), or None when LINE refused it (a reject with its answer)."""
    users = [u for _, u in chunk]
    numbers = [int(n) for n, _ in chunk]
    key = content_key("rich_menu", menu or "unlink", users)
    done = run.ledger.done(key)
    if done is not None and done.get("state") == "accepted":
        report.sent_rows += len(chunk)
        report.resumed_rows += len(chunk)
        report.accepted_rows += len(chunk)
        return menu, users[0], True
    body: dict[str, Any] = {"userIds": users}
    if menu:
        body["richMenuId"] = menu
    column = "rich_menu" if menu else "id"
    try:
        # A second signal cutting it off: unknown once an attempt went out (run.sending).
        with run.sending(numbers, column, "LINE", client.http.stats):
            client.http.request(
                "POST",
                f"/v2/bot/richmenu/bulk/{'link' if menu else 'unlink'}",
                endpoint="richmenu",
                ok_status=(202,),
                json=body,
            )
    except ApiError as exc:
        if exc.status != 400:
            # The one rule (outcomes.fate_of): a 4xx -> refused; a 5xx or no answer -> unknown.
            fate = count_failed_request(report, numbers, column, exc, "LINE")
            raise DeliveryFailed(
                f"LINE rich menu request stopped the run: {fate.reason}",
                report,
                retryable=exc.retryable,
            ) from None
        report.sent_rows += len(chunk)
        report.refused.append(
            reject(
                numbers,
                "rich_menu" if menu else "id",
                "line_rich_menu_refused",
                f"LINE refused: {refusal(exc)}",
            )
        )
        return None
    run.ledger.record(key, {"state": "accepted", "at": time.time()})
    report.sent_rows += len(chunk)
    report.accepted_rows += len(chunk)
    run.progress(report.sent_rows)
    return menu, users[0], False


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
