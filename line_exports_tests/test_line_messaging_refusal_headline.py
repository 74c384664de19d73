"""The headline of a push/multicast run LINE refused names what LINE refused: the recipient its
answer names, or the rows of that request, never another recipient (VERIFY-13c F7). Real
Dagster runs against the sandbox over loopback."""

from __future__ import annotations

import pytest

from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_messaging import store_of
from line_exports_tests.test_line_messaging import (
    MULTICAST_TEMPLATE,
    PUSH_TEMPLATE,
    export,
    resource,
    run_fails,
    user,
    users_query,
)


@pytest.mark.parametrize("names_index", [True, False])
def test_a_stopped_multicast_names_the_recipient_line_refused_or_the_request(
    sandbox_server: SandboxServer, names_index: bool
) -> None:
    store = store_of(sandbox_server.sandbox)
    store.unknown_users.add(user(1))  # row 2, to[1] of the first request (rows 1, 2)
    store.multicast_error_names_index = names_index
    message = run_fails(
        export(
            f"mc_stop_{names_index}",
            users_query(6),
            target="multicast_message",
            template_message_multicast=MULTICAST_TEMPLATE,
            skip_multicast_invalid_message=False,
            batch_size_multicast=2,
        ),
        resource(sandbox_server),
    )
    assert user(0) not in message  # row 1: LINE did not refuse it
    if names_index:
        assert (
            f"LINE refused the multicast to {user(1)} (row 2, to[1] of the request to rows 1, 2): "
            "The property, 'to[1]'"
        ) in message
    else:
        assert "LINE refused the multicast to rows 1, 2 (2 recipients): " in message
    assert "skip_multicast_invalid_message is false" in message


def test_a_push_run_line_refused_whole_names_the_first_refused_push(
    sandbox_server: SandboxServer,
) -> None:
    store = store_of(sandbox_server.sandbox)
    store.unknown_users.update(user(n) for n in range(3))
    message = run_fails(
        export(
            "push_none",
            users_query(3, extra=", 'A' AS display_name, 'C' AS coupon_code"),
            target="push_message",
            template_message=PUSH_TEMPLATE,
            push_concurrency=1,
        ),
        resource(sandbox_server),
    )
    assert "LINE accepted none of the push requests: 3 recipients refused. First: " in message
    assert f"the push to {user(0)} (row 1): Failed to send messages" in message
