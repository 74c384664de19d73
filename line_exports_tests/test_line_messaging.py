"""LINE Messaging exports against the real sandbox over loopback: audiences, push, multicast."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import requests
from pydantic import ValidationError

from line_exports import SqlSource, build_export
from line_exports.destinations.line_messaging import LineMessagingResource, LineMessagingSettings
from line_exports.http import RetrySettings
from line_exports.sandbox import Fault, Sandbox, SandboxServer
from line_exports.sandbox.line_messaging import CLIENTS, store_of

TOKEN = "sandbox-line-channel-token"
TICK = {"dagster/scheduled_execution_time": "2026-05-01T09:00:00+00:00"}
PUSH_TEMPLATE = json.dumps(
    {"type": "text", "text": "Hi {{display_name}}, your code is {{coupon_code}}"}
)
MULTICAST_TEMPLATE = json.dumps(
    [
        {"type": "text", "text": "Sale today"},
        {"type": "sticker", "packageId": "446", "stickerId": "1988"},
    ]
)


def export(name: str, query: str, **settings: Any) -> dg.AssetsDefinition:
    return build_export(
        name, destination="line_messaging", query=query, settings=settings, retry_policy=None
    )


def run(
    asset: dg.AssetsDefinition, resource: LineMessagingResource, tags: dict[str, str] | None = None
) -> dict[str, Any]:
    result = dg.materialize(
        [asset], resources={"sql_source": SqlSource(), "line_messaging": resource}, tags=tags
    )
    meta = result.get_asset_materialization_events()[0].event_specific_data.materialization.metadata  # type: ignore[union-attr]
    return {k: getattr(v, "value", v) for k, v in meta.items()}


def run_fails(asset: dg.AssetsDefinition, resource: LineMessagingResource) -> str:
    return run_failure(asset, resource)[0]


def run_failure(
    asset: dg.AssetsDefinition, resource: LineMessagingResource
) -> tuple[str, dict[str, Any]]:
    """A run that must fail: its step failure's error message and metadata (plain values)."""
    result = dg.materialize(
        [asset],
        resources={"sql_source": SqlSource(), "line_messaging": resource},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    data = failure.event_specific_data
    failure_data = data.user_failure_data  # type: ignore[union-attr]
    metadata = failure_data.metadata if failure_data is not None else {}
    meta = {k: getattr(v, "value", v) for k, v in metadata.items()}
    return data.error.message, meta  # type: ignore[union-attr]


def resource(server: SandboxServer, **kwargs: Any) -> LineMessagingResource:
    return LineMessagingResource(base_url=server.url, poll_seconds=0.1, **kwargs)


def user(n: int) -> str:
    return "U" + f"{n:032x}"


def sql(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def users_query(count: int, start: int = 0, extra: str = "") -> str:
    return f"SELECT 'U' || lpad(printf('%x', range), 32, '0') AS id{extra} FROM range({start}, {start + count})"


# -- audiences --------------------------------------------------------------------------------
def test_audience_created_then_added_to_by_exact_name(sandbox_server: SandboxServer) -> None:
    store = store_of(sandbox_server.sandbox)
    res = resource(sandbox_server)
    # A decoy whose name contains ours: LINE's filter matches it partially, we must not.
    decoy = requests.post(
        f"{sandbox_server.url}/v2/bot/audienceGroup/upload",
        json={"description": "vip list 2"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    ).json()["audienceGroupId"]
    first = run(
        export(
            "aud_first",
            "SELECT line_uid AS id FROM segment_users",
            target="audience",
            audience_name="vip list",
        ),
        res,
    )
    assert first["rows_rejected"] == 30  # the sample's malformed UIDs never reach LINE
    assert (
        first["audience_action"] == "created"
        and first["upload_method"] == "json"
        and first["upload_requests"] == 1
    )
    assert first["audience_count"] == 2970 and first["audience_id"] != decoy
    second = run(
        export("aud_second", users_query(50), target="audience", audience_name="vip list"), res
    )
    assert second["audience_action"] == "added" and second["audience_id"] == first["audience_id"]
    assert second["audience_count"] == 3020
    assert len(store.audiences[decoy].ids) == 0


def test_ifa_audience_by_file_then_by_id(sandbox_server: SandboxServer) -> None:
    store = store_of(sandbox_server.sandbox)
    res = resource(sandbox_server)
    ifas = (
        "SELECT lpad(printf('%x', range), 8, '0') || '-0000-4000-8000-' || lpad(printf('%x', range), 12, '0') AS ifa "
        "FROM range(12000)"
    )
    meta = run(
        export("ifa", ifas, target="audience", audience_name="ifa list", is_ifa_audience=True), res
    )
    assert (
        meta["upload_method"] == "file (api-data)" and meta["upload_requests"] == 1
    )  # > 10,000: one file, not 2 JSON
    assert meta["audience_count"] == 12000
    assert sandbox_server.sandbox.count("POST", "/v2/bot/audienceGroup/upload/byFile") == 1
    added = run(
        export(
            "ifa_more",
            ifas.replace("range(12000)", "range(12000, 12010)"),
            target="audience",
            use_audience_id=True,
            audience_id=meta["audience_id"],
            is_ifa_audience=True,
        ),
        res,
    )
    assert (
        added["audience_action"] == "added"
        and added["upload_method"] == "json"
        and added["audience_count"] == 12010
    )
    # An IFA audience cannot take user IDs.
    message = run_fails(
        export(
            "mixed",
            users_query(3),
            target="audience",
            use_audience_id=True,
            audience_id=meta["audience_id"],
        ),
        res,
    )
    assert "holds IFAs" in message
    assert len(store.audiences[meta["audience_id"]].ids) == 12010


def test_invalid_ids_with_skip_false_fail_before_anything_is_sent(
    sandbox_server: SandboxServer,
) -> None:
    message = run_fails(
        export(
            "strict",
            "SELECT line_uid AS id FROM segment_users",
            target="audience",
            audience_name="strict",
            skip_invalid_message=False,
        ),
        resource(sandbox_server),
    )
    assert "skip_invalid_message is false" in message and "is not a LINE user ID" in message
    assert sandbox_server.sandbox.count(path_prefix="/v2/bot/audienceGroup") == 0


# -- push -------------------------------------------------------------------------------------
def test_push_short_lived_token_placeholders_resume_and_reissue(
    sandbox_server: SandboxServer,
) -> None:
    store = store_of(sandbox_server.sandbox)
    res = resource(sandbox_server, auth_method="short_lived_token")
    eve_name, eve_code = 'Eve "\\n}}{{coupon_code}}', '", "to": "' + user(2)
    query = (
        "SELECT * FROM (SELECT user_id AS id, display_name, coupon_code FROM line_recipients "
        f"WHERE user_id <> 'Uzzzz' LIMIT 60) UNION ALL SELECT '{user(1)}', {sql(eve_name)}, {sql(eve_code)}"
    )
    push = export("push_coupons", query, target="push_message", template_message=PUSH_TEMPLATE)
    meta = run(push, res, tags=TICK)
    assert (
        meta["push_accepted"] == 61 and meta["rows_rejected"] == 0 and meta["requests"] == 64
    )  # 61 pushes + 1 token + 2 quota reads
    assert store.tokens_issued == 1
    eve = store.received(user(1))
    assert eve == [[{"type": "text", "text": f"Hi {eve_name}, your code is {eve_code}"}]]
    assert store.received(user(2)) == []  # the value could not add a recipient
    # A re-run of the same tick resumes from the ledger: no new push; the cached token is reused.
    again = run(push, resource(sandbox_server, auth_method="short_lived_token"), tags=TICK)
    assert again["rows_resumed"] == 61 and again["requests"] == 2 and store.pushes == 61
    assert store.tokens_issued == 1
    # Token revoked mid-life: a 401 re-issues once and the run goes on.
    store.revoke_issued()
    other = run(
        export("push_other", query, target="push_message", template_message=PUSH_TEMPLATE),
        resource(sandbox_server, auth_method="short_lived_token"),
    )
    assert other["push_accepted"] == 61 and store.tokens_issued == 2
    assert all(len(store.received(u)) == 2 for u in list(store.inbox)[:60])


def test_bad_credentials_fail_clearly_without_leaking(sandbox_server: SandboxServer) -> None:
    push = export(
        "push_badtoken",
        "SELECT user_id AS id, display_name, coupon_code FROM line_recipients LIMIT 3",
        target="push_message",
        template_message=PUSH_TEMPLATE,
    )
    message = run_fails(push, resource(sandbox_server, access_token="not-a-valid-token-123"))
    assert "401" in message and "credentials" in message and "not-a-valid-token-123" not in message
    bad_secret = resource(
        sandbox_server,
        auth_method="short_lived_token",
        client_id=next(iter(CLIENTS)),
        client_secret="wrong-secret-456",
    )
    message = run_fails(push, bad_secret)
    assert "invalid_client" in message and "wrong-secret-456" not in message


@pytest.mark.parametrize("skip", [True, False])
def test_push_refused_recipient_with_both_skip_settings(
    sandbox_server: SandboxServer, skip: bool
) -> None:
    store = store_of(sandbox_server.sandbox)
    store.unknown_users.add(user(3))
    query = users_query(40, extra=", 'x' AS name")
    push = export(
        f"push_skip_{skip}",
        query,
        target="push_message",
        template_message=json.dumps({"type": "text", "text": "Hello {{name}}"}),
        skip_invalid_message=skip,
        push_concurrency=4,
    )
    if skip:
        meta = run(push, resource(sandbox_server))
        assert meta["rows_refused_by_api"] == 1 and meta["push_accepted"] == 39
        assert store.received(user(3)) == [] and len(store.inbox) == 39
    else:
        message = run_fails(push, resource(sandbox_server))
        assert "Failed to send messages" in message and user(3) in message


def test_rendered_message_over_limits_is_rejected_before_sending(
    sandbox_server: SandboxServer,
) -> None:
    query = users_query(
        5, extra=", CASE WHEN range = 2 THEN repeat('x', 5001) ELSE 'ok' END AS body"
    )
    template = json.dumps({"type": "text", "text": "{{body}}"})
    meta = run(
        export("push_long", query, target="push_message", template_message=template),
        resource(sandbox_server),
    )
    # Rejected before sending (issue 13), not "refused by the API": LINE never saw it.
    assert meta["rows_rejected"] == 1 and meta["rows_refused_by_api"] == 0
    assert meta["push_accepted"] == 4 and meta["rows_accepted"] == 4
    assert sandbox_server.sandbox.count("POST", "/v2/bot/message/push") == 4
    message = run_fails(
        export(
            "push_long_strict",
            query,
            target="push_message",
            template_message=template,
            skip_invalid_message=False,
        ),
        resource(sandbox_server),
    )
    assert "nothing was sent" in message and "messages[0].text" in message


def test_templates_are_checked_when_the_export_is_defined() -> None:
    with pytest.raises(ValidationError, match="messages\\[0\\].previewImageUrl"):
        export(
            "bad",
            "SELECT 1",
            target="push_message",
            template_message=json.dumps(
                {"type": "image", "originalContentUrl": "https://e.com/a.jpg"}
            ),
        )
    with pytest.raises(ValidationError, match="between 1 and 500"):
        LineMessagingSettings(
            target="multicast_message",
            template_message_multicast=MULTICAST_TEMPLATE,
            batch_size_multicast=501,
        )
    with pytest.raises(ValidationError, match="custom_aggregation_units"):
        LineMessagingSettings(
            target="multicast_message",
            template_message_multicast=MULTICAST_TEMPLATE,
            custom_aggregation_units="has-dash",
        )
    # A placeholder that is not a column fails before anything is sent.
    asset = export(
        "push_missing",
        "SELECT 'U' || repeat('a', 32) AS id",
        target="push_message",
        template_message=PUSH_TEMPLATE,
    )
    with SandboxServer() as server:
        assert "no column 'display_name'" in run_fails(asset, resource(server))
        assert server.sandbox.count(path_prefix="/v2/bot") == 0


# -- multicast --------------------------------------------------------------------------------
@pytest.mark.parametrize("names_index", [True, False])
def test_multicast_isolates_a_refused_recipient_by_splitting(
    sandbox_server: SandboxServer, names_index: bool
) -> None:
    store = store_of(sandbox_server.sandbox)
    store.unknown_users.add(user(777))
    store.multicast_error_names_index = names_index
    meta = run(
        export(
            "multi",
            users_query(1200),
            target="multicast_message",
            template_message_multicast=MULTICAST_TEMPLATE,
            notification_disabled=True,
            custom_aggregation_units="spring_sale",
            validate_with_api=True,
        ),
        resource(sandbox_server),
    )
    assert meta["batch_size_multicast"] == 500 and meta["multicast_refused_recipients"] == 1
    assert meta["rows_accepted"] == 1199 and store.received(user(777)) == []
    assert all(len(store.received(user(i))) == 1 for i in range(1200) if i != 777)
    assert sandbox_server.sandbox.count("POST", "/v2/bot/message/validate/multicast") == 1
    multicasts = sandbox_server.sandbox.count("POST", "/v2/bot/message/multicast")
    # 3 batches; naming to[i] costs one retry, bisection ~2*log2(500).
    assert multicasts == 4 if names_index else 5 <= multicasts <= 3 + 2 * 9


def test_multicast_skip_false_fails_and_rerun_after_lost_ledger_gets_409(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    store = store_of(sandbox_server.sandbox)
    store.unknown_users.add(user(5))
    strict = export(
        "multi_strict",
        users_query(20),
        target="multicast_message",
        template_message_multicast=MULTICAST_TEMPLATE,
        skip_multicast_invalid_message=False,
        batch_size_multicast=10,
    )
    message = run_fails(strict, resource(sandbox_server))
    assert "to[5]" in message and "skip_multicast_invalid_message is false" in message
    store.unknown_users.clear()
    asset = build_export(
        "multi_409",
        destination="line_messaging",
        query=users_query(20),
        retry_policy=None,
        settings={
            "target": "multicast_message",
            "template_message_multicast": MULTICAST_TEMPLATE,
            "batch_size_multicast": 7,
        },
        ledger_path=tmp_path / "ledger.sqlite",
    )
    first = run(asset, resource(sandbox_server), tags=TICK)
    (
        tmp_path / "ledger.sqlite"
    ).unlink()  # the ledger is lost: only LINE's retry keys stand between us and duplicates
    second = run(asset, resource(sandbox_server), tags=TICK)
    assert first["multicast_accepted"] == 20 and second["multicast_already_accepted_409"] == 20
    assert all(len(store.received(user(i))) == 1 for i in range(20))


# -- faults -----------------------------------------------------------------------------------
def test_429_500_and_dropped_connections_are_retried_without_duplicates(
    sandbox_server: SandboxServer,
) -> None:
    sandbox = sandbox_server.sandbox
    sandbox.add_fault(Fault(path="/v2/bot/message/multicast", status=429, retry_after=0, times=2))
    sandbox.add_fault(Fault(path="/v2/bot/audienceGroup/upload", status=500, times=1))
    sandbox.add_fault(Fault(path="/v2/bot/message/push", drop=True, times=1))
    res = resource(sandbox_server)
    multi = run(
        export(
            "f_multi",
            users_query(30),
            target="multicast_message",
            template_message_multicast=MULTICAST_TEMPLATE,
            initial_retry_wait=1,
        ),
        res,
    )
    assert multi["rate_limited_answers"] == 2 and multi["multicast_accepted"] == 30
    aud = run(
        export(
            "f_aud",
            users_query(30),
            target="audience",
            audience_name="faulty",
            initial_retry_wait=1,
        ),
        res,
    )
    assert aud["retries"] == 1 and aud["audience_count"] == 30
    push = run(
        export(
            "f_push",
            users_query(5, extra=", 'a' AS n"),
            target="push_message",
            template_message=json.dumps({"type": "text", "text": "{{n}}"}),
            initial_retry_wait=1,
        ),
        res,
    )
    assert push["retries"] == 1 and push["rows_accepted"] == 5
    assert all(
        len(store_of(sandbox).received(user(i))) == 2 for i in range(5)
    )  # multicast + push, once each


def test_a_timed_out_push_is_retried_with_the_same_key_and_delivered_once(
    sandbox_server: SandboxServer,
) -> None:
    sandbox_server.sandbox.add_fault(Fault(path="/v2/bot/message/push", delay=1.5, times=1))
    client = resource(sandbox_server).get_client(
        RetrySettings(max_retry=2, initial_retry_wait=0.1, connection_timeout=0.5)
    )
    body = json.dumps({"to": user(9), "messages": [{"type": "text", "text": "once"}]}).encode()
    status, _ = client.send("push", body, "123e4567-e89b-12d3-a456-426614174000")
    assert status in (200, 409) and client.http.stats.retries >= 1
    time.sleep(1.5)  # let the slow first attempt land
    assert store_of(sandbox_server.sandbox).received(user(9)) == [
        [{"type": "text", "text": "once"}]
    ]


def test_a_409_records_the_id_of_the_request_line_accepted(sandbox_server: SandboxServer) -> None:
    """A retry key LINE already accepted is answered 409 with the accepted request's ID in
    ``X-Line-Accepted-Request-Id``: that ID is the one recorded, not the 409's own."""
    client = resource(sandbox_server).get_client()
    body = json.dumps({"to": user(8), "messages": [{"type": "text", "text": "once"}]}).encode()
    key = "123e4567-e89b-12d3-a456-426614174001"
    first, again = client.send("push", body, key), client.send("push", body, key)
    assert (first[0], again[0]) == (200, 409)
    assert again[1]["_request_id"] == first[1]["_request_id"] is not None


# -- the sandbox is as strict as LINE ---------------------------------------------------------
def test_sandbox_enforces_lines_rules() -> None:
    with SandboxServer(Sandbox(rate_scale=0.01)) as server:
        url, auth = server.url, {"Authorization": f"Bearer {TOKEN}"}
        ok = {"to": user(1), "messages": [{"type": "text", "text": "hi"}]}
        post = requests.post
        assert post(f"{url}/v2/bot/message/push", json=ok, timeout=5).status_code == 401
        key = {"X-Line-Retry-Key": "123e4567-e89b-12d3-a456-426614174000", **auth}
        assert (
            post(f"{url}/v2/bot/message/push", json=ok, headers=key, timeout=5).status_code == 200
        )
        again = post(f"{url}/v2/bot/message/push", json=ok, headers=key, timeout=5)
        assert again.status_code == 409 and again.headers["x-line-accepted-request-id"]
        assert (
            post(
                f"{url}/v2/bot/message/push",
                json=ok,
                headers={**auth, "X-Line-Retry-Key": "not-a-uuid"},
                timeout=5,
            ).status_code
            == 400
        )
        bad = post(
            f"{url}/v2/bot/message/push",
            json={**ok, "messages": [{"type": "text"}]},
            headers=auth,
            timeout=5,
        )
        assert bad.status_code == 400 and bad.json()["details"] == [
            {"message": "Must not be null", "property": "messages[0].text"}
        ]
        huge = {"to": user(1), "messages": [{"type": "text", "text": "x" * (2 * 1024 * 1024)}]}
        assert (
            post(f"{url}/v2/bot/message/push", json=huge, headers=auth, timeout=5).status_code
            == 413
        )
        assert (
            post(
                f"{url}/v2/bot/message/push",
                data="x",
                headers={**auth, "Content-Type": "text/plain"},
                timeout=5,
            ).status_code
            == 415
        )
        multi = {"to": [user(1), "U123"], "messages": ok["messages"]}
        assert (
            "to[1]"
            in post(f"{url}/v2/bot/message/multicast", json=multi, headers=auth, timeout=5).json()[
                "message"
            ]
        )
        # Multicast: 200/s scaled by 0.01 -> 2 per second, then 429 with Retry-After.
        codes = [
            post(
                f"{url}/v2/bot/message/multicast",
                json={**multi, "to": [user(1)]},
                headers=auth,
                timeout=5,
            ).status_code
            for _ in range(3)
        ]
        assert codes[-1] == 429
        bad_id = post(
            f"{url}/v2/bot/audienceGroup/upload",
            json={"description": "a", "audiences": [{"id": "U1"}]},
            headers=auth,
            timeout=5,
        )
        assert bad_id.json()["details"] == [
            {"message": "UPLOAD_AUDIENCE_GROUP_INVALID_AUDIENCE_ID_FORMAT"}
        ]
