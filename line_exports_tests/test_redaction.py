"""Redaction happens before truncation: a token echoed across a cut never leaks its prefix."""

from __future__ import annotations

import logging

import pytest

from line_exports.http import ApiError, HttpClient, RetrySettings
from line_exports.sandbox import Fault, SandboxServer

SECRET = "tok-9f8e7d6c5b4a39281706"
FAST = RetrySettings(max_retry=1, initial_retry_wait=1, max_retry_wait=100, connection_timeout=10)


def _leaks(text: str) -> list[str]:
    """Every prefix of the secret (4 characters or more) found in ``text``."""
    return [SECRET[:n] for n in range(4, len(SECRET) + 1) if SECRET[:n] in text]


@pytest.mark.parametrize("cut", [300, 1000, 2000])
def test_error_body_echoing_a_token_across_the_cut_leaks_no_prefix(
    sandbox_server: SandboxServer, cut: int, caplog: pytest.LogCaptureFixture
) -> None:
    # The answer is {"message": "<padding><secret>..."}: place the secret across character ``cut``
    # of the body (12 characters of JSON come before the message text).
    padding = "x" * (cut - len('{"message":"') - 6)
    sandbox_server.sandbox.add_fault(
        Fault(path="/openapi/v1/segment/", status=400, body=padding + SECRET + " echoed")
    )
    http = HttpClient(
        sandbox_server.url,
        auth_headers=lambda: {"Authorization": f"Bearer {SECRET}"},
        secrets=lambda: (SECRET,),
        retry=FAST,
        debug=True,
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(ApiError) as error:
        http.request("GET", "/openapi/v1/segment/")
    seen = str(error.value) + error.value.body + error.value.path + caplog.text
    assert error.value.status == 400
    assert _leaks(seen) == []
    assert "***" in seen  # the secret was there, cut out whole
