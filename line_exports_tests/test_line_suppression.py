"""Consent, opt-out and suppression: real follow/unfollow webhook events go through the receiver
and the landing into the events table, the suppression asset is materialized, and LINE exports
reject suppressed users (rule ``suppressed``) before sending; ``consent``/``opt_out`` columns
reject the same way."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import requests

from line_exports.destinations.line_messaging.consent import (
    SUPPRESSION_URL_ENV,
    build_suppression_asset,
    load_suppressed,
)
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_messaging import store_of
from line_exports.webhook.landing import land_source
from line_exports_tests.test_line_messaging import export, resource, run, user
from line_exports_tests.webhook_helpers import (
    base_event,
    body_of,
    make_source,
    running_server,
    signed_headers,
)

SECRET = "fedcba9876543210fedcba9876543210"
TEMPLATE = json.dumps({"type": "text", "text": "Hi {{name}}"})


def follow_event(kind: str, n: int, who: int, at: int) -> dict[str, object]:
    event = base_event(kind, n, source={"type": "user", "userId": user(who)}, timestamp=at)
    if kind == "follow":
        event["replyToken"] = f"rt{n}"
        event["follow"] = {"isUnblocked": False}
    return event


@pytest.fixture
def landed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Users 1, 2 and 3 unfollow; 3 follows again later: 1 and 2 are suppressed."""
    monkeypatch.setenv("LINE_CHANNEL_SECRET_SHOP_OA", SECRET)
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    monkeypatch.setenv(SUPPRESSION_URL_ENV, url)
    source = make_source()
    spool = tmp_path / "spool.sqlite3"
    events = [
        follow_event("unfollow", 1, 1, 1_000),
        follow_event("unfollow", 2, 2, 1_000),
        follow_event("unfollow", 3, 3, 1_000),
        follow_event("follow", 4, 3, 2_000),
        follow_event("follow", 5, 4, 1_000),
    ]
    with running_server([source], spool) as base, requests.Session() as http:
        for event in events:  # one request each, as LINE may deliver them
            body = body_of([event])
            answer = http.post(
                f"{base}/v1/task/{source.source_id}",
                data=body,
                headers=signed_headers(SECRET, body),
                timeout=5,
            )
            assert answer.status_code == 200
    assert land_source(source, spool_path=spool, target_url=url).events_landed == 5
    asset = build_suppression_asset([source], url)
    result = dg.materialize([asset])
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["suppressed_users"].value == 2 and meta["unfollow_events"].value == 3
    assert sorted(load_suppressed(url) or []) == [user(1), user(2)]
    return url


def test_push_and_multicast_skip_suppressed_users_reported_as_rejects(
    landed: str, sandbox_server: SandboxServer
) -> None:
    store = store_of(sandbox_server.sandbox)
    query = "SELECT 'U' || lpad(printf('%x', range), 32, '0') AS id, 'n' || range AS name FROM range(0, 6)"
    meta = run(
        export("push_suppressed", query, target="push_message", template_message=TEMPLATE),
        resource(sandbox_server),
    )
    assert meta["rows_suppressed"] == 2 and meta["suppression_list_users"] == 2
    assert (meta["rows_rejected"], meta["rows_accepted"]) == (2, 4)
    assert store.received(user(1)) == [] and store.received(user(2)) == []
    assert len(store.received(user(3))) == 1  # followed again: no longer suppressed
    rejects = Path(meta["rejects_file"]).read_text()
    assert rejects.count(",suppressed,") == 2
    multicast = run(
        export(
            "multicast_suppressed",
            query,
            target="multicast_message",
            template_message_multicast=json.dumps({"type": "text", "text": "Sale"}),
        ),
        resource(sandbox_server),
    )
    assert multicast["rows_suppressed"] == 2 and multicast["multicast_accepted"] == 4
    audience = run(
        export("audience_suppressed", query, target="audience", audience_name="screened"),
        resource(sandbox_server),
    )
    assert audience["rows_suppressed"] == 2 and audience["audience_count"] == 4
    off = run(
        export(
            "push_not_screened",
            query,
            target="push_message",
            template_message=TEMPLATE,
            skip_suppressed=False,
        ),
        resource(sandbox_server),
    )
    assert off["rows_accepted"] == 6  # LINE answers 200 for a blocked user too


def test_consent_and_opt_out_columns_become_reject_rules(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(SUPPRESSION_URL_ENV, f"sqlite:///{tmp_path / 'none.sqlite'}")
    query = (
        "SELECT 'U' || lpad(printf('%x', range), 32, '0') AS id, 'n' || range AS name, "
        "CASE WHEN range = 0 THEN NULL ELSE range % 3 <> 1 END AS consent, "
        "range = 5 AS opt_out FROM range(0, 7)"
    )
    meta = run(
        export("push_consent", query, target="push_message", template_message=TEMPLATE),
        resource(sandbox_server),
    )
    # consent: row of range 0 (NULL), 1 and 4 (false); opt_out: range 5.
    assert (meta["rows_consent"], meta["rows_opt_out"]) == (3, 1)
    assert meta["suppression_list_users"] == "no suppression table yet"
    assert meta["rows_accepted"] == 3
    store = store_of(sandbox_server.sandbox)
    assert [n for n in range(7) if store.received(user(n))] == [2, 3, 6]


def test_the_example_project_wires_the_suppression_asset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/definitions.py (the `exports` code location): line_suppression follows the OA
    import's events and feeds the LINE audience, push and multicast exports; it materializes
    (no events landed yet: nobody suppressed, saying so)."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "examples" / "definitions.py"
    spec = importlib.util.spec_from_file_location("line_exports_example_definitions", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    graph = module.defs.resolve_asset_graph()
    suppression = dg.AssetKey("line_suppression")
    assert graph.get(suppression).parent_keys == {dg.AssetKey(["sample_oa", "line_oa_events"])}
    for name in ("line_audience", "line_push", "line_multicast"):
        assert suppression in graph.get(dg.AssetKey(name)).parent_keys, name
    monkeypatch.setenv(SUPPRESSION_URL_ENV, f"sqlite:///{tmp_path / 'w.sqlite'}")
    result = dg.materialize([module.line_suppression])
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["suppressed_users"].value == 0
