"""A rich-menu run LINE refused whole fails quoting LINE's answer, as every destination's
all-refused failure does (issue 13: "fails, with the API's reasons"; VERIFY-13f O2). Real
HTTP to the sandbox, every bulk link request answered 400."""

from __future__ import annotations

from line_exports.sandbox import Fault, SandboxServer
from line_exports_tests.test_line_messaging import export, resource, run_failure
from line_exports_tests.test_line_rich_menu import MENU_A, MISSING, setup_menus

ANSWER = "The richMenuId is not valid"


def test_every_rich_menu_request_refused_names_lines_answer(
    sandbox_server: SandboxServer,
) -> None:
    setup_menus(sandbox_server)
    sandbox_server.sandbox.add_fault(
        Fault(path="/v2/bot/richmenu/bulk/link", method="POST", status=400, times=-1, body=ANSWER)
    )
    query = (
        f"SELECT 'U' || lpad(printf('%x', range), 32, '0') AS id, '{MENU_A}' AS rich_menu "
        f"FROM range(5) UNION ALL SELECT 'U' || lpad('f', 32, 'f'), '{MISSING}'"
    )
    asset = export("rm_refused", query, target="rich_menu", initial_retry_wait=1)
    text, meta = run_failure(asset, resource(sandbox_server))
    assert "LINE refused every rich menu request" in text
    assert ANSWER in text and "row 1" in text, text
    assert (meta["rows_read"], meta["rows_rejected"], meta["rows_refused_by_api"]) == (6, 1, 5)
