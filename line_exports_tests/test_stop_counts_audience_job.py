"""A LINE audience upload job that ends FAILED (``manage-audience.yml``: jobStatus FAILED with
an ``AudienceGroupJobFailedType``): the export counts its rows refused with LINE's answer
(issue 13: "refused by the API (with its answer)"; VERIFY-13f O4). Real HTTP to the sandbox,
the job failure switched on over HTTP (``PUT /_sandbox/line_messaging/audience_job_failures``)."""

from __future__ import annotations

import pytest
import requests

from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_messaging import store_of
from line_exports_tests.test_line_messaging import (
    TOKEN,
    export,
    resource,
    run_failure,
    users_query,
)

FAILURES = "/_sandbox/line_messaging/audience_job_failures"


@pytest.mark.parametrize("failed_type", ["AUDIENCE_GROUP_AUDIENCE_INSUFFICIENT", "INTERNAL_ERROR"])
def test_failed_upload_job_counts_its_rows_refused_with_lines_answer(
    sandbox_server: SandboxServer, failed_type: str
) -> None:
    answer = requests.put(
        sandbox_server.url + FAILURES, json={"failedType": failed_type, "jobs": 1}, timeout=5
    )
    assert answer.status_code == 200, answer.text
    asset = export("aud_failed", users_query(5), target="audience", audience_name="failing")
    message, meta = run_failure(asset, resource(sandbox_server))
    assert failed_type in message
    assert (meta["rows_read"], meta["rows_refused_by_api"], meta["rows_accepted"]) == (5, 5, 0)
    assert meta["rows_unsent"] == meta["rows_delivery_unknown"] == 0
    assert [a for a in meta["refusals_by_answer"] if failed_type in a], meta["refusals_by_answer"]
    # What LINE holds: the audience, FAILED with that type, none of the IDs in it.
    (audience,) = store_of(sandbox_server.sandbox).audiences.values()
    body = requests.get(
        f"{sandbox_server.url}/v2/bot/audienceGroup/{audience.id}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    ).json()
    assert body["audienceGroup"]["status"] == "FAILED"
    assert body["audienceGroup"]["failedType"] == failed_type
    assert [j["jobStatus"] for j in body["jobs"]] == ["FAILED"]
    assert body["jobs"][0]["failedType"] == failed_type and not audience.ids


def test_sandbox_refuses_an_unknown_failed_type(sandbox_server: SandboxServer) -> None:
    answer = requests.put(sandbox_server.url + FAILURES, json={"failedType": "NOPE"}, timeout=5)
    assert answer.status_code == 400
