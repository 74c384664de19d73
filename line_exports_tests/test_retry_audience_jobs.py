"""An audience uploaded in several jobs, one of which LINE ends FAILED: only that job's rows are
refused, with LINE's failedType; the rows of the jobs that finished joined the audience and are
accepted (closing.md "Left": every uploaded row was counted refused).

``manage-audience.yml``: each upload is a job (jobStatus FINISHED or FAILED with an
``AudienceGroupJobFailedType``); a FAILED job's IDs never join the audience. Real Dagster run,
HTTP to the sandbox, 12,000 IDs in three upload files of 5,000 (``AUDIENCE_FILE_MAX_IDS``
lowered as test_audience_files does), the first job failed over HTTP
(``PUT /_sandbox/line_messaging/audience_job_failures``).
"""

from __future__ import annotations

import dagster as dg
import pytest
import requests

from line_exports import SqlSource, build_export
from line_exports.destinations import line_messaging
from line_exports.destinations.line_messaging import LineMessagingResource
from line_exports.sandbox import SandboxServer
from line_exports.sandbox.line_messaging import store_of
from line_exports_tests.test_outcomes import adds_up, check_of, outcome_metadata

ROWS, PER_FILE = 12_000, 5_000


def user(n: int) -> str:
    return "U" + f"{n:032x}"


def audience_with_failed_jobs(
    url: str, name: str, rows: int, failed_type: str, jobs: int = 1
) -> tuple[dg.AssetsDefinition, dict[str, object]]:
    """An audience export of ``rows`` IDs (``user(0)`` ..) named ``name``, and its resources,
    on a sandbox that ends the first ``jobs`` upload jobs FAILED with ``failed_type`` (set over
    HTTP: ``PUT /_sandbox/line_messaging/audience_job_failures``)."""
    failing = {"failedType": failed_type, "jobs": jobs}
    answer = requests.put(
        f"{url}/_sandbox/line_messaging/audience_job_failures", json=failing, timeout=5
    )
    assert answer.status_code == 200, answer.text
    asset = build_export(
        name.replace(" ", "_"),
        destination="line_messaging",
        query=f"SELECT 'U' || lpad(printf('%x', range), 32, '0') AS id FROM range({rows})",
        retry_policy=None,
        settings={"target": "audience", "audience_name": name},
    )
    resource = LineMessagingResource(base_url=url, poll_seconds=0.05)
    return asset, {"sql_source": SqlSource(), "line_messaging": resource}


def test_one_failed_upload_job_of_three_refuses_only_its_rows(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(line_messaging.audience, "AUDIENCE_FILE_MAX_IDS", PER_FILE)
    asset, resources = audience_with_failed_jobs(
        sandbox_server.url, "three jobs", ROWS, "AUDIENCE_GROUP_AUDIENCE_INSUFFICIENT"
    )
    result = dg.materialize([asset], resources=resources)
    meta = outcome_metadata(result)
    assert result.success and adds_up(meta), meta
    counts = [meta[f"rows_{k}"] for k in ("refused_by_api", "accepted", "delivery_unknown")]
    assert counts == [PER_FILE, ROWS - PER_FILE, 0], meta
    (answer_text,) = meta["refusals_by_answer"]
    assert "upload failed: AUDIENCE_GROUP_AUDIENCE_INSUFFICIENT" in answer_text, answer_text
    refusals = check_of(result, "api_refusals")
    assert refusals is not None and not refusals.passed
    # What LINE holds: the IDs of the two jobs that finished, none of the failed one's.
    (audience,) = store_of(sandbox_server.sandbox).audiences.values()
    assert audience.ids == {user(n) for n in range(PER_FILE, ROWS)}
    assert meta["audience_count"] == ROWS - PER_FILE, meta
