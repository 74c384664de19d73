"""LINE's monthly quota, robust answers and honest outcomes, against the sandbox over loopback."""

from __future__ import annotations

import json

import requests

from line_exports.sandbox import Fault, SandboxServer
from line_exports.sandbox.line_messaging import store_of
from line_exports_tests.test_line_messaging import (
    export,
    resource,
    run,
    run_fails,
    users_query,
)

TEMPLATE = json.dumps({"type": "text", "text": "Hi {{name}}"})
MULTICAST = json.dumps({"type": "text", "text": "Sale today"})


def push_export(name: str, count: int, **settings: object):  # type: ignore[no-untyped-def]
    return export(
        name,
        users_query(count, extra=", 'n' || range AS name"),
        target="push_message",
        template_message=TEMPLATE,
        **settings,
    )


def test_quota_read_before_sending_and_run_fails_when_it_would_pass(
    sandbox_server: SandboxServer,
) -> None:
    store = store_of(sandbox_server.sandbox)
    store.quota_limit, store.quota_used = 10, 7
    message = run_fails(push_export("line_quota_fail", 5), resource(sandbox_server))
    assert "needs 5 messages but only 3 of this month's 10 remain" in message
    assert store.pushes == 0 and store.quota_used == 7
    assert sandbox_server.sandbox.count("GET", "/v2/bot/message/quota") == 2


def test_send_up_to_quota_sends_what_remains_and_rejects_the_rest(
    sandbox_server: SandboxServer,
) -> None:
    store = store_of(sandbox_server.sandbox)
    requests.put(
        f"{sandbox_server.url}/_sandbox/line_messaging/quota",
        json={"limit": 10, "used": 7},
        timeout=5,
    ).raise_for_status()
    meta = run(
        push_export("line_quota_up_to", 5, over_quota="send_up_to_quota"),
        resource(sandbox_server),
    )
    assert store.pushes == 3 and store.quota_used == 10
    assert meta["messages_needed"] == 5 and meta["quota_remaining"] == 3
    assert meta["quota_limit"] == 10 and meta["quota_used"] == 7
    assert meta["push_accepted"] == 3
    # The 2 over the quota are rejected before sending (not refused by LINE, not unsent).
    assert (meta["rows_rejected"], meta["rows_refused_by_api"]) == (2, 0)
    assert (meta["rows_unsent"], meta["rows_accepted"]) == (0, 3)


def test_multicast_counts_distinct_recipients_against_the_quota(
    sandbox_server: SandboxServer,
) -> None:
    store = store_of(sandbox_server.sandbox)
    store.quota_limit = 4
    # 6 rows, 4 distinct recipients: exactly the quota.
    query = "SELECT 'U' || lpad(printf('%x', range % 4), 32, '0') AS id FROM range(0, 6)"
    asset = export(
        "line_quota_multicast",
        query,
        target="multicast_message",
        template_message_multicast=MULTICAST,
    )
    meta = run(asset, resource(sandbox_server))
    assert meta["distinct_recipients"] == 4 and meta["rows_duplicate"] == 2
    assert meta["messages_needed"] == 4 and store.quota_used == 4
    again = export(
        "line_quota_multicast_2",
        users_query(1, start=9),
        target="multicast_message",
        template_message_multicast=MULTICAST,
    )
    assert "needs 1 messages but only 0" in run_fails(again, resource(sandbox_server))


def test_monthly_limit_429_is_never_retried(sandbox_server: SandboxServer) -> None:
    sandbox = sandbox_server.sandbox
    body = json.dumps({"message": "You have reached your monthly limit."})
    fault = sandbox.add_fault(Fault(path="/v2/bot/message/push", status=429, body=body, times=5))
    message = run_fails(
        push_export("line_quota_429", 3, push_concurrency=1), resource(sandbox_server)
    )
    assert "monthly" in message and "not retried" in message
    assert fault.hits == 1  # one request, answered 429 once, not repeated
    assert store_of(sandbox).pushes == 0


def test_a_400_whose_details_are_not_objects_is_reported(sandbox_server: SandboxServer) -> None:
    sandbox = sandbox_server.sandbox
    body = json.dumps({"message": "The request body has 2 error(s)", "details": ["odd", 5]})
    sandbox.add_fault(Fault(path="/v2/bot/message/push", status=400, body=body, times=1))
    meta = run(push_export("line_odd_details", 3, push_concurrency=1), resource(sandbox_server))
    assert meta["push_refused_recipients"] == 1 and meta["push_accepted"] == 2
    assert (meta["rows_refused_by_api"], meta["rows_accepted"]) == (1, 2)
    assert store_of(sandbox).pushes == 2


def test_a_run_whose_pushes_line_refused_all_is_a_failure(sandbox_server: SandboxServer) -> None:
    store = store_of(sandbox_server.sandbox)
    store.unknown_users.update("U" + f"{n:032x}" for n in range(3))
    message = run_fails(push_export("line_all_refused", 3), resource(sandbox_server))
    assert "accepted none" in message and store.pushes == 0


def test_audience_answer_without_permission_adds_to_the_same_audience(
    sandbox_server: SandboxServer,
) -> None:
    store = store_of(sandbox_server.sandbox)
    store.audience_permission = None  # optional in manage-audience.yml
    for start in (0, 10):
        asset = export(
            f"line_no_permission_{start}",
            users_query(5, start=start),
            audience_name="no permission field",
        )
        meta = run(asset, resource(sandbox_server))
    assert len(store.audiences) == 1
    assert meta["audience_action"] == "added"
    (audience,) = store.audiences.values()
    assert len(audience.ids) == 10


# -- tokens -----------------------------------------------------------------------------------
def test_stateless_token_issued_per_run_and_reissued_after_expiry(
    sandbox_server: SandboxServer,
) -> None:
    store = store_of(sandbox_server.sandbox)
    meta = run(
        push_export("line_stateless", 3), resource(sandbox_server, auth_method="stateless_token")
    )
    assert meta["push_accepted"] == 3 and meta["tokens_issued"] == 1
    assert store.stateless_issued == 1 and store.tokens_issued == 0  # no 30-per-channel slot
    assert sandbox_server.sandbox.count("POST", "/oauth2/v3/token", 200) == 1
    # 15 minutes later the token is gone: a 401 issues a new one once and the run goes on.
    store.expire_stateless()
    res = resource(sandbox_server, auth_method="stateless_token")
    run(push_export("line_stateless_2", 3), res)
    client = res.get_client()
    client.tokens._token = next(iter(store.stateless))  # the expired one, as a long run holds it
    client.tokens._expires = float("inf")
    store.expire_stateless()
    again = run(push_export("line_stateless_3", 3), res)
    assert again["push_accepted"] == 3 and store.stateless_issued == 3
    assert not list(paths_with_tokens())


def paths_with_tokens():  # type: ignore[no-untyped-def]
    from line_exports import paths

    return paths.data_dir().glob("line_messaging_tokens*")


def test_short_lived_token_cache_is_sealed_and_never_fails_the_run(
    sandbox_server: SandboxServer,
) -> None:
    from line_exports import paths
    from line_exports.sandbox.line_messaging import CLIENTS

    store = store_of(sandbox_server.sandbox)
    run(push_export("line_cache_1", 2), resource(sandbox_server, auth_method="short_lived_token"))
    cache = paths.data_dir() / "line_messaging_tokens.json"
    text = cache.read_text()
    (token,) = store.issued
    secret = next(iter(CLIENTS.values()))
    assert token not in text and secret not in text and oct(cache.stat().st_mode)[-3:] == "600"
    # Reused by the next run (another resource, as another process would be).
    run(push_export("line_cache_2", 2), resource(sandbox_server, auth_method="short_lived_token"))
    assert store.tokens_issued == 1
    # A tampered cache is a miss (AES-GCM refuses it), not a crash.
    data = json.loads(text)
    entry = next(iter(data.values()))
    entry["sealed"] = entry["sealed"][:-4] + ("AAAA" if entry["sealed"][-4:] != "AAAA" else "BBBB")
    cache.write_text(json.dumps(data))
    run(push_export("line_cache_3", 2), resource(sandbox_server, auth_method="short_lived_token"))
    assert store.tokens_issued == 2
    # A cache that cannot be written (here: a folder where the file goes) costs a warning only.
    cache.unlink()
    cache.mkdir()
    meta = run(
        push_export("line_cache_4", 2), resource(sandbox_server, auth_method="short_lived_token")
    )
    assert meta["push_accepted"] == 2 and store.tokens_issued == 3
    assert [p.name for p in paths.data_dir().glob("line_messaging_tokens.json*")] == [cache.name]


TICK = {"dagster/scheduled_execution_time": "2026-05-01T09:00:00+00:00"}


def test_a_resumed_push_needs_only_the_rows_not_yet_accepted(sandbox_server: SandboxServer) -> None:
    store = store_of(sandbox_server.sandbox)
    store.quota_limit = 12
    # The first attempt stops at the quota: 12 of 20 accepted (in the ledger), 8 not sent.
    first = run(
        push_export("line_quota_resume", 20, over_quota="send_up_to_quota"),
        resource(sandbox_server),
        tags=TICK,
    )
    assert first["rows_accepted"] == 12 and first["rows_rejected"] == 8
    # 8 more this month; the same tick again with over_quota: fail needs just those 8.
    store.quota_limit = 20
    again = run(push_export("line_quota_resume", 20), resource(sandbox_server), tags=TICK)
    assert again["messages_already_accepted"] == 12 and again["messages_needed"] == 8
    assert again["quota_remaining"] == 8 and again["rows_resumed"] == 12
    assert again["push_accepted"] == 8 and again["rows_rejected"] == 0
    assert store.pushes == 20 and store.quota_used == 20


def test_a_resumed_multicast_needs_only_the_groups_not_yet_accepted(
    sandbox_server: SandboxServer,
) -> None:
    store = store_of(sandbox_server.sandbox)
    store.quota_limit = 6
    # Groups of 2; the third is refused (a recipient not in the channel): the run stops there
    # with groups 1 and 2 accepted.
    store.unknown_users.add("U" + f"{4:032x}")
    asset = export(
        "line_quota_resume_multicast",
        users_query(6),
        target="multicast_message",
        template_message_multicast=MULTICAST,
        batch_size_multicast=2,
        skip_multicast_invalid_message=False,
    )
    assert "LINE refused the multicast" in run_fails_tagged(asset, resource(sandbox_server))
    assert store.multicasts == 2 and store.quota_used == 4
    store.unknown_users.clear()
    again = run(asset, resource(sandbox_server), tags=TICK)
    assert again["messages_already_accepted"] == 4 and again["messages_needed"] == 2
    assert again["quota_remaining"] == 2 and again["multicast_accepted"] == 2
    assert store.multicasts == 3 and store.quota_used == 6


def run_fails_tagged(asset, res) -> str:  # type: ignore[no-untyped-def]
    import dagster as dg

    from line_exports import SqlSource

    result = dg.materialize(
        [asset],
        resources={"sql_source": SqlSource(), "line_messaging": res},
        tags=TICK,
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    return failure.event_specific_data.error.message  # type: ignore[union-attr]


def test_a_multicast_group_cut_by_the_quota_is_completed_once_on_resume(
    sandbox_server: SandboxServer,
) -> None:
    """One group of 6 recipients; the quota leaves 4: LINE gets a group of 4. With 2 more
    allowed, the same tick sends the other 2 only (not the group of 6 again)."""
    store = store_of(sandbox_server.sandbox)
    store.quota_limit = 4
    asset = export(
        "line_quota_cut_group",
        users_query(6),
        target="multicast_message",
        template_message_multicast=MULTICAST,
        over_quota="send_up_to_quota",
    )
    first = run(asset, resource(sandbox_server), tags=TICK)
    assert first["rows_accepted"] == 4 and first["rows_rejected"] == 2
    store.quota_limit = 6
    again = run(asset, resource(sandbox_server), tags=TICK)
    assert again["messages_already_accepted"] == 4 and again["messages_needed"] == 2
    assert again["multicast_accepted"] == 2 and again["rows_resumed"] == 4
    assert again["rows_accepted"] == 6 and again["rows_rejected"] == 0
    third = run(asset, resource(sandbox_server), tags=TICK)
    assert third["messages_needed"] == 0 and third["multicast_accepted"] == 0
    for n in range(6):
        assert store.received("U" + f"{n:032x}") == [[json.loads(MULTICAST)]], n
    assert store.multicasts == 2 and store.quota_used == 6
