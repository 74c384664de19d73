"""Texts a user reads about rows are true (VERIFY-13o nits; issue 13: outcomes that say what
really happened).

* The log lines after validation and of progress say how many rows passed validation, not
  that they are valid: a rich menu run whose menu does not exist rejects every row afterwards
  (``rows_valid`` 0); the log said "1,200 valid" and "sent 0 of 1,200 valid rows".
* A request an earlier attempt sent, which this attempt did not send again, is "not sent again",
  never "LINE was not reached" (:class:`~line_exports.outcomes.NotSent`); a request that could
  not reach LINE still says so.
"""

from __future__ import annotations

import dagster as dg
import pytest

from line_exports.destinations.line_messaging import LineMessagingResource
from line_exports.http import ApiError
from line_exports.ledger_request import recorded_error
from line_exports.outcomes import EARLIER_5XX, EARLIER_UNANSWERED, Earlier, NotSent, fate_of
from line_exports.sandbox import SandboxServer
from line_exports.sources import SqlSource
from line_exports_tests.test_line_messaging import export, user
from line_exports_tests.test_line_rich_menu import MISSING
from line_exports_tests.test_outcomes import outcome_metadata


def test_the_validation_log_line_does_not_call_rows_valid_a_destination_rejects(
    sandbox_server: SandboxServer, capfd: pytest.CaptureFixture[str]
) -> None:
    query = " UNION ALL ".join(
        f"SELECT '{user(n)}' AS id, '{MISSING}' AS rich_menu" for n in range(3)
    )
    result = dg.materialize(
        [export("rm_texts", query, target="rich_menu")],
        resources={
            "sql_source": SqlSource(),
            "line_messaging": LineMessagingResource(base_url=sandbox_server.url, poll_seconds=0.05),
        },
        raise_on_error=False,
    )
    meta = outcome_metadata(result)
    assert (meta["rows_read"], meta["rows_valid"], meta["rows_rejected"]) == (3, 0, 3), meta
    err = capfd.readouterr().err
    assert "rm_texts: read 3 rows, 3 passed validation, 0 rejected" in err, err
    assert "rm_texts: sent 0 of 3 rows" in err, err
    assert "3 valid" not in err, err


def test_a_request_not_sent_again_is_not_said_unreached() -> None:
    earlier_5xx = {"state": "pending", "at": 1.0, EARLIER_UNANSWERED: 0, EARLIER_5XX: 1}
    error = recorded_error(earlier_5xx, "an earlier push request")
    assert isinstance(error, NotSent)
    fate = fate_of(error, "LINE", Earlier(server_errors=1))
    assert fate.kind == "unknown"
    assert fate.reason == (
        "a 5xx answer to 1 earlier attempt(s), then not sent again (the run stopped before "
        "sending it again: an earlier push request): LINE may have acted on it"
    ), fate.reason
    # A request that could not reach LINE (connection refused) says so.
    refused = ApiError("POST /v2/bot/message/push: connection refused", reached=False)
    fate = fate_of(refused, "LINE", Earlier(server_errors=1))
    assert fate.reason.startswith("a 5xx answer to 1 earlier attempt(s), then LINE was not reached")
