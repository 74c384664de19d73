"""LinkedIn refuses a just-refreshed access token for a few seconds (401, serviceErrorCode
65601 / 65602) while it propagates: the export waits and retries instead of telling the user to
authorize again, and refreshes no second time meanwhile. A token that stays refused still ends
in the re-authorize message, after the bounded wait."""

from __future__ import annotations

from typing import Any

import pytest

from line_exports.destinations import linkedin as linkedin_destination
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.linkedin import store_of
from line_exports_tests.test_linkedin import failure_text, metadata, resource, run_export

EMAILS = "select * from (values ('a@example.com'), ('b@example.com'), ('c@example.com')) t(email)"


def test_new_token_refused_while_it_propagates_is_retried(
    sandbox_server: SandboxServer,
) -> None:
    store = store_of(sandbox_server.sandbox)
    store.token_propagation_seconds = 2.5  # every new token is refused for 2.5 s
    result = run_export(resource(sandbox_server), EMAILS)
    assert result.success, failure_text(result)
    meta = metadata(result)
    assert meta["rows_accepted"] == 3
    assert store.token_counter == 1  # one refresh: never refreshed again while waiting
    refused = sandbox_server.sandbox.count(status=401)
    assert refused >= 2  # it really was refused, then accepted


def test_token_refused_for_good_still_says_authorize_again(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(linkedin_destination, "TOKEN_PROPAGATION_WAITS", (0.2, 0.2))
    store = store_of(sandbox_server.sandbox)
    store.token_propagation_seconds = 3600  # never becomes valid
    original_init = linkedin_destination.LinkedInClient.__init__

    def recording_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        inner = self.sleep
        self.sleep = lambda s: (waits.append(s), inner(s))

    monkeypatch.setattr(linkedin_destination.LinkedInClient, "__init__", recording_init)
    text = failure_text(run_export(resource(sandbox_server), EMAILS))
    assert "line-exports linkedin-auth" in text  # the re-authorize message, after the waits
    assert 0.2 in waits
    assert store.token_counter == 1
